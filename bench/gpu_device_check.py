"""One GPU check for a machine with torch and a GPU but no Triton, DALI, TensorRT or package registry.

    python bench/gpu_device_check.py [--budget-s 420] [--batches 1 8 32 128] [--yolo auto|ultralytics|onnx|reimpl]
    python bench/gpu_device_check.py --dry-run        # CPU, tiny sizes: proves the code paths run

What the gpu profile does per image, measured with what such a machine has (docs/design.md#facts: Python 3.12, torch +
CUDA, torchvision, timm, onnx, onnxruntime, opencv, pillow, numpy): nvJPEG decoding (torchvision.io.decode_jpeg
on cuda), a MobileCLIP2-S2 image tower (timm ``fastvit_mci2``, the architecture open_clip uses, random weights
with calibrated BatchNorm), a YOLO11 detector (ultralytics' own ``yolo11s.yaml`` when ultralytics is installed;
else the exported ONNX through onnxruntime's CUDA provider when both are there; else this file's torch
re-implementation of the YOLO11s graph) with NMS on the GPU, and the per-object crops with the served code
(``triton_repo.runtime.crops.crops_batch``). Models run in FP16. Reported: images/s at each batch size for each
stage and end to end, single-image latency end to end, and parity of every GPU stage against the same
computation on the CPU in FP32. The JSON says which implementation each figure comes from.

Prints ONE JSON line on stdout (progress goes to stderr) and keeps within ``--budget-s`` (stages that would
start after it are reported as skipped). Exit 0: every stage ran; 1: some stage failed (its error is in
``errors``); 2: nothing could be measured (``error`` says why: no torch, no CUDA device). No weights are
downloaded: nothing here reaches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: the served crop code lives in this repository
    sys.path.insert(0, str(ROOT))

SCHEMA = 1
CLIP_SIZE, YOLO_SIZE, PAD_VALUE = 256, 640, 114
EMBED_DIM = 512  # MobileCLIP2-S2
OBJECTS_PER_IMAGE = 8  # crops embedded per image in the end-to-end figure (a busy photo)
IMAGE_SIZES = ((640, 480), (1024, 768), (1280, 720), (1920, 1080))  # (w, h), like bench/images.py
MIN_COSINE = 0.999  # the serving bound for FP16 embeddings (export/tensorrt.py)


def log(message: str) -> None:
    print(f"[gpu_device_check] {message}", file=sys.stderr, flush=True)


class Budget:
    """A deadline for the whole run; each stage asks before it starts."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ------------------------------------------------------------------------------------------ environment


