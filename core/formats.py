"""The formats registry: every weight and activation format lowbit knows, in one place.

Training (model/), the IR (compiler/), the hardware lanes (hw/) and the estimator (boards/) all look
formats up here by name, so a format is described once: its level set, its storage cost, how the
hardware encodes it and which arithmetic lane multiplies by it. Formats with a parameter
(``expq``: exponential post-training quantization at a bit budget; ``tiled``: p copies of a bipolar
tile) are :data:`FORMAT_FAMILIES`, built on the fixed formats of :data:`WEIGHT_FORMATS`.

A post-training quantized layer has its own level set ``{0, ±c_1, .., ±c_K}`` of integers (see
:mod:`lowbit.model.ptq`); it is a *level-table* format named ``"table:c_1,..,c_K"`` (ascending
magnitudes), built by :func:`level_table_format` and found by :func:`weight_format` like any
registry format, so the IR, the hardware and the estimator carry it by its name alone.
"""

import functools
import math
from dataclasses import dataclass

from .errors import LowbitError
from .types import ValueType

__all__ = ["WeightFormat", "ActivationFormat", "WEIGHT_FORMATS", "weight_format", "activation_format",
           "FormatFamily", "FORMAT_FAMILIES", "format_family", "ALPHA_BITS", "level_table_format",
           "format_for_magnitudes", "TABLE_PREFIX", "TABLE_MAX_MAGNITUDE"]


@dataclass(frozen=True)
class WeightFormat:
    """A weight format.

    Parameters
    ----------
    name : str
        Registry key, as used on the command line (``--format``).
    levels : tuple of int
        The integer level set a weight takes before its scale is applied.
    encoding : str
        How a weight is stored in hardware memory.
    scale : str
        Scale granularity: ``"none"`` (folded into thresholds), ``"tensor"`` or ``"channel"``.
    lane : str
        The arithmetic lane in hw/ that multiplies by this format.
    """

    name: str
    levels: tuple
    encoding: str
    scale: str
    lane: str
    description: str = ""

    @property
    def bits_per_weight(self):
        """Information content, log2 of the level count (1.58 for ternary)."""
        return math.log2(len(self.levels))

    @property
    def storage_bits(self):
        """Bits one weight occupies in hardware memory."""
        return max(1, math.ceil(math.log2(len(self.levels))))


@dataclass(frozen=True)
class ActivationFormat:
    """An activation format: a name for an element type, ``bipolar`` (one bit encodes ±1) or
    unsigned/signed k-bit integers (:class:`lowbit.core.types.ValueType`)."""

    name: str
    kind: str  # "bipolar", "uint" or "int"
    bits: int

    @property
    def type(self):
        """The element type."""
        return ValueType(self.kind, self.bits)

    @property
    def levels(self):
        return self.type.levels


def _pow2_levels(bits):
    """Zero and ±2**j for j = 0 .. 2**(bits-1) - 2: one sign bit and a (bits-1)-bit exponent code."""
    mags = [1 << j for j in range(2 ** (bits - 1) - 1)]
    return tuple(sorted({0, *mags, *(-m for m in mags)}))


WEIGHT_FORMATS = {
    f.name: f for f in [
        WeightFormat(
            name="bipolar", levels=(-1, 1), encoding="1 bit: 1 = +1, 0 = -1", scale="none",
            lane="xnor-popcount",
            description="Binary ±1 weights (BinaryNet); per-channel scales fold into thresholds."),
        WeightFormat(
            name="binary01", levels=(0, 1), encoding="1 bit", scale="none", lane="and-popcount",
            description="Binary normalized {0,1} weights; a per-example normalization follows."),
        WeightFormat(
            name="ternary", levels=(-1, 0, 1), encoding="2 bits two's complement", scale="tensor",
            lane="add-sub-skip", description="1.58-bit ternary weights."),
        WeightFormat(
            name="levels5", levels=tuple(range(-2, 3)), encoding="3 bits two's complement",
            scale="tensor", lane="lut-multiply", description="2.32-bit symmetric levels {-2..2}."),
        WeightFormat(
            name="levels9", levels=tuple(range(-4, 5)), encoding="4 bits two's complement",
            scale="tensor", lane="lut-multiply", description="3.17-bit symmetric levels {-4..4}."),
        WeightFormat(
            name="levels17", levels=tuple(range(-8, 9)), encoding="5 bits two's complement",
            scale="tensor", lane="lut-multiply", description="4.08-bit symmetric levels {-8..8}."),
        WeightFormat(
            name="pow2", levels=_pow2_levels(3), encoding="3 bits: sign, exponent code (0 = zero)",
            scale="tensor", lane="shift",
            description="Powers of two {0, ±1, ±2, ±4} times a scale (exponential PTQ, q = 1/2)."),
    ]
}


