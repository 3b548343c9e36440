"""IR ops over feature maps: the sliding window of a convolution, and max pooling.

Feature maps are int64 arrays of shape (N, H, W, C); in hardware they stream one pixel (C
elements) per beat in raster order. A convolution is a :class:`SlidingWindow` followed by a
``MatMul`` whose weight row for output channel o is the kernel flattened in (ky, kx, c) order.
"""

from dataclasses import dataclass

import numpy as np

from lowbit.errors import LowbitError

from .ir import BIPOLAR, ValueType

__all__ = ["SlidingWindow", "MaxPool"]


def _check_int(op, attr, value, minimum):
    what = "a positive integer" if minimum == 1 else "a non-negative integer"
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise LowbitError(f"{op}: {attr} must be {what}, not {value!r}")


def _feature_map(op, channels, x):
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[3] != channels:
        raise LowbitError(f"{op}: input must have shape (N, H, W, {channels}), not {x.shape}")
    if x.dtype.kind not in "iub":
        raise LowbitError(f"{op}: input must be an integer array, not {x.dtype}")
    return x.astype(np.int64)


class _Windowed:
    """Geometry shared by the windowed ops: ``name``, ``channels``, ``kernel``, ``stride``, ``pad``."""

    host = False

    def _check_geometry(self):
        if not isinstance(self.in_type, ValueType):
            raise LowbitError(f"{self.name}: in_type must be a ValueType, not {self.in_type!r}")
        for attr, minimum in (("channels", 1), ("kernel", 1), ("stride", 1), ("pad", 0)):
            _check_int(self.name, attr, getattr(self, attr), minimum)
        if self.pad >= self.kernel:
            raise LowbitError(f"{self.name}: pad must be less than the kernel {self.kernel}, "
                              f"not {self.pad}")

    @property
    def out_type(self):
        return self.in_type

    @property
    def in_channels(self):
        return self.channels

    def out_size(self, h, w):
        """(OH, OW) for an H x W input; ``OH = (H + 2*pad - kernel) // stride + 1``."""
        hp, wp = h + 2 * self.pad, w + 2 * self.pad
        if self.kernel > min(hp, wp):
            raise LowbitError(f"{self.name}: kernel {self.kernel} does not fit the padded "
                              f"{hp}x{wp} input")
        return (hp - self.kernel) // self.stride + 1, (wp - self.kernel) // self.stride + 1

    def out_shape(self, shape):
        """Per-example (H, W, C) in, (OH, OW, out_channels) out."""
        if len(shape) != 3 or shape[2] != self.channels:
            raise LowbitError(f"{self.name}: expects an (H, W, {self.channels}) feature map, "
                              f"not {tuple(shape)}")
        return (*self.out_size(shape[0], shape[1]), self.out_channels)

    def cycles(self, h, w):
        """Cycles per image of the hardware: one per padded position, ``(H + 2*pad) * (W + 2*pad)``."""
        self.out_size(h, w)
        return (h + 2 * self.pad) * (w + 2 * self.pad)

    def _windows(self, x, pad_value):
        """(N, OH, OW, k, k, C): the window of each output position, padding filled in."""
        n, h, w, c = x.shape
        oh, ow = self.out_size(h, w)
        k, s, p = self.kernel, self.stride, self.pad
        xp = np.full((n, h + 2 * p, w + 2 * p, c), pad_value, dtype=np.int64)
        xp[:, p:p + h, p:p + w] = x
        out = np.empty((n, oh, ow, k, k, c), dtype=np.int64)
        for ky in range(k):
            for kx in range(k):
                out[:, :, :, ky, kx] = xp[:, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s]
        return out


@dataclass(frozen=True, eq=False)
class SlidingWindow(_Windowed):
    """The k x k windows of a padded feature map, flattened in (ky, kx, c) order.

    ``y[n, oy, ox, (ky*k + kx)*C + c] = xpad[n, oy*stride + ky, ox*stride + kx, c]``, where
    ``xpad`` is ``x`` with ``pad`` rows and columns of ``pad_value`` on every side.

    Parameters
    ----------
    name : str
        Layer name.
    channels : int
        Input channels C.
    kernel : int
        Window size k.
    stride : int
        Step between windows.
    pad : int
        Padding on each side, less than ``kernel``.
    pad_value : int or None
        Padding element, representable in ``in_type`` (for bipolar: -1 or +1). ``None`` means 0
        for integer types; bipolar inputs need it whenever ``pad > 0``.
    in_type : ValueType
        Element type of the input (and the output).
    """

    name: str
    channels: int
    kernel: int
    stride: int = 1
    pad: int = 0
    pad_value: int = None
    in_type: ValueType = BIPOLAR

    def __post_init__(self):
        self._check_geometry()
        v = self.pad_value
        if v is None:
            if self.in_type.kind == "bipolar" and self.pad:
                raise LowbitError(f"{self.name}: a padded bipolar input needs pad_value -1 or +1")
            return
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not self.in_type.holds(v):
            want = "-1 or +1" if self.in_type.kind == "bipolar" else \
                f"an integer in [{self.in_type.min}, {self.in_type.max}]"
            raise LowbitError(f"{self.name}: pad_value must be {want} for {self.in_type} inputs, "
                              f"not {v!r}")
        object.__setattr__(self, "pad_value", int(v))

    @property
    def out_channels(self):
        return self.kernel * self.kernel * self.channels

    def reference(self, x):
        """Golden model: (N, H, W, C) -> (N, OH, OW, k*k*C)."""
        x = _feature_map(self.name, self.channels, x)
        if not self.in_type.holds(x):
            raise LowbitError(f"{self.name}: input values are not all {self.in_type}")
        win = self._windows(x, 0 if self.pad_value is None else self.pad_value)
        return win.reshape(*win.shape[:3], self.out_channels)


@dataclass(frozen=True, eq=False)
class MaxPool(_Windowed):
    """``y[n, oy, ox, c] = max over the k x k window at (oy*stride, ox*stride)`` of channel c.

    No padding; rows and columns past the last whole window are dropped. For bipolar values the
    max of ±1 values is +1 iff any is +1: with 1 = +1 the hardware ORs the bits.

    Parameters
    ----------
    name : str
        Layer name.
    channels : int
        Channels C, kept.
    kernel : int
        Window size k.
    stride : int or None
        Step between windows; ``None`` means ``kernel``.
    in_type : ValueType
        Element type of the input (and the output).
    """

    name: str
    channels: int
    kernel: int
    stride: int = None
    in_type: ValueType = BIPOLAR
    pad = 0

    def __post_init__(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel)
        self._check_geometry()

    out_channels = property(lambda self: self.channels)

    def reference(self, x):
        """Golden model: (N, H, W, C) -> (N, OH, OW, C)."""
        x = _feature_map(self.name, self.channels, x)
        if not self.in_type.holds(x):
            raise LowbitError(f"{self.name}: input values are not all {self.in_type}")
        return self._windows(x, 0).max(axis=(3, 4))
