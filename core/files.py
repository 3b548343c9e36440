"""Atomic file and folder output that never loses a user's file.

A reader never sees a half-written result, and lowbit writes over nothing it did not write:
every output folder is claimed before any work (:func:`claim_output_dir`) and carries a marker of
what lowbit put in it; an existing output file must be lowbit's own (:func:`claim_output_file`).
"""

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import LowbitError
from .version import __version__

__all__ = ["atomic_write_bytes", "atomic_write_text", "ensure_writable_dir", "atomic_dir",
           "claim_output_dir", "claim_output_file", "read_marker", "MARKER"]


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
    _collect_leftovers(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


# Every folder lowbit writes for a user carries this file: what kind of folder it is, and every
# file lowbit put in it. A later run replaces such a folder, and only such a folder, and only
# while it holds nothing else.
MARKER = ".lowbit.json"

# Names of the temporary siblings a file or folder is written in: ``.NAME.PID.XXXX.tmp``.
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def _listing(names, limit=5):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _files_under(folder):
    """Every file below ``folder``, as sorted relative POSIX paths (the marker left out)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != MARKER:
                out.append(rel)
    return sorted(out)


def read_marker(folder):
    """The marker of a folder lowbit wrote (``{"kind", "files", ...}``), or None."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (not isinstance(marker, dict) or not isinstance(marker.get("kind"), str)
            or not isinstance(marker.get("files"), list)
            or not all(isinstance(f, str) for f in marker["files"])):
        return None
    return marker


def _inside(inner, outer):
    return inner == outer or outer in inner.parents


def _check_inputs(path, real, inputs):
    """Refuse an output that is an input, holds one, or lies inside an input folder."""
    for given in inputs:
        if given is None:
            continue
        source = Path(os.path.realpath(given))
        if _inside(source, real):
            raise LowbitError(f"the output {str(path)!r} is or holds the input {str(given)!r}, "
                              "which writing it would replace",
                              "write the output somewhere that holds none of the command's inputs")
        if source.is_dir() and _inside(real, source):
            raise LowbitError(f"the output {str(path)!r} is inside the input folder {str(given)!r}",
                              "write the output outside the command's input folders")


def _check_not_cwd(path, real):
    cwd = Path(os.path.realpath(Path.cwd()))
    if _inside(cwd, real):
        raise LowbitError(f"the output folder {str(path)!r} is the current folder or holds it",
                          "write to a new folder, e.g. -o build/out")


