"""``lowbit build``: a build folder to a board.

iCE40 and ECP5 boards get a bitstream: the network behind the UART top of
:mod:`lowbit.boards.wrapper`, through Yosys, nextpnr and the packer (:mod:`lowbit.boards.pnr`).
Xilinx boards get the Verilog and out-of-context Yosys counts of the network alone (no open
place and route exists for them). A network that the estimator says does not fit is refused
with the numbers before any tool runs.
"""

import json
import shutil

from lowbit.compiler.build import load_build
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir, claim_output_dir

from .boards import get_board
from .estimate import estimate_manifest
from .pnr import place_and_route
from .engine_synth import synthesize_engines
from .synth import synthesize
from .wrapper import UartTop

__all__ = ["build_for_board", "does_not_fit_message", "BOARD_KIND"]

BOARD_KIND = "board"


def does_not_fit_message(estimate):
    """One line per resource over capacity: needed, available, and by how much."""
    parts = [f"{estimate['total'][k]} {k[:-1].upper()} of {estimate['capacity'][k]} "
             f"(over by {over})" for k, over in estimate["over"].items()]
    return f"does not fit on {estimate['board']} ({estimate['device']}): " + "; ".join(parts)


def build_for_board(build_dir, board_name, out_dir, *, cache_dir=None, force=False, flat=False, executor=None,
                    progress=None):
    """Build ``build_dir`` for ``board_name`` into ``out_dir`` (written atomically).

    A Xilinx build's counts come from each engine synthesized out of context as a job of
    ``executor`` (:func:`lowbit.boards.engine_synth.synthesize_engines`, ``progress`` as there), or
    from one run over the whole design with ``flat``. A bitstream needs the whole design: its
    synthesis is always one run.

    Returns
    -------
    dict
        The report also written to ``out_dir/board_report.json``: estimate, and either the placed
        utilization and fmax (``placed``) or the Yosys counts (``synth``).

    Raises
    ------
    LowbitError
        If the folder is not a build, the board is unknown, the estimate exceeds the board (the
        message gives the numbers), or a tool fails.
    """
    inputs = (build_dir,)
    out_dir = claim_output_dir(out_dir, BOARD_KIND, inputs=inputs, force=force)  # before any work
    build = load_build(build_dir)
    manifest, verilog = build.manifest, build.verilog()
    board = get_board(board_name)
    estimate = estimate_manifest(manifest, board.name)
    if not estimate["fits"]:
        raise LowbitError(does_not_fit_message(estimate),
                          "fold the network further (lowbit compile --target-cycles N) or pick a "
                          "larger board")
    top = manifest["top"]
    report = {"board": board.name, "device": board.device, "estimate": estimate}
    if board.bitstream:
        design = UartTop(build)
        placed = place_and_route(design, board, cache_dir=cache_dir)
        fmax = placed.min_fmax_mhz
        report["placed"] = {
            "utilization": {k: {"used": u, "available": a} for k, (u, a) in placed.utilization.items()},
            "fmax_mhz": placed.fmax_mhz, "constraint_mhz": placed.constraint_mhz,
            "seconds": placed.seconds, "cached": placed.cached,
            "uart": {"baud": design.baud, "divisor": design.link.divisor, **vars(design.link.info)},
            "inferences_per_second_at_clock": board.clock_hz / manifest["cycles_per_inference"],
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
