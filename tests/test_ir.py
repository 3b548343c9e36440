import numpy as np
import pytest
import torch

from lowbit.model.thresholds import step_thresholds
from lowbit.compiler.folding import apply_folding, parse_folding
from lowbit.folding import fold_for_cycles, lane_cost
from lowbit.compiler.ir import (BIPOLAR, ArgMax, Folding, Graph, HostAffine, MatMul, MultiThreshold,
                                ValueType, int_type_for)
from lowbit.compiler.serialize import load_graph, save_graph
from lowbit.core.errors import LowbitError

rng = np.random.default_rng(0)


def test_matmul_reference_is_the_xnor_popcount_identity():
    w = rng.choice([-1, 1], size=(7, 33))
    x = rng.choice([-1, 1], size=(50, 33))
    dot = MatMul("m", w).reference(x)
    xnor = (x[:, None, :] == w[None, :, :]).sum(axis=2)
    assert np.array_equal(dot, 2 * xnor - 33)
    assert dot.dtype == np.int64


def test_matmul_bounds_and_type():
    m = MatMul("m", rng.choice([-1, 1], size=(4, 100)))
    assert m.bounds == (-100, 100)
    assert m.out_type == ValueType("int", 8)
    assert m.cycles(Folding(2, 10)) == 2 * 10


def test_matmul_validation_messages():
    with pytest.raises(LowbitError, match=r"m: weight \[0, 1\] = 0 is not a level of format 'bipolar'"):
        MatMul("m", np.array([[1, 0]]))
    with pytest.raises(LowbitError, match="m: weights must be a 2-D array"):
        MatMul("m", np.array([1, -1]))
    with pytest.raises(LowbitError, match="m: weights contains NaN"):
        MatMul("m", np.array([[1.0, np.nan]]))
    with pytest.raises(LowbitError, match=r"m: PE=3 does not divide the 4 output rows \(MH\)"):
        MatMul("m", np.ones((4, 6), dtype=int), folding=Folding(3, 1))
    with pytest.raises(LowbitError, match=r"choose SIMD from \[1, 2, 3, 6\]"):
        MatMul("m", np.ones((4, 6), dtype=int), folding=Folding(1, 4))


