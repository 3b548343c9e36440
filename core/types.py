"""The element type of every integer value lowbit carries: IR tensors, stream payloads, activations.

One definition serves the IR (``lowbit.compiler``), the hardware payloads
(``lowbit.hw.payload.VectorFormat``, a vector of these elements) and the activation formats of
the models (``lowbit.core.formats.ActivationFormat``).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ValueType", "BIPOLAR", "KINDS", "int_type_for"]

# bipolar: one bit encodes -1 (0) or +1 (1); uint/int: plain binary or two's complement.
KINDS = ("bipolar", "uint", "int")


@dataclass(frozen=True)
class ValueType:
    """An integer element type: ``bipolar`` (one bit, -1 or +1), ``uint`` or ``int`` of ``bits`` bits.

    Raises
    ------
    ValueError
        On an unknown kind, a width that is not a positive integer, or a bipolar type wider than
        one bit.
    """

    kind: str
    bits: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Kind must be one of 'bipolar', 'uint', 'int', not {self.kind!r}")
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or self.bits < 1:
            raise ValueError(f"Element width must be a positive integer, not {self.bits!r}")
        if self.kind == "bipolar" and self.bits != 1:
            raise ValueError(f"Bipolar elements have 1 bit, not {self.bits}")

    @property
    def min(self):
        """The smallest value: -1 for bipolar."""
        return {"bipolar": -1, "uint": 0, "int": -(1 << (self.bits - 1))}[self.kind]

    @property
    def max(self):
        """The largest value: +1 for bipolar."""
        return {"bipolar": 1, "uint": (1 << self.bits) - 1, "int": (1 << (self.bits - 1)) - 1}[self.kind]

    @property
    def levels(self):
        """Every value of the type, ascending (bipolar: -1 and +1 only)."""
        return (-1, 1) if self.kind == "bipolar" else tuple(range(self.min, self.max + 1))

    def holds(self, values):
        """True if every value in ``values`` is representable (bipolar: exactly -1 or +1)."""
        values = np.asarray(values)
        if self.kind == "bipolar":
            return bool(np.all((values == 1) | (values == -1)))
        return bool(np.all((values >= self.min) & (values <= self.max)))

    def __str__(self):
        return "bipolar" if self.kind == "bipolar" else f"{self.kind}{self.bits}"


BIPOLAR = ValueType("bipolar", 1)


def int_type_for(lo, hi):
    """The narrowest integer type holding every value in [lo, hi]."""
    if lo >= 0:
        return ValueType("uint", max(1, int(hi).bit_length()))
    bits = max(int(hi).bit_length(), int(-lo - 1).bit_length()) + 1
    return ValueType("int", bits)
