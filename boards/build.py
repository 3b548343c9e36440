"""``lowbit build``: a build folder to a board.

iCE40 and ECP5 boards get a bitstream: the network behind the UART top of
:mod:`lowbit.boards.wrapper`, through Yosys, nextpnr and the packer (:mod:`lowbit.boards.pnr`).
Xilinx boards get the Verilog and out-of-context Yosys counts of the network alone (no open
place and route exists for them). A network that the estimator says does not fit is refused
with the numbers before any tool runs.

A bitstream's network runs on the board's oscillator, or with ``clock_mhz`` on a clock of its own
from the FPGA's PLL (:mod:`lowbit.boards.pll`). A PLL setting is found before any tool runs; once
placed, a network clock faster than the network domain's fmax is refused, naming both, the
slack and the critical path's start and end, unless ``allow_slower`` turns that into a warning in the report.
"""

import json
import math
import shutil

from lowbit.compiler.build import load_build
from lowbit.compiler.cost import NoEstimatorModel
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir, claim_output_dir

from .boards import get_board
from .critical_path import critical_path, engine_names
from .estimate import estimate_manifest
from .pnr import place_and_route
from .engine_synth import synthesize_engines
from .pll import find_pll
from .synth import synthesize
from .wrapper import NETWORK_CLOCK, UartTop

__all__ = ["build_for_board", "does_not_fit_message", "network_fmax", "BOARD_KIND", "MAX_SEEDS"]

MAX_SEEDS = 20  # placements one build may try

BOARD_KIND = "board"


def does_not_fit_message(estimate):
    """One line per resource over capacity: needed, available, and by how much."""
    parts = [f"{estimate['total'][k]} {k[:-1].upper()} of {estimate['capacity'][k]} "
             f"(over by {over})" for k, over in estimate["over"].items()]
    return f"does not fit on {estimate['board']} ({estimate['device']}): " + "; ".join(parts)


def network_fmax(placed):
    """(net name, fmax in MHz) of the network's clock in a design placed with a PLL: the net
    :data:`lowbit.boards.wrapper.NETWORK_CLOCK`, which nextpnr-ecp5 prefixes once it is on a
    global buffer.

    Raises
    ------
    LowbitError
        If nextpnr's report has no such clock.
    """
    nets = [n for n in placed.fmax_mhz if n in (NETWORK_CLOCK, f"$glbnet${NETWORK_CLOCK}")]
    if len(nets) != 1:
        raise LowbitError(f"nextpnr's report names no network clock {NETWORK_CLOCK!r} among its clocks "
                          f"{sorted(placed.fmax_mhz)}")
    return nets[0], placed.fmax_mhz[nets[0]]


def _too_slow(board, clock):
    fmax, path = clock["network_fmax_mhz"], clock["critical_path"]
    where = (f"; its critical path runs from {path['start']} to {path['end']} ({path['delay_ns']:.2f} ns)"
             if path else "")
    return (f"the network clock of {clock['network_mhz']:g} MHz is faster than its domain's placed fmax of "
            f"{fmax:.2f} MHz on {board.name}: slack {clock['slack_ns']:.2f} ns{where}")


