"""Board clocks: the PLL settings of lowbit.boards.pll, and bitstreams whose network runs on the PLL's
clock while the UART stays on the oscillator (``lowbit build --clock``)."""

import json
import math
import re
import time
from fractions import Fraction

import pytest
from amaranth.hdl import IOPort, Signal

from lowbit.boards.build import build_for_board
from lowbit.boards.calibrate import random_bipolar_mlp
from lowbit.boards.pll import DEFAULT_TOLERANCE, find_pll, pll_instance
from lowbit.cli import main
from lowbit.compiler.build import write_build
from lowbit.core.errors import LowbitError

MHZ = 1_000_000


def _ice40_f(p, f_in):
    return Fraction(f_in) * (p["DIVF"] + 1) / ((p["DIVR"] + 1) * 2 ** p["DIVQ"])


def _ecp5_f(p, f_in):
    return Fraction(f_in) * p["CLKFB_DIV"] / p["CLKI_DIV"]


def _check_ice40(s, f_in):
    p = s.params
    assert 0 <= p["DIVR"] <= 15 and 0 <= p["DIVF"] <= 127 and 1 <= p["DIVQ"] <= 6
    assert s.achieved_hz == _ice40_f(p, f_in)
    assert s.pfd_hz == Fraction(f_in) / (p["DIVR"] + 1) and 10 * MHZ <= s.pfd_hz <= 133 * MHZ
    assert s.vco_hz == s.achieved_hz * 2 ** p["DIVQ"] and 533 * MHZ <= s.vco_hz <= 1066 * MHZ
    assert 16 * MHZ <= s.achieved_hz <= 275 * MHZ
    # the loop filter of the phase detector's band: <17, <26, <44, <66, <101 MHz, above
    bands = [17, 26, 44, 66, 101]
    assert p["FILTER_RANGE"] == 1 + sum(s.pfd_hz >= b * MHZ for b in bands)


def _check_ecp5(s, f_in):
    p = s.params
    assert 1 <= p["CLKI_DIV"] <= 128 and 1 <= p["CLKFB_DIV"] <= 80 and 1 <= p["CLKOP_DIV"] <= 128
    assert s.achieved_hz == _ecp5_f(p, f_in)
    assert s.pfd_hz == Fraction(f_in) / p["CLKI_DIV"] and Fraction(3125, 1000) * MHZ <= s.pfd_hz <= 400 * MHZ
    assert s.vco_hz == s.achieved_hz * p["CLKOP_DIV"] and 400 * MHZ <= s.vco_hz <= 800 * MHZ
    assert p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1


def _nearest_ice40(f_in, f_req):
    """Every legal output frequency, enumerated from the output side (DIVQ first)."""
    best = None
    for divq in range(1, 7):
        for divr in range(16):
            for divf in range(128):
                f = Fraction(f_in) * (divf + 1) / ((divr + 1) * 2 ** divq)
                pfd, vco = Fraction(f_in) / (divr + 1), f * 2 ** divq
                if 10 * MHZ <= pfd <= 133 * MHZ and 533 * MHZ <= vco <= 1066 * MHZ and 16 * MHZ <= f <= 275 * MHZ:
                    best = f if best is None or abs(f - f_req) < abs(best - f_req) else best
    return best


def test_ice40_settings_from_the_icebreaker_oscillator():
    s = find_pll("ice40", 12e6, 18e6)
    # 12 MHz x 48 = 576 MHz VCO, / 2**5 = 18 MHz exactly
    assert s.params == {"DIVR": 0, "DIVF": 47, "DIVQ": 5, "FILTER_RANGE": 1} and s.achieved_hz == 18 * MHZ
    assert s.error == 0.0
    for mhz in (16.2, 18, 20, 25, 30, 33.3, 48, 60, 75, 100, 120, 150, 200, 270):
        s = find_pll("ice40", 12e6, mhz * 1e6)
        _check_ice40(s, 12 * MHZ)
        assert s.error <= DEFAULT_TOLERANCE and s.requested_hz == Fraction(mhz * 1e6)
        assert abs(s.achieved_hz - s.requested_hz) == abs(_nearest_ice40(12 * MHZ, s.requested_hz) - s.requested_hz)


