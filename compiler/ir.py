"""The IR: a chain of immutable integer ops, each with a numpy int64 reference.

The IR is the contract between training and hardware. Values are integers with a declared type:
``bipolar`` (one bit encodes -1/+1), or unsigned/signed k-bit. Every op checks its attributes when it
is built, knows its exact cycle count under a folding, and has a pure numpy reference that is the
golden model for both the PyTorch export and the generated hardware.

Ops that end with the ``host`` flag run on the host after the hardware (the last layer's affine map
and the argmax); everything before them becomes hardware.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from lowbit.bounds import dot_bounds
from lowbit.errors import LowbitError
from lowbit.formats import weight_format

__all__ = ["ValueType", "BIPOLAR", "int_type_for", "Folding", "MatMul", "MultiThreshold",
           "HostAffine", "ArgMax", "Flatten", "Graph", "divisors", "check_last_axis"]


@dataclass(frozen=True)
class ValueType:
    """The element type of an IR tensor: ``bipolar``, ``uint`` or ``int`` with a bit width."""

    kind: str
    bits: int

    def __post_init__(self):
        if self.kind not in ("bipolar", "uint", "int"):
            raise ValueError(f"Kind must be one of 'bipolar', 'uint', 'int', not {self.kind!r}")
        if not isinstance(self.bits, int) or self.bits < 1:
            raise ValueError(f"Bits must be a positive integer, not {self.bits!r}")
        if self.kind == "bipolar" and self.bits != 1:
            raise ValueError(f"A bipolar type has 1 bit, not {self.bits}")

    @property
    def min(self):
        return {"bipolar": -1, "uint": 0, "int": -(1 << (self.bits - 1))}[self.kind]

    @property
    def max(self):
        return {"bipolar": 1, "uint": (1 << self.bits) - 1, "int": (1 << (self.bits - 1)) - 1}[self.kind]

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


def _int_array(name, value, ndim):
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
    arr = arr.astype(np.int64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class MatMul:
    """``y[n, h] = sum_w x[n, w] * W[h, w]``, exact in int64.

    Parameters
    ----------
    name : str
        Layer name, carried to the hardware and the manifest.
    weights : array (MH, MW)
        Integer weight levels of ``weight_format`` (for bipolar: -1 or +1).
    weight_format : str
        A name from the formats registry.
    in_type : ValueType
        Input element type.
    folding : Folding, optional
        PE x SIMD; PE must divide MH and SIMD must divide MW.
    copies : int
        Tiled weights: the rows are ``copies`` repeats of one tile of MH/copies rows, so the
        hardware computes each tile row's dot product once (Tiled Bit Networks' compute-once).
    weight_memory : {"auto", "block", "lut", "const"}
        Where the hardware keeps the weights (``lowbit.compiler.passes.choose_memories``).

    On a feature map (N, H, W, MW) the op applies to every pixel: a convolution after a
    :class:`~lowbit.compiler.window_ops.SlidingWindow`.
    """

    name: str
    weights: np.ndarray
    weight_format: str = "bipolar"
    in_type: ValueType = BIPOLAR
    folding: Folding = None
    copies: int = 1
    weight_memory: str = "auto"
    host = False

    def __post_init__(self):
        object.__setattr__(self, "weights", _int_array(f"{self.name}: weights", self.weights, 2))
        fmt = weight_format(self.weight_format)
        bad = ~np.isin(self.weights, fmt.levels)
        if bad.any():
            h, w = np.argwhere(bad)[0]
            raise LowbitError(
                f"{self.name}: weight [{h}, {w}] = {self.weights[h, w]} is not a level of format "
                f"{fmt.name!r} {list(fmt.levels)}")
        if self.weight_memory not in WEIGHT_MEMORIES:
            raise LowbitError(f"{self.name}: weight memory must be one of {', '.join(WEIGHT_MEMORIES)}, "
                              f"not {self.weight_memory!r}")
        if not isinstance(self.copies, int) or isinstance(self.copies, bool) or self.copies < 1 \
                or self.mh % self.copies:
            raise LowbitError(f"{self.name}: copies must be a positive divisor of the {self.mh} rows, "
                              f"not {self.copies!r}")
        if self.copies > 1:
            tile = self.weights[:self.mh // self.copies]
            if not np.array_equal(self.weights, np.tile(tile, (self.copies, 1))):
                raise LowbitError(f"{self.name}: the rows are not {self.copies} copies of one tile")
        if self.folding is not None:
            check_folding(self.name, self.mh // self.copies, self.mw, self.folding)
        if self.weight_memory == "const" and self.folding is not None and self.cycles() != 1:
            raise LowbitError(f"{self.name}: constant weights need a fully unrolled folding, not {self.folding}",
                              f"use PE={self.mh // self.copies} and SIMD={self.mw}, or another weight memory")

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.mw)
        return (*shape[:-1], self.mh)

    @property
    def tile_rows(self):
        """Rows the hardware computes: MH / copies."""
        return self.mh // self.copies

    @property
    def mh(self):
        return self.weights.shape[0]

    @property
    def mw(self):
        return self.weights.shape[1]

    in_features = mw
    out_features = mh

    @property
    def out_type(self):
        lo, hi = self.bounds
        return int_type_for(lo, hi)

    @property
    def bounds(self):
        """Exact value range of the outputs over every input of ``in_type``."""
        return dot_bounds(self.weights, self.in_type.min, self.in_type.max)

    def reference(self, x):
        """Golden model, exact in int64. For bipolar x and W it is the XNOR-popcount identity
        ``dot = 2 * popcount(XNOR(x, w)) - MW`` that the hardware's XNOR lane computes."""
        x = np.asarray(x, dtype=np.int64)
        return x @ self.weights.T

    def cycles(self, folding=None):
        """Cycles per vector (per pixel on a feature map)."""
        f = folding or self.folding or Folding(1, 1)
        return (self.tile_rows // f.pe) * (self.mw // f.simd)

    def with_folding(self, folding):
        return replace(self, folding=folding)

    def with_weight_memory(self, weight_memory):
        return replace(self, weight_memory=weight_memory)


WEIGHT_MEMORIES = ("auto", "block", "lut", "const")


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


@dataclass(frozen=True, eq=False)
class MultiThreshold:
    """``y[n, c] = #{l : x[n, c] >= T[c, l]}``; with one level and a bipolar output, ``+1 if x >= T else -1``.

    An inverted channel counts down instead: ``y = L - #{l : x >= T[c, l]}`` (bipolar: ``-y``).
    That is how a channel whose activation falls as its dot product rises (a negative BatchNorm
    scale or tile alpha) keeps its weight row as it is: ``#{l : -x >= T_l} = L - #{l : x >= 1 - T_l}``.
    A tiled layer needs this, since its copies share one tile row and cannot negate it per copy.

    Parameters
    ----------
    name : str
        Layer name.
    thresholds : array (C, L)
        Integer thresholds, non-decreasing along L. L = 1 for bipolar outputs, 2**k - 1 for uint k.
    in_type : ValueType
        Type of the compared values (the range the thresholds are meaningful in).
    out_type : ValueType
        ``BIPOLAR`` or ``uint k``.
    invert : array of bool (C,), optional
        The inverted channels; None (or all False) for none.
    """

    name: str
    thresholds: np.ndarray
    in_type: ValueType
    out_type: ValueType = BIPOLAR
    invert: np.ndarray = None
    host = False

    def __post_init__(self):
        t = _int_array(f"{self.name}: thresholds", self.thresholds, 2)
        object.__setattr__(self, "thresholds", t)
        if self.invert is not None:
            inv = np.asarray(self.invert)
            if inv.shape != (t.shape[0],) or inv.dtype != np.bool_:
                raise LowbitError(f"{self.name}: invert must be a bool array of shape ({t.shape[0]},), "
                                  f"not {inv.dtype} {inv.shape}")
            object.__setattr__(self, "invert", inv.copy() if inv.any() else None)
        levels = t.shape[1]
        if self.out_type == BIPOLAR:
            if levels != 1:
                raise LowbitError(f"{self.name}: a bipolar output needs 1 threshold per channel, not {levels}")
        elif self.out_type.kind == "uint":
            if levels != 2 ** self.out_type.bits - 1:
                raise LowbitError(f"{self.name}: a {self.out_type} output needs "
                                  f"{2 ** self.out_type.bits - 1} thresholds per channel, not {levels}")
        else:
            raise LowbitError(f"{self.name}: MultiThreshold outputs bipolar or uint, not {self.out_type}")
        if levels > 1 and np.any(np.diff(t, axis=1) < 0):
            raise LowbitError(f"{self.name}: thresholds must be non-decreasing along each channel")

    @property
    def channels(self):
        return self.thresholds.shape[0]

    in_features = out_features = channels

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.channels)
        return tuple(shape)

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        count = (x[..., None] >= self.thresholds).sum(axis=-1)
        if self.invert is not None:
            count = np.where(self.invert, self.thresholds.shape[1] - count, count)
        return 2 * count - 1 if self.out_type == BIPOLAR else count


