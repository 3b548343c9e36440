"""The stream fork, the stream adder and the residual block, in both simulators, with stalls."""

import random

import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from lowbit.compiler.ir import BIPOLAR, MatMul, MultiThreshold, ValueType
from lowbit.compiler.ir import Residual
from lowbit.hw.fifo import StreamFIFO
from lowbit.hw.payload import VectorFormat
from lowbit.hw.residual import ResidualBlock, StreamAdd, StreamFork, add_reference, skip_depth, sum_format
from lowbit.hw.window import SlidingWindow as SlidingWindowUnit
from lowbit.sim.both import run_both

from hwtest import raises_exactly, unelaborated

BIP4 = VectorFormat("bipolar", 1, 4)
U2x4 = VectorFormat("uint", 2, 4)


def random_values(fmt, n, rng):
    if fmt.kind == "bipolar":
        return rng.choice([-1, 1], size=(n, fmt.count))
    lo, hi = (0, 2 ** fmt.bits - 1) if fmt.kind == "uint" else (-2 ** (fmt.bits - 1), 2 ** (fmt.bits - 1) - 1)
    return rng.integers(lo, hi + 1, size=(n, fmt.count))


# --- construction, properties and bad parameters ---------------------------------------------

def test_properties():
    fork = unelaborated(StreamFork(U2x4))
    assert (fork.in_format, fork.out_format, fork.cycles_per_item, fork.latency) == (U2x4, U2x4, 1, 1)
    add = unelaborated(StreamAdd(BIP4, BIP4))
    assert add.out_format == VectorFormat("int", 3, 4) and (add.cycles_per_item, add.latency) == (1, 1)
    assert sum_format(U2x4, U2x4) == VectorFormat("uint", 3, 4)
    assert sum_format(BIP4, U2x4) == VectorFormat("int", 4, 4)  # -1 .. 4
    assert sum_format(VectorFormat("int", 4, 4), BIP4) == VectorFormat("int", 5, 4)
    body = [StreamFIFO(U2x4, 4)]
    block = unelaborated(ResidualBlock(body))
    assert block.skip_depth == skip_depth(body) == 5  # the body's 4 beats plus the fork's one
    assert block.out_format == VectorFormat("uint", 3, 4)
    assert (block.cycles_per_item, block.latency) == (1, 1 + 2 + 1)


@pytest.mark.parametrize("build, exc, message", [
    (lambda: StreamFork(3), TypeError, "Payload format must be a VectorFormat, not 3"),
    (lambda: StreamAdd(U2x4, "x"), TypeError, "Input b format must be a VectorFormat, not 'x'"),
    (lambda: StreamAdd(None, U2x4), TypeError, "Input a format must be a VectorFormat, not None"),
    (lambda: StreamAdd(U2x4, VectorFormat("uint", 2, 3)), ValueError,
     "Input b must have the 4 elements of input a, not 3"),
    (lambda: ResidualBlock([]), ValueError, "Body must be a non-empty list of engines, not []"),
    (lambda: ResidualBlock([unelaborated(StreamFIFO(U2x4, 3))], depth=0), ValueError,
     "Skip depth must be a positive integer, not 0"),
])
def test_bad_parameters(build, exc, message):
    raises_exactly(exc, message, build)


def test_a_body_that_changes_the_width_is_refused():
    mm = MatMul("mm", np.ones((3, 4), dtype=int), "bipolar", BIPOLAR)
    engine = unelaborated(mm.unit(MultiThreshold("t", np.zeros((3, 1), dtype=int), mm.out_type)))
    raises_exactly(ValueError, "Body must output the 4 elements it takes, not 3",
                   lambda: ResidualBlock([engine]))


# --- Amaranth simulator: each port stalls on its own -----------------------------------------

