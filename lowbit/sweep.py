"""Resources and throughput against bits per weight: one architecture in every weight format.

For each weight format and each target of cycles per inference, :func:`sweep_resources` builds
the architecture with seeded random weights and batch-norm statistics (cost depends on the shapes,
formats and foldings, not on trained values), exports it to the IR, folds it with
:func:`lowbit.compiler.folding.fold_for_cycles` and estimates it on a board with
:func:`lowbit.boards.estimate.estimate_manifest` (optionally also synthesizing it with Yosys).
Given checkpoints, :func:`checkpoint_rows` adds their test accuracy beside their weight memory.
:func:`write_sweep` writes the table, the JSON, the plots and a Markdown report into one folder,
atomically.
"""

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lowbit.boards.boards import get_board
from lowbit.boards.estimate import estimate_manifest
from lowbit.boards.synth import synthesize
from lowbit.compiler.codegen import build_manifest, describe, generate_verilog
from lowbit.core.errors import LowbitError
from lowbit.core.executor import Executor
from lowbit.core.files import atomic_dir
from lowbit.core.formats import format_family, weight_format

from .folding import fold_for_cycles
from .training import parse_arch, weight_memory

__all__ = ["SWEEP_KIND", "DEFAULT_FORMATS", "DEFAULT_TARGETS", "random_model_arch", "sweep_resources",
           "checkpoint_rows", "markdown_table", "write_sweep"]

SWEEP_KIND = "sweep"

DEFAULT_FORMATS = ("bipolar", "tiled", "binary01", "ternary", "levels5", "levels9", "levels17",
                   "pow2")
DEFAULT_TARGETS = (64, 256, 1024)
# One-bit weight formats run on bipolar activations (XNOR/AND-popcount lanes); multi-level
# formats on 2-bit unsigned activations, the smallest with zero and more than one non-zero level.
_ONE_BIT = ("bipolar", "tiled", "binary01")
_MULTI_LEVEL_ACT = "u2"


def random_model_arch(arch, fmt, *, in_shape, classes, p=4, min_compress_size=None):
    """The ``arch`` dict of :func:`lowbit.model.arch.build_model` for a spec such as ``mlp:64,64``."""
    a = parse_arch(arch)
    if a["kind"] == "vit":
        raise LowbitError("the resource sweep covers mlp and cnn architectures, not vit",
                          "use --arch mlp:H1,H2,... or cnn:C1,C2[:F1,...]")
    if a["kind"] == "mlp":
        a["in_features"] = int(math.prod(in_shape))
    else:
        if len(in_shape) != 3:
            raise LowbitError(f"a cnn needs an input shape H,W,C, not {','.join(map(str, in_shape))}",
                              "pass --in-shape 28,28,1 (for example)")
        height, width, channels = in_shape
        a["in_shape"] = [channels, height, width]  # the model's (C, H, W) order
    a["classes"] = classes
    a["weight_format"] = "bipolar" if fmt == "tiled" else fmt
    a["act"] = "bipolar" if fmt in _ONE_BIT else _MULTI_LEVEL_ACT
    if fmt == "tiled":
        a["p"] = p
        if min_compress_size is not None:
            a["min_compress_size"] = min_compress_size
    return a


def _random_model(arch_dict, seed):
    """A model with seeded random weights and batch-norm statistics, so thresholds spread out."""
    import torch

    from .model.arch import build_model

    torch.manual_seed(seed)
    model = build_model(arch_dict)
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, norms):
                mod.weight.uniform_(0.1, 1.5)
                mod.bias.normal_(0, 1)
                mod.running_mean.normal_(0, 3)
                mod.running_var.uniform_(0.5, 20)
                continue
            for name, param in mod.named_parameters(recurse=False):
                if name in ("weight", "bias"):
                    param.uniform_(-1, 1)
    return model.eval()


def _weight_bits(manifest):
    """Bits of the weight memories of the manifest's engines."""
    return sum(layer["weight_memory"]["bits"] for layer in manifest["layers"] if "weight_memory" in layer)


