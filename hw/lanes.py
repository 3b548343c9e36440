"""Arithmetic lanes: how one SIMD chunk of weights multiplies one chunk of inputs, per weight format.

A lane stores each weight in ``weight_bits`` bits (``encode``) and builds the chunk's partial dot
product from the stored bits and the input elements (``partial``). The matrix-vector unit
accumulates partials over the row; the true dot product is ``scale * accumulated + offset``, which
lets the XNOR lane accumulate plain popcounts (``dot = 2 * popcount(XNOR) - MW``) while every other
lane accumulates exact dot products (scale 1, offset 0).

Each lane builds its partial sum three ways:

- ``partial``: weights from memory, summed by a compressor tree (:mod:`lowbit.hw.compressor`);
- ``partial_const``: weights known when the hardware is built (``weight_memory="const"``), as
  Python integers: a zero weight adds nothing, a weight of +-1 adds the input's bits plain or
  inverted, and every other weight its input's bits shifted by the weight's signed digits; all
  negations become inverted bits plus one constant;
- ``partial_behavioural``: the plain sum of the lane's products, left to synthesis; the baseline
  the other two are measured and proven against.
"""

import functools

import numpy as np
from amaranth.hdl import Array, Cat, Const, Fragment, Module, Mux, Signal, Value, signed

from lowbit.core.errors import LowbitError
from lowbit.core.formats import weight_format

from .compressor import (add_behavioural, add_tree, bit_sum, popcount, popcount_behavioural,
                         xnor_popcount)
from .pipe import Pipe
from .unused import unelaborated

__all__ = ["Lane", "LevelTableLane", "lane_for", "signed_digits", "lane_counters", "lane_stages"]


def _element(x_bits, kind):
    """An input element as a signed value: bipolar bit 1/0 -> +1/-1; uint widened; int as is."""
    if kind == "bipolar":
        return Mux(x_bits[0], Const(1, signed(2)), Const(-1, signed(2)))
    if kind == "uint":
        return x_bits.as_unsigned()
    return x_bits.as_signed()


def _element_bits(x_bits, kind):
    """An input element as ``constant + sum of coefficient * bit``: ``([(bit, coefficient)], constant)``."""
    if kind == "bipolar":
        return [(x_bits[0], 2)], -1  # x = 2b - 1
    k = len(x_bits)
    coefficients = [1 << i for i in range(k)]
    if kind == "int":
        coefficients[-1] = -coefficients[-1]
    return list(zip((x_bits[i] for i in range(k)), coefficients)), 0


def signed_digits(c):
    """``c`` as a sum of ``sign * 2**p`` with no two adjacent digits (non-adjacent form):
    ``[(p, sign)]``, the fewest nonzero digits of any signed-binary form."""
    digits, p = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)  # +1 or -1, chosen so that the rest is divisible by 4
            digits.append((p, d))
            c -= d
        c >>= 1
        p += 1
    return digits


