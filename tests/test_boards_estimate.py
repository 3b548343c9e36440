"""lowbit.boards: board database, estimator against recorded synthesis, fit checks, CLI."""
import json

import pytest

from lowbit.boards.boards import BOARDS, get_board
from lowbit.boards.build import build_for_board
from lowbit.boards.calibrate import SWEEP, load_calibration, random_bipolar_mlp, sweep_families
from lowbit.boards.estimate import estimate_layer, estimate_manifest, load_models, rom_brams
from lowbit.cli import main
from lowbit.hw.unused import unelaborated
from lowbit.compiler.codegen import write_build
from lowbit.errors import LowbitError


def test_boards_have_capacities():
    assert set(BOARDS) == {"icebreaker", "ulx3s", "arty-a7-35", "arty-z7-20"}
    ice = get_board("icebreaker")
    assert (ice.family, ice.luts, ice.brams, ice.clock_hz) == ("ice40", 5280, 30, 12e6)
    assert ice.platform_class().__name__ == "ICEBreakerPlatform"
    assert get_board("ulx3s").platform_class().__name__ == "ULX3S_85F_Platform"
    assert get_board("arty-a7-35").family == "xilinx"


def test_unknown_board():
    with pytest.raises(LowbitError, match=r"unknown board 'zedboard'; known boards: icebreaker, "
                                          r"ulx3s, arty-a7-35, arty-z7-20"):
        get_board("zedboard")


def test_unknown_board_cli(tmp_path, capsys):
    write_build(random_bipolar_mlp([16, 8, 4]), tmp_path / "b")
    assert main(["estimate", str(tmp_path / "b"), "--board", "zedboard"]) == 2
    assert "unknown board 'zedboard'" in capsys.readouterr().err


@pytest.mark.parametrize("row", load_calibration(), ids=lambda r: f"{r['engine']}-{r['family']}")
def test_estimate_matches_recorded_synthesis(row):
    est = estimate_layer(row["layer"], row["family"])
    # 15 %, or 16 LUTs for the window engines of a few dozen LUTs (their line memories are
    # distributed RAM, not counted as LUTs), where one LUT is several percent.
    assert abs(est["luts"] - row["luts"]) <= max(0.15 * row["luts"], 16)
    assert est["dsps"] == row["dsps"]
    assert est["brams"] == row["brams"]


def test_calibration_covers_sweep():
    rows = load_calibration()
    assert {(r["engine"], r["family"]) for r in rows} == \
        {(s.name, f) for s in SWEEP for f in sweep_families(s)}
    # Every lane and engine kind is calibrated on xc7.
    assert {r["layer"].get("lane", r["layer"]["op"]) for r in rows if r["family"] == "xilinx"} == {
        "xnor-popcount", "add-sub", "add-sub-skip", "and-popcount", "lut-multiply", "shift",
        "sliding_window", "maxpool", "collect", "normalize_sign"}
    assert set(load_models()) == {"xilinx", "ice40", "ecp5"}


@pytest.mark.parametrize("depth, width, family, brams", [
    (512, 16, "xilinx", 0), (512, 64, "xilinx", 2), (1024, 16, "xilinx", 1),
    (1024, 256, "xilinx", 15), (256, 256, "xilinx", 0), (2048, 4, "xilinx", 0),
])
def test_rom_mapping_rule(depth, width, family, brams):
    # Lone ROMs synthesized with Yosys 0.70 (synth_xilinx) mapped to these RAMB18 counts.
    assert rom_brams(depth, width, family) == brams


def test_cycles_exact_vs_manifest(tmp_path):
    graph = random_bipolar_mlp([64, 32, 16, 10], [(2, 16), (4, 8), (5, 4)])
    manifest = write_build(graph, tmp_path / "b")
    est = estimate_manifest(manifest, "ulx3s")
    want = [m.cycles(m.folding) for m in graph.matmuls()]
    assert [r["cycles"] for r in est["layers"]] == want == \
        [layer["cycles_per_item"] for layer in manifest["layers"]]
    assert est["cycles_per_inference"] == manifest["cycles_per_inference"] == max(want)
    assert est["latency_cycles"] == manifest["latency_cycles"] == sum(c + 2 for c in want)
    assert est["inferences_per_second_at_clock"] == 25e6 / max(want)


