"""Trains the bundled CLIP from scratch on generated, captioned shapes scenes and object crops, on the CPU.

Offline there are no CLIP weights, and a randomly initialised MobileCLIP2 ranks every search arbitrarily: nobody
can see that the product works. This small open_clip model (its architecture is data:
`shapes_clip/open_clip_config.json`, a timm resnet10t image tower at 80 px and a 3-layer text transformer on
open_clip's own tokenizer) learns the shapes world's vocabulary — five shapes, eight named colours, counts and
whole-scene captions — so that "a red circle" finds red circles, in whole pictures and among detected objects.

Three things are learned at once, each for one way the product searches (a fourth, a linear probe that reads
from the image embedding which colour × shape pairs a picture holds, only speeds learning up: measured without
it, 600 steps learned colours (97 % of crops named right) but hardly shapes (39 %); the probe is not exported):
* scene ↔ caption, with every caption in the batch that is true of a picture counted as a positive
  (`captions.truth_matrix`), for text → image search;
* object crop ↔ "a {colour} {shape}", cut from the true boxes with jitter like a detector's, for the nested
  object query;
* a picture ↔ a smaller, recompressed copy of itself, so image → image search finds the picture itself first
  and not merely another picture with the same shapes.

How long: 3000 steps of 96 scenes, 64 crops and 32 copies. Measured on a GPU with this script (`--device cuda`,
held-out text → image precision@10 straight from the model): 1000 steps 0.57, 2000 0.78, 3000 0.86; the same
compute spent on more steps of half or quarter batches 0.70–0.72 (fewer true pairings and negatives per step);
pictures at 112 or 128 px learn a little more per step (0.74–0.75 at 1500 steps) but each step costs 2.2–2.8×
more on a CPU, 160 px learns slower (0.48 at 1000 steps); a higher learning rate (4e-3, 1300 steps) 0.64. So the
plan is the small tower at 80 px trained longer: about 55 minutes on 2 cores (3200 s measured), 5 on one GPU.

Pictures go through the model's own preprocessing (open_clip's transform, which the serving preprocessing is
held to by the parity tests). Everything is seeded: the same plan gives the same data and the same steps.
The weights are written in half precision (the file stays small; loading casts them back), with
`training.json` beside them: the plan, the versions, the time, and the held-out figures of `evaluate`.

    python -m export.shapes.train_clip                       # the bundled model (about 55 minutes, 2 cores)
    python -m export.shapes.train_clip --device cuda         # the same plan on a GPU (about 5 minutes)
    python -m export.shapes.train_clip --scenes 600 --steps 20 --out /tmp/clip   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from export.mobileclip import encode_image, encode_text
from export.shapes import CLIP_DIR
from export.shapes.captions import Caption, Thing, all_object_queries, object_query, scene_caption, truth_matrix
from export.shapes.dataset import (
    CLASS_NAMES,
    CLIP_TRAIN_STYLE,
    HELD_OUT_SEED,
    HELD_OUT_STYLE,
    Box,
    SceneStyle,
    jpeg,
    render,
    smaller_copy,
)

log = logging.getLogger(__name__)
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
TRAINING_FILE = "training.json"
MIN_VISIBLE = 0.5  # an object counts as in the picture the model sees when this much of its box survives the crop


@dataclass(frozen=True)
class ClipTrainPlan:
    seed: int = 0
    scenes: int = 10000
    crops_per_scene: int = 2
    steps: int = 3000
    batch_scenes: int = 96
    batch_crops: int = 64
    instance_pairs: int = 32  # scenes of a batch also seen as a smaller, recompressed copy
    instance_weight: float = 0.5
    probe_weight: float = 1.0  # the auxiliary "what is in this picture" probe (not part of the exported model)
    lr: float = 2e-3
    warmup_steps: int = 60
    weight_decay: float = 0.05
    threads: int = 2
    box_jitter: float = 0.04  # crop edges moved by this fraction of the box size (sd), like a detector's boxes
    device: str = "cpu"  # "cuda" trains the same plan on a GPU (the figures then differ by float rounding only)


@dataclass(frozen=True)
class Preprocessing:
    """The model's picture → input transform, split where training stores pixels (after the geometry)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str

    @classmethod
    def of(cls, config: dict[str, Any]) -> Preprocessing:
        pre = config["preprocess_cfg"]
        return cls(int(config["model_cfg"]["vision_cfg"]["image_size"]), tuple(pre["mean"]), tuple(pre["std"]),
                   pre["interpolation"], pre["resize_mode"])

    def geometry(self) -> Callable[[Image.Image], Image.Image]:
        """open_clip's own resize + centre crop (the transform without ToTensor/Normalize)."""
        full = open_clip.image_transform(self.size, is_train=False, mean=self.mean, std=self.std,
                                         interpolation=self.interpolation, resize_mode=self.resize_mode)
        steps = full.transforms[:2]
        assert [type(t).__name__ for t in steps] == ["Resize", "CenterCrop"], full

        def apply(image: Image.Image) -> Image.Image:
            for t in steps:
                image = t(image)
            return image
        return apply

    def visible_region(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The part of a width × height picture that survives the shortest-side resize and centre crop."""
        new_w, new_h = (self.size, int(self.size * height / width)) if width <= height else (
            int(self.size * width / height), self.size)
        left, top = round((new_w - self.size) / 2), round((new_h - self.size) / 2)
        sx, sy = new_w / width, new_h / height
        return left / sx, top / sy, (left + self.size) / sx, (top + self.size) / sy

    def to_tensor(self, pixels: np.ndarray, device: str = "cpu") -> torch.Tensor:
        """uint8 [N, R, R, 3] → normalized float32 [N, 3, R, R], channels-last in memory (1.3–1.4× faster
        convolutions on the CPU, measured on the bundled model's towers)."""
        x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def load_config(directory: Path = CLIP_DIR) -> dict[str, Any]:
    return dict(json.loads((directory / CONFIG_FILE).read_text()))


def visible_things(boxes: Sequence[Box], region: tuple[float, float, float, float]) -> Counter[Thing]:
    rx1, ry1, rx2, ry2 = region
    seen: Counter[Thing] = Counter()
    for b in boxes:
        inter = max(0.0, min(b.x2, rx2) - max(b.x1, rx1)) * max(0.0, min(b.y2, ry2) - max(b.y1, ry1))
        if inter >= MIN_VISIBLE * (b.x2 - b.x1) * (b.y2 - b.y1):
            seen[(b.colour, b.name)] += 1
    return seen


def jittered_crop(image: Image.Image, box: Box, rng: np.random.Generator, jitter: float) -> Image.Image:
    w, h = box.x2 - box.x1, box.y2 - box.y1
    dx1, dy1, dx2, dy2 = rng.normal(0.0, jitter, 4) * np.array([w, h, w, h])
    x1, y1 = max(0, round(box.x1 + dx1)), max(0, round(box.y1 + dy1))
    x2, y2 = min(image.width, round(box.x2 + dx2)), min(image.height, round(box.y2 + dy2))
    return image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))