def test_ice40_settings_from_other_references():
    # A reference above 20 MHz can be divided (DIVR > 0) and use other loop filters.
    for f_in, mhz in ((30e6, 100), (100e6, 48), (50e6, 33.3), (130e6, 250)):
        s = find_pll("ice40", f_in, mhz * 1e6)
        _check_ice40(s, Fraction(f_in))
        assert s.error <= DEFAULT_TOLERANCE
    assert find_pll("ice40", 100e6, 48e6).params["FILTER_RANGE"] > 1


def test_ecp5_settings_from_the_ulx3s_oscillator():
    s = find_pll("ecp5", 25e6, 50e6)
    assert s.achieved_hz == 50 * MHZ and s.params["CLKI_DIV"] == 1 and s.params["CLKFB_DIV"] == 2
    for mhz in (10, 12.5, 33.333, 40, 50, 62.5, 65, 100, 125, 133.333, 200, 250, 400):
        s = find_pll("ecp5", 25e6, mhz * 1e6)
        _check_ecp5(s, 25 * MHZ)
        assert s.error <= DEFAULT_TOLERANCE
    assert find_pll("ecp5", 100e6, 123.4e6, tolerance=1e-3).error < 1e-3  # a finer grid from 100 MHz
    d = find_pll("ecp5", 25e6, 65e6).as_dict()
    assert d["input_mhz"] == 25.0 and d["requested_mhz"] == 65.0 and d["achieved_mhz"] == 65.0
    assert d["vco_mhz"] == 65.0 * d["params"]["CLKOP_DIV"]


def test_the_nearest_clock_is_named_when_none_is_near_enough():
    with pytest.raises(LowbitError, match=r"no ice40 PLL setting gives 10 MHz from the 12 MHz oscillator within "
                                          r"1\.00%: the nearest is 16\.125 MHz") as e:
        find_pll("ice40", 12e6, 10e6)  # below the iCE40 PLL's 16 MHz
    assert "ask for 16.125 MHz, or another clock between 16 MHz and 275 MHz" in e.value.hint
    # from 25 MHz the ECP5 steps are 3.125 MHz: 71.875 and 75 are the nearest to 73.3
    with pytest.raises(LowbitError, match=r"the nearest is 71\.875 MHz \(1\.94% off\)"):
        find_pll("ecp5", 25e6, 73.3e6)
    assert find_pll("ecp5", 25e6, 73.3e6, tolerance=0.02).achieved_hz == Fraction(71875, 1000) * MHZ


def test_bad_pll_requests():
    with pytest.raises(LowbitError, match="lowbit makes no PLL for the 'xilinx' family"):
        find_pll("xilinx", 100e6, 50e6)
    with pytest.raises(LowbitError, match="the requested frequency must be a positive number of hertz, not -5"):
        find_pll("ice40", 12e6, -5)
    with pytest.raises(LowbitError, match="a 5 MHz reference is outside the ice40 PLL's input range 10 MHz to 133 MHz"):
        find_pll("ice40", 5e6, 50e6)
    with pytest.raises(ValueError, match="The iCE40 PLL takes the oscillator's pin and needs ref_out"):
        pll_instance(find_pll("ice40", 12e6, 18e6), clk_in=Signal(), clk_out=Signal(), lock=Signal())


def test_pll_primitives_carry_the_setting():
    s = find_pll("ice40", 12e6, 30e6)
    pll = pll_instance(s, clk_in=IOPort(1, name="clk12"), clk_out=Signal(), lock=Signal(), ref_out=Signal())
    assert pll.type == "SB_PLL40_2_PAD" and pll.parameters["FEEDBACK_PATH"] == "SIMPLE"
    assert {k: pll.parameters[k] for k in s.params} == s.params
    s = find_pll("ecp5", 25e6, 50e6)
    pll = pll_instance(s, clk_in=Signal(), clk_out=Signal(), lock=Signal())
    assert pll.type == "EHXPLLL" and pll.parameters["FEEDBK_PATH"] == "CLKOP"
    assert {k: pll.parameters[k] for k in s.params} == s.params