TABLE_PREFIX = "table:"
# Largest magnitude of a level table: 2**32 keeps every dot product of a layer (inputs up to 8
# bits, thousands of them) exact in float64, which the integer-exact model relies on.
TABLE_MAX_MAGNITUDE = 1 << 32


def level_table_format(magnitudes):
    """The weight format with levels ``{0} ∪ {±c : c in magnitudes}``: a per-layer level table.

    Parameters
    ----------
    magnitudes : sequence of int
        Distinct positive integers up to :data:`TABLE_MAX_MAGNITUDE`, in any order.

    Returns
    -------
    WeightFormat
        Named ``"table:c_1,..,c_K"`` with ascending ``c``; stored in ``ceil(log2(2K + 1))`` bits, a
        sign bit and a magnitude code m (0 = zero, m = the m-th smallest magnitude); lane
        ``"level-table"``. Scale ``"tensor"``.

    Raises
    ------
    LowbitError
        On an empty table, or magnitudes that are not distinct positive integers in range.
    """
    try:
        mags = sorted(int(c) for c in magnitudes)
        ok = all(int(c) == c for c in magnitudes)
    except (TypeError, ValueError):
        ok = False
    if not ok or not mags or mags[0] < 1 or mags[-1] > TABLE_MAX_MAGNITUDE or len(set(mags)) != len(mags):
        raise LowbitError(f"a level table needs distinct integer magnitudes from 1 to 2**32, "
                          f"not {list(magnitudes)!r}")
    code_bits = max(1, (len(mags)).bit_length())
    return WeightFormat(
        name=TABLE_PREFIX + ",".join(map(str, mags)), levels=tuple([-c for c in reversed(mags)] + [0] + mags),
        encoding=f"{code_bits + 1} bits: sign, {code_bits}-bit magnitude code (0 = zero)", scale="tensor",
        lane="level-table", description=f"Per-layer level table of {len(mags)} magnitudes.")


def format_for_magnitudes(magnitudes):
    """The registry format whose levels are exactly ``{0} ∪ {±c}`` (``ternary`` for {1},
    ``pow2`` for {1, 2, 4}), else the level table of :func:`level_table_format`."""
    table = level_table_format(magnitudes)
    for fixed in WEIGHT_FORMATS.values():
        if fixed.levels == table.levels:
            return fixed
    return table


@functools.lru_cache(maxsize=256)
def _parse_table(name):
    """The level-table format a ``"table:..."`` name describes, or None if it is malformed."""
    try:
        mags = [int(v) for v in name[len(TABLE_PREFIX):].split(",")]
        fmt = level_table_format(mags)
    except (ValueError, LowbitError):
        return None
    return fmt if fmt.name == name else None


def weight_format(name):
    """Look up a weight format by name, with an error that lists the known ones.

    Besides the fixed formats of :data:`WEIGHT_FORMATS`, a name ``"table:c_1,..,c_K"`` (ascending
    magnitudes) gives the level table of :func:`level_table_format`.
    """
    try:
        return WEIGHT_FORMATS[name]
    except KeyError:
        if isinstance(name, str) and name.startswith(TABLE_PREFIX):
            fmt = _parse_table(name)
            if fmt is not None:
                return fmt
            hint = "write 'table:' and distinct ascending magnitudes, e.g. 'table:3,5,8'"
            raise LowbitError(f"malformed level-table format {name!r}", hint) from None
        if name in FORMAT_FAMILIES:
            fam = FORMAT_FAMILIES[name]
            raise LowbitError(f"weight format {name!r} has a parameter ({fam.parameter}) and no fixed "
                              "level set", f"look it up with format_family({name!r})") from None
        raise LowbitError(f"unknown weight format {name!r}",
                          f"use one of: {', '.join(WEIGHT_FORMATS)}") from None


# Bits that store one per-copy scale alpha of a tiled layer (a float32).
ALPHA_BITS = 32