def test_fork_copies_every_beat_to_both_outputs_with_independent_stalls():
    rng = np.random.default_rng(1)
    x = random_values(U2x4, 60, rng)
    words = U2x4.pack(x)
    fork = StreamFork(U2x4)
    got = {"a": [], "b": []}

    async def producer(ctx):
        r = random.Random(1)
        for word in words:
            if r.random() < 0.4:
                await ctx.tick().repeat(r.randint(1, 4))
            ctx.set(Value.cast(fork.i.payload), word)
            ctx.set(fork.i.valid, 1)
            await ctx.tick().until(fork.i.ready)
            ctx.set(fork.i.valid, 0)

    def consumer(port, seed):
        async def run(ctx):
            r = random.Random(seed)
            while len(got[port]) < len(words):
                if r.random() < 0.5:
                    ctx.set(getattr(fork, port).ready, 0)
                    await ctx.tick().repeat(r.randint(1, 5))
                ctx.set(getattr(fork, port).ready, 1)
                (payload,) = await ctx.tick().sample(Value.cast(getattr(fork, port).payload)).until(
                    getattr(fork, port).valid)
                got[port].append(int(payload))
        return run

    sim = Simulator(fork)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer("a", 2))
    sim.add_testbench(consumer("b", 3))
    sim.run_until(2000e-6)
    assert got["a"] == words and got["b"] == words


@pytest.mark.parametrize("fa, fb", [(BIP4, BIP4), (U2x4, U2x4), (VectorFormat("int", 3, 4), BIP4)],
                         ids=["bipolar", "uint2", "int3+bipolar"])
def test_adder_sums_element_by_element_with_independent_stalls(fa, fb):
    rng = np.random.default_rng(2)
    a, b = random_values(fa, 50, rng), random_values(fb, 50, rng)
    add = StreamAdd(fa, fb)
    expected = add.out_format.pack(add_reference(a, b))
    out = []

    def producer(port, fmt, values, seed):
        async def run(ctx):
            r = random.Random(seed)
            for word in fmt.pack(values):
                if r.random() < 0.4:
                    await ctx.tick().repeat(r.randint(1, 4))
                ctx.set(Value.cast(getattr(add, port).payload), word)
                ctx.set(getattr(add, port).valid, 1)
                await ctx.tick().until(getattr(add, port).ready)
                ctx.set(getattr(add, port).valid, 0)
        return run

    async def consumer(ctx):
        r = random.Random(5)
        while len(out) < len(expected):
            if r.random() < 0.4:
                ctx.set(add.o.ready, 0)
                await ctx.tick().repeat(r.randint(1, 4))
            ctx.set(add.o.ready, 1)
            (payload,) = await ctx.tick().sample(Value.cast(add.o.payload)).until(add.o.valid)
            out.append(int(payload))

    sim = Simulator(add)
    sim.add_clock(1e-6)
    sim.add_testbench(producer("a", fa, a, 3))
    sim.add_testbench(producer("b", fb, b, 4))
    sim.add_testbench(consumer)
    sim.run_until(2000e-6)
    assert out == expected


# --- both simulators: the block, with the same vectors ---------------------------------------

def test_block_with_an_identity_body_doubles_its_input_in_both_simulators():
    """A FIFO as the body: fork, skip FIFO and adder carry every beat; the output is 2x."""
    x = random_values(U2x4, 40, np.random.default_rng(3))
    block = ResidualBlock([StreamFIFO(U2x4, 3)])
    expected = block.out_format.pack(2 * x)
    r = run_both(block, U2x4.pack(x), expected, seed=4, name="residual_identity")
    assert r.mismatches(expected) == 0
    assert set(r.verilator.interval) == {block.cycles_per_item} == {1}
    assert r.verilator.latency == block.latency


@pytest.mark.parametrize("in_type, out_type", [(BIPOLAR, BIPOLAR), (ValueType("uint", 2), ValueType("uint", 2))],
                         ids=["bipolar", "uint2"])
