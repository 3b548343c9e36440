import gc
import re
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from lowbit.compiler.ir import MatMul, MultiThreshold
from lowbit.hw.mvtu import XnorPopcountMVTU
from lowbit.hw.network import DataflowTop
from lowbit.hw.payload import VectorFormat
from lowbit.sim.amaranth_stream import run_amaranth_stream

rng = np.random.default_rng(7)
MH, MW = 8, 12
W = rng.choice([-1, 1], size=(MH, MW))
# Thresholds span the whole range, including "always +1" (<= -MW) and "never" (> MW).
T = np.array([-MW - 3, -MW, -4, 0, 1, 5, MW, MW + 2])
X = rng.choice([-1, 1], size=(60, MW))


def raises_exactly(exc, message, build):
    """``build()`` raises ``exc`` with exactly ``message``; the half-built component is not reported unused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exc, match=f"^{re.escape(message)}$") as info:
            build()
        del info
        gc.collect()


def reference(w, t, x):
    mm = MatMul("m", w)
    y = mm.reference(x)
    return y if t is None else MultiThreshold("t", t[:, None], mm.out_type).reference(y)


def test_construction_and_properties():
    u = XnorPopcountMVTU(W, T, pe=2, simd=4)
    assert (u.mh, u.mw, u.pe, u.simd) == (8, 12, 2, 4)
    assert (u.neuron_folds, u.synapse_folds) == (4, 3)
    assert u.cycles_per_item == 12
    assert u.latency == 14
    assert u.in_format == VectorFormat("bipolar", 1, 12)
    assert u.out_format == VectorFormat("bipolar", 1, 8)
    assert XnorPopcountMVTU(W, None).out_format == VectorFormat("int", 5, 8)  # [-12, 12]


def test_weight_memory_layout():
    u = XnorPopcountMVTU(W, T, pe=2, simd=4)
    words = u.weight_words()
    assert len(words) == u.cycles_per_item
    # word nf*SF+sf, bit p*SIMD+s holds W[nf*PE+p, sf*SIMD+s]
    nf, sf, p, s = 3, 1, 1, 2
    bit = (words[nf * 3 + sf] >> (p * 4 + s)) & 1
    assert bit == (W[nf * 2 + p, sf * 4 + s] == 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pe=3), "PE must divide MH=8, not 3"),
    (dict(simd=5), "SIMD must divide MW=12, not 5"),
    (dict(pe=0), "PE must be a positive integer, not 0"),
    (dict(simd="4"), "SIMD must be a positive integer, not '4'"),
])
def test_bad_folding(kwargs, message):
    raises_exactly(ValueError, message, lambda: XnorPopcountMVTU(W, T, **kwargs))


def test_bad_weights_and_thresholds():
    raises_exactly(ValueError, "Weights must be a non-empty 2-D array of -1/+1, not shape (8, 12) with other values",
                   lambda: XnorPopcountMVTU(np.where(W > 0, 1, 0), T))
    raises_exactly(ValueError, "Thresholds must be an integer array of shape (8,), not float64 (8,)",
                   lambda: XnorPopcountMVTU(W, T.astype(float)))


@pytest.mark.parametrize("thresholds", [T, None], ids=["threshold", "accumulate"])
@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 3), (4, 4), (8, 12)])
def test_matches_reference_with_stalls(thresholds, pe, simd):
    u = XnorPopcountMVTU(W, thresholds, pe=pe, simd=simd)
    res = run_amaranth_stream(u, u.in_format.pack(X), stall=0.4, seed=pe * 10 + simd)
    assert res.outputs == u.out_format.pack(reference(W, thresholds, X))


@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 3), (8, 12)])
def test_timing_without_stalls(pe, simd):
    u = XnorPopcountMVTU(W, T, pe=pe, simd=simd)
    res = run_amaranth_stream(u, u.in_format.pack(X[:10]))
    assert res.latency == u.latency
    assert set(res.intervals) == {u.cycles_per_item}


def test_network_top_chains_engines():
    w2 = rng.choice([-1, 1], size=(4, MH))
    engines = [XnorPopcountMVTU(W, T, pe=2, simd=3), XnorPopcountMVTU(w2, None, pe=1, simd=2)]
    top = DataflowTop(engines)
    assert top.cycles_per_item == max(e.cycles_per_item for e in engines) == 16
    assert top.latency == engines[0].latency + engines[1].latency
    want = MatMul("b", w2).reference(reference(W, T, X))
    res = run_amaranth_stream(top, top.in_format.pack(X), stall=0.3)
    assert res.outputs == top.out_format.pack(want)
    clean = run_amaranth_stream(top, top.in_format.pack(X[:8]))
    assert clean.latency == top.latency
    assert set(clean.intervals) == {top.cycles_per_item}


def test_network_rejects_mismatched_formats():
    engines = [XnorPopcountMVTU(W, T), XnorPopcountMVTU(W, T)]
    for e in engines:
        e._MustUse__silence = True  # never elaborated, on purpose
    raises_exactly(ValueError, "Engine 0 outputs VectorFormat(kind='bipolar', bits=1, count=8) but engine 1 "
                   "takes VectorFormat(kind='bipolar', bits=1, count=12)", lambda: DataflowTop(engines))
    raises_exactly(ValueError, "Engines must be a non-empty list, not []", lambda: DataflowTop([]))


def test_payload_pack_unpack_round_trip():
    for fmt in (VectorFormat("bipolar", 1, 70), VectorFormat("int", 7, 9), VectorFormat("uint", 3, 5)):
        lo, hi = {"bipolar": (-1, 1), "int": (-64, 63), "uint": (0, 7)}[fmt.kind]
        v = rng.integers(lo, hi + 1, size=(30, fmt.count))
        if fmt.kind == "bipolar":
            v = np.where(v >= 0, 1, -1)
        assert np.array_equal(fmt.unpack(fmt.pack(v)), v)
