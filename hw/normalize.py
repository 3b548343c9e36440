"""Per-example normalization followed by sign, in integers: ``y_i = +1 iff n*z_i - sum_j z_j >= 0``.

Subtracting the mean and dividing by a positive standard deviation does not change a sign, so
``sign(normalize(z)_i) = sign(n*z_i - sum_j z_j)`` exactly (derived in
``lowbit.compiler.ops.normalize.NormalizeSign``, the reference). The output needs the sum over
the whole vector before its first bit, hence two phases per vector.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .compressor import add_behavioural
from .payload import VectorFormat
from .threshold import _check_format, _check_pe

__all__ = ["NormalizeSign"]


class NormalizeSign(wiring.Component):
    """Sign of the per-example normalization of a vector of C integers, PE channels per cycle.

    Two pipelined phases, each holding its own copy of a vector, so that one vector is summed
    while the one before it is compared:

    1. *Sum*: the vector taken from ``i`` is added up, PE elements per cycle, over C/PE cycles.
    2. *Compare*: the vector and its sum move on together; PE outputs per cycle, over C/PE
       cycles, bit ``i`` being ``C*z_i - sum >= 0``, i.e. the sign bit of a difference whose
       width is exact for its range ``+-(C-1)*(max - min)``, so it cannot overflow.

    Timing: ``cycles_per_item = C / PE``: each phase takes a new vector on the cycle it finishes
    the previous one. ``latency = 2 * C / PE + 1`` cycles from the input handshake to the output
    handshake, with the output ready: C/PE cycles of sum, C/PE of compare, one for the result
    register.

    Parameters
    ----------
    in_format : VectorFormat
        C ``int`` or ``uint`` elements: the layer's raw accumulators.
    pe : int
        Channels per cycle, in both phases; must divide C.
    offset : sequence of C int, optional
        Per-channel constants added before the sign: bit ``i`` is ``C*z_i - sum + offset_i >= 0``
        (a layer bias; see ``lowbit.compiler.ops.normalize.NormalizeSign``). Each fold's PE
        constants are selected by the fold counter.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
        Input vectors.
    o : Out(stream.Signature(VectorFormat("bipolar", 1, C).shape))
        Output vectors of C bipolar bits (1 = +1).

    Raises
    ------
    TypeError
        If ``in_format`` is not a ``VectorFormat``.
    ValueError
        If ``in_format`` does not have integer elements, or PE is not a positive divisor of C.
    """

    def __init__(self, in_format, *, pe=1, offset=None):
        channels = in_format.count if isinstance(in_format, VectorFormat) else None
        _check_format("Input", in_format, ("int", "uint"), channels)
        _check_pe(pe, channels)
        lo, hi = in_format.element.min, in_format.element.max
        # C*z_i - sum_j z_j = (C-1)*z_i - sum_{j != i} z_j: extreme at z_i = hi, the rest lo, or
        # the reverse; a prefix of the sum lies between C*lo and C*hi because lo <= 0 <= hi.
        span = (channels - 1) * (hi - lo)
        if offset is None:
            offset = [0] * channels
        offset = [int(v) for v in offset]
        if len(offset) != channels:
            raise ValueError(f"Offset must have {channels} entries, not {len(offset)}")
        self._offset = tuple(offset)
        self._difference_bounds = (-span + min(offset), span + max(offset))
        self._difference_shape = Shape.cast(range(self._difference_bounds[0], self._difference_bounds[1] + 1))
        self._sum_shape = Shape.cast(range(channels * lo, channels * hi + 1))
        self._in_format = in_format
        self._out_format = VectorFormat("bipolar", 1, channels)
        self._pe = pe
        super().__init__({
            "i": In(stream.Signature(self._in_format.shape)),
            "o": Out(stream.Signature(self._out_format.shape)),
        })

    channels = property(lambda self: self._in_format.count, doc="C, the channels normalized together.")
    pe = property(lambda self: self._pe, doc="Channels summed, and compared, per cycle.")
    in_format = property(lambda self: self._in_format, doc="Payload format of ``i``.")
    out_format = property(lambda self: self._out_format, doc="Payload format of ``o``: C bipolar bits.")
    difference_bounds = property(lambda self: self._difference_bounds,
                                 doc="Exact range of ``C*z_i - sum_j z_j``.")
    difference_shape = property(lambda self: self._difference_shape,
                                doc="Shape of the compared difference, exact for its bounds.")
    sum_shape = property(lambda self: self._sum_shape, doc="Shape of the sum, exact for [C*min, C*max].")

    @property
    def folds(self):
        """C / PE: cycles each phase spends on one vector."""
        return self.channels // self.pe

    @property
    def cycles_per_item(self):
        """Cycles between accepted inputs when neither side stalls: C / PE."""
        return self.folds

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake, with the output ready: 2 * C / PE + 1."""
        return 2 * self.folds + 1

    def elaborate(self, platform):
        m = Module()
        folds, pe, channels = self.folds, self.pe, self.channels
        elem = self._in_format.shape.elem_shape
        group_bits = pe * self._in_format.bits

        # Sum phase.
        a_busy = Signal()
        a_fold = Signal(range(folds))
        a_x = Signal(self._in_format.width)
        a_sum = Signal(self._sum_shape)
        a_group = Signal(data.ArrayLayout(elem, pe))
        a_total = Signal(self._sum_shape)
        a_last = Signal()
        # Compare phase.
        b_busy = Signal()
        b_fold = Signal(range(folds))
        b_x = Signal(self._in_format.width)
        b_sum = Signal(self._sum_shape)
        b_group = Signal(data.ArrayLayout(elem, pe))
        b_last = Signal()
        out_build = Signal(channels)
        # Result register: the output beat.
        r_valid = Signal()
        r_data = Signal(channels)

        # The compare phase holds its last fold while the result register is full and not read;
        # the sum phase holds its last fold while the compare phase cannot take the vector.
        b_advance, b_free, handoff = Signal(), Signal(), Signal()
        m.d.comb += [
            a_last.eq(a_busy & (a_fold == folds - 1)),
            b_last.eq(b_busy & (b_fold == folds - 1)),
            b_advance.eq(~(b_last & r_valid & ~self.o.ready)),
            b_free.eq(~b_busy | (b_last & b_advance)),
            handoff.eq(a_last & b_free),
            self.i.ready.eq(~a_busy | handoff),
            a_group.eq(a_x.word_select(a_fold, group_bits)),
            a_total.eq(a_sum + add_behavioural([a_group[p] for p in range(pe)])),
            b_group.eq(b_x.word_select(b_fold, group_bits)),
            self.o.valid.eq(r_valid),
            self.o.payload.eq(r_data),
        ]

        with m.If(a_busy & (~a_last | handoff)):
            m.d.sync += [a_sum.eq(a_total), a_fold.eq(Mux(a_last, 0, a_fold + 1))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [a_x.eq(self.i.payload), a_sum.eq(0), a_busy.eq(1)]
        with m.Elif(handoff):
            m.d.sync += a_busy.eq(0)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r_valid.eq(0)
        with m.If(b_busy & b_advance):
            bits = []
            for p in range(pe):
                diff = Signal(self._difference_shape, name=f"diff{p}")
                column = [self._offset[f * pe + p] for f in range(folds)]
                if any(column):
                    shape = Shape.cast(range(min(column), max(column) + 1))
                    off = Signal(shape, name=f"offset{p}")
                    with m.Switch(b_fold):
                        for f, v in enumerate(column):
                            with m.Case(f):
                                m.d.comb += off.eq(v)
                    m.d.comb += diff.eq(channels * b_group[p] - b_sum + off)
                else:
                    m.d.comb += diff.eq(channels * b_group[p] - b_sum)
                bits.append(diff >= 0)
            bits = Cat(*bits)
            m.d.sync += [
                out_build.word_select(b_fold, pe).eq(bits),
                b_fold.eq(Mux(b_last, 0, b_fold + 1)),
            ]
            with m.If(b_last):
                m.d.sync += [
                    r_data.eq(out_build),
                    r_data.word_select(b_fold, pe).eq(bits),
                    r_valid.eq(1),
                ]
        with m.If(handoff):
            m.d.sync += [b_x.eq(a_x), b_sum.eq(a_total), b_busy.eq(1)]
        with m.Elif(b_last & b_advance):
            m.d.sync += b_busy.eq(0)
        return m
