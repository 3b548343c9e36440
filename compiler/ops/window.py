"""SlidingWindow: the k x k windows of a convolution, and the geometry every windowed op shares.

Feature maps are int64 arrays of shape (N, H, W, C); in hardware they stream one pixel (C
elements) per beat in raster order. A convolution is a :class:`SlidingWindow` followed by a
``MatMul`` whose weight row for output channel o is the kernel flattened in (ky, kx, c) order.
The window's engine (:class:`lowbit.hw.window.SlidingWindow`, manifest op ``sliding_window``)
scans the padded image once, keeping ``k - 1`` rows in line memories.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import INTEGER, NATURAL, POSITIVE, list_of, optional
from lowbit.core.types import BIPOLAR, ValueType
from lowbit.hw.fabric import lutram_luts, mux_luts, ram_brams
from lowbit.hw.window import SlidingWindow as SlidingWindowUnit

from ..graph import TYPE_RECORD, Op, type_record
from ..lowering import Layer, engine_format, sample_engine

__all__ = ["SlidingWindow", "Windowed"]


def _check_int(op, attr, value, minimum):
    what = "a positive integer" if minimum == 1 else "a non-negative integer"
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise LowbitError(f"{op}: {attr} must be {what}, not {value!r}")


def feature_map(op, channels, x):
    """``x`` as an int64 (N, H, W, ``channels``) array; a clear error otherwise."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[3] != channels:
        raise LowbitError(f"{op}: input must have shape (N, H, W, {channels}), not {x.shape}")
    if x.dtype.kind not in "iub":
        raise LowbitError(f"{op}: input must be an integer array, not {x.dtype}")
    return x.astype(np.int64)