def sweep_resources(arch="mlp:64,64", *, in_shape=(64,), classes=10, formats=DEFAULT_FORMATS,
                    targets=DEFAULT_TARGETS, board="arty-a7-35", p=4, min_compress_size=None, seed=0,
                    synth=False, progress=None, executor=None):
    """One row per (format, target): folding, exact cycles, estimated resources and throughput.

    A target that a format's network cannot reach (its fastest folding is slower) gives a row with
    ``error`` set and no numbers. With ``synth``, each design is also synthesized by Yosys for the
    board's family (``synth_luts``, ``synth_ffs``, ``synth_brams``; cached). ``p`` and
    ``min_compress_size`` shape the ``tiled`` format: layers with fewer weights than
    ``min_compress_size`` stay plain bipolar (the model's default when None). Each point is a job
    of ``executor`` (:class:`lowbit.core.executor.Executor`; default: in this process), and the
    rows come in the order of the formats and targets, whoever ran them. ``progress(row or
    Failure, done, failed, points)`` is called as each point ends.

    Returns ``(rows, failed)``: ``failed`` holds a :class:`lowbit.core.executor.Failure` for each
    point whose job raised.
    """
    board = get_board(board)
    if not formats:
        raise LowbitError("the sweep needs at least one weight format", "pass --formats bipolar,ternary")
    # Every name and number is checked before the first model is built.
    for fmt in formats:
        if fmt == "tiled":
            format_family("tiled").check(p)
        else:
            weight_format(fmt)
        # A bad architecture is a usage error here, not a failed job on every worker.
        random_model_arch(arch, fmt, in_shape=in_shape, classes=classes, p=p, min_compress_size=min_compress_size)
    points = [SweepPoint(arch, tuple(in_shape), classes, fmt, target, board.name, p, min_compress_size, seed, synth)
              for fmt in formats for target in targets]

    def done(point, row, finished, failed):
        if progress:
            progress(row, finished, failed, len(points))

    results, failed = (executor or Executor(workers=1)).map(sweep_point, points, on_done=done)
    return [row for _, row in results], failed


@dataclass(frozen=True)
class SweepPoint:
    """One design of the sweep: the architecture in one format, folded for one cycle target."""
    arch: str
    in_shape: tuple
    classes: int
    fmt: str
    target: int
    board: str
    p: int
    min_compress_size: object
    seed: int
    synth: bool


def sweep_point(point):
    """The sweep's row of one point (a pure function of it: a job on any worker)."""
    from lowbit.model.export import export_model  # torch

    board = get_board(point.board)
    arch_dict = random_model_arch(point.arch, point.fmt, in_shape=point.in_shape, classes=point.classes, p=point.p,
                                  min_compress_size=point.min_compress_size)
    model = _random_model(arch_dict, point.seed)
    graph = export_model(model, {"source": f"random weights, seed {point.seed}"})
    # The model's own bits per weight: a layer too small to tile stays one bit per weight.
    bits_per_weight = weight_memory(model)["bits_per_weight"]
    row = {"format": point.fmt if point.fmt != "tiled" else f"tiled p={point.p}", "act": arch_dict["act"],
           "bits_per_weight": round(bits_per_weight, 3), "target_cycles": point.target, "error": None}
    try:
        folded = fold_for_cycles(graph, point.target)
    except LowbitError as e:
        row["error"] = e.message if hasattr(e, "message") else str(e)
        return row
    if point.synth:
        text, top = generate_verilog(folded)
        manifest = build_manifest(folded, top)
    else:
        manifest = describe(folded)
    est = estimate_manifest(manifest, board.name)
    row.update({
        "tiled_layers": sum(m.copies > 1 for m in folded.matmuls()),
        "folding": ",".join(f"{m.folding.pe}x{m.folding.simd}" for m in folded.matmuls()),
        "cycles_per_inference": manifest["cycles_per_inference"],
        "weight_bits": _weight_bits(manifest),
        "luts": est["total"]["luts"], "ffs": est["total"]["ffs"],
        "brams": est["total"]["brams"], "fits": est["fits"],
        "fmax_mhz": round(est["fmax_mhz"], 1),
        "inferences_per_second_at_fmax": round(est["inferences_per_second_at_fmax"]),
        "inferences_per_second_at_clock": round(est["inferences_per_second_at_clock"]),
    })
    if point.synth:
        r = synthesize(text, manifest["top"], board.family)
        row.update(synth_luts=r.luts, synth_ffs=r.ffs, synth_brams=r.brams, synth_flow=r.flow)
    return row


def checkpoint_rows(checkpoints, data_root=None):
    """Test accuracy and weight memory of each checkpoint (made by ``lowbit train``)."""
    from .flow import evaluate_checkpoint

    rows = []
    for ckpt in checkpoints:
        r = evaluate_checkpoint(ckpt, data_root=data_root)
        rows.append({"checkpoint": str(ckpt), "format": r["format"], "setting": r["setting"],
                     "accuracy": r["accuracy"], "bits_per_weight": r["bits_per_weight"],
                     "weight_memory_bytes": r["weight_memory_bytes"]})
    return rows