def claim_output_dir(path, kind, *, inputs=(), force=False):
    """Check, before any work, that lowbit may write the folder ``path``, a ``kind`` folder.

    lowbit writes a folder only if it does not exist, is empty, or carries lowbit's marker from an
    earlier run of the same kind (with ``force``, of any kind) and holds only the files lowbit
    wrote there. An output that is or holds one of ``inputs`` (files or folders), or lies inside
    an input folder, is refused; so is the current folder and anything that is not a folder. A
    symbolic link to a folder is followed: the folder it points to is written.

    Returns
    -------
    pathlib.Path
        The folder to write, symbolic links resolved.

    Raises
    ------
    LowbitError
        Naming the folder and, where lowbit would have lost files, the files.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise LowbitError(f"the output {str(path)!r} is a symbolic link to a missing "
                          f"{os.readlink(path)!r}", "create the folder it points to, or choose another -o")
    real = Path(os.path.realpath(path))
    _check_inputs(path, real, inputs)
    if real.exists() or real.is_symlink():
        if not real.is_dir():
            what = "a file" if real.is_file() else "not a file or folder (a device, pipe or socket)"
            raise LowbitError(f"the output {str(path)!r} is {what}, not a folder",
                              "choose a new folder name for -o")
        _check_not_cwd(path, real)
        try:
            entries = [e.name for e in real.iterdir()]
        except OSError as e:
            raise LowbitError(f"cannot read the output folder {str(path)!r}: {e.strerror}",
                              "choose an output folder you can read and write") from None
        if entries:
            marker = read_marker(real)
            if marker is None:
                raise LowbitError(
                    f"the output folder {str(path)!r} is not empty and was not written by lowbit; "
                    f"writing it would lose {_listing(sorted(entries))}",
                    "choose a new or empty folder: lowbit never replaces files it did not write")
            if marker["kind"] != kind and not force:
                raise LowbitError(f"the output folder {str(path)!r} holds a lowbit {marker['kind']} "
                                  f"folder, not a {kind} folder",
                                  f"choose another folder, or pass --force to replace that {marker['kind']} folder")
            foreign = sorted(set(_files_under(real)) - set(marker["files"]))
            if foreign:
                raise LowbitError(f"the output folder {str(path)!r} holds files lowbit did not write: "
                                  f"{_listing(foreign)}",
                                  "move them out of the folder, or choose another folder")
    _check_parent(real.parent)
    return real


def claim_output_file(path, *, inputs=(), owned=None):
    """Check, before any work, that lowbit may write the file ``path``.

    A file that exists must be one lowbit wrote (``owned(path)`` says so, e.g. a lowbit
    checkpoint); a folder, device, pipe or socket is refused, and so is a path that is one of
    ``inputs`` or lies inside an input folder.

    Returns the path to write, symbolic links resolved.
    """
    path = Path(path)
    real = Path(os.path.realpath(path))
    for given in inputs:
        if given is not None and Path(os.path.realpath(given)) == real:
            raise LowbitError(f"the output {str(path)!r} is the command's input {str(given)!r}",
                              "write the output to another file")
    _check_inputs(path, real, [g for g in inputs if g is not None and Path(g).is_dir()])
    if real.exists():
        if real.is_dir():
            raise LowbitError(f"the output {str(path)!r} is a folder, not a file",
                              "give a file name, not a folder, for the output")
        if not real.is_file():
            raise LowbitError(f"the output {str(path)!r} is not a regular file (a device, pipe or socket)",
                              "give a regular file name for -o")
        if owned is None or not owned(real):
            raise LowbitError(f"the output {str(path)!r} exists and was not written by lowbit",
                              "choose another file name: lowbit never replaces files it did not write")
    _check_parent(real.parent)
    return real


def _check_parent(folder):
    """Raise unless ``folder`` can be created (its first existing ancestor is a writable folder)
    or is a writable folder; nothing is created."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise LowbitError(f"{str(part)!r} is a file, not a folder",
                                  "choose an output that is not inside a file's path")
            if not os.access(part, os.W_OK | os.X_OK):
                raise LowbitError(f"folder {str(part)!r} is not writable",
                                  "choose an output folder you can write to")
            return


def _make_parents(folder):
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    created = [part for part in (folder, *folder.parents) if not part.exists()]
    ensure_writable_dir(folder)
    return created


def _collect_leftovers(parent, name):
    """Remove the temporary siblings of ``parent/name`` left by runs that were killed."""
    for entry in parent.iterdir():
        m = _TMP.match(entry.name)
        if m and m["name"] == name and not _alive(int(m["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_dir(path, kind=None, *, inputs=(), force=False):
    """Build a folder's contents in a temporary sibling and move it into place on success.

    With a ``kind`` (a folder for the user: a build, a report), the folder is claimed first
    (:func:`claim_output_dir`: nothing is written when lowbit may not write it) and gets lowbit's
    marker, listing every file in it. Without one it is lowbit's own (a cache entry).

    On any exception the temporary folder is removed and ``path`` is left as it was, so a failed
    run never leaves a partial build behind; leftovers of runs that were killed are collected on
    the next run. An existing ``path`` is replaced only on success.
    """
    path = Path(path)
    if kind is not None:
        path = claim_output_dir(path, kind, inputs=inputs, force=force)
    parent = path.parent if str(path.parent) else Path(".")
    created = _make_parents(parent)
    _collect_leftovers(parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if kind is not None:
            marker = {"kind": kind, "lowbit_version": __version__, "files": _files_under(tmp)}
            atomic_write_text(tmp / MARKER, json.dumps(marker, indent=1) + "\n")
            # Files may have arrived in the old folder since it was claimed: check again.
            claim_output_dir(path, kind, inputs=inputs, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # the parents this run made, if nothing else went in
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _public_mode(tmp, 0o777)
    old = None
    if path.exists():
        old = parent / f".{path.name}.{os.getpid()}.old.tmp"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
