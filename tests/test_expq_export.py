"""Hardware export of post-training quantized models: exponential PTQ with any q, and linear PTQ.

The fixed point makes every quantized weight ``scale * level`` exactly; a PTQ'd model is a
checkpoint like any other; its IR equals the integer-exact PyTorch model on every activation,
logit and prediction; the level-table lane equals the IR in Amaranth and in Verilator with stalls.
"""

import json
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed

from lowbit.core.bounds import dot_bounds, signed_bits
from lowbit.boards.estimate import estimate_layer
from lowbit.model.check import compare_with_torch
from lowbit.compiler.codegen import build_manifest, lower
from lowbit.model.export import export_model
from lowbit.compiler.folding import most_folded
from lowbit.compiler.ir import MatMul
from lowbit.compiler.ops.matmul import table_product_luts
from lowbit.compiler.passes import choose_memories
from lowbit.compiler.serialize import load_graph, save_graph
from lowbit.core.errors import LowbitError
from lowbit.core.formats import format_family, level_table_format, weight_format
from lowbit.hw.lanes import lane_for
from lowbit.hw.unused import unelaborated
from lowbit.model.arch import build_model
from lowbit.model.checkpoint import load_checkpoint, save_checkpoint
from lowbit.model.layers import FixedLevelsConv2d, FixedLevelsLinear
from lowbit.model.ptq import fixed_point_magnitudes, ptq, quantize_exponential, quantize_linear
from lowbit.sim.amaranth_stream import run_amaranth_stream
from lowbit.sim.both import run_both
from test_export_formats import assert_exact, randomized
from test_hw_mvau import INPUTS, case, unit

# q = 3/4 at 4 bits is exact with F = 12: powers of three times powers of two.
TABLE_EXACT = "table:729,972,1296,1728,2304,3072,4096"
# q = 0.7 at 3 bits: not dyadic, so 12 significant bits in the smallest magnitude.
TABLE_ROUNDED = weight_format(f"table:{','.join(map(str, sorted(fixed_point_magnitudes(0.7, 3)[1])))}").name


def raises_lowbit(message, call):
    """``call()`` raises a LowbitError whose message (without the fix) is exactly ``message``."""
    with pytest.raises(LowbitError) as info:
        call()
    assert info.value.message == message


# --- the fixed point ----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_quantized_weight_is_scale_times_levels_bit_for_bit(bits):
    w = torch.randn(40, 30, dtype=torch.float64) * 0.3
    for q in (None, 0.5, 0.75, 0.7):
        if q is not None and fixed_point_magnitudes(q, bits) is None:
            continue
        wq, info = quantize_exponential(w, bits, q)
        assert torch.equal(wq, info.scale * info.levels.to(torch.float64))
        fmt = weight_format(info.format)
        assert set(info.levels.unique().tolist()) <= set(fmt.levels)
        assert fmt.storage_bits == bits  # the bit budget, not the width of c_0
        f, mags = fixed_point_magnitudes(info.q, bits)
        assert mags[0] == 2 ** f and info.scale == info.a / 2 ** f and info.fraction_bits == f
        for k, c in enumerate(mags):  # c_k is q**k * 2**F rounded to the nearest integer
            assert abs(Fraction(c) - Fraction(info.q) ** k * 2 ** f) <= Fraction(1, 2)


def test_fixed_point_choice():
    assert fixed_point_magnitudes(0.5, 3) == (2, (4, 2, 1))  # pow2, as before
    assert fixed_point_magnitudes(0.5, 6)[1][-1] == 1
    assert weight_format(TABLE_EXACT).levels[-7:] == tuple(3 ** (6 - k) * 4 ** k for k in range(7))
    assert fixed_point_magnitudes(0.75, 4) == (12, tuple(3 ** k * 4 ** (6 - k) for k in range(7)))
    f, mags = fixed_point_magnitudes(0.7, 4)  # not exact: the smallest keeps 12 significant bits
    assert mags[-1].bit_length() == 12
    assert fixed_point_magnitudes(0.3, 6) is None  # 0.3**30 needs more than a 32-bit fixed point
    assert fixed_point_magnitudes(0.62, 6)[0] == 32
    _, info = quantize_exponential(torch.randn(20, 20), 6)
    assert info.q >= 0.62


