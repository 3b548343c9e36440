"""Models in: Brevitas models trained here, exported with export_qonnx, imported, compiled and run
bit-exact in Verilator; and every refusal of the importer, with exit 2 and nothing written."""

import json
import warnings

import brevitas.nn as brevitas_nn
import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.robustness import write_bad_onnx
from lowbit.cli import main
from lowbit.core.errors import LowbitError
from lowbit.flow import import_onnx
from lowbit.model.data import load_digits_split


def _quantizers(kind):
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst

    if kind == "w1a1":
        return (lambda i, o: brevitas_nn.QuantLinear(i, o, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
                lambda: brevitas_nn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True))
    return (lambda i, o: brevitas_nn.QuantLinear(i, o, bias=False, weight_bit_width=2),
            lambda: brevitas_nn.QuantReLU(bit_width=2, return_quant_tensor=True))


def brevitas_mlp(kind, hidden=32, epochs=6, seed=0):
    """A TFC-like Brevitas MLP (8-bit unsigned input), trained briefly on digits (images / 16)."""
    from brevitas.quant import Uint8ActPerTensorFloat

    torch.manual_seed(seed)
    linear, act = _quantizers(kind)
    m = nn.Sequential(brevitas_nn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True),
                      linear(64, hidden), nn.BatchNorm1d(hidden), act(), linear(hidden, 10))
    ds = load_digits_split()
    x, y = torch.tensor(ds.x_train / 16, dtype=torch.float32), torch.tensor(ds.y_train)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return m.eval(), ds


def export(m, path, x):
    from brevitas.export import export_qonnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: pinned because it is the one whose output matched Brevitas here.
        export_qonnx(m, input_t=torch.tensor(x[:1] / 16, dtype=torch.float32), export_path=str(path), dynamo=False)
    return path


@pytest.fixture(scope="module", params=["w1a1", "w2a2"])
def exported(request, tmp_path_factory):
    m, ds = brevitas_mlp(request.param)
    path = export(m, tmp_path_factory.mktemp(request.param) / "model.onnx", ds.x_test)
    with torch.no_grad():
        torch_pred = m(torch.tensor(ds.x_test / 16, dtype=torch.float32)).argmax(1).numpy()
    return request.param, path, torch_pred, ds


def test_import_is_exact_at_every_quantized_tensor(exported):
    kind, path, torch_pred, ds = exported
    graph, check = import_onnx(path, dataset="digits")
    assert check["images"] == len(ds.y_test) == 360
    assert set(check["tensor_mismatches"].values()) == {0}
    assert len(check["tensor_mismatches"]) == 2  # the input and the hidden activation
    # Every disagreement is a float32 tie of the reference; the reference is Brevitas' own.
    assert check["reference_disagreements"] == check["float_ties"] <= 12
    assert abs(check["reference_accuracy"] - (torch_pred == ds.y_test).mean()) <= 12 / 360
    assert check["ir_accuracy"] > 0.8
    want = {"w1a1": "bipolar", "w2a2": "ternary"}[kind]
    assert graph.meta["formats"]["weights"] == [want] * 2  # both layers
    assert graph.meta["input"]["encoding"] == "quant" and graph.meta["input"]["bits"] == 8


def test_compile_and_sim_bit_exact(exported, tmp_path, capsys):
    kind, path, _, _ = exported
    out = tmp_path / "b"
    assert main(["compile", str(path), "-o", str(out), "--dataset", "digits", "--folding", "4x8,2x8"]) in (0, None)
    printed = capsys.readouterr().out
    assert "IR vs ONNX reference on 360 test images" in printed
    assert main(["sim", str(out), "--limit", "40"]) in (0, None)
    report = capsys.readouterr().out
    r = json.loads(report[report.index("{"):])
    assert r["images"] == 40 and r["mismatches"] == 0
    assert r["cycles_measured"] == r["cycles_predicted"] and r["latency_measured"] == r["latency_predicted"]
    assert r["hw_accuracy"] == r["ir_accuracy"]


def test_import_writes_a_graph_that_loads(exported, tmp_path, capsys):
    from lowbit.compiler.serialize import load_graph

    _, path, _, _ = exported
    assert main(["import", str(path), "-o", str(tmp_path / "g.npz"), "--dataset", "digits"]) in (0, None)
    g = load_graph(tmp_path / "g.npz")
    assert [type(n).__name__ for n in g.nodes] == ["MatMul", "MultiThreshold", "MatMul", "HostAffine", "ArgMax"]
    assert "wrote" in capsys.readouterr().out


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
