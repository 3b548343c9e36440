"""ECP5 block RAM output registers: a register that only samples a RAM's output moves into it.

A DP16KD read without its output register (``REGMODE NOREG``, the only mode Yosys infers) gives
its data about 5.6 ns after the clock on speed grade 6: a design whose RAM output meets any logic,
or even a register a few rows away, stays under 150 MHz. With ``REGMODE OUTREG`` the RAM registers
its own output and the data comes 1 ns after the clock, one cycle later.

A pipelined engine registers its ROM's output right away, with no enable and no reset
(:class:`lowbit.hw.mvau.MatrixVectorUnit`), which is exactly what the output register does. So
the synthesized netlist is rewritten before placement: where every used output bit of a DP16KD
drives nothing but the data input of such a flip-flop on the RAM's read clock, the flip-flops go
and the RAM's outputs take their nets, in ``OUTREG`` mode. Any other RAM is left as it is.

Run as ``python -m lowbit.boards.bram_outreg NEXTPNR ARGS...``: rewrites the ``--json`` netlist of
the nextpnr command line in place, then runs it.
"""

import json
import os
import sys
from collections import defaultdict

from lowbit.core.files import atomic_write_text

__all__ = ["absorb_output_registers", "VERSION"]

# Part of the place-and-route cache key: a change to the rewrite must rebuild.
VERSION = 1

_SIDES = "AB"


def _sides(cell):
    """Per output side of a DP16KD, ``(outputs, clock port, its mux's value, reset, enable)``.
    Read 36 bits wide (as Yosys maps a wide ROM), both sides' outputs come from port B's read."""
    wide = int(cell["parameters"].get("DATA_WIDTH_B", "0"), 2) == 36
    for side in _SIDES:
        port = "B" if wide else side
        yield [f"DO{side}{k}" for k in range(18)], f"CLK{port}", f"CLK{port}", f"RST{port}", f"OCE{port}"


def _plain_register(cell, clock):
    """Whether ``cell`` is a flip-flop on ``clock`` that loads every cycle, never resets and
    starts at 0: what a RAM output register does."""
    if cell["type"] != "TRELLIS_FF":
        return False
    p, c = cell["parameters"], cell["connections"]
    enabled = p.get("CEMUX", "").strip() == "1" or c.get("CE") == ["1"]
    no_reset = c.get("LSR", ["0"]) == ["0"] or p.get("LSRMUX", "").strip() == "0"
    return (c.get("CLK") == clock and p.get("CLKMUX", "").strip() == "CLK" and enabled and no_reset
            and p.get("REGSET", "RESET").strip() == "RESET")


def absorb_output_registers(netlist):
    """Rewrite ``netlist`` (Yosys JSON, as a dict) in place; returns the RAMs moved to ``OUTREG``."""
    changed = 0
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        sinks = defaultdict(list)
        for name, cell in cells.items():
            directions = cell.get("port_directions", {})
            for port, bits in cell.get("connections", {}).items():
                if directions.get(port) != "output":
                    for bit in bits:
                        if isinstance(bit, int):
                            sinks[bit].append((name, port))
        for port in module.get("ports", {}).values():
            for bit in port.get("bits", []):
                if isinstance(bit, int):
                    sinks[bit].append((None, None))
        for name, cell in list(cells.items()):
            p, c = cell.get("parameters", {}), cell.get("connections", {})
            if cell.get("type") != "DP16KD" or {p.get("REGMODE_A"), p.get("REGMODE_B")} != {"NOREG"}:
                continue
            moves, taken = [], True
            for outputs, clock, mux, reset, enable in _sides(cell):
                for port in outputs:
                    bits = c.get(port, [])
                    if not bits or not isinstance(bits[0], int) or not sinks[bits[0]]:
                        continue  # unused
                    taker = sinks[bits[0]]
                    if (len(taker) != 1 or taker[0][1] != "DI" or c.get(reset) != ["0"]
                            or p.get(f"{clock}MUX", clock) != mux
                            or not _plain_register(cells[taker[0][0]], c.get(clock))):
                        taken = False
                    moves.append((port, taker[0][0], enable))
            if not moves or not taken:
                continue
            for port, register, enable in moves:
                c[port] = cells.pop(register)["connections"]["Q"]
                c[enable] = ["1"]
            if int(p.get("DATA_WIDTH_B", "0"), 2) == 36:
                c["OCEA"] = ["1"]  # port A writes only; its output enable is left on for either reading
            p["REGMODE_A"] = p["REGMODE_B"] = "OUTREG"
            changed += 1
    return changed


def main(argv):
    """``argv``: the nextpnr command line. Rewrites its ``--json`` netlist, then becomes it."""
    path = argv[argv.index("--json") + 1]
    with open(path) as f:
        netlist = json.load(f)
    if absorb_output_registers(netlist):
        atomic_write_text(path, json.dumps(netlist))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
