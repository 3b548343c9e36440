"""The pipeline search: the fewest registers expected to close a clock on a board, and the
compile options that use it."""

import json

import pytest
import torch

from lowbit.boards.calibrate import random_bipolar_mlp
from lowbit.boards.estimate import PIPELINED_FMAX_MHZ, PIPELINED_SCAN_FMAX_MHZ, estimate_fmax_mhz
from lowbit.cli import main
from lowbit.compiler.codegen import describe
from lowbit.compiler.folding import most_folded
from lowbit.core.errors import LowbitError
from lowbit.flow import compile_graph
from lowbit.model.arch import build_model
from lowbit.model.export import export_model
from lowbit.pipelining import pipeline_for_clock


@pytest.fixture(scope="module")
def mlp():
    return random_bipolar_mlp((64, 16, 10), [(4, 16), (2, 16)])


def _levels(graph):
    return {m.pipeline for m in graph.matmuls()}


def test_no_registers_where_the_unpipelined_estimate_closes_the_clock(mlp):
    unpiped = estimate_fmax_mhz(describe(mlp)["layers"], "ecp5")
    graph, levels, fmax = pipeline_for_clock(mlp, unpiped * 0.99, "ulx3s")
    assert levels == 0 and _levels(graph) == {0} and fmax == pytest.approx(unpiped)
    assert graph.meta["pipeline"] == {"levels": 0, "clock_mhz": unpiped * 0.99, "board": "ulx3s",
                                      "estimated_fmax_mhz": fmax}


def test_two_levels_between_registers_where_the_clock_needs_them(mlp):
    unpiped = estimate_fmax_mhz(describe(mlp)["layers"], "ecp5")
    assert unpiped < 150 < PIPELINED_FMAX_MHZ["ecp5"]
    graph, levels, fmax = pipeline_for_clock(mlp, 150, "ulx3s")
    assert levels == 2 and _levels(graph) == {2} and fmax == PIPELINED_FMAX_MHZ["ecp5"]
    # the estimate is the one 'lowbit estimate' gives the pipelined build
    assert estimate_fmax_mhz(describe(graph)["layers"], "ecp5") == fmax


@pytest.mark.parametrize("board, clock", [("ulx3s", 250), ("icebreaker", 60)])
def test_a_clock_beyond_every_depth_is_refused_with_the_best_estimate(mlp, board, clock):
    family = "ecp5" if board == "ulx3s" else "ice40"
    best = max(PIPELINED_FMAX_MHZ[family], estimate_fmax_mhz(describe(mlp)["layers"], family))
    with pytest.raises(LowbitError, match=rf"no pipeline depth is expected to close {clock} MHz on {board} "
                                          rf"\({family}\): the best estimate is {best:.1f} MHz, at --pipeline 2"):
        pipeline_for_clock(mlp, clock, board)


def _random_graph(arch):
    torch.manual_seed(0)
    return most_folded(export_model(build_model(arch).eval()))


def test_engines_with_no_pipelined_form_are_named():
    # binary normalized layers: the per-example normalization is an engine of its own, not pipelined
    graph = _random_graph({"kind": "mlp", "in_features": 48, "hidden": [24, 12], "classes": 5,
                           "weight_format": "binary01", "act": "bipolar"})
    with pytest.raises(LowbitError, match=r"the engines of \S+.* \(normalize\S*\) have no pipelined form"):
        pipeline_for_clock(graph, 150, "ulx3s")


def test_a_cnn_pipelines_its_scans_and_collect_too():
    graph = _random_graph({"kind": "cnn", "in_shape": [1, 8, 8], "channels": [4], "fc": [8], "classes": 3,
                           "weight_format": "bipolar", "act": "bipolar"})
    piped, levels, fmax = pipeline_for_clock(graph, 140, "ulx3s")
    assert levels == 2 and fmax == PIPELINED_SCAN_FMAX_MHZ["ecp5"] < PIPELINED_FMAX_MHZ["ecp5"]
    layers = describe(piped)["layers"]
    assert {layer["op"] for layer in layers} >= {"sliding_window", "maxpool", "collect", "mvau"}
    assert all(layer["pipeline"] == 2 for layer in layers)
    # the placed CNN's figure, not the MLPs': 165 MHz is beyond it, not beyond theirs
    assert PIPELINED_SCAN_FMAX_MHZ["ecp5"] < 165 < PIPELINED_FMAX_MHZ["ecp5"]
    with pytest.raises(LowbitError, match=f"the best estimate is {PIPELINED_SCAN_FMAX_MHZ['ecp5']:.1f} MHz, at "
                                          "--pipeline 2\n"):
        pipeline_for_clock(graph, 165, "ulx3s")