def _negated_sum(m, magnitudes, negate, name, inputs_per_bit=2, pipe=None):
    """``sum_s (-magnitudes[s] if negate[s] else magnitudes[s])`` with no negation per term.

    For a k-bit unsigned v, ``-v = ~v + 1 - 2**k``, so ``+-v = (v ^ s) + s * (1 - 2**k)`` with
    s the negate bit repeated: the terms become their bits XORed with s, and the corrections of
    all terms add up to ``(1 - 2**k) * P`` with P the number of negated terms, one popcount. For
    a signed v, sign-extended by one bit so that ``-v`` fits: ``+-v = (v ^ s) + s`` and the
    correction is P. ``-(P << k)`` is ``(~P << k)`` less a constant, so no adder is spent on it.

    With a ``pipe`` the corrections join the one compressor tree bit by bit instead of through a
    popcount of their own (``s * (1 - 2**k) = s + ~s * 2**k - 2**k``), so that the tree's register
    stages see every operand at once.
    """
    if pipe is not None:
        return _negated_bits(m, magnitudes, negate, name, inputs_per_bit, pipe)
    terms, corrections, constant = [], {}, 0
    for v, s in zip(magnitudes, negate):
        if v.shape().signed:
            wide = v.as_signed()  # sign-extended below by the XOR's width
            k = len(v) + 1
            terms.append((Cat(*(wide[min(i, len(v) - 1)] for i in range(k))) ^ s.replicate(k)).as_signed())
            corrections.setdefault(None, []).append(s)
        else:
            k = len(v)
            terms.append(v ^ s.replicate(k))
            corrections.setdefault(k, []).append(s)
    for k, signs in corrections.items():
        count = popcount(m, Cat(*signs), name=f"{name}_neg{k or 's'}")
        terms.append(count)
        if k is not None:
            terms.append(Cat(Const(0, k), ~count))
            constant -= ((1 << len(count)) - 1) << k
    return add_tree(m, terms, constant=constant, inputs_per_bit=inputs_per_bit, name=name)


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

    def products(self, w_chunk, x_chunk, simd):
        wb, xb = self.weight_bits, self.in_bits
        return [self.product(w_chunk[s * wb:(s + 1) * wb], _element(x_chunk[s * xb:(s + 1) * xb], self.in_kind))
                for s in range(simd)]

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        """Partial dot product of one chunk, ``sum_s w[s] * x[s]`` (in the lane's domain), summed by a
        compressor tree whose counters are added to ``m``."""
        return add_tree(m, self.products(w_chunk, x_chunk, simd), name=name, pipe=pipe)

    def partial_behavioural(self, m, w_chunk, x_chunk, simd, name):
        """The same partial sum as :meth:`partial`, as a balanced tree of plain ``+``."""
        return add_behavioural(self.products(w_chunk, x_chunk, simd))

    def partial_const(self, m, weights, x_chunk, name, pipe=None):
        """A whole row's dot product (in the lane's domain) with constant integer ``weights``.

        Every product ``w * x`` is written as bits of x placed at the signed digits of w (times
        each input bit's own weight): a digit ``+2**p`` adds the bit in column p, a digit
        ``-2**p`` adds the inverted bit there and ``-2**p`` to one constant. Zero weights add
        nothing. The bits and the constant are summed by one compressor tree.
        """
        xb = self.in_bits
        bits, constant = [], 0
        for s, w in enumerate(weights):
            w = int(w)
            if w == 0:
                continue
            element, element_constant = _element_bits(x_chunk[s * xb:(s + 1) * xb], self.in_kind)
            constant += w * element_constant
            for bit, coefficient in element:
                for p, sign in signed_digits(w * coefficient):
                    bits.append((p, bit if sign > 0 else ~bit))
                    if sign < 0:
                        constant -= 1 << p
        # Into the lane's domain: (dot - offset) / scale, exact by construction of the lanes.
        constant -= self.offset(len(weights))
        shift = self.scale.bit_length() - 1
        if constant % self.scale or any(p < shift for p, _ in bits):
            raise RuntimeError(f"Lane {self.kind!r} has no exact domain for constant weights")
        return bit_sum(m, [(p - shift, bit) for p, bit in bits], constant=constant // self.scale,
                       name=name, pipe=pipe)


class XnorLane(Lane):
    """Bipolar weights and inputs: ``dot = 2 * popcount(XNOR(w, x)) - n``; accumulates popcounts."""

    kind = "xnor-popcount"
    scale = 2

    def encode(self, w):
        return 1 if w == 1 else 0

    def offset(self, mw):
        return -mw

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        return xnor_popcount(m, w_chunk, x_chunk, name=name, pipe=pipe)

    def partial_behavioural(self, m, w_chunk, x_chunk, simd, name):
        return popcount_behavioural(~(w_chunk ^ x_chunk))


