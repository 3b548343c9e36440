import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed

from lowbit.compiler.ir import BIPOLAR, MatMul, MultiThreshold, ValueType
from lowbit.core.formats import WEIGHT_FORMATS, weight_format
from lowbit.hw.lanes import lane_for
from lowbit.hw.mvau import MatrixVectorUnit
from lowbit.hw.network import DataflowTop
from lowbit.hw.payload import VectorFormat
from lowbit.sim.amaranth_stream import run_amaranth_stream
from lowbit.sim.both import run_both
from hwtest import follows_within_a_cycle, raises_exactly, unelaborated

rng = np.random.default_rng(7)
MH, MW = 8, 12
W = rng.choice([-1, 1], size=(MH, MW))
# Thresholds span the whole range, including "always +1" (<= -MW) and "never" (> MW).
T = np.array([-MW - 3, -MW, -4, 0, 1, 5, MW, MW + 2])[:, None]
X = rng.choice([-1, 1], size=(60, MW))
BIP = VectorFormat("bipolar", 1, MW)
INPUTS = {"bipolar": ValueType("bipolar", 1), "uint3": ValueType("uint", 3), "int4": ValueType("int", 4)}



def case(fmt_name, in_name, levels, n=30, seed=0, mh=MH, mw=MW, out_kind="uint"):
    """Random weights of a format, inputs of a type, thresholds with ``levels`` levels (or None)."""
    r = np.random.default_rng(seed)
    fmt, vt = weight_format(fmt_name), INPUTS[in_name]
    w = r.choice(fmt.levels, size=(mh, mw))
    x = r.integers(vt.min, vt.max + 1, size=(n, mw))
    if vt.kind == "bipolar":
        x = np.where(x >= 0, 1, -1)
    mm = MatMul("m", w, fmt_name, vt)
    if levels is None:
        return w, x, vt, None, mm.reference(x)
    lo, hi = mm.bounds
    t = np.sort(r.integers(lo - 1, hi + 2, size=(mh, levels)), axis=1)
    out = BIPOLAR if levels == 1 else ValueType(out_kind, 2)
    return w, x, vt, t, MultiThreshold("t", t, mm.out_type, out).reference(mm.reference(x))


def unit(w, fmt_name, vt, t, **kw):
    return MatrixVectorUnit(w, fmt_name, VectorFormat(vt.kind, vt.bits, w.shape[1]), t, **kw)


def test_construction_and_properties():
    u = unelaborated(MatrixVectorUnit(W, "bipolar", BIP, T, pe=2, simd=4))
    assert (u.mh, u.mw, u.pe, u.simd, u.lane) == (8, 12, 2, 4, "xnor-popcount")
    assert (u.neuron_folds, u.synapse_folds) == (4, 3)
    assert u.cycles_per_item == 12
    assert u.latency == 14
    assert u.in_format == BIP
    assert u.out_format == VectorFormat("bipolar", 1, 8)
    raw = unelaborated(MatrixVectorUnit(W, "bipolar", BIP, None))
    assert raw.out_format == VectorFormat("int", 5, 8)  # [-12, 12]
    assert raw.accumulator_bits == 5  # popcounts 0..12, signed
    levels = unelaborated(MatrixVectorUnit(W, "bipolar", BIP, np.sort(rng.integers(-5, 5, size=(MH, 3)), axis=1)))
    assert levels.out_format == VectorFormat("uint", 2, 8)


def test_lane_per_format_and_input():
    units = {(f, i): unit(*case(f, i, None)[:1], f, INPUTS[i], None)
             for f in WEIGHT_FORMATS for i in ("bipolar", "int4")}
    for u in units.values():
        unelaborated(u)
    lanes = {k: u.lane for k, u in units.items()}
    assert lanes[("bipolar", "bipolar")] == "xnor-popcount"
    assert lanes[("bipolar", "int4")] == "add-sub"
    assert lanes[("ternary", "int4")] == "add-sub-skip"
    assert lanes[("binary01", "bipolar")] == "and-popcount"
    assert lanes[("levels9", "int4")] == "lut-multiply"
    assert lanes[("pow2", "int4")] == "shift"


