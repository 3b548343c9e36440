"""Models in: Brevitas models trained here, exported with export_qonnx, imported, compiled and run
bit-exact in Verilator; and every refusal of the importer, with exit 2 and nothing written."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from benchmarks.imported import brevitas_model, export, model_input, train
from benchmarks.robustness import write_bad_onnx
from lowbit.cli import main
from lowbit.compiler.build import load_build
from lowbit.core.errors import LowbitError
from lowbit.flow import compile_graph, import_onnx
from lowbit.interchange.write import write_qonnx
from lowbit.model.data import input_encoding, load_digits_split

README = Path(__file__).resolve().parent.parent / "README.md"

# kind -> (IR ops, weight formats, compile folding)
KINDS = {
    "w1a1-mlp": (["MatMul", "MultiThreshold"] * 3 + ["MatMul", "HostAffine", "ArgMax"], ["bipolar"] * 4,
                 "4x8,2x8,2x8,2x8"),
    "w2a2-mlp": (["MatMul", "MultiThreshold"] * 3 + ["MatMul", "HostAffine", "ArgMax"], ["ternary"] * 4,
                 "4x8,2x8,2x8,2x8"),
    "w2a2-cnn": (["SlidingWindow", "MatMul", "MultiThreshold", "MaxPool"] * 2
                 + ["Flatten", "MatMul", "HostAffine", "ArgMax"], ["ternary"] * 3, None),
    "w2a2-res-cnn": (["SlidingWindow", "MatMul", "MultiThreshold", "Residual", "MultiThreshold", "MaxPool",
                      "Flatten", "MatMul", "HostAffine", "ArgMax"], ["ternary"] * 3, None),
    "w4a4-in8-mlp": (["MatMul", "MultiThreshold"] * 2 + ["MatMul", "HostAffine", "ArgMax"], ["levels17"] * 3,
                     "4x8,2x8,2x8"),
}


def brevitas_trained(kind, seed=0):
    """The benchmark's Brevitas model of ``kind``, small, trained briefly on digits (images / 16)."""
    ds = load_digits_split()
    m = brevitas_model(kind, 8, hidden=32, channels=(8, 16), seed=seed)
    return train(m, kind, ds, 8, epochs=6, seed=seed), ds


@pytest.fixture(scope="module", params=sorted(KINDS))
def exported(request, tmp_path_factory):
    kind = request.param
    m, ds = brevitas_trained(kind)
    path = export(m, kind, tmp_path_factory.mktemp(kind) / "model.onnx", ds, 8)
    with torch.no_grad():
        torch_pred = m(model_input(kind, ds.x_test, ds.max_value, 8)).argmax(1).numpy()
    return kind, path, torch_pred, ds


def test_import_is_exact_at_every_quantized_tensor(exported):
    kind, path, torch_pred, ds = exported
    graph, check = import_onnx(path, dataset="digits")
    ops, formats, _ = KINDS[kind]
    assert check["images"] == len(ds.y_test) == 360
    assert set(check["tensor_mismatches"].values()) == {0}
    # the input, each activation (a residual body's too), and each pooled activation
    assert len(check["tensor_mismatches"]) == (1 + ops.count("MultiThreshold") + ops.count("MaxPool")
                                               + ops.count("Residual"))
    # The last layer's power-of-two scales make the logits exact: no ties to explain.
    assert check["reference_disagreements"] == check["float_ties"] == 0
    # The reference is Brevitas' own model.
    assert check["reference_accuracy"] == (torch_pred == ds.y_test).mean() == check["ir_accuracy"]
    assert check["ir_accuracy"] > 0.7
    assert [type(n).__name__ for n in graph.nodes] == ops
    assert graph.meta["formats"]["weights"] == formats
    assert graph.meta["input"]["encoding"] == "quant" and graph.meta["input"]["bits"] == 8


def test_compile_and_sim_bit_exact(exported, tmp_path, capsys):
    kind, path, _, _ = exported
    out = tmp_path / "b"
    folding = KINDS[kind][2]
    shape = ["--folding", folding] if folding else ["--target-cycles", "256"]
    assert main(["compile", str(path), "-o", str(out), "--dataset", "digits", *shape]) in (0, None)
    printed = capsys.readouterr().out
    assert "IR vs ONNX reference on 360 test images" in printed
    assert main(["sim", str(out), "--limit", "40"]) in (0, None)
    report = capsys.readouterr().out
    r = json.loads(report[report.index("{"):])
    assert r["images"] == 40 and r["mismatches"] == 0
    assert r["cycles_measured"] == r["cycles_predicted"]
    if "cnn" in kind:  # window scans overlap images: the manifest predicts no latency for them
        assert r["latency_predicted"] is None and r["latency_measured"] > 0
    else:
        assert r["latency_measured"] == r["latency_predicted"]
    assert r["hw_accuracy"] == r["ir_accuracy"]


