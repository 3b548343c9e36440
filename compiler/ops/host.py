"""The ops that run on the host after the hardware: the last layer's affine map, and the argmax.

The hardware emits the last layer's integer accumulators; the manifest lists these ops
(:meth:`host_entry`) for the host to apply.
"""

from dataclasses import dataclass

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import POSITIVE

from ..graph import Op, check_last_axis

__all__ = ["HostAffine", "ArgMax"]


@dataclass(frozen=True, eq=False)
class HostAffine(Op):
    """The affine map the host applies to the last layer's integer accumulators: ``scale * x + shift``.

    Float, by nature: it reproduces the model's final BatchNorm in float64. It runs on the host.
    """

    name: str
    scale: np.ndarray
    shift: np.ndarray
    host = True
    record_arrays = ("scale", "shift")

    def __post_init__(self):
        for attr in ("scale", "shift"):
            v = np.asarray(getattr(self, attr), dtype=np.float64)
            if v.ndim != 1 or not np.all(np.isfinite(v)):
                raise LowbitError(f"{self.name}: {attr} must be a finite 1-D array")
            v.setflags(write=False)
            object.__setattr__(self, attr, v)
        if self.scale.shape != self.shift.shape:
            raise LowbitError(f"{self.name}: scale and shift lengths differ")

    @property
    def channels(self):
        return len(self.scale)

    in_features = out_features = channels

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.channels)
        return tuple(shape)

    def reference(self, x):
        return np.asarray(x, dtype=np.float64) * self.scale + self.shift

    def record(self):
        return {}, {"scale": self.scale, "shift": self.shift}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, arrays["scale"], arrays["shift"])

    def host_entry(self):
        return {"op": "affine", "name": self.name, "scale": self.scale.tolist(), "shift": self.shift.tolist()}


@dataclass(frozen=True, eq=False)
class ArgMax(Op):
    """Index of the largest value (first one on ties, like numpy and torch)."""

    name: str
    channels: int
    host = True
    out_features = 1
    record_fields = {"channels": POSITIVE}

    @property
    def in_features(self):
        return self.channels

    def out_shape(self, shape):
        if len(shape) != 1:
            raise LowbitError(f"{self.name}: takes a vector, not a value of shape {tuple(shape)}")
        check_last_axis(self.name, shape, self.channels)
        return (1,)

    def reference(self, x):
        return np.asarray(x).argmax(axis=1)[:, None]

    def record(self):
        return {"channels": self.channels}, {}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, fields["channels"])

    def host_entry(self):
        return {"op": "argmax", "name": self.name}
