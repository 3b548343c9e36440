"""A constant table added to a stream of pixels, one row per position: a transformer's position
embedding on its tokens.

The table's rows are the words of a ROM (:class:`~lowbit.hw.rom.ROM`), addressed by the position of
the beat being taken; the sum is formed from the registered beat and the word read with it.
"""

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .rom import ROM
from .threshold import _check_format

__all__ = ["PositionAdd"]


class PositionAdd(wiring.Component):
    """``y = x + table[p]`` per element, ``p`` the beat's position in its image (0, 1, ..., P-1,
    then 0 again for the next image).

    Timing: one beat per cycle (``cycles_per_item = 1``, an image of P beats in P cycles);
    ``latency = 1`` cycle from an input handshake to its output being valid (the beat and its
    table row are registered together). The input is ready whenever the output register is empty
    or being taken.

    Parameters
    ----------
    table : array (P, C) of int
        The rows, in stream order.
    in_format : VectorFormat
        C ``int`` or ``uint`` elements.
    out_format : VectorFormat
        C ``int`` or ``uint`` elements wide enough for every sum ``x + table[p]``.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
    o : Out(stream.Signature(out_format.shape))

    Raises
    ------
    TypeError
        If a format is not a ``VectorFormat``.
    ValueError
        If the table is not a 2-D integer array of C columns, a format has the wrong elements, or
        the output cannot hold every sum.
    """

    cycles_per_item = 1
    latency = 1

    def __init__(self, table, in_format, out_format):
        t = np.asarray(table)
        if t.ndim != 2 or t.size == 0 or t.dtype.kind not in "iu":
            raise ValueError(f"Table must be a non-empty 2-D integer array, not {t.dtype} {t.shape}")
        positions, channels = t.shape
        _check_format("Input", in_format, ("int", "uint"), channels)
        _check_format("Output", out_format, ("int", "uint"), channels)
        lo, hi = in_format.element.min + int(t.min()), in_format.element.max + int(t.max())
        if lo < out_format.element.min or hi > out_format.element.max:
            raise ValueError(f"Output elements {out_format.element} cannot hold the sums in [{lo}, {hi}]")
        self._table = t.astype(np.int64)
        self._table.setflags(write=False)
        self._entry_bits = max(int(v).bit_length() for v in (t.min(), t.max(), -1)) + 1
        self._in_format, self._out_format = in_format, out_format
        super().__init__({"i": In(stream.Signature(in_format.shape)), "o": Out(stream.Signature(out_format.shape))})

    in_format = property(lambda self: self._in_format)
    out_format = property(lambda self: self._out_format)
    positions = property(lambda self: self._table.shape[0])
    table = property(lambda self: self._table)

    @property
    def table_bits(self):
        """Bits of the table's ROM: P words of C two's complement entries."""
        return self.positions * self._table.shape[1] * self._entry_bits

    def _words(self):
        b, mask = self._entry_bits, (1 << self._entry_bits) - 1
        return [sum((int(v) & mask) << (c * b) for c, v in enumerate(row)) for row in self._table]

    def elaborate(self, platform):
        m = Module()
        fmt, out, b = self._in_format, self._out_format, self._entry_bits
        channels = self._table.shape[1]
        m.submodules.table_rom = rom = ROM(self._words(), channels * b)
        position = Signal(range(self.positions))
        beat = Signal(fmt.width)
        valid = Signal()
        take = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(~valid | self.o.ready), rom.addr.eq(position), rom.en.eq(take)]
        with m.If(take):
            m.d.sync += [beat.eq(self.i.payload.as_value()), valid.eq(1),
                         position.eq(Mux(position == self.positions - 1, 0, position + 1))]
        with m.Elif(self.o.ready):
            m.d.sync += valid.eq(0)
        sums = []
        for c in range(channels):
            x = beat[c * fmt.bits:(c + 1) * fmt.bits]
            x = x.as_signed() if fmt.kind == "int" else x
            s = Signal(signed(out.bits + 1), name=f"sum{c}")
            m.d.comb += s.eq(x + rom.data[c * b:(c + 1) * b].as_signed())
            sums.append(s[:out.bits])
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(Cat(*sums))]
        return m
