"""One shared async gRPC client to Triton, and the three calls the adapter makes."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from common.contract import IMAGE_ERROR_CODES

# A request Triton has not answered in this long is abandoned (and reported transient, so it is retried).
INFER_TIMEOUT_S = 300.0


class TritonUnavailable(RuntimeError):
    """Triton could not be reached, is not ready, timed out, or failed for a reason that is not the input's:
    transient, worth retrying."""


class InferenceFailed(ValueError):
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
        return {k: v.get("string_value", "") for k, v in config["config"].get("parameters", {}).items()}

    async def _infer(self, model: str, inputs: list[grpcclient.InferInput], outputs: list[str]):
        try:
            return await self.client.infer(model, inputs, client_timeout=INFER_TIMEOUT_S,
                                           outputs=[grpcclient.InferRequestedOutput(n) for n in outputs])
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            kind = classify(message)
            if kind is TritonUnavailable:
                message = f"Triton at {self.url} ({exc.status() or 'no status'}): {message}"
            raise kind(message) from exc
        except Exception as exc:  # the gRPC channel itself broke (server gone mid-call): transient
            raise TritonUnavailable(f"Triton at {self.url}: {exc.__class__.__name__}: {exc}") from exc

    async def embed_text(self, text: str) -> np.ndarray:
        data = np.array([[text.encode("utf-8")]], dtype=np.object_)
        tensor = grpcclient.InferInput("text", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        result = await self._infer("embed_text", [tensor], ["embedding"])
        return result.as_numpy("embedding")[0]

    @staticmethod
    def _image_input(image: bytes) -> grpcclient.InferInput:
        data = np.frombuffer(image, dtype=np.uint8)[None]
        tensor = grpcclient.InferInput("encoded_image", list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        return tensor

    async def embed_image(self, image: bytes) -> np.ndarray:
        result = await self._infer("embed_image", [self._image_input(image)], ["embedding"])
        return result.as_numpy("embedding")[0]

    async def analyze(self, image: bytes) -> dict[str, np.ndarray]:
        names = ["embedding", "image_size", "boxes", "scores", "class_ids", "class_names", "object_embeddings"]
        result = await self._infer("analyze_image", [self._image_input(image)], names)
        return {name: result.as_numpy(name)[0] for name in names}
