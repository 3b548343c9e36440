"""NormalizeLevels: a per-example normalization without parameters, then a signed (or unsigned)
quantizer, exact in integers.

The normalization of n channels is ``y_i = (x_i - mean) / std``. With ``u_i = n*x_i - sum_j x_j``
(n times the distance to the mean) and ``V = sum_j u_j**2``, ``y_i = u_i / sqrt(V/n)``, and a
level threshold ``t`` is reached when ``u_i >= t * sqrt(V/n)``. Squaring removes the root:

- ``t > 0``: ``u_i > 0`` and ``n * u_i**2 >= t**2 * V``;
- ``t <= 0``: ``u_i >= 0`` or ``n * u_i**2 <= t**2 * V``.

``t**2`` is a fixed-point integer ``a = t**2 * 2**F``, and both sides are integers once
multiplied by ``2**F``. A vector whose channels are all equal has every ``u_i = 0``: it reaches
exactly the thresholds ``t <= 0``, as ``y = 0`` does. :class:`NormalizeSign` is the one-threshold
case with a bipolar output. This is the normalization of binary normalized networks, used by the
integer ViT (:mod:`lowbit.model.integer_vit`) in place of LayerNorm.

Its engine (:class:`lowbit.hw.normalize_levels.NormalizeLevels`, manifest op ``normalize_levels``)
sums, squares and compares PE channels per cycle, with one multiplier for the products ``a_l * V``.
"""

from dataclasses import dataclass, replace

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import NATURAL, POSITIVE
from lowbit.hw.normalize_levels import NormalizeLevels as NormalizeLevelsUnit
from lowbit.hw.payload import VectorFormat
from lowbit.hw.unused import unelaborated

from ..graph import TYPE_RECORD, Op, ValueType, check_last_axis, divisors, int_array, type_record
from .normalize import normalize_sign_bounds

__all__ = ["NormalizeLevels"]