def markdown_table(rows):
    head = ("| format | bits/weight | act | target cycles | folding (PExSIMD) | cycles | weight bits "
            "| LUT | FF | BRAM | fits | fmax MHz | inferences/s at fmax |\n"
            "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|\n")
    lines = []
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['format']} | {r['bits_per_weight']:.2f} | {r['act']} | "
                         f"{r['target_cycles']} | not reachable: {r['error']} | | | | | | | | |\n")
            continue
        luts = f"{r['luts']}" + (f" (synth {r['synth_luts']})" if "synth_luts" in r else "")
        lines.append(f"| {r['format']} | {r['bits_per_weight']:.2f} | {r['act']} | {r['target_cycles']} "
                     f"| {r['folding']} | {r['cycles_per_inference']} | {r['weight_bits']} | {luts} "
                     f"| {r['ffs']} | {r['brams']} | {'yes' if r['fits'] else 'no'} | {r['fmax_mhz']} "
                     f"| {r['inferences_per_second_at_fmax']:,} |\n")
    return head + "".join(lines)


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 5.5), dpi=110)
    return fig, fig.add_subplot()


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def plot_luts_vs_bits(rows, title):
    fig, ax = _figure()
    ok = [r for r in rows if not r["error"]]
    for target in sorted({r["target_cycles"] for r in ok}):
        pts = sorted((r["bits_per_weight"], r["luts"], r["format"]) for r in ok
                     if r["target_cycles"] == target)
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", label=f"{target} cycles")
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("LUT (estimated)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(title="target per inference")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_throughput_vs_luts(rows, title):
    fig, ax = _figure()
    ok = [r for r in rows if not r["error"]]
    for fmt in dict.fromkeys(r["format"] for r in ok):
        pts = sorted((r["luts"], r["inferences_per_second_at_fmax"]) for r in ok if r["format"] == fmt)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=fmt)
    ax.set_xlabel("LUT (estimated)")
    ax.set_ylabel("inferences/s at estimated fmax")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_accuracy_vs_memory(acc_rows, title):
    fig, ax = _figure()
    for r in acc_rows:
        x, y = r["weight_memory_bytes"] / 1024, 100 * r["accuracy"]
        ax.scatter([x], [y])
        ax.annotate(r["format"], (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("weight memory (KiB)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)


def write_sweep(out_dir, rows, *, title, board, accuracy_rows=(), synth=False, inputs=(), force=False, failed=()):
    """Write ``sweep.md``, ``sweep.json`` and the PNG plots into ``out_dir`` (atomically); ``failed``
    (:class:`lowbit.core.executor.Failure`) are the points whose job raised.

    Returns the paths written, by kind.
    """
    out_dir = Path(out_dir)
    names = {"report": "sweep.md", "json": "sweep.json", "luts_vs_bits": "luts_vs_bits.png",
             "throughput_vs_luts": "throughput_vs_luts.png"}
    if accuracy_rows:
        names["accuracy_vs_memory"] = "accuracy_vs_memory.png"
    source = ("Yosys synthesis beside the estimate" if synth
              else "the calibrated estimator (lowbit.boards.estimate), not synthesis")
    report = [f"# Resource sweep: {title}\n",
              f"Board: {board}. Weights, thresholds and batch-norm statistics are seeded random "
              "values, not trained ones: resources and cycles depend on the shapes, formats and "
              f"foldings only. Cycles per inference are exact; LUT, FF, BRAM and fmax come from "
              f"{source}.\n",
              markdown_table(rows)]
    if accuracy_rows:
        report.append("\n## Accuracy of the given checkpoints\n\n| checkpoint | format | setting "
                      "| bits/weight | weight memory (bytes) | accuracy |\n|---|---|---|---:|---:|---:|\n")
        report[-1] += "".join(
            f"| {r['checkpoint']} | {r['format']} | {r['setting']} | {r['bits_per_weight']:.2f} | "
            f"{r['weight_memory_bytes']} | {100 * r['accuracy']:.2f} % |\n" for r in accuracy_rows)
    if failed:
        report.append("\n## Failed points\n\n" + "".join(
            f"- {f.spec.fmt} at {f.spec.target} cycles: {f.error}\n" for f in failed))
    report.append("\n" + "".join(f"![{k}]({v})\n" for k, v in names.items() if v.endswith(".png")))
    with atomic_dir(out_dir, SWEEP_KIND, inputs=inputs, force=force) as tmp:
        (tmp / names["report"]).write_text("\n".join(report), encoding="utf-8")
        (tmp / names["json"]).write_text(json.dumps(
            {"title": title, "board": board, "rows": rows, "accuracy": list(accuracy_rows),
             "failed": [f.as_dict() for f in failed]},
            indent=1) + "\n", encoding="utf-8")
        (tmp / names["luts_vs_bits"]).write_bytes(plot_luts_vs_bits(rows, title))
        (tmp / names["throughput_vs_luts"]).write_bytes(plot_throughput_vs_luts(rows, title))
        if accuracy_rows:
            (tmp / names["accuracy_vs_memory"]).write_bytes(plot_accuracy_vs_memory(accuracy_rows, title))
    return {k: out_dir / v for k, v in names.items()}
