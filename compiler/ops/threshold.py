"""MultiThreshold: each channel's value becomes the number of its thresholds it reaches.

After a MatMul it runs inside the matrix-vector unit (see :mod:`lowbit.compiler.ops.matmul`);
on its own (after a residual add) it is a :class:`lowbit.hw.threshold.MultiThresholdUnit` that
handles every channel in one cycle per beat (manifest op ``threshold``).
"""

from dataclasses import dataclass

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import POSITIVE
from lowbit.core.types import BIPOLAR, ValueType
from lowbit.hw.payload import VectorFormat
from lowbit.hw.threshold import MultiThresholdUnit

from ..cost import xilinx_only
from ..graph import TYPE_RECORD, Op, check_last_axis, int_array, type_record

__all__ = ["MultiThreshold", "THRESHOLD_XILINX"]

# Per-element costs of the standalone threshold engine (PE = C), from Yosys synth_xilinx runs of
# that engine alone (recorded in tests/test_residual.py): its compares cost about this much per
# threshold bit and per channel. Only xc7 was measured.
THRESHOLD_XILINX = {"luts_per_bit": 0.14, "luts_per_channel": 0.47}


@dataclass(frozen=True, eq=False)
class MultiThreshold(Op):
    """``y[n, c] = #{l : x[n, c] >= T[c, l]}``; with one level and a bipolar output, ``+1 if x >= T else -1``;
    with a signed k-bit output the count less ``2**(k-1)`` (the levels of a signed quantizer).

    An inverted channel counts down instead: ``y = L - #{l : x[n, c] >= T[c, l]}`` (bipolar: ``-y``).
    That is how a channel whose activation falls as its dot product rises (a negative BatchNorm
    scale or tile alpha) keeps its weight row as it is: ``#{l : -x >= T_l} = L - #{l : x >= 1 - T_l}``.
    A tiled layer needs this, since its copies share one tile row and cannot negate it per copy.

    Parameters
    ----------
    name : str
        Layer name.
    thresholds : array (C, L)
        Integer thresholds, non-decreasing along L. L = 1 for bipolar outputs, 2**k - 1 for uint k
        and int k.
    in_type : ValueType
        Type of the compared values (the range the thresholds are meaningful in).
    out_type : ValueType
        ``BIPOLAR``, ``uint k`` or ``int k`` (k >= 2).
    invert : array of bool (C,), optional
        The inverted channels; None (or all False) for none.
    """

    name: str
    thresholds: np.ndarray
    in_type: ValueType
    out_type: ValueType = BIPOLAR
    invert: np.ndarray = None
    engine_op = "threshold"
    record_fields = {"in_type": TYPE_RECORD, "out_type": TYPE_RECORD}
    record_arrays = ("thresholds",)
    entry_fields = {"channels": POSITIVE, "levels": POSITIVE, "pe": POSITIVE}

    def __post_init__(self):
        t = int_array(f"{self.name}: thresholds", self.thresholds, 2)
        object.__setattr__(self, "thresholds", t)
        if self.invert is not None:
            inv = np.asarray(self.invert)
            if inv.shape != (t.shape[0],) or inv.dtype != np.bool_:
                raise LowbitError(f"{self.name}: invert must be a bool array of shape ({t.shape[0]},), "
                                  f"not {inv.dtype} {inv.shape}")
            object.__setattr__(self, "invert", inv.copy() if inv.any() else None)
        levels = t.shape[1]
        if self.out_type == BIPOLAR:
            if levels != 1:
                raise LowbitError(f"{self.name}: a bipolar output needs 1 threshold per channel, not {levels}")
        elif self.out_type.kind in ("uint", "int"):
            if self.out_type.kind == "int" and self.out_type.bits < 2:
                raise LowbitError(f"{self.name}: a signed output needs at least 2 bits, not {self.out_type}")
            if levels != 2 ** self.out_type.bits - 1:
                raise LowbitError(f"{self.name}: a {self.out_type} output needs "
                                  f"{2 ** self.out_type.bits - 1} thresholds per channel, not {levels}")
        else:
            raise LowbitError(f"{self.name}: MultiThreshold outputs bipolar, uint or int, not {self.out_type}")
        if levels > 1 and np.any(np.diff(t, axis=1) < 0):
            raise LowbitError(f"{self.name}: thresholds must be non-decreasing along each channel")

    @property
    def channels(self):
        return self.thresholds.shape[0]

    in_features = out_features = channels

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.channels)
        return tuple(shape)

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        count = (x[..., None] >= self.thresholds).sum(axis=-1)
        if self.invert is not None:
            count = np.where(self.invert, self.thresholds.shape[1] - count, count)
        if self.out_type == BIPOLAR:
            return 2 * count - 1
        return count + self.out_type.min if self.out_type.kind == "int" else count

    # -- graph.npz ------------------------------------------------------------------------------
    def record(self):
        arrays = {"thresholds": self.thresholds}
        if self.invert is not None:
            arrays["invert"] = self.invert
        return {"in_type": type_record(self.in_type), "out_type": type_record(self.out_type)}, arrays

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, arrays["thresholds"], ValueType(**fields["in_type"]),
                   ValueType(**fields["out_type"]), arrays.get("invert"))

    # -- hardware: on its own, every channel in one cycle -----------------------------------------
    def engine(self, layer, in_format, lowering):
        out = VectorFormat(self.out_type.kind, self.out_type.bits, self.channels)
        return MultiThresholdUnit(self.thresholds, in_format, out, pe=self.channels, invert=self.invert)

    def entry(self, layer, engine):
        return {"op": self.engine_op, "channels": self.channels,
                "levels": int(self.thresholds.shape[1]), "pe": engine.pe}

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def fixed_cost(cls, entry, family, estimate):
        """Measured constants (:data:`THRESHOLD_XILINX`): the compares per threshold bit and
        channel, and the input and output registers."""
        xilinx_only(entry, family)
        fmt, out = entry["in_format"], entry["out_format"]
        c = THRESHOLD_XILINX
        channels, levels = entry["channels"], entry["levels"]
        luts = channels * (c["luts_per_bit"] * levels * fmt["bits"] + c["luts_per_channel"])
        ffs = channels * fmt["bits"] + 2 * out["bits"] * out["count"]
        return {"luts": int(round(luts)), "ffs": int(ffs), "brams": 0, "dsps": 0}, []
