import numpy as np
import pytest
from amaranth.back import rtlil

from lowbit.compiler.ir import BIPOLAR, ValueType
from lowbit.compiler.ir import SlidingWindow as SlidingWindowOp
from lowbit.core.errors import LowbitError
from lowbit.hw.payload import VectorFormat
from lowbit.hw.window import SlidingWindow
from lowbit.sim.amaranth_stream import run_amaranth_stream
from lowbit.sim.both import run_both
from hwtest import raises_exactly

rng = np.random.default_rng(11)
INT4 = ValueType("int", 4)



def feature_map(vtype, shape):
    if vtype.kind == "bipolar":
        return rng.choice([-1, 1], size=shape)
    return rng.integers(vtype.min, vtype.max + 1, size=shape)


def conv_loop(x, w, stride, pad, pad_value):
    """Direct convolution: y[n, oy, ox, o] = sum over (ky, kx, c) of w[o, ky, kx, c] * x at the tap."""
    n, h, wd, c = x.shape
    o, k = w.shape[0], w.shape[1]
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, oh, ow, o), dtype=np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ky in range(k):
                    for kx in range(k):
                        iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
                        inside = 0 <= iy < h and 0 <= ix < wd
                        for ch in range(c):
                            v = x[b, iy, ix, ch] if inside else pad_value
                            y[b, oy, ox] += w[:, ky, kx, ch] * v
    return y


# --- IR op -----------------------------------------------------------------------------------

def test_op_shapes_and_cycles():
    op = SlidingWindowOp("sw", 3, 3, stride=2, pad=1, pad_value=-1)
    assert op.out_size(6, 6) == (3, 3)
    assert op.out_size(7, 5) == (4, 3)
    assert op.out_channels == 27 and op.out_type == BIPOLAR
    assert op.cycles(6, 6) == 64
    assert op.reference(feature_map(BIPOLAR, (2, 6, 6, 3))).shape == (2, 3, 3, 27)


@pytest.mark.parametrize("vtype, stride, pad, pad_value", [
    (BIPOLAR, 1, 0, None), (BIPOLAR, 2, 1, -1), (BIPOLAR, 1, 2, 1), (INT4, 1, 1, 0), (INT4, 3, 2, -5),
])
def test_op_windows_make_a_convolution(vtype, stride, pad, pad_value):
    k, c = 3, 2
    x = feature_map(vtype, (2, 7, 6, c))
    w = rng.integers(-3, 4, size=(4, k, k, c))
    op = SlidingWindowOp("sw", c, k, stride, pad, pad_value, vtype)
    got = op.reference(x) @ w.reshape(4, -1).T
    assert np.array_equal(got, conv_loop(x, w, stride, pad, pad_value or 0))


def test_op_window_layout():
    x = np.arange(1 * 4 * 4 * 2).reshape(1, 4, 4, 2) % 8 - 4
    y = SlidingWindowOp("sw", 2, 3, in_type=INT4).reference(x)
    oy, ox, ky, kx, c = 1, 0, 2, 1, 1
    assert y[0, oy, ox, (ky * 3 + kx) * 2 + c] == x[0, oy + ky, ox + kx, c]


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=0), "sw: channels must be a positive integer, not 0"),
    (dict(kernel=0), "sw: kernel must be a positive integer, not 0"),
    (dict(stride=1.5), "sw: stride must be a positive integer, not 1.5"),
    (dict(pad=-1), "sw: pad must be a non-negative integer, not -1"),
    (dict(pad=3, pad_value=1), "sw: pad must be less than the kernel 3, not 3"),
    (dict(pad=1), "sw: a padded bipolar input needs pad_value -1 or +1"),
    (dict(pad=1, pad_value=0), "sw: pad_value must be -1 or +1 for bipolar inputs, not 0"),
    (dict(pad=1, pad_value=8, in_type=INT4),
     "sw: pad_value must be an integer in [-8, 7] for int4 inputs, not 8"),
    (dict(in_type="int4"), "sw: in_type must be a ValueType, not 'int4'"),
])
def test_op_rejects_bad_attributes(kwargs, message):
    args = dict(name="sw", channels=2, kernel=3) | kwargs
    raises_exactly(LowbitError, message, lambda: SlidingWindowOp(**args))


