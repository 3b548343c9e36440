"""The job file that a cocotb testbench runs, shared by the batch and the per-beat testbench.

:func:`lowbit.sim.runner.run_phases` writes the job (JSON, named by ``$LOWBIT_STREAM_JOB``) and
reads back the results file that the testbench writes, whatever happens to the run.
"""

import contextlib
import json
import os
import time

from lowbit.core.files import atomic_write_text

__all__ = ["JOB_ENV", "job_results", "words", "hex_word", "add_totals"]

JOB_ENV = "LOWBIT_STREAM_JOB"


def words(hex_words):
    """Payload words from the job's hexadecimal strings (widths beyond 64 bits survive JSON)."""
    return [int(w, 16) for w in hex_words]


def hex_word(word):
    """A payload word as the results file holds it; X/Z text stays as it is."""
    return f"{word:x}" if isinstance(word, int) else word


@contextlib.contextmanager
def job_results():
    """The job of ``$LOWBIT_STREAM_JOB`` and a results dict, written to the job's results file at
    the end however the run ends (with the error that ended it, if one did)."""
    with open(os.environ[JOB_ENV]) as f:
        job = json.load(f)
    results = {"nonce": job["nonce"]}
    t0 = time.perf_counter()
    try:
        yield job, results
    except Exception as e:
        results["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        results["seconds"] = time.perf_counter() - t0
        atomic_write_text(job["results"], json.dumps(results))


def add_totals(results, phases):
    """Put the per-phase summaries and their totals (mismatches, beats) into ``results``."""
    results["phases"] = phases
    results["mismatches"] = sum(p["errors"] for p in phases.values())
    results["beats"] = sum(p["accepted"] + p["received"] for p in phases.values())