def test_formats_of_ptq_layers():
    w = torch.randn(16, 16)
    assert quantize_exponential(w, 2)[1].format == "ternary"
    assert quantize_exponential(w, 3, 0.5)[1].format == "pow2"
    assert quantize_exponential(w, 4, 0.75)[1].format == TABLE_EXACT
    assert quantize_linear(w, 2)[1].format == "ternary"
    assert quantize_linear(w, 4)[1].format == "table:1,2,3,4,5,6,7"
    assert format_family("expq").layer_format([4, 2, 1]).name == "pow2"


def test_level_table_format():
    fmt = level_table_format([972, 729, 1296])
    assert fmt.name == "table:729,972,1296" and fmt.lane == "level-table"
    assert fmt.levels == (-1296, -972, -729, 0, 729, 972, 1296)
    assert fmt.storage_bits == 3 and weight_format(fmt.name) == fmt
    raises_lowbit("malformed level-table format 'table:3,1'", lambda: weight_format("table:3,1"))
    raises_lowbit("a level table needs distinct integer magnitudes from 1 to 2**32, not [0, 2]",
                   lambda: level_table_format([0, 2]))
    with pytest.raises(LowbitError, match="only 'expq' layers"):
        format_family("tiled").layer_format([1])


def test_bad_ptq_parameters():
    w = torch.randn(8, 8)
    raises_lowbit("exponential PTQ ratio q must be in (0, 1), not 1.5",
                   lambda: quantize_exponential(w, 4, 1.5))
    raises_lowbit("exponential PTQ at 6 bits with q=0.3 spans a ratio of q**30, too small "
                   "for a fixed point of at most 32 bits", lambda: quantize_exponential(w, 6, 0.3))
    m = build_model({"kind": "mlp", "in_features": 8, "hidden": [4], "classes": 3, "weight_format": "fp32"})
    raises_lowbit("a ratio q is for exponential PTQ, not linear", lambda: ptq(m, 3, "linear", 0.5))


# --- a PTQ'd model is a real model --------------------------------------------------------------

def _fp32(arch, act="u2", seed=0):
    return randomized({**arch, "weight_format": "fp32", "act": act}, seed)


MLP = {"kind": "mlp", "in_features": 48, "hidden": [24, 12], "classes": 5}
CNN = {"kind": "cnn", "in_shape": [2, 12, 12], "channels": [4, 8], "fc": [16], "classes": 5}


def test_ptq_replaces_float_layers_and_leaves_the_model_alone():
    m = _fp32(CNN)
    q, layers = ptq(m, 4, q=0.7)
    assert all(isinstance(s.layer, (torch.nn.Conv2d, torch.nn.Linear)) for s in m.stages)
    assert [type(s.layer) for s in q.stages] == [FixedLevelsConv2d] * 2 + [FixedLevelsLinear] * 2
    assert m.arch["weight_format"] == "fp32" and not m.integer_exact
    assert q.arch["weight_format"] == "expq"
    assert q.arch["ptq"] == {"method": "exponential", "bits": 4, "q": 0.7}
    assert q.integer_exact
    for name, info in layers.items():
        layer = q.get_submodule(name)
        assert torch.equal(layer.levels, info.levels) and layer.format.name == info.format
        assert torch.equal(layer.weight, (info.scale * info.levels.double()).float())