def build_for_board(build_dir, board_name, out_dir, *, cache_dir=None, force=False, flat=False, executor=None,
                    progress=None, clock_mhz=None, allow_slower=False, seeds=1):
    """Build ``build_dir`` for ``board_name`` into ``out_dir`` (written atomically).

    ``clock_mhz`` runs a bitstream's network on that clock from the PLL, the nearest the PLL
    makes; a clock beyond the placed fmax of the network's domain fails the build, or with
    ``allow_slower`` is recorded as a warning.

    ``seeds`` places the design with nextpnr's seeds 1, 2, ... up to ``seeds`` until one reaches
    ``clock_mhz`` (without a clock: every seed), and keeps the fastest placement: the fmax of one
    design moves by about 10 % from seed to seed. The report's ``placed`` names the seed kept and
    the fmax of each seed tried.

    A Xilinx build's counts come from each engine synthesized out of context as a job of
    ``executor`` (:func:`lowbit.boards.engine_synth.synthesize_engines`, ``progress`` as there), or
    from one run over the whole design with ``flat``. A bitstream needs the whole design: its
    synthesis is always one run.

    Returns
    -------
    dict
        The report also written to ``out_dir/board_report.json``: estimate, and either the placed
        utilization and fmax (``placed``) and the clocks (``clock``: oscillator, requested and
        achieved network clock, the PLL's setting, the network domain's fmax and slack), or the
        Yosys counts (``synth``). ``warnings`` lists what was allowed but is not right.

    Raises
    ------
    LowbitError
        If the folder is not a build, the board is unknown, the estimate exceeds the board (the
        message gives the numbers), no PLL setting is near ``clock_mhz`` or the board has no
        bitstream for it, a tool fails, or the network clock is beyond the placed fmax (without
        ``allow_slower``). Nothing is written then.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise LowbitError(f"the placement seeds must be a whole number from 1 to {MAX_SEEDS}, not {seeds!r}")
    inputs = (build_dir,)
    out_dir = claim_output_dir(out_dir, BOARD_KIND, inputs=inputs, force=force)  # before any work
    build = load_build(build_dir)
    manifest, verilog = build.manifest, build.verilog()
    board = get_board(board_name)
    warnings = []
    try:
        estimate = estimate_manifest(manifest, board.name)
    except NoEstimatorModel as e:  # synthesis and placement still tell what it takes
        estimate = None
        warnings.append(f"{e.message}: no estimate, the design's fit on {board.name} is checked by "
                        f"{'placement' if board.bitstream else 'synthesis'} only")
    if estimate is not None and not estimate["fits"]:
        raise LowbitError(does_not_fit_message(estimate),
                          "fold the network further (lowbit compile --target-cycles N) or pick a "
                          "larger board")
    pll = None
    if clock_mhz is not None:
        if not board.bitstream:
            raise LowbitError(f"a network clock is set in a bitstream; {board.name} ({board.device}) gets none",
                              "drop --clock, or build for an iCE40 or ECP5 board")
        if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not clock_mhz > 0:
            raise LowbitError(f"the network clock must be a positive number of MHz, not {clock_mhz!r}")
        pll = find_pll(board.family, board.clock_hz, clock_mhz * 1e6)  # refused here, before any tool runs
    top = manifest["top"]
    report = {"board": board.name, "device": board.device, "estimate": estimate, "warnings": warnings}
    if board.bitstream:
        # Placed to the end even if the network misses its clock: the fmax it reaches is then
        # compared with the clock below, and refused or (with allow_slower) reported.
        design, placed, seed, fmax_by_seed = _place(build, board, cache_dir, clock_mhz, seeds)
        clock = _clock_report(board, pll, placed, engine_names(manifest))
        report["clock"] = clock
        if not clock["meets_timing"]:
            problem = _too_slow(board, clock)
            if clock_mhz is None:  # the oscillator's clock, as ever: reported, not refused
                report["warnings"].append(problem)
            elif not allow_slower:
                raise LowbitError(problem, f"ask for --clock {math.floor(clock['network_fmax_mhz'] * 10) / 10:g} "
                                           "or less, fold or pipeline the network, or pass --allow-slower")
            else:
                report["warnings"].append(problem + " (built anyway: --allow-slower)")
        if clock["oscillator_fmax_mhz"] < clock["oscillator_mhz"] and clock_mhz is not None:
            report["warnings"].append(f"the UART side reaches {clock['oscillator_fmax_mhz']:.2f} MHz, below the "
                                      f"{clock['oscillator_mhz']:g} MHz oscillator")
        fmax = clock["network_fmax_mhz"]
        report["placed"] = {
            "utilization": {k: {"used": u, "available": a} for k, (u, a) in placed.utilization.items()},
            "fmax_mhz": placed.fmax_mhz, "constraint_mhz": placed.constraint_mhz,
            "seconds": placed.seconds, "cached": placed.cached,
            "seed": seed, "fmax_by_seed": fmax_by_seed,
            **({"logic_cells": placed.logic_cells} if placed.logic_cells else {}),
            "uart": {"baud": design.baud, "divisor": design.link.divisor, **vars(design.link.info)},
            "inferences_per_second_at_clock": clock["network_mhz"] * 1e6 / manifest["cycles_per_inference"],
            "inferences_per_second_at_fmax": (fmax * 1e6 / manifest["cycles_per_inference"]
                                              if fmax else None),
        }
        with atomic_dir(out_dir, BOARD_KIND, inputs=inputs, force=force) as tmp:
            bitstream = placed.files["bitstream"]
            shutil.copy2(bitstream, tmp / f"{board.name}{bitstream.suffix}")
            shutil.copy2(placed.files["report"], tmp / "nextpnr_report.json")
            shutil.copy2(placed.files["log"], tmp / "nextpnr.log")
            shutil.copy2(placed.files["synth_log"], tmp / "yosys.log")
            (tmp / f"{top}.v").write_text(verilog, encoding="utf-8")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            (tmp / "board_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        if flat:
            r, parts = synthesize(verilog, top, board.family, cache_dir=cache_dir), {}
        else:
            r, parts = synthesize_engines(verilog, top, board.family, cache_dir=cache_dir,
                                          executor=executor, progress=progress)
        report["synth"] = {**r.resources.as_dict(), "carry": r.carry, "flow": r.flow,
                           "yosys_version": r.yosys_version, "fits": r.resources.fits(board.capacity()),
                           "parts": {name: p.resources.as_dict() for name, p in parts.items()}}
        with atomic_dir(out_dir, BOARD_KIND, inputs=inputs, force=force) as tmp:
            (tmp / f"{top}.v").write_text(verilog, encoding="utf-8")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            (tmp / "board_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _place(build, board, cache_dir, clock_mhz, seeds):
    """``(design, placed, seed, {seed: fmax})``: the board top placed with nextpnr seeds 1.. until
    one reaches ``clock_mhz`` (without a clock, every seed), the fastest kept."""
    best, best_fmax, fmax_by_seed = None, 0.0, {}
    for seed in range(1, seeds + 1):
        design = UartTop(build) if clock_mhz is None else UartTop(build, network_mhz=clock_mhz)
        placed = place_and_route(design, board, cache_dir=cache_dir, seed=seed,
                                 timing_allow_fail=clock_mhz is not None)
        fmax = placed.min_fmax_mhz if clock_mhz is None else network_fmax(placed)[1]
        fmax_by_seed[seed] = round(fmax, 2)
        if best is None or fmax > best_fmax:
            best, best_fmax = (design, placed, seed), fmax
        if clock_mhz is not None and fmax >= clock_mhz:
            break
    return (*best, fmax_by_seed)


def _clock_report(board, pll, placed, engines):
    """The clocks of a placed board top: the oscillator, the network's (requested and achieved,
    the PLL's setting), the network domain's placed fmax, slack (negative when the clock is
    beyond it) and critical path (named by ``engines``, see :mod:`lowbit.boards.critical_path`), and
    with a PLL the slowest fmax of the oscillator's side (UART, framing)."""
    oscillator_mhz = board.clock_hz / 1e6
    if not placed.fmax_mhz:
        raise LowbitError(f"nextpnr's report for {board.name} gives no clock's fmax")
    if pll is None:  # one domain: its slowest clock
        network_mhz = oscillator_mhz
        net, fmax = min(placed.fmax_mhz.items(), key=lambda kv: kv[1])
        others = {}
    else:
        network_mhz = float(pll.achieved_hz) / 1e6
        net, fmax = network_fmax(placed)
        others = {n: f for n, f in placed.fmax_mhz.items() if n != net}
    return {"oscillator_mhz": oscillator_mhz,
            "requested_mhz": None if pll is None else float(pll.requested_hz) / 1e6,
            "network_mhz": network_mhz, "pll": None if pll is None else pll.as_dict(), "network_net": net,
            "network_constraint_mhz": placed.constraint_mhz[net], "network_fmax_mhz": fmax,
            "slack_ns": 1e3 / network_mhz - 1e3 / fmax, "meets_timing": fmax >= network_mhz,
            "critical_path": critical_path(placed.files["report"], net, engines),
            "oscillator_fmax_mhz": min(others.values()) if others else fmax}