@dataclass
class SceneSample:
    view: np.ndarray  # uint8 [R, R, 3]: the picture as the model sees it
    copy: np.ndarray  # uint8 [R, R, 3]: a smaller, recompressed copy of it
    things: list[tuple[Thing, int]]  # what survives the crop
    crops: list[tuple[np.ndarray, Thing]]


def make_sample(args: tuple[ClipTrainPlan, Preprocessing, int]) -> SceneSample:
    """One training scene (its own seeded generator: the same index always gives the same sample)."""
    plan, pre, index = args
    rng = np.random.default_rng([plan.seed, index, 1])
    image, boxes = render(plan.seed, index, style=CLIP_TRAIN_STYLE)
    geometry = pre.geometry()
    view = jpeg(image, int(rng.integers(80, 96)))
    copy = smaller_copy(image, float(rng.uniform(0.4, 0.9)), int(rng.integers(50, 90)))
    chosen = rng.permutation(len(boxes))[:plan.crops_per_scene]
    crops = [(np.asarray(geometry(jittered_crop(view, boxes[i], rng, plan.box_jitter))), (boxes[i].colour,
             boxes[i].name)) for i in chosen]
    things = visible_things(boxes, pre.visible_region(*image.size))
    return SceneSample(np.asarray(geometry(view)), np.asarray(geometry(copy)), sorted(things.items()), crops)


@dataclass
class TrainingData:
    views: np.ndarray
    copies: np.ndarray
    things: list[Counter[Thing]]
    crops: np.ndarray
    crop_things: list[Thing]


