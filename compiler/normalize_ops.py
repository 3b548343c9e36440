"""IR ops of binary normalized layers.

A binary normalized layer has {0,1} weights and biases, ``z = W_q x + b_q``, followed by a
per-example normalization without learned parameters. When a sign activation follows, the
normalization reduces to one integer comparison per channel (:class:`NormalizeSign`).
"""

from dataclasses import dataclass

import numpy as np

from lowbit.errors import LowbitError

from .ir import BIPOLAR, ValueType, int_type_for

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
class NormalizeSign:
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

    Raises
    ------
    LowbitError
        On a channel count that is not a positive integer, or an input type that is not an
        integer type.
    """

    name: str
    channels: int
    in_type: ValueType
    offset: np.ndarray = None
    host = False

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
        lo, hi = self.bounds
        if max(-lo, hi, self.channels * max(-self.in_type.min, self.in_type.max)) >= 2 ** 63:
            raise LowbitError(f"{self.name}: {self.channels} channels of {self.in_type} overflow int64",
                              "use fewer channels or narrower accumulators")

    in_features = out_features = property(lambda self: self.channels)
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