def test_too_big_refused_with_numbers(tmp_path, capsys):
    # 32 rows x 128 columns of XNOR lanes per cycle: far beyond 5280 LUT4, yet quick to generate
    # (a folded engine with a ROM, not thousands of baked-in constants).
    write_build(random_bipolar_mlp([128, 64, 10], [(32, 128), (10, 64)]), tmp_path / "b")
    est = estimate_manifest(json.loads((tmp_path / "b" / "manifest.json").read_text()), "icebreaker")
    assert not est["fits"] and est["over"]["luts"] == est["total"]["luts"] - 5280
    with pytest.raises(LowbitError, match=rf"does not fit on icebreaker \(iCE40UP5K-SG48\): "
                                          rf"{est['total']['luts']} LUT of 5280 \(over by "
                                          rf"{est['over']['luts']}\)"):
        build_for_board(tmp_path / "b", "icebreaker", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # estimate reports and succeeds; build exits 2 with the same numbers.
    assert main(["estimate", str(tmp_path / "b"), "--board", "icebreaker"]) == 0
    assert f"over by {est['over']['luts']}" in capsys.readouterr().out
    assert main(["build", str(tmp_path / "b"), "--board", "icebreaker", "-o",
                 str(tmp_path / "out")]) == 2
    assert f"over by {est['over']['luts']}" in capsys.readouterr().err


def test_icebreaker_bitstream(tmp_path, capsys):
    # A small binary MLP on digits-sized input; place and route is cached in ~/.cache/lowbit/pnr.
    write_build(random_bipolar_mlp([64, 16, 10], [(1, 16), (2, 16)]), tmp_path / "b")
    assert main(["build", str(tmp_path / "b"), "--board", "icebreaker", "-o",
                 str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    bitstream = (out / "icebreaker.bin").read_bytes()
    assert len(bitstream) > 100_000  # an UP5K image is about 104 KB
    report = json.loads((out / "board_report.json").read_text())
    lc = report["placed"]["utilization"]["ICESTORM_LC"]
    assert 0 < lc["used"] <= lc["available"] == 5280
    assert min(report["placed"]["fmax_mhz"].values()) > 12.0
    assert "fmax" in capsys.readouterr().out


@pytest.mark.parametrize("arch, in_shape, fmt, ops", [
    ("cnn:4,8:16", (12, 12, 1), "bipolar", {"sliding_window", "mvau", "maxpool", "collect"}),
    ("mlp:32", (32,), "binary01", {"mvau", "normalize_sign"}),
    ("mlp:32,16", (32,), "levels5", {"mvau"}),
])
def test_estimate_every_layer_kind(arch, in_shape, fmt, ops):
    # Random models of the compiled kinds: CNNs (windows, pools, collect) and binary normalized
    # nets (normalize-sign); the manifest needs the engines' parameters only, not their Verilog.
    from lowbit.compiler.codegen import build_manifest, lower
    from lowbit.compiler.export import export_model
    from lowbit.compiler.folding import fold_for_cycles
    from lowbit.sweep import _random_model, random_model_arch

    a = random_model_arch(arch, fmt, in_shape=in_shape, classes=4)
    graph = fold_for_cycles(export_model(_random_model(a, seed=1)), 4096)
    manifest = build_manifest(graph, unelaborated(lower(graph)))
    assert {layer["op"] for layer in manifest["layers"]} == ops
    est = estimate_manifest(manifest, "arty-a7-35")
    assert [r["op"] for r in est["layers"]] == [layer["op"] for layer in manifest["layers"]]
    # A collect of one pixel is a plain register: no LUTs, but every engine holds state.
    assert all(r["ffs"] > 0 and (r["luts"] > 0 or r["op"] == "collect") for r in est["layers"])
    assert est["total"]["luts"] == sum(r["luts"] for r in est["layers"])
    assert est["cycles_per_inference"] == max(layer["cycles_per_inference"]
                                              for layer in manifest["layers"])
    assert est["inferences_per_second_at_clock"] == 100e6 / est["cycles_per_inference"]


def test_uncalibrated_lane_refused_on_family():
    # Multi-level lanes are calibrated on xc7 only; iCE40 says so instead of guessing.
    layer = next(r["layer"] for r in load_calibration()
                 if r["family"] == "xilinx" and r["layer"].get("lane") == "lut-multiply")
    with pytest.raises(LowbitError, match=r"not calibrated for 'lut-multiply-k' on ice40"):
        estimate_layer(layer, "ice40")
