"""Scale out: the same jobs in one process, on a local Dask cluster of two workers, and on a Dask
cluster of separate processes (one of them killed mid-run).

    python -m benchmarks.scale --write
    python -m benchmarks.scale --workloads calibration --engines 8

Every run starts from an empty cache (its own ``LOWBIT_CACHE``), so each one does all its work;
``identical_to_serial`` compares the output with the one-process run's, byte for byte (timings
left out).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .report import ROOT, update_section, write_results

WORKLOADS = ("calibration", "fuzz", "cluster-sweep", "synth-lfc")
# The LFC-size network synthesizes per engine on two workers in at most this long.
LFC_GOAL_SECONDS = 240
# Each workload's rows start so; a run of some workloads keeps the written rows of the others.
ROW_PREFIX = {"calibration": "calibration sweep", "fuzz": "lowbit fuzz", "cluster-sweep": "lowbit sweep",
              "synth-lfc": "synth-lfc"}
SWEEP_ARGS = ["sweep", "--arch", "mlp:64,32", "--in-shape", "64", "--formats", "bipolar,ternary,levels5",
              "--target-cycles", "64,256,1024", "--synth"]


class fresh_cache:
    """A new, empty ``LOWBIT_CACHE`` while the block runs (worker processes started in it inherit it)."""

    def __enter__(self):
        self.folder = tempfile.mkdtemp(prefix="lowbit-scale-cache-")
        self.before = os.environ.get("LOWBIT_CACHE")
        os.environ["LOWBIT_CACHE"] = self.folder
        return self.folder

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("LOWBIT_CACHE", None)
        else:
            os.environ["LOWBIT_CACHE"] = self.before
        shutil.rmtree(self.folder, ignore_errors=True)


def calibration(workers, engines):
    """The first ``engines`` xc7 jobs of the estimator's calibration sweep."""
    from lowbit.boards.calibrate import calibration_jobs, calibration_row
    from lowbit.core.executor import Executor

    jobs = calibration_jobs(("xilinx",))[:engines]
    with fresh_cache():
        t0 = time.perf_counter()
        results, failed = Executor(workers=workers).map(calibration_row, jobs)
        seconds = time.perf_counter() - t0
    return len(jobs), seconds, json.dumps([r for _, r in results], sort_keys=True), len(failed)


def fuzz(workers, networks):
    """``lowbit fuzz --n NETWORKS`` (the networks' checks and counts; timings and paths left out)."""
    from lowbit.core.executor import Executor
    from lowbit.fuzz import fuzz as run_fuzz

    with fresh_cache(), tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        totals = run_fuzz(networks, seed=0, vectors=16, out_dir=out, progress=False, executor=Executor(workers=workers))
        seconds = time.perf_counter() - t0
    totals.pop("seconds")
    for f in totals["failures"]:
        f.pop("reproduction")
    return networks, seconds, json.dumps(totals, sort_keys=True), len(totals["failed"])


def _lowbit(argv, env, **kw):
    return subprocess.run([sys.executable, "-m", "lowbit", *argv], env=env, capture_output=True, text=True, **kw)


def _sweep_output(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if not p.name.startswith(".")}


