"""Child processes that die with lowbit: a killed lowbit leaves no tool running.

Yosys, nextpnr, the packers and Verilator's ``make`` can run for minutes. Killed with SIGTERM or
SIGKILL, a Python process runs no ``finally`` block, so its children would go on as orphans,
holding CPU and writing into cache folders that the next run collects as leftovers. The
children of those children (the shell's nextpnr, make's compilers) would survive even a killed
direct child.

:func:`run` therefore starts every tool under a small supervisor: this very file, run as a
script with the standard library alone. The supervisor

- asks Linux to send it SIGTERM when lowbit dies (``prctl(PR_SET_PDEATHSIG)`` through ctypes,
  set by the supervisor on itself, so lowbit needs no ``preexec_fn``, which is unsafe in a
  process with threads), then checks that lowbit did not die before that took effect;
- starts the tool as the leader of a new session, so that the tool and everything it starts
  form one process group;
- on SIGTERM, SIGINT or SIGHUP, and when lowbit is gone, kills that whole group with SIGKILL
  and exits; where there is no ``prctl``, it notices a dead lowbit by polling its parent id;
- when the tool ends, kills what the tool left running in its group and exits with the tool's
  status.

In lowbit, :func:`run` waits like :func:`subprocess.run`; if the wait is interrupted by an
exception (KeyboardInterrupt, a signal handler's exception), it stops the supervisor, and with
it the tool's group, before re-raising.
"""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

try:
    import ctypes
except ImportError:  # a Python built without ctypes: the supervisor polls instead
    ctypes = None

__all__ = ["run", "SUPERVISED"]

# Whether tools run under the supervisor: it needs process groups (POSIX).
SUPERVISED = os.name == "posix"

# prctl option (linux/prctl.h): the signal to receive when the parent thread dies.
_PR_SET_PDEATHSIG = 1

# The signals on which the supervisor kills the tool's group and exits.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if SUPERVISED else ()

# How often the supervisor checks its parent where the kernel cannot tell it (seconds).
_POLL_SECONDS = 0.5

# How long lowbit waits for a stopped supervisor before killing it outright (seconds).
_STOP_GRACE_SECONDS = 5.0


def run(argv, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None,
        capture_output=False, text=False, errors=None):
    """Run ``argv`` to its end like :func:`subprocess.run`, but never leave it behind.

    The tool and every process it starts are killed when lowbit dies (SIGTERM, SIGKILL, a
    crash) or when the wait is interrupted by an exception.

    Parameters
    ----------
    argv : sequence of str or os.PathLike
        The command.
    cwd : path-like, optional
    env : dict of str to str, optional
        The tool's environment; ``os.environ`` if omitted.
    stdin, stdout, stderr : optional
        As for :func:`subprocess.run` (``subprocess.DEVNULL``, ``subprocess.PIPE``, a file...).
    capture_output : bool, optional
        Capture both output streams, as :func:`subprocess.run` does.
    text : bool, optional
    errors : str, optional
        How to decode captured output when ``text`` is true.

    Returns
    -------
    subprocess.CompletedProcess
        With ``args`` the tool's command (not the supervisor's), ``returncode`` the tool's exit
        status (negative: killed by that signal), and the captured output.

    Raises
    ------
    FileNotFoundError
        If the tool's program does not exist.
    """
    argv = [os.fspath(a) for a in argv]
    if capture_output:
        stdout = stderr = subprocess.PIPE
    if SUPERVISED:
        program = argv[0]
        # The supervisor starts the program, so a missing one would only show as its exit
        # status; name it here as subprocess would.
        if os.sep not in program:
            path = (env if env is not None else os.environ).get("PATH", os.defpath)
            if _which(program, path) is None:
                raise FileNotFoundError(2, "No such file or directory", program)
        elif not os.access(Path(cwd or ".") / program, os.X_OK):
            raise FileNotFoundError(2, "No such file or directory", program)
        command = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), str(os.getpid()),
                   "--", *argv]
    else:
        command = argv
    with subprocess.Popen(command, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                          text=text or None, errors=errors) as proc:
        try:
            out, err = proc.communicate()
        except BaseException:
            _stop(proc)
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _which(program, path):
    for folder in path.split(os.pathsep):
        candidate = Path(folder or ".") / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _stop(proc):
    """Stop a supervisor (which kills its tool's group first), or the tool itself if unsupervised."""
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


# The supervisor. Runs as ``python -I -S children.py <lowbit pid> -- <command...>``, with the
# standard library alone: it must not import lowbit.


def _die_with_parent(signum):
    """Ask Linux to send ``signum`` to this process when its parent dies; False where it cannot."""
    if ctypes is None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _kill_group(pgid):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _supervise(parent, argv):
    """Run ``argv`` in its own process group; kill the group if ``parent`` dies or a stop signal
    arrives. Returns the exit status to end with."""
    state = {"child": None, "signal": None}

    def on_stop(signum, frame):
        state["signal"] = signum
        if state["child"] is not None:
            _kill_group(state["child"])
            os._exit(128 + signum)
        # The tool is being started: the code after Popen sees the flag and kills it.

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_stop)
    notified = _die_with_parent(signal.SIGTERM)
    # lowbit may have died before the request took effect: then nobody would tell us.
    if os.getppid() != parent:
        return 128 + signal.SIGTERM
    try:
        # A new session: the tool leads a process group that holds all it starts, and a
        # terminal's Ctrl-C reaches the tool only through us.
        proc = subprocess.Popen(argv, start_new_session=True)
    except OSError as e:
        print(f"lowbit: cannot start {argv[0]}: {e.strerror}", file=sys.stderr)
        return 127
    state["child"] = proc.pid
    if state["signal"] is not None:
        _kill_group(proc.pid)
        proc.wait()
        return 128 + state["signal"]
    # Waiting without reaping keeps the group id from being reused by another process before
    # the stragglers of the group are killed below; it needs the kernel's notice of lowbit's
    # death, as a blocking wait cannot poll.
    peek = notified and hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
    while True:
        try:
            if peek:
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            else:
                proc.wait(timeout=_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:
                _kill_group(proc.pid)
                proc.wait()
                return 128 + signal.SIGTERM
        except ChildProcessError:
            break
    # Whatever the tool started and left running dies with it.
    _kill_group(proc.pid)
    returncode = proc.wait()
    if returncode < 0:
        # Killed by a signal: end the same way, so that lowbit sees what the tool saw.
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP keep theirs
            signal.signal(-returncode, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), -returncode)
        return 128 - returncode
    return returncode


def _main(args):
    if len(args) < 3 or args[1] != "--":
        print("usage: children.py <parent pid> -- <command...>", file=sys.stderr)
        return 2
    return _supervise(int(args[0]), args[2:])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
