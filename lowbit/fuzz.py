"""Random-network fuzzing: many small random networks, each checked bit-exactly end to end.

Each network is drawn from its own seed (network ``i`` of a run with seed ``S`` has seed
``S + i``, so ``lowbit fuzz --n 1 --seed S+i`` replays it alone) and goes through three checks:

1. the IR reference equals the integer-exact PyTorch model on every hidden activation, every
   logit and every prediction (:func:`lowbit.model.check.compare_with_torch`);
2. the generated Verilog, in Verilator with random input idles and output backpressure, emits
   exactly the IR's output words (every word compared);
3. the measured cycles between outputs equal the manifest's cycles per inference, and the
   measured latency the predicted one where the manifest predicts it.

What varies: MLP or CNN, depth, widths, classes, the weight format (every registry format,
``binary01`` and tiled bipolar with ``p`` copies), the activation (bipolar, ``u1``..``u4`` or ``u6``), the
BatchNorm statistics and activation clips (negative scales included, which negate rows), and the
folding (fully folded, random valid PE/SIMD divisors, or the cheapest folding for a random
cycle target). Networks stay small so that one takes a few seconds; Verilator builds are cached
by the hash of their Verilog.
"""

import contextlib
import functools
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lowbit.compiler.codegen import TOP_NAME, build_manifest, generate_verilog
from lowbit.compiler.folding import apply_folding, most_folded
from lowbit.compiler.ir import Folding, divisors
from lowbit.compiler.serialize import save_graph
from lowbit.core.errors import LowbitError
from lowbit.core.executor import Executor
from lowbit.core.files import atomic_dir, atomic_write_text
from lowbit.core.status import bar_shown
from lowbit.hw.payload import VectorFormat
from lowbit.sim import toolchain
from lowbit.sim.runner import SimulationError, StallConfig, run_stream

from .folding import fold_for_cycles

__all__ = ["random_case", "random_model", "random_folding", "check_network", "NetworkResult",
           "fuzz", "TORCH_VECTORS"]

WEIGHT_CHOICES = ("bipolar", "binary01", "ternary", "levels5", "levels9", "levels17", "pow2", "tiled")
# Every activation width up to 8 bits (255 thresholds per channel); random foldings cap PE and
# SIMD so that each network builds and simulates in seconds.
ACT_CHOICES = ("bipolar", "u1", "u2", "u3", "u4", "u6", "u8")
MAX_PE, MAX_SIMD = 4, 8
# The PyTorch comparison is cheap; it runs on more inputs than the simulation.
TORCH_VECTORS = 256


