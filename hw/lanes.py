"""Arithmetic lanes: how one SIMD chunk of weights multiplies one chunk of inputs, per weight format.

A lane stores each weight in ``weight_bits`` bits (``encode``) and builds the chunk's partial dot
product from the stored bits and the input elements (``partial``). The matrix-vector unit
accumulates partials over the row; the true dot product is ``scale * accumulated + offset``, which
lets the XNOR lane accumulate plain popcounts (``dot = 2 * popcount(XNOR) - MW``) while every other
lane accumulates exact dot products (scale 1, offset 0).
"""

from amaranth.hdl import Array, Cat, Const, Mux, signed

from lowbit.errors import LowbitError
from lowbit.formats import weight_format

from .compressor import add_tree, popcount, xnor_popcount

__all__ = ["Lane", "lane_for"]


def _element(x_bits, kind):
    """An input element as a signed value: bipolar bit 1/0 -> +1/-1; uint widened; int as is."""
    if kind == "bipolar":
        return Mux(x_bits[0], Const(1, signed(2)), Const(-1, signed(2)))
    if kind == "uint":
        return x_bits.as_unsigned()
    return x_bits.as_signed()


class Lane:
    """Base lane: stored weights are two's complement levels; products are plain multiplications.

    Parameters
    ----------
    fmt : WeightFormat
        The weight format from the registry.
    in_kind : str
        Input element kind: "bipolar", "uint" or "int".
    in_bits : int
        Input element width.
    """

    kind = "lut-multiply"
    scale = 1

    def __init__(self, fmt, in_kind, in_bits):
        self.fmt = fmt
        self.in_kind = in_kind
        self.in_bits = in_bits

    @property
    def weight_bits(self):
        return self.fmt.storage_bits

    def encode(self, w):
        """Stored bits of the integer weight level ``w``."""
        return int(w) & ((1 << self.weight_bits) - 1)

    def offset(self, mw):
        """Constant added to ``scale * accumulated`` to get the dot product of a row of ``mw``."""
        return 0

    def product(self, w_bits, x):
        return w_bits.as_signed() * x

    def partial(self, m, w_chunk, x_chunk, simd, name):
        """Partial dot product of one chunk, ``sum_s w[s] * x[s]`` (in the lane's domain), summed by a
        compressor tree whose counters are added to ``m``."""
        wb, xb = self.weight_bits, self.in_bits
        products = [self.product(w_chunk[s * wb:(s + 1) * wb], _element(x_chunk[s * xb:(s + 1) * xb], self.in_kind))
                    for s in range(simd)]
        return add_tree(m, products, name=name)


class XnorLane(Lane):
    """Bipolar weights and inputs: ``dot = 2 * popcount(XNOR(w, x)) - n``; accumulates popcounts."""

    kind = "xnor-popcount"
    scale = 2

    def encode(self, w):
        return 1 if w == 1 else 0

    def offset(self, mw):
        return -mw

    def partial(self, m, w_chunk, x_chunk, simd, name):
        return xnor_popcount(m, w_chunk, x_chunk, name=name)


class AddSubLane(Lane):
    """Bipolar weights, integer inputs: add the input or subtract it."""

    kind = "add-sub"

    def encode(self, w):
        return 1 if w == 1 else 0

    def product(self, w_bits, x):
        return Mux(w_bits[0], x, -x)


def _masked_bipolar_dot(m, agree, mask, name):
    """``sum over set mask bits of (+1 if agree else -1)`` = ``2 * popcount(agree & mask) - popcount(mask)``.

    With constant weights the mask is constant, so the second popcount folds away and the lane is
    one popcount over the nonzero weights' inputs.
    """
    return 2 * popcount(m, agree & mask, name=f"{name}_agree") - popcount(m, mask, name=f"{name}_mask")


class AndLane(Lane):
    """{0,1} weights: a masked add; for bipolar inputs an AND-popcount."""

    kind = "and-popcount"

    def product(self, w_bits, x):
        return Mux(w_bits[0], x, 0)

    def partial(self, m, w_chunk, x_chunk, simd, name):
        if self.in_kind != "bipolar":
            return super().partial(m, w_chunk, x_chunk, simd, name)
        # x = +1 agrees with every selected weight; x = -1 disagrees.
        return _masked_bipolar_dot(m, x_chunk, w_chunk, name)


class TernaryLane(Lane):
    """{-1, 0, +1} weights in two bits (01 = +1, 11 = -1, 00 = 0): add, subtract or skip."""

    kind = "add-sub-skip"

    def product(self, w_bits, x):
        return Mux(w_bits[1], -x, Mux(w_bits[0], x, 0))

    def partial(self, m, w_chunk, x_chunk, simd, name):
        if self.in_kind != "bipolar":
            return super().partial(m, w_chunk, x_chunk, simd, name)
        # Bipolar inputs: a nonzero weight contributes +1 when its sign matches the input, else -1,
        # so the lane is a popcount of XNOR(input, weight sign) over the nonzero weights.
        nonzero = Cat(*(w_chunk[2 * s] for s in range(simd)))
        positive = Cat(*(~w_chunk[2 * s + 1] for s in range(simd)))
        return _masked_bipolar_dot(m, ~(x_chunk ^ positive), nonzero, name)


class ShiftLane(Lane):
    """Powers of two: a sign bit and an exponent code e (0 = zero, else magnitude 2**(e-1)): shifts."""

    kind = "shift"

    def encode(self, w):
        w = int(w)
        if w == 0:
            return 0
        code = abs(w).bit_length()  # 2**(code-1) == |w|
        return (code << 1) | (1 if w < 0 else 0)

    def product(self, w_bits, x):
        code = w_bits[1:]
        shifted = Array([Const(0, 1)] + [x << (e - 1) for e in range(1, 2 ** len(code))])[code]
        return Mux(w_bits[0], -shifted, shifted)


_LANES = {
    "xnor-popcount": XnorLane,
    "and-popcount": AndLane,
    "add-sub-skip": TernaryLane,
    "lut-multiply": Lane,
    "shift": ShiftLane,
}


def lane_for(format_name, in_kind, in_bits):
    """The lane for a weight format and an input element type (bipolar inputs: XNOR for bipolar weights)."""
    fmt = weight_format(format_name)
    if in_kind not in ("bipolar", "uint", "int"):
        raise LowbitError(f"input kind must be 'bipolar', 'uint' or 'int', not {in_kind!r}")
    if fmt.name == "bipolar" and in_kind != "bipolar":
        return AddSubLane(fmt, in_kind, in_bits)
    if fmt.lane not in _LANES:
        raise LowbitError(f"weight format {fmt.name!r} has no hardware lane yet",
                          f"formats with lanes: {', '.join(sorted(_LANES))}")
    return _LANES[fmt.lane](fmt, in_kind, in_bits)
