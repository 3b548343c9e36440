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


def test_a_pipelined_sweep_quotes_the_pipelined_model_at_the_same_cycles(tmp_path, capsys):
    rows = {}
    for levels in (0, 2):
        out = tmp_path / f"sweep{levels}"
        assert main(["sweep", "--arch", "mlp:32", "--in-shape", "32", "--classes", "4", "--formats", "bipolar",
                     "--target-cycles", "1,64", "--board", "ulx3s", "--pipeline", str(levels), "-o", str(out)]) == 0
        rows[levels] = json.loads((out / "sweep.json").read_text())["rows"]
    assert "| fmax MHz (modelled) | inferences/s at modelled fmax |" in capsys.readouterr().out
    for before, after in zip(rows[0], rows[2]):
        assert (before["pipeline"], after["pipeline"]) == (0, 2)
        assert after["cycles_per_inference"] == before["cycles_per_inference"] and after["folding"] == before["folding"]
        assert before["fmax_mhz"] < after["fmax_mhz"] == 174.3  # the ECP5 pipelined model
        assert after["inferences_per_second_at_fmax"] == round(174.3e6 / after["cycles_per_inference"])


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


def test_pareto_front_keeps_the_designs_nothing_beats():
    from lowbit.sweep import pareto_front

    def row(acc, fps, luts, fits=True, error=None):
        return {"accuracy": acc, "inferences_per_second_at_fmax": fps, "luts": luts, "fits": fits, "error": error}

    rows = [row(0.90, 100, 1000),   # the smallest
            row(0.95, 100, 2000),   # more accurate, larger
            row(0.90, 100, 1500),   # beaten by the first: as accurate, as fast, larger
            row(0.90, 400, 4000),   # the fastest
            row(0.99, 900, 500, fits=False),  # would beat all, but does not fit its board
            row(0.99, 0, 0, error="not reachable")]
    front = pareto_front(rows)
    assert [r["pareto"] for r in rows] == [True, True, False, True, False, False]
    assert front == [rows[0], rows[1], rows[3]]
    # Without accuracy (random weights), throughput and LUTs alone decide.
    for r in rows:
        del r["accuracy"]
    pareto_front(rows)
    assert [r["pareto"] for r in rows] == [True, False, False, True, False, False]


def test_sweep_trains_each_format_and_marks_the_front(tmp_path, capsys):
    from lowbit.flow import export_checkpoint

    out = tmp_path / "sweep"
    assert main(["sweep", "--arch", "mlp:16", "--dataset", "digits", "--epochs", "1", "--formats", "bipolar,ternary",
                 "--target-cycles", "64,256", "--board", "arty-a7-35,icebreaker", "--workers", "1",
                 "-o", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["boards"] == ["arty-a7-35", "icebreaker"] and data["failed"] == []
    rows = data["rows"]
    assert [(r["format"], r["target_cycles"], r["board"]) for r in rows] == [
        (f, t, b) for f in ("bipolar", "ternary") for t in (64, 256) for b in ("arty-a7-35", "icebreaker")]
    trained = {t["format"]: t for t in data["trained"]}
    for r in rows:
        # The rows carry the IR accuracy of their format's trained network, equal to PyTorch's.
        assert r["accuracy"] == trained[r["format"]]["accuracy"] == trained[r["format"]]["torch_accuracy"]
        assert r["accuracy"] > 0.5
    for fmt in ("bipolar", "ternary"):
        # The checkpoint written is the network the rows describe.
        _, check = export_checkpoint(out / "checkpoints" / f"{fmt}.pt")
        assert check["ir_accuracy"] == trained[fmt]["accuracy"]
    # The front, checked against its definition.
    ok = [r for r in rows if r["error"] is None and r["fits"]]

    def beats(a, b):
        fps = "inferences_per_second_at_fmax"
        ge = a["accuracy"] >= b["accuracy"] and a[fps] >= b[fps] and a["luts"] <= b["luts"]
        return ge and (a["accuracy"], a[fps], a["luts"]) != (b["accuracy"], b[fps], b["luts"])

    for r in rows:
        assert r["pareto"] == (r in ok and not any(beats(o, r) for o in ok))
    assert any(r["pareto"] for r in rows)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "sweep.md").read_text()
    assert "Pareto front" in report and "trained for 1 epochs" in report


def test_sweep_with_a_dataset_refuses_an_input_shape(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--dataset", "digits", "--in-shape", "64", "-o", str(out)]) == 2
    assert "come from the dataset" in capsys.readouterr().err
    assert not out.exists()
