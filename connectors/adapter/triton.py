"""One shared async gRPC client to Triton, and the three calls the adapter makes."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from common import triton_io
from common.contract import (
    ANALYZE_MODEL,
    ANALYZE_OUTPUTS,
    EMBED_IMAGE_MODEL,
    EMBED_TEXT_MODEL,
    EMBEDDING,
    IMAGE_ERROR_CODES,
)
from common.triton_io import model_parameters
from connectors.adapter.errors import AdapterError

# A request Triton has not answered in this long is abandoned (and reported transient, so it is retried).
INFER_TIMEOUT_S = 300.0


class TritonUnavailable(AdapterError):
    """Triton could not be reached, is not ready, timed out, or failed for a reason that is not the input's:
    transient, worth retrying."""


class InferenceFailed(AdapterError, ValueError):
    """Triton refused this input (an image the preprocessing cannot use): permanent for this input."""


def classify(message: str) -> type[TritonUnavailable] | type[InferenceFailed]:
    """Only the preprocessing's own image error codes mark an input as bad; everything else (a server shutting
    down, a lost connection, a model not loaded) is transient, so an outage is never reported as a bad image."""
    if any(f"{code}: " in message for code in IMAGE_ERROR_CODES):
        return InferenceFailed
    return TritonUnavailable


class TritonModels:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = grpcclient.InferenceServerClient(url=url)

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready())
        except Exception:
            return False

    async def parameters(self, model: str) -> dict[str, str]:
        """The provenance the templates render into an ensemble's config (variant, weights, detector)."""
        config = await self.client.get_model_config(model, as_json=True)
        return model_parameters(config["config"])

    async def identity(self) -> str:
        """Which models serve embeddings now (variant, weights, export time): the query cache's key prefix."""
        parts = [await self.parameters(model) for model in (EMBED_TEXT_MODEL, EMBED_IMAGE_MODEL)]
        return json.dumps(parts, sort_keys=True)

    async def _infer(self, model: str, inputs: list[grpcclient.InferInput], outputs: list[str]):
        try:
            return await self.client.infer(model, inputs, client_timeout=INFER_TIMEOUT_S,
                                           outputs=triton_io.outputs(grpcclient, outputs))
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            kind = classify(message)
            if kind is TritonUnavailable:
                message = f"Triton at {self.url} ({exc.status() or 'no status'}): {message}"
            raise kind(message) from exc
        except Exception as exc:  # the gRPC channel itself broke (server gone mid-call): transient
            raise TritonUnavailable(f"Triton at {self.url}: {exc.__class__.__name__}: {exc}") from exc

    async def embed_text(self, text: str) -> np.ndarray:
        result = await self._infer(EMBED_TEXT_MODEL, [triton_io.text_input(grpcclient, text)], [EMBEDDING])
        return result.as_numpy(EMBEDDING)[0]

    async def embed_image(self, image: bytes) -> np.ndarray:
        result = await self._infer(EMBED_IMAGE_MODEL, [triton_io.image_input(grpcclient, image)], [EMBEDDING])
        return result.as_numpy(EMBEDDING)[0]

    async def analyze(self, image: bytes) -> dict[str, np.ndarray]:
        result = await self._infer(ANALYZE_MODEL, [triton_io.image_input(grpcclient, image)], list(ANALYZE_OUTPUTS))
        return {name: result.as_numpy(name)[0] for name in ANALYZE_OUTPUTS}