@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory):
    """The 64-16-10 binary MLP of the bitstream tests (unpipelined: about 22 MHz on iCE40, 73 on ECP5)."""
    path = tmp_path_factory.mktemp("pll") / "b"
    write_build(random_bipolar_mlp([64, 16, 10], [(1, 16), (2, 16)]), path)
    return path


@pytest.mark.parametrize("board, mhz, oscillator, bitstream", [
    ("icebreaker", 18, 12, "icebreaker.bin"),
    ("ulx3s", 50, 25, "ulx3s.bit"),
])
def test_a_bitstream_with_the_network_on_the_pll(mlp_build, tmp_path, capsys, board, mhz, oscillator, bitstream):
    # place and route is cached in ~/.cache/lowbit/pnr
    start = time.monotonic()
    assert main(["build", str(mlp_build), "--board", board, "--clock", str(mhz), "-o", str(tmp_path / "out")]) == 0
    seconds = time.monotonic() - start
    out = capsys.readouterr().out
    assert f"network clock {mhz:g} MHz from the PLL" in out
    assert (tmp_path / "out" / bitstream).stat().st_size > 100_000
    report = json.loads((tmp_path / "out" / "board_report.json").read_text())
    ck = report["clock"]
    assert ck["oscillator_mhz"] == oscillator and ck["requested_mhz"] == ck["network_mhz"] == mhz
    assert ck["pll"]["achieved_mhz"] == mhz and ck["pll"]["params"] == find_pll(
        "ice40" if board == "icebreaker" else "ecp5", oscillator * 1e6, mhz * 1e6).params
    # two clocks placed: the network's, constrained to the PLL's output, and the oscillator's
    placed = report["placed"]
    assert len(placed["fmax_mhz"]) == 2 and ck["network_constraint_mhz"] == pytest.approx(mhz, 1e-3)
    assert ck["network_net"] in ("network_clk", "$glbnet$network_clk")
    assert ck["network_fmax_mhz"] == placed["fmax_mhz"][ck["network_net"]] > mhz
    assert ck["slack_ns"] == pytest.approx(1e3 / mhz - 1e3 / ck["network_fmax_mhz"]) and ck["slack_ns"] > 0
    assert ck["meets_timing"] and ck["oscillator_fmax_mhz"] > oscillator and report["warnings"] == []
    assert placed["utilization"]["ICESTORM_PLL" if board == "icebreaker" else "EHXPLLL"]["used"] == 1
    assert placed["inferences_per_second_at_clock"] == mhz * 1e6 / report["estimate"]["cycles_per_inference"]
    print(f"{board} at {mhz} MHz: network fmax {ck['network_fmax_mhz']:.1f} MHz, {seconds:.1f} s "
          f"(place and route {placed['seconds']:.1f} s, cached {placed['cached']})")


