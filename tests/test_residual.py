"""Residual blocks (skip connections) from the model to the Verilog: exact integer semantics, IR
equal to PyTorch on every stage, graphs that round-trip, and a network bit-exact in Verilator."""

import re

import numpy as np
import pytest
import torch

from lowbit.boards.estimate import estimate_layer, estimate_manifest
from lowbit.model.check import compare_with_torch
from lowbit.compiler.codegen import flat_layers
from lowbit.model.export import export_model
from lowbit.folding import fold_for_cycles
from lowbit.compiler.ir import BIPOLAR, MatMul, MultiThreshold, ValueType
from lowbit.compiler.ir import Residual
from lowbit.compiler.serialize import load_graph, save_graph
from lowbit.core.errors import LowbitError
from lowbit.flow import compile_checkpoint, export_checkpoint, simulate_build
from lowbit.model.arch import build_model
from lowbit.training import parse_arch, train_model
from modeltest import random_batchnorm


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A residual MLP per activation, trained briefly on digits, and its export check."""
    root = tmp_path_factory.mktemp("residual")
    out = {}
    for act in ("bipolar", "u2"):
        path = root / f"{act}.pt"
        train_model(path, arch="mlp:32,32,32+res", weight_format_name="ternary", act=act, epochs=4,
                    progress=False)
        out[act] = (path, *export_checkpoint(path))
    return out


@pytest.mark.parametrize("act", ["bipolar", "u2"])
def test_trained_residual_mlp_ir_equals_torch_on_every_stage(trained, act):
    _, graph, check = trained[act]
    kinds = [type(n).__name__ for n in graph.nodes]
    assert kinds == ["MatMul", "MultiThreshold", "Residual", "MultiThreshold", "Residual",
                     "MultiThreshold", "MatMul", "HostAffine", "ArgMax"]
    assert check["images"] == 360
    assert check["prediction_disagreements"] == 0 and check["logit_mismatches"] == 0
    assert check["activation_mismatches"] == {"stage0": 0, "stage1": 0, "stage2": 0}
    assert check["torch_accuracy"] == check["ir_accuracy"] >= 0.75
    res = graph.nodes[2]
    out_type = ValueType("int", 3) if act == "bipolar" else ValueType("uint", 3)
    assert res.out_type == out_type and graph.nodes[3].in_type == out_type


def test_the_block_shares_its_input_quantizer():
    m = build_model(parse_arch("mlp:8,8,8,4+res") | {"in_features": 5, "classes": 3, "act": "u2"})
    s = m.stages
    assert [st.residual_act is not None for st in s] == [False, True, True, False, False]
    assert s[1].act is s[0].act and s[2].act is s[1].residual_act


def test_exact_trace_adds_levels_then_quantizes():
    """The block output is residual_act(s * (h + x)) computed from the integer levels."""
    torch.manual_seed(1)
    m = build_model(parse_arch("mlp:6,6+res") | {"in_features": 4, "classes": 2, "act": "u2",
                                                   "weight_format": "ternary"})
    with torch.no_grad():
        m.stages[1].residual_act.clip.fill_(2.0)  # another scale than the input's
    m.eval()
    x = torch.randint(0, 2, (50, 4)).double() * 2 - 1
    trace = m.exact_trace(x)
    # Recompute stage 1 by hand: body levels, plus input levels, requantized.
    stage = m.stages[1]
    s = float(stage.act.scale().detach())
    iw = stage.layer.integer_weights()
    d = trace[0] @ iw.levels.double().T
    from lowbit.model.arch import stage_affine
    gain, bias = stage_affine(stage, s, iw)
    h = torch.clamp(torch.floor((d * torch.as_tensor(gain) + torch.as_tensor(bias)) / s + 0.5), 0, 3)
    s2 = float(stage.residual_act.scale().detach())
    want = torch.clamp(torch.floor((h + trace[0]) * s / s2 + 0.5), 0, 3)
    assert torch.equal(trace[1], want)


@pytest.mark.parametrize("act", ["bipolar", "u2"])
def test_cnn_with_padded_residual_convs_ir_equals_torch(act, tmp_path):
    torch.manual_seed(2)
    arch = parse_arch("cnn:4,4,4:8+pad=1+res") | {"in_shape": [1, 8, 8], "classes": 3, "act": act,
                                                  "weight_format": "ternary"}
    model = build_model(arch)
    random_batchnorm(model, 3)
    model.eval()
    graph = export_model(model)
    kinds = [type(n).__name__ for n in graph.nodes]
    assert kinds[:8] == ["SlidingWindow", "MatMul", "MultiThreshold", "MaxPool", "Residual",
                         "MultiThreshold", "Residual", "MultiThreshold"]
    body = graph.nodes[4].body
    assert [type(n).__name__ for n in body] == ["SlidingWindow", "MatMul", "MultiThreshold"]
    assert (body[0].pad, body[0].stride, body[0].pad_value) == (1, 1, -1 if act == "bipolar" else 0)
    x = np.where(np.random.default_rng(4).random((300, 64)) < 0.5, -1, 1)
    y = graph.predict(x)
    check = compare_with_torch(model, graph, x, y)
    assert check["prediction_disagreements"] == 0 and check["logit_mismatches"] == 0
    assert set(check["activation_mismatches"].values()) == {0}
    # The body's own output differs from the block's, so the skip path is not a no-op.
    outs = dict(zip([n.name for n in graph.nodes], graph.execute(x)))
    assert not np.array_equal(outs["conv1_res"], outs["conv0_pool"])
    save_graph(tmp_path / "g.npz", graph)
    loaded = load_graph(tmp_path / "g.npz")
    assert [type(n).__name__ for n in loaded.nodes[4].body] == ["SlidingWindow", "MatMul", "MultiThreshold"]
    assert all(np.array_equal(a, b) for a, b in zip(graph.execute(x), loaded.execute(x)))
    assert graph.positions() == loaded.positions() == {"conv0": 64, "conv1": 16, "conv2": 16,
                                                       "fc3": 1, "fc4": 1}


def test_folding_reaches_into_residual_bodies(trained, tmp_path):
    _, graph, _ = trained["u2"]
    folded = fold_for_cycles(graph, 32)
    assert [m.name for m in folded.matmuls()] == ["fc0", "fc1", "fc2", "fc3"]
    assert all(m.folding is not None and m.cycles() <= 32 for m in folded.matmuls())
    assert folded.cycles_per_inference() <= 32
    save_graph(tmp_path / "g.npz", folded)
    loaded = load_graph(tmp_path / "g.npz")
    assert [m.folding for m in loaded.matmuls()] == [m.folding for m in folded.matmuls()]


def test_residual_mlp_is_bit_exact_in_verilator_with_stalls(trained, tmp_path):
    path, _, check = trained["u2"]
    manifest, _ = compile_checkpoint(path, tmp_path / "b", target_cycles=32)
    entries = flat_layers(manifest["layers"])
    assert [e["op"] for e in manifest["layers"]] == ["mvau", "residual", "threshold", "residual",
                                                     "threshold", "mvau"]
    assert [e["name"] for e in entries if e["op"] == "mvau"] == ["fc0", "fc1", "fc2", "fc3"]
    # The estimate of a block is its body's plus the fork, skip FIFO and adder.
    est = {row["name"]: row for row in estimate_manifest(manifest, "arty-a7-35")["layers"]}
    body = [estimate_layer(e, "xilinx") for e in manifest["layers"][1]["body"]]
    assert est["fc1_res"]["luts"] > sum(b["luts"] for b in body) > 0
    assert est["fc1_res"]["ffs"] > sum(b["ffs"] for b in body) > 0
    r = simulate_build(tmp_path / "b", seed=3, progress=False)
    assert r["images"] == 360 and r["mismatches"] == 0, r
    assert r["hw_accuracy"] == r["ir_accuracy"] == check["torch_accuracy"]
    assert r["cycles_measured"] == r["cycles_predicted"] == manifest["cycles_per_inference"] == 32
    assert r["latency_measured"] == r["latency_predicted"]
    assert r["idle_fraction_in"] >= 0.2 and r["idle_fraction_out"] >= 0.2


# --- bad inputs ----------------------------------------------------------------------------

def _body(mh, mw, in_type=BIPOLAR):
    mm = MatMul("mm", np.ones((mh, mw), dtype=int), "bipolar", in_type)
    return (mm, MultiThreshold("th", np.zeros((mh, 1), dtype=int), mm.out_type, BIPOLAR))


def test_residual_around_a_width_change_is_refused():
    res = Residual("res", _body(4, 6), BIPOLAR)
    with pytest.raises(LowbitError, match=r"res: the body maps a value of shape \(6,\) to \(4,\); "
                                          r"a residual add needs both the same"):
        res.out_shape((6,))


@pytest.mark.parametrize("build, message", [
    (lambda: Residual("res", (), BIPOLAR), "res: a residual block needs at least one body op"),
    (lambda: Residual("res", _body(4, 4), ValueType("uint", 2)),
     "res: body op mm expects bipolar inputs but receives uint2"),
    (lambda: Residual("res", _body(4, 4), "bipolar"), "res: in_type must be a ValueType, not 'bipolar'"),
])
def test_residual_op_checks_its_attributes(build, message):
    with pytest.raises(LowbitError, match="^" + re.escape(message) + "$"):
        build()


@pytest.mark.parametrize("arch, message", [
    ({"kind": "mlp", "in_features": 4, "hidden": [4, 4], "classes": 2, "residual": 2},
     "architecture 'residual' must be true or false, not 2"),
    ({"kind": "mlp", "in_features": 4, "hidden": [4, 4], "classes": 2, "residual": True,
      "weight_format": "binary01"}, "residual blocks of binary normalized layers are not supported"),
])
def test_bad_residual_architectures(arch, message):
    with pytest.raises(LowbitError, match="^" + re.escape(message)):
        build_model(arch)


def test_parse_arch_options():
    assert parse_arch("mlp:64,64,64+res") == {"kind": "mlp", "hidden": [64, 64, 64], "residual": True}
    assert parse_arch("cnn:8,8:16+pad=1+stride=2+res") == {
        "kind": "cnn", "channels": [8, 8], "fc": [16], "padding": 1, "stride": 2, "residual": True}
    with pytest.raises(LowbitError, match="^bad mlp option 'pad=1'\n  fix: options: res$"):
        parse_arch("mlp:8+pad=1")
    with pytest.raises(LowbitError, match="^bad vit option 'res'\n  fix: options: integer$"):
        parse_arch("vit+res")


def test_export_refuses_a_block_whose_scales_differ():
    model = build_model(parse_arch("mlp:6,6+res") | {"in_features": 4, "classes": 2, "act": "u2",
                                                       "weight_format": "ternary"})
    from lowbit.model.layers import QuantAct
    model.stages[1].act = QuantAct("u2", clip=1.0)  # no longer the input's quantizer
    model.eval()
    with pytest.raises(LowbitError, match="fc1: a residual block adds levels of scales"):
        export_model(model)


# Yosys synth_xilinx (xc7, classic abc mapper; LUT sites with distributed RAM) counts of the
# engines alone, as built by hw/residual.py and hw/threshold.py: (entry, LUTs, FFs). Blocks have
# a 3-deep FIFO as their body and a 3-deep skip FIFO; thresholds (PE = C) are
# np.sort(np.random.default_rng(0).integers(lo, hi + 1, (C, L)), axis=1) over the input's range.
def _block(kind, bits, count, out_kind, out_bits):
    return {"op": "residual", "in_format": {"kind": kind, "bits": bits, "count": count},
            "out_format": {"kind": out_kind, "bits": out_bits, "count": count}, "skip_depth": 3,
            "body": [], "body_fifos": [3], "body_kind": kind}


def _threshold(in_bits, levels, channels):
    out = {"kind": "bipolar", "bits": 1} if levels == 1 else {"kind": "uint", "bits": 2}
    return {"op": "threshold", "channels": channels, "levels": levels, "pe": channels,
            "in_format": {"kind": "int", "bits": in_bits, "count": channels},
            "out_format": {**out, "count": channels}}


SYNTHESIZED = [
    (_block("bipolar", 1, 64, "int", 3), 238, 334),
    (_block("uint", 2, 64, "uint", 3), 326, 590),
    (_block("uint", 2, 16, "uint", 3), 102, 158),
    (_threshold(3, 1, 64), 56, 313),
    (_threshold(3, 3, 16), 31, 120),
    (_threshold(4, 3, 64), 128, 622),
]


@pytest.mark.parametrize("entry, luts, ffs", SYNTHESIZED, ids=[
    "block-bipolar64", "block-u2x64", "block-u2x16", "threshold-int3-L1-64", "threshold-int3-L3-16",
    "threshold-int4-L3-64"])
def test_residual_estimates_against_recorded_synthesis(entry, luts, ffs):
    est = estimate_layer(entry, "xilinx")
    assert abs(est["luts"] - luts) <= 0.3 * luts and abs(est["ffs"] - ffs) <= 0.3 * ffs, (est, luts, ffs)
    with pytest.raises(LowbitError, match=f"the estimator is not calibrated for '{entry['op']}' on ice40"):
        estimate_layer(entry, "ice40")
