"""The cpu profile's preprocessing runtime: the DALI graph run on the CPU inside a Triton python-backend model.

:class:`DaliPreprocessor` takes a list of encoded images and gives one result per item, a bad item costing only
its own slot, because a decoding error invalidates a whole DALI pipeline object. It:

* validates each item before DALI sees it (empty, not an image, truncated, above the pixel limit: read from
  the header only, so a huge image is never decoded; the checks are :class:`preprocess.validate.ImageValidator`'s);
* sends JPEG/PNG/simple WebP to the DALI decoder; every other format Pillow reads (GIF, BMP, TIFF, extended
  WebP, PNG/WebP carrying an EXIF orientation) is decoded with Pillow (``exif_transpose`` +
  ``convert("RGB")``) and the decoded pixels go through the *same* graph built with ``source="decoded"``;
* if DALI still fails on a batch, the pipeline is rebuilt and the items are retried one by one; an item DALI
  cannot decode falls back to Pillow, and only an item neither can decode gets ``decode_failed``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from preprocess.graph import DECODED_INPUT_NAME, INPUT_NAME, OUTPUT_NAMES, PreprocessSpec, Source, build_pipeline
from preprocess.validate import ImageValidator, PreprocessError, sniff

Decoder = Literal["dali", "pil"]  # which decoder produced an image's pixels

if TYPE_CHECKING:  # pragma: no cover
    from common.config import Settings
    from common.model_facts import ClipFacts, YoloFacts


@dataclass(frozen=True)
class PreprocessResult:
    """One image's outputs (arrays owned by this object, not by DALI)."""

    yolo_input: np.ndarray  # float32 [3,S,S]
    clip_input: np.ndarray  # float32 [3,R,R]
    image_size: np.ndarray  # int32 [2] (h, w)
    letterbox: np.ndarray  # float32 [3] (r, left, top)
    decoded_image: np.ndarray  # uint8 [H,W,3]
    decoder: Decoder  # which decoder produced the pixels

    def as_dict(self) -> dict[str, np.ndarray]:
        """The five outputs by Triton tensor name."""
        return {name: getattr(self, name) for name in OUTPUT_NAMES}

    def __repr__(self) -> str:
        h, w = (int(v) for v in self.image_size)
        r, left, top = (float(v) for v in self.letterbox)
        return (f"PreprocessResult(image_size=({h}, {w}), letterbox=(r={r:.6g}, left={left:g}, top={top:g}), "
                f"clip_input={tuple(self.clip_input.shape)}, decoder={self.decoder!r})")


