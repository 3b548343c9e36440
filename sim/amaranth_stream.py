"""Stream tests in Amaranth's Python simulator: a stalling producer, a stalling consumer, handshake times.

The same vectors as the Verilator tests, for quick block-level checks without a C++ build. Producer and
consumer are separate testbenches with their own seeded random idle cycles, and a passive process
records the cycle of every handshake on both sides.
"""

import random
from dataclasses import dataclass

from amaranth.hdl import Value
from amaranth.sim import Simulator

__all__ = ["AmaranthStreamResult", "run_amaranth_stream"]


@dataclass
class AmaranthStreamResult:
    outputs: list
    input_cycles: list
    output_cycles: list

    @property
    def intervals(self):
        return [b - a for a, b in zip(self.output_cycles, self.output_cycles[1:])]

    @property
    def latency(self):
        return self.output_cycles[0] - self.input_cycles[0]


def run_amaranth_stream(dut, inputs, *, n_outputs=None, stall=0.0, max_gap=4, seed=0, max_cycles=None):
    """Send ``inputs`` (ints) into ``dut.i`` and collect ``n_outputs`` beats from ``dut.o``.

    ``stall`` is the probability that either side idles before a beat, for 1..max_gap cycles.
    """
    n_outputs = len(inputs) if n_outputs is None else n_outputs
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    res = AmaranthStreamResult([], [], [])

    # Payloads may be data.View (array layouts); the bench moves their raw bits.
    i_payload, o_payload = Value.cast(dut.i.payload), Value.cast(dut.o.payload)

    async def producer(ctx):
        for word in inputs:
            if stall and rng_in.random() < stall:
                await ctx.tick().repeat(rng_in.randint(1, max_gap))
            ctx.set(i_payload, word)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(res.outputs) < n_outputs:
            if stall and rng_out.random() < stall:
                ctx.set(dut.o.ready, 0)
                await ctx.tick().repeat(rng_out.randint(1, max_gap))
            ctx.set(dut.o.ready, 1)
            (payload,) = await ctx.tick().sample(o_payload).until(dut.o.valid)
            res.outputs.append(int(payload))
        ctx.set(dut.o.ready, 0)

    async def monitor(ctx):
        cycle = 0
        async for _, _, iv, ir, ov, o_r in ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready):
            if iv and ir:
                res.input_cycles.append(cycle)
            if ov and o_r:
                res.output_cycles.append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(monitor)
    if max_cycles is None:
        max_cycles = 100 + (len(inputs) + 2) * (max_gap + 1) * 4 * max(1, getattr(dut, "latency", 1))
    sim.run_until(max_cycles * 1e-6)
    return res
