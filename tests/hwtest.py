"""Shared helpers for the hardware component tests."""

import gc
import re
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable


def raises_exactly(exc, message, build):
    """``build()`` raises ``exc`` with exactly ``message``; the half-built component is not reported unused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exc, match=f"^{re.escape(message)}$") as info:
            build()
        del info
        gc.collect()


def follows_within_a_cycle(dut, cause, effects, *, drive, cycles=300, seed=3):
    """Whether, on any cycle of a random run of ``dut``, one of ``effects`` changes with ``cause``
    without a clock edge: a combinational path. ``drive``: ``(signal, probability of 1)`` pairs
    set at random each cycle (``None``: any value of the signal's width)."""
    import random

    from amaranth.hdl import Value
    from amaranth.sim import Simulator

    rng = random.Random(seed)
    seen = []

    async def bench(ctx):
        for _ in range(cycles):
            for signal, p in drive:
                ctx.set(signal, rng.random() < p if p is not None else rng.getrandbits(len(Value.cast(signal))))
            values = []
            for level in (0, 1):
                ctx.set(cause, level)
                values.append([ctx.get(e) for e in effects])
            seen.append(values[0] != values[1])
            ctx.set(cause, rng.random() < 0.4)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return any(seen)


from lowbit.hw.unused import unelaborated  # noqa: E402,F401  (re-exported for the tests)