def test_op_rejects_bad_inputs():
    op = SlidingWindowOp("sw", 2, 3)
    raises_exactly(LowbitError, "sw: input must have shape (N, H, W, 2), not (1, 4, 4, 3)",
                   lambda: op.reference(np.ones((1, 4, 4, 3), dtype=int)))
    raises_exactly(LowbitError, "sw: input values are not all bipolar",
                   lambda: op.reference(np.zeros((1, 4, 4, 2), dtype=int)))
    raises_exactly(LowbitError, "sw: kernel 3 does not fit the padded 2x4 input",
                   lambda: op.reference(np.ones((1, 2, 4, 2), dtype=int)))


# --- hardware --------------------------------------------------------------------------------

def test_construction_and_properties():
    d = SlidingWindow(6, 5, 3, 3, stride=2, pad=1, pad_value=-2, kind="int", bits=4)
    assert (d.height, d.width, d.channels, d.kernel, d.stride, d.pad, d.pad_value) == (6, 5, 3, 3, 2, 1, -2)
    assert d.in_format == VectorFormat("int", 4, 3)
    assert d.out_format == VectorFormat("int", 4, 27)
    assert (d.out_height, d.out_width) == (3, 3)
    assert (d.in_beats_per_image, d.out_beats_per_image) == (30, 9)
    assert d.cycles_per_item == 8 * 7
    assert d.latency == 1 * 7 + 1 + 1
    assert d.buffer_pixels == 2 * 7 + 2
    plain = SlidingWindow(6, 6, 2, 3)
    assert plain.pad_value is None and plain.in_format == VectorFormat("bipolar", 1, 2)
    assert plain.cycles_per_item == 36 and plain.latency == 2 * 6 + 2 + 1


@pytest.mark.parametrize("args, kwargs, exc, message", [
    ((0, 6, 2, 3), {}, ValueError, "Height must be a positive integer, not 0"),
    ((6, "6", 2, 3), {}, TypeError, "Width must be a positive integer, not '6'"),
    ((6, 6, 0, 3), {}, ValueError, "Channels must be a positive integer, not 0"),
    ((6, 6, 2, 0), {}, ValueError, "Kernel must be a positive integer, not 0"),
    ((6, 6, 2, 3), dict(stride=0), ValueError, "Stride must be a positive integer, not 0"),
    ((6, 6, 2, 3), dict(pad=-1), ValueError, "Pad must be a non-negative integer, not -1"),
    ((6, 6, 2, 3), dict(pad=3, pad_value=1), ValueError, "Pad must be less than the kernel 3, not 3"),
    ((6, 4, 2, 7), dict(pad=1, pad_value=1), ValueError, "Kernel must fit the padded 8x6 image, not 7"),
    ((6, 6, 2, 3), dict(kind="float"), ValueError,
     "Kind must be one of 'bipolar', 'uint', 'int', not 'float'"),
    ((6, 6, 2, 3), dict(pad=1), ValueError, "Pad value must be -1 or +1 for bipolar elements, not None"),
    ((6, 6, 2, 3), dict(pad=1, pad_value=0), ValueError,
     "Pad value must be -1 or +1 for bipolar elements, not 0"),
    ((6, 6, 2, 3), dict(pad=1, pad_value=8, kind="int", bits=4), ValueError,
     "Pad value must be in [-8, 7] for int4 elements, not 8"),
    ((6, 6, 2, 3), dict(pad=1, pad_value=-1, kind="uint", bits=2), ValueError,
     "Pad value must be in [0, 3] for uint2 elements, not -1"),
    ((6, 6, 2, 3), dict(pad=1, pad_value=0.5, kind="int", bits=4), TypeError,
     "Pad value must be an integer, not 0.5"),
])
def test_rejects_bad_parameters(args, kwargs, exc, message):
    raises_exactly(exc, message, lambda: SlidingWindow(*args, **kwargs))


