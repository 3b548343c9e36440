"""A live status line on stderr for a tool that runs for a while: its stage and the time so far.

Yosys, nextpnr and a Verilator build print nothing useful while they run (lowbit runs them
quietly and keeps their logs). A :class:`Status` redraws one line every second, such as
``yosys lowbit_top: 14. Executing ABC pass (95 s)``, reading the stage from the tool's log as
the tool writes it, and clears the line when the step ends.

The line is drawn only where stderr is a terminal, not under ``--quiet`` (:func:`set_quiet`), and
not while a progress bar of lowbit's own is drawn (:func:`bar_shown`): a sweep's bar already
says what runs.
"""

import contextlib
import re
import sys
import threading
import time
from pathlib import Path

__all__ = ["Status", "set_quiet", "bar_shown", "last_match"]

_state = {"quiet": False, "bars": 0}
_lock = threading.Lock()


def set_quiet(quiet):
    """No status lines from now on (``--quiet``), or again."""
    _state["quiet"] = bool(quiet)


@contextlib.contextmanager
def bar_shown():
    """While a progress bar is drawn, no status line competes with it for the terminal."""
    with _lock:
        _state["bars"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["bars"] -= 1


def last_match(path, pattern, tail_bytes=65536):
    """The first group of the last line of file ``path`` that matches ``pattern`` (a compiled
    regular expression), reading only its last ``tail_bytes``; None if none matches yet."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = None
    for m in pattern.finditer(text):
        found = m.group(1)
    return found


class Status:
    """``with Status("yosys top", logs=[(path, pattern)]):`` draws ``label: stage (N s)``.

    Parameters
    ----------
    label : str
        What runs.
    logs : sequence of (path-like, str or re.Pattern), optional
        Logs that the steps of the tool write as they run, in the order of the steps; the stage
        is the first group of the last line matching its pattern in the latest log that has one.
        :meth:`stage` sets the stage instead, for tools that write no log.
    stream : file, optional
        Where to draw (default: ``sys.stderr``); drawn only if it is a terminal.
    interval : float
        Seconds between redraws.
    """

    def __init__(self, label, *, logs=(), stream=None, interval=1.0):
        self.label = label
        self._logs = [(Path(path), re.compile(pattern, re.M) if isinstance(pattern, str) else pattern)
                      for path, pattern in logs]
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._stage = None
        self._stop = threading.Event()
        self._thread = None
        self._width = 0

    @property
    def shown(self):
        """Whether the line is drawn: a terminal, not quiet, no progress bar of lowbit's."""
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty()) and not _state["quiet"] and not _state["bars"]

    def stage(self, text):
        """Set the stage shown (when the tool writes no log to read it from)."""
        self._stage = text

    def line(self, elapsed):
        """The text drawn after ``elapsed`` seconds."""
        stage = self._stage
        for path, pattern in self._logs:
            stage = last_match(path, pattern) or stage
        return f"{self.label}: {stage + ' ' if stage else ''}({elapsed:.0f} s)"

    def _draw(self, text):
        # Pad over the previous line: a shorter stage must not leave the end of a longer one.
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def _run(self, start):
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError, ValueError):
                self._draw(self.line(time.monotonic() - start))

    def __enter__(self):
        if self.shown:
            self._thread = threading.Thread(target=self._run, args=(time.monotonic(),), daemon=True,
                                            name=f"status {self.label}")
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with contextlib.suppress(OSError, ValueError):
                self._stream.write("\r" + " " * self._width + "\r")
                self._stream.flush()
        return False
