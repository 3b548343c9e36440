"""Atomic file and folder output: a reader never sees a half-written result."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LowbitError


def _umask():
    # Read by setting and restoring: there is no other portable way.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public_mode(path, base):
    """Give a finished temporary file or folder the mode a plain ``open``/``mkdir`` would have:
    ``mkstemp`` and ``mkdtemp`` create them private (0600 / 0700)."""
    os.chmod(path, base & ~_umask())


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _public_mode(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(path):
    """Create ``path`` if needed and check that files can be written into it."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise LowbitError(f"{str(part)!r} is a file, not a folder",
                              "choose an output folder that is not inside a file's path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LowbitError(f"cannot create folder {str(path)!r}: {e.strerror}",
                          "choose an output folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LowbitError(f"folder {str(path)!r} is not writable",
                          "choose an output folder you can write to")
    return path


@contextlib.contextmanager
def atomic_dir(path):
    """Build a folder's contents in a temporary sibling and move it into place on success.

    On any exception the temporary folder is removed and ``path`` is left as it was, so a failed
    run never leaves a partial build behind. An existing ``path`` is replaced only on success.
    """
    path = Path(path)
    parent = ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _public_mode(tmp, 0o777)
    old = None
    if path.exists():
        old = parent / f".{path.name}.old.{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