@dataclass(frozen=True)
class FormatFamily:
    """A weight format with a parameter: one level set per value of the parameter.

    ``WEIGHT_FORMATS`` holds the formats with a fixed level set, each with its own hardware lane.
    A family is built on them: a tiled layer stores one tile of ``bipolar`` weights and the
    ``bipolar`` lane computes with it; an ``expq`` layer is the output of exponential post-training
    quantization, whose levels depend on the bit budget and on the ratio q found per layer.

    Parameters
    ----------
    name : str
        Registry key (``--format``).
    parameter : str
        The parameter's name: ``"p"`` (tile copies) or ``"bits"`` (PTQ bit budget).
    values : tuple of int
        Allowed parameter values.
    encoding : str
        How a weight is stored in hardware memory.
    scale : str
        Scale granularity.
    base : str or None
        The ``WEIGHT_FORMATS`` entry whose lane computes with it, if any.
    """

    name: str
    parameter: str
    values: tuple
    encoding: str
    scale: str
    base: str = None
    description: str = ""

    def check(self, value):
        """Return ``value`` if it is one of ``values``, else raise a ``LowbitError``."""
        if not isinstance(value, int) or isinstance(value, bool) or value not in self.values:
            raise LowbitError(f"format {self.name!r} needs {self.parameter} in "
                              f"{{{', '.join(map(str, self.values))}}}, not {value!r}",
                              f"pass --{self.parameter} with one of those values")
        return value

    def levels(self, value):
        """The level set at one parameter value, as text (the levels of ``expq`` are floats,
        ``±a*q**k``, known only once q is chosen per layer)."""
        self.check(value)
        if self.name == "tiled":
            return "{-1, +1} (one tile of N/p bits)"
        k = 2 ** (value - 1) - 1
        return f"{{0, ±a*q**k : k = 0..{k - 1}}}"

    def bits_per_weight(self, value=None, n_weights=None):
        """Bits per weight at one parameter value; None (shown as "—") when ``value`` is None.

        ``tiled``: ``1/p`` for the tile plus ``p * ALPHA_BITS / n_weights`` for the alphas of a
        layer of ``n_weights`` weights (the alphas are left out when ``n_weights`` is None).
        ``expq``: the bit budget, one sign bit and a (bits-1)-bit exponent code.
        """
        if value is None:
            return None
        self.check(value)
        if self.name == "tiled":
            return 1 / value + (0 if n_weights is None else value * ALPHA_BITS / n_weights)
        return float(value)

    def layer_format(self, magnitudes):
        """``expq``: the hardware format of one quantized layer, from its integer magnitudes
        ``c_k = round(q**k * 2**F)`` (:mod:`lowbit.model.ptq`); see :func:`format_for_magnitudes`."""
        if self.name != "expq":
            raise LowbitError(f"format {self.name!r} has no per-layer level table",
                              "only 'expq' layers carry their own magnitudes")
        return format_for_magnitudes(magnitudes)


FORMAT_FAMILIES = {
    f.name: f for f in [
        FormatFamily(
            name="expq", parameter="bits", values=(2, 3, 4, 5, 6),
            encoding="bits: sign, (bits-1)-bit exponent code k (0 = zero)", scale="tensor (a, q)",
            description="Exponential post-training quantization ±a*q**k plus zero, a = max|w|, "
                        "q per layer maximizing corr(w, Q(w)); q = 1/2 gives powers of two. In "
                        "hardware a layer is the level table of its fixed-point magnitudes."),
        FormatFamily(
            name="tiled", parameter="p", values=tuple(2 ** i for i in range(1, 11)),
            encoding="1 bit per tile position (N/p bits per layer) plus p float32 alphas",
            scale="tile copy (alpha_i)", base="bipolar",
            description="Tiled Bit Networks: one bipolar tile repeated p times, one alpha per copy; "
                        "layers below min_compress_size stay plain bipolar."),
    ]
}


def format_family(name):
    """Look up a parameterized weight format (``expq``, ``tiled``) by name."""
    try:
        return FORMAT_FAMILIES[name]
    except KeyError:
        raise LowbitError(f"unknown parameterized weight format {name!r}",
                          f"use one of: {', '.join(FORMAT_FAMILIES)}") from None


def activation_format(spec):
    """Parse an activation format: ``"bipolar"``, ``"uK"`` (unsigned K-bit) or ``"sK"`` (signed), K = 1..8."""
    if spec == "bipolar":
        return ActivationFormat("bipolar", "bipolar", 1)
    if isinstance(spec, str) and len(spec) >= 2 and spec[0] in "us" and spec[1:].isdigit():
        bits = int(spec[1:])
        if 1 <= bits <= 8:
            return ActivationFormat(spec, "uint" if spec[0] == "u" else "int", bits)
    raise LowbitError(f"unknown activation format {spec!r}",
                      "use 'bipolar', 'u1'..'u8' (unsigned k-bit) or 's2'..'s8' (signed k-bit)")