def versions() -> dict[str, Any]:
    """Installed versions from the package metadata (nothing imported: ultralytics probes the network on
    import unless made offline first)."""
    from importlib import metadata

    found: dict[str, Any] = {"python": platform.python_version()}
    packages = {"torch": ("torch",), "torchvision": ("torchvision",), "timm": ("timm",), "onnx": ("onnx",),
                "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
                "opencv": ("opencv-python", "opencv-python-headless", "opencv-contrib-python"),
                "pillow": ("pillow",), "numpy": ("numpy",), "ultralytics": ("ultralytics",)}
    for name, distributions in packages.items():
        for distribution in distributions:
            try:
                found[name] = f"{metadata.version(distribution)}" + (
                    f" ({distribution})" if len(distributions) > 1 else "")
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            found[name] = "missing"
    try:
        import onnxruntime

        found["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:
        pass
    return found


def device_facts(torch) -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"cuda": False}
    props = torch.cuda.get_device_properties(0)
    return {"cuda": True, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


# ------------------------------------------------------------------------------------------ images


def synthetic_jpegs(count: int, sizes: tuple[tuple[int, int], ...], seed: int = 7) -> list[bytes]:
    """Photo-like JPEGs (gradients, hard-edged shapes, noise), quality 90, deterministic."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u, v = xx / max(w - 1, 1), yy / max(h - 1, 1)
        img = np.stack([200 * u + 30 * np.sin(v * 9 + i), 180 * v + 40 * np.cos(u * 7), 120 + 100 * np.sin(u + v)],
                       axis=-1)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            img[y0 : y0 + int(rng.integers(1, max(h // 3, 2))), x0 : x0 + int(rng.integers(1, max(w // 3, 2)))] = (
                rng.integers(0, 256, size=3))
        img += rng.normal(0, 6, size=img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# ------------------------------------------------------------------------------------------ models


def calibrate_batchnorm(model, make_input: Callable[[], Any], passes: int = 2) -> None:
    """Random-init BatchNorm statistics (mean 0, var 1) let activations grow layer after layer until FP16
    overflows; running statistics measured on a few inputs keep them at the scale trained weights have."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(make_input())
    model.eval()


def image_encoder(name: str, size: int, torch) -> tuple[Any, str]:
    """The MobileCLIP2 image tower (timm, as open_clip builds it: avg pool, D outputs), reparameterized."""
    import timm
    from timm.utils.model import reparameterize_model

    model = timm.create_model(name, pretrained=False, num_classes=EMBED_DIM, global_pool="avg")
    gen = torch.Generator().manual_seed(0)
    calibrate_batchnorm(model, lambda: torch.randn(4, 3, size, size, generator=gen))
    model = reparameterize_model(model).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return model, (f"timm {name} (MobileCLIP2 image tower architecture, random init, BN calibrated), "
                   f"{params:.1f}M params")


class Normalized:
    """encoder → L2-normalized embedding, as the served clip_image does."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x):
        import torch.nn.functional as F

        return F.normalize(self.model(x).float(), dim=-1)


def yolo_detector(choice: str, scale: str, size: int, onnx_path: Path | None, torch) -> tuple[Any, str, str]:
    """(model, kind, description): kind "torch" (raw [B, 4+nc, A] head output) or "onnx" (a session)."""
    errors = []
    if choice in ("auto", "ultralytics"):
        try:
            from export.ultralytics_offline import load_yolo_class  # no network, no pip behind our back

            YOLO = load_yolo_class(ROOT / ".cache" / "ultralytics")
            model = YOLO(f"yolo11{scale}.yaml").model.float()
            calibrate_batchnorm(model, lambda: torch.rand(2, 3, size, size))
            model = model.fuse() if hasattr(model, "fuse") else model
            params = sum(p.numel() for p in model.parameters()) / 1e6
            version = sys.modules["ultralytics"].__version__
            return model.eval(), "torch", (f"ultralytics {version} yolo11{scale}.yaml (random init, BN calibrated), "
                                           f"{params:.1f}M params")
        except Exception as exc:
            errors.append(f"ultralytics: {exc.__class__.__name__}: {exc}")
            if choice == "ultralytics":
                raise
    if choice in ("auto", "onnx"):
        try:
            import onnxruntime as ort

            if onnx_path is None or not onnx_path.is_file():
                raise FileNotFoundError(f"no exported YOLO ONNX at {onnx_path}")
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here")
            session = ort.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
            return session, "onnx", f"exported ONNX {onnx_path} via onnxruntime CUDA provider (FP32 graph, NMS inside)"
        except Exception as exc:
            errors.append(f"onnx: {exc.__class__.__name__}: {exc}")
            if choice == "onnx":
                raise
    model = build_yolo11(scale, torch)
    calibrate_batchnorm(model, lambda: torch.rand(2, 3, size, size))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    why = f" (not used: {'; '.join(errors)})" if errors else ""
    return model.eval(), "torch", (f"this script's torch re-implementation of the yolo11{scale} graph (random init, "
                                   f"BN calibrated), {params:.1f}M params{why}")


def build_yolo11(scale: str, torch, nc: int = 80):
    """YOLO11 (ultralytics' yolo11.yaml: C3k2, SPPF, C2PSA, decoupled DFL head) at scale n/s/m, written out here
    for machines without ultralytics. Same layer graph and channel rules; eval output [B, 4 + nc, anchors]
    (xywh in input pixels, class probabilities), like ultralytics' Detect."""
    from torch import Tensor, nn  # `torch.nn`, imported by name so that its classes can be subclassed
    depth, width, max_ch = {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512)}[scale]

    def ch(c: int) -> int:
        return int(math.ceil(min(c, max_ch) * width / 8) * 8)

    def reps(n: int) -> int:
        return max(round(n * depth), 1) if n > 1 else n

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU() if act else nn.Identity()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, c1, c2, shortcut=True, g=1, k=(3, 3), e=0.5):
            super().__init__()
            c_ = int(c2 * e)
            self.cv1, self.cv2 = Conv(c1, c_, k[0]), Conv(c_, c2, k[1], g=g)
            self.add = shortcut and c1 == c2

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C3k(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, k=3):
            super().__init__()
            c_ = int(c2 * e)
            self.cv1, self.cv2, self.cv3 = Conv(c1, c_), Conv(c1, c_), Conv(2 * c_, c2)
            self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))

        def forward(self, x):
            return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))

    class C3k2(nn.Module):
        def __init__(self, c1, c2, n=1, c3k=False, e=0.5, g=1, shortcut=True):
            super().__init__()
            self.c = int(c2 * e)
            self.cv1, self.cv2 = Conv(c1, 2 * self.c), Conv((2 + n) * self.c, c2)
            self.m = nn.ModuleList(C3k(self.c, self.c, 2, shortcut, g) if c3k
                                   else Bottleneck(self.c, self.c, shortcut, g) for _ in range(n))

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1, c2, k=5):
            super().__init__()
            c_ = c1 // 2
            self.cv1, self.cv2 = Conv(c1, c_), Conv(c_ * 4, c2)
            self.m = nn.MaxPool2d(k, 1, k // 2)

        def forward(self, x):
            y = [self.cv1(x)]
            y.extend(self.m(y[-1]) for _ in range(3))
            return self.cv2(torch.cat(y, 1))

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, attn_ratio=0.5):
            super().__init__()
            self.num_heads, self.head_dim = num_heads, dim // num_heads
            self.key_dim = int(self.head_dim * attn_ratio)
            self.scale = self.key_dim**-0.5
            self.qkv = Conv(dim, dim + self.key_dim * num_heads * 2, 1, act=False)
            self.proj, self.pe = Conv(dim, dim, 1, act=False), Conv(dim, dim, 3, 1, g=dim, act=False)

        def forward(self, x):
            b, c, h, w = x.shape
            q, k, v = self.qkv(x).view(b, self.num_heads, self.key_dim * 2 + self.head_dim, h * w).split(
                [self.key_dim, self.key_dim, self.head_dim], dim=2)
            attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
            return self.proj(x)

    class PSABlock(nn.Module):
        def __init__(self, c, num_heads):
            super().__init__()
            self.attn = Attention(c, num_heads=num_heads, attn_ratio=0.5)
            self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))

        def forward(self, x):
            x = x + self.attn(x)
            return x + self.ffn(x)

    class C2PSA(nn.Module):
        def __init__(self, c1, c2, n=1, e=0.5):
            super().__init__()
            self.c = int(c1 * e)
            self.cv1, self.cv2 = Conv(c1, 2 * self.c), Conv(2 * self.c, c1)
            self.m = nn.Sequential(*(PSABlock(self.c, num_heads=self.c // 64) for _ in range(n)))

        def forward(self, x):
            a, b = self.cv1(x).split((self.c, self.c), dim=1)
            return self.cv2(torch.cat((a, self.m(b)), 1))

    class Detect(nn.Module):
        proj: Tensor  # the buffer registered below

        def __init__(self, channels):
            super().__init__()
            self.reg_max, self.strides = 16, (8, 16, 32)
            c2, c3 = max(16, channels[0] // 4, self.reg_max * 4), max(channels[0], min(nc, 100))
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1))
                                     for x in channels)
            self.cv3 = nn.ModuleList(nn.Sequential(nn.Sequential(Conv(x, x, 3, g=x), Conv(x, c3, 1)),
                                                   nn.Sequential(Conv(c3, c3, 3, g=c3), Conv(c3, c3, 1)),
                                                   nn.Conv2d(c3, nc, 1)) for x in channels)
            self.register_buffer("proj", torch.arange(self.reg_max, dtype=torch.float32), persistent=False)

        def forward(self, feats):
            outs, anchors, strides = [], [], []
            for i, x in enumerate(feats):
                b, _, h, w = x.shape
                outs.append(torch.cat((self.cv2[i](x), self.cv3[i](x)), 1).view(b, 4 * self.reg_max + nc, -1))
                sy, sx = torch.meshgrid(torch.arange(h, device=x.device) + 0.5, torch.arange(w, device=x.device) + 0.5,
                                        indexing="ij")
                anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
                strides.append(torch.full((h * w, 1), float(self.strides[i]), device=x.device))
            y = torch.cat(outs, 2)
            box, cls = y.split((4 * self.reg_max, nc), 1)
            b, _, a = box.shape
            dist = (box.view(b, 4, self.reg_max, a).softmax(2) * self.proj.to(box.dtype).view(1, 1, -1, 1)).sum(2)
            anchor = torch.cat(anchors).t().unsqueeze(0).to(dist.dtype)
            lt, rb = dist.chunk(2, 1)
            xy, wh = anchor + (rb - lt) / 2, lt + rb
            stride = torch.cat(strides).t().unsqueeze(0).to(dist.dtype)
            return torch.cat((torch.cat((xy, wh), 1) * stride, cls.sigmoid()), 1)

    class YOLO11(nn.Module):
        def __init__(self):
            super().__init__()
            c64, c128, c256, c512, c1024 = ch(64), ch(128), ch(256), ch(512), ch(1024)
            n2 = reps(2)
            self.b0, self.b1 = Conv(3, c64, 3, 2), Conv(c64, c128, 3, 2)
            self.b2, self.b3 = C3k2(c128, c256, n2, False, 0.25), Conv(c256, c256, 3, 2)
            self.b4, self.b5 = C3k2(c256, c512, n2, False, 0.25), Conv(c512, c512, 3, 2)
            self.b6, self.b7 = C3k2(c512, c512, n2, True), Conv(c512, c1024, 3, 2)
            self.b8, self.b9 = C3k2(c1024, c1024, n2, True), SPPF(c1024, c1024, 5)
            self.b10 = C2PSA(c1024, c1024, n2)
            self.up = nn.Upsample(None, 2, "nearest")
            self.h13 = C3k2(c1024 + c512, c512, n2, False)
            self.h16 = C3k2(c512 + c512, c256, n2, False)
            self.h17, self.h19 = Conv(c256, c256, 3, 2), C3k2(c256 + c512, c512, n2, False)
            self.h20, self.h22 = Conv(c512, c512, 3, 2), C3k2(c512 + c1024, c1024, n2, True)
            self.detect = Detect((c256, c512, c1024))

        def forward(self, x):
            p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
            p4 = self.b6(self.b5(p3))
            p5 = self.b10(self.b9(self.b8(self.b7(p4))))
            h13 = self.h13(torch.cat((self.up(p5), p4), 1))
            h16 = self.h16(torch.cat((self.up(h13), p3), 1))
            h19 = self.h19(torch.cat((self.h17(h16), h13), 1))
            h22 = self.h22(torch.cat((self.h20(h19), p5), 1))
            return self.detect((h16, h19, h22))

    return YOLO11()


# ------------------------------------------------------------------------------------------ stages


class Stages:
    """Everything one run measures, on `device` ("cuda", or "cpu" in the dry run)."""

    # set by run()'s setup and models stages
    nvjpeg: bool
    encoder: Normalized
    encoder_cpu: Normalized
    yolo_kind: str  # "torch" or "onnx"
    yolo: Any  # a torch module on the device, or an onnxruntime session
    yolo_cpu: Any

    def __init__(self, args, torch, budget: Budget, result: dict) -> None:
        self.args, self.torch, self.budget, self.result = args, torch, budget, result
        self.device = "cpu" if args.dry_run else "cuda"
        self.dtype = torch.float32 if args.dry_run else torch.float16
        self.clip_size = args.clip_size
        self.yolo_size = args.yolo_size

    # -- timing ---------------------------------------------------------------------------------------------

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def rate(self, fn: Callable[[], Any], items: int) -> float:
        """items/s of fn: warm-up (cudnn autotune), then repeats for ~`--seconds` (at least `--min-repeats`)."""
        for _ in range(self.args.warmup):
            fn()
        self.sync()
        done, t0 = 0, time.perf_counter()
        while True:
            fn()
            done += 1
            self.sync()
            spent = time.perf_counter() - t0
            if done >= self.args.min_repeats and (spent >= self.args.seconds or self.budget.left() < 30):
                return round(items * done / spent, 1)

    def latencies(self, fn: Callable[[], Any], repeats: int) -> dict[str, float]:
        import numpy as np

        for _ in range(self.args.warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append((time.perf_counter() - t0) * 1000)
            if self.budget.left() < 30:
                break
        arr = np.asarray(times)
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return {"n": len(times), "p50": round(float(p50), 2), "p90": round(float(p90), 2),
                "p99": round(float(p99), 2), "mean": round(float(arr.mean()), 2), "min": round(float(arr.min()), 2)}

    # -- pieces of the pipeline -----------------------------------------------------------------------------

    def setup(self) -> None:
        torch = self.torch
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True
        self.jpegs = synthetic_jpegs(self.args.images, self.args.image_sizes)
        self.encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in self.jpegs]

    def decode(self, batch: list) -> list:
        """JPEG bytes → CHW uint8 images on the device (nvJPEG on cuda, batched)."""
        from torchvision.io import decode_jpeg

        if self.device == "cuda" and self.nvjpeg:
            return decode_jpeg(batch, device="cuda")
        return [decode_jpeg(b).to(self.device) for b in batch]

    def letterbox(self, image):
        """CHW uint8 → [3, S, S] ÷255, ultralytics' LetterBox geometry (centred, pad 114, bilinear)."""
        import torch.nn.functional as F

        torch, s = self.torch, self.yolo_size
        h, w = image.shape[-2:]
        r = min(s / h, s / w)
        nh, nw = max(round(h * r), 1), max(round(w * r), 1)
        resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (s - nh) // 2, (s - nw) // 2
        out = torch.full((1, 3, s, s), float(PAD_VALUE), device=image.device)
        out[..., top : top + nh, left : left + nw] = resized
        return out[0] / 255.0, (r, left, top)

    def clip_input(self, image):
        """CHW uint8 → [3, R, R]: shortest side to R (antialiased bilinear), centre crop, mean 0 / std 1 (S2)."""
        import torch.nn.functional as F

        r = self.clip_size
        h, w = image.shape[-2:]
        nh, nw = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
        resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True,
                                align_corners=False).clamp(0, 255).round()
        top, left = round((nh - r) / 2), round((nw - r) / 2)
        return resized[0, :, top : top + r, left : left + r] / 255.0

    def detect(self, batch):
        """[B, 3, S, S] → list of [N, 6] (x1, y1, x2, y2, score, class) per image, N <= 100, on the host."""
        import numpy as np
        import torchvision

        torch = self.torch
        if self.yolo_kind == "onnx":
            rows = self.yolo.run(None, {self.yolo.get_inputs()[0].name: batch.float().cpu().numpy()})[0]
            if rows.shape[-1] == 6:  # NMS inside the graph
                return [r[r[:, 4] > 0] for r in rows]
            raw = torch.from_numpy(rows).to(self.device)
        else:
            with torch.no_grad():
                out = self.yolo(batch.to(self.dtype).contiguous(memory_format=torch.channels_last))
            raw = out[0] if isinstance(out, (list, tuple)) else out
        raw = raw.float()
        results = []
        for pred in raw:  # [4 + nc, A]
            scores, classes = pred[4:].max(0)
            keep = scores > 0.25
            if keep.sum() == 0:
                keep = scores >= scores.topk(min(OBJECTS_PER_IMAGE, scores.numel())).values.min()
            xywh, scores, classes = pred[:4, keep].t(), scores[keep], classes[keep]
            if len(scores) > 3000:  # ultralytics' max_nms
                top = scores.topk(3000).indices
                xywh, scores, classes = xywh[top], scores[top], classes[top]
            xyxy = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
            kept = torchvision.ops.batched_nms(xyxy, scores, classes, 0.45)[:100]
            rows = torch.cat((xyxy[kept], scores[kept, None], classes[kept, None].float()), 1)
            results.append(rows.cpu().numpy().astype(np.float32))
        return results

    def embed(self, batch):
        with self.torch.no_grad():
            return self.encoder(batch.to(self.dtype).contiguous(memory_format=self.torch.channels_last))

    def end_to_end(self, encoded: list) -> int:
        """analyze_image for these images; returns the number of object embeddings computed."""
        import numpy as np

        from triton_repo.runtime.boxes import to_original
        from triton_repo.runtime.crops import crops_batch

        torch = self.torch
        images = self.decode(encoded)
        boxed = [self.letterbox(im) for im in images]
        detections = self.detect(torch.stack([b for b, _ in boxed]))
        clip_inputs = [torch.stack([self.clip_input(im) for im in images])]
        for image, (_, (r, left, top)), rows in zip(images, boxed, detections, strict=True):
            hw = np.array(image.shape[-2:])
            boxes = to_original(rows[:OBJECTS_PER_IMAGE, :4], np.array([r, left, top], dtype=np.float32), hw)
            clip_inputs.append(crops_batch(image.permute(1, 2, 0), boxes, self.clip_size, (0.0, 0.0, 0.0),
                                           (1.0, 1.0, 1.0), "bilinear", self.device))
        everything = torch.cat(clip_inputs)
        for start in range(0, len(everything), self.args.embed_chunk):
            self.embed(everything[start : start + self.args.embed_chunk])
        self.objects = len(everything) - len(images)
        return self.objects