def random_case(seed):
    """The architecture and folding recipe of network ``seed``: plain data, deterministic in ``seed``.

    Returns
    -------
    dict
        ``seed``, ``arch`` (a :func:`lowbit.model.arch.build_model` dict) and ``folding`` (one of
        ``"most"``, ``"random"`` (PE up to ``MAX_PE``, SIMD up to ``MAX_SIMD``) or
        ``{"target_fraction": f}``: the cheapest folding for a cycle target ``f`` of the way from
        the fastest to the most folded).
    """
    rng = np.random.default_rng([seed, 0xF022])
    fmt = str(rng.choice(WEIGHT_CHOICES))
    act = "bipolar" if fmt == "binary01" else str(rng.choice(ACT_CHOICES))
    p = int(rng.choice([2, 4])) if fmt == "tiled" else None
    # Tiled layers reuse T·x only when p divides the output channels: widths are multiples of p.
    unit = p or 1

    def width(lo, hi):
        return unit * int(rng.integers(max(1, lo // unit), max(1, hi // unit) + 1))

    if rng.random() < 0.7:
        arch = {"kind": "mlp", "in_features": int(rng.integers(3, 41)),
                "hidden": [width(2, 24) for _ in range(int(rng.integers(0, 4)))],
                "classes": max(2, width(2, 8))}
    else:
        n_conv = int(rng.integers(1, 3))
        side = int(rng.integers(4 if n_conv == 1 else 10, 11))
        arch = {"kind": "cnn", "in_shape": [int(rng.integers(1, 4)), side, side],
                "channels": [width(2, 6) for _ in range(n_conv)],
                "fc": [width(3, 12) for _ in range(int(rng.integers(0, 2)))],
                "classes": max(2, width(2, 6))}
    arch["weight_format"] = "bipolar" if fmt == "tiled" else fmt
    arch["act"] = act
    if p is not None:
        arch["p"] = p
        arch["min_compress_size"] = int(rng.choice([8, 32, 128]))
    folding = str(rng.choice(["most", "random", "target"]))
    if folding == "target":
        folding = {"target_fraction": float(rng.uniform(0.25, 1.0))}
    return {"seed": int(seed), "arch": arch, "folding": folding}


def random_model(case):
    """The model of ``case`` with random weights, BatchNorm statistics and activation clips.

    BatchNorm scales are drawn with either sign, so some channels' thresholds flip and their rows
    are negated; means and variances spread the thresholds over the whole reachable range.
    """
    import torch
    from torch import nn

    from .model.arch import build_model
    from .model.layers import QuantAct

    torch.manual_seed(case["seed"])
    model = build_model(case["arch"])
    negative = float(torch.rand(()))  # share of negative BatchNorm scales in this network
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                sign = torch.where(torch.rand(mod.weight.shape) < negative, -1.0, 1.0)
                mod.weight.copy_(sign * torch.empty_like(mod.weight).uniform_(0.1, 1.5))
                mod.bias.normal_(0, 1)
                mod.running_mean.normal_(0, 3)
                mod.running_var.uniform_(0.5, 20)
            elif isinstance(mod, QuantAct) and isinstance(mod.clip, nn.Parameter):
                mod.clip.uniform_(0.5, 6.0)
            else:
                for name, param in mod.named_parameters(recurse=False):
                    if name in ("weight", "bias"):
                        param.uniform_(-1, 1)
    return model.eval()


def random_folding(graph, case):
    """``graph`` folded as ``case["folding"]`` says, with the draws seeded by the case."""
    how = case["folding"]
    if how == "most":
        return most_folded(graph)
    rng = np.random.default_rng([case["seed"], 0xF01D])
    if how == "random":
        return apply_folding(graph, [
            Folding(int(rng.choice([d for d in divisors(m.tile_rows) if d <= MAX_PE])),
                    int(rng.choice([d for d in divisors(m.mw) if d <= MAX_SIMD])))
            for m in graph.matmuls()])
    # A target between the fastest and the most folded cycle count: always reachable.
    slowest = most_folded(graph).cycles_per_inference()
    positions = graph.positions()
    fastest = max(positions[m.name] for m in graph.matmuls())
    target = max(fastest, int(round(fastest + how["target_fraction"] * (slowest - fastest))))
    return fold_for_cycles(graph, target)


@dataclass
class NetworkResult:
    """The checks of one network.

    Attributes
    ----------
    seed : int
    summary : str
        One line naming the network.
    torch_mismatches : int
        Hidden-activation, logit and prediction mismatches of the IR against PyTorch.
    words : int
        Output words compared in the stalled Verilator run.
    word_mismatches : int
        Wrong, missing and extra output words over both simulated phases.
    cycles_predicted, cycles_measured
        Cycles per inference from the manifest, and the set of measured output intervals.
    latency_predicted, latency_measured : int or None
    error : str or None
        The traceback when a step raised.
    graph : lowbit.compiler.ir.Graph or None
        The exported (and, once folded, the folded) graph, kept for the reproduction.
    case : dict
        What :func:`random_case` drew.
    """

    seed: int
    summary: str
    torch_mismatches: int = 0
    words: int = 0
    word_mismatches: int = 0
    cycles_predicted: int | None = None
    cycles_measured: list = field(default_factory=list)
    latency_predicted: int | None = None
    latency_measured: int | None = None
    error: str | None = None
    graph: object = field(default=None, repr=False)
    case: dict = field(default_factory=dict, repr=False)

    @property
    def problems(self):
        """What failed, as short phrases; empty when the network passed every check."""
        out = []
        if self.error:
            out.append("raised " + self.error.strip().splitlines()[-1])
        if self.torch_mismatches:
            out.append(f"{self.torch_mismatches} IR/PyTorch mismatches")
        if self.word_mismatches:
            out.append(f"{self.word_mismatches} of {self.words} output words differ")
        if self.error is None and self.cycles_measured != [self.cycles_predicted]:
            out.append(f"measured intervals {self.cycles_measured}, predicted {self.cycles_predicted}")
        if self.latency_predicted is not None and self.latency_measured != self.latency_predicted:
            out.append(f"measured latency {self.latency_measured}, predicted {self.latency_predicted}")
        return out

    @property
    def ok(self):
        return not self.problems


def describe(case, graph=None):
    """One line: kind, shape, weight format, activation and (when known) the folding."""
    a = case["arch"]
    shape = (f"mlp {a['in_features']}-{'-'.join(map(str, a['hidden'] + [a['classes']]))}"
             if a["kind"] == "mlp" else
             f"cnn {'x'.join(map(str, a['in_shape']))} c{','.join(map(str, a['channels']))}"
             f" fc{','.join(map(str, a['fc'] + [a['classes']]))}")
    fmt = f"tiled p={a['p']}" if a.get("p") else a["weight_format"]
    text = f"{shape} {fmt} {a['act']}"
    if graph is not None:
        text += " " + ",".join(str(m.folding) for m in graph.matmuls())
    return text


def check_network(seed, vectors, *, torch_vectors=TORCH_VECTORS):
    """Build network ``seed`` and run the three checks; never raises for the network's own faults.

    Parameters
    ----------
    seed : int
    vectors : int
        Random inputs streamed through Verilator.
    torch_vectors : int
        Random inputs of the IR/PyTorch comparison.

    Returns
    -------
    NetworkResult
    """
    from lowbit.model.check import compare_with_torch  # torch
    from lowbit.model.export import export_model

    case = random_case(seed)
    result = NetworkResult(seed, describe(case), case=case)
    try:
        model = random_model(case)
        graph = export_model(model)
        result.graph = graph
        rng = np.random.default_rng([seed, 0x1A9])
        x = rng.choice([-1, 1], size=(max(torch_vectors, vectors), graph.input_features))
        r = compare_with_torch(model, graph, x, np.zeros(len(x), dtype=int))
        result.torch_mismatches = (r["prediction_disagreements"] + max(r["logit_mismatches"], 0)
                                   + (r["logit_mismatches"] < 0) + sum(r["activation_mismatches"].values()))
        graph = random_folding(graph, case)
        result.graph = graph
        result.summary = describe(case, graph)
        text, top = generate_verilog(graph)
        manifest = build_manifest(graph, top)
        x = x[:vectors]
        in_fmt = VectorFormat(**manifest["ports"]["i"]["format"])
        out_fmt = VectorFormat(**manifest["ports"]["o"]["format"])
        expected = out_fmt.pack(graph.hardware_output(x).reshape(vectors, -1))
        cycles = manifest["cycles_per_inference"]
        # Stall gaps are per beat; a feature map streams one beat per pixel.
        per_beat = max(1, cycles // manifest["beats_per_inference"])
        sim = run_stream(text, TOP_NAME, in_fmt.pack(x.reshape(-1, in_fmt.count)), expected,
                         n_items=vectors, timing_items=min(6, vectors), seed=seed,
                         stall=StallConfig(seed=seed, max_gap=2 * per_beat), progress=False,
                         waves_on_mismatch=False)
        result.words = len(expected)
        result.word_mismatches = sim.mismatches
        if list(sim.outputs) != expected and not sim.mismatches:
            result.word_mismatches = len(expected)  # the scoreboard and the words disagree
        result.cycles_predicted = cycles
        result.cycles_measured = sorted(set(sim.interval))
        result.latency_predicted = manifest["latency_cycles"]
        result.latency_measured = sim.latency if manifest["latency_cycles"] is not None else None
    except KeyboardInterrupt:
        raise
    except SimulationError:
        result.error = traceback.format_exc()
    except LowbitError as e:
        if _is_toolchain_error(e):
            raise  # a missing tool is the user's setup, not the network's fault
        result.error = traceback.format_exc()
    except Exception:  # any crash of a valid random network is a finding, with its reproduction
        result.error = traceback.format_exc()
    return result


def _is_toolchain_error(error):
    return any(text in str(error) for text in ("not found on PATH", "verilator Python package",
                                               "the verilator package"))


def save_reproduction(result, out_dir):
    """Write ``out_dir/seed-<seed>/``: ``case.json`` (arch, folding, problems) and ``graph.npz``."""
    path = Path(out_dir) / f"seed-{result.seed}"
    with atomic_dir(path, "fuzz-case") as tmp:
        info = {**result.case, "summary": result.summary, "problems": result.problems,
                "replay": f"lowbit fuzz --n 1 --seed {result.seed}", "error": result.error}
        atomic_write_text(tmp / "case.json", json.dumps(info, indent=2) + "\n")
        if result.graph is not None:
            save_graph(tmp / "graph.npz", result.graph)
    return path


def _bar(done, total, failures, running=0, width=24):
    filled = width * done // total
    return (f"\rfuzz [{'#' * filled}{'.' * (width - filled)}] {done}/{total} networks, {failures} failed"
            + (f", {running} to go" if running else ""))


def fuzz(n, seed=0, vectors=16, out_dir="build/fuzz", *, progress=True, stream=sys.stderr,
         on_result=None, executor=None):
    """Check ``n`` random networks (seeds ``seed`` .. ``seed + n - 1``); save each failure's reproduction.

    Parameters
    ----------
    n : int
        Networks to check.
    seed : int
        Seed of the first network.
    vectors : int
        Random inputs per network in Verilator.
    out_dir : path-like
        Where reproductions of failing networks go (``seed-<seed>/``); nothing is written when
        every network passes.
    progress : bool
        Draw a progress bar on ``stream``.
    on_result : callable, optional
        Called with each network's :class:`NetworkResult` as it finishes (for logs of long soaks).
    executor : lowbit.core.executor.Executor, optional
        Where the networks are checked, each a job (default: one after the other, in this process).

    Returns
    -------
    dict
        ``networks``, ``vectors`` (inputs simulated in all), ``words`` (output words compared),
        ``torch_vectors``, ``mismatches`` (IR/PyTorch mismatches plus output-word mismatches),
        ``cycle_mismatches``, ``failures`` (seed, network, problems, reproduction folder per
        failing network), ``seed``, ``seconds`` and ``kinds`` (networks per weight format).

    Raises
    ------
    LowbitError
        On bad arguments or a missing simulation toolchain.
    """

    for name, value, least in (("--n", n, 1), ("--vectors", vectors, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise LowbitError(f"{name} must be an integer >= {least}, not {value!r}",
                              "pass a positive count" if least == 1 else
                              "two or more vectors: the cycle check needs two outputs")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LowbitError(f"--seed must be a non-negative integer, not {seed!r}")
    toolchain.verilator_env()  # a missing tool is reported before any network is drawn
    executor = executor or Executor(workers=1)
    t0 = time.perf_counter()
    totals = {"networks": 0, "vectors": 0, "words": 0, "torch_vectors": 0, "mismatches": 0,
              "cycle_mismatches": 0, "failures": [], "seed": seed, "kinds": {}, "failed": []}

    bad = 0  # networks that failed a check, or whose job raised

    def done(seed, outcome, finished, raised):
        nonlocal bad
        bad += not isinstance(outcome, NetworkResult) or not outcome.ok
        if isinstance(outcome, NetworkResult) and on_result is not None:
            on_result(outcome)
        if progress and bad and (not isinstance(outcome, NetworkResult) or not outcome.ok):
            what = f"{outcome.summary}): {'; '.join(outcome.problems)}" if isinstance(outcome, NetworkResult) \
                else f"job raised {outcome.error}"
            print(f"\rnetwork seed {seed} ({what}", file=stream, flush=True)
        if progress:
            print(_bar(finished, n, bad, n - finished), end="", file=stream, flush=True)

    if progress:
        print(_bar(0, n, 0, n), end="", file=stream, flush=True)
    with bar_shown() if progress else contextlib.nullcontext():  # no Verilator status line under the bar
        results, crashed = executor.map(functools.partial(check_network, vectors=vectors), range(seed, seed + n),
                                        on_done=done)
    for _, r in results:  # in seed order, whatever order they finished in
        a = r.case["arch"]
        kind = "tiled" if a.get("p") else a["weight_format"]
        totals["kinds"][kind] = totals["kinds"].get(kind, 0) + 1
        totals["networks"] += 1
        totals["vectors"] += vectors if r.error is None else 0
        totals["torch_vectors"] += max(TORCH_VECTORS, vectors) if r.error is None else 0
        totals["words"] += r.words
        totals["mismatches"] += r.torch_mismatches + r.word_mismatches
        totals["cycle_mismatches"] += (r.error is None and r.cycles_measured != [r.cycles_predicted]) + \
            (r.latency_predicted is not None and r.latency_measured != r.latency_predicted)
        if not r.ok:
            where = save_reproduction(r, out_dir)
            totals["failures"].append({"seed": r.seed, "network": r.summary, "problems": r.problems,
                                       "reproduction": str(where)})
    totals["failed"] = [f.as_dict() for f in crashed]  # jobs that raised: lowbit's own errors
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    if progress:
        print(_bar(n, n, bad), file=stream, flush=True)
    return totals


def summary_text(totals):
    """The run's summary in a few lines."""
    failed = len(totals["failures"])
    lines = [f"{totals['networks']} networks from seed {totals['seed']}: {totals['vectors']} vectors "
             f"simulated ({totals['words']} output words), {totals['torch_vectors']} compared with "
             f"PyTorch; {totals['mismatches']} mismatches, {totals['cycle_mismatches']} cycle "
             f"mismatches, {failed} failed networks in {totals['seconds']:.0f} s",
             "formats: " + ", ".join(f"{k} {v}" for k, v in sorted(totals["kinds"].items()))]
    for f in totals["failures"]:
        lines.append(f"FAILED seed {f['seed']} ({f['network']}): {'; '.join(f['problems'])}; "
                     f"reproduction in {f['reproduction']}/; replay: lowbit fuzz --n 1 --seed {f['seed']}")
    for f in totals["failed"]:
        lines.append(f"ERROR seed {f['spec']}: the check itself raised {f['error']}; replay: lowbit fuzz --n 1 "
                     f"--seed {f['spec']} --workers 1\n{f['traceback']}")
    return "\n".join(lines)