_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True, eq=False)
class NormalizeLevels(Op):
    """``y_i = qmin + #{l : (x_i - mean) / std >= t_l}`` over the last axis, in integers (module
    docstring); ``qmin`` the output type's least level: ``-2**(k-1)`` signed, 0 unsigned.

    Parameters
    ----------
    name : str
    channels : int
        n, the channels normalized together (the last axis).
    in_type : ValueType
        ``int`` or ``uint`` type of x.
    squares : array (L,)
        ``a_l = t_l**2 * 2**frac_bits``, non-negative integers; L = 2**k - 1.
    positive : array of bool (L,)
        Which thresholds are positive.
    out_type : ValueType
        ``int k`` or ``uint k`` (k >= 2).
    frac_bits : int
        F.
    pe : int
        Channels the engine handles per cycle; a divisor of ``channels``.
    """

    name: str
    channels: int
    in_type: ValueType
    squares: np.ndarray
    positive: np.ndarray
    out_type: ValueType
    frac_bits: int
    pe: int = 1
    engine_op = "normalize_levels"
    record_fields = {"channels": POSITIVE, "in_type": TYPE_RECORD, "out_type": TYPE_RECORD, "frac_bits": NATURAL,
                     "pe": POSITIVE}
    record_arrays = ("squares", "positive")
    entry_fields = {"channels": POSITIVE, "levels": POSITIVE, "pe": POSITIVE}

    def __post_init__(self):
        if not isinstance(self.channels, int) or isinstance(self.channels, bool) or self.channels < 1:
            raise LowbitError(f"{self.name}: channels must be a positive integer, not {self.channels!r}")
        if not isinstance(self.in_type, ValueType) or self.in_type.kind == "bipolar":
            raise LowbitError(f"{self.name}: normalizes uint or int values, not {self.in_type!r}")
        if (not isinstance(self.out_type, ValueType) or self.out_type.kind not in ("int", "uint")
                or self.out_type.bits < 2):
            raise LowbitError(f"{self.name}: outputs signed or unsigned levels of at least 2 bits, "
                              f"not {self.out_type!r}")
        if not isinstance(self.pe, int) or isinstance(self.pe, bool) or self.pe < 1 or self.channels % self.pe:
            raise LowbitError(f"{self.name}: PE must be a positive divisor of the {self.channels} channels, "
                              f"not {self.pe!r}")
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool) or not 0 <= self.frac_bits <= 32:
            raise LowbitError(f"{self.name}: frac_bits must be an integer in 0..32, not {self.frac_bits!r}")
        a = int_array(f"{self.name}: squares", self.squares, 1)
        pos = np.asarray(self.positive)
        levels = 2 ** self.out_type.bits - 1
        if a.shape != (levels,) or pos.shape != (levels,) or pos.dtype != np.bool_:
            raise LowbitError(f"{self.name}: a {self.out_type} output needs {levels} squares and {levels} "
                              f"signs, not {a.shape} and {pos.dtype} {pos.shape}")
        if (a < 0).any():
            raise LowbitError(f"{self.name}: squared thresholds must not be negative")
        pos = pos.copy()
        pos.setflags(write=False)
        object.__setattr__(self, "squares", a)
        object.__setattr__(self, "positive", pos)
        # Every term of the comparisons (see _compare) must stay in int64.
        u = max(abs(b) for b in normalize_sign_bounds(self.channels, self.in_type.min, self.in_type.max))
        v = self.channels * u * u
        if max(v, int(a.max()) * (v >> self.frac_bits), int(a.max()) << self.frac_bits) > _INT64_MAX:
            raise LowbitError(f"{self.name}: {self.channels} channels of {self.in_type} overflow the int64 "
                              f"comparisons at {self.frac_bits} fraction bits",
                              "narrow the input or use fewer fraction bits")

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.channels)
        return tuple(shape)

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        n = self.channels
        u = n * x - x.sum(-1, keepdims=True)
        v = (u * u).sum(-1, keepdims=True)
        p = n * u * u
        # Level by level: arrays the size of x, not L times that (10,000 ViT images: 1.2 GB each).
        count = np.zeros(u.shape, dtype=np.int64)
        for a, positive in zip(self.squares.tolist(), self.positive.tolist()):
            side = self._compare(p, v, a)
            count += ((u > 0) & (side >= 0)) if positive else ((u >= 0) | (side <= 0))
        return self.out_type.min + count

    def _compare(self, p, v, a):
        """The sign of ``p * 2**F - a * v`` (p, v non-negative, broadcast together), exactly in int64
        where the two products may not fit. With ``v = q * 2**F + r`` it is the sign of
        ``d * 2**F - a * r``, ``d = p - a * q``, and ``0 <= a * r < a * 2**F``: negative for d < 0,
        positive for d > a, else computed with d * 2**F <= a * 2**F."""
        f = self.frac_bits
        q, r = v >> f, v & ((1 << f) - 1)
        d = p - a * q
        near = np.sign((np.clip(d, 0, a) << f) - a * r)
        return np.where(d < 0, -1, np.where(d > a, 1, near))

    def record(self):
        return ({"channels": self.channels, "in_type": type_record(self.in_type),
                 "out_type": type_record(self.out_type), "frac_bits": self.frac_bits, "pe": self.pe},
                {"squares": self.squares, "positive": self.positive})

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, fields["channels"], ValueType(**fields["in_type"]), arrays["squares"],
                   np.asarray(arrays["positive"], dtype=bool), ValueType(**fields["out_type"]), fields["frac_bits"],
                   fields["pe"])

    # -- hardware -------------------------------------------------------------------------------
    def with_cycle_target(self, target_cycles, vectors):
        """The fewest channels per cycle that meet the target, else all of them."""
        fmt = VectorFormat(self.in_type.kind, self.in_type.bits, self.channels)
        for pe in divisors(self.channels):
            unit = unelaborated(self._unit(fmt, pe))
            if unit.cycles_per_item * vectors <= target_cycles:
                break
        return replace(self, pe=pe)

    def _unit(self, in_format, pe):
        return NormalizeLevelsUnit(in_format, self.squares.tolist(), self.positive.tolist(), self.frac_bits,
                                   pe=pe, out_kind=self.out_type.kind)

    def engine(self, layer, in_format, lowering):
        return self._unit(in_format, self.pe)

    def engine_cycles(self, layer, engine):
        return engine.cycles_per_item * layer.vectors

    def entry(self, layer, engine):
        return {"op": self.engine_op, "channels": self.channels, "levels": len(self.squares), "pe": engine.pe}
