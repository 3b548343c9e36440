"""Models out: `lowbit export --qonnx` writes lowbit models as QONNX that qonnx executes exactly as
the IR, and the round trip lowbit -> QONNX -> lowbit compiles to byte-identical Verilog."""

import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from lowbit.cli import main
from lowbit.compiler.build import load_build
from lowbit.flow import export_qonnx, import_onnx, train_checkpoint
from lowbit.model.checkpoint import load_checkpoint
from modeltest import random_batchnorm

# case -> (train options, compile target in cycles per inference)
CASES = {
    "mlp-bipolar-thermometer": ({"hidden": (32, 16), "weight_format": "bipolar"}, 64),
    "mlp-levels5-u2": ({"hidden": (32, 16), "weight_format": "levels5", "act": "u2"}, 64),
    "mlp-tiled-p4": ({"hidden": (32, 16), "weight_format": "tiled", "p": 4}, 64),
    "cnn-ternary-padded": ({"arch": "cnn:8:16+pad=1", "weight_format": "ternary"}, 200),
    "cnn-pow2-u2": ({"arch": "cnn:8:16", "weight_format": "pow2", "act": "u2"}, 200),
    "cnn-ternary-residual": ({"arch": "cnn:8,8+pad=1+res", "weight_format": "ternary"}, 256),
}


def _checkpoint(path, options, seed=0):
    """A checkpoint trained for one epoch on digits, then given random BatchNorms (scales of both
    signs), so that thresholds land all over each channel's range and some channels invert."""
    train_checkpoint(path, dataset="digits", epochs=1, seed=seed, progress=False, **options)
    model, _ = load_checkpoint(path)
    random_batchnorm(model, seed)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["state_dict"] = model.state_dict()
    torch.save(payload, path)
    return path


def _export(case, tmp_path_factory):
    options, target = CASES[case]
    folder = tmp_path_factory.mktemp(case)
    ckpt = _checkpoint(folder / "model.pt", options)
    check = export_qonnx(ckpt, folder / "model.onnx")
    return case, ckpt, folder / "model.onnx", check, target


_EXPORTS = {}


