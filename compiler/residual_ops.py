"""The residual add of a skip connection, as one composite IR op.

The graph stays a chain: :class:`Residual` holds the ops of the block's body, and its value is
``body(x) + x``, element by element, exact in integers. The block's input and its body's last
activation share one quantizer scale (or are both bipolar), so the sum is an integer; the
activation after the add is the :class:`~lowbit.compiler.ir.MultiThreshold` that follows the
composite in the chain.

In hardware the composite is a fork, the body's engines, a FIFO on the skip path and an
elementwise adder (:class:`lowbit.hw.residual.ResidualBlock`).
"""

from dataclasses import dataclass, replace

import numpy as np

from lowbit.errors import LowbitError

from .ir import MatMul, ValueType, int_type_for

__all__ = ["Residual", "walk_nodes", "flat_nodes", "map_nodes", "chains"]


def walk_nodes(nodes, shape):
    """``(node, input shape)`` of every op in ``nodes`` and, depth first, in residual bodies."""
    out = []
    for node in nodes:
        out.append((node, tuple(shape)))
        if isinstance(node, Residual):
            out += walk_nodes(node.body, shape)
        shape = tuple(node.out_shape(shape))
    return out


def flat_nodes(nodes):
    """Every op in ``nodes``, a residual followed by the ops of its body (depth first)."""
    out = []
    for node in nodes:
        out.append(node)
        if isinstance(node, Residual):
            out += flat_nodes(node.body)
    return out


def map_nodes(nodes, fn):
    """``nodes`` with ``fn(node)`` in place of every op, inside residual bodies too, in order;
    ``fn`` returns the new op, or None to drop it. Residual blocks themselves are rebuilt."""
    out = []
    for node in nodes:
        if isinstance(node, Residual):
            node = node.with_body(map_nodes(node.body, fn))
        else:
            node = fn(node)
        if node is not None:
            out.append(node)
    return out


def chains(nodes):
    """``nodes`` and every residual body inside them: each a chain of neighbouring ops."""
    out = [tuple(nodes)]
    for node in nodes:
        if isinstance(node, Residual):
            out += chains(node.body)
    return out


def _type_flow(name, nodes, vtype):
    """Check that types flow through ``nodes`` from ``vtype``; return the last output type."""
    for node in nodes:
        want = getattr(node, "in_type", None)
        if want is not None and not (want.min <= vtype.min and vtype.max <= want.max and
                                     (want.kind == "bipolar") == (vtype.kind == "bipolar")):
            raise LowbitError(f"{name}: body op {node.name} expects {want} inputs but receives {vtype}")
        vtype = getattr(node, "out_type", None)
        if vtype is None:
            raise LowbitError(f"{name}: body op {node.name} ({type(node).__name__}) has no integer output type")
    return vtype


@dataclass(frozen=True, eq=False)
class Residual:
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
    host = False

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
        """The body's MatMuls, depth first."""
        return [n for n in flat_nodes(self.body) if isinstance(n, MatMul)]

    def with_body(self, body):
        return replace(self, body=tuple(body))
