"""NormalizeSign: the sign after a binary normalized layer's per-example normalization, in integers.

A binary normalized layer has {0,1} weights and biases, ``z = W_q x + b_q``, followed by a
per-example normalization without learned parameters. When a sign activation follows, the
normalization reduces to one integer comparison per channel. Its engine
(:class:`lowbit.hw.normalize.NormalizeSign`, manifest op ``normalize_sign``) sums a vector, PE
channels per cycle, while it compares the one before.
"""

import math
from dataclasses import dataclass

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import POSITIVE
from lowbit.core.types import BIPOLAR, ValueType, int_type_for
from lowbit.hw.normalize import NormalizeSign as NormalizeSignUnit

from ..graph import TYPE_RECORD, Op, divisors, type_record
from ..lowering import Layer, engine_format, sample_engine

__all__ = ["NormalizeSign", "normalize_sign_bounds"]


def normalize_sign_bounds(channels, lo, hi):
    """Exact range of ``n*z_i - sum_j z_j`` over all vectors z of n = ``channels`` values in [lo, hi].

    ``n*z_i - sum_j z_j = (n-1)*z_i - sum_{j != i} z_j``: z_i appears with the positive weight
    n-1 and every other z_j with weight -1, independently, so the largest value takes z_i = hi and
    all others lo, the smallest the reverse. Both are reached when n >= 2; for n = 1 the value is
    always 0. The bound is symmetric: ``+-(n-1)*(hi-lo)``.
    """
    span = (channels - 1) * (hi - lo)
    return -span, span