def _exported(case, tmp_path_factory):
    """Each case is trained and exported once for the module."""
    if case not in _EXPORTS:
        _EXPORTS[case] = _export(case, tmp_path_factory)
    return _EXPORTS[case]


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    return _exported(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def bipolar(tmp_path_factory):
    """The bipolar MLP with thermometer inputs: the case with every kind of XNOR layer."""
    return _exported("mlp-bipolar-thermometer", tmp_path_factory)


def test_qonnx_execution_equals_the_ir_on_every_test_image(exported):
    _, _, _, check, _ = exported
    assert check["images"] == 360  # the whole digits test split
    assert check["ir_rows_differ"] == 0
    assert check["tensor_mismatches"] and set(check["tensor_mismatches"].values()) == {0}
    # logits in float32 against the IR's float64 affine map: any disagreement must be a tie
    assert check["reference_disagreements"] == check["float_ties"]
    assert check["reference_accuracy"] == pytest.approx(check["ir_accuracy"], abs=check["float_ties"] / 360)


def test_round_trip_gives_byte_identical_verilog(exported, tmp_path, capsys):
    _, ckpt, onnx_path, _, target = exported
    cycles = ["--target-cycles", str(target)]
    assert main(["compile", str(ckpt), "-o", str(tmp_path / "original"), *cycles]) in (0, None)
    assert main(["compile", str(onnx_path), "-o", str(tmp_path / "back"), "--dataset", "digits", *cycles]) in (0, None)
    original, back = load_build(tmp_path / "original"), load_build(tmp_path / "back")
    assert back.verilog() == original.verilog()
    # The same ops, named alike, with the same integer attributes (the host's affine map is float32 in ONNX).
    a, b = original.graph(), back.graph()
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for x, y in zip(a.nodes, b.nodes):
        if not x.host:
            fx, ax = x.record()
            fy, ay = y.record()
            assert fx == fy and ax.keys() == ay.keys()
            assert all(np.array_equal(ax[k], ay[k]) for k in ax), x.name
    capsys.readouterr()


@pytest.mark.parametrize("case", ["cnn-ternary-padded", "cnn-ternary-residual", "mlp-levels5-u2"])
def test_round_trip_runs_bit_exact_in_verilator(case, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp(case + "-sim")
    options, target = CASES[case]
    ckpt = _checkpoint(folder / "model.pt", options, seed=1)
    assert main(["export", str(ckpt), "--qonnx", str(folder / "m.onnx")]) in (0, None)
    printed = capsys.readouterr().out
    assert "same hardware output on all 360 test images" in printed
    build = folder / "b"
    assert main(["compile", str(folder / "m.onnx"), "-o", str(build), "--dataset", "digits",
                 "--target-cycles", str(target)]) in (0, None)
    capsys.readouterr()
    assert main(["sim", str(build), "--limit", "60"]) in (0, None)
    out = capsys.readouterr().out
    r = json.loads(out[out.index("{"):])
    assert r["images"] == 60 and r["mismatches"] == 0
    assert r["cycles_measured"] == r["cycles_predicted"]
    assert r["hw_accuracy"] == r["ir_accuracy"]


def test_a_build_and_a_graph_file_export_alike(bipolar, tmp_path, capsys):
    _, ckpt, onnx_path, _, target = bipolar
    build = tmp_path / "b"
    assert main(["compile", str(ckpt), "-o", str(build), "--target-cycles", str(target)]) in (0, None)
    for source in (build, build / "graph.npz"):
        out = tmp_path / f"{source.name}.onnx"
        assert main(["export", str(source), "--qonnx", str(out)]) in (0, None)
        assert "same hardware output on all 360 test images" in capsys.readouterr().out
        # a build's graph has been through the passes: its model is the checkpoint's
        assert [n.op_type for n in onnx.load(str(out)).graph.node] == \
            [n.op_type for n in onnx.load(str(onnx_path)).graph.node]


@pytest.mark.parametrize("arch,fmt,op", [("mlp:16", "binary01", "NormalizeSign")])
def test_ops_without_a_qonnx_form_are_refused(arch, fmt, op, tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    train_checkpoint(ckpt, dataset="digits", epochs=1, progress=False, arch=arch, weight_format=fmt)
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--qonnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"a {op} op has no QONNX form" in err and "fix:" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_file_lowbit_did_not_write_is_never_replaced(bipolar, tmp_path, capsys):
    _, ckpt, onnx_path, _, _ = bipolar
    foreign = tmp_path / "theirs.onnx"
    foreign.write_bytes(onnx_path.read_bytes().replace(b"lowbit", b"others"))
    before = foreign.read_bytes()
    assert main(["export", str(ckpt), "--qonnx", str(foreign), "--limit", "10"]) == 2
    assert "was not written by lowbit" in capsys.readouterr().err
    assert foreign.read_bytes() == before
    # lowbit's own export is replaced, atomically: no temporary file is left
    ours = tmp_path / "ours.onnx"
    ours.write_bytes(onnx_path.read_bytes())
    assert main(["export", str(ckpt), "--qonnx", str(ours), "--limit", "10"]) in (0, None)
    assert ours.read_bytes() == onnx_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.onnx", "theirs.onnx"]


def test_finn_onnx_xnor_popcount_imports_to_the_same_verilog(bipolar, tmp_path, capsys):
    """qonnx's own streamlining step to FINN-ONNX: bipolar MatMuls become XnorPopcountMatMul on
    {0, 1} (BINARY) tensors, with a Mul and Add to correct the popcount."""
    _, ckpt, onnx_path, _, target = bipolar
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qonnx warns that tensor datatypes change
        finn = ModelWrapper(str(onnx_path)).transform(ConvertBipolarMatMulToXnorPopcount())
    assert [n.op_type for n in finn.graph.node].count("XnorPopcountMatMul") == 3
    assert finn.get_tensor_datatype(finn.graph.node[2].output[0]).name == "BINARY"  # the thermometer
    finn.save(str(tmp_path / "finn.onnx"))
    _, check = import_onnx(tmp_path / "finn.onnx", dataset="digits")
    assert set(check["tensor_mismatches"].values()) == {0} and check["reference_disagreements"] == 0
    cycles = ["--target-cycles", str(target)]
    assert main(["compile", str(ckpt), "-o", str(tmp_path / "original"), *cycles]) in (0, None)
    assert main(["compile", str(tmp_path / "finn.onnx"), "-o", str(tmp_path / "finn"), "--dataset", "digits",
                 *cycles]) in (0, None)
    assert load_build(tmp_path / "finn").verilog() == load_build(tmp_path / "original").verilog()
    capsys.readouterr()