def test_checkpoint_round_trip(tmp_path):
    for method, q in (("exponential", 0.7), ("linear", None)):
        m, _ = ptq(_fp32(CNN), 3, method, q)
        save_checkpoint(tmp_path / "q.pt", m, formats={"weights": m.arch["weight_format"]},
                        input_encoding={"encoding": "thermometer", "thresholds": [1],
                                        "image_shape": [12, 12, 2]})
        back, meta = load_checkpoint(tmp_path / "q.pt")
        assert back.arch == m.arch and meta["arch"]["ptq"]["method"] == method
        sd, sd_back = m.state_dict(), back.state_dict()
        assert sd.keys() == sd_back.keys() and all(torch.equal(sd[k], sd_back[k]) for k in sd)
        x = torch.from_numpy(np.random.default_rng(0).choice([-1.0, 1.0], size=(20, 2, 12, 12)))
        assert all(torch.equal(a, b) for a, b in zip(m.eval().trace(x), back.trace(x)))


def test_bad_ptq_arch():
    arch = {**MLP, "weight_format": "expq", "act": "u2", "ptq": {"method": "linear", "bits": 3}}
    raises_lowbit("a linear PTQ model has weight format 'linear-ptq', not 'expq'",
                   lambda: build_model(arch))
    raises_lowbit("architecture 'ptq' must be {'method': 'exponential' or 'linear', "
                   "'bits': 2..6}, not {'method': 'linear', 'bits': 9}",
                   lambda: build_model({**arch, "ptq": {"method": "linear", "bits": 9}}))


# --- IR == torch ----------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["bipolar", "u2"])
@pytest.mark.parametrize("bits, q", [(3, 0.5), (3, 0.7), (4, 0.75), (4, 0.62), (4, None)])
def test_random_mlp_ir_equals_torch(bits, q, act):
    m, _ = ptq(_fp32(MLP, act, seed=bits), bits, q=q)
    g = export_model(m)
    r = assert_exact(m, g)
    assert r["threshold_float_ties"] >= 0
    for mm in g.matmuls():
        assert weight_format(mm.weight_format).storage_bits == bits


@pytest.mark.parametrize("method, bits, q", [("exponential", 3, 0.7), ("exponential", 4, 0.5),
                                             ("linear", 4, None)])
def test_random_cnn_ir_equals_torch(method, bits, q):
    m, _ = ptq(_fp32(CNN, "u2", seed=bits), bits, method, q)
    assert_exact(m, export_model(m), n=100)


@pytest.fixture(scope="module")
def digits_fp32(tmp_path_factory):
    """fp32 digits models in the hardware setting (2-bit activations): an MLP and a small CNN."""
    from lowbit.training import train_model

    root = tmp_path_factory.mktemp("fp32")
    out = {}
    for name, arch, epochs in (("mlp", "mlp:32", 4), ("cnn", "cnn:8:16", 2)):
        train_model(root / f"{name}.pt", arch=arch, weight_format_name="fp32", act="u2", epochs=epochs,
                    progress=False)
        out[name] = root / f"{name}.pt"
    return out


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("bits, q", [(3, 0.7), (4, 0.62), (4, 0.5), (3, None)])
def test_digits_ir_equals_torch_on_the_whole_test_split(digits_fp32, net, bits, q):
    from lowbit.model.data import load_hardware_dataset

    model, meta = load_checkpoint(digits_fp32[net])
    quantized, _ = ptq(model, bits, q=q)
    graph = export_model(quantized)
    ds, enc = load_hardware_dataset("digits")
    r = compare_with_torch(quantized, graph, enc(ds.x_test), ds.y_test)
    assert r["images"] == 360
    assert r["prediction_disagreements"] == 0 and r["logit_mismatches"] == 0, r
    assert set(r["activation_mismatches"].values()) == {0}, r
    assert r["ir_accuracy"] == r["torch_accuracy"] > 0.5
    assert isinstance(r["threshold_float_ties"], int)