@dataclass(frozen=True, eq=False)
class NormalizeSign(Op):
    """``sign(normalize(z))`` per example, exact in integers: ``y_i = +1 if n*z_i - sum_j z_j >= 0 else -1``.

    The normalization is ``(z - mean(z)) / std(z)`` over the n channels of one example. Since
    ``std > 0`` is a positive factor,
    ``sign((z_i - mean) / std) = sign(z_i - mean) = sign(z_i - (sum_j z_j) / n) = sign(n*z_i - sum_j z_j)``,
    the last step multiplying by n > 0. Every quantity on the right is an integer, so no rounding
    or division remains. lowbit's sign maps 0 to +1 (``x >= 0``), which here means: a channel
    exactly at the mean outputs +1. When all channels are equal (``std = 0``) every channel sits at
    the mean and outputs +1, which is what a normalization with an epsilon in the variance gives.

    Parameters
    ----------
    name : str
        Layer name.
    channels : int
        n, the channels normalized together.
    in_type : ValueType
        ``int`` or ``uint`` type of the raw accumulators z.
    offset : array (n,) of int, optional
        Added to each channel's compared quantity: ``n*z_i - sum_j z_j + offset_i``. A layer with
        a bias b has ``z + b`` normalized, which is ``z`` with ``offset_i = n*b_i - sum_j b_j``.
    pe : int
        Channels the engine sums, and compares, per cycle; a divisor of ``channels``.

    Raises
    ------
    LowbitError
        On a channel count that is not a positive integer, an input type that is not an integer
        type, a malformed offset, or a PE that does not divide the channels.
    """

    name: str
    channels: int
    in_type: ValueType
    offset: np.ndarray = None
    pe: int = 1
    engine_op = "normalize_sign"
    record_fields = {"channels": POSITIVE, "in_type": TYPE_RECORD, "pe": POSITIVE}
    record_defaults = {"pe": 1}
    entry_fields = {"channels": POSITIVE, "pe": POSITIVE}

    def __post_init__(self):
        if not isinstance(self.channels, int) or isinstance(self.channels, bool) or self.channels < 1:
            raise LowbitError(f"{self.name}: channels must be a positive integer, not {self.channels!r}")
        if not isinstance(self.in_type, ValueType) or self.in_type.kind not in ("int", "uint"):
            raise LowbitError(f"{self.name}: NormalizeSign takes int or uint inputs, not {self.in_type}")
        if self.offset is not None:
            off = np.asarray(self.offset)
            if off.shape != (self.channels,) or off.dtype.kind not in "iu":
                raise LowbitError(f"{self.name}: offset must be {self.channels} integers, not {off.shape} {off.dtype}")
            off = off.astype(np.int64)
            off.setflags(write=False)
            object.__setattr__(self, "offset", off)
        if not isinstance(self.pe, int) or isinstance(self.pe, bool) or self.pe < 1 \
                or self.channels % self.pe:
            raise LowbitError(f"{self.name}: PE must be a positive divisor of the {self.channels} "
                              f"channels, not {self.pe!r}")
        lo, hi = self.bounds
        if max(-lo, hi, self.channels * max(-self.in_type.min, self.in_type.max)) >= 2 ** 63:
            raise LowbitError(f"{self.name}: {self.channels} channels of {self.in_type} overflow int64",
                              "use fewer channels or narrower accumulators")

    @property
    def in_features(self):
        return self.channels

    out_features = in_features
    out_type = BIPOLAR

    def out_shape(self, shape):
        if shape[-1] != self.channels:
            raise LowbitError(f"{self.name}: expects {self.channels} channels, not a value of shape {tuple(shape)}")
        return tuple(shape)

    @property
    def bounds(self):
        """Exact range of the compared quantity ``n*z_i - sum_j z_j + offset_i``; see
        :func:`normalize_sign_bounds`."""
        lo, hi = normalize_sign_bounds(self.channels, self.in_type.min, self.in_type.max)
        if self.offset is None:
            return lo, hi
        return lo + int(self.offset.min()), hi + int(self.offset.max())

    @property
    def difference_type(self):
        """The narrowest type holding ``n*z_i - sum_j z_j`` exactly."""
        return int_type_for(*self.bounds)

    @property
    def sum_bounds(self):
        """Exact range of ``sum_j z_j``."""
        return self.channels * self.in_type.min, self.channels * self.in_type.max

    def reference(self, z):
        """Golden model: (N, ..., n) int64 accumulators to values in {-1, +1}, normalized over the
        last axis (the channels of each pixel, on a feature map)."""
        z = np.asarray(z, dtype=np.int64)
        if z.ndim < 2 or z.shape[-1] != self.channels:
            raise LowbitError(f"{self.name}: input must have shape (N, ..., {self.channels}), not {z.shape}")
        d = self.channels * z - z.sum(axis=-1, keepdims=True)
        if self.offset is not None:
            d = d + self.offset
        return np.where(d >= 0, 1, -1).astype(np.int64)

    # -- graph.npz ------------------------------------------------------------------------------
    def record(self):
        arrays = {} if self.offset is None else {"offset": self.offset}
        return {"channels": self.channels, "in_type": type_record(self.in_type), "pe": self.pe}, arrays

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, fields["channels"], ValueType(**fields["in_type"]), arrays.get("offset"),
                   fields.get("pe", 1))

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lowering):
        offset = None if self.offset is None else self.offset.tolist()
        return NormalizeSignUnit(in_format, pe=self.pe, offset=offset)

    def entry(self, layer, engine):
        return {"op": self.engine_op, "channels": self.channels, "pe": engine.pe}

    # -- calibration ----------------------------------------------------------------------------
    @classmethod
    def sample_name(cls, spec, inp):
        return f"normalize-{inp}-c{spec.channels}-pe{spec.pe}"

    @classmethod
    def draw(cls, rng, kind, bits, size, channels):
        """Its own channels, PE and accumulator type (the raw sums of a layer)."""
        channels = int(rng.choice([16, 32, 64, 128, 256]))
        pe = int(rng.choice([d for d in divisors(channels) if d <= 64]))
        kind, bits = [("int", int(rng.integers(6, 13))), ("uint", int(rng.integers(5, 11)))][int(rng.integers(2))]
        return dict(height=1, width=1, channels=channels, kind=kind, bits=bits, pe=pe)

    @classmethod
    def sample(cls, spec, seed):
        """With a layer bias per channel, small against the range of C * z."""
        offset = np.random.default_rng(seed).integers(-spec.channels, spec.channels + 1, size=spec.channels)
        in_type = ValueType(spec.kind, spec.bits)
        op = cls("normalize", spec.channels, in_type, offset, spec.pe)
        return sample_engine(Layer((op,), (spec.channels,)), engine_format(in_type, (spec.channels,)))

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def cost_features(cls, entry, family):
        """Both phases select a fold's PE elements from the vector they hold: multiplexers that
        together cost about a LUT per held element bit, whatever the folding. Each PE adds its
        element into the sum (a chain as wide as the sum) and compares C*z - sum + offset: the
        sweep's engines carry per-channel offsets, as biased layers do, and a folded PE selects
        its fold's offset (about log2(2C) bits) and adds it, a constant when C/PE is 1."""
        in_bits = entry["in_format"]["bits"]
        c, pe = entry["channels"], entry["pe"]
        folds = c // pe
        sum_bits = in_bits + math.ceil(math.log2(c)) + 1
        offset_bits = math.ceil(math.log2(2 * c + 1)) + 1
        luts = {"normalize:const": 1.0,
                "normalize:vectors": c * in_bits,
                "normalize:chain": pe * sum_bits,
                "normalize:compare": pe * (sum_bits + (offset_bits if folds > 1 else 0))}
        ffs = {"normalize:const": 1.0, "normalize:vectors": 2 * c * in_bits, "ff_out": c,
               "normalize:sum": 2 * sum_bits}
        return luts, ffs
