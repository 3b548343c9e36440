"""The generated network in Verilator under cocotb: every output word against the IR reference."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.flow import compile_checkpoint, simulate_build


@pytest.fixture(scope="module")
def builds(tmp_path_factory, digits_checkpoint):
    root = tmp_path_factory.mktemp("builds")
    ckpt, _ = digits_checkpoint
    compile_checkpoint(ckpt, root / "parallel", target_cycles=256)
    compile_checkpoint(ckpt, root / "folded")
    compile_checkpoint(ckpt, root / "pipelined", target_cycles=256, pipeline=1)
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


def test_pipelined_network_is_bit_exact_with_stalls_at_the_same_rate(builds, digits_graph):
    """Registers every counter level: the same cycles per inference as the unpipelined build,
    a latency longer by the stages each engine reports, and every word the IR's."""
    _, check = digits_graph
    plain = json.loads((builds / "parallel" / "manifest.json").read_text())
    piped = json.loads((builds / "pipelined" / "manifest.json").read_text())
    stages = sum(layer["pipeline_stages"] for layer in piped["layers"])
    assert [layer["pipeline"] for layer in piped["layers"]] == [1] * len(piped["layers"]) and stages > 0
    assert piped["cycles_per_inference"] == plain["cycles_per_inference"]
    assert piped["latency_cycles"] > plain["latency_cycles"]
    # Each engine is given one vector per 256 cycles: its output queue holds what is in flight
    # at that pace, not at its own (the faster engines would need more slots at their own).
    for layer in piped["layers"]:
        assert layer["input_interval"] == 256
        assert layer["output_queue_depth"] == layer["latency"] // 256 + 1
    assert any(layer["cycles_per_item"] < 256 for layer in piped["layers"])
    r = simulate_build(builds / "pipelined", seed=4, progress=False)
    assert r["images"] == 360 and r["mismatches"] == 0, r
    assert r["hw_accuracy"] == r["ir_accuracy"] == check["torch_accuracy"]
    assert r["cycles_measured"] == r["cycles_predicted"] == 256
    assert r["latency_measured"] == r["latency_predicted"] == piped["latency_cycles"]
    assert r["idle_fraction_in"] >= 0.2 and r["idle_fraction_out"] >= 0.2


def test_most_folded_network_is_bit_exact_and_on_time(builds):
    r = simulate_build(builds / "folded", limit=24, seed=5, progress=False)
    assert r["images"] == 24
    assert r["mismatches"] == 0, r
    assert r["hw_accuracy"] == r["ir_accuracy"]
    assert r["cycles_measured"] == r["cycles_predicted"] == 64 * 256
    assert r["latency_measured"] == r["latency_predicted"]


def test_a_build_slower_than_the_harness_default_is_waited_for(tmp_path):
    """131,072 cycles per image: the ports stay still longer than the harness's default 100,000
    quiet cycles, and gaps of twice a beat's cycles do not fit its 16-bit draw. The simulation
    waits as long as the build may take, and every beat comes, on time."""
    import numpy as np

    from lowbit.boards.calibrate import random_bipolar_mlp
    from lowbit.compiler.build import write_build
    from lowbit.flow import quiet_cycles

    manifest = write_build(random_bipolar_mlp([64, 2048, 10], [(1, 1), (1, 1)]), tmp_path / "b")
    assert quiet_cycles(manifest) > manifest["latency_cycles"] > manifest["cycles_per_inference"] > 100_000
    x = np.where(np.random.default_rng(0).random((3, 64)) < 0.5, -1, 1)
    r = simulate_build(tmp_path / "b", inputs=x, timing_items=2, progress=False)
    assert r["images"] == 3 and r["mismatches"] == 0
    assert r["cycles_measured"] == r["cycles_predicted"] == 64 * 2048
    assert r["latency_measured"] == r["latency_predicted"]


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason=f"MNIST files not found in {SHARED_DATA}")
def test_mnist_through_the_cli_is_bit_exact(tmp_path):
    """train -> compile -> sim on real MNIST, from the command line, over a few hundred test images."""
    def lowbit(*args):
        r = subprocess.run([sys.executable, "-m", "lowbit", *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = lowbit("train", "--dataset", "mnist", "--data", SHARED_DATA, "--hidden", "64,64", "--epochs", "1",
                 "-o", tmp_path / "m.pt")
    assert float(out.split("test accuracy ")[1].split()[0].rstrip(";")) >= 0.85
    out = lowbit("compile", tmp_path / "m.pt", "--data", SHARED_DATA, "-o", tmp_path / "b", "--folding",
                 "1x49,2x16,1x16")
    assert "IR vs torch on 10000 test images: 0 disagreements" in out
    report = json.loads(lowbit("sim", tmp_path / "b", "--data", SHARED_DATA, "--limit", 300, "--seed", 2))
    assert report["images"] == 300 and report["mismatches"] == 0
    assert report["hw_accuracy"] == report["ir_accuracy"] >= 0.85
    assert report["cycles_measured"] == report["cycles_predicted"] == 64 * 784 // 49


def test_sim_refuses_another_dataset(builds):
    from lowbit.core.errors import LowbitError

    with pytest.raises(LowbitError, match="this build was trained on 'digits', not 'mnist'"):
        simulate_build(builds / "parallel", dataset="mnist")


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "lowbit", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("arch, fmt, act, folding", [
    ("cnn:8:16", "ternary", "2", ["--target-cycles", "200"]),
    ("mlp:32,16", "binary01", "bipolar", []),
    ("mlp:64,32", "levels5", "2", ["--target-fps", "1000000", "--clock", "100"]),
    ("cnn:8:16", "bipolar", "bipolar", ["--target-cycles", "200", "--pipeline", "1"]),
], ids=["cnn-ternary-u2", "mlp-binary01", "mlp-levels5-u2", "cnn-bipolar-pipelined"])
def test_trained_formats_through_the_cli_on_the_whole_digits_test_split(tmp_path, arch, fmt, act, folding):
    """train -> compile -> sim from the command line for other formats and a CNN: the IR equals the
    integer-exact PyTorch model on every test image, and the Verilog equals the IR on every word."""
    _cli("train", "--arch", arch, "--format", fmt, "--act-bits", act, "--epochs", "4", "-o", tmp_path / "m.pt")
    out = _cli("compile", tmp_path / "m.pt", "-o", tmp_path / "b", *folding)
    assert "IR vs torch on 360 test images: 0 disagreements" in out
    report = json.loads(_cli("sim", tmp_path / "b", "--seed", 4))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert report["images"] == 360 and report["mismatches"] == 0, report
    assert report["hw_accuracy"] == report["ir_accuracy"] >= 0.5
    assert report["cycles_measured"] == report["cycles_predicted"] == manifest["cycles_per_inference"]
    if folding:
        assert manifest["cycles_per_inference"] <= 200 if folding[0] == "--target-cycles" else 100
    if "--pipeline" in folding:
        # In front of every engine but a pipelined matrix engine, a FIFO of registers cuts the
        # ready path: after the convolution and after the pool.
        layers = manifest["layers"]
        feeding = [a["name"] for a, b in zip(layers, layers[1:]) if b["op"] != "mvau"]
        assert feeding and {f["after"] for f in manifest["fifos"]} >= set(feeding), manifest["fifos"]
