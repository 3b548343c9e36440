"""Streamlining passes: each ONNX -> ONNX pass does what its name says, keeps every quantized tensor
of the model, and a pass that changed one would be stopped, named, by its check."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lowbit.core.errors import LowbitError
from lowbit.flow import import_onnx
from lowbit.interchange import streamline as passes
from lowbit.interchange.read import read_onnx
from lowbit.model.data import load_digits_split, model_floats

QONNX = "qonnx.custom_op.general"


def _quant(inp, out, signed, narrow=0):
    return helper.make_node("Quant", inp, [out], domain=QONNX, signed=signed, narrow=narrow, rounding_mode="ROUND")


def _brevitas_like(path, seed=0):
    """The patterns Brevitas exports: a 4-bit input Quant; a MatMul on 3-bit narrow weights with a
    per-channel scale, then a bias and a signed 2-bit activation Quant; a Gemm (transB) on
    BipolarQuant weights with a bias, to the logits."""
    rng = np.random.default_rng(seed)
    s0 = rng.uniform(0.02, 0.05, 16).astype(np.float32)
    w0 = (rng.integers(-3, 4, (64, 16)) * s0).astype(np.float32)
    w1 = rng.normal(size=(10, 16)).astype(np.float32)
    nodes = [_quant(["x", "s_in", "zero", "bits4"], "q", 0),
             _quant(["w0", "s0", "zero", "bits3"], "w0q", 1, narrow=1),
             helper.make_node("MatMul", ["q", "w0q"], ["h"], name="fc0"),
             helper.make_node("Add", ["h", "b0"], ["hb"], name="fc0_bias"),
             _quant(["hb", "s_act", "zero", "bits2"], "a", 1),
             helper.make_node("BipolarQuant", ["w1", "s1"], ["w1q"], domain=QONNX),
             helper.make_node("Gemm", ["a", "w1q", "b1"], ["y"], name="fc1", transB=1)]
    inits = {"s_in": 1 / 15, "zero": 0.0, "bits4": 4.0, "bits3": 3.0, "bits2": 2.0, "w0": w0, "s0": s0,
             "b0": rng.normal(0, 0.5, 16), "s_act": 0.37, "w1": w1, "s1": 0.25, "b1": rng.normal(size=10)}
    graph = helper.make_graph(nodes, "brevitas-like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)]),
              path)
    return path


def _digits_floats():
    ds = load_digits_split()
    return model_floats(ds.x_test.reshape(len(ds.x_test), -1), ds.max_value)


def test_each_pass_leaves_what_its_name_says(tmp_path):
    model = read_onnx(_brevitas_like(tmp_path / "m.onnx"))
    out, reports, predictions = passes.streamline(model, _digits_floats())
    assert [r["pass"] for r in reports] == ["binary_to_bipolar", "integer_weights", "quantizers_to_thresholds",
                                            "absorb_into_thresholds"]
    assert [r["changed"] for r in reports] == [False, True, True, True]
    for r in reports[1:]:
        assert r["images"] == 360 and r["prediction_disagreements"] == 0
        assert len(r["tensor_mismatches"]) == 2 and set(r["tensor_mismatches"].values()) == {0}
    ops = [n.op_type for n in out.graph.node]
    # the input Quant stays (it becomes the input encoding); the weight quantizers are gone; the
    # first layer's scale and bias are in its thresholds; the last layer's stay, for the host
    assert ops == ["Quant", "MatMul", "MultiThreshold", "Gemm", "Mul", "Add"], ops
    assert out.get_initializer(out.graph.node[2].input[1]).shape == (16, 3)  # per channel now
    for layer in (n for n in out.graph.node if n.op_type in ("MatMul", "Gemm")):
        w = out.get_initializer(layer.input[1])
        assert w is not None and np.array_equal(w, np.round(w)) and len(layer.input) == 2
    assert set(np.unique(out.get_initializer(out.graph.node[1].input[1]))) <= {-3, -2, -1, 0, 1, 2, 3}
    assert set(np.unique(out.get_initializer(out.graph.node[3].input[1]))) == {-1, 1}
    assert len(predictions) == 360


def test_thresholds_are_the_quantizers_own_steps(tmp_path):
    """Each threshold is the least float32 at which the Quant reaches that level: the float just
    below it does not."""
    from lowbit.interchange.lower import Segment
    from lowbit.interchange.quantizers import quantizer_levels

    model = read_onnx(_brevitas_like(tmp_path / "m.onnx"))
    quant = next(n for n in model.graph.node if n.op_type == "Quant"
                 and getattr(model.find_producer(n.input[0]), "op_type", None) == "Add")  # the activation
    levels = quantizer_levels(model, quant)
    t = passes.step_points(model, quant, levels)
    assert len(t) == levels.count - 1 == 3
    run = Segment(model, [quant], quant.input[0], quant.output[0], 1)
    at = levels.counts(run(t.astype(np.float32).reshape(-1, 1)))[:, 0]
    below = levels.counts(run(np.nextafter(t.astype(np.float32), np.float32(-np.inf)).reshape(-1, 1)))[:, 0]
    assert list(at) == [1, 2, 3] and list(below) == [0, 1, 2]
    # the steps of round-half-even at scale 0.37: -1.5 s, -0.5 s, 0.5 s
    assert np.allclose(t, np.array([-1.5, -0.5, 0.5]) * 0.37, rtol=1e-6)


def test_a_pass_that_moves_a_level_is_stopped_and_named(tmp_path, monkeypatch):
    path = _brevitas_like(tmp_path / "m.onnx")
    real = passes.step_points
    monkeypatch.setattr(passes, "step_points", lambda m, node, levels: real(m, node, levels) + 0.05)
    with pytest.raises(LowbitError, match=r"streamlining pass 'quantizers_to_thresholds' changed the model at "
                                          r"tensor '\w+' \(\d+ values over 360 images, not float32 ties\)"):
        import_onnx(path, dataset="digits")
    monkeypatch.undo()
    real_levels = passes._weight_levels

    def negate_a_column(model, node, producer):
        levels, scale = real_levels(model, node, producer)
        levels = levels.copy()
        levels[:, 0] = -levels[:, 0]
        return levels, scale

    monkeypatch.setattr(passes, "_weight_levels", negate_a_column)
    with pytest.raises(LowbitError, match="streamlining pass 'integer_weights' changed the model at tensor"):
        import_onnx(path, dataset="digits")


def test_the_import_reports_each_pass(tmp_path, capsys):
    from lowbit.cli import main

    path = _brevitas_like(tmp_path / "m.onnx")
    graph, check = import_onnx(path, dataset="digits")
    assert [p["pass"] for p in check["passes"]] == ["binary_to_bipolar", "integer_weights", "quantizers_to_thresholds",
                                                    "absorb_into_thresholds"]
    assert check["source_disagreements"] == check["reference_disagreements"] == 0
    assert set(check["unexplained"].values()) == {0}
    assert main(["import", str(path), "-o", str(tmp_path / "g.npz"), "--dataset", "digits"]) in (0, None)
    out = capsys.readouterr().out
    assert "pass integer_weights: checked on 360 images, 0 values differ in 2 quantized tensors" in out
    assert "pass binary_to_bipolar: no change" in out


def test_binary_to_bipolar_is_the_same_popcount():
    """XnorPopcountMatMul on {0, 1} tensors and its bipolar MatMul agree on every input, exactly."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    rng = np.random.default_rng(1)
    w = rng.integers(0, 2, (40, 12)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("XnorPopcountMatMul", ["x", "w"], ["y"], domain=QONNX, name="xnor")],
                              "xnor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [200, 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [200, 12])],
                              [onnx.numpy_helper.from_array(w, "w")])
    model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                                 helper.make_opsetid(QONNX, 1)]))
    x = rng.integers(0, 2, (200, 40)).astype(np.float32)
    before = execute_onnx(model, {"x": x})["y"]
    import copy

    from qonnx.transformation.infer_shapes import InferShapes

    after_model = passes.binary_to_bipolar(copy.deepcopy(model)).transform(InferShapes())
    assert [n.op_type for n in after_model.graph.node] == ["MatMul", "Add"]
    assert set(np.unique(after_model.get_initializer(after_model.graph.node[0].input[1]))) == {-1, 1}
    after = execute_onnx(after_model, {"x": x})["y"]
    assert np.array_equal(before, after) and before.max() > before.min()


