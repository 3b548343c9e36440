"""The residual add of a skip connection, as one composite op, and its engine.

The graph stays a chain: :class:`Residual` holds the ops of the block's body, and its value is
``body(x) + x``, element by element, exact in integers. The block's input and its body's last
activation share one quantizer scale (or are both bipolar), so the sum is an integer; the
activation after the add is the :class:`~lowbit.compiler.ops.threshold.MultiThreshold` that
follows the composite in the chain.

In hardware the composite is a fork, the body's engines, a FIFO on the skip path and an
elementwise adder (:class:`lowbit.hw.residual.ResidualBlock`, manifest op ``residual``).
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.resources import Resources
from lowbit.core.schema import DICT, POSITIVE, TEXT, list_of
from lowbit.core.types import ValueType, int_type_for
from lowbit.hw.fabric import lutram_luts
from lowbit.hw.residual import ResidualBlock

from ..cost import xilinx_only
from ..graph import TYPE_RECORD, Op, accepts, flat_nodes, type_record
from ..lowering import body_layers, compute_engines, engine_cycles, fifo_engines, layer_entry

__all__ = ["Residual", "RESIDUAL_XILINX"]

# Costs of the engines a residual block adds (hw/residual.py), from Yosys synth_xilinx runs of
# those engines alone (recorded in tests/test_residual.py): the adder is one LUT per sum bit (a
# ripple adder bit, as for level-table products) plus the FIFO's control; registers are the
# fork's beat, the skip FIFO's output register and the adder's sum; the skip FIFO's and the
# body FIFOs' memories are distributed RAM (:func:`lowbit.hw.fabric.lutram_luts`). Only xc7 was
# measured.
RESIDUAL_XILINX = {"control_luts": 8}


def _type_flow(name, nodes, vtype):
    """Check that types flow through ``nodes`` from ``vtype``; return the last output type."""
    for node in nodes:
        want = getattr(node, "in_type", None)
        if want is not None and not accepts(want, vtype):
            raise LowbitError(f"{name}: body op {node.name} expects {want} inputs but receives {vtype}")
        vtype = getattr(node, "out_type", None)
        if vtype is None:
            raise LowbitError(f"{name}: body op {node.name} ({type(node).__name__}) has no integer output type")
    return vtype


@dataclass(frozen=True, eq=False)
class Residual(Op):
    """``y = body(x) + x``, elementwise and exact in int64 (bipolar values count as -1 and +1).

    Parameters
    ----------
    name : str
        Block name.
    body : tuple
        The ops of the block's body, in order; hardware ops that keep the shape of the value
        (e.g. ``MatMul MultiThreshold``, or ``SlidingWindow MatMul MultiThreshold`` for a
        "same" convolution).
    in_type : ValueType
        Element type of the block input ``x`` (and of the body's input).

    The output type is the narrowest integer type holding ``[min_b + min_x, max_b + max_x]``,
    the exact bounds of the sum of the body's output type and ``in_type``.
    """

    name: str
    body: tuple
    in_type: ValueType
    engine_op = "residual"
    record_fields = {"body": POSITIVE, "in_type": TYPE_RECORD}
    # The body's entries are checked as layers of the manifest (lowbit.compiler.build).
    entry_fields = {"skip_depth": POSITIVE, "in_shape": list_of(POSITIVE, least=1), "body_kind": TEXT,
                    "body_fifos": list_of(POSITIVE), "body": list_of(DICT, least=1)}

    def __post_init__(self):
        body = tuple(self.body)
        object.__setattr__(self, "body", body)
        if not body:
            raise LowbitError(f"{self.name}: a residual block needs at least one body op")
        if not isinstance(self.in_type, ValueType):
            raise LowbitError(f"{self.name}: in_type must be a ValueType, not {self.in_type!r}")
        for node in body:
            if getattr(node, "host", True):
                raise LowbitError(f"{self.name}: body op {getattr(node, 'name', node)!r} is not a hardware op")
        object.__setattr__(self, "_body_type", _type_flow(self.name, body, self.in_type))

    @property
    def body_type(self):
        """Element type of the body's output."""
        return self._body_type

    @property
    def out_type(self):
        b, x = self._body_type, self.in_type
        return int_type_for(b.min + x.min, b.max + x.max)

    def body_shape(self, shape):
        """Shape of the body's output for a block input of ``shape``."""
        for node in self.body:
            shape = tuple(node.out_shape(shape))
        return shape

    def out_shape(self, shape):
        out = self.body_shape(shape)
        if out != tuple(shape):
            raise LowbitError(f"{self.name}: the body maps a value of shape {tuple(shape)} to "
                              f"{out}; a residual add needs both the same",
                              "put skip connections only around layers that keep the width "
                              "(and, for convolutions, the size: stride 1, padding (kernel-1)/2)")
        return out

    def reference(self, x):
        """Golden model: ``body(x) + x`` in int64 (bipolar elements are already -1/+1)."""
        x = np.asarray(x, dtype=np.int64)
        h = x
        for node in self.body:
            h = node.reference(h)
        if h.shape != x.shape:
            raise LowbitError(f"{self.name}: the body maps shape {x.shape[1:]} to {h.shape[1:]}")
        return h + x

    def matmuls(self):
        """The body's folded ops, depth first."""
        return [n for n in flat_nodes(self.body) if n.foldable]

    def inner_ops(self):
        return self.body

    def with_inner_ops(self, ops):
        return replace(self, body=tuple(ops))

    # -- graph.npz: the block's entry, then its body's ------------------------------------------
    def record(self):
        return {"body": len(self.body), "in_type": type_record(self.in_type)}, {}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, body, ValueType(**fields["in_type"]))

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lower_body):
        return ResidualBlock(lower_body(body_layers(layer), in_format))

    def engine_cycles(self, layer, engine):
        """The slowest body engine's (the fork and the adder take a beat a cycle)."""
        body = compute_engines(engine.body)
        return max(layer.vectors, *(engine_cycles(l, e) for l, e in zip(body_layers(layer), body)))

    def entry(self, layer, engine):
        body = compute_engines(engine.body)
        return {"op": self.engine_op, "skip_depth": engine.skip_depth, "in_shape": list(layer.in_shape),
                "body_kind": body[-1].out_format.kind if body else engine.in_format.kind,
                "body_fifos": [e.depth for e in fifo_engines(engine.body)],
                "body": [layer_entry(l, e) for l, e in zip(body_layers(layer), body)]}

    # -- cost: the body's engines, plus the fork, the skip FIFO and the adder --------------------
    @classmethod
    def fixed_cost(cls, entry, family, estimate):
        xilinx_only(entry, family)
        parts = [estimate(e) for e in entry["body"]]
        fmt = entry["in_format"]
        width, depth = fmt["bits"] * fmt["count"], entry["skip_depth"]
        sum_bits = _sum_bits(entry)
        luts = sum_bits + RESIDUAL_XILINX["control_luts"]
        ffs = 2 * width + sum_bits + 2 * math.ceil(math.log2(depth + 1))
        for fifo_depth in [depth, *entry.get("body_fifos", [])]:
            luts += lutram_luts(fifo_depth - 1, width) if fifo_depth > 2 else 0
        for fifo_depth in entry.get("body_fifos", []):
            ffs += width + 2 * math.ceil(math.log2(fifo_depth + 1))
        body = Resources.total(parts)
        return {"luts": int(round(luts + body.luts)), "ffs": int(round(ffs + body.ffs)),
                "brams": body.brams, "dsps": body.dsps}, parts


def _sum_bits(entry):
    """Bits of the adder's sum that are not constant: a sum of two ±1 is even, its low bit 0."""
    out, fmt = entry["out_format"], entry["in_format"]
    bits = out["bits"] - (1 if fmt["kind"] == "bipolar" and entry.get("body_kind") == "bipolar" else 0)
    return bits * out["count"]