class AddSubLane(Lane):
    """Bipolar weights, integer inputs: add the input or subtract it.

    Subtraction is not a negation per input: each input is XORed with its weight's sign and the
    ``+1`` of every two's-complement negation is gathered into one popcount of the negative
    weights (see ``_negated_sum``).
    """

    kind = "add-sub"

    def encode(self, w):
        return 1 if w == 1 else 0

    def product(self, w_bits, x):
        return Mux(w_bits[0], x, -x)

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        xb = self.in_bits
        inputs = [_element(x_chunk[s * xb:(s + 1) * xb], self.in_kind) for s in range(simd)]
        return _negated_sum(m, inputs, [~w_chunk[s] for s in range(simd)], name, pipe=pipe)


def _negated_bits(m, magnitudes, negate, name, inputs_per_bit, pipe):
    """:func:`_negated_sum` as one matrix of bits, summed by one (pipelined) compressor tree."""
    bits, constant = [], 0
    for v, s in zip(magnitudes, negate):
        if v.shape().signed:
            k = len(v) + 1
            flipped = Cat(*(v[min(i, len(v) - 1)] for i in range(k))) ^ s.replicate(k)
            bits += [(i, flipped[i]) for i in range(k - 1)] + [(k - 1, ~flipped[k - 1]), (0, s)]
            constant -= 1 << (k - 1)
        else:
            k = len(v)
            flipped = v ^ s.replicate(k)
            bits += [(i, flipped[i]) for i in range(k)] + [(0, s), (k, ~s)]
            constant -= 1 << k
    return bit_sum(m, bits, constant=constant, inputs_per_bit=inputs_per_bit, name=name, pipe=pipe)


def _masked_bipolar_dot(m, agree, mask, name, pipe=None, agree_inputs=2):
    """``sum over set mask bits of (+1 if agree else -1)`` = ``2 * popcount(agree & mask) - popcount(mask)``.

    With constant weights the mask is constant, so the second popcount folds away and the lane is
    one popcount over the nonzero weights' inputs.
    """
    # Pipelined, the first counter level takes as many bits as fit a LUT6 with the signals each
    # bit of ``agree & mask`` is made of (``agree_inputs`` and the mask): the stage between two
    # registers stays a LUT level deep.
    if pipe is None:
        return 2 * popcount(m, agree & mask, name=f"{name}_agree") - popcount(m, mask, name=f"{name}_mask")
    agreeing = popcount(m, agree & mask, inputs_per_bit=agree_inputs + 1, name=f"{name}_agree", pipe=pipe)
    late = pipe.last
    masked = popcount(m, mask, name=f"{name}_mask", pipe=pipe)
    if len(mask) == 1:
        late = pipe.last  # no tree either way
    ready = max(late, pipe.last)
    masked = pipe.delay(masked, late - pipe.last, f"{name}_mask_wait")
    agreeing = pipe.delay(agreeing, pipe.last - late, f"{name}_agree_wait")
    # Both trees end in a carry chain, and so do the difference and the accumulator after it:
    # the difference gets a stage of its own.
    dot = pipe.register(2 * agreeing - masked, f"{name}_dot")
    pipe.mark(ready + 1)
    return dot


class AndLane(Lane):
    """{0,1} weights: a masked add; for bipolar inputs an AND-popcount."""

    kind = "and-popcount"

    def product(self, w_bits, x):
        return Mux(w_bits[0], x, 0)

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        if self.in_kind != "bipolar":
            return super().partial(m, w_chunk, x_chunk, simd, name, pipe)
        # x = +1 agrees with every selected weight; x = -1 disagrees.
        return _masked_bipolar_dot(m, x_chunk, w_chunk, name, pipe, agree_inputs=1)


