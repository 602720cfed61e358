"""The Triton image pipeline (cpu profile) against independent references.

References: tests/reference_preprocess.py (PIL/OpenCV/open_clip) and the exported ONNX models run with ONNX
Runtime in this process. The detector is the bundled shapes detector, so there are real detections.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as http
from PIL import Image
from tritonclient.utils import InferenceServerException

from common import triton_io
from connectors.adapter.triton import InferenceFailed, classify
from export.shapes.dataset import render
from tests import triton_calls
from tests.reference_preprocess import clip_reference, decode_reference, reference_preprocess

pytestmark = pytest.mark.integration


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [jpeg(render(31337, i)[0]) for i in range(6)]


@pytest.fixture(scope="module")
def sessions(clip_facts, yolo_facts, settings):
    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    return {"clip": session(settings.clip_dir / clip_facts.image_file),
            "yolo": session(settings.yolo_dir / yolo_facts.file)}


def cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def reference_outputs(data: bytes, clip_facts, yolo_facts):
    return reference_preprocess(data, clip_size=clip_facts.image_size, mean=clip_facts.mean, std=clip_facts.std,
                                interpolation=clip_facts.interpolation, yolo_size=yolo_facts.input_size,
                                pad_value=yolo_facts.pad_value)


def test_global_embedding_matches_embed_image_and_onnx(triton, images, sessions, clip_facts, yolo_facts):
    worst = 1.0
    for data in images:
        analyzed = triton_calls.analyze(triton, data)["embedding"]
        embedded = triton_calls.embed_image(triton, data)
        ref = reference_outputs(data, clip_facts, yolo_facts)
        onnx = sessions["clip"].run(None, {"clip_input": ref.clip_input[None]})[0][0]
        worst = min(worst, cos(analyzed, embedded), cos(analyzed, onnx))
    print(f"\nglobal embedding: min cosine vs embed_image / ONNX-on-reference = {worst:.6f}")
    assert worst >= 0.999


def test_boxes_equal_yolo_onnx_mapped_to_original(triton, images, sessions, clip_facts, yolo_facts):
    total = 0
    for data in images:
        got = triton_calls.analyze(triton, data)
        ref = reference_outputs(data, clip_facts, yolo_facts)
        raw = sessions["yolo"].run(None, {"images": ref.yolo_input[None]})[0][0]
        raw = raw[raw[:, 4] > 0]
        r, left, top = ref.letterbox
        h, w = ref.image_size
        boxes = (raw[:, :4] - [left, top, left, top]) / r
        boxes = np.clip(boxes, 0, [w, h, w, h])
        assert len(got["scores"]) == len(raw)
        np.testing.assert_allclose(got["boxes"], boxes, atol=1.0)
        np.testing.assert_allclose(got["scores"], raw[:, 4], atol=1e-3)
        assert got["class_ids"].tolist() == raw[:, 5].astype(int).tolist()
        assert [n.decode() for n in got["class_names"]] == [yolo_facts.class_names[c] for c in got["class_ids"]]
        total += len(raw)
    assert total >= len(images), "the shapes detector found (almost) nothing"


def test_object_embeddings_equal_independent_crops(triton, images, sessions, clip_facts):
    worst, count = 1.0, 0
    for data in images:
        got = triton_calls.analyze(triton, data)
        rgb = Image.fromarray(decode_reference(data))
        for box, emb in zip(got["boxes"], got["object_embeddings"], strict=True):
            crop = np.asarray(rgb.crop(tuple(float(v) for v in box)))
            pixels = clip_reference(crop, clip_facts.image_size, clip_facts.mean, clip_facts.std,
                                    clip_facts.interpolation)
            expected = sessions["clip"].run(None, {"clip_input": pixels[None]})[0][0]
            worst, count = min(worst, cos(emb, expected)), count + 1
    print(f"\nper-object embeddings: {count} objects, min cosine vs independent crop = {worst:.5f}")
    assert count > 0 and worst >= 0.995


def test_blank_image_has_no_objects(triton, clip_facts):
    got = triton_calls.analyze(triton, jpeg(Image.new("RGB", (640, 480), (128, 128, 128))))
    assert got["boxes"].shape == (0, 4) and got["scores"].shape == (0,)
    assert got["object_embeddings"].shape == (0, clip_facts.embedding_dim)
    assert got["embedding"].shape == (clip_facts.embedding_dim,)


def test_box_embedding_handles_max_det_objects(triton, yolo_facts, clip_facts):
    """The BLS step at the cap: max_det valid rows in, max_det objects with embeddings out."""
    n = yolo_facts.max_det
    image = decode_reference(jpeg(render(5, 0)[0]))
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    x1, y1 = rng.uniform(0, w - 40, n), rng.uniform(0, h - 40, n)
    detections = np.stack([x1, y1, x1 + 30, y1 + 30, np.linspace(0.99, 0.3, n), np.arange(n) % 5], 1)
    inputs = {"decoded_image": image[None], "detections": detections.astype(np.float32)[None],
              "image_size": np.array([[h, w]], np.int32), "letterbox": np.array([[1.0, 0.0, 0.0]], np.float32)}
    result = triton.infer("box_embedding", [triton_io.tensor(http, name, array) for name, array in inputs.items()])
    assert result.as_numpy("boxes").shape == (1, n, 4)
    embeddings = result.as_numpy("object_embeddings")[0]
    assert embeddings.shape == (n, clip_facts.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)


def test_many_shapes_are_capped_at_max_det(triton, yolo_facts):
    grid = Image.new("RGB", (1600, 1600), (240, 240, 240))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(grid)
    for i in range(13):
        for j in range(13):
            draw.ellipse((i * 123 + 20, j * 123 + 20, i * 123 + 100, j * 123 + 100), fill=(200, 30, 30))
    got = triton_calls.analyze(triton, jpeg(grid))
    # far more circles than max_det: the detector's top max_det, no more and no fewer
    assert len(got["scores"]) == yolo_facts.max_det
    assert np.all(np.diff(got["scores"]) <= 1e-6), "kept in descending confidence"


BATCHED_MODELS = ("preprocess", "clip_image", "yolo", "box_embedding")


def executions_by_batch_size(triton) -> dict[tuple[str, int], int]:
    """(model, batch size) → how many executions of that size the server has run since it started."""
    counts = {}
    for model in BATCHED_MODELS:
        stats = triton.get_inference_statistics(model)["model_stats"][0]
        for entry in stats.get("batch_stats", []):
            counts[model, int(entry["batch_size"])] = int(entry["compute_infer"]["count"])
    return counts


def test_concurrent_requests_batch_and_match_sequential(triton, triton_server, images):
    sequential = [triton_calls.analyze(triton, d) for d in images]
    requests = [images[i % len(images)] for i in range(16)]

    def call(data):
        return triton_calls.analyze(http.InferenceServerClient(triton_server.http_url), data)

    # the server's statistics count from its start: only what this test's own load added says it was batched
    before = executions_by_batch_size(triton)
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(call, requests))
    after = executions_by_batch_size(triton)
    for i, result in enumerate(concurrent):
        expected = sequential[i % len(images)]
        np.testing.assert_allclose(result["embedding"], expected["embedding"], atol=1e-5)
        np.testing.assert_allclose(result["boxes"], expected["boxes"], atol=1e-3)
        np.testing.assert_allclose(result["object_embeddings"], expected["object_embeddings"], atol=1e-5)
    grown = {key: count - before.get(key, 0) for key, count in after.items() if count > before.get(key, 0)}
    print(f"\nexecutions added by the concurrent load, by (model, batch size): {sorted(grown.items())}")
    assert max((size for _, size in grown), default=0) > 1, "16 concurrent requests ran one at a time"


@pytest.mark.parametrize(("bad", "code"), [(b"", "empty"), (b"not an image at all", "not_an_image"),
                                           (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "truncated")])
def test_malformed_image_fails_alone_with_its_code(triton, images, clip_facts, bad, code):
    with pytest.raises(InferenceServerException) as info:
        triton_calls.analyze(triton, bad)
    message = info.value.message()
    assert f"{code}: " in message, message
    assert classify(message) is InferenceFailed  # the adapter will call it a bad image, not an outage
    assert triton.is_server_ready()
    assert triton_calls.analyze(triton, images[0])["embedding"].shape == (clip_facts.embedding_dim,)