class Windowed(Op):
    """Geometry shared by the windowed ops: ``name``, ``channels``, ``kernel``, ``stride``, ``pad``;
    and the cost of the scan engine they lower to (counters, line memories)."""

    pad_field = True  # its manifest entry carries "pad" (a pool has none)
    entry_fields = {"kernel": POSITIVE, "stride": POSITIVE, "in_shape": list_of(POSITIVE, length=3),
                    "buffer_pixels": NATURAL, "pipeline": NATURAL}
    entry_defaults = {"pipeline": 0}  # builds written before pipelined scans

    def with_pipeline(self, pipeline):
        """The op in a pipelined network: its scan keeps its flags in registers (nonzero)."""
        return replace(self, pipeline=pipeline)

    def _check_geometry(self):
        _check_int(self.name, "pipeline", self.pipeline, 0)
        if not isinstance(self.in_type, ValueType):
            raise LowbitError(f"{self.name}: in_type must be a ValueType, not {self.in_type!r}")
        for attr, minimum in (("channels", 1), ("kernel", 1), ("stride", 1), ("pad", 0)):
            _check_int(self.name, attr, getattr(self, attr), minimum)
        if self.pad >= self.kernel:
            raise LowbitError(f"{self.name}: pad must be less than the kernel {self.kernel}, "
                              f"not {self.pad}")

    @property
    def out_type(self):
        return self.in_type

    @property
    def in_channels(self):
        return self.channels

    def out_size(self, h, w):
        """(OH, OW) for an H x W input; ``OH = (H + 2*pad - kernel) // stride + 1``."""
        hp, wp = h + 2 * self.pad, w + 2 * self.pad
        if self.kernel > min(hp, wp):
            raise LowbitError(f"{self.name}: kernel {self.kernel} does not fit the padded "
                              f"{hp}x{wp} input")
        return (hp - self.kernel) // self.stride + 1, (wp - self.kernel) // self.stride + 1

    def out_shape(self, shape):
        """Per-example (H, W, C) in, (OH, OW, out_channels) out."""
        if len(shape) != 3 or shape[2] != self.channels:
            raise LowbitError(f"{self.name}: expects an (H, W, {self.channels}) feature map, "
                              f"not {tuple(shape)}")
        return (*self.out_size(shape[0], shape[1]), self.out_channels)

    def cycles(self, h, w):
        """Cycles per image of the hardware: one per padded position, ``(H + 2*pad) * (W + 2*pad)``."""
        self.out_size(h, w)
        return (h + 2 * self.pad) * (w + 2 * self.pad)

    def _windows(self, x, pad_value):
        """(N, OH, OW, k, k, C): the window of each output position, padding filled in."""
        n, h, w, c = x.shape
        oh, ow = self.out_size(h, w)
        k, s, p = self.kernel, self.stride, self.pad
        xp = np.full((n, h + 2 * p, w + 2 * p, c), pad_value, dtype=np.int64)
        xp[:, p:p + h, p:p + w] = x
        out = np.empty((n, oh, ow, k, k, c), dtype=np.int64)
        for ky in range(k):
            for kx in range(k):
                out[:, :, :, ky, kx] = xp[:, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s]
        return out

    # -- hardware -------------------------------------------------------------------------------
    def engine_cycles(self, layer, engine):
        """A scan's item is a whole image."""
        return engine.cycles_per_item

    def entry(self, layer, engine):
        return {"op": self.engine_op, "kernel": self.kernel, "stride": self.stride,
                **({"pad": self.pad} if self.pad_field else {}),
                "in_shape": list(layer.in_shape), "buffer_pixels": engine.buffer_pixels,
                **({"pipeline": self.pipeline} if self.pipeline else {})}

    # -- calibration ----------------------------------------------------------------------------
    @classmethod
    def sample_name(cls, spec, inp):
        return (f"{spec.op}-{inp}-{spec.height}x{spec.width}x{spec.channels}"
                f"-k{spec.kernel}s{spec.stride}p{spec.pad}")

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def scan_features(cls, entry, family):
        """``(luts, ffs, pixel bits)``: the scan's features, common to windows and pools (each adds
        its own datapath): counters, line memories and their pointers, the taps."""
        op = entry["op"]
        in_bits = entry["in_format"]["bits"]
        out_bits = entry["out_format"]["bits"] * entry["out_format"]["count"]
        k = entry["kernel"]
        _, w, c = entry["in_shape"]
        pixel = c * in_bits
        n, depth, width = line_memories(entry)
        in_logic = n and not ram_brams(depth, width, family)
        # iCE40 keeps a line memory that stays in logic in flip-flops with a read multiplexer;
        # xc7 puts it in distributed RAM, counted by :meth:`structural_luts`; ECP5's
        # distributed RAM is not in its LUT count.
        line_bits = n * depth * width if in_logic and family == "ice40" else 0
        luts = {f"{op}:const": 1.0, f"{op}:line": line_bits,
                # ECP5 distributed RAM is 16 words deep: a longer line reads through a
                # multiplexer over its banks.
                f"{op}:banks": n * width * mux_luts(math.ceil(depth / 16), family) if family == "ecp5" else 0,
                # Row and column counters, and each line memory's pointer.
                f"{op}:counters": math.log2(w * entry["in_shape"][0]),
                f"{op}:pointers": n * math.log2(depth) if n else 0}
        ffs = {f"{op}:const": 1.0, f"{op}:taps": k * k * pixel, "ff_out": out_bits,
               f"{op}:line": line_bits if family == "ice40" else n * width}
        return luts, ffs, pixel

    @classmethod
    def structural_luts(cls, entry, family, model):
        """On xc7 the line memories are distributed RAM (:func:`lowbit.hw.fabric.lutram_luts`)."""
        parts = {"rom": 0, "rows": 0, "glue": 0}
        n, depth, width = line_memories(entry)
        if family == "xilinx" and n:
            parts["glue"] += n * lutram_luts(depth, width)
        return parts

    @classmethod
    def brams(cls, entry, family):
        n, depth, width = line_memories(entry)
        return n * ram_brams(depth, width, family) if n else 0


def line_memories(entry):
    """(count, depth, width) of a scan's line memories (hw/window.py ``_delay``)."""
    k = entry["kernel"]
    h, w, c = entry["in_shape"]
    padded = w + 2 * entry.get("pad", 0)
    pixel_bits = c * entry["in_format"]["bits"]
    depth = padded - k
    # Delays shorter than two pixels are registers, not memories.
    return (k - 1, depth, pixel_bits) if depth >= 2 and k > 1 else (0, 0, pixel_bits)