class TernaryLane(Lane):
    """{-1, 0, +1} weights in two bits (01 = +1, 11 = -1, 00 = 0): add, subtract or skip."""

    kind = "add-sub-skip"

    def product(self, w_bits, x):
        return Mux(w_bits[1], -x, Mux(w_bits[0], x, 0))

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        if self.in_kind != "bipolar":
            # Integer inputs: the input masked by the nonzero bit, XORed with the sign bit (set
            # only for -1), and one popcount of the signs for the negations' +1s.
            xb = self.in_bits
            masked = []
            for s in range(simd):
                x = _element(x_chunk[s * xb:(s + 1) * xb], self.in_kind)
                bits = x.as_unsigned() & w_chunk[2 * s].replicate(len(x))
                masked.append(bits.as_signed() if x.shape().signed else bits)
            return _negated_sum(m, masked, [w_chunk[2 * s + 1] for s in range(simd)], name, pipe=pipe)
        # Bipolar inputs: a nonzero weight contributes +1 when its sign matches the input, else -1,
        # so the lane is a popcount of XNOR(input, weight sign) over the nonzero weights.
        nonzero = Cat(*(w_chunk[2 * s] for s in range(simd)))
        positive = Cat(*(~w_chunk[2 * s + 1] for s in range(simd)))
        return _masked_bipolar_dot(m, ~(x_chunk ^ positive), nonzero, name, pipe)


class ShiftLane(Lane):
    """Powers of two: a sign bit and an exponent code e (0 = zero, else magnitude 2**(e-1)): shifts."""

    kind = "shift"

    def encode(self, w):
        w = int(w)
        if w == 0:
            return 0
        code = abs(w).bit_length()  # 2**(code-1) == |w|
        return (code << 1) | (1 if w < 0 else 0)

    def magnitude(self, w_bits, x):
        code = w_bits[1:]
        return Array([Const(0, 1)] + [x << (e - 1) for e in range(1, 2 ** len(code))])[code]

    def product(self, w_bits, x):
        shifted = self.magnitude(w_bits, x)
        return Mux(w_bits[0], -shifted, shifted)

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        # The sign bit XORs the shifted input; the negations' +1s are one popcount of the signs.
        wb, xb = self.weight_bits, self.in_bits
        shifted, signs = [], []
        for s in range(simd):
            w_bits = w_chunk[s * wb:(s + 1) * wb]
            x = _element(x_chunk[s * xb:(s + 1) * xb], self.in_kind)
            magnitude = Value.cast(self.magnitude(w_bits, x))
            shifted.append(magnitude.as_signed() if x.shape().signed else magnitude.as_unsigned())
            signs.append(w_bits[0])
        return _negated_sum(m, shifted, signs, name, pipe=pipe)


def _times_constant(x, c):
    """``c * x`` for a constant ``c >= 1`` as shifted copies of ``x`` added and subtracted at the
    signed digits of ``c`` (its non-adjacent form): no multiplier.

    The sum is formed signed, one bit wider than ``x`` for an unsigned ``x``, so that a
    subtracted digit never wraps; for an unsigned ``x`` the result is cut back to the unsigned
    width of ``c * max(x)``, which it never exceeds.
    """
    signed_x = x if x.shape().signed else Cat(x, Const(0, 1)).as_signed()
    total = None
    # Positive digits first, largest first: every partial sum stays at least 0 for x >= 0.
    for p, sign in sorted(signed_digits(c), key=lambda d: (-d[1], -d[0])):
        term = signed_x << p
        total = term if total is None else (total + term if sign > 0 else total - term)
    if x.shape().signed:
        return total
    return total[:(c * ((1 << len(x)) - 1)).bit_length()].as_unsigned()


