"""Dynamic batching hands a python model several requests at once; these join and split them."""

from __future__ import annotations

import numpy as np


def stack_requests(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Concatenates per-request batches along axis 0 and remembers how many rows each brought. A lone request's
    array is used as it is: copying a 640×640 detector input costs more than the rest of a python model's call."""
    counts = [int(a.shape[0]) for a in arrays]
    return (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)), counts


def split_rows(batch: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Inverse of `stack_requests`."""
    return np.split(batch, np.cumsum(counts)[:-1], axis=0)


def chunks(n: int, size: int) -> list[slice]:
    """Slices that cover range(n) in pieces of at most `size` (a model's max batch size)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def pad_stack(arrays: list[np.ndarray], fill) -> np.ndarray:
    """Stacks per-image arrays of different lengths (axis 0) into one [B, N_max, ...] array, padding with `fill`.

    One request carrying B images needs rectangular outputs; with a single image this is `array[None]`.
    """
    longest = max((len(a) for a in arrays), default=0)
    first = arrays[0]
    out = np.full((len(arrays), longest, *first.shape[1:]), fill, dtype=first.dtype)
    for i, array in enumerate(arrays):
        out[i, : len(array)] = array
    return out