def test_weight_memory_layout():
    u = unelaborated(MatrixVectorUnit(W, "bipolar", BIP, T, pe=2, simd=4))
    words = u.weight_words()
    assert len(words) == u.cycles_per_item
    # word nf*SF+sf, bit p*SIMD+s holds W[nf*PE+p, sf*SIMD+s]
    nf, sf, p, s = 3, 1, 1, 2
    assert (words[nf * 3 + sf] >> (p * 4 + s)) & 1 == (W[nf * 2 + p, sf * 4 + s] == 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pe=3), "PE must divide MH=8, not 3"),
    (dict(simd=5), "SIMD must divide MW=12, not 5"),
    (dict(pe=0), "PE must be a positive integer, not 0"),
    (dict(simd="4"), "SIMD must be a positive integer, not '4'"),
    (dict(weight_memory="rom"), "Weight memory must be 'auto', 'block', 'lut' or 'const', not 'rom'"),
    (dict(copies=0), "Copies must be a positive integer, not 0"),
    (dict(copies=2, pe=3), "PE must divide the tile's rows=8, not 3"),
    (dict(pe=2, weight_memory="const"),
     "Weight memory 'const' needs a fully unrolled unit (PE=8, SIMD=12), not PE=2, SIMD=1"),
    (dict(invert=np.ones(3, bool)), "Invert must be a bool array of shape (8,), not bool (3,)"),
    (dict(invert=np.ones(8, int)), "Invert must be a bool array of shape (8,), not int64 (8,)"),
])
def test_bad_parameters(kwargs, message):
    raises_exactly(ValueError, message, lambda: MatrixVectorUnit(W, "bipolar", BIP, T, **kwargs))


def test_behavioural_must_be_a_bool():
    raises_exactly(TypeError, "Behavioural must be a bool, not 1",
                   lambda: MatrixVectorUnit(W, "bipolar", BIP, T, behavioural=1))
    assert unelaborated(MatrixVectorUnit(W, "bipolar", BIP, T, behavioural=True)).behavioural


def test_bad_weights_inputs_and_thresholds():
    raises_exactly(ValueError, "Weight [0, 0] = 0 is not a level of format 'bipolar'",
                   lambda: MatrixVectorUnit(np.zeros((2, 2), int), "bipolar", VectorFormat("bipolar", 1, 2)))
    raises_exactly(ValueError, "Weights must be a non-empty 2-D integer array, not float64 (8, 12)",
                   lambda: MatrixVectorUnit(W.astype(float), "bipolar", BIP))
    raises_exactly(ValueError, "Input format must be a VectorFormat of 12 elements, not "
                   "VectorFormat(kind='bipolar', bits=1, count=5)",
                   lambda: MatrixVectorUnit(W, "bipolar", VectorFormat("bipolar", 1, 5)))
    raises_exactly(ValueError, "Thresholds must be an integer array of shape (8, L), not float64 (8, 1)",
                   lambda: MatrixVectorUnit(W, "bipolar", BIP, T.astype(float)))
    raises_exactly(ValueError, "Thresholds must have 1 or 2**k - 1 non-decreasing levels per row",
                   lambda: MatrixVectorUnit(W, "bipolar", BIP, np.zeros((MH, 2), int)))
    raises_exactly(ValueError, "Invert needs thresholds: it inverts their counts",
                   lambda: MatrixVectorUnit(W, "bipolar", BIP, None, invert=np.ones(MH, bool)))


# Every lane, with and without thresholds, over foldings from one step to many.
LANE_CASES = [
    ("bipolar", "bipolar", 1, 1, 1), ("bipolar", "bipolar", None, 2, 3), ("bipolar", "bipolar", 3, 8, 12),
    ("bipolar", "uint3", 1, 4, 4), ("bipolar", "int4", None, 2, 6),
    ("binary01", "bipolar", None, 2, 4), ("binary01", "uint3", 1, 1, 3),
    ("ternary", "bipolar", 1, 4, 2), ("ternary", "int4", None, 2, 4), ("ternary", "uint3", 3, 8, 12),
    ("levels5", "int4", None, 2, 4), ("levels9", "bipolar", 1, 4, 6), ("levels17", "int4", 3, 1, 12),
    ("pow2", "int4", None, 2, 4), ("pow2", "bipolar", 1, 8, 2),
]


