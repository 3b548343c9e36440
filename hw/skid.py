"""Stream stages whose outputs, ``ready`` included, are all registers.

Put between two blocks that sit far apart on the chip (the board's link and the network), they
cut every path between them at a register, so that neither block's handshake logic and the wires
between them share one clock period: a :class:`SkidBuffer` at a payload per cycle, a
:class:`RegisterSlice` at one every other cycle, without logic on the payload's enable.
"""

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "RegisterSlice"]


class _Stage(wiring.Component):
    """A stream stage of ``width``-bit payloads: ports ``i`` and ``o``."""

    def __init__(self, width):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"Width must be a positive integer, not {width!r}")
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})


class SkidBuffer(_Stage):
    """One payload on ``o`` and one in reserve, for when ``o`` stalls the cycle a payload comes.

    Timing: ``latency = 1`` cycle from an input handshake to its output handshake, and one
    payload per cycle (``cycles_per_item = 1``) when neither side stalls. ``i.ready``,
    ``o.valid`` and ``o.payload`` are registers.

    Parameters
    ----------
    width : int
        Payload bits.

    Members
    -------
    i : In(stream.Signature(width))
    o : Out(stream.Signature(width))
    """

    latency = 1
    cycles_per_item = 1

    def elaborate(self, platform):
        m = Module()
        valid, data = Signal(), Signal(len(Value.cast(self.o.payload)))
        spare_valid, spare = Signal(), Signal(len(data))
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(data), self.i.ready.eq(~spare_valid)]
        taken = self.i.valid & ~spare_valid
        with m.If(self.o.ready | ~valid):  # the output register is free this cycle
            with m.If(spare_valid):
                m.d.sync += [data.eq(spare), valid.eq(1), spare_valid.eq(0)]
            with m.Else():
                m.d.sync += [data.eq(self.i.payload), valid.eq(taken)]
        with m.Elif(taken):  # the output waits: the new payload goes to the reserve
            m.d.sync += [spare.eq(self.i.payload), spare_valid.eq(1)]
        return m


class RegisterSlice(_Stage):
    """One payload in a register between two streams, taken every other cycle at most.

    Unlike :class:`SkidBuffer`, the payload register loads whenever it is empty, so its enable is
    a register itself, not logic of ``o.ready``: for a wide payload (an image of 784 bits), no
    logic fans out to every bit. ``i.ready``, ``o.valid`` and ``o.payload`` are registers.

    Timing: ``latency = 1`` cycle; ``cycles_per_item = 2`` (a payload leaves the cycle after the
    one it came, and the register takes the next the cycle after that).

    Parameters
    ----------
    width : int
        Payload bits.
    """

    latency = 1
    cycles_per_item = 2

    def elaborate(self, platform):
        m = Module()
        full, data = Signal(), Signal(len(Value.cast(self.o.payload)), reset_less=True)
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(data), self.i.ready.eq(~full)]
        with m.If(~full):
            m.d.sync += [data.eq(self.i.payload), full.eq(self.i.valid)]
        with m.Elif(self.o.ready):
            m.d.sync += full.eq(0)
        return m
