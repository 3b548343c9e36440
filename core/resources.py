"""The resources a design takes on an FPGA, or a device offers: one record for all of lowbit.

Synthesis results (``lowbit.boards.synth``), estimates (``lowbit.boards.estimate``), board
capacities (``lowbit.boards.boards``) and the reports built from them count the same four
things, in the units of the FPGA family (LUT4 or LUT6, block RAMs as the family's primitive or
RAMB18 equivalents on xc7).
"""

from dataclasses import asdict, dataclass, fields

__all__ = ["Resources", "RESOURCE_KINDS"]

RESOURCE_KINDS = ("luts", "ffs", "brams", "dsps")


@dataclass(frozen=True)
class Resources:
    """LUTs, flip-flops, block RAMs and DSP blocks."""

    luts: int = 0
    ffs: int = 0
    brams: int = 0
    dsps: int = 0

    @classmethod
    def of(cls, counts):
        """The resources of a dict (or record) that holds the four counts among other fields."""
        get = counts.get if isinstance(counts, dict) else lambda k: getattr(counts, k)
        return cls(*(get(k) for k in RESOURCE_KINDS))

    @classmethod
    def total(cls, items):
        """The sum of ``items`` (Resources, or dicts holding the four counts)."""
        total = cls()
        for item in items:
            total = total + cls.of(item)
        return total

    def __add__(self, other):
        return Resources(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self):
        return asdict(self)

    def over(self, capacity):
        """``{resource: amount over}`` for each resource beyond ``capacity``."""
        return {k: getattr(self, k) - getattr(capacity, k) for k in RESOURCE_KINDS
                if getattr(self, k) > getattr(capacity, k)}

    def fits(self, capacity):
        """Whether every resource is within ``capacity``."""
        return not self.over(capacity)

    def utilization(self, capacity):
        """``{resource: fraction of capacity}`` for the resources the device has."""
        return {k: getattr(self, k) / getattr(capacity, k) for k in RESOURCE_KINDS if getattr(capacity, k)}
