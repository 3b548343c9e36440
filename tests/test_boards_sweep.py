"""lowbit sweep: one architecture across weight formats and foldings, estimated, plotted, reported."""
import json

from lowbit.cli import main


def test_sweep_table_plots_and_report(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--arch", "mlp:32", "--in-shape", "32", "--classes", "4",
                 "--formats", "bipolar,ternary,levels9", "--target-cycles", "1,64,1024",
                 "-o", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    rows = {(r["format"], r["target_cycles"]): r for r in data["rows"]}
    assert len(rows) == 9
    # One cycle per inference needs a single step per layer, which every network here reaches;
    # the folding meets each target exactly or below it.
    for r in rows.values():
        assert r["error"] is None
        assert r["cycles_per_inference"] <= r["target_cycles"]
        assert r["inferences_per_second_at_clock"] == round(100e6 / r["cycles_per_inference"])
    # Weight memory follows bits per weight: 1, 2 and 4 stored bits for 2, 3 and 9 levels.
    weights = 32 * 32 + 32 * 4
    assert rows[("bipolar", 64)]["weight_bits"] == weights
    assert rows[("ternary", 64)]["weight_bits"] == 2 * weights
    assert rows[("levels9", 64)]["weight_bits"] == 4 * weights
    # More levels cost more LUTs at the same folding; unfolding costs more than folding.
    for t in (1, 64, 1024):
        assert rows[("bipolar", t)]["luts"] < rows[("ternary", t)]["luts"] < rows[("levels9", t)]["luts"]
    for fmt in ("bipolar", "ternary", "levels9"):
        assert rows[(fmt, 1)]["luts"] > rows[(fmt, 1024)]["luts"]
    for name in ("luts_vs_bits.png", "throughput_vs_luts.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "sweep.md").read_text()
    assert "random" in report and "| levels9 | 3.17 |" in report
    assert "wrote" in capsys.readouterr().out


def test_sweep_unreachable_target_is_reported(tmp_path):
    # A CNN's first window layer scans every pixel, so 1 cycle per inference cannot be met.
    out = tmp_path / "sweep"
    assert main(["sweep", "--arch", "cnn:4", "--in-shape", "8,8,1", "--classes", "2",
                 "--formats", "bipolar", "--target-cycles", "1,4096", "-o", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert rows[0]["error"] and "no folding reaches 1 cycles per inference" in rows[0]["error"]
    assert rows[1]["error"] is None and rows[1]["cycles_per_inference"] <= 4096
    assert "not reachable" in (out / "sweep.md").read_text()


def test_sweep_bad_format_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--formats", "bipolar,levels7", "-o", str(out)]) == 2
    assert "levels7" in capsys.readouterr().err
    assert not out.exists()
