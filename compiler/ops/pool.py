"""MaxPool: the maximum over each k x k window of a feature map, and its engine.

The engine (:class:`lowbit.hw.pool.MaxPool`, manifest op ``maxpool``) shares the window's scan
(:mod:`lowbit.compiler.ops.window`) and reduces each window: an OR for bipolar values, a tree of
compare-and-select for integers.
"""

from dataclasses import dataclass

from lowbit.core.errors import LowbitError
from lowbit.core.schema import NATURAL, POSITIVE
from lowbit.core.types import BIPOLAR, ValueType
from lowbit.hw.pool import MaxPool as MaxPoolUnit

from ..graph import TYPE_RECORD, type_record
from ..lowering import Layer, engine_format, sample_engine
from .window import Windowed, feature_map

__all__ = ["MaxPool"]


@dataclass(frozen=True, eq=False)
class MaxPool(Windowed):
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
    pipeline: int = 0
    pad = 0
    engine_op = "maxpool"
    record_fields = {"channels": POSITIVE, "kernel": POSITIVE, "stride": POSITIVE, "in_type": TYPE_RECORD,
                     "pipeline": NATURAL}
    record_defaults = {"pipeline": 0}
    pad_field = False

    def __post_init__(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel)
        self._check_geometry()

    @property
    def out_channels(self):
        return self.channels

    @property
    def identity(self):
        """A 1x1 pool with stride 1 passes every pixel on."""
        return self.kernel == 1 and self.stride == 1

    def reference(self, x):
        """Golden model: (N, H, W, C) -> (N, OH, OW, C)."""
        x = feature_map(self.name, self.channels, x)
        if not self.in_type.holds(x):
            raise LowbitError(f"{self.name}: input values are not all {self.in_type}")
        return self._windows(x, 0).max(axis=(3, 4))

    # -- graph.npz ------------------------------------------------------------------------------
    def record(self):
        return {"channels": self.channels, "kernel": self.kernel, "stride": self.stride,
                "in_type": type_record(self.in_type), "pipeline": self.pipeline}, {}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, fields["channels"], fields["kernel"], fields["stride"],
                   ValueType(**fields["in_type"]), fields.get("pipeline", 0))

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lowering):
        h, w, c = layer.in_shape
        return MaxPoolUnit(h, w, c, self.kernel, stride=self.stride, kind=in_format.kind,
                           bits=in_format.bits, pipelined=bool(self.pipeline))

    # -- calibration ----------------------------------------------------------------------------
    @classmethod
    def draw(cls, rng, kind, bits, size, channels):
        k = int(rng.choice([2, 2, 3]))
        size -= size % k
        return dict(height=size, width=size, channels=channels, kind=kind, bits=bits, kernel=k, stride=k)

    @classmethod
    def sample(cls, spec, seed):
        in_type = ValueType(spec.kind, spec.bits)
        op = cls("pool", spec.channels, spec.kernel, spec.stride, in_type)
        return sample_engine(Layer((op,), (spec.height, spec.width, spec.channels)),
                             engine_format(in_type, (spec.channels,)))

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def cost_features(cls, entry, family):
        luts, ffs, pixel = cls.scan_features(entry, family)
        in_bits = entry["in_format"]["bits"]
        k = entry["kernel"]
        # Bipolar maximum is an OR; integers need a compare and select per window element.
        # Integers: the LUTs of a b-bit compare and select do not grow evenly with b (synthesis
        # maps some widths far better than others), so each width has its own coefficient.
        kind = "or" if entry["in_format"]["kind"] == "bipolar" else f"compare:{in_bits}"
        luts[f"maxpool:{kind}"] = pixel * (k * k - 1)
        return luts, ffs
