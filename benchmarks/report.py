"""Shared output of the benchmark commands: results JSON and a marked section of BENCHMARKS.md."""

import json
import re
from pathlib import Path

from lowbit.core.files import atomic_write_text

__all__ = ["ROOT", "BENCHMARKS_MD", "write_results", "update_section", "replace_block"]

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def write_results(name, rows):
    """Write ``rows`` to benchmarks/results/NAME.json (atomically) and return the path."""
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    atomic_write_text(path, json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return path


def replace_block(begin, end, block, preamble):
    """Put ``block`` (which starts with ``begin`` and ends with ``end``) into BENCHMARKS.md in place
    of the text between those markers; if they are missing, append ``preamble`` (the section's
    heading and method text) and the block."""
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n{preamble.strip()}\n\n{block}\n"
    atomic_write_text(BENCHMARKS_MD, text)


def update_section(name, heading, body):
    """:func:`replace_block` with the markers ``<!-- NAME table begin -->`` / ``... end -->``."""
    begin, end = f"<!-- {name} table begin -->", f"<!-- {name} table end -->"
    replace_block(begin, end, f"{begin}\n{body.strip()}\n{end}", heading)