@pytest.mark.parametrize("fmt_name, in_name, levels, pe, simd", LANE_CASES)
def test_every_lane_matches_the_ir_with_stalls(fmt_name, in_name, levels, pe, simd):
    w, x, vt, t, ref = case(fmt_name, in_name, levels, seed=pe * 100 + simd)
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd)
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.4, seed=pe * 10 + simd)
    assert res.outputs == u.out_format.pack(ref)


@pytest.mark.parametrize("fmt_name, in_name, pe, simd", [("ternary", "int4", 4, 3), ("levels5", "uint3", 2, 12)])
def test_signed_levels_out_of_the_thresholds(fmt_name, in_name, pe, simd):
    """Three thresholds into an int2 output: the count less 2, also on rows that count down."""
    w, x, vt, t, _ = case(fmt_name, in_name, 3, seed=pe + simd)
    invert = np.arange(MH) % 3 == 1
    mm = MatMul("m", w, fmt_name, vt)
    ref = MultiThreshold("t", t, mm.out_type, ValueType("int", 2), invert).reference(mm.reference(x))
    assert ref.min() < 0 <= ref.max()
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd, out_kind="int", invert=invert)
    assert u.out_format == VectorFormat("int", 2, MH)
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.4, seed=pe)
    assert res.outputs == u.out_format.pack(ref)
    raises_exactly(ValueError, "A signed output needs 2**k - 1 >= 3 levels per row",
                   lambda: unit(w, fmt_name, vt, t[:, :1], out_kind="int"))


