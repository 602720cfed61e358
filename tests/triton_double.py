"""A stand-in for the adapter's Triton client (unit tests only): answers like the ensembles, or fails on demand."""

from __future__ import annotations

import numpy as np

DIM = 4


def analysis(height: int = 32, width: int = 32, boxes: list[list[float]] | None = None,
             classes: list[tuple[int, str]] | None = None) -> dict[str, np.ndarray]:
    """What `analyze_image` returns for an image of this size holding these boxes (class id and name each)."""
    boxes, classes = boxes or [], classes or []
    return {"embedding": np.ones(DIM, np.float32) / 2, "image_size": np.array([height, width]),
            "boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.full(len(boxes), 0.9, np.float32),
            "class_ids": np.array([c for c, _ in classes], np.int32),
            "class_names": np.array([n.encode() for _, n in classes], dtype=object),
            "object_embeddings": np.ones((len(boxes), DIM), np.float32) / 2}


class FakeTriton:
    def __init__(self, result: dict[str, np.ndarray] | None = None) -> None:
        self.result = result if result is not None else analysis()
        self.fail: Exception | None = None
        self.calls = 0

    async def analyze(self, image: bytes) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.result

    async def parameters(self, model: str) -> dict[str, str]:
        return {"clip_variant": "test", "clip_weights": "none", "detector": "test", "detector_weights": "none"}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass
