"""What ``lowbit cache info`` and ``lowbit cache clean`` do: report the caches and bound their size.

The caches share one root (``$LOWBIT_CACHE`` or ``~/.cache/lowbit``): Verilator builds in
``verilator/``, Yosys results in ``synth/``, nextpnr results in ``pnr/``, the LUT levels of xc7
netlists in ``levels/``. Only what a cache's own
naming rules recognize (see :mod:`lowbit.core.cache`) is counted or removed: its entries, the
logs of failed builds, the leftovers of interrupted writes, and lock files. Anything else under
the root, a file of the user's or a folder of another tool, is never touched.
"""

import re
from pathlib import Path

from lowbit.boards import levels, pnr, synth
from lowbit.core.cache import CacheFolder, default_root
from lowbit.core.errors import LowbitError
from lowbit.sim import build

__all__ = ["KINDS", "collect_leftovers", "cache_info", "cache_clean", "parse_size", "format_size", "format_info",
           "format_clean"]

# Every cache lowbit keeps, each in the root's folder named by its label.
KINDS = (build.CACHE, synth.CACHE, pnr.CACHE, levels.CACHE)

# A number of bytes, or of K, M, G or T (powers of 1024), optionally written Ki/KB/KiB.
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(?:([kmgt])i?)?b?\s*", re.IGNORECASE)
_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _folders(root):
    root = default_root() if root is None else Path(root).expanduser()
    return root, [CacheFolder(root / kind.label, kind) for kind in KINDS]


def collect_leftovers(root=None):
    """Remove, in every cache, the temporaries of writes whose writer is gone (workers stopped
    mid-job); returns how many."""
    _, folders = _folders(root)
    return sum(folder.collect()[0] for folder in folders if folder.folder.is_dir())


def cache_info(root=None):
    """What the caches under ``root`` hold.

    Parameters
    ----------
    root : path-like, optional
        The cache root; ``$LOWBIT_CACHE`` or ``~/.cache/lowbit`` if omitted.

    Returns
    -------
    dict
        ``root`` (str); ``caches``, by label (``"verilator"``, ``"synth"``, ``"pnr"``), each
        with ``folder`` (str), ``entries`` and ``entry_bytes``, ``logs`` and ``log_bytes``
        (failed builds' logs), ``temporary`` and ``temporary_bytes`` (writes in progress or
        interrupted), and ``bytes`` (all three); and the totals ``entries`` and ``bytes``.
    """
    root, folders = _folders(root)
    caches = {}
    for folder in folders:
        counts = {"entry": [0, 0], "log": [0, 0], "leftover": [0, 0]}
        for item in folder.items():
            counts[item.role][0] += 1
            counts[item.role][1] += item.bytes
        caches[folder.kind.label] = {
            "folder": str(folder.folder),
            "entries": counts["entry"][0], "entry_bytes": counts["entry"][1],
            "logs": counts["log"][0], "log_bytes": counts["log"][1],
            "temporary": counts["leftover"][0], "temporary_bytes": counts["leftover"][1],
            "bytes": sum(size for _, size in counts.values()),
        }
    return {"root": str(root), "caches": caches,
            "entries": sum(c["entries"] for c in caches.values()),
            "bytes": sum(c["bytes"] for c in caches.values())}


def cache_clean(root=None, *, max_bytes=None):
    """Remove whole cache entries, least recently used first, until the caches fit ``max_bytes``.

    Leftovers of interrupted writes are removed first, whatever ``max_bytes`` says. An entry
    that another process is building at the moment is skipped. Reading an entry from the cache
    counts as using it.

    Parameters
    ----------
    root : path-like, optional
        The cache root; ``$LOWBIT_CACHE`` or ``~/.cache/lowbit`` if omitted.
    max_bytes : int, optional
        The size to bring the caches within (entries and failed-build logs, all caches
        together); None removes every entry.

    Returns
    -------
    dict
        ``entries`` (entries and logs removed), ``leftovers`` (leftovers removed), ``bytes``
        (freed by both) and ``remaining_bytes`` (what the entries and logs left take).

    Raises
    ------
    ValueError
        If ``max_bytes`` is not a non-negative integer or None.
    """
    if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(max_bytes, bool)
                                  or max_bytes < 0):
        raise ValueError(f"Max bytes must be a non-negative integer or None, not {max_bytes!r}")
    _, folders = _folders(root)
    leftovers = freed = 0
    for folder in folders:
        count, size = folder.collect()
        leftovers += count
        freed += size
    items = sorted(((item.used, item.path.name, folder, item) for folder in folders
                    for item in folder.items(roles=("entry", "log"))), key=lambda t: t[:2])
    remaining = sum(item.bytes for *_, item in items)
    removed = 0
    for _, _, folder, item in items:
        if max_bytes is not None and remaining <= max_bytes:
            break
        with folder.lock(item.name, wait=False, drop=True) as locked:
            if not locked:
                continue  # being built right now
            folder.remove(item.name, item.path)
        removed += 1
        remaining -= item.bytes
        freed += item.bytes
    # A lock file is only needed while its entry is written; one whose entry is gone goes too.
    for folder in folders:
        for name in folder.lock_names():
            if not folder.path(name).exists():
                with folder.lock(name, wait=False, drop=True):
                    pass
    return {"entries": removed, "leftovers": leftovers, "bytes": freed,
            "remaining_bytes": remaining}


def parse_size(text):
    """Bytes in a size such as ``"500M"``, ``"2G"``, ``"1.5GiB"`` or ``"1048576"``.

    K, M, G and T are powers of 1024; a trailing ``B`` and an ``i`` after the unit are allowed.

    Parameters
    ----------
    text : str

    Returns
    -------
    int

    Raises
    ------
    LowbitError
        If ``text`` is not such a size.
    """
    m = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise LowbitError(f"cache size must be a number of bytes with an optional unit K, M, G "
                          f"or T, not {text!r}",
                          "write it like 500M, 2G or 1.5T (units are powers of 1024)")
    unit = m[2].lower() if m[2] else None
    return int(float(m[1]) * _UNITS[unit])


def format_size(n):
    """``n`` bytes for people: ``"512B"``, ``"3.2K"``, ``"52.3M"``, ``"1.5G"`` (powers of 1024)."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{n}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _count(n, one, many):
    return f"{n} {one if n == 1 else many}"


def format_info(info):
    """:func:`cache_info`'s result as lines of text: the total, then one line per cache."""
    lines = [f"lowbit caches in {info['root']}: {_count(info['entries'], 'entry', 'entries')}, "
             f"{format_size(info['bytes'])}"]
    for label, c in info["caches"].items():
        line = f"  {label:<10} {_count(c['entries'], 'entry', 'entries'):>13} " \
               f"{format_size(c['entry_bytes']):>8}"
        if c["logs"]:
            line += (f", {_count(c['logs'], 'failed-build log', 'failed-build logs')} "
                     f"({format_size(c['log_bytes'])})")
        if c["temporary"]:
            line += (f", {c['temporary']} temporary ({format_size(c['temporary_bytes'])}, "
                     "interrupted or in progress)")
        lines.append(line)
    return "\n".join(lines)


def format_clean(result):
    """:func:`cache_clean`'s result as one line of text."""
    return (f"removed {_count(result['entries'], 'entry', 'entries')} and "
            f"{_count(result['leftovers'], 'leftover', 'leftovers')}, freeing "
            f"{format_size(result['bytes'])}; {format_size(result['remaining_bytes'])} left")