def test_block_with_a_matrix_vector_body_equals_the_ir_in_both_simulators(in_type, out_type):
    rng = np.random.default_rng(5)
    c = 6
    mm = MatMul("mm", rng.integers(-1, 2, size=(c, c)), "ternary", in_type)
    levels = 1 if out_type == BIPOLAR else 3
    lo, hi = mm.bounds
    t = np.sort(rng.integers(lo, hi + 1, size=(c, levels)), axis=1)
    th = MultiThreshold("th", t, mm.out_type, out_type)
    op = Residual("res", (mm.with_folding(None), th), in_type)
    in_fmt = VectorFormat(in_type.kind, in_type.bits, c)
    from lowbit.compiler.ir import Folding
    block = ResidualBlock([mm.unit(th, Folding(2, 3))])
    x = random_values(in_fmt, 40, rng)
    ref = op.reference(x)
    assert block.out_format == VectorFormat(op.out_type.kind, op.out_type.bits, c)
    expected = block.out_format.pack(ref)
    r = run_both(block, in_fmt.pack(x), expected, seed=6, name=f"residual_mvau_{in_type.kind}")
    assert r.mismatches(expected) == 0
    # The body is the bottleneck: 3 * 2 cycles per vector, and the skip path costs nothing.
    assert set(r.verilator.interval) == {block.cycles_per_item} == {6}
    assert r.verilator.latency == block.latency == 1 + (6 + 2) + 1


def test_block_around_a_padded_window_keeps_its_scan_rate():
    """A window body holds a row and more of pixels before its first output: the skip FIFO
    sized by skip_depth lets it, and the block takes one image per scan of the padded map."""
    h, w = 4, 5
    fmt = VectorFormat("uint", 2, 1)
    window = SlidingWindowUnit(h, w, 1, 3, pad=1, pad_value=0, kind="uint", bits=2)
    # A 1x1 "convolution" that keeps the window's centre pixel: the body's output is its input.
    keep = MatMul("keep", np.eye(9, dtype=int)[4:5], "ternary", ValueType("uint", 2))
    from lowbit.compiler.ir import Folding
    body = [window, keep.unit(None, Folding(1, 9))]
    block = ResidualBlock(body)
    assert block.skip_depth == skip_depth(body) == (window.buffer_pixels + 3) + (3 + 2) + 1
    assert block.cycles_per_item == (h + 2) * (w + 2)
    x = random_values(fmt, 3 * h * w, np.random.default_rng(7))
    expected = block.out_format.pack(2 * x)
    r = run_both(block, fmt.pack(x), expected, seed=8, timing_items=2 * h * w, name="residual_window")
    assert r.mismatches(expected) == 0


# The deadlocked run ends with its testbenches still waiting; closing them at teardown is noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_skip_fifo_below_the_bound_deadlocks_or_slows_the_block():
    """The window body needs a row and more of pixels before its first output: a 3-deep skip
    FIFO fills first and the fork stops for good; 8 entries pass but throttle the scan; the
    bound runs at the body's own rate."""
    from lowbit.sim.amaranth_stream import run_amaranth_stream

    h, w = 4, 5
    fmt = VectorFormat("uint", 2, 1)
    x = random_values(fmt, 3 * h * w, np.random.default_rng(7))
    done = {}
    for depth in (3, 8, None):
        window = SlidingWindowUnit(h, w, 1, 3, pad=1, pad_value=0, kind="uint", bits=2)
        keep = MatMul("keep", np.eye(9, dtype=int)[4:5], "ternary", ValueType("uint", 2))
        from lowbit.compiler.ir import Folding
        block = ResidualBlock([window, keep.unit(None, Folding(1, 9))], depth)
        r = run_amaranth_stream(block, fmt.pack(x), n_outputs=len(x), max_cycles=600)
        done[depth] = (len(r.outputs), r.input_cycles[-1])
    assert done[3][0] == 0
    assert done[8][0] == done[None][0] == len(x)
    # At the body's rate the 3 images enter within 3 padded scans of 6 x 7 positions.
    assert done[None][1] < 3 * (h + 2) * (w + 2) < done[8][1]
