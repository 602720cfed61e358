"""Direct Triton calls the tests compare OpenSearch and the adapter against."""

from __future__ import annotations

import numpy as np
import tritonclient.http as http

from common import triton_io
from common.config import load_config
from common.contract import ANALYZE_MODEL, ANALYZE_OUTPUTS, EMBED_IMAGE_MODEL, EMBED_TEXT_MODEL, EMBEDDING, TEXT

BATCH = load_config().triton.max_batch_size  # the rendered models' max batch size


def bytes_input(name: str, texts: list[str]) -> http.InferInput:
    return triton_io.tensor(http, name, np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_))


def _text_batches(triton: http.InferenceServerClient, model: str, output: str, texts: list[str]) -> np.ndarray:
    rows = [triton.infer(model, [bytes_input(TEXT, texts[i:i + BATCH])]).as_numpy(output)
            for i in range(0, len(texts), BATCH)]
    return np.concatenate(rows)


def embed_texts(triton: http.InferenceServerClient, texts: list[str]) -> np.ndarray:
    return _text_batches(triton, EMBED_TEXT_MODEL, EMBEDDING, texts)


def tokenize(triton: http.InferenceServerClient, texts: list[str]) -> np.ndarray:
    return _text_batches(triton, "tokenizer", "tokens", texts)


def analyze(triton: http.InferenceServerClient, image: bytes) -> dict[str, np.ndarray]:
    result = triton.infer(ANALYZE_MODEL, [triton_io.image_input(http, image)],
                          outputs=triton_io.outputs(http, ANALYZE_OUTPUTS))
    return {n: result.as_numpy(n)[0] for n in ANALYZE_OUTPUTS}


def embed_image(triton: http.InferenceServerClient, image: bytes) -> np.ndarray:
    return triton.infer(EMBED_IMAGE_MODEL, [triton_io.image_input(http, image)]).as_numpy(EMBEDDING)[0]