@pytest.mark.parametrize("memory", ["auto", "const", "const-behavioural"])
@pytest.mark.parametrize("in_name", list(INPUTS))
@pytest.mark.parametrize("fmt_name", list(WEIGHT_FORMATS))
def test_worst_case_inputs_do_not_overflow(fmt_name, in_name, memory):
    """Rows of all-largest and all-smallest weights, fed the inputs that reach each row's extremes."""
    fmt, vt = WEIGHT_FORMATS[fmt_name], INPUTS[in_name]
    lo_w, hi_w = min(fmt.levels), max(fmt.levels)
    w = np.array([[hi_w] * MW, [lo_w] * MW, [hi_w, lo_w] * (MW // 2), [lo_w, hi_w] * (MW // 2)])
    lo_x, hi_x = vt.min, vt.max
    x = np.array([[hi_x] * MW, [lo_x] * MW, [hi_x, lo_x] * (MW // 2), [lo_x, hi_x] * (MW // 2)])
    if memory == "auto":
        u = unit(w, fmt_name, vt, None, pe=2, simd=MW)
    else:
        u = unit(w, fmt_name, vt, None, pe=len(w), simd=MW, weight_memory="const",
                 behavioural=memory == "const-behavioural")
    ref = MatMul("m", w, fmt_name, vt).reference(x)
    assert ref.max() == u.dot_range[1] and ref.min() == u.dot_range[0]  # the extremes are reached
    res = run_amaranth_stream(u, u.in_format.pack(x))
    assert res.outputs == u.out_format.pack(ref)


@pytest.mark.parametrize("thresholds", [T, None], ids=["threshold", "accumulate"])
@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 3), (8, 12)])
def test_timing_without_stalls(thresholds, pe, simd):
    u = MatrixVectorUnit(W, "bipolar", BIP, thresholds, pe=pe, simd=simd)
    res = run_amaranth_stream(u, u.in_format.pack(X[:10]))
    assert res.latency == u.latency
    assert set(res.intervals) == {u.cycles_per_item}


def _lane_cells(lane, build):
    """RTLIL cell types of one lane's partial sum, built by ``build(m, lane)`` into a bare module."""
    m = Module()
    out = Signal(signed(24))
    x = build(m, lane)
    m.d.comb += out.eq(x[1])
    text = rtlil.convert(m, ports=[*x[0], out])
    return re.findall(r"^\s*cell \\?(\S+)", text, flags=re.M)


def _const_cells(fmt_name, in_kind, in_bits, weights):
    def build(m, lane):
        x = Signal(len(weights) * in_bits)
        return [x], lane.partial_const(m, weights, x, "lane")
    return _lane_cells(lane_for(fmt_name, in_kind, in_bits), build)


@pytest.mark.parametrize("in_kind, in_bits", [("bipolar", 1), ("uint", 4), ("int", 3)])
def test_const_zero_weights_add_no_logic_and_signs_no_negation(in_kind, in_bits):
    nonzero = [1, -1, -1, 1, 1, -1, 1]
    padded = [0, 1, 0, -1, -1, 0, 0, 1, 1, 0, -1, 1, 0]
    assert [w for w in padded if w] == nonzero
    cells = _const_cells("ternary", in_kind, in_bits, nonzero)
    assert sorted(cells) == sorted(_const_cells("ternary", in_kind, in_bits, padded))
    # +-1 weights are plain or inverted bits: no negation, subtraction or multiplication.
    assert not {"$neg", "$sub", "$mul", "$mux"} & set(cells)
    assert _const_cells("ternary", in_kind, in_bits, [0] * 5) == []


@pytest.mark.parametrize("fmt_name, in_kind", [("bipolar", "uint"), ("ternary", "uint"), ("ternary", "int"),
                                               ("pow2", "int")])
def test_memory_lanes_negate_without_a_negation_per_input(fmt_name, in_kind):
    simd, in_bits = 8, 4

    def build(behavioural):
        def inner(m, lane):
            w = Signal(simd * lane.weight_bits)
            x = Signal(simd * in_bits)
            part = (lane.partial_behavioural if behavioural else lane.partial)(m, w, x, simd, "lane")
            return [w, x], part
        return inner

    lane = lane_for(fmt_name, in_kind, in_bits)
    assert _lane_cells(lane, build(True)).count("$neg") == simd  # the baseline negates each input
    assert not {"$neg", "$sub"} & set(_lane_cells(lane, build(False)))


def test_const_weights_when_fully_unrolled():
    w, x, vt, t, ref = case("ternary", "int4", 1, seed=5)
    u = unit(w, "ternary", vt, t, pe=MH, simd=MW, weight_memory="const")
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.3)
    assert res.outputs == u.out_format.pack(ref)


@pytest.mark.parametrize("fmt_name, in_name, levels, pe, simd, memory", [
    ("bipolar", "bipolar", 1, 2, 3, "auto"), ("ternary", "int4", None, 2, 4, "auto"),
    ("levels5", "uint3", 3, 4, 6, "auto"), ("pow2", "bipolar", None, 8, 2, "auto"),
    ("binary01", "int4", 1, 1, 12, "auto"), ("bipolar", "uint3", None, 2, 6, "auto"),
    ("pow2", "int4", None, 4, 4, "auto"),
    ("ternary", "bipolar", 1, 8, 12, "const"), ("bipolar", "int4", None, 8, 12, "const"),
])
def test_same_vectors_in_verilator(fmt_name, in_name, levels, pe, simd, memory):
    w, x, vt, t, ref = case(fmt_name, in_name, levels, n=60, seed=pe + simd)
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd, weight_memory=memory)
    expected = u.out_format.pack(ref)
    both = run_both(u, u.in_format.pack(x), expected, seed=pe)
    assert both.mismatches(expected) == 0
    assert set(both.verilator.interval) == {u.cycles_per_item}
    assert both.verilator.latency == both.amaranth_latency == u.latency


def test_network_top_chains_engines():
    w2 = rng.choice([-1, 1], size=(4, MH))
    engines = [MatrixVectorUnit(W, "bipolar", BIP, T, pe=2, simd=3),
               MatrixVectorUnit(w2, "bipolar", VectorFormat("bipolar", 1, MH), None, pe=1, simd=2)]
    top = DataflowTop(engines)
    assert top.cycles_per_item == max(e.cycles_per_item for e in engines) == 16
    assert top.latency == engines[0].latency + engines[1].latency
    first = MultiThreshold("t", T, MatMul("a", W).out_type).reference(MatMul("a", W).reference(X))
    want = MatMul("b", w2).reference(first)
    res = run_amaranth_stream(top, top.in_format.pack(X), stall=0.3)
    assert res.outputs == top.out_format.pack(want)
    clean = run_amaranth_stream(top, top.in_format.pack(X[:8]))
    assert clean.latency == top.latency
    assert set(clean.intervals) == {top.cycles_per_item}


def test_network_rejects_mismatched_formats():
    engines = [MatrixVectorUnit(W, "bipolar", BIP, T), MatrixVectorUnit(W, "bipolar", BIP, T)]
    for e in engines:
        unelaborated(e)
    raises_exactly(ValueError, "Engine 0 outputs VectorFormat(kind='bipolar', bits=1, count=8) but engine 1 "
                   "takes VectorFormat(kind='bipolar', bits=1, count=12)", lambda: DataflowTop(engines))
    raises_exactly(ValueError, "Engines must be a non-empty list, not []", lambda: DataflowTop([]))


def test_payload_pack_unpack_round_trip():
    for fmt in (VectorFormat("bipolar", 1, 70), VectorFormat("int", 7, 9), VectorFormat("uint", 3, 5)):
        lo, hi = {"bipolar": (-1, 1), "int": (-64, 63), "uint": (0, 7)}[fmt.kind]
        v = rng.integers(lo, hi + 1, size=(30, fmt.count))
        if fmt.kind == "bipolar":
            v = np.where(v >= 0, 1, -1)
        assert np.array_equal(fmt.unpack(fmt.pack(v)), v)


@pytest.mark.parametrize("levels, pe, simd", [(1, 1, 4), (1, 4, 12), (3, 2, 3), (None, 2, 6)])
def test_tiled_copies_compute_each_tile_row_once(levels, pe, simd):
    """A tiled layer: the tile repeated p times; every copy has its own thresholds (its alpha folded
    in), and a copy with a negative alpha counts down (``invert``) on the same tile row."""
    p = 4
    tile = rng.choice([-1, 1], size=(MH, MW))
    full = np.tile(tile, (p, 1))
    mm = MatMul("m", full)
    lo, hi = mm.bounds
    invert = None
    if levels is None:
        t, ref = None, mm.reference(X)
    else:
        t = np.sort(rng.integers(lo - 1, hi + 2, size=(p * MH, levels)), axis=1)
        invert = rng.random(p * MH) < 0.4
        out = BIPOLAR if levels == 1 else ValueType("uint", 2)
        ref = MultiThreshold("t", t, mm.out_type, out, invert).reference(mm.reference(X))
        plain = MultiThreshold("t", t, mm.out_type, out).reference(mm.reference(X))
        assert invert.any() and np.any(ref[:, invert] != plain[:, invert])
    u = MatrixVectorUnit(tile, "bipolar", BIP, t, pe=pe, simd=simd, copies=p, invert=invert)
    assert u.mh == p * MH and u.rows == MH
    assert u.cycles_per_item == (MH // pe) * (MW // simd)  # p times fewer than the full matrix
    assert u.weight_memory_bits == MH * MW
    res = run_amaranth_stream(u, u.in_format.pack(X), stall=0.4, seed=pe)
    assert res.outputs == u.out_format.pack(ref)


def test_tiled_copies_in_verilator():
    p = 2
    tile = rng.choice([-1, 1], size=(MH, MW))
    mm = MatMul("m", np.tile(tile, (p, 1)))
    t = rng.integers(-6, 7, size=(p * MH, 1))
    invert = np.arange(p * MH) % 3 == 1
    ref = MultiThreshold("t", t, mm.out_type, BIPOLAR, invert).reference(mm.reference(X))
    u = MatrixVectorUnit(tile, "bipolar", BIP, t, pe=2, simd=4, copies=p, invert=invert)
    expected = u.out_format.pack(ref)
    both = run_both(u, u.in_format.pack(X), expected, seed=11)
    assert both.mismatches(expected) == 0
    assert set(both.verilator.interval) == {u.cycles_per_item}


@pytest.mark.parametrize("style, brams", [("block", 2), ("lut", 0)])
def test_memory_style_reaches_synthesis(style, brams):
    from amaranth.back import verilog

    from lowbit.boards.synth import synthesize

    w = rng.choice([-1, 1], size=(64, 256))
    u = MatrixVectorUnit(w, "bipolar", VectorFormat("bipolar", 1, 256), None, pe=1, simd=64,
                         weight_memory=style)
    r = synthesize(verilog.convert(u, name="top", emit_src=False), "top", "xilinx")
    assert r.brams == brams, r.cells  # in RAMB18 units: 16 Kbit of weights fill one RAMB36



@pytest.mark.parametrize("levels_between", [1, 2])
@pytest.mark.parametrize("fmt_name, in_name, levels, pe, simd", LANE_CASES)
def test_pipelined_lanes_match_the_ir_with_stalls_at_the_same_rate(fmt_name, in_name, levels, pe, simd,
                                                                   levels_between):
    w, x, vt, t, ref = case(fmt_name, in_name, levels, seed=pe * 100 + simd)
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd, pipeline=levels_between)
    flat = unelaborated(unit(w, fmt_name, vt, t, pe=pe, simd=simd))
    assert u.pipeline_stages == u.input_slice + u.input_stages + u.tree_stages + 2
    assert u.input_stages == (0 if u.cycles_per_item == 1 else 3)  # address, then a ROM that may be block RAM
    assert u.cycles_per_item == flat.cycles_per_item
    assert u.latency == flat.latency + u.pipeline_stages
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.4, seed=pe * 10 + simd)
    assert res.outputs == u.out_format.pack(ref)
    clean = run_amaranth_stream(u, u.in_format.pack(x[:6]))
    assert clean.latency == u.latency
    assert set(clean.intervals) == {u.cycles_per_item}


