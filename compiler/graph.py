"""The IR's core: foldings, the base of every op kind, walks over ops with bodies, and the graph.

The IR is the contract between training and hardware. Values are integers with a declared type
(:class:`lowbit.core.types.ValueType`). Every op checks its attributes when it is built and has a
pure numpy reference that is the golden model for both the PyTorch export and the generated
hardware. Each op kind lives in one module of :mod:`lowbit.compiler.ops` and is registered in
:mod:`lowbit.compiler.ir`; nothing here knows any kind by name.

Ops that end with the ``host`` flag run on the host after the hardware (the last layer's affine map
and the argmax); everything before them becomes hardware.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import POSITIVE, Record, one_of
from lowbit.core.types import BIPOLAR, KINDS, ValueType, int_type_for

from .cost import EngineCost

__all__ = ["ValueType", "BIPOLAR", "int_type_for", "Folding", "Op", "Graph", "divisors", "int_array",
           "type_record", "TYPE_RECORD", "check_last_axis", "check_folding", "accepts", "walk_nodes", "flat_nodes", "map_nodes",
           "chains"]


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class Folding:
    """How a matrix-vector op is time-multiplexed: PE output rows and SIMD input columns per cycle."""

    pe: int
    simd: int

    def __post_init__(self):
        for name in ("pe", "simd"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name.upper()} must be a positive integer, not {v!r}")

    def __str__(self):
        return f"{self.pe}x{self.simd}"


_INT64 = np.iinfo(np.int64)


def int_array(name, value, ndim):
    """``value`` as a read-only int64 array of ``ndim`` dimensions; a clear error for float values
    that are not integers, NaN or infinite values, or a non-numeric dtype."""
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise LowbitError(f"{name} must be a {ndim}-D array, not shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise LowbitError(f"{name} contains NaN or infinite values",
                              "check the model for diverged parameters")
        if not np.all(arr == np.round(arr)):
            raise LowbitError(f"{name} must hold integers")
    elif arr.dtype.kind not in "iub":
        raise LowbitError(f"{name} must be an integer array, not {arr.dtype}")
    # int64 is the IR's arithmetic: a value beyond it would wrap, silently.
    if arr.size and ((arr.dtype.kind == "u" and arr.max() > _INT64.max)
                     or (arr.dtype.kind == "f" and np.abs(arr).max() >= 2.0 ** 63)):
        worst = arr.max() if arr.dtype.kind == "u" else arr.flat[np.abs(arr).argmax()]
        raise LowbitError(f"{name} holds {worst}, beyond the int64 range of the IR",
                          "scale the values into int64")
    arr = arr.astype(np.int64)
    arr.setflags(write=False)
    return arr


def type_record(t):
    """A ValueType as the JSON fields it is saved as."""
    return {"kind": t.kind, "bits": t.bits}


# A ValueType's record, for the schemas of the files that hold one.
TYPE_RECORD = Record({"kind": one_of(*KINDS), "bits": POSITIVE})


def check_last_axis(name, shape, features):
    """Raise unless a value of per-example ``shape`` has ``features`` elements on its last axis."""
    if shape[-1] != features:
        raise LowbitError(f"{name}: expects {features} inputs but receives {shape[-1]} "
                          f"(a value of shape {tuple(shape)})")


def check_folding(name, mh, mw, folding):
    """Raise a clear error unless PE divides MH and SIMD divides MW."""
    if mh % folding.pe:
        raise LowbitError(
            f"{name}: PE={folding.pe} does not divide the {mh} output rows (MH)",
            f"choose PE from {divisors(mh)}")
    if mw % folding.simd:
        raise LowbitError(
            f"{name}: SIMD={folding.simd} does not divide the {mw} input columns (MW)",
            f"choose SIMD from {divisors(mw)}")


def accepts(want, vtype):
    """Whether an op that expects ``want`` inputs takes values of ``vtype``: the range fits, and
    bipolar goes only to bipolar."""
    return (want.min <= vtype.min and vtype.max <= want.max
            and (want.kind == "bipolar") == (vtype.kind == "bipolar"))


class Op(EngineCost):
    """The base of every op kind; each kind is a frozen dataclass with a ``name`` in one module of
    :mod:`lowbit.compiler.ops`, which owns all of it:

    - the IR: attribute checks on construction (``LowbitError`` naming the op), ``out_shape``,
      ``out_type`` (and ``in_type`` where it checks its input) and ``reference``, the numpy int64
      golden model;
    - its record in ``graph.npz`` (:meth:`record`, :meth:`from_record`);
    - for hardware ops, its engine: :meth:`engine`, :meth:`engine_cycles`, :meth:`entry` (the
      manifest),
      and the estimator's cost features (:class:`~lowbit.compiler.cost.EngineCost`);
    - for host ops, :meth:`host_entry`.
    """

    host = False      # runs on the host, after the hardware

    def inner_ops(self):
        """The ops inside this one, which walks over the graph visit too (a residual block's body)."""
        return ()

    @property
    def identity(self):
        """Whether the op changes nothing, so a pass may drop it."""
        return False

    # -- graph.npz ------------------------------------------------------------------------------
    # The JSON fields of the op's record (lowbit.core.schema: name -> schema) and the arrays it
    # must have, checked before ``from_record`` reads them.
    record_fields = {}
    record_defaults = {}  # fields that older files may lack, and the value they mean
    record_arrays = ()

    def record(self):
        """``(fields, arrays)``: the JSON fields and the named arrays that save this op."""
        raise NotImplementedError

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        """The op saved as ``fields`` and ``arrays`` (``body``: the ops of its body, if any)."""
        raise NotImplementedError

    # -- hardware -------------------------------------------------------------------------------
    def with_cycle_target(self, target_cycles, vectors):
        """This op as the folding searches leave it for ``target_cycles`` per inference, when it
        handles ``vectors`` vectors per inference: the ops with a parallelism of their own that is
        not a MatMul's folding (a normalization's PE) choose it here."""
        return self

    def fuses(self, nxt):
        """Whether the op after this one runs inside this op's engine (a MatMul's thresholds)."""
        return False

    def engine(self, layer, in_format, lowering):
        """The Amaranth component of ``layer`` (headed by this op) for inputs of ``in_format``;
        ``lowering`` (:class:`lowbit.compiler.lowering.Lowering`) lowers a body."""
        raise LowbitError(f"{self.name}: a {type(self).__name__} here has no hardware engine yet",
                          "supported hardware ops: MatMul [+ MultiThreshold], SlidingWindow, MaxPool, "
                          "Flatten, NormalizeSign, NormalizeLevels, PositionAdd, Residual, MultiThreshold")

    def engine_cycles(self, layer, engine):
        """Cycles per inference of ``engine``: its cycles per item times the items of an image,
        one per input vector (beat) unless the engine takes a whole image as its item."""
        return engine.cycles_per_item * layer.vectors

    def entry(self, layer, engine):
        """The op's own fields of its manifest entry (beside the common ones of
        :func:`lowbit.compiler.lowering.layer_entry`), with its ``op`` name."""
        return {"op": self.engine_op}

    def host_entry(self):
        """The manifest entry of a host op: what the host applies after the hardware."""
        raise NotImplementedError


def walk_nodes(nodes, shape):
    """``(node, input shape)`` of every op in ``nodes`` and, depth first, of their inner ops."""
    out = []
    for node in nodes:
        out.append((node, tuple(shape)))
        out += walk_nodes(node.inner_ops(), shape)
        shape = tuple(node.out_shape(shape))
    return out


def flat_nodes(nodes):
    """Every op in ``nodes``, an op with inner ops followed by them (depth first)."""
    out = []
    for node in nodes:
        out.append(node)
        out += flat_nodes(node.inner_ops())
    return out


def map_nodes(nodes, fn):
    """``nodes`` with ``fn(node)`` in place of every op, inner ops too, in order; ``fn`` returns
    the new op, or None to drop it. Ops with inner ops are rebuilt around the new ones."""
    out = []
    for node in nodes:
        inner = node.inner_ops()
        node = node.with_inner_ops(map_nodes(inner, fn)) if inner else fn(node)
        if node is not None:
            out.append(node)
    return out


def chains(nodes):
    """``nodes`` and the inner ops of every op in them: each a chain of neighbouring ops."""
    out = [tuple(nodes)]
    for node in nodes:
        if node.inner_ops():
            out += chains(node.inner_ops())
    return out


@dataclass(frozen=True, eq=False)
class Graph:
    """A chain of ops from an encoded input to the prediction.

    Values are per-example arrays: a vector (F,) or a feature map (H, W, C), channel last, the
    order in which hardware streams it (one pixel of C elements per beat).

    Parameters
    ----------
    input_type : ValueType
        Element type of the encoded input.
    input_shape : int or tuple
        Per-example shape of the encoded input: F for a vector, (H, W, C) for a feature map.
    nodes : tuple
        The ops, in order. Hardware ops come first, host ops (``op.host``) last.
    meta : dict
        Free-form metadata (model formats, input encoding, export report).
    """

    input_type: ValueType
    input_shape: tuple
    nodes: tuple
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = (self.input_shape,) if isinstance(self.input_shape, (int, np.integer)) else self.input_shape
        shape = tuple(int(v) for v in shape)
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise LowbitError(f"the input shape must be (F,) or (H, W, C) of positive sizes, not {shape}")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "nodes", tuple(self.nodes))
        self.check()

    @property
    def input_features(self):
        """Elements per example of the encoded input."""
        return int(np.prod(self.input_shape))

    def shapes(self):
        """Per-example input shape of every node, then the output shape: ``len(nodes) + 1`` entries."""
        shapes, shape = [self.input_shape], self.input_shape
        for node in self.nodes:
            shape = tuple(node.out_shape(shape))
            shapes.append(shape)
        return shapes

    def check(self):
        """Validate the chain: shapes match, types flow, host ops come last, names are unique."""
        names = [n.name for n in flat_nodes(self.nodes)]
        if len(set(names)) != len(names):
            raise LowbitError(f"op names must be unique: {names}")
        vtype, seen_host = self.input_type, False
        self.shapes()
        for node in self.nodes:
            want = getattr(node, "in_type", None)
            if want is not None and vtype is not None and not accepts(want, vtype):
                raise LowbitError(f"{node.name}: expects {want} inputs but receives {vtype}")
            if seen_host and not node.host:
                raise LowbitError(f"{node.name}: hardware op after a host op")
            seen_host |= node.host
            vtype = getattr(node, "out_type", None)
        return self

    @property
    def hardware_nodes(self):
        return tuple(n for n in self.nodes if not n.host)

    @property
    def host_nodes(self):
        return tuple(n for n in self.nodes if n.host)

    def matmuls(self):
        """Every op with a folding (the MatMuls) in order, those inside bodies included."""
        return [n for n in flat_nodes(self.nodes) if n.foldable]

    def replace_nodes(self, nodes):
        return replace(self, nodes=tuple(nodes))

    def replace_meta(self, meta):
        return replace(self, meta=dict(meta))

    def execute(self, x, *, upto=None):
        """Run the references on encoded inputs (N, *input_shape); returns every node's output.

        Inputs given flat, (N, input_features), are reshaped to the input shape.
        """
        x = np.asarray(x)
        x = int_array("input", x, max(x.ndim, 1))
        if x.ndim == 2 and x.shape[1] == self.input_features:
            x = x.reshape(len(x), *self.input_shape)
        if x.shape[1:] != self.input_shape:
            raise LowbitError(f"input must have shape (N, {', '.join(map(str, self.input_shape))}), "
                              f"not {x.shape}")
        if not self.input_type.holds(x):
            raise LowbitError(f"input values are not all {self.input_type}")
        outs = []
        for node in self.nodes:
            x = node.reference(x)
            outs.append(x)
            if upto is not None and node.name == upto:
                break
        return outs

    def hardware_output(self, x):
        """The integer output of the last hardware op: what the generated top must emit."""
        hw = self.hardware_nodes
        return self.execute(x, upto=hw[-1].name)[len(hw) - 1]

    def predict(self, x):
        return self.execute(x)[-1][:, 0]

    def positions(self):
        """Per folded op: the vectors it multiplies per example (1, or OH*OW on a feature map)."""
        return {n.name: int(np.prod(s[:-1])) for n, s in walk_nodes(self.nodes, self.input_shape)
                if n.foldable}

    def cycles_per_inference(self):
        """Cycles per example of the slowest folded engine (every vector of a feature map)."""
        pos = self.positions()
        return max(m.cycles() * pos[m.name] for m in self.matmuls())
