"""Building Triton requests, once: the same inputs are made by the adapter (HTTP aio), the bench (gRPC) and
the tests (HTTP), and the client modules share these class names, so the module is passed in."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from common.contract import ENCODED_IMAGE, TEXT

_DTYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32",
           np.dtype(np.int64): "INT64", np.dtype(np.object_): "BYTES"}


def tensor(client: ModuleType, name: str, array: np.ndarray) -> Any:
    """An InferInput of `client` (tritonclient.grpc, .grpc.aio or .http) holding `array`."""
    infer_input = client.InferInput(name, list(array.shape), _DTYPES[array.dtype])
    infer_input.set_data_from_numpy(array)
    return infer_input


def image_input(client: ModuleType, image: bytes) -> Any:
    """The encoded image as a batch of one: UINT8 [1, n]."""
    return tensor(client, ENCODED_IMAGE, np.frombuffer(image, dtype=np.uint8)[None])


def text_input(client: ModuleType, text: str) -> Any:
    """One query text as BYTES [1, 1]."""
    return tensor(client, TEXT, np.array([[text.encode("utf-8")]], dtype=np.object_))


def outputs(client: ModuleType, names: tuple[str, ...] | list[str]) -> list[Any]:
    return [client.InferRequestedOutput(name) for name in names]


def model_parameters(config: dict[str, Any]) -> dict[str, str]:
    """A model config's string parameters (where the templates record provenance and settings)."""
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
