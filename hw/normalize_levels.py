"""Per-example normalization followed by a signed quantizer, in integers (the reference and its
derivation: ``lowbit.compiler.ops.normalize_levels.NormalizeLevels``).

For a vector x of C integers, ``u_i = C*x_i - sum_j x_j`` and ``V = sum_j u_j**2``; level ``l`` is
reached when, for a positive threshold, ``u_i > 0`` and ``C * u_i**2 * 2**F >= a_l * V``, and for
the others when ``u_i >= 0`` or ``C * u_i**2 * 2**F <= a_l * V``. The output element is the count
less ``2**(k-1)`` (signed levels), or the count itself (unsigned levels).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .compressor import add_behavioural
from .payload import VectorFormat
from .threshold import _check_format, _check_pe, signed_levels

__all__ = ["NormalizeLevels"]


class NormalizeLevels(wiring.Component):
    """Signed (or unsigned) levels of the per-example normalization of a vector of C integers, PE channels per
    cycle, one vector at a time in four phases:

    1. *sum*: ``S = sum_j x_j``, C/PE cycles;
    2. *squares*: ``V = sum_j (C*x_j - S)**2``, C/PE cycles (PE squarers);
    3. *products*: ``P_l = a_l * V`` for the L thresholds, one per cycle (one multiplier);
    4. *compare*: each channel's ``C * u**2 * 2**F`` against every ``P_l``, C/PE cycles.

    Timing: ``cycles_per_item = latency = 3 * C / PE + L + 1`` cycles from an input handshake to
    its output being valid, and to the next input handshake (the vector is taken in the cycle
    before its sum starts). The output register holds the result while the next vector is summed.
    Every width is exact for the bounds of its value.

    Parameters
    ----------
    in_format : VectorFormat
        C ``int`` or ``uint`` elements.
    squares : sequence of L int
        ``a_l``, non-negative; L = 2**k - 1.
    positive : sequence of L bool
        Which thresholds are positive.
    frac_bits : int
        F.
    pe : int
        Channels per cycle in the sum, squares and compare phases; must divide C.
    out_kind : {"int", "uint"}
        Signed levels ``count - 2**(k-1)`` (the default) or the count ``0 .. 2**k - 1``.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
    o : Out(stream.Signature(VectorFormat(out_kind, k, C).shape))

    Raises
    ------
    TypeError
        If ``in_format`` is not a ``VectorFormat``.
    ValueError
        On integer elements missing, a PE that does not divide C, or squares and signs that are not
        2**k - 1 (k >= 2) of each.
    """

    def __init__(self, in_format, squares, positive, frac_bits, *, pe=1, out_kind="int"):
        channels = in_format.count if isinstance(in_format, VectorFormat) else None
        _check_format("Input", in_format, ("int", "uint"), channels)
        _check_pe(pe, channels)
        squares, positive = [int(a) for a in squares], [bool(p) for p in positive]
        levels = len(squares)
        if levels < 3 or levels & (levels + 1) or len(positive) != levels or min(squares) < 0:
            raise ValueError(f"Squares and signs must be 2**k - 1 >= 3 of each, the squares not negative, "
                             f"not {len(squares)} and {len(positive)}")
        if not isinstance(frac_bits, int) or isinstance(frac_bits, bool) or frac_bits < 0:
            raise ValueError(f"Fraction bits must be a non-negative integer, not {frac_bits!r}")
        if out_kind not in ("int", "uint"):
            raise ValueError(f"Out kind must be 'int' or 'uint', not {out_kind!r}")
        lo, hi = in_format.element.min, in_format.element.max
        u = (channels - 1) * (hi - lo)  # |C*x_i - S| at most
        self._squares, self._positive, self._frac_bits = tuple(squares), tuple(positive), frac_bits
        self._sum_shape = Shape.cast(range(channels * lo, channels * hi + 1))
        self._u_shape = Shape.cast(range(-u, u + 1))
        # Unsigned widths from the largest values (a range of 2**63 or more has no length).
        self._var_shape = unsigned((channels * u * u).bit_length())
        self._product_shape = unsigned((max(squares) * channels * u * u).bit_length())
        self._lhs_shape = unsigned((channels * u * u << frac_bits).bit_length())
        self._in_format, self._pe = in_format, pe
        self._out_format = VectorFormat(out_kind, levels.bit_length(), channels)
        super().__init__({"i": In(stream.Signature(in_format.shape)),
                          "o": Out(stream.Signature(self._out_format.shape))})

    channels = property(lambda self: self._in_format.count)
    levels = property(lambda self: len(self._squares))
    pe = property(lambda self: self._pe)
    in_format = property(lambda self: self._in_format)
    out_format = property(lambda self: self._out_format)

    @property
    def folds(self):
        return self.channels // self.pe

    @property
    def cycles_per_item(self):
        return 3 * self.folds + self.levels + 1

    latency = cycles_per_item

    def elaborate(self, platform):
        m = Module()
        folds, pe, channels, levels = self.folds, self.pe, self.channels, self.levels
        elem = self._in_format.shape.elem_shape
        group_bits = pe * self._in_format.bits
        idle, summing, squaring, multiplying, comparing = range(5)

        state = Signal(range(5))
        fold = Signal(range(folds))
        level = Signal(range(levels))
        x = Signal(self._in_format.width)
        total = Signal(self._sum_shape)
        var = Signal(self._var_shape)
        products = Array(Signal(self._product_shape, name=f"product{n}") for n in range(levels))
        group = Signal(data.ArrayLayout(elem, pe))
        out_build = Signal(self._out_format.width)
        r_valid = Signal()
        r_data = Signal(self._out_format.width)
        last_fold = fold == folds - 1
        m.d.comb += [
            group.eq(x.word_select(fold, group_bits)),
            self.i.ready.eq(state == idle),
            self.o.valid.eq(r_valid),
            self.o.payload.eq(r_data),
        ]
        u = []
        for p in range(pe):
            d = Signal(self._u_shape, name=f"u{p}")
            m.d.comb += d.eq(channels * group[p] - total)
            u.append(d)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r_valid.eq(0)
        with m.Switch(state):
            with m.Case(idle):
                with m.If(self.i.valid):
                    m.d.sync += [x.eq(self.i.payload), total.eq(0), var.eq(0), fold.eq(0), state.eq(summing)]
            with m.Case(summing):
                m.d.sync += [total.eq(total + add_behavioural([group[p] for p in range(pe)])),
                             fold.eq(Mux(last_fold, 0, fold + 1))]
                with m.If(last_fold):
                    m.d.sync += state.eq(squaring)
            with m.Case(squaring):
                m.d.sync += [var.eq(var + add_behavioural([d * d for d in u])), fold.eq(Mux(last_fold, 0, fold + 1))]
                with m.If(last_fold):
                    m.d.sync += [level.eq(0), state.eq(multiplying)]
            with m.Case(multiplying):
                square = Array(Const(a, self._product_shape) for a in self._squares)[level]
                m.d.sync += [products[level].eq(square * var), level.eq(level + 1)]
                with m.If(level == levels - 1):
                    m.d.sync += [level.eq(0), state.eq(comparing)]
            with m.Case(comparing):
                fields = []
                for p in range(pe):
                    lhs = Signal(self._lhs_shape, name=f"lhs{p}")
                    m.d.comb += lhs.eq((channels * u[p] * u[p]) << self._frac_bits)
                    reached = []
                    for n, (a, pos) in enumerate(zip(self._squares, self._positive)):
                        if pos:
                            reached.append((u[p] > 0) & (lhs >= products[n]))
                        else:
                            reached.append((u[p] >= 0) | (lhs <= products[n]))
                    count = Signal(self._out_format.bits, name=f"count{p}")
                    m.d.comb += count.eq(add_behavioural(reached))
                    fields.append(signed_levels(count) if self._out_format.kind == "int" else count)
                fields = Cat(*fields)
                advance = ~(last_fold & r_valid & ~self.o.ready)
                with m.If(advance):
                    m.d.sync += [out_build.word_select(fold, len(fields)).eq(fields),
                                 fold.eq(Mux(last_fold, 0, fold + 1))]
                    with m.If(last_fold):
                        m.d.sync += [r_data.eq(out_build), r_data.word_select(fold, len(fields)).eq(fields),
                                     r_valid.eq(1), state.eq(idle)]
        return m