class LevelTableLane(ShiftLane):
    """A per-layer level table ``{0, ±c_1, .., ±c_K}`` (ascending ``c``): a sign bit and a magnitude
    code m (0 = zero, else magnitude ``c_m``); the magnitude is ``c_m * x``, each ``c_k * x``
    built from shifted copies of x (:func:`_times_constant`) and selected by the code.

    Like :class:`ShiftLane`, the sign bit XORs the selected magnitude and the negations' +1s are
    one popcount of the signs. Every ``c_k * x`` depends only on the input element, so the PE
    rows that share an input share them after synthesis merges identical logic. On bipolar
    inputs there are no products: the magnitude is the constant ``c_m`` and the input flips the
    sign.
    """

    kind = "level-table"

    def __init__(self, fmt, in_kind, in_bits):
        super().__init__(fmt, in_kind, in_bits)
        self.magnitudes = tuple(c for c in fmt.levels if c > 0)

    def encode(self, w):
        w = int(w)
        if w == 0:
            return 0
        code = self.magnitudes.index(abs(w)) + 1
        return (code << 1) | (1 if w < 0 else 0)

    def magnitude(self, w_bits, x):
        code = w_bits[1:]
        options = [Const(0, 1)] + [_times_constant(Value.cast(x), c) for c in self.magnitudes]
        options += [Const(0, 1)] * (2 ** len(code) - len(options))  # unused codes
        return Array(options)[code]

    def partial(self, m, w_chunk, x_chunk, simd, name, pipe=None):
        # As ShiftLane, with each element's selected magnitude held in a signal of its own: the
        # negation below takes it apart bit by bit, and must not copy the whole selection per bit.
        # A bipolar input only flips the sign: the magnitude is the constant c_m itself, and the
        # sign is the weight's sign XOR (x = -1).
        wb, xb = self.weight_bits, self.in_bits
        selected, signs = [], []
        for s in range(simd):
            w_bits = w_chunk[s * wb:(s + 1) * wb]
            if self.in_kind == "bipolar":
                table = [Const(c, max(1, c.bit_length())) for c in (0, *self.magnitudes)]
                table += [Const(0, 1)] * (2 ** (wb - 1) - len(table))
                magnitude = Value.cast(Array(table)[w_bits[1:]]).as_unsigned()
                signs.append(w_bits[0] ^ ~x_chunk[s])
            else:
                x = _element(x_chunk[s * xb:(s + 1) * xb], self.in_kind)
                magnitude = Value.cast(self.magnitude(w_bits, x))
                magnitude = magnitude.as_signed() if x.shape().signed else magnitude.as_unsigned()
                signs.append(w_bits[0])
            held = Signal(magnitude.shape(), name=f"{name}_magnitude{s}")
            m.d.comb += held.eq(magnitude)
            selected.append(held)
        return _negated_sum(m, selected, signs, name, pipe=pipe)


_LANES = {
    "xnor-popcount": XnorLane,
    "and-popcount": AndLane,
    "add-sub-skip": TernaryLane,
    "lut-multiply": Lane,
    "shift": ShiftLane,
    "level-table": LevelTableLane,
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


@functools.lru_cache(maxsize=None)
def lane_counters(format_name, in_kind, in_bits, simd, constant=False):
    """The counter outputs of one SIMD chunk's lane, as the lane builds them: each is a function of
    at most six signals, one LUT6's worth of logic, so the estimator sizes a lane by them.

    The lane is built into a scratch module and its one-bit signals counted. ``constant`` builds
    it for constant weights (``partial_const``), drawn at random (seeded) from the format's
    levels, since which weights are zero changes the tree.
    """
    lane = lane_for(format_name, in_kind, in_bits)
    m = Module()
    x = Signal(simd * in_bits)
    if constant:
        weights = np.random.default_rng(0).choice(weight_format(format_name).levels, size=simd)
        lane.partial_const(m, weights, x, "lane")
    else:
        lane.partial(m, Signal(simd * lane.weight_bits), x, simd, "lane")
    return sum(len(st.lhs) == 1 for st in Fragment.get(m, None).statements.get("comb", []))


@functools.lru_cache(maxsize=None)
def lane_stages(format_name, in_kind, in_bits, simd, every, weights=None):
    """Register stages that a lane's tree adds when it registers every ``every`` counter levels
    (:class:`lowbit.hw.pipe.Pipe`): the lane is built into a scratch module, as the unit builds
    it. ``weights`` (a tuple of levels) builds it for those constant weights (``partial_const``),
    whose zeros change the tree."""
    lane = lane_for(format_name, in_kind, in_bits)
    m = unelaborated(Module())
    pipe = Pipe(m, every)
    x = Signal(simd * in_bits)
    if weights is not None:
        lane.partial_const(m, np.asarray(weights), x, "lane", pipe=pipe)
    else:
        lane.partial(m, Signal(simd * lane.weight_bits), x, simd, "lane", pipe=pipe)
    return pipe.stages
