"""PositionAdd: a constant table added to a feature map, one row per position (a transformer's
position embedding, rounded to the residual stream's step), and its engine
(:class:`lowbit.hw.position.PositionAdd`, manifest op ``position_add``): a ROM of the rows and an
adder per element, one beat per cycle."""

from dataclasses import dataclass

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import POSITIVE
from lowbit.core.types import int_type_for
from lowbit.hw.payload import VectorFormat
from lowbit.hw.position import PositionAdd as PositionAddUnit

from ..graph import TYPE_RECORD, Op, ValueType, int_array, type_record

__all__ = ["PositionAdd"]


@dataclass(frozen=True, eq=False)
class PositionAdd(Op):
    """``y[h, w, c] = x[h, w, c] + table[h*W + w, c]``, exact in int64.

    Parameters
    ----------
    name : str
    table : array (positions, C)
        Integers, one row per position in stream order (row-major over the map).
    in_type : ValueType
        Element type of ``x``; the output type is the narrowest integer type of the exact sum.
    """

    name: str
    table: np.ndarray
    in_type: ValueType
    engine_op = "position_add"
    record_fields = {"in_type": TYPE_RECORD}
    record_arrays = ("table",)
    entry_fields = {"positions": POSITIVE, "channels": POSITIVE}

    def __post_init__(self):
        object.__setattr__(self, "table", int_array(f"{self.name}: table", self.table, 2))
        if not isinstance(self.in_type, ValueType) or self.in_type.kind == "bipolar":
            raise LowbitError(f"{self.name}: adds to uint or int values, not {self.in_type!r}")

    @property
    def out_type(self):
        return int_type_for(self.in_type.min + int(self.table.min()), self.in_type.max + int(self.table.max()))

    def out_shape(self, shape):
        shape = tuple(shape)
        positions, channels = self.table.shape
        if len(shape) != 3 or shape[0] * shape[1] != positions or shape[2] != channels:
            raise LowbitError(f"{self.name}: a table of {positions} positions x {channels} channels does not "
                              f"fit a value of shape {shape}")
        return shape

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        return x + self.table.reshape(x.shape[1:])

    def record(self):
        return {"in_type": type_record(self.in_type)}, {"table": self.table}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, arrays["table"], ValueType(**fields["in_type"]))

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lowering):
        # The sums' type for the elements the engine is given, which may be wider than in_type (a
        # matrix engine emits its dot products signed even where none is negative).
        out = int_type_for(in_format.element.min + int(self.table.min()), in_format.element.max + int(self.table.max()))
        return PositionAddUnit(self.table, in_format, VectorFormat(out.kind, out.bits, self.table.shape[1]))

    def entry(self, layer, engine):
        positions, channels = self.table.shape
        return {"op": self.engine_op, "positions": positions, "channels": channels}
