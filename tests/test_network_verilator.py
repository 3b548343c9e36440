"""The generated network in Verilator under cocotb: every output word against the IR reference."""

import pytest

from lowbit.flow import compile_checkpoint, simulate_build


@pytest.fixture(scope="module")
def builds(tmp_path_factory, digits_checkpoint):
    root = tmp_path_factory.mktemp("builds")
    ckpt, _ = digits_checkpoint
    compile_checkpoint(ckpt, root / "parallel", target_cycles=256)
    compile_checkpoint(ckpt, root / "folded")
    return root


def test_whole_digits_test_split_is_bit_exact_with_stalls(builds, digits_graph):
    _, check = digits_graph
    r = simulate_build(builds / "parallel", seed=3, progress=False)
    assert r["images"] == 360
    assert r["mismatches"] == 0, r
    assert r["hw_accuracy"] == r["ir_accuracy"] == check["torch_accuracy"]
    assert r["cycles_measured"] == r["cycles_predicted"] == 256
    assert r["latency_measured"] == r["latency_predicted"]
    # Both sides really stalled.
    assert r["idle_fraction_in"] >= 0.2 and r["idle_fraction_out"] >= 0.2


def test_most_folded_network_is_bit_exact_and_on_time(builds):
    r = simulate_build(builds / "folded", limit=24, seed=5, progress=False)
    assert r["images"] == 24
    assert r["mismatches"] == 0, r
    assert r["hw_accuracy"] == r["ir_accuracy"]
    assert r["cycles_measured"] == r["cycles_predicted"] == 64 * 256
    assert r["latency_measured"] == r["latency_predicted"]
