"""Stream payload formats, defined once and shared by the hardware, the reference and the testbench.

A payload is a vector of ``count`` elements packed little-endian: element ``j`` occupies bits
``[j*bits, (j+1)*bits)``. Bipolar elements take one bit each (1 = +1, 0 = -1); integer elements are
two's complement (``int``) or plain binary (``uint``).
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from lowbit.core.types import ValueType

__all__ = ["VectorFormat"]


@dataclass(frozen=True)
class VectorFormat:
    """A vector payload: ``count`` elements of ``kind`` ("bipolar", "uint", "int") and ``bits`` each.

    The element type is :class:`lowbit.core.types.ValueType` (``element``), which checks
    ``kind`` and ``bits``.
    """

    kind: str
    bits: int
    count: int

    def __post_init__(self):
        ValueType(self.kind, self.bits)
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"Element count must be a positive integer, not {self.count!r}")

    @property
    def element(self):
        """The element type."""
        return ValueType(self.kind, self.bits)

    def record(self):
        """The format as plain data, as manifests record it."""
        return {"kind": self.kind, "bits": self.bits, "count": self.count}

    @property
    def width(self):
        return self.bits * self.count

    @property
    def shape(self):
        """The Amaranth shape of the payload."""
        if self.kind == "bipolar":
            return unsigned(self.count)
        elem = signed(self.bits) if self.kind == "int" else unsigned(self.bits)
        return data.ArrayLayout(elem, self.count)

    def pack(self, values):
        """Pack an (N, count) integer array into N Python ints."""
        values = np.asarray(values, dtype=np.int64)
        if values.ndim != 2 or values.shape[1] != self.count:
            raise ValueError(f"Values must have shape (N, {self.count}), not {values.shape}")
        if self.kind == "bipolar":
            bits = np.packbits(values == 1, axis=1, bitorder="little")
            return [int.from_bytes(row.tobytes(), "little") for row in bits]
        mask = (1 << self.bits) - 1
        fields = (values & mask).astype(object)
        shifts = [j * self.bits for j in range(self.count)]
        return [sum(int(v) << s for v, s in zip(row, shifts)) for row in fields]

    def unpack(self, words):
        """Unpack Python ints into an (N, count) int64 array."""
        mask = (1 << self.bits) - 1
        out = np.empty((len(words), self.count), dtype=np.int64)
        for n, word in enumerate(words):
            for j in range(self.count):
                v = (word >> (j * self.bits)) & mask
                if self.kind == "bipolar":
                    v = 1 if v else -1
                elif self.kind == "int" and v >> (self.bits - 1):
                    v -= 1 << self.bits
                out[n, j] = v
        return out