def cluster_sweep(kill):
    """``lowbit sweep --scheduler`` on a scheduler and two workers started as their own processes
    (``dask scheduler``, ``dask worker``), against ``lowbit sweep --workers 1``; with ``kill``, one
    worker is killed once the first jobs run."""
    dask = str(Path(sys.executable).with_name("dask"))
    with tempfile.TemporaryDirectory(prefix="lowbit-scale-") as work:
        work = Path(work)
        with fresh_cache() as cache:
            env = {**os.environ, "LOWBIT_CACHE": cache}
            t0 = time.perf_counter()
            serial = _lowbit([*SWEEP_ARGS, "--workers", "1", "-o", str(work / "serial")], env)
            serial_seconds = time.perf_counter() - t0
            if serial.returncode:
                raise RuntimeError(f"the serial sweep failed: {serial.stderr[-2000:]}")
        with fresh_cache() as cache:
            env = {**os.environ, "LOWBIT_CACHE": cache}
            scheduler_file = work / "scheduler.json"
            procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                                       "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)]
            try:
                while not scheduler_file.exists():
                    time.sleep(0.2)
                address = json.loads(scheduler_file.read_text())["address"]
                workers = [subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                             "--no-dashboard", "--no-nanny"], env=env, cwd=ROOT,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
                procs += workers
                time.sleep(5)  # both workers registered
                t0 = time.perf_counter()
                run = subprocess.Popen([sys.executable, "-m", "lowbit", *SWEEP_ARGS, "--scheduler", address, "-o",
                                        str(work / "cluster")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
                killed = None
                if kill:
                    time.sleep(15)  # the first synthesis jobs are running on both workers
                    workers[0].send_signal(signal.SIGKILL)
                    killed = workers[0].pid
                out, err = run.communicate(timeout=3600)
                seconds = time.perf_counter() - t0
            finally:
                for p in reversed(procs):  # the workers first, while their scheduler is up
                    p.terminate()
                    try:
                        p.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
        if run.returncode:
            raise RuntimeError(f"the cluster sweep failed: {err[-2000:]}")
        same = _sweep_output(work / "serial") == _sweep_output(work / "cluster")
        jobs = len(json.loads((work / "serial" / "sweep.json").read_text())["rows"])
        return {"jobs": jobs, "seconds": round(seconds, 1), "serial_seconds": round(serial_seconds, 1),
                "identical_to_serial": same,
                "failed": len(json.loads((work / "cluster" / "sweep.json").read_text())["failed"]),
                "workers": "2 (dask worker processes)" + (", one killed mid-sweep" if killed else ""),
                "scheduler": "dask scheduler, its own process"}


def lfc_verilog():
    """The Verilog of a 784-1024-1024-1024-10 W1A1 network (random weights) folded to 256 cycles per
    image, as ``lowbit compile`` writes it (AXI-Stream top)."""
    from lowbit.compiler.codegen import generate_verilog
    from lowbit.folding import fold_for_cycles
    from lowbit.model.export import export_model
    from lowbit.sweep import _random_model, random_model_arch

    model = _random_model(random_model_arch("mlp:1024,1024,1024", "bipolar", in_shape=(784,), classes=10), 0)
    graph = fold_for_cycles(export_model(model, {"source": "random weights, seed 0"}), 256)
    text, top = generate_verilog(graph, ports="axi-stream")
    return text, [f"{m.folding.pe}x{m.folding.simd}" for m in graph.matmuls()]


def synth_lfc(workers, flat):
    """Synthesis of the LFC-size network for xc7 per engine on ``workers`` (cold cache), and with
    ``flat`` in one Yosys run too (cold cache)."""
    from lowbit.boards.engine_synth import split_engines, synthesize_engines
    from lowbit.boards.synth import synthesize
    from lowbit.core.executor import Executor

    t0 = time.perf_counter()
    text, folding = lfc_verilog()
    verilog_seconds = time.perf_counter() - t0
    print(f"LFC Verilog ({folding}): {len(text) / 1e6:.1f} MB in {verilog_seconds:.0f} s", flush=True)
    with fresh_cache():
        t0 = time.perf_counter()

        def progress(job, done, jobs):
            print(f"  {time.perf_counter() - t0:6.1f} s: {job.top} {job.digest} done ({done}/{jobs})", flush=True)

        total, parts = synthesize_engines(text, "lowbit_top", "xilinx", executor=Executor(workers=workers),
                                          progress=progress)
        seconds = time.perf_counter() - t0
    row = {"workload": "synth-lfc", "network": "784-1024-1024-1024-10 W1A1, 256 cycles/image",
           "folding": folding,
           "jobs": len(split_engines(text, "lowbit_top", "xilinx").jobs), "workers": workers,
           "seconds": round(seconds, 1),
           "verilog_seconds": round(verilog_seconds, 1), "luts": total.luts, "ffs": total.ffs,
           "part_luts": {name: r.luts for name, r in parts.items()},
           "part_seconds": {name: round(r.seconds, 1) for name, r in parts.items()},
           "identical_to_serial": None, "failed": 0}
    if flat:
        with fresh_cache():
            t0 = time.perf_counter()
            r = synthesize(text, "lowbit_top", "xilinx")
            row.update(flat_seconds=round(time.perf_counter() - t0, 1), flat_luts=r.luts, flat_ffs=r.ffs)
        row["per_engine_vs_flat_luts"] = round(total.luts / r.luts - 1, 4)
    return row


def run(workloads, engines, networks, flat_lfc=True):
    rows = []
    for name in workloads:
        if name == "synth-lfc":
            rows.append(synth_lfc(2, flat_lfc))
            print(rows[-1], flush=True)
            continue
        if name == "cluster-sweep":
            for kill in (False, True):
                rows.append({"workload": f"lowbit sweep --synth --scheduler ({' '.join(SWEEP_ARGS[1:-1])})",
                             **cluster_sweep(kill)})
                print(rows[-1], flush=True)
            continue
        serial = None
        for workers in (1, 2):
            jobs, seconds, output, failed = calibration(workers, engines) if name == "calibration" else \
                fuzz(workers, networks)
            serial = output if serial is None else serial
            what = f"calibration sweep, first {jobs} xc7 engines, cold cache" if name == "calibration" else \
                f"lowbit fuzz --n {jobs}, cold cache"
            rows.append({"workload": what, "jobs": jobs, "workers": workers, "seconds": round(seconds, 1),
                         "identical_to_serial": output == serial, "failed": failed})
            print(rows[-1], flush=True)
        rows[-1]["speedup"] = round(rows[-2]["seconds"] / rows[-1]["seconds"], 2)
    return rows


def table(rows):
    same = {True: "yes", False: "NO", None: "n/a"}
    lines = ["| workload | jobs | workers | seconds | speed-up | identical to serial | failed |",
             "|---|---:|---|---:|---:|---|---:|"]
    lines += [f"| {r['workload']} | {r['jobs']} | {r['workers']} | {r['seconds']}"
              + (f" (serial: {r['serial_seconds']})" if "serial_seconds" in r else "")
              + f" | {r.get('speedup', '')} | {same[r['identical_to_serial']]} | {r['failed']} |"
              for r in rows if r["workload"] != "synth-lfc"]
    for r in rows:
        if r["workload"] == "synth-lfc":
            flat = (f"flat, one Yosys run: {r['flat_luts']} LUT in {r['flat_seconds']} s; per engine "
                    f"{r['per_engine_vs_flat_luts']:+.1%} LUT against it" if "flat_luts" in r else "flat not run")
            lines += ["", f"LFC-size synthesis for xc7 ({r['network']}, foldings {', '.join(r['folding'])}; "
                      f"Verilog written in {r['verilog_seconds']} s): per engine on {r['workers']} workers, cold "
                      f"cache, {r['jobs']} distinct jobs, {r['seconds']} s of synthesis, {r['luts']} LUT, "
                      f"{r['ffs']} FF (the Yosys time of each engine's jobs: "
                      + ", ".join(f"{k} {v} LUT in {r['part_seconds'][k]} s" for k, v in r["part_luts"].items())
                      + f"); {flat}."]
    return "\n".join(lines)


def merged(rows, workloads):
    """The rows written before, of the workloads not run now, then ``rows``."""
    path = ROOT / "benchmarks" / "results" / "scale.json"
    kept = []
    if path.exists():
        before = json.loads(path.read_text())
        before = before.get("rows", before) if isinstance(before, dict) else before
        kept = [r for r in before if not any(r["workload"].startswith(ROW_PREFIX[w]) for w in workloads)]
    return kept + rows


METHOD = """Command: `python -m benchmarks.scale --write` on this 2-core machine. Every run starts from an
empty cache, so it synthesizes or builds everything itself. One worker runs the jobs in the calling
process; two workers are a local Dask cluster of two single-threaded worker processes. `identical to
serial` compares the outputs byte for byte, timings left out: the calibration rows, the fuzz totals,
and for the cluster runs every file `lowbit sweep` wrote (sweep.json, sweep.md and the plots). The
cluster runs use a `dask scheduler` and two `dask worker` processes started on their own; in the
second one a worker is killed with SIGKILL 15 s into the sweep, and Dask runs its jobs again on the
other.

`synth-lfc` writes the Verilog of a 784-1024-1024-1024-10 W1A1 network with random weights folded
to 256 cycles per image (what `lowbit compile` writes), then synthesizes it for xc7 per engine
(`lowbit synth`, each engine out of context as its own job) on two workers, cold cache, and once
more flat (`lowbit synth --flat`, one Yosys run over the whole design), cold cache. The goal is at
most 240 s for the per-engine synthesis. The xc7 flow bounds abc's SAT sweeping at 100 conflicts
per node (`&fraig -x -C 100`): unbounded, it ran for over 10 minutes on one 1024-input PE row
alone, which now maps in about 13 s; the estimator's calibration engines map the same either way
(see the estimator section)."""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of " + ", ".join(WORKLOADS))
    ap.add_argument("--engines", type=int, default=48, help="calibration jobs")
    ap.add_argument("--networks", type=int, default=40, help="fuzz networks")
    ap.add_argument("--no-flat-lfc", action="store_true", help="synth-lfc: skip the flat synthesis (long)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    workloads = args.workloads.split(",")
    if not set(workloads) <= set(WORKLOADS):
        print(f"--workloads: choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    rows = run(workloads, args.engines, args.networks, flat_lfc=not args.no_flat_lfc)
    print(table(rows))
    if args.write:
        rows = merged(rows, workloads)
        write_results("scale", rows)
        update_section("scale", "## Scale out: jobs on Dask", METHOD + "\n\n" + table(rows))
    problems = [r for r in rows if r["identical_to_serial"] is False or r["failed"]
                or (r["workload"] == "synth-lfc" and r["seconds"] > LFC_GOAL_SECONDS)]
    for r in problems:
        print(f"short of the goal: {r['workload']}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