def test_a_clock_beyond_the_placed_fmax_is_refused_unless_allowed(mlp_build, tmp_path, capsys):
    # 120 MHz on iCE40: the PLL makes it exactly (12 MHz x 80 / 8), the placed network is far slower.
    out = tmp_path / "out"
    assert main(["build", str(mlp_build), "--board", "icebreaker", "--clock", "120", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the network clock of 120 MHz is faster than its domain's placed fmax of" in err
    assert "MHz on icebreaker: slack -" in err and "--allow-slower" in err
    # the critical path is named by engine, layer and signal, both ends inside the network
    assert re.search(r"its critical path runs from engine\d \(fc\d\): \S+ to engine\d \(fc\d\): \S+ "
                     r"\(\d+\.\d\d ns\)", err), err
    assert not out.exists()  # nothing written
    assert main(["build", str(mlp_build), "--board", "icebreaker", "--clock", "120", "--allow-slower",
                 "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "lowbit build: warning: the network clock of 120 MHz is faster" in captured.err
    report = json.loads((out / "board_report.json").read_text())
    ck = report["clock"]
    assert not ck["meets_timing"] and ck["slack_ns"] < 0 and ck["network_mhz"] == 120
    assert ck["pll"]["params"] == {"DIVR": 0, "DIVF": 79, "DIVQ": 3, "FILTER_RANGE": 1}
    # placed to the end for the clock asked, whose constraint it misses
    assert ck["network_fmax_mhz"] < ck["network_constraint_mhz"] and abs(ck["network_constraint_mhz"] - 120) < 0.1
    path = ck["critical_path"]
    # the path is the domain's critical one: its delay is the placed period
    assert abs(path["delay_ns"] - 1e3 / ck["network_fmax_mhz"]) < 0.05, path
    assert path["start_cell"].startswith("link.network.network.engine") and path["segments"] > 3
    assert report["warnings"] == [f"the network clock of 120 MHz is faster than its domain's placed fmax of "
                                  f"{ck['network_fmax_mhz']:.2f} MHz on icebreaker: slack {ck['slack_ns']:.2f} ns; "
                                  f"its critical path runs from {path['start']} to {path['end']} "
                                  f"({path['delay_ns']:.2f} ns) (built anyway: --allow-slower)"]
    assert (out / "icebreaker.bin").stat().st_size > 100_000


def test_placement_seeds_are_tried_until_one_reaches_the_clock_and_the_fastest_is_kept(mlp_build, tmp_path, capsys):
    # 120 MHz is beyond every placement of this network: each of the 3 seeds is tried.
    out = tmp_path / "out"
    assert main(["build", str(mlp_build), "--board", "icebreaker", "--clock", "120", "--allow-slower",
                 "--seeds", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    placed = json.loads((out / "board_report.json").read_text())["placed"]
    tried = {int(k): v for k, v in placed["fmax_by_seed"].items()}
    assert list(tried) == [1, 2, 3] and len(set(tried.values())) > 1  # the seeds place it differently
    assert tried[placed["seed"]] == max(tried.values())
    ck = json.loads((out / "board_report.json").read_text())["clock"]
    assert round(ck["network_fmax_mhz"], 2) == max(tried.values())  # the report is the kept placement's
    assert f"placed with seed {placed['seed']} (fmax MHz by seed: seed 1: {tried[1]:.1f}" in printed
    # A clock the first seed reaches: no other seed is tried.
    reached = math.floor(tried[1])
    assert main(["build", str(mlp_build), "--board", "icebreaker", "--clock", str(reached), "--seeds", "3",
                 "-o", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first" / "board_report.json").read_text())["placed"]
    assert first["seed"] == 1 and list(first["fmax_by_seed"]) == ["1"]
    for bad in ("0", "21", "two"):
        with pytest.raises(SystemExit) as e:
            main(["build", str(mlp_build), "--board", "icebreaker", "--seeds", bad, "-o", str(tmp_path / "o")])
        assert e.value.code == 2
    assert "--seeds: must be a number of placement seeds in [1, 20], not 'two'" in capsys.readouterr().err
    with pytest.raises(LowbitError, match="the placement seeds must be a whole number from 1 to 20, not 0"):
        build_for_board(mlp_build, "icebreaker", tmp_path / "o", seeds=0)
    assert not (tmp_path / "o").exists()


def test_a_clock_the_pll_cannot_make_is_refused_before_any_tool(mlp_build, tmp_path, capsys):
    start = time.monotonic()
    assert main(["build", str(mlp_build), "--board", "icebreaker", "--clock", "10", "-o", str(tmp_path / "o")]) == 2
    assert "no ice40 PLL setting gives 10 MHz from the 12 MHz oscillator" in capsys.readouterr().err
    assert main(["build", str(mlp_build), "--board", "arty-a7-35", "--clock", "50", "-o", str(tmp_path / "o")]) == 2
    assert "a network clock is set in a bitstream; arty-a7-35" in capsys.readouterr().err
    assert time.monotonic() - start < 20 and not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        main(["build", str(mlp_build), "--board", "icebreaker", "--clock", "-3", "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    with pytest.raises(LowbitError, match="the network clock must be a positive number of MHz, not 0"):
        build_for_board(mlp_build, "icebreaker", tmp_path / "o", clock_mhz=0)
