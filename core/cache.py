"""Self-checking cache entries: one protocol for the Verilator, Yosys and nextpnr caches.

Every cache is a folder under the cache root (``$LOWBIT_CACHE`` or ``~/.cache/lowbit``) that
holds, for each entry name (which never contains a dot):

- ``<name>`` (a folder) or ``<name><suffix>`` (a file, e.g. ``<key>.json``): the entry. It
  records the key it was made for and the SHA-256 of what it holds, and is checked on every
  read (:class:`Damaged` says what failed);
- ``.<name>.lock``: the entry's lock file. A process holds an exclusive ``flock`` on it while it
  writes anything for that entry, so one process builds a key while the others wait;
- ``.<name>.<anything>.tmp``: the temporary file or folder of a write in progress, renamed into
  place when complete, so a reader never sees a half-built entry. Found while its lock is free,
  its writer is gone (killed, crashed): it is a leftover, and :meth:`CacheFolder.collect`
  removes it;
- ``<name>.failed.log``: the log of a failed build, kept for the user.

A damaged entry (a hash that does not match, a missing part, a value of the wrong type or
range, unreadable JSON) is a cache miss: one line on stderr (:func:`warn_damaged`), the entry
is removed and built again. lowbit never removes anything else: a name must match the cache's
pattern, and a folder entry must hold its manifest, before :mod:`lowbit.cache` cleans it.
"""

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LowbitError
from .files import atomic_write_text

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so no way to tell a leftover from a live write
    fcntl = None

__all__ = ["default_root", "Damaged", "CacheKind", "CacheFolder", "CacheItem", "sha256_file",
           "file_digests", "json_digest", "check", "check_files", "check_header", "read_json", "read_payload",
           "write_payload",
           "is_count", "is_seconds", "check_counts", "warn_damaged"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A file an entry's manifest may name: a plain name in the entry's own folder.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_.$-]*")
# ``.<name>.<anything>.tmp`` (which also covers the temporaries of core.files' atomic writes),
# and ``.<name>.old.<pid>``, which the place-and-route cache of earlier lowbit versions left
# (through an older core.files.atomic_dir) when killed between two renames.
_LEFTOVER = re.compile(r"\.(?P<name>[^./]+)\.(?:.+\.tmp|old\.\d+)")
_LOCK = re.compile(r"\.(?P<name>[^./]+)\.lock")
_FAILED_LOG = ".failed.log"
_BLOCK = 1 << 20

# Folders whose leftovers this process has collected: once per process is enough, and a sweep
# that synthesizes thousands of designs does not list the folder thousands of times.
_collected = set()


