"""Shared output of the benchmark commands: results JSON and a marked section of BENCHMARKS.md."""

import json
import re
from pathlib import Path

from lowbit.files import atomic_write_text

__all__ = ["ROOT", "BENCHMARKS_MD", "write_results", "update_section"]

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def write_results(name, rows):
    """Write ``rows`` to benchmarks/results/NAME.json (atomically) and return the path."""
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    atomic_write_text(path, json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return path


def update_section(name, heading, block):
    """Replace the text between ``<!-- NAME table begin -->`` and ``... end -->`` in BENCHMARKS.md
    with ``block``; a missing section is appended under ``heading`` (a Markdown heading line)."""
    begin, end = f"<!-- {name} table begin -->", f"<!-- {name} table end -->"
    marked = f"{begin}\n{block.strip()}\n{end}"
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: marked, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{marked}\n"
    atomic_write_text(BENCHMARKS_MD, text)
