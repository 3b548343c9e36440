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
           "HostAffine", "ArgMax", "Graph", "divisors"]


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
    """

    name: str
    weights: np.ndarray
    weight_format: str = "bipolar"
    in_type: ValueType = BIPOLAR
    folding: Folding = None
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
        if self.folding is not None:
            check_folding(self.name, self.mh, self.mw, self.folding)

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
        f = folding or self.folding or Folding(1, 1)
        return (self.mh // f.pe) * (self.mw // f.simd)

    def with_folding(self, folding):
        return replace(self, folding=folding)


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
    """

    name: str
    thresholds: np.ndarray
    in_type: ValueType
    out_type: ValueType = BIPOLAR
    host = False

    def __post_init__(self):
        t = _int_array(f"{self.name}: thresholds", self.thresholds, 2)
        object.__setattr__(self, "thresholds", t)
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

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        count = (x[:, :, None] >= self.thresholds[None]).sum(axis=2)
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

    def reference(self, x):
        return np.asarray(x).argmax(axis=1)[:, None]


@dataclass(frozen=True, eq=False)
class Graph:
    """A chain of ops from an encoded input vector to the prediction.

    Parameters
    ----------
    input_type : ValueType
        Element type of the encoded input.
    input_features : int
        Length of the encoded input vector.
    nodes : tuple
        The ops, in order. Hardware ops come first, host ops (``op.host``) last.
    meta : dict
        Free-form metadata (model formats, input encoding, export report).
    """

    input_type: ValueType
    input_features: int
    nodes: tuple
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        self.check()

    def check(self):
        """Validate the chain: shapes match, types flow, host ops come last, names are unique."""
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise LowbitError(f"op names must be unique: {names}")
        features, vtype, seen_host = self.input_features, self.input_type, False
        for node in self.nodes:
            if node.in_features != features:
                raise LowbitError(f"{node.name}: expects {node.in_features} inputs but receives {features}")
            want = getattr(node, "in_type", None)
            if want is not None and vtype is not None and not (
                    want.min <= vtype.min and vtype.max <= want.max and
                    (want.kind == "bipolar") == (vtype.kind == "bipolar")):
                raise LowbitError(f"{node.name}: expects {want} inputs but receives {vtype}")
            if seen_host and not node.host:
                raise LowbitError(f"{node.name}: hardware op after a host op")
            seen_host |= node.host
            features = node.out_features
            vtype = getattr(node, "out_type", None)
        return self

    @property
    def hardware_nodes(self):
        return tuple(n for n in self.nodes if not n.host)

    @property
    def host_nodes(self):
        return tuple(n for n in self.nodes if n.host)

    def matmuls(self):
        return [n for n in self.nodes if isinstance(n, MatMul)]

    def replace_nodes(self, nodes):
        return replace(self, nodes=tuple(nodes))

    def execute(self, x, *, upto=None):
        """Run the references on encoded inputs (N, input_features); returns every node's output."""
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.input_features:
            raise LowbitError(f"input must have shape (N, {self.input_features}), not {x.shape}")
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

    def cycles_per_inference(self):
        return max(m.cycles() for m in self.matmuls())