@pytest.mark.parametrize("clock", [0, -1, True, "150"])
def test_the_clock_must_be_a_positive_number(mlp, clock):
    with pytest.raises(LowbitError, match="the clock must be a positive number of MHz"):
        pipeline_for_clock(mlp, clock, "ulx3s")


def test_compile_records_the_choice_and_refuses_conflicts(mlp, tmp_path):
    manifest = compile_graph(mlp, tmp_path / "b", board="ulx3s", clock=150)
    assert manifest["pipeline_choice"]["levels"] == 2
    assert {layer["pipeline"] for layer in manifest["layers"]} == {2}
    assert "pipeline_choice" not in compile_graph(mlp, tmp_path / "c", pipeline=1)
    for kwargs, message in [({"clock": 150}, "give --clock with --board, without --pipeline"),
                            ({"clock": 150, "board": "ulx3s", "pipeline": 1}, "without --pipeline")]:
        with pytest.raises(LowbitError, match=message):
            compile_graph(mlp, tmp_path / "d", **kwargs)
        assert not (tmp_path / "d").exists()


def test_a_board_with_a_target_checks_that_it_fits(mlp, tmp_path):
    with pytest.raises(LowbitError, match="does not fit on icebreaker"):
        compile_graph(random_bipolar_mlp((784, 256, 10)), tmp_path / "b", board="icebreaker", target_cycles=1)
    assert not (tmp_path / "b").exists()
    manifest = compile_graph(mlp, tmp_path / "c", board="icebreaker", target_cycles=16)
    assert manifest["cycles_per_inference"] <= 16


def test_the_cli_prints_the_choice(digits_checkpoint, tmp_path, capsys):
    ckpt = str(digits_checkpoint[0])
    assert main(["compile", ckpt, "-o", str(tmp_path / "b"), "--board", "ulx3s", "--clock", "150",
                 "--target-cycles", "256"]) == 0
    out = capsys.readouterr().out
    assert "pipeline 2: estimated fmax 174.3 MHz on ulx3s for the 150 MHz clock" in out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["pipeline_choice"]["board"] == "ulx3s"
    assert main(["compile", ckpt, "-o", str(tmp_path / "c"), "--clock", "150"]) == 2
    assert "--clock is the clock of --target-fps, or with --board the clock to pipeline for" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    # --target-fps without --board: the clock sets the folding only, as before
    assert main(["compile", ckpt, "-o", str(tmp_path / "d"), "--target-fps", "1e6", "--clock", "150"]) == 0
    assert "pipeline_choice" not in json.loads((tmp_path / "d" / "manifest.json").read_text())


def test_graphs_saved_before_pipelined_scans_still_load(tmp_path):
    """graph.npz files written before the scans and the collect had a pipeline field: they load as
    unpipelined, with the same hardware output."""
    import io

    import numpy as np

    from lowbit.compiler.serialize import load_graph, save_graph

    graph = _random_graph({"kind": "cnn", "in_shape": [1, 8, 8], "channels": [4], "fc": [8], "classes": 3,
                           "weight_format": "bipolar", "act": "bipolar"})
    save_graph(tmp_path / "g.npz", graph)
    with np.load(tmp_path / "g.npz") as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes().decode())
    old = [n for n in header["nodes"] if n["op"] in ("Flatten", "SlidingWindow", "MaxPool")]
    assert {n["op"] for n in old} == {"Flatten", "SlidingWindow", "MaxPool"}
    for n in old:
        del n["pipeline"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "old.npz").write_bytes(buf.getvalue())
    back = load_graph(tmp_path / "old.npz")
    assert all(getattr(n, "pipeline", 0) == 0 for n in back.nodes)
    x = np.where(np.random.default_rng(0).random((5, 8, 8, 1)) < 0.5, -1, 1)
    assert np.array_equal(back.hardware_output(x), graph.hardware_output(x))


def test_a_depth_given_by_hand_drops_the_clock_choice(mlp):
    chosen = pipeline_for_clock(mlp, 150, "ulx3s")[0]
    assert chosen.meta["pipeline"]["levels"] == 2
    from lowbit.compiler.passes import set_pipeline
    assert "pipeline" not in set_pipeline(chosen, 1).meta
