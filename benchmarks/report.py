"""Shared output of the benchmark commands: results JSON and a marked section of BENCHMARKS.md."""

import json
import re
from pathlib import Path

from lowbit.core.files import atomic_write_text

__all__ = ["ROOT", "BENCHMARKS_MD", "write_results", "update_section", "replace_block", "add_case_arguments",
           "chosen_cases"]

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


def add_case_arguments(ap, cases, work):
    """The options of a benchmark of named cases over datasets: --data, --cases, --limit, --work
    (default ``build/<work>``) and --write."""
    ap.add_argument("--data", default=None, help="folder with the MNIST / Fashion-MNIST idx files")
    ap.add_argument("--cases", default=",".join(cases), help="comma-separated case names")
    ap.add_argument("--limit", type=int, default=None, help="images per case (default: whole test set)")
    ap.add_argument("--work", default=str(ROOT / "build" / work))
    ap.add_argument("--write", action="store_true")


def chosen_cases(args, cases):
    """The case names of ``args.cases``, with the work folder made; None (the reason printed) when
    a name is unknown or --write would record less than whole test sets."""
    import sys

    if args.write and args.limit is not None:
        print("--write records whole test sets: drop --limit", file=sys.stderr)
        return None
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in cases]
    if unknown:
        print(f"unknown case(s) {unknown}; known: {', '.join(cases)}", file=sys.stderr)
        return None
    Path(args.work).mkdir(parents=True, exist_ok=True)
    return names