@pytest.mark.parametrize("interval", [9, 12, 17, 40])
def test_a_unit_paced_by_a_slower_engine_keeps_that_pace_with_fewer_queue_slots(interval):
    """Given one vector per ``interval`` cycles (6 its own), a pipelined unit needs queue slots
    only for what is in flight at that pace. With them, fed as fast as it will take vectors, it
    has taken vector k by cycle k * interval, so fed at that pace it never waits; and every word
    is the IR's, with stalls."""
    w, x, vt, t, ref = case("bipolar", "bipolar", 1, seed=7, mw=24)
    own = unit(w, "bipolar", vt, t, pe=4, simd=8, pipeline=1)
    paced = unit(w, "bipolar", vt, t, pe=4, simd=8, pipeline=1)
    paced.input_interval = interval
    assert own.cycles_per_item == 6 and paced.latency == own.latency == 17
    assert paced.output_queue_depth < own.output_queue_depth
    assert run_amaranth_stream(paced, paced.in_format.pack(x), stall=0.4, seed=interval).outputs == \
        paced.out_format.pack(ref)
    clean = run_amaranth_stream(paced, paced.in_format.pack(x[:12]))
    assert all(cycle - clean.input_cycles[0] <= k * interval for k, cycle in enumerate(clean.input_cycles))
    # Below its own cycles per vector the interval is its own: the engine is never paced faster.
    paced.input_interval = 1
    assert paced.input_interval == own.cycles_per_item
    with pytest.raises(ValueError, match="Input interval must be a positive integer"):
        paced.input_interval = 0


