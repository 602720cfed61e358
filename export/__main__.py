"""`python -m export` (`make models`): every artifact the configured stack needs, skipped when up to date."""

from __future__ import annotations

import sys

from common.config import ConfigError, Settings, load_config
from common.model_facts import ClipFacts, YoloFacts


def ensure_models(settings: Settings) -> tuple[ClipFacts, YoloFacts]:
    from export.mobileclip import ensure_clip
    from export.yolo import ensure_yolo

    clip, yolo = ensure_clip(settings), ensure_yolo(settings)
    if settings.models.free_networks:  # benchmark only: stand-ins built from the real exports' facts
        from export.free_networks import ensure_free_networks

        return ensure_free_networks(settings, clip, yolo)
    if settings.models.precision == "int8":  # the cpu profile then serves quantized copies (export.quantize)
        from export.quantize import ensure_int8

        clip, yolo = ensure_int8(settings, clip, yolo)
    return clip, yolo


def main() -> int:
    try:
        clip, yolo = ensure_models(load_config())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"clip: {clip.variant} ({clip.embedding_dim}-d, {clip.image_size}px) weights: {clip.weights}")
    print(f"detector: {yolo.name} ({len(yolo.class_names)} classes) weights: {yolo.weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
