"""Direct Triton calls the tests compare OpenSearch and the adapter against."""

from __future__ import annotations

import numpy as np
import tritonclient.http as http

from common.config import load_config

BATCH = load_config().triton.max_batch_size  # the rendered models' max batch size


def bytes_input(name: str, texts: list[str]) -> http.InferInput:
    data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
    tensor = http.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def image_input(image: bytes) -> http.InferInput:
    data = np.frombuffer(image, dtype=np.uint8)[None]
    tensor = http.InferInput("encoded_image", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return tensor


def _text_batches(triton: http.InferenceServerClient, model: str, output: str, texts: list[str]) -> np.ndarray:
    rows = [triton.infer(model, [bytes_input("text", texts[i:i + BATCH])]).as_numpy(output)
            for i in range(0, len(texts), BATCH)]
    return np.concatenate(rows)


def embed_texts(triton: http.InferenceServerClient, texts: list[str]) -> np.ndarray:
    return _text_batches(triton, "embed_text", "embedding", texts)


def tokenize(triton: http.InferenceServerClient, texts: list[str]) -> np.ndarray:
    return _text_batches(triton, "tokenizer", "tokens", texts)


ANALYZE_OUTPUTS = ("embedding", "image_size", "boxes", "scores", "class_ids", "class_names", "object_embeddings")


def analyze(triton: http.InferenceServerClient, image: bytes) -> dict[str, np.ndarray]:
    result = triton.infer("analyze_image", [image_input(image)],
                          outputs=[http.InferRequestedOutput(n) for n in ANALYZE_OUTPUTS])
    return {n: result.as_numpy(n)[0] for n in ANALYZE_OUTPUTS}


def embed_image(triton: http.InferenceServerClient, image: bytes) -> np.ndarray:
    return triton.infer("embed_image", [image_input(image)]).as_numpy("embedding")[0]
