"""The robustness catalogue (``benchmarks/robustness_cases.py``), run: every case that runs in this
process, and the scenarios of signals and caches that the suite must keep covering.

Each case must be handled cleanly (:func:`benchmarks.robustness.run_case`): the exit code it must
have, one message naming the problem (word for word where the case pins it), no traceback, no
file lost, nothing left behind, and never an exit 0 for a run that had to refuse, fail or stop.
``docs/bad-inputs.md`` is generated from the benchmark's results; the doc test checks that it
holds this catalogue's cases, each with the message it gets now.
"""

import re

import pytest

from benchmarks.robustness import DOC, TABLE_BEGIN, TABLE_END, make_fixtures, run_case
from benchmarks.robustness_cases import CATALOGUE, GROUPS

IN_PROCESS = [c for c in CATALOGUE if not c.call.startswith("run:")]
# Child-process scenarios the suite runs too (the benchmark runs them all).
SCENARIOS = ["run: sigterm sim", "run: sigterm synth", "run: sigterm demo", "run: sigkill compile",
             "run: race compile"]


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("robustness"))


def _check(row):
    problems = [k for k in ("traceback", "lost_files", "partial_left", "silent_wrong") if row[k]]
    problems += [k for k in ("message_ok", "exit_ok") if not row[k]]
    assert row["passed"], f"{row['case']}: {', '.join(problems)}; exit {row['exit_code']}; " \
                          f"{row['message']!r}; {row['detail']}"


@pytest.mark.parametrize("case", IN_PROCESS, ids=[c.what for c in IN_PROCESS])
def test_case(case, fixtures, tmp_path):
    _check(run_case(case, fixtures, tmp_path))


@pytest.mark.parametrize("call", SCENARIOS)
def test_scenario(call, fixtures, tmp_path):
    case = next(c for c in CATALOGUE if c.call == call)
    _check(run_case(case, fixtures, tmp_path))


def test_catalogue_covers_every_class_and_command():
    assert len(CATALOGUE) >= 200
    assert {c.group for c in CATALOGUE} == set(GROUPS)
    commands = {c.command for c in CATALOGUE if c.cli}
    assert commands >= {"train", "eval", "quantize", "sweep-accuracy", "compile", "sim", "synth", "demo",
                        "estimate", "build", "fuzz", "sweep", "cache", "import"}
    assert len({c.what for c in CATALOGUE}) == len(CATALOGUE)


def test_doc_lists_every_case():
    """docs/bad-inputs.md is the benchmark's table: a row per case, in catalogue order."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    rows = [ln for ln in block.strip("\n").splitlines()[2:]]
    assert len(rows) == len(CATALOGUE), "docs/bad-inputs.md is out of date: python -m benchmarks.robustness --write"
    for line, case in zip(rows, CATALOGUE):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert cells[1:3] == [case.group, case.what], line
