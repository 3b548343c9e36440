"""`make demo`'s job, end to end: train, export and check, two foldings through Verilator and Yosys."""

import json
import re

from test_axi_stream import AXI_PORTS, _top_ports


def test_demo_runs_and_reports(tmp_path):
    from lowbit.demo import run_demo

    lines = []
    report = run_demo(tmp_path / "demo", hidden=(16, 16), epochs=2, progress=False, log=lines.append)
    rows = report["rows"]
    assert [r["folding"].count(",") for r in rows] == [2, 2]
    assert all(r["mismatches"] == 0 and r["images"] == 360 for r in rows)
    assert all(r["hw_accuracy"] == r["ir_accuracy"] == r["torch_accuracy"] for r in rows)
    assert rows[0]["cycles_per_inference"] > rows[1]["cycles_per_inference"]
    assert all(r["luts"] > 0 for r in rows)
    # throughput at the modelled fmax, labelled so, never at a nominal clock
    assert all(abs(r["inferences_per_second_at_modelled_fmax"] * r["cycles_per_inference"] / 1e6
                   - r["fmax_mhz_modelled"]) < 0.05 and r["fmax_mhz_modelled"] > 0 for r in rows)
    assert report["check"]["logit_mismatches"] == 0
    out = tmp_path / "demo"
    assert json.loads((out / "report.json").read_text())["rows"] == rows
    for name in ("report.md", "report.png", "model.pt", "most-folded/lowbit_top.v", "parallel/manifest.json"):
        assert (out / name).is_file(), name
    assert any(re.search(r"float-tie thresholds \d+$", line) for line in lines)
    # the written Verilog has the AXI4-Stream top
    for folding in ("most-folded", "parallel"):
        ports = _top_ports((out / folding / "lowbit_top.v").read_text())
        assert {k: d for k, (d, _) in ports.items()} == AXI_PORTS, folding
