"""The IR: the graph, and every op kind registered in one place.

Each op kind is one module of :mod:`lowbit.compiler.ops` that owns everything about it: its
attribute checks, numpy int64 reference and types; its record in ``graph.npz``; its engine,
cycles and manifest entry; its cost features for the estimator. Code generation
(:mod:`lowbit.compiler.codegen`), serialization (:mod:`lowbit.compiler.serialize`), the
estimator and the calibration (``lowbit.boards``) find kinds here and never ask which kind an op
is. Adding an op is one module and one line in :data:`OPS` (see the README's Architecture).
"""

from lowbit.core.errors import LowbitError

from .graph import (BIPOLAR, Folding, Graph, Op, ValueType, chains, check_folding, check_last_axis,
                    divisors, flat_nodes, int_type_for, map_nodes, walk_nodes)
from .ops.attention import Attention
from .ops.fifo import Fifo
from .ops.flatten import Flatten
from .ops.host import ArgMax, HostAffine
from .ops.matmul import WEIGHT_MEMORIES, MatMul
from .ops.normalize import NormalizeSign
from .ops.normalize_levels import NormalizeLevels
from .ops.pool import MaxPool
from .ops.position import PositionAdd
from .ops.residual import Residual
from .ops.rom import Rom
from .ops.threshold import MultiThreshold
from .ops.window import SlidingWindow

__all__ = ["ValueType", "BIPOLAR", "int_type_for", "Folding", "Op", "Graph", "divisors",
           "check_last_axis", "check_folding", "walk_nodes", "flat_nodes", "map_nodes", "chains",
           "MatMul", "WEIGHT_MEMORIES", "MultiThreshold", "SlidingWindow", "MaxPool", "Flatten",
           "NormalizeSign", "Residual", "HostAffine", "ArgMax", "PositionAdd", "NormalizeLevels", "Attention",
           "OPS", "ENGINE_KINDS", "op_kind", "engine_kind"]

# Every op kind of the graph, by the name graph.npz records it under.
OPS = {kind.__name__: kind for kind in (
    MatMul, MultiThreshold, SlidingWindow, MaxPool, Flatten, NormalizeSign, Residual, HostAffine, ArgMax,
    PositionAdd, NormalizeLevels, Attention,
)}

# Every kind of engine the estimator prices, by the "op" of its manifest entries: the ops that
# have an engine, the stream FIFO between engines, and the calibration's lone ROM. The lone ROM
# comes first: its fitted ROM table prices every other engine's ROMs.
ENGINE_KINDS = {kind.engine_op: kind for kind in (Rom, *OPS.values(), Fifo) if kind.engine_op}


def op_kind(name):
    """The op class recorded as ``name``."""
    try:
        return OPS[name]
    except KeyError:
        raise LowbitError(f"unknown op {name!r}", f"ops: {', '.join(OPS)}") from None


def engine_kind(op):
    """The engine kind of manifest entries whose ``op`` is ``op`` (entries without one are
    matrix-vector units)."""
    try:
        return ENGINE_KINDS[op or MatMul.engine_op]
    except KeyError:
        raise LowbitError(f"the estimator has no model for layer op {op!r}",
                          f"ops: {', '.join(ENGINE_KINDS)}") from None