def test_table_matmul_survives_serialization_and_passes(tmp_path):
    m, _ = ptq(_fp32(MLP, "u2"), 4, q=0.7)
    g = choose_memories(most_folded(export_model(m)))
    save_graph(tmp_path / "g.npz", g)
    back = load_graph(tmp_path / "g.npz")
    for a, b in zip(g.matmuls(), back.matmuls()):
        assert a.weight_format == b.weight_format and a.weight_format.startswith("table:")
        assert np.array_equal(a.weights, b.weights) and a.weight_memory == b.weight_memory
    x = np.random.default_rng(1).choice([-1, 1], size=(50, 48))
    assert np.array_equal(g.predict(x), back.predict(x))


# --- the level-table lane -------------------------------------------------------------------------

def test_lane_encoding_and_properties():
    lane = lane_for(TABLE_EXACT, "uint", 2)
    assert lane.kind == "level-table" and lane.weight_bits == 4
    assert [lane.encode(w) for w in (0, 729, -729, 4096, -4096)] == [0, 2, 3, 14, 15]
    w = case(TABLE_EXACT, "uint3", None)[0]
    u = unelaborated(unit(w, TABLE_EXACT, INPUTS["uint3"], None))
    # Accumulators from the real level bounds of these weights, not from the table's width.
    lo, hi = dot_bounds(w, 0, 7)
    assert u.dot_range == (lo, hi) and u.accumulator_bits == signed_bits(lo, hi)
    assert hi == 7 * int(np.clip(w, 0, None).sum(axis=1).max())


@pytest.mark.parametrize("fmt_name, in_name, levels, pe, simd", [
    (TABLE_EXACT, "uint3", 3, 2, 4), (TABLE_ROUNDED, "int4", None, 2, 2), (TABLE_ROUNDED, "bipolar", 1, 4, 3),
])
def test_lane_matches_the_ir_with_stalls(fmt_name, in_name, levels, pe, simd):
    w, x, vt, t, ref = case(fmt_name, in_name, levels, n=24, seed=pe + simd)
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd)
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.4, seed=pe)
    assert res.outputs == u.out_format.pack(ref)


