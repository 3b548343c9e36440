import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from lowbit.compiler.ir import BIPOLAR, ValueType
from lowbit.compiler.ir import MaxPool as MaxPoolOp
from lowbit.core.errors import LowbitError
from lowbit.hw.fifo import StreamFIFO
from lowbit.hw.payload import VectorFormat
from lowbit.hw.pool import MaxPool
from lowbit.sim.both import run_both
from hwtest import raises_exactly

rng = np.random.default_rng(23)
INT4 = ValueType("int", 4)
UINT3 = ValueType("uint", 3)



def feature_map(vtype, shape):
    if vtype.kind == "bipolar":
        return rng.choice([-1, 1], size=shape)
    return rng.integers(vtype.min, vtype.max + 1, size=shape)


def pool_loop(x, k, stride, bipolar):
    """Max pooling by loops; for bipolar values, +1 iff any value of the window is +1."""
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    y = np.empty((n, oh, ow, c), dtype=np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    vals = [x[b, oy * stride + ky, ox * stride + kx, ch]
                            for ky in range(k) for kx in range(k)]
                    y[b, oy, ox, ch] = (1 if any(v == 1 for v in vals) else -1) if bipolar else max(vals)
    return y


# --- MaxPool IR op ---------------------------------------------------------------------------

@pytest.mark.parametrize("vtype, k, stride", [(BIPOLAR, 2, None), (BIPOLAR, 3, 2), (INT4, 2, 1),
                                              (UINT3, 3, 3), (INT4, 3, 4)])
def test_op_reference(vtype, k, stride):
    x = feature_map(vtype, (3, 7, 8, 3))
    op = MaxPoolOp("mp", 3, k, stride, vtype)
    s = k if stride is None else stride
    assert op.stride == s and op.out_type == vtype and op.out_channels == 3
    assert op.cycles(7, 8) == 56
    assert np.array_equal(op.reference(x), pool_loop(x, k, s, vtype.kind == "bipolar"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=0), "mp: channels must be a positive integer, not 0"),
    (dict(kernel=-2), "mp: kernel must be a positive integer, not -2"),
    (dict(stride=0), "mp: stride must be a positive integer, not 0"),
])
def test_op_rejects_bad_attributes(kwargs, message):
    args = dict(name="mp", channels=2, kernel=2) | kwargs
    raises_exactly(LowbitError, message, lambda: MaxPoolOp(**args))
    raises_exactly(LowbitError, "mp: kernel 3 does not fit the padded 2x4 input",
                   lambda: MaxPoolOp("mp", 1, 3).reference(np.ones((1, 2, 4, 1), dtype=int)))


# --- MaxPool hardware ------------------------------------------------------------------------

def test_pool_construction_and_properties():
    p = MaxPool(6, 7, 4, 2, kind="uint", bits=3)
    assert (p.height, p.width, p.channels, p.kernel, p.stride, p.pad) == (6, 7, 4, 2, 2, 0)
    assert p.in_format == p.out_format == VectorFormat("uint", 3, 4)
    assert (p.out_height, p.out_width, p.out_beats_per_image) == (3, 3, 9)
    assert p.cycles_per_item == 42 and p.in_beats_per_image == 42
    assert p.latency == 7 + 1 + 1
    assert MaxPool(6, 6, 1, 3, stride=1).out_height == 4


@pytest.mark.parametrize("args, kwargs, exc, message", [
    ((6, 6, 2, 0), {}, ValueError, "Kernel must be a positive integer, not 0"),
    ((6, 6, 2, 2), dict(stride=-1), ValueError, "Stride must be a positive integer, not -1"),
    ((6, 6, 2, 2), dict(stride=1.0), TypeError, "Stride must be a positive integer, not 1.0"),
    ((6, 6, True, 2), {}, TypeError, "Channels must be a positive integer, not True"),
    ((3, 6, 2, 4), {}, ValueError, "Kernel must fit the padded 3x6 image, not 4"),
    ((6, 6, 2, 2), dict(kind="uint", bits=0), ValueError, "Element width must be a positive integer, not 0"),
])
def test_pool_rejects_bad_parameters(args, kwargs, exc, message):
    raises_exactly(exc, message, lambda: MaxPool(*args, **kwargs))


@pytest.mark.parametrize("vtype, k, stride, pipelined", [(BIPOLAR, 2, 2, False), (INT4, 3, 2, False),
                                                        (UINT3, 2, 1, False), (INT4, 3, 2, True)],
                         ids=["bipolar-k2-s2", "int4-k3-s2", "uint3-k2-s1", "int4-k3-s2-pipelined"])
def test_pool_both_simulators_with_stalls_and_timing(vtype, k, stride, pipelined):
    n, h, w, c = 3, 6, 6, 4
    p = MaxPool(h, w, c, k, stride=stride, kind=vtype.kind, bits=vtype.bits, pipelined=pipelined)
    x = feature_map(vtype, (n, h, w, c))
    y = MaxPoolOp("mp", c, k, stride, vtype).reference(x)
    inputs, expected = p.in_format.pack(x.reshape(-1, c)), p.out_format.pack(y.reshape(-1, c))
    res = run_both(p, inputs, expected, stall=0.4, seed=k + stride, timing_items=len(inputs),
                   name="max_pool")
    assert res.mismatches(expected) == 0
    assert res.amaranth_outputs == expected and res.verilator.outputs == expected
    v = res.verilator
    ins, outs = v.timing_input_cycles, v.timing_output_cycles
    per_in, per_out = p.in_beats_per_image, p.out_beats_per_image
    assert v.latency == p.latency
    # No padding: the input never waits, so a whole stream of images takes cycles_per_item each.
    assert ins[-1] - ins[0] + 1 == n * p.cycles_per_item
    for b in range(n):
        assert outs[b * per_out] - ins[b * per_in] == p.latency


