"""DALI CPU preprocessing (`preprocess/`) vs an independent Pillow/OpenCV/open_clip reference.

Every image kind of `tests/image_kinds.py`, for two real MobileCLIP2 preprocessing configurations read from
open_clip's pretrained configs (S2: mean 0 / std 1; S3: OpenAI mean/std; both bilinear, 256 px) plus a
bicubic 224 px one (ClipFacts allows bicubic). Bounds: max abs diff <= 0.01 per pixel on the ÷255
scale, for `yolo_input` and for `clip_input` after undoing mean/std; geometry outputs equal the reference's.
The measured maxima are printed per kind (visible without -s).
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest

from export.dali_serialize import GpuSerializationError, serialize_gpu, write_autoserialize_model
from preprocess.graph import OUTPUT_NAMES, PreprocessSpec, pipeline_definition
from preprocess.runtime import DaliPreprocessor, PreprocessResult
from preprocess.validate import ERROR_CODES, PreprocessError
from tests import image_kinds as kinds
from tests import reference_preprocess as ref

TOLERANCE = 0.01  # per pixel, ÷255 scale
DECODE_TOLERANCE = 3  # uint8 levels: room for libjpeg-turbo build differences (measured: 0)
MAX_PIXELS = 40_000_000  # the config default; the code under test takes it as a parameter


def _variant(name: str, tag: str = "dfndr2b") -> dict:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    return {"clip_size": int(size), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]),
            "interpolation": cfg["interpolation"]}


def _variants() -> dict[str, dict]:
    s3 = _variant("MobileCLIP2-S3")
    return {
        "MobileCLIP2-S2": _variant("MobileCLIP2-S2"),
        "MobileCLIP2-S3": s3,
        "bicubic-224-openai": {**s3, "clip_size": 224, "interpolation": "bicubic"},
    }


VARIANTS = _variants()
GOOD = {name: make() for name, make in kinds.GOOD_KINDS.items()}


def _make(variant: dict, **kwargs) -> DaliPreprocessor:
    return DaliPreprocessor(variant["clip_size"], variant["mean"], variant["std"], variant["interpolation"],
                            max_pixels=kwargs.pop("max_pixels", MAX_PIXELS), **kwargs)


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant_run(request):
    """All good kinds through one preprocessor (batches of 8 mixing sizes, formats and both decode routes)."""
    variant = VARIANTS[request.param]
    pre = _make(variant, batch_size=8)
    results = pre.run(list(GOOD.values()))
    return request.param, variant, dict(zip(GOOD, results, strict=True))


def _diffs(name: str, result: PreprocessResult, variant: dict) -> dict:
    expected = ref.reference_preprocess(GOOD[name], **variant)
    clip = ref.unnormalize(result.clip_input, variant["mean"], variant["std"])
    clip_ref = ref.unnormalize(expected.clip_input, variant["mean"], variant["std"])
    return {
        "expected": expected,
        "yolo": float(np.abs(result.yolo_input.astype(np.float64) - expected.yolo_input).max()),
        "clip": float(np.abs(clip - clip_ref).max()),
        "decoded": int(np.abs(result.decoded_image.astype(int) - expected.decoded_image.astype(int)).max())
        if result.decoded_image.shape == expected.decoded_image.shape else 999,
    }


def test_branches_match_reference_on_every_kind(variant_run, capsys):
    variant_name, variant, results = variant_run
    rows, failures, maxima = [], [], {"yolo": 0.0, "clip": 0.0, "decoded": 0}
    for name, result in results.items():
        assert isinstance(result, PreprocessResult), f"{name}: {result}"
        d = _diffs(name, result, variant)
        expected = d["expected"]
        rows.append(f"  {name:24s} {result.decoder:4s} {tuple(expected.image_size)!s:13s} "
                    f"yolo {d['yolo'] * 255:5.2f}/255  clip {d['clip'] * 255:5.2f}/255  decoded {d['decoded']}")
        maxima = {key: max(maxima[key], d[key]) for key in maxima}
        r, left, top = (float(v) for v in result.letterbox)
        if d["yolo"] > TOLERANCE or d["clip"] > TOLERANCE or d["decoded"] > DECODE_TOLERANCE:
            failures.append(name)
        if tuple(int(v) for v in result.image_size) != expected.image_size:
            failures.append(f"{name}: image_size {result.image_size} != {expected.image_size}")
        exp_r, exp_left, exp_top = expected.letterbox
        if (left, top) != (exp_left, exp_top) or abs(r - exp_r) > 1e-6 * exp_r:
            failures.append(f"{name}: letterbox {(r, left, top)} != {expected.letterbox}")
    with capsys.disabled():
        print(f"\n[{variant_name}] R={variant['clip_size']} {variant['interpolation']} mean={variant['mean']}"
              f" — max |DALI - reference| per kind (÷255 scale shown as levels/255; bound 2.55/255):")
        print("\n".join(rows))
        print(f"  overall max: yolo {maxima['yolo'] * 255:.2f}/255, clip {maxima['clip'] * 255:.2f}/255, "
              f"decoded {maxima['decoded']} levels")
    assert not failures, failures


def test_output_contract(variant_run):
    _, variant, results = variant_run
    size = variant["clip_size"]
    for name, result in results.items():
        h, w = (int(v) for v in result.image_size)
        assert result.yolo_input.shape == (3, 640, 640) and result.yolo_input.dtype == np.float32, name
        assert result.clip_input.shape == (3, size, size) and result.clip_input.dtype == np.float32, name
        assert result.image_size.shape == (2,) and result.image_size.dtype == np.int32, name
        assert result.letterbox.shape == (3,) and result.letterbox.dtype == np.float32, name
        assert result.decoded_image.shape == (h, w, 3) and result.decoded_image.dtype == np.uint8, name
        assert list(result.as_dict()) == list(OUTPUT_NAMES)
        assert result.yolo_input.min() >= 0.0 and result.yolo_input.max() <= 1.0, name


def test_letterbox_params_map_boxes_back_and_padding_is_exact(variant_run):
    _, _, results = variant_run
    pad = np.float32(114 / 255)
    for name, result in results.items():
        h, w = (int(v) for v in result.image_size)
        r, left, top = (float(v) for v in result.letterbox)
        new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
        left, top = int(left), int(top)
        # the padded area holds exactly pad_value/255, the image area does not start later than said
        assert np.all(result.yolo_input[:, :top, :] == pad) and np.all(result.yolo_input[:, top + new_h:, :] == pad)
        assert np.all(result.yolo_input[:, :, :left] == pad) and np.all(result.yolo_input[:, :, left + new_w:] == pad)
        # a box in original pixels survives the round trip original -> letterboxed -> original
        box = np.array([0.1 * w, 0.2 * h, 0.9 * w, 0.7 * h])
        boxed = box * r + np.array([left, top, left, top])
        back = (boxed - np.array([left, top, left, top])) / r
        np.testing.assert_allclose(back, box, rtol=1e-5, atol=1e-3, err_msg=name)


# ------------------------------------------------------------------------------------------ geometry


GEOMETRY_SIZES = [
    (1, 1), (1, 1280), (5, 1280), (3, 1280), (1280, 5), (639, 640), (640, 639), (641, 640), (100, 4000),
    (4000, 100), (256, 343), (256, 345), (343, 256), (257, 256), (300, 301), (37, 53), (2, 3), (479, 1000),
    (1000, 333), (720, 1280), (1080, 1920), (1944, 2592),
]


def _png(height: int, width: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(buf, "PNG",
                                                                                        compress_level=1)
    return buf.getvalue()


def test_geometry_and_resampling_on_awkward_sizes(capsys):
    """Random-noise PNGs (lossless, worst case for resampling) at sizes with rounding ties and extremes."""
    variant = VARIANTS["MobileCLIP2-S2"]
    pre = _make(variant, batch_size=8)
    data = [_png(h, w, i) for i, (h, w) in enumerate(GEOMETRY_SIZES)]
    worst = {"yolo": 0.0, "clip": 0.0}
    for (h, w), payload, result in zip(GEOMETRY_SIZES, data, pre.run(data), strict=True):
        assert isinstance(result, PreprocessResult), result
        expected = ref.reference_preprocess(payload, **variant)
        assert tuple(int(v) for v in result.image_size) == (h, w)
        r, left, top = (float(v) for v in result.letterbox)
        assert (int(left), int(top)) == expected.letterbox[1:], (h, w)
        assert r == pytest.approx(expected.letterbox[0], rel=1e-6), (h, w)
        yolo = float(np.abs(result.yolo_input - expected.yolo_input).max())
        clip = float(np.abs(result.clip_input - expected.clip_input).max())  # mean 0 / std 1: ÷255 scale
        worst = {"yolo": max(worst["yolo"], yolo), "clip": max(worst["clip"], clip)}
        assert yolo <= TOLERANCE and clip <= TOLERANCE, ((h, w), yolo * 255, clip * 255)
    with capsys.disabled():
        print(f"\n[awkward sizes, noise PNGs] max yolo {worst['yolo'] * 255:.2f}/255, "
              f"clip {worst['clip'] * 255:.2f}/255 over {len(GEOMETRY_SIZES)} sizes")


def test_reference_letterbox_is_ultralytics():
    """The reference's letterbox (geometry and pixels) is ultralytics' own LetterBox."""
    try:
        from export.ultralytics_offline import configure

        configure()
        from ultralytics.data.augment import LetterBox
    except Exception as exc:  # pragma: no cover - ultralytics is an export extra
        pytest.skip(f"ultralytics not usable here: {exc}")
    letterbox = LetterBox(new_shape=(640, 640), auto=False, scaleup=True, center=True, padding_value=114)
    for i, (h, w) in enumerate(GEOMETRY_SIZES[:18]):
        rgb = np.random.default_rng(i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ours, _ = ref.letterbox_reference(rgb, 640, 114)
        theirs = letterbox(image=rgb)
        np.testing.assert_array_equal((ours * 255).round().astype(np.uint8).transpose(1, 2, 0), theirs,
                                      err_msg=str((h, w)))


# ------------------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_get_their_error_and_the_rest_of_the_batch_succeeds():
    variant = VARIANTS["MobileCLIP2-S2"]
    pre = _make(variant, batch_size=4)
    good_names = ["jpeg_rgb", "png_rgba", "gif_palette", "jpeg_exif_6", "jpeg_cmyk"]
    batch, expected = [], []
    for (bad_name, (make, code)), good_name in zip(kinds.BAD_KINDS.items(),
                                                   good_names * len(kinds.BAD_KINDS), strict=False):
        batch += [make(), GOOD[good_name]]
        expected += [("error", bad_name, code), ("ok", good_name, None)]
    results = pre.run(batch)
    assert len(results) == len(batch)
    alone = {name: _make(variant, batch_size=1).run([GOOD[name]])[0] for name in good_names}
    for (kind, name, code), result in zip(expected, results, strict=True):
        if kind == "error":
            assert isinstance(result, PreprocessError), (name, result)
            assert result.code == code, (name, result)
            assert result.code in ERROR_CODES and result.message, (name, result)
        else:
            assert isinstance(result, PreprocessResult), (name, result)
            for out in OUTPUT_NAMES:  # identical to the image preprocessed on its own
                np.testing.assert_array_equal(getattr(result, out), getattr(alone[name], out), err_msg=name)
    # the preprocessor keeps working after DALI failed on an item (its pipeline was rebuilt)
    again = pre.run([GOOD["jpeg_rgb"]])[0]
    np.testing.assert_array_equal(again.clip_input, alone["jpeg_rgb"].clip_input)


def test_pixel_limit_is_configurable_and_read_from_the_header():
    variant = VARIANTS["MobileCLIP2-S2"]
    image = kinds.png_above_limit_small()  # 2000 x 1500 = 3 MP
    strict = _make(variant, max_pixels=2_999_999)
    result = strict.run([image, GOOD["jpeg_rgb"]])
    assert isinstance(result[0], PreprocessError) and result[0].code == "too_large", result[0]
    assert "2000x1500" in result[0].message
    assert isinstance(result[1], PreprocessResult)
    assert isinstance(_make(variant, max_pixels=3_000_000).run([image])[0], PreprocessResult)
    assert strict.validate(image).code == "too_large"
    assert strict.validate(GOOD["jpeg_rgb"]) is None


def test_item_dali_cannot_decode_falls_back_to_pillow(monkeypatch):
    """Forces a GIF into DALI (which cannot read GIF): the batch fails, the pipeline is rebuilt, the GIF is
    decoded by Pillow and preprocessed by the decoded-input variant; its neighbours are unaffected."""
    variant = VARIANTS["MobileCLIP2-S2"]
    pre = _make(variant, batch_size=4)
    reference = pre.run([GOOD["gif_palette"], GOOD["jpeg_rgb"]])
    monkeypatch.setattr(pre, "_dali_can_decode", lambda fmt, data, image: True)
    results = pre.run([GOOD["jpeg_rgb"], GOOD["gif_palette"], GOOD["png_rgb"]])
    assert [r.decoder for r in results] == ["dali", "pil", "dali"]
    np.testing.assert_array_equal(results[1].clip_input, reference[0].clip_input)
    np.testing.assert_array_equal(results[0].yolo_input, reference[1].yolo_input)


def test_accepts_triton_style_arrays():
    variant = VARIANTS["MobileCLIP2-S2"]
    pre = _make(variant)
    data = GOOD["jpeg_rgb"]
    as_uint8 = np.frombuffer(data, dtype=np.uint8)
    as_object = np.array([data], dtype=object)
    results = pre.run([as_uint8, as_object, np.zeros(0, dtype=np.uint8)])
    assert isinstance(results[0], PreprocessResult) and isinstance(results[1], PreprocessResult)
    np.testing.assert_array_equal(results[0].clip_input, results[1].clip_input)
    assert isinstance(results[2], PreprocessError) and results[2].code == "empty"


# ------------------------------------------------------------------------------------------ GPU variant


def _cuda_available() -> bool:
    try:
        import ctypes

        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


@pytest.mark.skipif(_cuda_available(), reason="checks the no-GPU behaviour")
def test_serialize_gpu_without_gpu_is_a_clear_error(tmp_path):
    spec = PreprocessSpec(**VARIANTS["MobileCLIP2-S2"])
    with pytest.raises(GpuSerializationError, match="needs a CUDA device"):
        serialize_gpu(tmp_path / "model.dali", spec=spec)
    assert not (tmp_path / "model.dali").exists()


def test_autoserialize_model_file(tmp_path):
    from nvidia.dali._utils.autoserialize import _discover_autoserialize

    spec = PreprocessSpec(**VARIANTS["MobileCLIP2-S3"])
    path = write_autoserialize_model(tmp_path / "1", spec=spec, batch_size=8)
    module_spec = importlib.util.spec_from_file_location("generated_dali_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    assert spec == module.SPEC
    assert len(_discover_autoserialize(module, visited=[])) == 1


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU")
def test_gpu_pipeline_matches_cpu(tmp_path, capsys):  # pragma: no cover - runs only where a GPU is
    """On a GPU machine: model.dali serializes, and the GPU definition matches the CPU one."""
    from nvidia.dali import Pipeline

    variant = VARIANTS["MobileCLIP2-S2"]
    spec = PreprocessSpec(**variant)
    path = serialize_gpu(tmp_path / "model.dali", spec=spec, batch_size=8)
    # one batch is fed per run(): with DALI's default prefetch depth of 2, run() would wait for a second one
    gpu = Pipeline.deserialize(filename=str(path), device_id=0, prefetch_queue_depth=1)
    cpu = _make(variant, batch_size=8)
    names = [n for n in GOOD if n != "gif_palette"]  # GIF is not a DALI format
    rows = []
    for name in names:
        gpu.feed_input("encoded_image", [np.frombuffer(GOOD[name], dtype=np.uint8)])
        outs = [o.as_cpu() if hasattr(o, "as_cpu") else o for o in gpu.run()]
        got = dict(zip(OUTPUT_NAMES, (np.array(o[0]) for o in outs), strict=True))
        want = cpu.run([GOOD[name]])[0]
        np.testing.assert_array_equal(got["image_size"], want.image_size)
        np.testing.assert_allclose(got["letterbox"], want.letterbox, rtol=1e-6)
        dec = int(np.abs(got["decoded_image"].astype(int) - want.decoded_image.astype(int)).max())
        yolo = float(np.abs(got["yolo_input"] - want.yolo_input).max())
        clip = float(np.abs(got["clip_input"] - want.clip_input).max())
        rows.append(f"  {name:24s} decoded {dec:3d}  yolo {yolo * 255:5.2f}/255  clip {clip * 255:5.2f}/255")
    with capsys.disabled():
        print("\n[GPU model.dali vs CPU pipeline]\n" + "\n".join(rows))
    # same pixels in (decoded-input variant): the resampling itself must agree
    gpu_decoded = pipeline_definition(spec, "gpu", source="decoded", batch_size=8)(prefetch_queue_depth=1)
    gpu_decoded.build()
    for name in names:
        pixels = ref.decode_reference(GOOD[name])
        gpu_decoded.feed_input("rgb_image", [pixels])
        outs = [o.as_cpu() if hasattr(o, "as_cpu") else o for o in gpu_decoded.run()]
        got = dict(zip(OUTPUT_NAMES, (np.array(o[0]) for o in outs), strict=True))
        expected = ref.reference_preprocess(GOOD[name], **variant)
        assert np.abs(got["yolo_input"] - expected.yolo_input).max() <= TOLERANCE, name
        assert np.abs(got["clip_input"] - expected.clip_input).max() <= TOLERANCE, name


def test_constants_come_from_the_model_facts(tmp_path):
    from common.model_facts import ClipFacts, YoloFacts

    s3 = VARIANTS["MobileCLIP2-S3"]
    clip = ClipFacts(weights="random-init (offline)", exported_at="test", variant="MobileCLIP2-S3",
                     embedding_dim=768, image_size=s3["clip_size"], mean=s3["mean"], std=s3["std"],
                     interpolation=s3["interpolation"], context_length=77, vocab_size=49408)
    yolo = YoloFacts(weights="random-init (offline)", exported_at="test", name="yolo11n", input_size=640,
                     pad_value=114, class_names=["a"], conf_threshold=0.25, iou_threshold=0.45, max_det=100)
    pre = DaliPreprocessor.from_facts(clip, yolo, max_pixels=MAX_PIXELS, batch_size=2)
    assert pre.spec == PreprocessSpec(**s3)
    assert pre.spec == PreprocessSpec.from_facts(ClipFacts.load(clip.save(tmp_path / "c").parent),
                                                 YoloFacts.load(yolo.save(tmp_path / "y").parent))
    result = pre.run([GOOD["jpeg_rgb"]])[0]
    assert result.clip_input.shape == (3, s3["clip_size"], s3["clip_size"])