@dataclass(frozen=True, eq=False)
class SlidingWindow(Windowed):
    """The k x k windows of a padded feature map, flattened in (ky, kx, c) order.

    ``y[n, oy, ox, (ky*k + kx)*C + c] = xpad[n, oy*stride + ky, ox*stride + kx, c]``, where
    ``xpad`` is ``x`` with ``pad`` rows and columns of ``pad_value`` on every side.

    Parameters
    ----------
    name : str
        Layer name.
    channels : int
        Input channels C.
    kernel : int
        Window size k.
    stride : int
        Step between windows.
    pad : int
        Padding on each side, less than ``kernel``.
    pad_value : int or None
        Padding element, representable in ``in_type`` (for bipolar: -1 or +1). ``None`` means 0
        for integer types; bipolar inputs need it whenever ``pad > 0``.
    in_type : ValueType
        Element type of the input (and the output).
    """

    name: str
    channels: int
    kernel: int
    stride: int = 1
    pad: int = 0
    pad_value: int = None
    in_type: ValueType = BIPOLAR
    pipeline: int = 0
    engine_op = "sliding_window"
    record_fields = {"channels": POSITIVE, "kernel": POSITIVE, "stride": POSITIVE, "pad": NATURAL,
                     "pad_value": optional(INTEGER), "in_type": TYPE_RECORD, "pipeline": NATURAL}
    record_defaults = {"pipeline": 0}

    def __post_init__(self):
        self._check_geometry()
        v = self.pad_value
        if v is None:
            if self.in_type.kind == "bipolar" and self.pad:
                raise LowbitError(f"{self.name}: a padded bipolar input needs pad_value -1 or +1")
            return
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not self.in_type.holds(v):
            want = "-1 or +1" if self.in_type.kind == "bipolar" else \
                f"an integer in [{self.in_type.min}, {self.in_type.max}]"
            raise LowbitError(f"{self.name}: pad_value must be {want} for {self.in_type} inputs, "
                              f"not {v!r}")
        object.__setattr__(self, "pad_value", int(v))

    @property
    def out_channels(self):
        return self.kernel * self.kernel * self.channels

    def reference(self, x):
        """Golden model: (N, H, W, C) -> (N, OH, OW, k*k*C)."""
        x = feature_map(self.name, self.channels, x)
        if not self.in_type.holds(x):
            raise LowbitError(f"{self.name}: input values are not all {self.in_type}")
        win = self._windows(x, 0 if self.pad_value is None else self.pad_value)
        return win.reshape(*win.shape[:3], self.out_channels)

    # -- graph.npz ------------------------------------------------------------------------------
    def record(self):
        return {"channels": self.channels, "kernel": self.kernel, "stride": self.stride,
                "pad": self.pad, "pad_value": self.pad_value, "in_type": type_record(self.in_type),
                "pipeline": self.pipeline}, {}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, fields["channels"], fields["kernel"], fields["stride"], fields["pad"],
                   fields["pad_value"], ValueType(**fields["in_type"]), fields.get("pipeline", 0))

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lowering):
        h, w, c = layer.in_shape
        return SlidingWindowUnit(h, w, c, self.kernel, stride=self.stride, pad=self.pad,
                                 pad_value=self.pad_value, kind=in_format.kind, bits=in_format.bits,
                                 pipelined=bool(self.pipeline))

    # -- calibration ----------------------------------------------------------------------------
    @classmethod
    def draw(cls, rng, kind, bits, size, channels):
        k = int(rng.choice([2, 3, 3, 5]))
        stride = int(rng.choice([1, 1, 2]))
        pad = int(rng.integers(0, k // 2 + 1))
        return dict(height=size, width=size, channels=channels, kind=kind, bits=bits, kernel=k,
                    stride=stride, pad=pad)

    @classmethod
    def sample(cls, spec, seed):
        in_type = ValueType(spec.kind, spec.bits)
        pad_value = -1 if spec.kind == "bipolar" and spec.pad else None
        op = cls("window", spec.channels, spec.kernel, spec.stride, spec.pad, pad_value, in_type)
        return sample_engine(Layer((op,), (spec.height, spec.width, spec.channels)),
                             engine_format(in_type, (spec.channels,)))

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def cost_features(cls, entry, family):
        luts, ffs, pixel = cls.scan_features(entry, family)
        # Padding positions select the pad word instead of the input pixel.
        luts["sliding_window:pad"] = pixel if entry.get("pad", 0) else 0
        return luts, ffs