class DaliPreprocessor(ImageValidator):
    """Runs the CPU variant of the preprocessing on a list of encoded images, one result per item.

    The DALI pipeline for encoded images is built in the constructor and reused (the one for Pillow-decoded
    pixels on first need); a pipeline that DALI invalidated after an error is rebuilt. ``batch_size`` is the
    DALI batch: longer lists are processed in chunks. A lock serializes :meth:`run`. Output arrays are copies
    owned by the results.
    """

    def __init__(
        self,
        clip_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str,
        yolo_size: int = 640,
        pad_value: int = 114,
        *,
        max_pixels: int,
        num_threads: int = 2,
        batch_size: int = 16,
    ) -> None:
        super().__init__(max_pixels)
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.spec = PreprocessSpec(clip_size=int(clip_size), mean=tuple(float(m) for m in mean),
                                   std=tuple(float(s) for s in std), interpolation=interpolation,
                                   yolo_size=int(yolo_size), pad_value=int(pad_value))
        self.num_threads = int(num_threads)
        self.batch_size = int(batch_size)
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
        self._pipe("encoded")  # built now, so a broken DALI install fails at model load, not per request

    @classmethod
    def from_facts(cls, clip: ClipFacts, yolo: YoloFacts, *, max_pixels: int, num_threads: int = 2,
                   batch_size: int = 16) -> DaliPreprocessor:
        spec = PreprocessSpec.from_facts(clip, yolo)
        return cls(spec.clip_size, spec.mean, spec.std, spec.interpolation, spec.yolo_size, spec.pad_value,
                   max_pixels=max_pixels, num_threads=num_threads, batch_size=batch_size)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, num_threads: int = 2,
                      batch_size: int | None = None) -> DaliPreprocessor:
        """Reads the exported models' metadata named by the config (``make models`` writes it)."""
        from common.config import load_config
        from common.model_facts import ClipFacts, YoloFacts

        settings = settings or load_config()
        return cls.from_facts(ClipFacts.load(settings.clip_dir), YoloFacts.load(settings.yolo_dir),
                              max_pixels=settings.models.max_image_pixels, num_threads=num_threads,
                              batch_size=batch_size or settings.triton.max_batch_size)

    # ---------------------------------------------------------------------------------------- public

    def run(self, images: Sequence[bytes]) -> list[PreprocessResult | PreprocessError]:
        """Preprocesses every item; a bad item yields a :class:`PreprocessError` in its slot, never raises."""
        with self._lock:
            results: list[PreprocessResult | PreprocessError | None] = [None] * len(images)
            to_dali: list[tuple[int, bytes]] = []
            to_pil: list[tuple[int, np.ndarray]] = []
            for i, data in enumerate(images):
                try:
                    routed = self._validate(data)
                except Exception as exc:  # a checker bug must cost one item, not the request
                    routed = PreprocessError("decode_failed", f"the image could not be read: {exc!r}")
                if isinstance(routed, PreprocessError):
                    results[i] = routed
                elif isinstance(routed, np.ndarray):
                    to_pil.append((i, routed))
                else:
                    to_dali.append((i, routed))
            for idx, result in self._run_encoded(to_dali):
                if isinstance(result, (PreprocessError, PreprocessResult)):
                    results[idx] = result
                else:  # DALI could not decode it: Pillow's pixels through the decoded variant
                    to_pil.append((idx, result))
            for idx, result in self._run_decoded(to_pil):
                results[idx] = result
            return results  # type: ignore[return-value]

    # ---------------------------------------------------------------------------------------- DALI

    def _pipe(self, source: Source):
        pipe = self._pipes.get(source)
        if pipe is None:
            pipe = build_pipeline(self.spec, "cpu", source=source, batch_size=self.batch_size,
                                  num_threads=self.num_threads)
            pipe.build()
            self._pipes[source] = pipe
        return pipe

    def _run_batch(self, source: Source, arrays: list[np.ndarray], decoder: Decoder) -> list[PreprocessResult]:
        pipe = self._pipe(source)
        pipe.feed_input(INPUT_NAME if source == "encoded" else DECODED_INPUT_NAME, arrays)
        outputs = pipe.run()
        return [
            PreprocessResult(**{name: np.array(out[k]) for name, out in zip(OUTPUT_NAMES, outputs, strict=True)},
                             decoder=decoder)  # np.array copies
            for k in range(len(arrays))
        ]

    def _try_batch(self, source: Source, arrays: list[np.ndarray], decoder: Decoder):
        """(results, None) or (None, exception); a failed pipeline is dropped (DALI invalidates it)."""
        try:
            return self._run_batch(source, arrays, decoder), None
        except Exception as exc:
            self._pipes.pop(source, None)
            return None, exc

    def _run_encoded(self, items: list[tuple[int, bytes]]):
        """Yields (index, PreprocessResult | PreprocessError | Pillow pixels for the decoded route)."""
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            arrays = [np.frombuffer(data, dtype=np.uint8) for _, data in chunk]
            results, _ = self._try_batch("encoded", arrays, "dali")
            if results is not None:
                yield from zip((i for i, _ in chunk), results, strict=True)
                continue
            for (idx, data), array in zip(chunk, arrays, strict=True):  # isolate the item DALI refused
                results, exc = self._try_batch("encoded", [array], "dali")
                if results is not None:
                    yield idx, results[0]
                    continue
                fallback = self._pil_decode(data, sniff(data) or "image")
                if isinstance(fallback, PreprocessError):
                    fallback = PreprocessError(fallback.code, f"{fallback.message}; DALI: {_dali_reason(exc)}")
                yield idx, fallback

    def _run_decoded(self, items: list[tuple[int, np.ndarray]]):
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            results, _ = self._try_batch("decoded", [a for _, a in chunk], "pil")
            if results is not None:
                yield from zip((i for i, _ in chunk), results, strict=True)
                continue
            for idx, array in chunk:
                results, exc = self._try_batch("decoded", [array], "pil")
                yield idx, (results[0] if results is not None else
                            PreprocessError("decode_failed", f"preprocessing failed: {_dali_reason(exc)}"))


def _dali_reason(exc: BaseException | None) -> str:
    """The informative part of a DALI pipeline error (the lines after "encountered:")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "encountered:" in lines:
        lines = lines[lines.index("encountered:") + 1 :]
    lines = [line for line in lines if not line.startswith("Current pipeline object is no longer valid")]
    return " ".join(lines)[:300] or repr(exc)