def test_multithreshold_reference_and_validation():
    t = MultiThreshold("t", np.array([[0], [3]]), ValueType("int", 4))
    assert t.reference(np.array([[0, 2], [-1, 3]])).tolist() == [[1, -1], [-1, 1]]
    u = MultiThreshold("u", np.array([[-1, 0, 2]]), ValueType("int", 4), ValueType("uint", 2))
    assert u.reference(np.array([[-2], [-1], [1], [5]]))[:, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(LowbitError, match="a bipolar output needs 1 threshold per channel, not 2"):
        MultiThreshold("t", np.zeros((2, 2)), ValueType("int", 4))
    with pytest.raises(LowbitError, match="non-decreasing"):
        MultiThreshold("u", np.array([[2, 0, 1]]), ValueType("int", 4), ValueType("uint", 2))


def test_int_type_for():
    assert int_type_for(0, 255) == ValueType("uint", 8)
    assert int_type_for(-128, 127) == ValueType("int", 8)
    assert int_type_for(-129, 0) == ValueType("int", 9)


def test_graph_checks_shapes():
    with pytest.raises(LowbitError, match="b: expects 5 inputs but receives 4"):
        Graph(BIPOLAR, 8, [MatMul("a", np.ones((4, 8), int)), MatMul("b", np.ones((2, 5), int))])


@pytest.mark.parametrize("act", ["bipolar", "u3"])
def test_step_thresholds_equal_the_float_function_on_every_integer(act):
    """Thresholds read off ``act(d * gain + bias)`` agree with it on every reachable d, for rising,
    falling (flipped) and constant channels; an exact tie is counted."""
    from lowbit.model.layers import BipolarAct, QuantAct

    module = BipolarAct() if act == "bipolar" else QuantAct(act, clip=2.0)
    gain = np.array([0.3, -0.7, 0.0, 0.25, 1e-3, -2.5])
    bias = np.array([0.1, -3.0, 0.4, -1.75, 0.0, 100.0])
    lo, hi = np.full(6, -40), np.full(6, 40)
    t, flip, out_type, ties = step_thresholds(gain, bias, lo, hi, module)
    assert list(flip) == [False, True, False, False, False, True]
    d = np.arange(-40, 41)
    y = torch.as_tensor(d[:, None] * gain + bias)
    want = module.integer(y)[0].numpy() if act != "bipolar" else (y >= 0).numpy().astype(int) * 2 - 1
    e = np.where(flip, -d[:, None], d[:, None])
    got = MultiThreshold("t", t, ValueType("int", 8), out_type).reference(e)
    assert np.array_equal(got, want)
    assert ties == 0  # e.g. 0.25 * 7 - 1.75 == 0 exactly in float64 too


def test_step_thresholds_count_a_float_tie():
    """26 * 3.5999999999999996 - 93.6 rounds to >= 0 in float64 but is < 0 exactly: the IR follows
    the float (PyTorch's) result, and the tie is counted."""
    from lowbit.model.layers import BipolarAct

    t, flip, _, ties = step_thresholds(np.array([3.5999999999999996]), np.array([-93.6]),
                                       np.array([-50]), np.array([50]), BipolarAct())
    assert 26 * 3.5999999999999996 - 93.6 >= 0
    assert (t[0, 0], flip[0], ties) == (26, False, 1)


def test_ir_reproduces_torch_on_every_test_image(digits_graph):
    _, check = digits_graph
    assert check["images"] == 360
    assert check["prediction_disagreements"] == 0, check
    assert check["export_errors"] == []
    assert check["activation_mismatches"] == {"stage0": 0, "stage1": 0}
    assert check["logit_mismatches"] == 0
    assert check["ir_accuracy"] == check["torch_accuracy"] >= 0.90


def test_folding_parse_apply_and_search(digits_graph):
    graph, _ = digits_graph
    folded = apply_folding(graph, parse_folding("2x8, 4x16, 5x64", graph))
    assert [str(m.folding) for m in folded.matmuls()] == ["2x8", "4x16", "5x64"]
    assert graph.matmuls()[0].folding is None  # passes never mutate their input
    with pytest.raises(LowbitError, match="gives 2 entries but the model has 3 layers"):
        parse_folding("1x1,1x1", graph)
    with pytest.raises(LowbitError, match="fc2: PE=3 does not divide the 10 output rows"):
        apply_folding(graph, parse_folding("1x1,1x1,3x1", graph))
    fast = fold_for_cycles(graph, 256, cost=lane_cost)
    assert fast.cycles_per_inference() <= 256
    assert fast.meta["folding"]["cost"] == "given"
    for m in fast.matmuls():  # no folding of any layer with fewer lanes meets the target
        lanes = m.folding.pe * m.folding.simd
        assert all(m.cycles(Folding(p, s)) > 256
                   for p in range(1, m.mh + 1) if m.mh % p == 0
                   for s in range(1, m.mw + 1) if m.mw % s == 0 and p * s < lanes)


def test_graph_serialization_round_trip(tmp_path, digits_graph):
    graph, _ = digits_graph
    graph = fold_for_cycles(graph, 100)
    save_graph(tmp_path / "g.npz", graph)
    again = load_graph(tmp_path / "g.npz")
    x = rng.choice([-1, 1], size=(20, graph.input_features))
    for a, b in zip(graph.execute(x), again.execute(x)):
        assert np.array_equal(a, b)
    assert [str(m.folding) for m in again.matmuls()] == [str(m.folding) for m in graph.matmuls()]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LowbitError, match="is corrupt"):
        load_graph(tmp_path / "bad.npz")


def test_host_ops():
    a = HostAffine("a", [2.0, -1.0], [0.5, 0.0])
    assert a.reference(np.array([[1, 1]])).tolist() == [[2.5, -1.0]]
    assert ArgMax("m", 3).reference(np.array([[1, 5, 5]])).tolist() == [[1]]
    with pytest.raises(LowbitError, match="scale must be a finite 1-D array"):
        HostAffine("a", [np.nan], [0.0])