def generate(plan: ClipTrainPlan, pre: Preprocessing, progress: Progress) -> TrainingData:
    task = progress.add_task("draw captioned scenes", total=plan.scenes)
    samples: list[SceneSample] = []
    with ProcessPoolExecutor(max_workers=plan.threads) as pool:
        for sample in pool.map(make_sample, [(plan, pre, i) for i in range(plan.scenes)], chunksize=64):
            samples.append(sample)
            progress.advance(task)
    crops = [c for s in samples for c in s.crops]
    return TrainingData(
        views=np.stack([s.view for s in samples]), copies=np.stack([s.copy for s in samples]),
        things=[Counter(dict(s.things)) for s in samples],
        crops=np.stack([c[0] for c in crops]), crop_things=[c[1] for c in crops],
    )


def multi_positive_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the uniform distribution over every true pairing of the row."""
    target = truth.float() / truth.float().sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def build_model(config: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    return open_clip.CLIP(**config["model_cfg"]).to(device, memory_format=torch.channels_last)


def lr_at(step: int, plan: ClipTrainPlan) -> float:
    if step < plan.warmup_steps:
        return plan.lr * (step + 1) / plan.warmup_steps
    done = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
    return plan.lr * 0.5 * (1 + math.cos(math.pi * done))


def train(model: torch.nn.Module, data: TrainingData, plan: ClipTrainPlan, pre: Preprocessing,
          progress: Progress) -> list[float]:
    tokenizer = open_clip.get_tokenizer(f"local-dir:{CLIP_DIR}")
    rng = np.random.default_rng([plan.seed, 2])
    captioned = np.array([i for i, t in enumerate(data.things) if t])
    things = [q.terms[0][0] for q in all_object_queries()]
    probe = torch.nn.Linear(int(cast(torch.Tensor, model.text_projection).shape[1]), len(things)).to(plan.device)
    params = [*model.parameters(), *probe.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": plan.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=plan.lr)
    losses: list[float] = []
    task = progress.add_task("train", total=plan.steps)
    model.train()
    for step in range(plan.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, plan)
        si = rng.choice(captioned, plan.batch_scenes, replace=False)
        ci = rng.choice(len(data.crops), plan.batch_crops, replace=False)
        captions: list[Caption] = [scene_caption(data.things[i], rng) for i in si]
        captions += [object_query(*data.crop_things[j]) for j in ci]
        pictures = [data.things[i] for i in si] + [Counter({data.crop_things[j]: 1}) for j in ci]
        truth = torch.from_numpy(truth_matrix(captions, pictures)).to(plan.device)
        pixels = np.concatenate([data.views[si], data.crops[ci], data.copies[si[:plan.instance_pairs]]])
        images = encode_image(model, pre.to_tensor(pixels, plan.device), normalize=True)
        present = torch.tensor([[float(p[t] > 0) for t in things] for p in pictures], device=plan.device)
        texts = encode_text(model, tokenizer([c.text for c in captions]).to(plan.device), normalize=True)
        n = len(captions)
        scale = cast(torch.Tensor, model.logit_scale).exp().clamp(max=100)
        logits = scale * images[:n] @ texts.T
        caption_loss = (multi_positive_loss(logits, truth) + multi_positive_loss(logits.T, truth.T)) / 2
        instance_logits = scale * images[n:] @ images[:plan.batch_scenes].T
        instance_loss = F.cross_entropy(instance_logits, torch.arange(plan.instance_pairs, device=plan.device))
        probe_loss = F.binary_cross_entropy_with_logits(probe(images[:n] * 10), present)
        loss = caption_loss + plan.instance_weight * instance_loss + plan.probe_weight * probe_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        progress.update(task, advance=1, description=f"train (loss {np.mean(losses[-20:]):.3f})")
    model.eval()
    return losses


def device_of(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).device)


@torch.no_grad()
def embed_pictures(model: torch.nn.Module, pre: Preprocessing, pictures: Sequence[Image.Image]) -> np.ndarray:
    geometry, device = pre.geometry(), device_of(model)
    out = []
    for start in range(0, len(pictures), 64):
        pixels = np.stack([np.asarray(geometry(p.convert("RGB"))) for p in pictures[start:start + 64]])
        out.append(encode_image(model, pre.to_tensor(pixels, device), normalize=True).cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def evaluate(model: torch.nn.Module, pre: Preprocessing, count: int = 400, seed: int = HELD_OUT_SEED,
             style: SceneStyle = HELD_OUT_STYLE) -> dict[str, float]:
    """Held-out figures straight from the model (the OpenSearch-level measures are in tests/ and bench/).

    text → image precision@10 over "a {colour} {shape}": a hit is relevant when the picture holds such an object
    (anywhere, even outside what the centre crop shows); a query's precision is over min(10, relevant pictures).
    object: each true object's crop, named by its nearest query, colour and shape both right.
    image → image: a smaller, recompressed copy of a picture finds that picture first.
    """
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{CLIP_DIR}")
    scenes = [render(seed, i, style=style) for i in range(count)]
    images = embed_pictures(model, pre, [s[0] for s in scenes])
    queries = all_object_queries()
    texts = encode_text(model, tokenizer([q.text for q in queries]).to(device_of(model)),
                        normalize=True).cpu().numpy()
    holds = truth_matrix(queries, [Counter((b.colour, b.name) for b in s[1]) for s in scenes])  # [scene, query]
    precisions = []
    for q in range(len(queries)):
        relevant = int(holds[:, q].sum())
        if relevant:
            top = np.argsort(-images @ texts[q])[:10]
            precisions.append(holds[top, q].sum() / min(10, relevant))
    crops = [(img.crop((round(b.x1), round(b.y1), round(b.x2), round(b.y2))), (b.colour, b.name))
             for img, boxes in scenes for b in boxes]
    crop_embeddings = embed_pictures(model, pre, [c[0] for c in crops])
    named = np.argmax(crop_embeddings @ texts.T, axis=1)
    object_right = np.mean([queries[k].terms[0][0] == thing for k, (_, thing) in zip(named, crops, strict=True)])
    copies = embed_pictures(model, pre, [smaller_copy(s[0], 0.7, 75) for s in scenes[:100]])
    first = np.argmax(copies @ images.T, axis=1)
    return {
        "text_precision_at_10": round(float(np.mean(precisions)), 4),
        "object_colour_and_shape": round(float(object_right), 4),
        "image_copy_first": round(float(np.mean(first == np.arange(len(copies)))), 4),
        "held_out_scenes": count, "held_out_objects": len(crops),
    }


def save(model: torch.nn.Module, out: Path, plan: ClipTrainPlan, config: dict[str, Any],
         record: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    target = out / CONFIG_FILE
    if not target.is_file() or json.loads(target.read_text()) != config:  # the committed file keeps its layout
        target.write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    (out / TRAINING_FILE).write_text(json.dumps({"plan": asdict(plan), **record}, indent=2) + "\n")


def run(plan: ClipTrainPlan, out: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Draws the data, trains, evaluates and saves; `config` (the committed one by default) is the architecture."""
    torch.manual_seed(plan.seed)
    torch.set_num_threads(plan.threads)
    config = config or load_config()
    pre = Preprocessing.of(config)
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as progress:
        data = generate(plan, pre, progress)
        drawn = time.perf_counter()
        model = build_model(config, plan.device)
        losses = train(model, data, plan, pre, progress)
    trained = time.perf_counter()
    figures = evaluate(model, pre)
    record = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights": "trained here from random init (no pretrained weights)",
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                     "python": platform.python_version()},
        "machine": f"{platform.machine()}, {plan.threads} threads, {plan.device}",
        "seconds": {"draw": round(drawn - start, 1), "train": round(trained - drawn, 1),
                    "evaluate": round(time.perf_counter() - trained, 1)},
        "training_images": int(len(data.views) + len(data.crops)),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "held_out": figures,
        "classes": list(CLASS_NAMES),
    }
    save(model, out, plan, config, record)
    return record


def main(argv: list[str] | None = None) -> int:
    defaults = ClipTrainPlan()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--scenes", type=int, default=defaults.scenes)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--device", default=defaults.device, help="cpu (the bundled model's) or cuda")
    parser.add_argument("--out", type=Path, default=CLIP_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    plan = ClipTrainPlan(seed=args.seed, scenes=args.scenes, steps=args.steps, device=args.device)
    record = run(plan, args.out)
    print(json.dumps({k: record[k] for k in ("seconds", "final_loss", "held_out")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