@pytest.mark.parametrize("memory", ["auto", "const"])
@pytest.mark.parametrize("in_name", ["uint3", "int4"])
def test_lane_worst_case_inputs_do_not_overflow(in_name, memory):
    fmt, vt = weight_format(TABLE_EXACT), INPUTS[in_name]
    lo_w, hi_w, mw = min(fmt.levels), max(fmt.levels), 12
    w = np.array([[hi_w] * mw, [lo_w] * mw, [hi_w, lo_w] * (mw // 2), [lo_w, hi_w] * (mw // 2)])
    x = np.array([[vt.max] * mw, [vt.min] * mw, [vt.max, vt.min] * (mw // 2), [vt.min, vt.max] * (mw // 2)])
    kw = dict(pe=2, simd=mw) if memory == "auto" else dict(pe=4, simd=mw, weight_memory="const")
    u = unit(w, TABLE_EXACT, vt, None, **kw)
    ref = MatMul("m", w, TABLE_EXACT, vt).reference(x)
    assert ref.max() == u.dot_range[1] and ref.min() == u.dot_range[0]
    assert run_amaranth_stream(u, u.in_format.pack(x)).outputs == u.out_format.pack(ref)


def _partial_cells(fmt_name, in_kind, in_bits, simd=6):
    lane = lane_for(fmt_name, in_kind, in_bits)
    m = Module()
    w, x, out = Signal(simd * lane.weight_bits), Signal(simd * in_bits), Signal(signed(32))
    m.d.comb += out.eq(lane.partial(m, w, x, simd, "lane"))
    return re.findall(r"^\s*cell \\?(\S+)", rtlil.convert(m, ports=[w, x, out]), flags=re.M)


def test_lane_uses_shift_adds_and_no_negation_per_input():
    for in_kind, in_bits in (("uint", 3), ("int", 4)):
        cells = _partial_cells(TABLE_ROUNDED, in_kind, in_bits)
        assert not {"$mul", "$neg"} & set(cells) and "$sub" in cells  # 4014 = 4096 - 64 - 16 - 2
    # Bipolar inputs select the constants themselves: no products at all.
    assert not {"$mul", "$neg", "$sub"} & set(_partial_cells(TABLE_ROUNDED, "bipolar", 1))


@pytest.mark.parametrize("fmt_name, in_name, levels, pe, simd, memory", [
    (TABLE_EXACT, "uint3", 3, 2, 4, "auto"), (TABLE_ROUNDED, "int4", None, 4, 6, "const"),
    (TABLE_EXACT, "bipolar", 1, 4, 3, "auto"),
])
def test_lane_same_vectors_in_verilator(fmt_name, in_name, levels, pe, simd, memory):
    mh, mw = (pe, simd) if memory == "const" else (8, 12)  # constant weights: fully unrolled
    w, x, vt, t, ref = case(fmt_name, in_name, levels, n=60, seed=pe * simd, mh=mh, mw=mw)
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd, weight_memory=memory)
    expected = u.out_format.pack(ref)
    both = run_both(u, u.in_format.pack(x), expected, seed=pe)
    assert both.mismatches(expected) == 0
    assert set(both.verilator.interval) == {u.cycles_per_item}
    assert both.verilator.latency == both.amaranth_latency == u.latency


def test_estimate_prices_the_table_products():
    m, _ = ptq(_fp32(MLP, "u2"), 4, q=0.7)
    g = most_folded(export_model(m))
    manifest = build_manifest(g, unelaborated(lower(g)))
    layer = next(layer for layer in manifest["layers"] if layer.get("lane") == "level-table"
                 and layer["in_format"]["kind"] == "uint")
    lanes = layer["pe"] * layer["simd"]
    mags = [c for c in weight_format(layer["weight_format"]).levels if c > 0]
    # u2 inputs and a 3-bit magnitude code: 5 inputs, one LUT6 per product bit (3 + 16 bits).
    assert table_product_luts(layer, "xilinx") == lanes * (3 + max(mags).bit_length())
    # On 4-input LUTs the lookup takes two per bit, still fewer than the shift-add chains.
    from lowbit.hw.lanes import signed_digits
    adders = sum((len(signed_digits(c)) - 1) * (3 + c.bit_length()) for c in mags)
    assert table_product_luts(layer, "ice40") == lanes * min(2 * (3 + max(mags).bit_length()), adders)
    est = estimate_layer(layer, "xilinx")
    assert est["luts"] > table_product_luts(layer, "xilinx") and est["dsps"] == 0
    first = manifest["layers"][0]
    assert first["in_format"]["kind"] == "bipolar" and table_product_luts(first, "xilinx") == 0


# --- end to end from the command line --------------------------------------------------------------

def _cli(*args, code=0):
    r = subprocess.run([sys.executable, "-m", "lowbit", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == code, r.stderr
    return r.stdout


def test_quantize_compile_and_simulate_digits_bit_exact(tmp_path, digits_fp32):
    """lowbit quantize (expq 3-bit, q = 0.7) -> eval -> compile -> sim: the IR equals PyTorch on every
    digits test image and the Verilog equals the IR on every output word, with stalls."""
    out = _cli("quantize", digits_fp32["mlp"], "--bits", 3, "--q", 0.7, "-o", tmp_path / "q.pt")
    assert "wrote" in out and "table:" in out
    assert "(expq 3-bit, hardware, 3 bits/weight" in _cli("eval", tmp_path / "q.pt")
    out = _cli("compile", tmp_path / "q.pt", "-o", tmp_path / "b", "--target-cycles", "256")
    assert "IR vs torch on 360 test images: 0 disagreements" in out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {layer["lane"] for layer in manifest["layers"]} == {"level-table"}
    report = json.loads(_cli("sim", tmp_path / "b", "--seed", 3))
    assert report["images"] == 360 and report["mismatches"] == 0, report
    assert report["hw_accuracy"] == report["ir_accuracy"]
    assert report["cycles_measured"] == report["cycles_predicted"] == manifest["cycles_per_inference"]