@pytest.mark.parametrize("mw, simd, pe, steps", [(34, 2, 2, 3), (40, 1, 2, 3), (200, 1, 2, 4)])
def test_pipelined_many_slices_are_selected_in_steps(mw, simd, pe, steps):
    """Beyond sixteen slices per vector, the slice is picked by several multiplexers of at most
    four ways, one per register on the way to the lane: the group, then the slice within it.
    Seventeen slices pad two groups of sixteen; 200 slices take four steps of four ways; the
    neuron folds walk the vector again from its first slice."""
    w, x, vt, t, ref = case("bipolar", "bipolar", 1, seed=mw + simd, mh=4, mw=mw)
    u = unit(w, "bipolar", vt, t, pe=pe, simd=simd, pipeline=2)
    m = rtlil.convert(u)
    assert "x_group" in m and f"fold_digit{steps - 1}" in m and f"fold_digit{steps}" not in m
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.4, seed=3)
    assert res.outputs == u.out_format.pack(ref)
    clean = run_amaranth_stream(u, u.in_format.pack(x[:6]))
    assert clean.latency == u.latency and set(clean.intervals) == {u.cycles_per_item}
    # sixteen slices or fewer: one multiplexer, as before
    few = next(d for d in range(1, mw + 1) if mw % d == 0 and mw // d <= 16)
    assert "x_group" not in rtlil.convert(unit(w, "bipolar", vt, t, pe=pe, simd=few, pipeline=2))
    if steps == 3:
        w, x, vt, t, ref = case("ternary", "uint3", None, n=30, seed=mw, mh=4, mw=mw)
        u = unit(w, "ternary", vt, t, pe=pe, simd=simd, pipeline=1)
        expected = u.out_format.pack(ref)
        both = run_both(u, u.in_format.pack(x), expected, seed=mw)
        assert both.mismatches(expected) == 0
        assert both.verilator.latency == both.amaranth_latency == u.latency


def test_fewer_levels_between_registers_give_more_stages():
    """A 64-wide XNOR-popcount: its tree is seven counter levels deep (full adders on the XNORs,
    then 6:3 counters halving the columns), and a stage closes every k levels or before the final
    adder, whichever comes first: ceil(7 / k) stages."""
    stages = [unelaborated(MatrixVectorUnit(np.ones((2, 64), int), "bipolar", VectorFormat("bipolar", 1, 64),
                                            None, simd=64, pipeline=k)).tree_stages for k in (1, 2, 3, 5, 7, 8)]
    assert stages == [7, 4, 3, 2, 1, 1]


def test_pipelined_const_rows_wait_for_the_deepest():
    """Constant weights: a row of zeros has no tree at all; it is padded to the deepest row."""
    w, x, vt, t, ref = case("ternary", "int4", 1, seed=5)
    w[3] = 0
    t[3] = 0
    ref = MultiThreshold("t", t, MatMul("m", w, "ternary", vt).out_type, BIPOLAR).reference(
        MatMul("m", w, "ternary", vt).reference(x))
    u = unit(w, "ternary", vt, t, pe=MH, simd=MW, weight_memory="const", pipeline=2)
    assert u.tree_stages >= 2
    res = run_amaranth_stream(u, u.in_format.pack(x), stall=0.3)
    assert res.outputs == u.out_format.pack(ref)
    assert run_amaranth_stream(u, u.in_format.pack(x[:4])).latency == u.latency


def _ready_follows_o_ready(u):
    return follows_within_a_cycle(u, u.o.ready, [u.i.ready], drive=[(u.i.valid, 0.8), (u.i.payload, None)])


def test_pipelined_unit_has_no_combinational_ready_path():
    assert _ready_follows_o_ready(MatrixVectorUnit(W, "bipolar", BIP, T, pe=8, simd=12))
    assert not _ready_follows_o_ready(MatrixVectorUnit(W, "bipolar", BIP, T, pe=8, simd=12, pipeline=2))


def test_bad_pipeline():
    raises_exactly(ValueError, "Pipeline must be a non-negative integer (counter levels between registers, "
                   "0 for none), not -1", lambda: MatrixVectorUnit(W, "bipolar", BIP, T, pipeline=-1))
    raises_exactly(ValueError, "Pipeline needs the compressor lanes; the behavioural baseline has no stages",
                   lambda: MatrixVectorUnit(W, "bipolar", BIP, T, pipeline=2, behavioural=True))


@pytest.mark.parametrize("fmt_name, in_name, levels, pe, simd, memory, pipeline", [
    ("bipolar", "bipolar", 1, 2, 12, "auto", 1), ("ternary", "int4", None, 2, 4, "auto", 2),
    ("levels5", "uint3", 3, 4, 6, "auto", 2), ("ternary", "bipolar", 1, 8, 12, "const", 2),
])
def test_pipelined_same_vectors_in_verilator(fmt_name, in_name, levels, pe, simd, memory, pipeline):
    w, x, vt, t, ref = case(fmt_name, in_name, levels, n=60, seed=pe + simd)
    u = unit(w, fmt_name, vt, t, pe=pe, simd=simd, weight_memory=memory, pipeline=pipeline)
    expected = u.out_format.pack(ref)
    both = run_both(u, u.in_format.pack(x), expected, seed=pe)
    assert both.mismatches(expected) == 0
    assert set(both.verilator.interval) == {u.cycles_per_item}
    assert both.verilator.latency == both.amaranth_latency == u.latency
