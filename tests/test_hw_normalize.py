import numpy as np
import pytest
from amaranth.hdl import Shape, signed

from lowbit.core.bounds import signed_bits
from lowbit.compiler.ir import BIPOLAR, Graph, ValueType
from lowbit.compiler.ir import NormalizeSign as NormalizeSignOp
from lowbit.core.errors import LowbitError
from lowbit.hw.normalize import NormalizeSign
from lowbit.hw.payload import VectorFormat
from lowbit.sim.amaranth_stream import run_amaranth_stream
from lowbit.sim.both import run_both
from hwtest import raises_exactly, unelaborated

rng = np.random.default_rng(5)
INT6 = ValueType("int", 6)




def value_range(fmt):
    if fmt.kind == "int":
        return -(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1
    return 0, (1 << fmt.bits) - 1


def worst_cases(fmt):
    """Vectors at the ends of the difference's range: one channel at one end, the rest at the other,
    in every position; all equal at either end; alternating ends."""
    lo, hi = value_range(fmt)
    n = fmt.count
    rows = []
    for i in range(n):
        for a, b in ((hi, lo), (lo, hi)):
            row = np.full(n, b)
            row[i] = a
            rows.append(row)
    rows += [np.full(n, lo), np.full(n, hi), np.resize([lo, hi], n), np.resize([hi, lo], n)]
    return np.array(rows)


def with_ties(fmt, n_rows):
    """Random vectors, and as many again with channel 0 set to exactly the mean where it is an integer."""
    lo, hi = value_range(fmt)
    z = rng.integers(lo, hi + 1, size=(2 * n_rows, fmt.count))
    rest = z[n_rows:, 1:].sum(axis=1)
    # n*z_0 == z_0 + rest  <=>  z_0 == rest / (n - 1)
    ok = rest % max(fmt.count - 1, 1) == 0
    z[n_rows:, 0] = np.where(ok, rest // max(fmt.count - 1, 1), z[n_rows:, 0])
    return z


# The IR op.

def test_op_construction_and_bounds():
    op = NormalizeSignOp("norm", 8, INT6)
    assert (op.channels, op.in_features, op.out_features, op.out_type) == (8, 8, 8, BIPOLAR)
    assert op.bounds == (-7 * 63, 7 * 63)
    assert op.difference_type == ValueType("int", 10)
    assert op.sum_bounds == (-256, 248)
    assert NormalizeSignOp("u", 1, ValueType("uint", 3)).bounds == (0, 0)
    graph = Graph(ValueType("int", 5), 8, [op])  # a narrower input type is accepted
    assert graph.execute(np.array([[-16, 15, 0, 0, 1, 2, 3, -1]]))[0].tolist() == [[-1, 1, -1, -1, 1, 1, 1, -1]]


def test_op_bounds_are_exact():
    for in_type, n in ((INT6, 8), (ValueType("uint", 5), 5), (ValueType("int", 2), 2)):
        op = NormalizeSignOp("n", n, in_type)
        z = worst_cases(VectorFormat(in_type.kind, in_type.bits, n))
        d = n * z - z.sum(axis=1, keepdims=True)
        assert (d.min(), d.max()) == op.bounds


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=0), "norm: channels must be a positive integer, not 0"),
    (dict(channels=8.0), "norm: channels must be a positive integer, not 8.0"),
    (dict(in_type=BIPOLAR), "norm: NormalizeSign takes int or uint inputs, not bipolar"),
    (dict(channels=4, in_type=ValueType("int", 63)), "norm: 4 channels of int63 overflow int64"),
])
def test_op_bad_parameters(kwargs, message):
    args = dict(name="norm", channels=8, in_type=INT6) | kwargs
    with pytest.raises(LowbitError) as info:
        NormalizeSignOp(**args)
    assert info.value.message == message


def test_op_equals_float_normalization():
    """sign((z - mean) / std) in numpy float64 against the integer reference.

    With integer z (|sum| < 2**53) numpy's mean is the exact sum divided by n, correctly rounded,
    so when n*z_i == sum the quotient is z_i exactly and z_i - mean is exactly 0.0: ties come out
    as 0.0, which lowbit's sign (x >= 0) maps to +1, as the integer form does. The only
    disagreements are rows whose channels are all equal: std = 0 and 0/0 is NaN, which no sign
    maps to +1; the integer form gives +1 there, like a normalization with an epsilon.
    """
    fmt = VectorFormat("int", 5, 10)
    z = with_ties(fmt, 3000)
    z[:20] = rng.integers(-16, 16, size=(20, 1))  # constant rows
    op = NormalizeSignOp("n", 10, ValueType("int", 5))
    want = op.reference(z)
    zf = z.astype(np.float64)
    with np.errstate(invalid="ignore"):
        y = (zf - zf.mean(axis=1, keepdims=True)) / zf.std(axis=1, keepdims=True)
    got = np.where(y >= 0, 1, -1)
    ties = 10 * z == z.sum(axis=1, keepdims=True)
    constant = (z == z[:, :1]).all(axis=1)
    assert ties[~constant].sum() > 500  # the exact-zero case really is exercised
    assert np.all(y[ties & ~constant[:, None]] == 0.0)
    assert np.array_equal(np.isnan(y).any(axis=1), constant)
    disagree = got != want
    assert disagree.sum() == 20 * 10 and np.all(disagree[constant])
    assert np.array_equal(want[constant], np.ones((20, 10)))