def test_a_reversed_channel_is_absorbed_behind_a_sign(tmp_path):
    """A BatchNorm with negative scales reverses those channels: they count on -y behind a Mul by
    -1, the others on y, and every level stays as the model computes it."""
    rng = np.random.default_rng(2)
    w0 = rng.integers(-1, 2, (64, 16)).astype(np.float32)
    gamma = rng.normal(0, 1, 16).astype(np.float32)
    gamma = np.abs(gamma) + 0.1
    gamma[:5] = -gamma[:5]
    nodes = [_quant(["x", "s_in", "zero", "bits4"], "q", 0),
             helper.make_node("MatMul", ["q", "w0"], ["h"], name="fc0"),
             helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["hb"], name="bn0"),
             helper.make_node("Relu", ["hb"], ["hr"]),
             _quant(["hr", "s_act", "zero", "bits2"], "a", 0),
             helper.make_node("MatMul", ["a", "w1"], ["y"], name="fc1")]
    inits = {"s_in": 1 / 15, "zero": 0.0, "bits4": 4.0, "bits2": 2.0, "w0": w0, "gamma": gamma,
             "beta": rng.normal(0, 1, 16), "mean": rng.normal(0, 2, 16), "var": rng.uniform(1, 4, 16),
             "s_act": 0.5, "w1": rng.integers(-1, 2, (16, 10))}
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)]),
              tmp_path / "bn.onnx")
    out, reports, _ = passes.streamline(read_onnx(tmp_path / "bn.onnx"), _digits_floats())
    assert reports[-1]["changed"] and set(reports[-1]["tensor_mismatches"].values()) == {0}
    ops = [n.op_type for n in out.graph.node]
    assert ops == ["Quant", "MatMul", "Mul", "MultiThreshold", "MatMul"], ops
    assert list(out.get_initializer(out.graph.node[2].input[1])) == [-1.0] * 5 + [1.0] * 11
    graph, check = import_onnx(tmp_path / "bn.onnx", dataset="digits")
    assert set(check["unexplained"].values()) == {0} and check["reference_disagreements"] == 0
    assert graph.nodes[1].invert is not None and graph.nodes[1].invert[:5].all()
