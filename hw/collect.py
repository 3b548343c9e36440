"""Collect the pixel beats of a feature map into one vector beat: the hardware of ``Flatten``.

A feature map streams one pixel (C elements) per beat in raster order; a fully connected layer
after it takes the whole map as one vector of H*W*C elements, in the same (h, w, c) order. Beat k
fills bits ``[k * C * b, (k+1) * C * b)`` of the vector, which is exactly how
:class:`~lowbit.hw.payload.VectorFormat` packs element ``k*C + c``.
"""

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .payload import VectorFormat

__all__ = ["Collect"]


class Collect(wiring.Component):
    """Gathers ``beats`` input beats into one output beat.

    Timing: one input beat per cycle, so ``cycles_per_item = beats``; the vector is handed over
    ``latency = 1`` cycle after its last input handshake (counted from the first input handshake:
    ``beats``). While a finished vector waits in the output register, the next vector's beats keep
    arriving; only its last beat waits for the register to empty.

    Parameters
    ----------
    in_format : VectorFormat
        One pixel: C elements.
    beats : int
        Pixels per vector (H * W).
    pipelined : bool
        Shift each beat into the vector instead of writing it at the slice its counter selects,
        and keep "last beat" in a register: the input handshake then drives the vector's enable
        through no counter logic (the critical path of a pipelined CNN). Same timing and output.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
    o : Out(stream.Signature(VectorFormat(kind, bits, C * beats).shape))

    Raises
    ------
    TypeError
        If ``in_format`` is not a VectorFormat or ``beats`` not an int.
    ValueError
        If ``beats`` is less than 1.
    """

    def __init__(self, in_format, beats, *, pipelined=False):
        if not isinstance(in_format, VectorFormat):
            raise TypeError(f"Input format must be a VectorFormat, not {in_format!r}")
        if not isinstance(beats, int) or isinstance(beats, bool):
            raise TypeError(f"Beats must be a positive integer, not {beats!r}")
        if beats < 1:
            raise ValueError(f"Beats must be a positive integer, not {beats!r}")
        if not isinstance(pipelined, bool):
            raise TypeError(f"Pipelined must be a bool, not {pipelined!r}")
        self._in_format, self._beats, self._pipelined = in_format, beats, pipelined
        self._out_format = VectorFormat(in_format.kind, in_format.bits, in_format.count * beats)
        super().__init__({
            "i": In(stream.Signature(in_format.shape)),
            "o": Out(stream.Signature(self._out_format.shape)),
        })

    in_format = property(lambda self: self._in_format)
    out_format = property(lambda self: self._out_format)
    beats = property(lambda self: self._beats)
    pipelined = property(lambda self: self._pipelined)
    cycles_per_item = property(lambda self: self._beats,
                               doc="Input beats per vector: cycles per image, whose one vector it makes.")
    latency = property(lambda self: self._beats,
                       doc="Cycles from a vector's first input handshake to its output handshake.")

    def elaborate(self, platform):
        m = Module()
        width = self._in_format.width
        count = Signal(range(self._beats))
        build = Signal(self._out_format.width)
        last = Signal(init=int(self._beats == 1) if self._pipelined else 0)
        if not self._pipelined:
            m.d.comb += last.eq(count == self._beats - 1)
        # Only the last beat needs the output register free.
        m.d.comb += self.i.ready.eq(~last | ~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        # Payloads of k-bit elements are array views; their raw bits are what is collected.
        beat, vector = Value.cast(self.i.payload), Value.cast(self.o.payload)
        if self._pipelined:
            # Beat k enters at the top and is shifted down by each later one: after the last
            # beat, beat k sits at slice k.
            shifted = Cat(build[width:], beat)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += build.eq(shifted)
                with m.If(last):
                    m.d.sync += [count.eq(0), last.eq(self._beats == 1), vector.eq(shifted), self.o.valid.eq(1)]
                with m.Else():
                    m.d.sync += [count.eq(count + 1), last.eq(count == self._beats - 2)]
            return m
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += build.word_select(count, width).eq(beat)
            with m.If(last):
                m.d.sync += [
                    count.eq(0),
                    vector.eq(build),
                    vector.word_select(self._beats - 1, width).eq(beat),
                    self.o.valid.eq(1),
                ]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m