def test_import_writes_a_graph_that_loads(exported, tmp_path, capsys):
    from lowbit.compiler.serialize import load_graph

    kind, path, _, _ = exported
    assert main(["import", str(path), "-o", str(tmp_path / "g.npz"), "--dataset", "digits"]) in (0, None)
    g = load_graph(tmp_path / "g.npz")
    assert [type(n).__name__ for n in g.nodes] == KINDS[kind][0]
    assert "wrote" in capsys.readouterr().out


def test_an_import_writes_back_as_finn_style_qonnx_to_the_same_verilog(exported, tmp_path):
    """Brevitas' Quant nodes, scales and BatchNorms streamlined: integer weights and MultiThreshold
    nodes, the input divided by its scale into a Quant of scale 1; read back to the same hardware."""
    kind, path, _, ds = exported
    graph, _ = import_onnx(path, dataset="digits")
    written = write_qonnx(graph, int(ds.max_value))
    assert "Quant" in [n.op_type for n in written.graph.node][:3]  # the input quantizer only
    assert [n.op_type for n in written.graph.node].count("Quant") == 1
    onnx.save(written, tmp_path / "finn.onnx")
    back, check = import_onnx(tmp_path / "finn.onnx", dataset="digits")
    assert set(check["tensor_mismatches"].values()) == {0} and check["reference_disagreements"] == 0
    assert back.meta["input"] == graph.meta["input"]
    x = np.asarray([[0] * 64, [16] * 64, *ds.x_test.reshape(len(ds.x_test), -1)])
    enc = input_encoding(graph.meta["input"])
    assert np.array_equal(back.hardware_output(enc(x)), graph.hardware_output(enc(x)))
    folding = KINDS[kind][2]
    shape = {"folding": folding} if folding else {"target_cycles": 256}
    compile_graph(graph, tmp_path / "a", **shape)
    compile_graph(back, tmp_path / "b", **shape)
    assert load_build(tmp_path / "b").verilog() == load_build(tmp_path / "a").verilog()


# -- refusals: exit 2, a message naming the problem, nothing written ----------------------------

_REFUSALS = {
    "<junk-onnx>": "is not an ONNX model",
    "<softmax-onnx>": "is a Softmax, which lowbit cannot lower",
    "<float-onnx>": "its weights are float, not quantized",
    "<dynamic-onnx>": "has a dynamic shape",
    "<old-onnx>": "uses ONNX opset 7",
    "<unquantized-onnx>": "the input is not quantized",
}


