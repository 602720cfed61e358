"""One shared async HTTP client per Triton server, the three calls the adapter makes, and the pool of replicas
the adapter spreads them over.

HTTP, not gRPC: Triton 2.51's gRPC frontend (the server the pytriton wheel ships, its newest) segfaults when a call's
completion races its "done" notification (triton-inference-server/server#7840 and #8034, fixed in later releases):
`ModelInferHandler::InferResponseComplete` locks the mutex of a context already gone. It happened under load, when a
client went away mid-call (an adapter killed) and in the first second after a restart with ML Commons' retries
pouring in, taking every in-flight analysis down with the server. The HTTP frontend has no such path, and with
binary tensors carries the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import tritonclient.http.aio as httpclient
from prometheus_client import Counter
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

log = logging.getLogger(__name__)

FAILOVERS = Counter("adapter_triton_failovers_total",
                    "Requests re-sent to another Triton replica after one failed them transiently", ["replica"])

# A request Triton has not answered in this long is abandoned (and reported transient, so it is retried).
INFER_TIMEOUT_S = 300.0
# Connections to one Triton: more than the adapter ever has in flight (its admission queues bound that).
MAX_CONNECTIONS = 256
# aiohttp asks for gzip by default and Triton then compresses every response, which the client decompresses:
# CPU on both sides for bytes that only cross the loopback or a data-centre link (bench --only ceiling).
UNCOMPRESSED = {"Accept-Encoding": "identity"}


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
        self.client = httpclient.InferenceServerClient(url=url, conn_limit=MAX_CONNECTIONS,
                                                       conn_timeout=INFER_TIMEOUT_S)

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready())
        except Exception:
            return False

    async def parameters(self, model: str) -> dict[str, str]:
        """The provenance the templates render into an ensemble's config (variant, weights, detector)."""
        try:
            config = await self.client.get_model_config(model)
        except Exception as exc:  # unreachable or not loaded: the caller retries, it is not a bug here
            raise TritonUnavailable(f"Triton at {self.url}: model config of {model}: {exc}") from exc
        return model_parameters(config)

    async def identity(self) -> str:
        """Which models serve embeddings now (variant, weights, export time): the query cache's key prefix."""
        parts = [await self.parameters(model) for model in (EMBED_TEXT_MODEL, EMBED_IMAGE_MODEL)]
        return json.dumps(parts, sort_keys=True)

    async def _infer(self, model: str, inputs: list[httpclient.InferInput], outputs: list[str]):
        try:
            return await self.client.infer(model, inputs, outputs=triton_io.outputs(httpclient, outputs),
                                           headers=UNCOMPRESSED)
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            kind = classify(message)
            if kind is TritonUnavailable:
                message = f"Triton at {self.url} ({exc.status() or 'no status'}): {message}"
            raise kind(message) from exc
        except Exception as exc:  # the connection itself broke (server gone mid-call, timed out): transient
            raise TritonUnavailable(f"Triton at {self.url}: {exc.__class__.__name__}: {exc}") from exc

    async def embed_text(self, text: str) -> np.ndarray:
        result = await self._infer(EMBED_TEXT_MODEL, [triton_io.text_input(httpclient, text)], [EMBEDDING])
        return result.as_numpy(EMBEDDING)[0]

    async def embed_image(self, image: bytes) -> np.ndarray:
        result = await self._infer(EMBED_IMAGE_MODEL, [triton_io.image_input(httpclient, image)], [EMBEDDING])
        return result.as_numpy(EMBEDDING)[0]

    async def analyze(self, image: bytes) -> dict[str, np.ndarray]:
        result = await self._infer(ANALYZE_MODEL, [triton_io.image_input(httpclient, image)], list(ANALYZE_OUTPUTS))
        return {name: result.as_numpy(name)[0] for name in ANALYZE_OUTPUTS}


class TritonPool:
    """Several Triton servers serving the same models, used as one.

    Each request goes to the replica with the fewest requests in flight (a slow or busy replica gets fewer), among
    those not set aside. A replica that fails a request transiently — killed mid-request, not ready, unreachable —
    is set aside for `cooldown_s` and that request is sent again to another replica, so a replica dying under load
    costs latency, not documents. A permanent failure (the image itself is bad) is final: another replica would
    answer the same. Only when every replica has failed the request does the caller see TritonUnavailable.
    With one replica this is exactly that replica.
    """

    def __init__(self, replicas: list[TritonModels], cooldown_s: float = 5.0) -> None:
        if not replicas:
            raise ValueError("a Triton pool needs at least one replica")
        self.replicas = replicas
        self.cooldown_s = cooldown_s
        self.in_flight = [0] * len(replicas)
        self.down_until = [0.0] * len(replicas)
        self.failovers = 0

    @classmethod
    def connect(cls, urls: list[str]) -> TritonPool:
        return cls([TritonModels(url) for url in urls])

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

    def _order(self, exclude: set[int]) -> list[int]:
        """Candidates, best first: replicas in service before those set aside, then fewest in flight."""
        now = time.monotonic()
        left = [i for i in range(len(self.replicas)) if i not in exclude]
        return sorted(left, key=lambda i: (self.down_until[i] > now, self.in_flight[i], i))

    async def _call(self, method: str, *args: Any) -> Any:
        tried: set[int] = set()
        failure: TritonUnavailable | None = None
        while len(tried) < len(self.replicas):
            i = self._order(tried)[0]
            tried.add(i)
            self.in_flight[i] += 1
            try:
                return await getattr(self.replicas[i], method)(*args)
            except TritonUnavailable as exc:
                failure = exc
                self.down_until[i] = time.monotonic() + self.cooldown_s
                if len(tried) < len(self.replicas):
                    self.failovers += 1
                    FAILOVERS.labels(self.urls[i]).inc()
                    log.warning("Triton replica %s failed (%s); sending the request to another", self.urls[i], exc)
            finally:
                self.in_flight[i] -= 1
        assert failure is not None
        raise failure

    async def ready(self) -> bool:
        """Ready when any replica is: the others are failed over to."""
        return any([await r.ready() for r in self.replicas])

    async def parameters(self, model: str) -> dict[str, str]:
        return dict(await self._call("parameters", model))

    async def identity(self) -> str:
        return str(await self._call("identity"))

    async def embed_text(self, text: str) -> np.ndarray:
        return np.asarray(await self._call("embed_text", text))

    async def embed_image(self, image: bytes) -> np.ndarray:
        return np.asarray(await self._call("embed_image", image))

    async def analyze(self, image: bytes) -> dict[str, np.ndarray]:
        return dict(await self._call("analyze", image))