def _cosine(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def run(args) -> tuple[dict, int]:
    """Every stage; returns (the JSON object, exit code)."""
    budget = Budget(args.budget_s)
    result: dict[str, Any] = {"check": "gpu_device_check", "schema": SCHEMA,
                              "mode": "dry-run (CPU, tiny sizes, FP32)" if args.dry_run else "gpu",
                              "ok": False, "error": None, "env": versions(), "used": {}, "config": {},
                              "throughput_images_per_s": {}, "latency_ms": {}, "parity": {}, "errors": {},
                              "skipped": []}
    try:
        import numpy as np
        import torch
    except Exception as exc:
        result["error"] = f"torch/numpy cannot be imported: {exc}"
        return result, 2
    result["device"] = device_facts(torch)
    if not args.dry_run and not torch.cuda.is_available():
        result["error"] = "no CUDA device visible to torch (run with --dry-run to exercise the code on the CPU)"
        return result, 2
    if args.dry_run:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    result["config"] = {"batches": args.batches, "clip_size": args.clip_size, "yolo_size": args.yolo_size,
                        "images": args.images, "image_sizes_wh": [list(s) for s in args.image_sizes],
                        "objects_per_image": OBJECTS_PER_IMAGE, "seconds_per_figure": args.seconds,
                        "precision": "fp32" if args.dry_run else "fp16", "budget_s": args.budget_s}
    st = Stages(args, torch, budget, result)
    throughput, parity, errors = result["throughput_images_per_s"], result["parity"], result["errors"]

    def stage(name: str, fn: Callable[[], None], needs_s: float = 20.0) -> None:
        if budget.left() < needs_s:
            result["skipped"].append(f"{name}: time budget ({budget.left():.0f}s left)")
            return
        log(f"{name} ({budget.elapsed():.0f}s)")
        try:
            fn()
        except Exception as exc:
            errors[name] = f"{exc.__class__.__name__}: {exc}"
            log(f"{name} failed: {traceback.format_exc(limit=3)}")

    def setup() -> None:
        st.setup()
        st.nvjpeg = False
        if st.device == "cuda":
            try:
                from torchvision.io import decode_jpeg

                decode_jpeg(st.encoded[:2], device="cuda")
                st.nvjpeg = True
            except Exception as exc:
                errors["nvjpeg"] = f"{exc.__class__.__name__}: {exc}"
        result["used"]["decode"] = ("torchvision.io.decode_jpeg on cuda (nvJPEG, batched)" if st.nvjpeg else
                                    "torchvision.io.decode_jpeg on the CPU (libjpeg-turbo) + copy to the device")

    def models() -> None:
        encoder, description = image_encoder(args.encoder, args.clip_size, torch)
        st.encoder_cpu = Normalized(encoder)
        result["used"]["image_encoder"] = description
        gpu_encoder = encoder if args.dry_run else _clone(encoder).to(st.device, st.dtype)
        st.encoder = Normalized(gpu_encoder.to(memory_format=torch.channels_last))
        yolo, kind, description = yolo_detector(args.yolo, args.yolo_scale, args.yolo_size, args.yolo_onnx, torch)
        st.yolo_kind, st.yolo_cpu = kind, yolo
        st.yolo = yolo if kind == "onnx" or args.dry_run else _clone(yolo).to(st.device, st.dtype).to(
            memory_format=torch.channels_last)
        result["used"]["detector"] = description
        result["used"]["nms"] = "torchvision.ops.batched_nms on the device (conf 0.25, IoU 0.45, max 100)" \
            if kind == "torch" else "inside the ONNX graph"
        result["used"]["crops"] = "triton_repo.runtime.crops.crops_batch (the served box_embedding code)"

    def decode_figures() -> None:
        def decode_batch(b: int) -> list:
            return st.decode(_take(st.encoded, b))

        throughput["decode"] = {str(b): st.rate(partial(decode_batch, b), b) for b in args.batches}
        cpu = [_decode_cpu(e) for e in st.encoded[:4]]
        got = [im.cpu() for im in st.decode(st.encoded[:4])]
        diffs = [(g.int() - c.int()).abs() for g, c in zip(got, cpu, strict=True)]
        parity["decode_vs_cpu_libjpeg"] = {
            "max_abs_levels": int(max(int(d.max()) for d in diffs)),
            "mean_abs_levels": round(float(sum(float(d.float().mean()) for d in diffs) / len(diffs)), 4),
            "share_above_2_levels": round(float(sum(float((d > 2).float().mean()) for d in diffs) / len(diffs)), 6)}

    def encoder_figures() -> None:
        r = args.clip_size
        inputs = {b: torch.rand(b, 3, r, r, device=st.device) for b in args.batches}
        def embed_batch(b: int) -> Any:
            return st.embed(inputs[b])

        throughput["image_encoder"] = {str(b): st.rate(partial(embed_batch, b), b) for b in args.batches}
        probe = torch.rand(4, 3, r, r, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = st.encoder_cpu(probe).numpy()
        got = st.embed(probe.to(st.device)).float().cpu().numpy()
        cos = _cosine(got, want)
        parity["image_encoder_vs_cpu_fp32"] = {"min_cosine": round(float(cos.min()), 6),
                                               "max_abs": round(float(np.abs(got - want).max()), 6),
                                               "pass": bool(cos.min() >= MIN_COSINE), "bound": MIN_COSINE}

    def detector_figures() -> None:
        s = args.yolo_size
        inputs = {b: torch.rand(b, 3, s, s, device=st.device) for b in args.batches}
        def detect_batch(b: int) -> list:
            return st.detect(inputs[b])

        throughput["detector_with_nms"] = {str(b): st.rate(partial(detect_batch, b), b) for b in args.batches}
        if st.yolo_kind != "torch":
            parity["detector_vs_cpu_fp32"] = "not compared: the ONNX graph is FP32 with NMS inside"
            return
        probe = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            want = _raw(st.yolo_cpu(probe)).float().numpy()
            got = _raw(st.yolo(probe.to(st.device, st.dtype).contiguous(memory_format=torch.channels_last)))
        got = got.float().cpu().numpy()
        boxes_g, boxes_w = got[:, :4], want[:, :4]
        top = np.argsort(-want[:, 4:].max(1), axis=1)[:, :10]
        box_px = max(float(np.abs(np.take_along_axis(boxes_g, top[:, None, :], 2)
                                  - np.take_along_axis(boxes_w, top[:, None, :], 2)).max()), 0.0)
        cos = _cosine(got.reshape(len(got), -1), want.reshape(len(want), -1))
        parity["detector_vs_cpu_fp32"] = {"raw_output_min_cosine": round(float(cos.min()), 6),
                                          "top10_boxes_max_abs_px": round(box_px, 3),
                                          "max_abs_class_prob": round(float(np.abs(got[:, 4:] - want[:, 4:]).max()),
                                                                      5)}

    def crop_figures() -> None:
        from triton_repo.runtime.crops import crops_batch

        image_cpu = _decode_cpu(st.encoded[0]).permute(1, 2, 0).contiguous()
        image = image_cpu.to(st.device)
        h, w = image_cpu.shape[:2]
        rng = np.random.default_rng(3)
        x1, y1 = rng.uniform(0, w * 0.7, 64), rng.uniform(0, h * 0.7, 64)
        boxes = np.stack([x1, y1, x1 + rng.uniform(8, w * 0.3, 64), y1 + rng.uniform(8, h * 0.3, 64)], 1)
        boxes = boxes.astype(np.float32)
        args_ = (args.clip_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear")
        def crops_of(b: int) -> Any:
            return crops_batch(image, boxes[: min(b, 64)], *args_, st.device)

        throughput["crops_objects_per_s"] = {str(b): st.rate(partial(crops_of, b), min(b, 64)) for b in args.batches}
        got = crops_batch(image, boxes[:16], *args_, st.device).cpu().numpy()
        want = crops_batch(image_cpu, boxes[:16], *args_, "cpu").numpy()
        diff = np.abs(got - want)
        parity["crops_vs_cpu"] = {"max_abs_levels": round(float(diff.max() * 255), 3),
                                  "share_differing": round(float((diff > 1e-6).mean()), 6)}

    def pipeline_figures() -> None:
        figures, objects = {}, {}
        for b in args.batches:
            if budget.left() < 40:
                result["skipped"].append(f"end_to_end batch {b}: time budget")
                continue
            batch = _take(st.encoded, b)
            figures[str(b)] = st.rate(partial(st.end_to_end, batch), b)
            objects[str(b)] = st.objects // max(b, 1)
        throughput["end_to_end"] = figures
        result["used"]["end_to_end"] = ("decode → letterbox + CLIP resize/crop on the device → detector + NMS → "
                                        f"crops of the top {OBJECTS_PER_IMAGE} detections → one encoder pass for "
                                        "global + object embeddings (no Triton, no DALI: what those would run)")
        result["end_to_end_objects_per_image"] = objects
        single = st.encoded[0:1]
        result["latency_ms"]["end_to_end_single_image"] = st.latencies(lambda: st.end_to_end(single),
                                                                       args.latency_repeats)

    stage("setup", setup, needs_s=10)
    stage("models", models, needs_s=30)
    if "models" in errors or "setup" in errors:
        result["error"] = "could not build the models: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
        return result, 2
    stage("decode", decode_figures)
    stage("image_encoder", encoder_figures)
    stage("detector", detector_figures)
    stage("crops", crop_figures)
    stage("end_to_end", pipeline_figures, needs_s=40)
    if st.device == "cuda":
        result["device"]["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["ok"] = not errors and not result["skipped"]
    return result, 0 if not errors else 1


def _clone(model):
    import copy

    return copy.deepcopy(model)


def _raw(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _take(items: list, n: int) -> list:
    return [items[i % len(items)] for i in range(n)]


def _decode_cpu(encoded):
    from torchvision.io import decode_jpeg

    return decode_jpeg(encoded)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_device_check", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, FP32: the code paths without a GPU")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting stages after this (default 420; "
                                                                "dry run 120)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 32 128 (dry run 1 2)")
    p.add_argument("--seconds", type=float, default=None, help="per throughput figure (default 1.5; dry run 0)")
    p.add_argument("--yolo", choices=["auto", "ultralytics", "onnx", "reimpl"], default="auto")
    p.add_argument("--yolo-scale", choices=["n", "s", "m"], default=None, help="default s (dry run n)")
    p.add_argument("--yolo-onnx", type=Path, default=ROOT / ".cache/models/shapes-yolo11n/model.onnx",
                   help="exported YOLO ONNX for the onnxruntime CUDA route (default %(default)s)")
    p.add_argument("--encoder", default=None, help="timm model (default fastvit_mci2 = MobileCLIP2-S2; dry run "
                                                    "fastvit_mci0)")
    args = p.parse_args(argv)
    dry = args.dry_run
    args.budget_s = args.budget_s if args.budget_s is not None else (120.0 if dry else 420.0)
    args.batches = sorted(set(args.batches or ([1, 2] if dry else [1, 8, 32, 128])))
    args.seconds = args.seconds if args.seconds is not None else (0.0 if dry else 1.5)
    args.yolo_scale = args.yolo_scale or ("n" if dry else "s")
    args.encoder = args.encoder or ("fastvit_mci0" if dry else "fastvit_mci2")
    args.clip_size = 64 if dry else CLIP_SIZE
    args.yolo_size = 64 if dry else YOLO_SIZE
    args.images = 4 if dry else 128
    args.image_sizes = ((96, 64), (64, 80)) if dry else IMAGE_SIZES
    args.warmup = 0 if dry else 3
    args.min_repeats = 1 if dry else 5
    args.latency_repeats = 1 if dry else 50
    args.embed_chunk = 64 if dry else 128  # crops + global inputs per encoder call (the served max is 16 a batch,
    # but the device check measures the encoder's capacity; Triton's batcher is what bench.gpu measures)
    return args


@contextlib.contextmanager
def stdout_to_stderr():
    """Everything libraries print while measuring (ultralytics' model summary, C-level messages) goes to
    stderr, at the file-descriptor level, so stdout carries the one JSON line and nothing else."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    with stdout_to_stderr():
        try:
            result, code = run(args)
        except Exception as exc:  # a bug here must still end in one JSON line
            result = {"check": "gpu_device_check", "schema": SCHEMA, "ok": False,
                      "error": f"{exc.__class__.__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
            code = 2
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, separators=(",", ":"), default=str), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