@pytest.mark.parametrize("case", sorted(_REFUSALS))
def test_bad_models_exit_2_and_write_nothing(case, tmp_path, capsys):
    path, message = write_bad_onnx(tmp_path)[case], _REFUSALS[case]
    before = sorted(tmp_path.iterdir())
    rc = main(["compile", str(path), "-o", str(tmp_path / "b"), "--dataset", "digits"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert "fix:" in err
    assert sorted(tmp_path.iterdir()) == before
    with pytest.raises(LowbitError, match=message.split(",")[0]):
        import_onnx(path, dataset="digits")


def test_weights_that_fit_no_format_are_named(tmp_path):
    from lowbit.interchange.lower import weight_format_for

    assert weight_format_for("fc", np.array([[-1, 1]])) == "bipolar"
    assert weight_format_for("fc", np.array([[-2, 1, 0]])) == "levels5"
    assert weight_format_for("fc", np.array([[-12, 3, 0]])).startswith("table:")
    with pytest.raises(LowbitError, match=r"layer 'fc': its weights take the values \[-8589934592, 0, 1\]"):
        weight_format_for("fc", np.array([[-(1 << 33), 0, 1]]))


def test_a_model_without_a_dataset_is_refused(exported, tmp_path, capsys):
    _, path, _, _ = exported
    assert main(["compile", str(path), "-o", str(tmp_path / "b")]) == 2
    assert "name it with --dataset" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """Brevitas -> export_qonnx -> lowbit compile -> lowbit sim -> lowbit import -> lowbit export."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Models in and out"):]
    python = re.search(r"```python\n(.*?)```\n", section, re.S)
    code = python.group(1)
    shell = re.search(r"```\n(.*?)```", section[python.end():], re.S).group(1)
    commands = [line.split("#")[0].split() for line in shell.splitlines() if line.strip()]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), {})
    assert [c[:2] for c in commands] == [["lowbit", "compile"], ["lowbit", "sim"], ["lowbit", "import"],
                                         ["lowbit", "export"]]
    for command in commands:
        capsys.readouterr()
        assert main(command[1:]) in (0, None), command
        if command[1] == "sim":
            out = capsys.readouterr().out
            r = json.loads(out[out.index("{"):])
            assert r["images"] == 360 and r["mismatches"] == 0
            assert r["cycles_measured"] == r["cycles_predicted"] and r["latency_measured"] == r["latency_predicted"]
    assert (tmp_path / "graph.npz").is_file() and (tmp_path / "back.onnx").is_file()
    # Untrained, its BatchNorm puts the sign's step at exactly 0, where the model's float32 sums
    # round either way: those elements are ties, counted and explained, and nothing else differs.
    _, check = import_onnx(tmp_path / "model.onnx", dataset="digits")
    assert sum(check["tensor_ties"].values()) > 0 and check["tie_images"] > 0
    assert set(check["unexplained"].values()) == {0}


def test_a_wrong_threshold_is_not_taken_for_a_tie(exported):
    """Off-by-one thresholds are the import's typical error: every element they change is
    unexplained, since the reference's accumulators there are exact."""
    import dataclasses

    from lowbit.compiler.ir import Graph, MultiThreshold
    from lowbit.interchange.exact import compare_with_onnx
    from lowbit.interchange.read import read_onnx
    from lowbit.interchange.streamline import streamline
    from lowbit.model.data import model_floats

    _, path, _, ds = exported
    graph, check = import_onnx(path, dataset="digits")
    assert set(check["unexplained"].values()) == {0}
    k = next(i for i, n in enumerate(graph.nodes) if isinstance(n, MultiThreshold))
    nodes = list(graph.nodes)
    nodes[k] = dataclasses.replace(nodes[k], thresholds=nodes[k].thresholds + 1)
    broken = Graph(graph.input_type, graph.input_shape, nodes, graph.meta)
    x = ds.x_test.reshape(len(ds.x_test), -1)
    floats = model_floats(x, ds.max_value)
    streamlined = streamline(read_onnx(path), floats)[0]  # the model the IR was lowered from
    bad = compare_with_onnx(streamlined, broken, floats, input_encoding(graph.meta["input"])(x), ds.y_test)
    tensor = graph.meta["import"]["tensors"][1]["tensor"]  # the first activation's
    assert bad["unexplained"][tensor] == bad["tensor_mismatches"][tensor] > 0
    assert bad["tensor_ties"][tensor] == 0


def _pixel_graph(seed=0):
    """A small graph on the integer digits pixels (uint5): levels5 weights, 2-bit activations."""
    from lowbit.compiler.ir import ArgMax, Graph, HostAffine, MatMul, MultiThreshold, ValueType
    from lowbit.model.data import PixelInput

    rng = np.random.default_rng(seed)
    fc0 = MatMul("fc0", rng.integers(-2, 3, (16, 64)), "levels5", ValueType("uint", 5))
    acc = fc0.weights @ load_digits_split().x_train.T  # thresholds among the accumulators reached
    thresholds = np.sort(np.stack([rng.choice(row, 3) for row in acc]), axis=1)
    act = MultiThreshold("fc0_act", thresholds, fc0.out_type, ValueType("uint", 2))
    fc1 = MatMul("fc1", rng.integers(-1, 2, (10, 16)), "ternary", act.out_type)
    nodes = [fc0, act, fc1, HostAffine("fc1_affine", np.full(10, 0.5), np.zeros(10)), ArgMax("argmax", 10)]
    return Graph(ValueType("uint", 5), 64, nodes,
                 {"input": PixelInput(5, 16).to_dict(), "dataset": {"name": "digits", "seed": 0}})


def test_a_finn_onnx_input_annotated_uint_takes_the_pixels(tmp_path, capsys):
    """FINN-ONNX: no input quantizer, the graph input annotated with an integer datatype."""
    graph = _pixel_graph()
    model = write_qonnx(graph, 16)
    assert model.graph.node[0].op_type == "MatMul"  # the pixels, straight into the first layer
    onnx.save(model, tmp_path / "finn.onnx")
    back, check = import_onnx(tmp_path / "finn.onnx", dataset="digits")
    assert back.meta["input"] == {"encoding": "pixels", "bits": 5, "max_value": 16}
    assert set(check["tensor_mismatches"].values()) == {0} and check["reference_disagreements"] == 0
    compile_graph(graph, tmp_path / "a", target_cycles=64)
    compile_graph(back, tmp_path / "b", target_cycles=64)
    assert load_build(tmp_path / "b").verilog() == load_build(tmp_path / "a").verilog()
    assert main(["sim", str(tmp_path / "b"), "--limit", "50"]) in (0, None)
    out = capsys.readouterr().out
    r = json.loads(out[out.index("{"):])
    assert r["images"] == 50 and r["mismatches"] == 0 and r["cycles_measured"] == r["cycles_predicted"]


def test_an_unannotated_input_asks_for_an_input_encoding(tmp_path, capsys):
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(write_qonnx(_pixel_graph(), 16))
    model.set_tensor_datatype(model.graph.input[0].name, DataType["FLOAT32"])
    model.save(str(tmp_path / "float-input.onnx"))
    path = str(tmp_path / "float-input.onnx")
    assert main(["import", path, "-o", str(tmp_path / "g.npz"), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert "the input is not quantized" in err and "--input-encoding" in err
    assert not (tmp_path / "g.npz").exists()
    assert main(["import", path, "-o", str(tmp_path / "g.npz"), "--dataset", "digits",
                 "--input-encoding", "pixels"]) in (0, None)
    assert "IR vs ONNX reference on 360 test images" in capsys.readouterr().out
    from lowbit.compiler.serialize import load_graph

    assert load_graph(tmp_path / "g.npz").meta["input"] == {"encoding": "pixels", "bits": 5, "max_value": 16}
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT4"])  # too narrow for 0..16
    model.save(path)
    with pytest.raises(LowbitError, match="annotated UINT4, but the dataset's pixels run from 0 to 16"):
        import_onnx(path, dataset="digits")


def _activation_model(path, activation, inits, qonnx_opset=1):
    """Integer digits pixels (a Div by 1/8 into a 4-bit Quant) -> MatMul with levels5 weights ->
    ``activation`` (nodes from "h" to "a") -> MatMul with ternary weights -> the logits."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    w0 = rng.integers(-2, 3, (64, 16)).astype(np.float32)
    w1 = rng.integers(-1, 2, (16, 10)).astype(np.float32)
    nodes = [helper.make_node("Div", ["x", "s"], ["xs"]),
             helper.make_node("Quant", ["xs", "one", "z", "b"], ["q"], domain="qonnx.custom_op.general",
                              signed=0, narrow=0, rounding_mode="ROUND"),
             helper.make_node("MatMul", ["q", "w0"], ["h"]), *activation,
             helper.make_node("MatMul", ["a", "w1"], ["y"])]
    inits = {"s": 1 / 8, "one": 1.0, "z": 0.0, "b": 4.0, "w0": w0, "w1": w1, **inits}
    graph = helper.make_graph(nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                      helper.make_opsetid("qonnx.custom_op.general", qonnx_opset)]),
              path)
    return path


def test_sign_activations_import_as_three_levels(tmp_path):
    """An ONNX Sign after a layer: -1, 0 and 1, so a two-bit activation; its zeros are real."""
    from onnx import helper

    _activation_model(tmp_path / "sign.onnx", [helper.make_node("Sign", ["h"], ["a"])], {})
    ir, check = import_onnx(tmp_path / "sign.onnx", dataset="digits")
    assert set(check["tensor_mismatches"].values()) == {0} and check["reference_disagreements"] == 0
    act = ir.nodes[1]
    assert act.out_type.kind == "uint" and act.out_type.bits == 2
    zeros = (ir.execute(input_encoding(ir.meta["input"])(load_digits_split().x_test))[1] == 1).sum()
    assert zeros >= 20  # the accumulator is 0 often enough that Sign's 0 (count 1) is exercised


@pytest.mark.parametrize("version", [1, 2])
def test_trunc_activations_import_exactly(version, tmp_path):
    """qonnx's Trunc after a layer: the accumulator (10 bits here) shifted right by 5 bits to 5,
    floored; the second Trunc clamps to a signed 5-bit range and scales by 32."""
    from onnx import helper

    if version == 1:
        trunc = helper.make_node("Trunc", ["h", "ts", "tz", "tin", "tout"], ["a"], domain="qonnx.custom_op.general",
                                 rounding_mode="FLOOR")
        inits = {"ts": 1.0, "tz": 0.0, "tin": 10.0, "tout": 5.0}
    else:
        trunc = helper.make_node("Trunc", ["h", "ts", "tz", "tin", "tos", "tout"], ["a"],
                                 domain="qonnx.custom_op.general", rounding_mode="FLOOR", signed=1, narrow=0)
        inits = {"ts": 1.0, "tz": 0.0, "tin": 10.0, "tos": 32.0, "tout": 5.0}
    path = _activation_model(tmp_path / "trunc.onnx", [trunc], inits, qonnx_opset=version)
    ir, check = import_onnx(path, dataset="digits")
    assert set(check["tensor_mismatches"].values()) == {0} and check["reference_disagreements"] == 0
    assert len(check["tensor_mismatches"]) == 2  # the input and the truncated accumulator
    act = ir.nodes[1]
    x = input_encoding(ir.meta["input"])(load_digits_split().x_test)
    assert len(np.unique(ir.execute(x)[1])) >= 3  # the truncation really takes several levels
    compile_graph(ir, tmp_path / "b", target_cycles=64)
    assert act.out_type.kind == "uint"
