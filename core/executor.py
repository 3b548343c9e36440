"""Independent jobs on Dask: in this process (one worker), on a local cluster of worker processes,
or on an existing Dask cluster (a scheduler address, or dask-jobqueue's).

Every job is a pure function of its spec: the results come back keyed by spec and in the order of
the specs, so what a caller writes is the same for any number of workers and any completion order.
A job that raises is a :class:`Failure` (its spec and traceback), and the other jobs go on. A
worker that dies mid-job has its job run again elsewhere by Dask's scheduler. Ctrl-C cancels every
pending job and closes the local cluster, whose nannies stop their workers.
"""

import contextlib
import dataclasses
import logging
import os
import time
import traceback

from .errors import LowbitError

__all__ = ["Executor", "Failure", "default_workers"]

# How long to try to reach a given scheduler before saying it cannot be reached.
CONNECT_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class Failure:
    """A job that raised: its spec and the traceback, for the ``failed`` section of an output."""
    spec: object
    error: str
    traceback: str

    def as_dict(self):
        # A spec that carries data no report should hold (a trained network) says how it reads.
        if hasattr(self.spec, "as_dict"):
            spec = self.spec.as_dict()
        else:
            spec = dataclasses.asdict(self.spec) if dataclasses.is_dataclass(self.spec) else self.spec
        return {"spec": spec, "error": self.error, "traceback": self.traceback}


def default_workers():
    """One worker process per core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run(fn, spec):
    """``fn(spec)``, with an exception returned as a Failure instead of raised: a job's own error
    is reported, never retried."""
    try:
        return True, fn(spec)
    except Exception as e:  # the job failed, not the worker: report it with its traceback
        return False, Failure(spec, f"{type(e).__name__}: {e}", traceback.format_exc())


class Executor:
    """Where jobs run.

    Parameters
    ----------
    workers : int, optional
        1: in this process, no cluster. More: a local cluster of that many single-threaded worker
        processes. Default: one per core. Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``), whose workers run the jobs; they
        must import this lowbit.
    on_stop : callable, optional
        Called when a run on the local cluster was stopped (Ctrl-C, a signal) and its workers,
        killed mid-job, are gone: e.g. to collect what they were writing.
    """

    def __init__(self, workers=None, scheduler=None, on_stop=None):
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise LowbitError(f"--workers must be a positive integer, not {workers!r}")
        self.workers = default_workers() if workers is None else workers
        self.scheduler, self.on_stop = scheduler, on_stop

    def in_process(self, jobs):
        """Whether ``jobs`` jobs run here: one worker, or one job, needs no cluster."""
        return self.scheduler is None and min(self.workers, jobs) == 1

    def map(self, fn, specs, *, on_done=None):
        """Run ``fn(spec)`` (a picklable function) for every spec; return ``(results, failures)``:
        ``(spec, result)`` of the jobs that returned, in the order of ``specs``, and a
        :class:`Failure` for each job that raised. ``on_done(spec, outcome, done, failed)`` is
        called as each job ends, in completion order, ``outcome`` its result or Failure."""
        specs = list(specs)
        outcomes = [None] * len(specs)
        failed = 0
        for done, (k, (ok, outcome)) in enumerate(self._outcomes(fn, specs), 1):
            outcomes[k] = ok, outcome
            failed += not ok
            if on_done is not None:
                on_done(specs[k], outcome, done, failed)
        results = [(s, o[1]) for s, o in zip(specs, outcomes) if o[0]]
        return results, [o[1] for o in outcomes if not o[0]]

    def _outcomes(self, fn, specs):
        """``(index, (ok, result or Failure))`` of every job, as they end."""
        if self.in_process(len(specs)):
            for k, spec in enumerate(specs):
                yield k, _run(fn, spec)
            return
        try:
            with self._client(len(specs)) as client:
                from distributed import as_completed

                futures = {client.submit(_run, fn, spec, pure=False): k for k, spec in enumerate(specs)}
                try:
                    for future in as_completed(futures):
                        yield futures[future], future.result()
                except BaseException:  # Ctrl-C or an error here: nothing is left queued on the cluster
                    client.cancel(list(futures))
                    raise
        except BaseException:
            if self.scheduler is None and self.on_stop is not None:
                self.on_stop()  # the local workers are stopped: what they left half-written can go
            raise

    @contextlib.contextmanager
    def _client(self, jobs):
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency of lowbit
            raise LowbitError("Dask distributed is not installed", "run make (it installs dask[distributed])")
        quiet = {"silence_logs": logging.ERROR}
        if self.scheduler:
            try:
                client = Client(self.scheduler, timeout=CONNECT_SECONDS)
            except OSError as e:
                raise LowbitError(f"cannot reach the Dask scheduler at {self.scheduler!r}: {e}",
                                  "start one (dask scheduler) or check the address, tcp://HOST:PORT") from None
            try:
                yield client
            finally:
                client.close()
            return
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=min(self.workers, jobs), threads_per_worker=1, processes=True,
                               dashboard_address=":0", **quiet)  # any free port: two runs never clash
        client = Client(cluster)
        logging.getLogger("lowbit").debug("local cluster up in %.1f s", time.perf_counter() - t0)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
