"""lowbit.hw.rom: the ROM component, its read port, and how synthesis maps it."""
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from lowbit.boards.synth import synthesize
from lowbit.hw.mvau import MatrixVectorUnit
from lowbit.hw.payload import VectorFormat
from lowbit.hw.rom import ROM
from hwtest import raises_exactly, unelaborated

rng = np.random.default_rng(5)


def random_words(depth, width):
    return [int(sum(int(b) << i for i, b in enumerate(rng.integers(0, 2, width)))) for _ in range(depth)]


def test_properties():
    rom = unelaborated(ROM([1, 2, 3], 4, style="logic"))
    assert (rom.depth, rom.width, rom.words, rom.style, rom.latency) == (3, 4, (1, 2, 3), "logic", 1)
    assert (len(rom.addr), len(rom.data), len(rom.en)) == (2, 4, 1)


@pytest.mark.parametrize("args, kwargs, message", [
    (([1], 0), {}, "Width must be a positive integer, not 0"),
    (([1], True), {}, "Width must be a positive integer, not True"),
    (([], 4), {}, "Words must hold at least one word"),
    (([1, 16], 4), {}, "Word 1 must be an integer in [0, 2**4), not 16"),
    (([-1], 4), {}, "Word 0 must be an integer in [0, 2**4), not -1"),
    (([1], 4), {"style": "lut"}, "Style must be None, 'block' or 'logic', not 'lut'"),
])
def test_rejects_bad_parameters(args, kwargs, message):
    raises_exactly(ValueError, message, lambda: ROM(*args, **kwargs))


def test_reads_one_cycle_later_and_holds_without_enable():
    words = random_words(20, 9)
    dut = ROM(words, 9)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for a in [0, 19, 7, 7, 3]:
            ctx.set(dut.addr, a)
            await ctx.tick()
            seen.append((a, ctx.get(dut.data)))
        # With the port disabled, a new address does not reach the data.
        ctx.set(dut.en, 0)
        ctx.set(dut.addr, 11)
        await ctx.tick()
        seen.append((3, ctx.get(dut.data)))

    sim.add_testbench(bench)
    sim.run()
    assert seen == [(a, words[a]) for a, _ in seen]


class _Reader(wiring.Component):
    """A read port of a ROM of ``depth`` words whose data goes through an XOR to an output."""

    def __init__(self, depth, width):
        self._words = random_words(depth, width)
        super().__init__({"addr": In(range(depth)), "x": In(width), "y": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.weights_rom = port = ROM(self._words, len(self.x))
        m.d.comb += [port.addr.eq(self.addr), port.en.eq(1)]
        y = Signal(len(self.x))
        m.d.sync += y.eq(port.data ^ self.x)
        m.d.comb += self.y.eq(y)
        return m


@pytest.mark.parametrize("mh, pe, rows", [(8, 2, True), (8, 8, False)])
def test_engine_roms_and_rows_are_modules(mh, pe, rows):
    # A matrix-vector unit reads its weights and thresholds from ROM modules (*_rom) and puts
    # each PE row in a module (*_row), which the xc7 flow keeps apart. Fully unrolled, its one
    # weight word and threshold word are constants of a single module, so that synthesis
    # simplifies the lanes by them.
    w = rng.choice([-1, 1], size=(mh, 16))
    t = rng.integers(-4, 5, size=(mh, 1))
    unit = MatrixVectorUnit(w, "bipolar", VectorFormat("bipolar", 1, 16), t, pe=pe, simd=16)
    text = verilog.convert(unit, name="engine", emit_src=False)
    modules = re.findall(r"^module \\?(\S+) ?\(", text, re.M)
    expected = ["engine.weights_rom", "engine.thresholds_rom"] + [f"engine.pe{p}_row" for p in range(pe)]
    assert sorted(modules) == sorted(["engine"] + expected if rows else ["engine"])


def test_xc7_maps_a_64_word_rom_bit_to_one_lut():
    # 64 words are six address bits: one LUT6 per bit, kept apart from the XORs behind the
    # data register (one LUT2 each), whatever else the module holds.
    r = synthesize(verilog.convert(_Reader(64, 48), name="top", emit_src=False), "top", "xilinx")
    assert r.cells.get("LUT6", 0) == 48
    assert r.luts == 48 + 48
