"""The executor: jobs in this process or on a local Dask cluster, results in spec order whoever ran
them, a job that raises reported with its spec and traceback, and the CLI's options for it."""

import math

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
