"""Flatten: a feature map as one vector, and the engine that collects its pixels.

In hardware the H*W pixel beats of an image are collected into one vector beat
(:class:`lowbit.hw.collect.Collect`, manifest op ``collect``).
"""

from dataclasses import dataclass, replace

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import NATURAL, POSITIVE, list_of
from lowbit.core.types import BIPOLAR, ValueType
from lowbit.hw.collect import Collect

from ..graph import TYPE_RECORD, Op, type_record
from ..lowering import Layer, engine_format, sample_engine

__all__ = ["Flatten"]


@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """A feature map (H, W, C) as one vector in (h, w, c) order, the order pixels stream in."""

    name: str
    in_shape: tuple
    in_type: ValueType = BIPOLAR
    # Nonzero in a pipelined network (lowbit.compiler.passes.set_pipeline): the engine shifts its
    # beats in (lowbit.hw.collect.Collect, ``pipelined``).
    pipeline: int = 0
    engine_op = "collect"
    record_fields = {"in_shape": list_of(POSITIVE, length=3), "in_type": TYPE_RECORD, "pipeline": NATURAL}
    record_defaults = {"pipeline": 0}
    entry_fields = {"in_shape": list_of(POSITIVE, length=3), "pipeline": NATURAL}
    entry_defaults = {"pipeline": 0}  # builds written before the pipelined collect

    def __post_init__(self):
        shape = tuple(int(v) for v in self.in_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise LowbitError(f"{self.name}: in_shape must be (H, W, C) of positive sizes, not {self.in_shape!r}")
        if not isinstance(self.pipeline, int) or isinstance(self.pipeline, bool) or self.pipeline < 0:
            raise LowbitError(f"{self.name}: pipeline must be a non-negative integer, not {self.pipeline!r}")
        object.__setattr__(self, "in_shape", shape)

    @property
    def out_type(self):
        return self.in_type

    @property
    def features(self):
        h, w, c = self.in_shape
        return h * w * c

    def out_shape(self, shape):
        if tuple(shape) != self.in_shape:
            raise LowbitError(f"{self.name}: expects a {self.in_shape} feature map, not {tuple(shape)}")
        return (self.features,)

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        return x.reshape(len(x), -1)

    # -- graph.npz ------------------------------------------------------------------------------
    def with_pipeline(self, pipeline):
        return replace(self, pipeline=pipeline)

    def record(self):
        return {"in_shape": list(self.in_shape), "in_type": type_record(self.in_type), "pipeline": self.pipeline}, {}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, tuple(fields["in_shape"]), ValueType(**fields["in_type"]), fields.get("pipeline", 0))

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lowering):
        h, w, _ = self.in_shape
        return Collect(in_format, h * w, pipelined=bool(self.pipeline))

    def engine_cycles(self, layer, engine):
        """The collect's item is a whole image."""
        return engine.cycles_per_item

    def entry(self, layer, engine):
        return {"op": self.engine_op, "in_shape": list(self.in_shape),
                **({"pipeline": self.pipeline} if self.pipeline else {})}

    # -- calibration ----------------------------------------------------------------------------
    @classmethod
    def sample_name(cls, spec, inp):
        return f"collect-{inp}-{spec.height}x{spec.width}x{spec.channels}"

    @classmethod
    def draw(cls, rng, kind, bits, size, channels):
        side = int(rng.choice([1, 2, 3, 4, 5, 7]))
        return dict(height=side, width=side, channels=channels, kind=kind, bits=bits)

    @classmethod
    def sample(cls, spec, seed):
        in_type = ValueType(spec.kind, spec.bits)
        op = cls("flatten", (spec.height, spec.width, spec.channels), in_type)
        return sample_engine(Layer((op,), op.in_shape), engine_format(in_type, op.in_shape))

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def cost_features(cls, entry, family):
        """Each beat's slice of the vector is written when the beat counter selects it: one enable
        per beat, decoded from the counter (the vector's bits are flip-flops only)."""
        beats = entry["in_shape"][0] * entry["in_shape"][1]
        out_bits = entry["out_format"]["bits"] * entry["out_format"]["count"]
        luts = {"collect:const": 1.0, "collect:beats": beats}
        return luts, {"collect:const": 1.0, "ff_out": out_bits}
