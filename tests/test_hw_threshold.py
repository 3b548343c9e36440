import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from lowbit.compiler.ir import BIPOLAR, MultiThreshold, ValueType
from lowbit.hw.payload import VectorFormat
from lowbit.hw.threshold import MultiThresholdUnit, threshold_count
from lowbit.sim.both import run_both
from hwtest import raises_exactly, unelaborated

rng = np.random.default_rng(11)
C = 12
INT6 = VectorFormat("int", 6, C)
BIP = VectorFormat("bipolar", 1, C)
# Thresholds below, at and beyond both ends of int6 [-32, 31], so clipping is exercised.
T1 = np.array([[-40], [-33], [-32], [-31], [-1], [0], [1], [17], [30], [31], [32], [50]])
T3 = np.sort(np.concatenate([T1, rng.integers(-36, 36, size=(C, 2))], axis=1), axis=1)
T3[4] = [-3, -3, -3]  # equal thresholds jump two levels at once




def inputs_for(fmt, thresholds, n_random):
    """Random vectors plus the cases that break comparators: both ends of the range, and every
    threshold and threshold - 1 (clipped to the range) in its own channel."""
    lo, hi = (-(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1) if fmt.kind == "int" else (0, (1 << fmt.bits) - 1)
    rows = [np.full(fmt.count, lo), np.full(fmt.count, hi)]
    for l in range(thresholds.shape[1]):
        for delta in (0, -1):
            rows.append(np.clip(thresholds[:, l] + delta, lo, hi))
    rows = np.array(rows)
    return np.concatenate([rows, rng.integers(lo, hi + 1, size=(n_random, fmt.count))])


def reference(thresholds, in_fmt, out_fmt, x, invert=None):
    out_type = BIPOLAR if out_fmt.kind == "bipolar" else ValueType(out_fmt.kind, out_fmt.bits)
    return MultiThreshold("t", thresholds, ValueType(in_fmt.kind, in_fmt.bits), out_type,
                          invert).reference(x)


def test_threshold_count_is_the_number_reached():
    # Unsorted, repeated and out-of-range thresholds held in signals, as read from a memory.
    sets = [[5, -3, 5, 0, -16, 15, 16], [0, 0, 0, 0, 0, 0, 0], [-20, -17, 17, 20, 3, 2, 1]]
    value = Signal(signed(5))
    ts = [Signal(signed(6), name=f"t{l}") for l in range(7)]
    count = threshold_count(value, ts)
    assert count.shape() == unsigned(3)
    m = Module()
    out = Signal(3)
    m.d.comb += out.eq(count)
    seen = []

    async def tb(ctx):
        for thresholds in sets:
            for t, v in zip(ts, thresholds):
                ctx.set(t, v)
            for x in range(-16, 16):
                ctx.set(value, x)
                seen.append((ctx.get(out), sum(x >= t for t in thresholds)))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert len(seen) == 3 * 32
    assert all(got == want for got, want in seen)
    assert threshold_count(value, [3]).shape() == unsigned(1)
    raises_exactly(ValueError, "Thresholds must hold at least one value, not 0",
                   lambda: threshold_count(value, []))


def test_construction_and_properties():
    u = unelaborated(MultiThresholdUnit(T3, INT6, VectorFormat("uint", 2, C), pe=3))
    assert (u.channels, u.levels, u.pe, u.folds) == (12, 3, 3, 4)
    assert u.cycles_per_item == C // 3
    assert u.latency == C // 3 + 2
    assert u.in_format == INT6 and u.out_format == VectorFormat("uint", 2, C)
    assert u.threshold_shape == signed(7)  # int6 plus one: [-32, 32]
    assert u.threshold_memory_bits == C * 3 * 7
    assert np.array_equal(u.thresholds, T3) and not u.thresholds.flags.writeable
    words = u.threshold_words()
    assert len(words) == u.folds and all(len(w) == 3 * 3 for w in words)
    # word f, field p * L + l holds T[f*PE + p, l], clipped to [-32, 32]
    f, p, l = 3, 2, 1
    assert words[f][p * 3 + l] == np.clip(T3[f * 3 + p, l], -32, 32)
    assert [w[0] for w in unelaborated(MultiThresholdUnit(T1, INT6, BIP)).threshold_words()] == \
        [-32, -32, -32, -31, -1, 0, 1, 17, 30, 31, 32, 32]
    b = unelaborated(MultiThresholdUnit(T1, VectorFormat("uint", 4, C), VectorFormat("uint", 1, C), pe=12))
    assert (b.cycles_per_item, b.latency, b.threshold_shape) == (1, 3, unsigned(5))



@pytest.mark.parametrize("args, kwargs, exc, message", [
    ((T1.astype(float), INT6, BIP), {}, ValueError,
     "Thresholds must be a non-empty 2-D integer array, not float64 (12, 1)"),
    ((T1[:, 0], INT6, BIP), {}, ValueError, "Thresholds must be a non-empty 2-D integer array, not int64 (12,)"),
    ((np.zeros((0, 1), int), INT6, BIP), {}, ValueError,
     "Thresholds must be a non-empty 2-D integer array, not int64 (0, 1)"),
    ((T1, "int6", BIP), {}, TypeError, "Input format must be a VectorFormat, not 'int6'"),
    ((T1, VectorFormat("bipolar", 1, C), BIP), {}, ValueError,
     "Input format must have int or uint elements, not bipolar"),
    ((T1, VectorFormat("int", 6, 8), BIP), {}, ValueError,
     "Input format must have 12 elements, one per channel, not 8"),
    ((T1, INT6, None), {}, TypeError, "Output format must be a VectorFormat, not None"),
    ((T1, INT6, VectorFormat("int", 1, C)), {}, ValueError, "A signed output needs at least 2 bits"),
    ((T1, INT6, VectorFormat("int", 2, C)), {}, ValueError, "An int2 output needs 3 thresholds per channel, not 1"),
    ((T1, INT6, VectorFormat("bipolar", 1, 6)), {}, ValueError,
     "Output format must have 12 elements, one per channel, not 6"),
    ((T3, INT6, BIP), {}, ValueError, "A bipolar output needs 1 threshold per channel, not 3"),
    ((T1, INT6, VectorFormat("uint", 2, C)), {}, ValueError, "A uint2 output needs 3 thresholds per channel, not 1"),
    ((T1, INT6, BIP), dict(pe=0), ValueError, "PE must be a positive integer, not 0"),
    ((T1, INT6, BIP), dict(pe="2"), ValueError, "PE must be a positive integer, not '2'"),
    ((T1, INT6, BIP), dict(pe=True), ValueError, "PE must be a positive integer, not True"),
    ((T1, INT6, BIP), dict(pe=5), ValueError, "PE must divide the 12 channels, not 5"),
    ((T1, INT6, BIP), dict(invert=np.ones(5, bool)), ValueError,
     "Invert must be a bool array of shape (12,), not bool (5,)"),
])
def test_bad_parameters(args, kwargs, exc, message):
    raises_exactly(exc, message, lambda: MultiThresholdUnit(*args, **kwargs))


@pytest.mark.parametrize("thresholds, in_fmt, out_fmt, pe", [
    (T1, INT6, BIP, 1),
    (T1, INT6, BIP, 12),
    (T3, INT6, VectorFormat("uint", 2, C), 3),
    (np.clip(T3, 0, None), VectorFormat("uint", 5, C), VectorFormat("uint", 2, C), 4),
    (np.sort(rng.integers(-2, 10, size=(C, 7)), axis=1), VectorFormat("uint", 3, C), VectorFormat("uint", 3, C), 6),
    (np.sort(rng.integers(-20, 20, size=(C, 7)), axis=1), INT6, VectorFormat("int", 3, C), 4),
], ids=["bipolar-pe1", "bipolar-pe12", "uint2-pe3", "uint-in-pe4", "uint3-pe6", "int3-pe4"])
def test_both_simulators_match_reference_with_stalls(thresholds, in_fmt, out_fmt, pe):
    # A third of the channels count down (``invert``), the others up.
    invert = np.arange(C) % 3 == 2
    u = MultiThresholdUnit(thresholds, in_fmt, out_fmt, pe=pe, invert=invert)
    x = inputs_for(in_fmt, thresholds, 80)
    expected = out_fmt.pack(reference(thresholds, in_fmt, out_fmt, x, invert))
    r = run_both(u, in_fmt.pack(x), expected, stall=0.4, seed=pe, name="multi_threshold")
    assert r.mismatches(expected) == 0
    assert r.amaranth_outputs == expected
    vl = r.verilator
    assert vl.in_idle_fraction > 0 and vl.out_idle_fraction > 0  # both sides really stalled
    assert set(vl.interval) == {u.cycles_per_item}
    assert vl.latency == u.latency