def test_torch_layer_norm_differs_only_at_exact_ties():
    """torch's layer_norm does not compute the mean as sum / n exactly, so at an exact tie it can
    return a tiny value of either sign: those channels, and only those, may disagree. A model's
    float forward pass should therefore not be the check for ties; the integer form is exact."""
    torch = pytest.importorskip("torch")
    z = with_ties(VectorFormat("int", 5, 10), 3000)
    want = NormalizeSignOp("n", 10, ValueType("int", 5)).reference(z)
    ties = 10 * z == z.sum(axis=1, keepdims=True)
    for dtype in (torch.float32, torch.float64):
        y = torch.nn.functional.layer_norm(torch.tensor(z, dtype=dtype), (10,)).numpy()
        disagree = np.where(y >= 0, 1, -1) != want
        assert not disagree[~ties].any()


# The component.

def test_construction_and_properties():
    u = unelaborated(NormalizeSign(VectorFormat("int", 6, 8), pe=2))
    op = NormalizeSignOp("n", 8, INT6)
    assert (u.channels, u.pe, u.folds) == (8, 2, 4)
    assert u.cycles_per_item == 8 // 2
    assert u.latency == 2 * (8 // 2) + 1
    assert u.in_format == VectorFormat("int", 6, 8)
    assert u.out_format == VectorFormat("bipolar", 1, 8)
    # The hardware's difference is exactly as wide as the IR op's bounds need, no more.
    assert u.difference_bounds == op.bounds
    assert u.difference_shape == signed(op.difference_type.bits) == signed(signed_bits(*op.bounds))
    assert u.sum_shape == Shape.cast(range(op.sum_bounds[0], op.sum_bounds[1] + 1))
    w = unelaborated(NormalizeSign(VectorFormat("uint", 4, 6), pe=6))
    assert (w.cycles_per_item, w.latency, w.difference_shape) == (1, 3, signed(8))  # +-75


@pytest.mark.parametrize("args, kwargs, exc, message", [
    (("int6",), {}, TypeError, "Input format must be a VectorFormat, not 'int6'"),
    ((VectorFormat("bipolar", 1, 8),), {}, ValueError, "Input format must have int or uint elements, not bipolar"),
    ((VectorFormat("int", 6, 8),), dict(pe=0), ValueError, "PE must be a positive integer, not 0"),
    ((VectorFormat("int", 6, 8),), dict(pe=3), ValueError, "PE must divide the 8 channels, not 3"),
])
def test_bad_parameters(args, kwargs, exc, message):
    raises_exactly(exc, message, lambda: NormalizeSign(*args, **kwargs))


@pytest.mark.parametrize("fmt, pe", [
    (VectorFormat("int", 6, 8), 1),
    (VectorFormat("int", 6, 8), 2),
    (VectorFormat("uint", 5, 12), 4),
    (VectorFormat("int", 4, 6), 6),
], ids=["int6x8-pe1", "int6x8-pe2", "uint5x12-pe4", "int4x6-pe6"])
def test_both_simulators_match_reference_with_stalls(fmt, pe):
    u = NormalizeSign(fmt, pe=pe)
    z = np.concatenate([worst_cases(fmt), with_ties(fmt, 40)])
    expected = u.out_format.pack(NormalizeSignOp("n", fmt.count, ValueType(fmt.kind, fmt.bits)).reference(z))
    r = run_both(u, fmt.pack(z), expected, stall=0.4, seed=pe, name="normalize_sign")
    assert r.mismatches(expected) == 0
    assert r.amaranth_outputs == expected
    vl = r.verilator
    assert vl.in_idle_fraction > 0 and vl.out_idle_fraction > 0  # both sides really stalled
    assert set(vl.interval) == {u.cycles_per_item}
    assert vl.latency == u.latency


def test_worst_case_inputs_do_not_overflow():
    """int8 x 16: the difference spans +-15*255 = +-3825, a 13-bit signed value, reached exactly."""
    fmt = VectorFormat("int", 8, 16)
    u = NormalizeSign(fmt, pe=4)
    op = NormalizeSignOp("n", 16, ValueType("int", 8))
    z = worst_cases(fmt)
    d = 16 * z - z.sum(axis=1, keepdims=True)
    assert (d.min(), d.max()) == u.difference_bounds == (-3825, 3825)
    assert u.difference_shape == signed(13)
    expected = u.out_format.pack(op.reference(z))
    r = run_both(u, fmt.pack(z), expected, stall=0.3, seed=9, name="normalize_sign")
    assert r.mismatches(expected) == 0


def test_single_channel_is_always_plus_one():
    u = NormalizeSign(VectorFormat("int", 4, 1))
    res = run_amaranth_stream(u, u.in_format.pack(np.array([[-8], [7], [0]])))
    assert res.outputs == [1, 1, 1]
    assert res.latency == u.latency


@pytest.mark.parametrize("pe", [1, 3])
def test_offset_both_simulators(pe):
    """A layer bias enters as a per-channel offset; exact ties around it are included."""
    fmt = VectorFormat("int", 5, 6)
    offset = np.array([-7, 0, 3, 12, -1, 6])
    u = NormalizeSign(fmt, pe=pe, offset=offset)
    op = NormalizeSignOp("n", 6, ValueType("int", 5), offset)
    z = np.concatenate([worst_cases(fmt), with_ties(fmt, 30)])
    expected = u.out_format.pack(op.reference(z))
    d = 6 * z - z.sum(axis=1, keepdims=True) + offset
    assert (d == 0).any() and (d == -1).any()  # ties on both sides of the comparison
    assert u.difference_bounds == op.bounds
    r = run_both(u, fmt.pack(z), expected, stall=0.3, seed=pe, name="normalize_sign_offset")
    assert r.mismatches(expected) == 0
    assert r.amaranth_outputs == expected