# --- StreamFIFO ------------------------------------------------------------------------------

FMT = VectorFormat("int", 5, 3)


def test_fifo_construction_and_properties():
    f = StreamFIFO(FMT, 8)
    assert (f.format, f.in_format, f.out_format, f.depth) == (FMT, FMT, FMT, 8)
    assert (f.latency, f.cycles_per_item, f.memory_bits) == (2, 1, 7 * 15)
    small = [StreamFIFO(FMT, 1), StreamFIFO(FMT, 2)]
    for q in small:
        q._MustUse__silence = True  # never elaborated, on purpose
    assert [(q.latency, q.cycles_per_item) for q in small] == [(1, 2), (2, 2)]


@pytest.mark.parametrize("args, exc, message", [
    ((FMT, 0), ValueError, "Depth must be a positive integer, not 0"),
    ((FMT, "4"), TypeError, "Depth must be a positive integer, not '4'"),
    (("int5", 4), TypeError, "Format must be a VectorFormat, not 'int5'"),
])
def test_fifo_rejects_bad_parameters(args, exc, message):
    raises_exactly(exc, message, lambda: StreamFIFO(*args))


@pytest.mark.parametrize("depth, pipelined", [(1, False), (2, False), (5, False), (1, True), (2, True), (3, True),
                                               (5, True)])
def test_fifo_both_simulators_with_stalls_and_timing(depth, pipelined):
    f = StreamFIFO(FMT, depth, pipelined=pipelined)
    words = FMT.pack(rng.integers(-16, 16, size=(80, 3)))
    res = run_both(f, words, words, stall=0.5, seed=depth, timing_items=len(words), name="fifo")
    assert res.mismatches(words) == 0
    assert res.amaranth_outputs == words and res.verilator.outputs == words
    assert res.verilator.latency == f.latency
    assert set(res.verilator.interval) == {f.cycles_per_item}


@pytest.mark.parametrize("depth, pipelined", [(1, False), (3, False), (6, False), (2, True), (3, True), (27, True)])
def test_fifo_fills_to_depth_while_the_output_stalls(depth, pipelined):
    """Exactly ``depth`` payloads, two more with the skid buffer of a pipelined FIFO."""
    f = StreamFIFO(FMT, depth, pipelined=pipelined)
    held = depth + 2 * pipelined
    words = list(range(1, held + 4))
    accepted, drained = [], []

    async def testbench(ctx):
        ctx.set(f.o.ready, 0)
        for word in words:
            ctx.set(Value.cast(f.i.payload), word)
            ctx.set(f.i.valid, 1)
            # Offer each word for longer than the queue takes to settle.
            for _ in range(4):
                _, _, ready = await ctx.tick().sample(f.i.ready)
                if ready:
                    accepted.append(word)
                    break
            else:
                break
        ctx.set(f.i.valid, 0)
        await ctx.tick().repeat(4)
        assert len(accepted) == held
        ctx.set(f.o.ready, 1)
        for _ in range(3 * held + 4):
            _, _, valid, payload = await ctx.tick().sample(f.o.valid, Value.cast(f.o.payload))
            if valid:
                drained.append(payload)

    sim = Simulator(f)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert accepted == words[:held]
    assert drained == accepted


@pytest.mark.parametrize("depth", [2, 3, 6])
def test_the_flagged_queue_is_the_buffered_fifo_cycle_for_cycle(depth):
    """Random writes and reads into both queues at once: every cycle, the same flags and the same
    output word, so the pipelined FIFO keeps the buffered FIFO's timing exactly."""
    from amaranth.hdl import Module
    from amaranth.lib.fifo import SyncFIFOBuffered

    from lowbit.hw.fifo import FlaggedQueue

    m = Module()
    m.submodules.ours = ours = FlaggedQueue(8, depth)
    m.submodules.theirs = theirs = SyncFIFOBuffered(width=8, depth=depth)
    steps = np.random.default_rng(depth).random((600, 2))
    seen = []

    async def testbench(ctx):
        for k, (w, r) in enumerate(steps):
            for q in (ours, theirs):
                ctx.set(q.w_data, k % 256)
                ctx.set(q.w_en, int(w < 0.6))
                ctx.set(q.r_en, int(r < 0.5))
            a = [ctx.get(s) for s in (ours.w_rdy, ours.r_rdy)]
            b = [ctx.get(s) for s in (theirs.w_rdy, theirs.r_rdy)]
            assert a == b, f"cycle {k}: flags {a} != {b}"
            if a[1]:
                assert ctx.get(ours.r_data) == ctx.get(theirs.r_data), f"cycle {k}"
            seen.append(tuple(a))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert {(0, 1), (1, 0), (1, 1)} <= set(seen)  # the queue ran full, empty and in between
