"""Deterministic generator of images of simple coloured shapes, with exact boxes and true colour names.

Every image is drawn from its own random generator seeded with `(seed, index)`, so image `i` of a seed
is always the same, whatever the number of images asked for.  Images are 320..1280 px on the long
side, with solid, gradient or noisy backgrounds and 1..6 non-overlapping shapes of five classes, each
rotated, in one of eight named colours (slightly varied) that stands out from the background under it:
the CLIP trained on these scenes learns from captions built from the boxes, so the names must be true.
A `SceneStyle` changes sizes and backgrounds, e.g. for a held-out set unlike the training scenes.

`python -m export.shapes.dataset OUT --train 1200 --val 80 --seed 0` writes a YOLO dataset
(`images/{train,val}`, `labels/{train,val}`, `data.yaml`).
"""

from __future__ import annotations

import argparse
import colorsys
import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

MIN_SIDE, MAX_SIDE = 320, 1280
# object size (bounding-box side, before rotation) as a fraction of the image's long side: objects are
# about 32..160 px once the image is letterboxed to 640
MIN_REL_SIZE, MAX_REL_SIZE = 0.05, 0.25
MAX_OBJECTS = 6
MIN_CONTRAST = 90.0  # Euclidean RGB distance between a shape's colour and the background under it

# the colours a caption may name, as drawn (each channel then varied by up to COLOUR_JITTER)
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30), "green": (30, 160, 50), "blue": (30, 70, 215), "yellow": (245, 215, 30),
    "orange": (245, 130, 15), "purple": (135, 40, 175), "white": (245, 245, 245), "black": (15, 15, 15),
}
COLOUR_JITTER = 12
BACKGROUNDS = ("solid", "gradient", "noise", "blotches", "stripes", "radial")


@dataclass(frozen=True)
class SceneStyle:
    """Sizes and backgrounds of a family of scenes; the default is what the detector was trained on."""

    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE
    min_rel_size: float = MIN_REL_SIZE
    max_rel_size: float = MAX_REL_SIZE
    max_objects: int = MAX_OBJECTS
    backgrounds: tuple[str, ...] = ("solid", "gradient", "noise", "blotches")
    background_weights: tuple[float, ...] = (0.25, 0.3, 0.2, 0.25)


DEFAULT_STYLE = SceneStyle()
# what the bundled CLIP trains on: smaller pictures (cheaper to draw; the CLIP sees them at ~100 px anyway)
CLIP_TRAIN_STYLE = SceneStyle(min_side=256, max_side=512)
# what its relevance is measured on: another seed, backgrounds it never saw, other sizes and at most 5 objects
HELD_OUT_SEED = 2027
HELD_OUT_STYLE = SceneStyle(min_side=400, max_side=1100, min_rel_size=0.07, max_rel_size=0.22, max_objects=5,
                            backgrounds=("stripes", "radial", "solid"), background_weights=(0.4, 0.4, 0.2))


