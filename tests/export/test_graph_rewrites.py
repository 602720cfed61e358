"""The two rewrites the exports apply for CPU speed compute what the graph computed before, checked by running both
graphs in ONNX Runtime on random inputs: the detector's softmax moved to its last axis (export.yolo) and each SiLU
(Sigmoid, Mul) written as one QuickGelu before quantization (export.quantize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.quantize import silu_as_one_node
from export.yolo import softmax_on_last_axis

SHAPE = [2, 16, 4, 50]  # the DFL's [batch, bins, sides, anchors], fewer anchors


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _graph(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_softmax_on_an_inner_axis_moves_to_the_last_with_the_same_values():
    model = _graph([helper.make_node("Relu", ["x"], ["r"]),
                    helper.make_node("Softmax", ["r"], ["s"], axis=1, name="dfl"),
                    helper.make_node("Softmax", ["s"], ["y"], axis=-1, name="already_last")])
    x = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32) * 4
    before = _run(model, x)

    assert softmax_on_last_axis(model) == 1, "only the inner-axis softmax is rewritten"
    onnx.checker.check_model(model)
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert all(next(a.i for a in n.attribute if a.name == "axis") in (-1, len(SHAPE) - 1) for n in softmaxes)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-6, atol=1e-7)


def test_silu_becomes_one_quickgelu_with_the_same_values(tmp_path: Path):
    model = _graph([helper.make_node("Sigmoid", ["x"], ["s"], name="act/Sigmoid"),
                    helper.make_node("Mul", ["x", "s"], ["m"], name="act/Mul"),
                    helper.make_node("Sigmoid", ["m"], ["s2"], name="gate/Sigmoid"),  # a Sigmoid that is no SiLU
                    helper.make_node("Mul", ["s2", "s2"], ["y"], name="gate/Mul")])
    x = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32) * 4
    onnx.save(model, tmp_path / "in.onnx")

    assert silu_as_one_node(tmp_path / "in.onnx", tmp_path / "out.onnx") == 1
    rewritten = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.op_type for n in rewritten.graph.node] == ["QuickGelu", "Sigmoid", "Mul"]
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-6)
