"""The executor: jobs in this process or on a local Dask cluster, results in spec order whoever ran
them, a job that raises reported with its spec and traceback, and the CLI's options for it."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lowbit.cli import main
from lowbit.core.errors import LowbitError
from lowbit.core.executor import Executor, Failure

SPECS = [16, -1, 81, 4, -9, 1e6]


def _expected():
    return [(s, math.sqrt(s)) for s in SPECS if s >= 0]


def test_in_process_results_and_failures():
    seen = []
    results, failed = Executor(workers=1).map(math.sqrt, SPECS, on_done=lambda s, o, d, f: seen.append((s, d, f)))
    assert results == _expected()
    assert [f.spec for f in failed] == [-1, -9] and all(isinstance(f, Failure) for f in failed)
    assert failed[0].error == "ValueError: math domain error" and "Traceback" in failed[0].traceback
    assert failed[0].as_dict()["spec"] == -1
    assert [d for _, d, _ in seen] == list(range(1, len(SPECS) + 1)) and seen[-1][2] == 2


def test_a_local_cluster_gives_the_same_results_in_spec_order():
    done = []
    results, failed = Executor(workers=2).map(math.sqrt, SPECS, on_done=lambda s, o, d, f: done.append(s))
    assert results == _expected()  # in the order of the specs, not of completion
    assert [f.spec for f in failed] == [-1, -9] and "math domain error" in failed[1].error
    assert sorted(done) == sorted(SPECS)


def test_one_job_needs_no_cluster():
    assert Executor(workers=4).in_process(1) and not Executor(workers=4).in_process(2)
    assert not Executor(scheduler="tcp://127.0.0.1:1").in_process(1)


def test_an_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(LowbitError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        Executor(scheduler="tcp://127.0.0.1:9").map(math.sqrt, [1, 4])


@pytest.mark.parametrize("workers", [0, -2, True])
def test_bad_worker_counts(workers):
    with pytest.raises(LowbitError, match="--workers must be a positive integer"):
        Executor(workers=workers)


def test_the_cli_takes_workers_and_a_scheduler(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fuzz", "--n", "2", "--workers", "0", "-o", str(tmp_path / "f")])
    assert e.value.code == 2 and "argument --workers: must be an integer >= 1" in capsys.readouterr().err
    assert main(["sweep", "--arch", "mlp:16", "--in-shape", "16", "--classes", "2", "--formats", "bipolar",
                 "--target-cycles", "16,64", "--scheduler", "tcp://127.0.0.1:9", "-o", str(tmp_path / "s")]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "f").exists()


# A Dask cluster of separate processes: `dask scheduler` and two `dask worker`s on localhost.

SWEEP = ["sweep", "--arch", "mlp:16", "--in-shape", "16", "--classes", "2", "--formats", "bipolar,ternary",
         "--target-cycles", "16,64"]


@pytest.fixture
def dask_cluster(tmp_path):
    """The scheduler's address and the two worker processes; all stopped afterwards."""
    dask = str(Path(sys.executable).with_name("dask"))
    # The workers import this file for its jobs, as a cluster's workers import lowbit.
    env = {**os.environ, "LOWBIT_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    scheduler_file = tmp_path / "scheduler.json"
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                               "--no-dashboard"], **quiet)]
    try:
        workers = [subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                     "--no-dashboard", "--no-nanny"], **quiet) for _ in range(2)]
        procs += workers
        from distributed import Client

        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_a_sweep_on_a_cluster_writes_what_one_process_writes(dask_cluster, tmp_path, capsys):
    address, _ = dask_cluster
    assert main([*SWEEP, "--workers", "1", "-o", str(tmp_path / "serial")]) in (None, 0)
    assert main([*SWEEP, "--scheduler", address, "-o", str(tmp_path / "cluster")]) in (None, 0)
    assert _files(tmp_path / "serial") == _files(tmp_path / "cluster")
    assert json.loads((tmp_path / "cluster" / "sweep.json").read_text())["failed"] == []


def _slow_square(spec):
    """A job that says where it runs, then takes a while."""
    folder, x = spec
    (Path(folder) / f"{os.getpid()}-{x}").touch()
    time.sleep(1.0)
    return x * x


def test_a_worker_killed_mid_job_loses_nothing(dask_cluster, tmp_path):
    address, workers = dask_cluster
    started = tmp_path / "started"
    started.mkdir()
    specs = [(str(started), x) for x in range(8)]
    out = {}
    run = threading.Thread(target=lambda: out.update(zip(("results", "failed"),
                                                         Executor(scheduler=address).map(_slow_square, specs))))
    run.start()
    victim = workers[0]
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(f"{victim.pid}-") for p in started.iterdir()):
        assert time.monotonic() < deadline and run.is_alive(), "no job started on the first worker"
        time.sleep(0.05)
    victim.kill()  # mid-job: its job is one second long
    run.join(timeout=120)
    assert not run.is_alive()
    assert out["results"] == [(s, s[1] ** 2) for s in specs] and out["failed"] == []
    survivor = {int(p.name.split("-")[0]) for p in started.iterdir()} - {victim.pid}
    assert survivor == {workers[1].pid}  # the killed worker's job ran again on the other one


@pytest.mark.parametrize("whom", ["the process group (Ctrl-C)", "lowbit alone"])
def test_ctrl_c_leaves_no_process_behind(tmp_path, whom):
    import psutil

    env = {**os.environ, "LOWBIT_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "lowbit", "sweep", "--arch", "mlp:64,32", "--in-shape", "64", "--formats",
            "bipolar,ternary", "--target-cycles", "64,256", "--synth", "--workers", "2", "-o", str(tmp_path / "s")]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        lowbit = psutil.Process(run.pid)
        deadline = time.monotonic() + 120
        while not any("yosys" in " ".join(c.cmdline()) for c in _alive(lowbit.children(recursive=True))):
            assert time.monotonic() < deadline and run.poll() is None, "no synthesis started"
            time.sleep(0.1)
        below = lowbit.children(recursive=True)
        assert len(below) >= 4  # two workers, their yosys runs
        if whom == "lowbit alone":
            run.send_signal(signal.SIGINT)
        else:
            os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=120)
        assert run.returncode == 130, err
        gone, alive = psutil.wait_procs(below, timeout=30)
        assert not alive, [" ".join(p.cmdline()) for p in _alive(alive)]
        assert not (tmp_path / "s").exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)


def _alive(procs):
    for p in procs:
        try:
            if p.status() != "zombie":
                p.cmdline()
                yield p
        except psutil_errors():
            pass


def psutil_errors():
    import psutil

    return (psutil.NoSuchProcess, psutil.AccessDenied)
