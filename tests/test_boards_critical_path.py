"""The critical path of a clock, read from nextpnr's report and named by engine and signal."""

import json

import pytest

from lowbit.boards.critical_path import critical_path, engine_names, signal_of_cell
from lowbit.core.errors import LowbitError


def _segment(kind, cell, delay):
    end = {"cell": cell, "loc": [1, 1], "port": "O"}
    return {"type": kind, "delay": delay, "from": end, "to": end}


def _report(tmp_path, paths):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"fmax": {}, "utilization": {}, "critical_paths": paths}))
    return path


MANIFEST = {"layers": [{"name": "fc0"}, {"name": "fc1"}, {"name": "fc2"}], "fifos": [{"after": "fc0"}]}


def test_engines_are_named_in_the_order_of_the_networks_submodules():
    assert engine_names(MANIFEST) == ["fc0", "FIFO after fc0", "fc1", "fc2"]


@pytest.mark.parametrize("cell, name", [
    ("link.network.network.engine0.pe0_row.x_SB_DFFESR_Q_14_D_SB_LUT4_O_LC", "engine0 (fc0): pe0_row.x"),
    ("link.network.network.engine2.out_build0_SB_DFFESR_Q_5_DFFLC", "engine2 (fc1): out_build0"),
    ("link.network.network.engine3.weights_rom._0__TRELLIS_FF_Q_4", "engine3 (fc2): weights_rom._0_"),
    ("link.network.network.engine1.storage.0.9$DPRAM_COMB1", "engine1 (FIFO after fc0): storage.0.9"),
    ("link.network.network.engine7.acc_TRELLIS_FF_Q", "engine7: acc"),  # beyond the manifest: unnamed layer
    ("link.streamer_state_SB_DFFSR_Q_D_SB_LUT4_O_LC", "link.streamer_state"),
    ("link.network.network.engine0.weights_rom.memory.0.11", "engine0 (fc0): weights_rom.memory.0.11"),
])
def test_cells_are_named_by_engine_layer_and_signal(cell, name):
    assert signal_of_cell(cell, engine_names(MANIFEST)) == name


def test_the_path_of_the_asked_clock_is_read(tmp_path):
    report = _report(tmp_path, [
        {"from": "posedge clk", "to": "posedge clk", "path": [_segment("clk-to-q", "link.a_SB_DFF_Q_DFFLC", 1.0),
                                                              _segment("setup", "link.b_SB_DFF_Q_DFFLC", 0.5)]},
        {"from": "posedge clk", "to": "posedge network_clk", "path": [_segment("clk-to-q", "x", 9.0)]},
        {"from": "posedge network_clk", "to": "posedge network_clk", "path": [
            _segment("clk-to-q", "link.network.network.engine2.pe0_row.x_SB_DFF_Q_DFFLC", 1.39),
            _segment("routing", "link.network.network.engine2.t_SB_LUT4_O_LC", 2.0),
            _segment("setup", "link.network.network.engine3.acc_SB_DFFESR_Q_3_DFFLC", 0.11)]},
    ])
    path = critical_path(report, "network_clk", engine_names(MANIFEST))
    assert path["start"] == "engine2 (fc1): pe0_row.x" and path["end"] == "engine3 (fc2): acc"
    assert path["delay_ns"] == pytest.approx(3.5) and path["segments"] == 3
    assert path["end_cell"] == "link.network.network.engine3.acc_SB_DFFESR_Q_3_DFFLC"
    assert critical_path(report, "clk")["delay_ns"] == pytest.approx(1.5)  # not the crossing's path
    assert critical_path(report, "other_clk") is None


def test_a_report_that_is_not_nextpnrs_is_a_clear_error(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(LowbitError, match="cannot read the critical path of 'clk' from nextpnr's report"):
        critical_path(bad, "clk")
    broken = _report(tmp_path, [{"from": "posedge clk", "to": "posedge clk", "path": [{"delay": 1.0}]}])
    with pytest.raises(LowbitError, match="cannot read the critical path"):
        critical_path(broken, "clk")
