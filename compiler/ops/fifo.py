"""The stream FIFO the compiler puts between two engines: an engine kind, not an op of the graph.

:mod:`lowbit.compiler.lowering` places one where a window's output gaps would starve a slower
engine (:mod:`lowbit.compiler.fifo_depth`); the manifest lists it under ``fifos`` and the
estimator prices it as an entry ``{"op": "fifo", "depth", "bits"}``.
"""

import math

from lowbit.core.schema import POSITIVE
from lowbit.hw.fabric import lutram_luts, mux_luts, ram_brams
from lowbit.hw.fifo import StreamFIFO
from lowbit.hw.payload import VectorFormat

from ..cost import EngineCost

__all__ = ["Fifo"]


class Fifo(EngineCost):
    """The stream FIFO: its engine, its manifest entries and its cost."""

    engine_op = "fifo"
    entry_fields = {"depth": POSITIVE, "bits": POSITIVE}

    @staticmethod
    def engine(fmt, depth, *, pipelined=False):
        """A FIFO of ``depth`` payloads of ``fmt`` (``pipelined``: its input ready a register)."""
        return StreamFIFO(fmt, depth, pipelined=pipelined)

    @staticmethod
    def manifest_entry(after, engine):
        """The manifest's ``fifos`` entry of ``engine``, placed after the layer named ``after``."""
        return {"after": after, "depth": engine.depth, "bits": engine.format.width}

    @classmethod
    def cost_entry(cls, fifo):
        """The estimator's entry of a manifest ``fifos`` entry."""
        return {"op": cls.engine_op, "depth": fifo["depth"], "bits": fifo["bits"]}

    @classmethod
    def sample_name(cls, spec, inp):
        return f"fifo-{inp}-c{spec.channels}-d{spec.depth}"

    @classmethod
    def sample(cls, spec, seed):
        engine = cls.engine(VectorFormat(spec.kind, spec.bits, spec.channels), spec.depth)
        entry = {**cls.cost_entry(cls.manifest_entry(None, engine)),
                 "in_format": engine.in_format.record(), "out_format": engine.out_format.record(),
                 "latency": engine.latency, "cycles_per_item": engine.cycles_per_item}
        return engine, entry

    @classmethod
    def cost_features(cls, entry, family):
        """A memory of depth - 1 words and an output register (amaranth's SyncFIFOBuffered): on
        xc7 the memory is distributed RAM (:meth:`structural_luts`), on ECP5 too (not in its LUT
        count), on iCE40 flip-flops with a read multiplexer until it becomes block RAM."""
        depth, bits = entry["depth"], entry["bits"]
        mem = _memory_bits(entry, family)
        luts = {"fifo:const": 1.0, "fifo:pointers": math.log2(depth + 1), "fifo:mem": mem,
                "fifo:width": bits,
                "fifo:banks": bits * mux_luts(math.ceil((depth - 1) / 16), family) if family == "ecp5" else 0}
        ffs = {"fifo:const": 1.0, "ff_out": bits, "fifo:pointers": math.log2(depth + 1),
               "fifo:mem": mem}
        return luts, ffs

    @classmethod
    def structural_luts(cls, entry, family, model):
        parts = {"rom": 0, "rows": 0, "glue": 0}
        if family == "xilinx" and entry["depth"] > 2:
            parts["glue"] += lutram_luts(entry["depth"] - 1, entry["bits"])
        return parts

    @classmethod
    def brams(cls, entry, family):
        return ram_brams(entry["depth"] - 1, entry["bits"], family) if entry["depth"] > 1 else 0

    @classmethod
    def summary(cls, entry):
        return {"lane": "fifo", "weight_format": "-", "shape": f"{entry['depth']}x{entry['bits']}",
                "folding": "-"}


def _memory_bits(entry, family):
    """Bits of a FIFO's memory that iCE40 keeps in flip-flops (0 elsewhere, or in block RAM)."""
    words = entry["depth"] - 1
    if family != "ice40" or words < 1 or ram_brams(words, entry["bits"], family):
        return 0
    return words * entry["bits"]
