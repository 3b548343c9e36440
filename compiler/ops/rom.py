"""A lone ROM: an engine kind of the calibration sweep, not an op of the graph.

Every engine keeps its weights and thresholds in ROMs (:class:`lowbit.hw.rom.ROM`). The sweep
synthesizes lone ROMs of every depth to learn what a ROM costs on each family: their LUTs are
all structure (:func:`lowbit.hw.fabric.rom_luts`), and they give the table of LUTs per
distinct ROM bit by depth class that every engine's ROMs are priced by.
"""

import numpy as np

from lowbit.core.schema import POSITIVE
from lowbit.hw.fabric import distinct_columns, rom_brams, rom_class, rom_luts
from lowbit.hw.rom import ROM

from ..cost import EngineCost

__all__ = ["Rom", "rom_table"]


class Rom(EngineCost):
    """The lone ROM: its entry ``{"op": "rom", "depth", "width"}`` and its cost."""

    engine_op = "rom"
    entry_fields = {"depth": POSITIVE, "width": POSITIVE}
    priced_by_structure = True

    @classmethod
    def sample(cls, spec, seed):
        """A ROM of random contents."""
        bits = np.random.default_rng(seed).integers(0, 2, size=(spec.depth, spec.width))
        rom = ROM([int("".join(map(str, row)), 2) for row in bits], spec.width)
        return rom, {"op": cls.engine_op, "depth": rom.depth, "width": rom.width,
                     "latency": rom.latency, "cycles_per_item": rom.cycles_per_item}

    @classmethod
    def cost_features(cls, entry, family):
        return {}, {"ff_rom": 0 if rom_brams(entry["depth"], entry["width"], family) else entry["width"]}

    @classmethod
    def structural_luts(cls, entry, family, model):
        return {"rom": rom_luts(entry["depth"], entry["width"], family, model.get("rom_luts_per_bit")),
                "rows": 0, "glue": 0}

    @classmethod
    def brams(cls, entry, family):
        return rom_brams(entry["depth"], entry["width"], family)

    @classmethod
    def summary(cls, entry):
        return {"lane": "rom", "weight_format": "-", "shape": f"{entry['depth']}x{entry['width']}",
                "folding": "-"}

    @classmethod
    def fit(cls, rows, family, model):
        """``rom_luts_per_bit``: the table of LUTs per distinct bit of lone ROMs in logic."""
        return {"rom_luts_per_bit": rom_table([r for r in rows if r["layer"]["op"] == cls.engine_op])}


def rom_table(rows):
    """LUTs per distinct bit of lone ROMs in logic, by depth class, from calibration rows of one
    family."""
    per_class = {}
    for r in rows:
        layer = r["layer"]
        if not r["brams"]:
            per_class.setdefault(str(rom_class(layer["depth"])), []).append(
                r["luts"] / distinct_columns(layer["depth"], layer["width"], r["family"]))
    return {k: sum(v) / len(v) for k, v in sorted(per_class.items(), key=lambda kv: int(kv[0]))}