@dataclass(frozen=True, eq=False)
class HostAffine:
    """The affine map the host applies to the last layer's integer accumulators: ``scale * x + shift``.

    Float, by nature: it reproduces the model's final BatchNorm in float64. It runs on the host.
    """

    name: str
    scale: np.ndarray
    shift: np.ndarray
    host = True

    def __post_init__(self):
        for attr in ("scale", "shift"):
            v = np.asarray(getattr(self, attr), dtype=np.float64)
            if v.ndim != 1 or not np.all(np.isfinite(v)):
                raise LowbitError(f"{self.name}: {attr} must be a finite 1-D array")
            v.setflags(write=False)
            object.__setattr__(self, attr, v)
        if self.scale.shape != self.shift.shape:
            raise LowbitError(f"{self.name}: scale and shift lengths differ")

    @property
    def channels(self):
        return len(self.scale)

    in_features = out_features = channels

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.channels)
        return tuple(shape)

    def reference(self, x):
        return np.asarray(x, dtype=np.float64) * self.scale + self.shift


@dataclass(frozen=True, eq=False)
class ArgMax:
    """Index of the largest value (first one on ties, like numpy and torch)."""

    name: str
    channels: int
    host = True

    in_features = property(lambda self: self.channels)
    out_features = 1

    def out_shape(self, shape):
        if len(shape) != 1:
            raise LowbitError(f"{self.name}: takes a vector, not a value of shape {tuple(shape)}")
        check_last_axis(self.name, shape, self.channels)
        return (1,)

    def reference(self, x):
        return np.asarray(x).argmax(axis=1)[:, None]