def default_root():
    """The cache root: ``$LOWBIT_CACHE`` if set, else ``~/.cache/lowbit``.

    Returns
    -------
    pathlib.Path
    """
    base = os.environ.get("LOWBIT_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "lowbit"


class Damaged(Exception):
    """A cache entry failed its check; the message says what is wrong, in a few words."""


def sha256_file(path):
    """SHA-256 of a file's bytes, as 64 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(folder, names):
    """``{name: SHA-256}`` of the files ``names`` in ``folder``, for an entry's manifest."""
    return {name: sha256_file(Path(folder) / name) for name in names}


def json_digest(obj):
    """SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces).

    Python writes a float as the shortest text that reads back as the same float, so the digest
    of a payload read back from an entry equals the digest of the payload written.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check(condition, what):
    """Raise :class:`Damaged` with ``what`` unless ``condition`` holds."""
    if not condition:
        raise Damaged(what)


def read_json(path):
    """The JSON object in ``path``; :class:`Damaged` if it is missing, unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged(f"{path.name} is missing") from None
    except OSError as e:
        raise Damaged(f"{path.name} is unreadable: {e.strerror}") from None
    except ValueError:  # UnicodeDecodeError is one
        raise Damaged(f"{path.name} is not valid JSON") from None
    check(isinstance(data, dict), f"{path.name} is not a JSON object")
    return data


def check_header(record, fmt, key):
    """Check an entry's ``format`` and ``key``: an entry of another format or key is no hit."""
    check(record.get("format") == fmt, f"format {record.get('format')!r}, not {fmt}")
    check(record.get("key") == key, "it was made for another key")


def read_payload(path, fmt, key):
    """The ``payload`` of a one-file JSON entry ``{"format", "key", "sha256", "payload"}`` once its
    header and SHA-256 check out; :class:`Damaged` if not."""
    entry = read_json(path)
    check_header(entry, fmt, key)
    payload = entry.get("payload")
    check(isinstance(payload, dict), "it holds no payload")
    try:
        digest = json_digest(payload)
    except ValueError:  # NaN or infinity: not JSON lowbit writes
        raise Damaged("its payload holds a number that is not finite") from None
    check(entry.get("sha256") == digest, "its payload does not match its SHA-256")
    return payload


def write_payload(path, fmt, key, payload):
    """Write the one-file JSON entry that :func:`read_payload` reads back, atomically."""
    entry = {"format": fmt, "key": key, "sha256": json_digest(payload), "payload": payload}
    atomic_write_text(path, json.dumps(entry, indent=1, sort_keys=True) + "\n")


def check_files(folder, digests, required=()):
    """Check the files an entry's manifest lists against their SHA-256.

    Parameters
    ----------
    folder : path-like
        The entry's folder.
    digests : dict of str to str
        File name to SHA-256, as :func:`file_digests` made it.
    required : iterable of str
        Names that must be among ``digests`` (the simulator executable, the bitstream...).

    Raises
    ------
    Damaged
        If a name is missing or malformed, a file is absent or not a plain file, or its bytes
        do not match.
    """
    check(isinstance(digests, dict), "no file hashes")
    for name in required:
        check(name in digests, f"no hash of {name}")
    for name, digest in digests.items():
        check(isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None,
              f"bad file name {name!r}")
        check(isinstance(digest, str) and _HEX64.fullmatch(digest) is not None,
              f"bad hash of {name}")
        path = Path(folder) / name
        check(not path.is_symlink() and path.is_file(), f"{name} is missing")
        check(sha256_file(path) == digest, f"{name} does not match its SHA-256")


def is_count(value):
    """Whether ``value`` is a non-negative integer (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_seconds(value):
    """Whether ``value`` is a finite, non-negative number of seconds."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def check_counts(counts, what):
    """Check that ``counts`` maps names to non-negative integers (cell counts, say)."""
    check(isinstance(counts, dict), f"{what} are not a mapping")
    for name, count in counts.items():
        check(is_count(count), f"{what}: {name} is {count!r}, not a non-negative integer")


def warn_damaged(path, what):
    """Say on one line of stderr that the entry at ``path`` is damaged and will be rebuilt."""
    what = " ".join(str(what).split())
    print(f"lowbit: cache entry {path} is damaged ({what}); rebuilding it", file=sys.stderr)


@dataclass(frozen=True)
class CacheKind:
    """How one cache names its entries.

    Parameters
    ----------
    label : str
        The cache's name in reports, and its folder under the cache root: ``"synth"``...
    pattern : str
        Regular expression that an entry's name matches in full. Entry names have no dot.
    suffix : str
        For entries that are files, what follows the name in the file name (``".json"``);
        ``""`` for entries that are folders.
    markers : tuple of str
        For folder entries, the manifest file names; a folder holding none of them is not
        taken for an entry, whatever its name.
    """

    label: str
    pattern: str
    suffix: str = ""
    markers: tuple = ()

    def __post_init__(self):
        if "." in self.label or "/" in self.label:
            raise ValueError(f"Cache label must be a plain folder name, not {self.label!r}")
        if bool(self.suffix) == bool(self.markers):
            raise ValueError("A cache kind has either a file suffix or folder markers")


@dataclass(frozen=True)
class CacheItem:
    """Something lowbit keeps in a cache folder, as :meth:`CacheFolder.items` lists it.

    Attributes
    ----------
    name : str
        The entry name it belongs to (its lock is ``.<name>.lock``).
    path : pathlib.Path
    role : str
        ``"entry"``, ``"log"`` (a failed build's log) or ``"leftover"``.
    bytes : int
        Size of its files.
    used : float
        When it was last used (written, or read from the cache), as a POSIX time.
    """

    name: str
    path: Path
    role: str
    bytes: int
    used: float


class CacheFolder:
    """One cache folder: reading, checking, building, locking and collecting its entries.

    Parameters
    ----------
    folder : path-like
    kind : CacheKind
    """

    def __init__(self, folder, kind):
        if not isinstance(kind, CacheKind):
            raise TypeError(f"Kind must be a CacheKind, not {kind!r}")
        self._folder = Path(folder)
        self._kind = kind
        self._entry = re.compile(kind.pattern)

    @property
    def folder(self):
        """The folder, a :class:`pathlib.Path`."""
        return self._folder

    @property
    def kind(self):
        """The :class:`CacheKind`."""
        return self._kind

    def path(self, name):
        """Where entry ``name`` lives."""
        return self._folder / f"{name}{self._kind.suffix}"

    @contextlib.contextmanager
    def lock(self, name, *, wait=True, drop=False):
        """Hold entry ``name``'s lock; yields whether it was acquired.

        Parameters
        ----------
        wait : bool
            Wait for another holder; else yield False at once if the lock is taken.
        drop : bool
            Remove the lock file before releasing it (when its entry has gone).
        """
        if fcntl is None:
            yield True
            return
        path = self._folder / f".{name}.lock"
        fd = _acquire(path, wait)
        if fd is None:
            yield False
            return
        try:
            yield True
        finally:
            if drop:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            os.close(fd)

    def fetch(self, name, load, build):
        """The entry ``name``: read and checked if it is there, else built and published.

        Two processes asking for a missing entry at once: one builds it under the entry's lock,
        the other waits, then reads and checks the first one's entry.

        Parameters
        ----------
        name : str
        load : callable
            ``load(path)`` reads and checks the entry at ``path`` and returns its value (never
            None); it raises :class:`Damaged` saying what is wrong.
        build : callable
            ``build(tmp)`` builds into the new, empty temporary folder ``tmp`` and returns the
            path to publish (``tmp`` itself for a folder entry, a file in it for a file entry)
            and the value. Called with the lock held.

        Returns
        -------
        value : object
        cached : bool
            Whether the entry was already there.
        """
        self.collect_once()
        value = self._load(name, load, repair=False)
        if value is not None:
            return value, True
        with self.lock(name):
            value = self._load(name, load, repair=True)
            if value is not None:
                return value, True
            tmp = self.temp_dir(name)
            try:
                result, value = build(tmp)
                try:
                    os.replace(result, self.path(name))
                except OSError:
                    # Only a writer that takes no lock (an older lowbit, a platform without
                    # flock) can have published meanwhile; its entry is used if it checks out.
                    theirs = self._load(name, load, repair=False)
                    if theirs is None:
                        raise
                    return theirs, True
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return value, False

    def lookup(self, name, load):
        """The checked value of entry ``name``, or None if it is missing or was damaged (and is
        now removed). ``load`` is as for :meth:`fetch`."""
        self.collect_once()
        value = self._load(name, load, repair=False)
        if value is not None or not os.path.lexists(self.path(name)):
            return value
        with self.lock(name):
            return self._load(name, load, repair=True)

    def put(self, name, fill):
        """Publish entry ``name`` made by ``fill(tmp)`` (which returns the path to publish),
        unless it exists or another process is writing it; return whether it was published."""
        with self.lock(name, wait=False) as locked:
            if not locked or os.path.lexists(self.path(name)):
                return False
            tmp = self.temp_dir(name)
            try:
                os.replace(fill(tmp), self.path(name))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return True

    def discard(self, name):
        """Remove entry ``name`` (taking its lock)."""
        with self.lock(name):
            self.remove(name)

    def temp_dir(self, name):
        """A new temporary folder for a write of entry ``name``; hold its lock while it exists."""
        return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=self._folder))

    def remove(self, name, path=None):
        """Remove entry ``name`` (or ``path``, one of its items); the caller holds its lock.

        The entry is first renamed to a leftover name, so that a reader sees it whole or not
        at all, and an interrupted removal is collected like any leftover.
        """
        path = self.path(name) if path is None else Path(path)
        grave = self._folder / f".{name}.removed-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        except OSError as e:
            raise LowbitError(f"cannot remove cache entry {str(path)!r}: {e.strerror}",
                              "remove it by hand, or set LOWBIT_CACHE to a folder you can "
                              "write to") from None
        _delete(grave)

    def collect_once(self):
        """:meth:`collect`, the first time this process uses the folder."""
        key = os.path.abspath(self._folder)
        if key in _collected:
            return
        _collected.add(key)
        self.collect()

    def collect(self):
        """Remove the leftovers of interrupted writes whose writer is gone.

        A writer holds its entry's lock for as long as its temporary file or folder exists, so
        a leftover whose lock can be taken at once has no live writer. Without ``flock`` (not
        POSIX) nothing is removed.

        Returns
        -------
        count : int
        bytes : int
        """
        if fcntl is None:
            return 0, 0
        by_name = {}
        for item in self.items(roles=("leftover",)):
            by_name.setdefault(item.name, []).append(item)
        count = size = 0
        for name, items in by_name.items():
            with self.lock(name, wait=False) as locked:
                if not locked:
                    continue  # its writer is still at work
                for item in items:
                    _delete(item.path)
                    count += 1
                    size += item.bytes
        return count, size

    def items(self, roles=("entry", "log", "leftover")):
        """The entries, failed-build logs and leftovers in the folder, by what their names say.

        Parameters
        ----------
        roles : tuple of str
            Which of ``"entry"``, ``"log"`` and ``"leftover"`` to list.

        Returns
        -------
        list of CacheItem
        """
        try:
            children = list(os.scandir(self._folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for child in children:
            role, name = self._classify(child)
            if role in roles:
                path = Path(child.path)
                found.append(CacheItem(name, path, role, _size(path), _used(path)))
        return found

    def lock_names(self):
        """Names of the entries that have a lock file."""
        try:
            children = os.listdir(self._folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [m["name"] for m in map(_LOCK.fullmatch, children)
                if m and self._entry.fullmatch(m["name"])]

    def _classify(self, child):
        """(role, entry name) of a folder member, or (None, None) if it is nothing of lowbit's."""
        name = child.name
        kind = self._kind
        if name.startswith("."):
            m = _LEFTOVER.fullmatch(name)
            if m and self._entry.fullmatch(m["name"]):
                return "leftover", m["name"]
            return None, None
        if name.endswith(_FAILED_LOG):
            stem = name[:-len(_FAILED_LOG)]
            if self._entry.fullmatch(stem) and child.is_file(follow_symlinks=False):
                return "log", stem
            return None, None
        if kind.suffix:
            stem = name[:-len(kind.suffix)] if name.endswith(kind.suffix) else None
            if stem and self._entry.fullmatch(stem) and child.is_file(follow_symlinks=False):
                return "entry", stem
            return None, None
        if self._entry.fullmatch(name) and child.is_dir(follow_symlinks=False) and any(
                os.path.isfile(os.path.join(child.path, m)) for m in kind.markers):
            return "entry", name
        return None, None

    def _load(self, name, load, repair):
        """``load(path)`` of an entry that is there, else None; a damaged entry is None too,
        and with ``repair`` (lock held) it is reported and removed."""
        path = self.path(name)
        if not os.path.lexists(path):
            return None
        try:
            value = load(path)
        except Damaged as e:
            what = str(e)
        except LowbitError:
            raise  # a problem of the environment, not of the entry (and a ValueError too)
        except (OSError, ValueError, TypeError, KeyError) as e:
            # A check that tripped over the entry instead of naming the fault: still a miss.
            what = f"{type(e).__name__}: {e}"
        else:
            # Last use, for cleaning the least recently used first.
            with contextlib.suppress(OSError):
                os.utime(path)
            return value
        if repair:
            warn_damaged(path, what)
            self.remove(name)
        return None


def _acquire(path, wait):
    """An open descriptor holding an exclusive flock on ``path``, or None if it is taken and
    ``wait`` is false."""
    flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
    while True:
        # Python's descriptors are not inherited by child processes: a tool left running
        # never holds the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # Cleaning removes a lock file while holding it; a lock taken on the removed file
        # excludes nobody, so take the one now at ``path``.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _delete(path):
    """Remove a file, link or folder tree (never following links)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _size(path):
    """Bytes of the files at or under ``path`` (links are not followed)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _used(path):
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0