def stream_case(vtype, n, h, w, c, k, stride, pad, pad_value, pipelined=False):
    op = SlidingWindowOp("sw", c, k, stride, pad, pad_value, vtype)
    d = SlidingWindow(h, w, c, k, stride=stride, pad=pad, pad_value=pad_value, kind=vtype.kind,
                      bits=vtype.bits, pipelined=pipelined)
    x = feature_map(vtype, (n, h, w, c))
    y = op.reference(x)
    return d, d.in_format.pack(x.reshape(-1, c)), d.out_format.pack(y.reshape(-1, op.out_channels))


# Line delays of every kind: wp - k = 3 and 5 (memories), 1 (a register) and 0 (a wire).
@pytest.mark.parametrize("pipelined", [False, True], ids=["flags", "registered-flags"])
@pytest.mark.parametrize("h, w, k, pad", [(5, 4, 3, 0), (3, 3, 3, 0), (4, 3, 2, 1), (3, 5, 1, 0)])
def test_amaranth_line_delays(h, w, k, pad, pipelined):
    d, inputs, expected = stream_case(INT4, 3, h, w, 2, k, 1, pad, 3, pipelined)
    res = run_amaranth_stream(d, inputs, n_outputs=len(expected), stall=0.5, seed=h * w + k)
    assert res.outputs == expected


@pytest.mark.parametrize("vtype, stride, pad, pad_value, pipelined", [
    (BIPOLAR, 1, 0, None, False), (BIPOLAR, 2, 1, 1, False), (INT4, 1, 1, -3, False), (INT4, 2, 0, None, False),
    (INT4, 1, 1, -3, True),
], ids=["bipolar-s1-p0", "bipolar-s2-p1", "int4-s1-p1", "int4-s2-p0", "int4-s1-p1-pipelined"])
def test_both_simulators_with_stalls_and_timing(vtype, stride, pad, pad_value, pipelined):
    """Registered scan flags (pipelined) change no output and no cycle."""
    n = 3
    d, inputs, expected = stream_case(vtype, n, 6, 6, 3, 3, stride, pad, pad_value, pipelined)
    assert ("emit_r" in rtlil.convert(d)) == pipelined  # the flags are registers only when pipelined
    res = run_both(d, inputs, expected, stall=0.4, seed=stride + 2 * pad,
                   timing_items=len(inputs), name="sliding_window")
    assert res.mismatches(expected) == 0
    assert res.amaranth_outputs == expected and res.verilator.outputs == expected
    # Without stalls, over N images back to back: every image starts cycles_per_item after the
    # previous one, on both sides, and its first window leaves latency cycles after its first pixel.
    v = res.verilator
    ins, outs = v.timing_input_cycles, v.timing_output_cycles
    per_in, per_out = d.in_beats_per_image, d.out_beats_per_image
    assert (len(ins), len(outs)) == (n * per_in, n * per_out)
    assert v.latency == d.latency
    def image(cycles, per, b):
        return [t - cycles[b * per] for t in cycles[b * per:(b + 1) * per]]

    for b in range(n):
        assert outs[b * per_out] - ins[b * per_in] == d.latency
        assert image(ins, per_in, b) == image(ins, per_in, 0)
        assert image(outs, per_out, b) == image(outs, per_out, 0)
    assert [ins[b * per_in] - ins[(b - 1) * per_in] for b in range(1, n)] == [d.cycles_per_item] * (n - 1)
    # Along a row of windows at stride 1, the output keeps up with one window per cycle.
    if stride == 1:
        assert outs[1] - outs[0] == 1