@dataclass(frozen=True)
class Box:
    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    colour: str = ""

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id]


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _background(rng: np.random.Generator, width: int, height: int, style: SceneStyle) -> np.ndarray:
    kind = rng.choice(list(style.backgrounds), p=list(style.background_weights))
    if kind == "stripes":  # soft diagonal bands of two related colours
        a = _random_colour(rng)
        b = np.clip(a + rng.normal(0, 40, 3), 0, 255)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        period, angle = rng.uniform(20, 120), rng.uniform(0, math.pi)
        t = 0.5 + 0.5 * np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period)
        img = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "radial":  # a vignette: one colour in the middle fading to another at the corners
        a, b = _random_colour(rng), _random_colour(rng)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        r = np.hypot(xs - width / 2, ys - height / 2) / math.hypot(width / 2, height / 2)
        img = a * (1 - r[..., None]) + b * r[..., None]
    elif kind == "solid":
        img = np.broadcast_to(_random_colour(rng), (height, width, 3)).copy()
    elif kind == "gradient":
        a, b = _random_colour(rng), _random_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "noise":
        base = _random_colour(rng)
        sigma = rng.uniform(10, 45)
        img = base + rng.normal(0, sigma, size=(height, width, 3))
    else:  # smooth colour blotches: a few random colours on a coarse grid, upsampled
        gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        grid = (rng.random((gh, gw, 3)) * 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    return np.clip(img, 0, 255)


def _polygon(class_name: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape whose unrotated bounding box is `size` wide, rotated by `angle` radians."""
    half = size / 2
    if class_name == "square":
        pts = [(-half, -half), (half, -half), (half, half), (-half, half)]
    elif class_name == "triangle":  # equilateral, fitted into the box
        h = size * math.sqrt(3) / 2
        pts = [(0.0, -h / 2), (half, h / 2), (-half, h / 2)]
    elif class_name == "star":  # five points, inner radius 0.45 of the outer
        pts = []
        for k in range(10):
            r = half if k % 2 == 0 else half * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
    elif class_name == "cross":  # plus sign, arm width a third of the size
        t = size / 6
        pts = [(-t, -half), (t, -half), (t, -t), (half, -t), (half, t), (t, t), (t, half), (-t, half),
               (-t, t), (-half, t), (-half, -t), (-t, -t)]
    else:
        raise ValueError(f"not a polygon shape: {class_name}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _overlaps(box: tuple[float, float, float, float], others: list[Box], margin: float) -> bool:
    x1, y1, x2, y2 = box
    return any(
        x1 < o.x2 + margin and o.x1 < x2 + margin and y1 < o.y2 + margin and o.y1 < y2 + margin for o in others
    )


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in colour)
    return r, g, b


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[str, tuple[int, int, int]]:
    """A named colour that stands out from `under` (the most distant one when none reaches MIN_CONTRAST)."""
    names = list(NAMED_COLOURS)
    order = rng.permutation(len(names))
    dists = [float(np.linalg.norm(np.array(NAMED_COLOURS[names[i]], dtype=float) - under)) for i in order]
    ok = [i for i, d in zip(order, dists, strict=True) if d >= MIN_CONTRAST]
    name = names[ok[0]] if ok else names[int(order[int(np.argmax(dists))])]
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    colour = np.clip(np.array(NAMED_COLOURS[name]) + jitter, 0, 255)
    return name, _rgb(colour)


def render(seed: int, index: int, size_scale: float = 1.0, style: SceneStyle = DEFAULT_STYLE
           ) -> tuple[Image.Image, list[Box]]:
    """Image `index` of `seed`: an RGB image and its boxes (pixels, x1 y1 x2 y2, with the colour's name).

    `size_scale` multiplies the relative object sizes: training at half the resolution the detector is used
    at (320 vs 640) renders the shapes twice as large, so they cover as many pixels as at inference.
    """
    rng = _rng(seed, index)
    long_side = int(rng.integers(style.min_side, style.max_side + 1))
    short_side = round(long_side * float(rng.uniform(0.5, 1.0)))
    width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    bg = _background(rng, width, height, style)
    image = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(image)

    boxes: list[Box] = []
    wanted = int(rng.integers(1, style.max_objects + 1))
    for _ in range(wanted * 15):
        if len(boxes) == wanted:
            break
        class_id = int(rng.integers(len(CLASS_NAMES)))
        name = CLASS_NAMES[class_id]
        rel = size_scale * math.exp(rng.uniform(math.log(style.min_rel_size), math.log(style.max_rel_size)))
        size = min(rel * long_side, 0.6 * min(width, height))
        cx, cy = rng.uniform(size * 0.75, width - size * 0.75), rng.uniform(size * 0.75, height - size * 0.75)
        if name == "circle":
            r = size / 2
            box = (cx - r, cy - r, cx + r, cy + r)
            pts = None
        else:
            angle = rng.uniform(-math.pi / 6, math.pi / 6)
            pts = _polygon(name, cx, cy, size, angle)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (min(xs), min(ys), max(xs), max(ys))
        if box[0] < 1 or box[1] < 1 or box[2] > width - 1 or box[3] > height - 1:
            continue
        if _overlaps(box, boxes, margin=max(4.0, 0.05 * size)):
            continue
        ix1, iy1, ix2, iy2 = (int(v) for v in box)
        under = bg[iy1:iy2 + 1, ix1:ix2 + 1].reshape(-1, 3).mean(axis=0)
        colour_name, colour = _contrasting_colour(rng, under)
        if pts is None:
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon(pts, fill=colour)
        boxes.append(Box(class_id, *box, colour=colour_name))

    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.4:
        arr = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 10), size=(height, width, 3))
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return image, boxes


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """The picture after a JPEG round trip at `quality`."""
    return Image.open(io.BytesIO(jpeg_bytes(image, quality))).convert("RGB")


def smaller_copy(image: Image.Image, scale: float, quality: int) -> Image.Image:
    """What a user's copy of a picture looks like: resized and recompressed."""
    w, h = image.size
    return jpeg(image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR), quality)


def samples(seed: int, count: int, start: int = 0, size_scale: float = 1.0, style: SceneStyle = DEFAULT_STYLE
            ) -> Iterator[tuple[Image.Image, list[Box]]]:
    for index in range(start, start + count):
        yield render(seed, index, size_scale, style)


def yolo_label_lines(boxes: list[Box], width: int, height: int) -> list[str]:
    lines = []
    for b in boxes:
        cx, cy = (b.x1 + b.x2) / 2 / width, (b.y1 + b.y2) / 2 / height
        w, h = (b.x2 - b.x1) / width, (b.y2 - b.y1) / height
        lines.append(f"{b.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_yolo_dataset(root: Path, n_train: int, n_val: int, seed: int, size_scale: float = 1.0,
                       quality: int = 92) -> Path:
    """Writes the YOLO dataset layout under `root`; returns the `data.yaml` path.

    Train images are `(seed, 0..n_train-1)`, val images `(seed, n_train..n_train+n_val-1)`.
    Existing files with the same name are kept (the generator is deterministic).
    """
    root = Path(root).resolve()
    for split, start, count in (("train", 0, n_train), ("val", n_train, n_val)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for index in range(start, start + count):
            stem = f"{seed:04d}_{index:06d}"
            img_path, lbl_path = img_dir / f"{stem}.jpg", lbl_dir / f"{stem}.txt"
            if img_path.exists() and lbl_path.exists():
                continue
            image, boxes = render(seed, index, size_scale)
            image.save(img_path, quality=quality)
            lbl_path.write_text("\n".join(yolo_label_lines(boxes, *image.size)) + "\n")
            done = index - start + 1
            if done % 200 == 0 or done == count:
                log.info("shapes dataset: %s %d/%d", split, done, count)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--val", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(write_yolo_dataset(args.out, args.train, args.val, args.seed, args.size_scale))


if __name__ == "__main__":
    main()