@dataclass(frozen=True, eq=False)
class Flatten:
    """A feature map (H, W, C) as one vector in (h, w, c) order, the order pixels stream in.

    In hardware the H*W pixel beats of an image are collected into one vector beat.
    """

    name: str
    in_shape: tuple
    in_type: ValueType = BIPOLAR
    host = False

    def __post_init__(self):
        shape = tuple(int(v) for v in self.in_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise LowbitError(f"{self.name}: in_shape must be (H, W, C) of positive sizes, not {self.in_shape!r}")
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
        from .residual_ops import flat_nodes

        names = [n.name for n in flat_nodes(self.nodes)]
        if len(set(names)) != len(names):
            raise LowbitError(f"op names must be unique: {names}")
        vtype, seen_host = self.input_type, False
        self.shapes()
        for node in self.nodes:
            want = getattr(node, "in_type", None)
            if want is not None and vtype is not None and not (
                    want.min <= vtype.min and vtype.max <= want.max and
                    (want.kind == "bipolar") == (vtype.kind == "bipolar")):
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
        """Every MatMul in order, those inside residual bodies included."""
        from .residual_ops import flat_nodes

        return [n for n in flat_nodes(self.nodes) if isinstance(n, MatMul)]

    def replace_nodes(self, nodes):
        return replace(self, nodes=tuple(nodes))

    def replace_meta(self, meta):
        return replace(self, meta=dict(meta))

    def execute(self, x, *, upto=None):
        """Run the references on encoded inputs (N, *input_shape); returns every node's output.

        Inputs given flat, (N, input_features), are reshaped to the input shape.
        """
        x = np.asarray(x, dtype=np.int64)
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
        """Per MatMul: the vectors it multiplies per example (1, or OH*OW on a feature map)."""
        from .residual_ops import walk_nodes

        return {n.name: int(np.prod(s[:-1])) for n, s in walk_nodes(self.nodes, self.input_shape)
                if isinstance(n, MatMul)}

    def cycles_per_inference(self):
        """Cycles per example of the slowest MatMul engine (every vector of a feature map)."""
        pos = self.positions()
        return max(m.cycles() * pos[m.name] for m in self.matmuls())
