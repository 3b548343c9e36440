"""The design space of one architecture: weight formats x foldings x boards, with accuracy.

For each weight format, each target of cycles per inference and each board, :func:`sweep_resources`
folds the network with :func:`lowbit.compiler.folding.fold_for_cycles` and estimates it on the
board with :func:`lowbit.boards.estimate.estimate_manifest` (optionally also synthesizing it with
Yosys). The network is either the architecture with seeded random weights and batch-norm
statistics (cost depends on the shapes, formats and foldings, not on trained values) or, given a
dataset, the architecture trained in each format in the hardware setting (:func:`train_format`,
one job per format), whose IR test accuracy joins every row of that format. :func:`pareto_front`
marks the rows that no other row beats on accuracy, inferences per second at fmax and LUTs
together. Given checkpoints, :func:`checkpoint_rows` adds their test accuracy beside their weight
memory. :func:`write_sweep` writes the table, the JSON, the plots, the trained checkpoints and a
Markdown report into one folder, atomically.
"""

import dataclasses
import io
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lowbit.boards.boards import get_board
from lowbit.boards.estimate import estimate_manifest
from lowbit.boards.synth import synthesize
from lowbit.compiler.codegen import build_manifest, describe, generate_verilog
from lowbit.compiler.passes import set_pipeline
from lowbit.core.errors import LowbitError
from lowbit.core.executor import Executor
from lowbit.core.files import atomic_dir
from lowbit.core.formats import format_family, weight_format

from .folding import fold_for_cycles
from .sweep_accuracy import hardware_act
from .training import parse_arch, weight_memory

__all__ = ["SWEEP_KIND", "DEFAULT_FORMATS", "DEFAULT_TARGETS", "random_model_arch", "sweep_resources",
           "train_format", "pareto_front", "checkpoint_rows", "markdown_table", "plot_pareto", "write_sweep",
           "job_name"]

SWEEP_KIND = "sweep"

DEFAULT_FORMATS = ("bipolar", "tiled", "binary01", "ternary", "levels5", "levels9", "levels17",
                   "pow2")
DEFAULT_TARGETS = (64, 256, 1024)


def _parsed_arch(arch):
    """The partial ``arch`` dict of a spec the sweep can compile (an mlp or a cnn)."""
    a = parse_arch(arch)
    if a["kind"] == "vit":
        raise LowbitError("the resource sweep covers mlp and cnn architectures, not vit",
                          "use --arch mlp:H1,H2,... or cnn:C1,C2[:F1,...]")
    return a


def random_model_arch(arch, fmt, *, in_shape, classes, p=4, min_compress_size=None):
    """The ``arch`` dict of :func:`lowbit.model.arch.build_model` for a spec such as ``mlp:64,64``."""
    a = _parsed_arch(arch)
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
    a["act"] = hardware_act(fmt)
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
                    targets=DEFAULT_TARGETS, boards=("arty-a7-35",), p=4, min_compress_size=None, seed=0,
                    synth=False, dataset=None, epochs=20, data_root=None, progress=None, executor=None, pipeline=0):
    """One row per (format, target, board): folding, exact cycles, estimated resources and
    throughput, and with ``dataset`` the test accuracy of the format's trained network.

    A target that a format's network cannot reach (its fastest folding is slower) gives a row with
    ``error`` set and no numbers. With ``synth``, each design is also synthesized by Yosys for the
    board's family (``synth_luts``, ``synth_ffs``, ``synth_brams``; cached). ``p`` and
    ``min_compress_size`` shape the ``tiled`` format: layers with fewer weights than
    ``min_compress_size`` stay plain bipolar (the model's default when None). ``pipeline`` registers
    every matrix engine's tree every that many counter levels (``lowbit compile --pipeline``); the
    fmax of every row is the estimator's model (nothing is placed), and is labelled so.

    Without ``dataset`` the network has seeded random weights and ``in_shape``/``classes`` give
    its input and output. With ``dataset`` (``digits``, ``mnist``, ...; files under
    ``data_root``) each format is first trained for ``epochs`` in the hardware setting, one job
    per format, and its rows are that network, with ``accuracy`` (the IR's test accuracy, which
    the hardware reproduces bit for bit); the input and output come from the dataset.

    Each training and each point is a job of ``executor`` (:class:`lowbit.core.executor.Executor`;
    default: in this process); rows come in the order of the formats, targets and boards, whoever
    ran them. ``progress(stage, done, failed, jobs)`` is called as each job ends, ``stage`` being
    ``"train"`` or ``"points"``.

    Returns ``(rows, failed, trained)``: ``failed`` holds a :class:`lowbit.core.executor.Failure`
    for each job that raised (a format whose training failed has no rows), ``trained`` the
    :class:`TrainedFormat` of each format trained.
    """
    boards = [get_board(b) for b in ([boards] if isinstance(boards, str) else boards)]
    if not formats:
        raise LowbitError("the sweep needs at least one weight format", "pass --formats bipolar,ternary")
    if not boards:
        raise LowbitError("the sweep needs at least one board", "pass --board arty-a7-35,ulx3s")
    # Every name and number is checked before the first job.
    for fmt in formats:
        if fmt == "tiled":
            format_family("tiled").check(p)
        else:
            weight_format(fmt)
        # A bad architecture is a usage error here, not a failed job on every worker. (Trained, the
        # input and output come from the dataset.)
        if dataset is None:
            random_model_arch(arch, fmt, in_shape=in_shape, classes=classes, p=p, min_compress_size=min_compress_size)
        else:
            _parsed_arch(arch)
    executor = executor or Executor(workers=1)

    def reporter(stage, jobs):
        def done(spec, result, finished, failed):
            if progress:
                progress(stage, finished, failed, jobs)
        return done

    trained, failed = {}, []
    if dataset is not None:
        specs = [TrainingSpec(arch, fmt, p, dataset, epochs, seed, None if data_root is None else str(data_root))
                 for fmt in formats]
        results, failed = executor.map(train_format, specs, on_done=reporter("train", len(specs)))
        trained = {spec.fmt: t for spec, t in results}
    points = [SweepPoint(arch, tuple(in_shape), classes, fmt, target, board.name, p, min_compress_size, seed,
                         synth, trained.get(fmt), pipeline)
              for fmt in formats if dataset is None or fmt in trained for target in targets for board in boards]
    results, point_failed = executor.map(sweep_point, points, on_done=reporter("points", len(points)))
    rows = [row for _, row in results]
    pareto_front(rows)
    return rows, [*failed, *point_failed], list(trained.values())


@dataclass(frozen=True)
class TrainingSpec:
    """One weight format of the sweep, trained in the hardware setting for its accuracy."""
    arch: str
    fmt: str
    p: int
    dataset: str
    epochs: int
    seed: int
    data_root: object


@dataclass(frozen=True)
class TrainedFormat:
    """A format's trained network: its IR graph, checkpoint file and accuracies."""
    fmt: str
    accuracy: float  # the IR's: what the hardware computes
    torch_accuracy: float
    bits_per_weight: float
    epochs: int
    checkpoint: bytes = dataclasses.field(repr=False)
    graph: object = dataclasses.field(repr=False)

    def summary(self):
        """The JSON-ready record of the training (no graph, no checkpoint bytes)."""
        return {"format": self.fmt, "accuracy": self.accuracy, "torch_accuracy": self.torch_accuracy,
                "bits_per_weight": self.bits_per_weight, "epochs": self.epochs,
                "checkpoint": f"checkpoints/{self.fmt}.pt"}


def train_format(spec):
    """Train one format (a job): the :class:`TrainedFormat`, its IR checked against PyTorch on the
    whole test split. The checkpoint comes back as bytes: the client writes every output."""
    from .flow import export_checkpoint
    from .training import train_model

    with tempfile.TemporaryDirectory(prefix="lowbit-sweep-") as tmp:
        ckpt = Path(tmp) / "model.pt"
        metrics = train_model(ckpt, arch=spec.arch, weight_format_name=spec.fmt, act=hardware_act(spec.fmt),
                              p=spec.p if spec.fmt == "tiled" else None, dataset=spec.dataset,
                              epochs=spec.epochs, seed=spec.seed, data_root=spec.data_root, progress=False)
        graph, check = export_checkpoint(ckpt, spec.data_root)
        return TrainedFormat(spec.fmt, check["ir_accuracy"], check["torch_accuracy"],
                             round(metrics["bits_per_weight"], 3), spec.epochs, ckpt.read_bytes(), graph)


@dataclass(frozen=True)
class SweepPoint:
    """One design of the sweep: the architecture in one format, folded for one cycle target, on
    one board; ``trained`` is the format's trained network (None: seeded random weights)."""
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
    trained: object = dataclasses.field(default=None, repr=False)
    pipeline: int = 0

    def as_dict(self):
        """The point as a report names it (the trained network by its format only)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trained"}


def sweep_point(point):
    """The sweep's row of one point (a pure function of it: a job on any worker)."""
    board = get_board(point.board)
    row = {"format": point.fmt if point.fmt != "tiled" else f"tiled p={point.p}", "act": hardware_act(point.fmt),
           "board": board.name, "target_cycles": point.target, "pipeline": point.pipeline, "error": None}
    if point.trained is None:
        from lowbit.model.export import export_model  # torch

        arch_dict = random_model_arch(point.arch, point.fmt, in_shape=point.in_shape, classes=point.classes,
                                      p=point.p, min_compress_size=point.min_compress_size)
        model = _random_model(arch_dict, point.seed)
        graph = export_model(model, {"source": f"random weights, seed {point.seed}"})
        # The model's own bits per weight: a layer too small to tile stays one bit per weight.
        row["bits_per_weight"] = round(weight_memory(model)["bits_per_weight"], 3)
    else:
        graph = point.trained.graph
        row["bits_per_weight"] = point.trained.bits_per_weight
        row["accuracy"] = point.trained.accuracy
    try:
        folded = set_pipeline(fold_for_cycles(graph, point.target), point.pipeline)
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
        "brams": est["total"]["brams"], "dsps": est["total"]["dsps"], "fits": est["fits"],
        "over": est["over"],
        "fmax_mhz": round(est["fmax_mhz"], 1),
        "inferences_per_second_at_fmax": round(est["inferences_per_second_at_fmax"]),
        "inferences_per_second_at_clock": round(est["inferences_per_second_at_clock"]),
    })
    if point.synth:
        r = synthesize(text, manifest["top"], board.family)
        row.update(synth_luts=r.luts, synth_ffs=r.ffs, synth_brams=r.brams, synth_flow=r.flow)
    return row


# The objectives of the design space: more accuracy, more inferences per second, fewer LUTs.
_OBJECTIVES = (("accuracy", 1), ("inferences_per_second_at_fmax", 1), ("luts", -1))


def pareto_front(rows):
    """Mark each row's ``pareto``: True where the design fits its board and no other fitting design
    is at least as good on every objective (accuracy where rows have it, inferences per second
    at fmax, LUTs) and better on one. Returns the rows on the front."""
    ok = [r for r in rows if not r["error"] and r["fits"]]
    keys = [(k, sign) for k, sign in _OBJECTIVES if all(k in r for r in ok)]

    def score(r):
        return tuple(sign * r[k] for k, sign in keys)

    for r in rows:
        r["pareto"] = False
    for r in ok:
        mine = score(r)
        r["pareto"] = not any(all(a >= b for a, b in zip(score(o), mine)) and score(o) != mine for o in ok)
    return [r for r in rows if r["pareto"]]


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


def _fits(row):
    """``yes``, or ``no`` with what is over the board's capacity (``no: dsps +174``)."""
    over = row.get("over") or {}
    return "yes" if row["fits"] else "no: " + ", ".join(f"{k} +{v}" for k, v in over.items())


def markdown_table(rows):
    """One line per row; the accuracy column where the rows have one, * on the Pareto front."""
    acc = any("accuracy" in r for r in rows)
    head = ("| format | bits/weight | act | board | target cycles | folding (PExSIMD) | cycles | weight bits "
            "| LUT | FF | BRAM | fits | fmax MHz (modelled) | inferences/s at modelled fmax |"
            + (" accuracy (%) |" if acc else "")
            + " Pareto |\n|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"
            + ("---:|" if acc else "") + ":---:|\n")
    lines = []
    for r in rows:
        accuracy = f" {100 * r['accuracy']:.2f} |" if acc and "accuracy" in r else (" |" if acc else "")
        if r["error"]:
            lines.append(f"| {r['format']} | {r['bits_per_weight']:.2f} | {r['act']} | {r['board']} | "
                         f"{r['target_cycles']} | not reachable: {r['error']} | | | | | | | | |{accuracy} |\n")
            continue
        luts = f"{r['luts']}" + (f" (synth {r['synth_luts']})" if "synth_luts" in r else "")
        lines.append(f"| {r['format']} | {r['bits_per_weight']:.2f} | {r['act']} | {r['board']} | {r['target_cycles']} "
                     f"| {r['folding']} | {r['cycles_per_inference']} | {r['weight_bits']} | {luts} "
                     f"| {r['ffs']} | {r['brams']} | {_fits(r)} | {r['fmax_mhz']} "
                     f"| {r['inferences_per_second_at_fmax']:,} |{accuracy} {'*' if r.get('pareto') else ''} |\n")
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


def _one_board(rows):
    """The rows of the first board: the LUT and throughput plots compare formats on one fabric."""
    return [r for r in rows if r["board"] == rows[0]["board"] and not r["error"]] if rows else []


def plot_luts_vs_bits(rows, title):
    fig, ax = _figure()
    ok = _one_board(rows)
    for target in sorted({r["target_cycles"] for r in ok}):
        pts = sorted((r["bits_per_weight"], r["luts"], r["format"]) for r in ok
                     if r["target_cycles"] == target)
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", label=f"{target} cycles")
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("LUT (estimated)")
    ax.set_yscale("log")
    ax.set_title(f"{title} on {ok[0]['board']}" if ok else title)
    ax.legend(title="target per inference")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_throughput_vs_luts(rows, title):
    fig, ax = _figure()
    ok = _one_board(rows)
    for fmt in dict.fromkeys(r["format"] for r in ok):
        pts = sorted((r["luts"], r["inferences_per_second_at_fmax"]) for r in ok if r["format"] == fmt)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=fmt)
    ax.set_xlabel("LUT (estimated)")
    ax.set_ylabel("inferences/s at estimated fmax")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"{title} on {ok[0]['board']}" if ok else title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


_BOARD_MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_pareto(rows, title):
    """PNG bytes: inferences/s at the estimated fmax against LUTs (both log scale), one marker per
    board, coloured by test accuracy where the rows have it (else by format); designs that do not
    fit their board hollow; the Pareto front (accuracy, throughput, LUTs) ringed and labelled."""
    from matplotlib.lines import Line2D

    fig, ax = _figure()
    ok = [r for r in rows if not r["error"]]
    boards = list(dict.fromkeys(r["board"] for r in ok))
    formats = list(dict.fromkeys(r["format"] for r in ok))
    has_acc = bool(ok) and all("accuracy" in r for r in ok)
    if has_acc:
        import matplotlib.cm
        import matplotlib.colors
        accs = [100 * r["accuracy"] for r in ok]
        norm = matplotlib.colors.Normalize(min(accs), max(accs) if max(accs) > min(accs) else min(accs) + 1)
        cmap = matplotlib.colormaps["viridis"]
        colour = {id(r): cmap(norm(100 * r["accuracy"])) for r in ok}
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="test accuracy (%)")
    else:
        palette = _colours(len(formats))
        colour = {id(r): palette[formats.index(r["format"])] for r in ok}
    labelled = set()  # points already labelled: boards of one family give the same estimate
    for r in ok:
        x, y = r["luts"], r["inferences_per_second_at_fmax"]
        marker = _BOARD_MARKERS[boards.index(r["board"]) % len(_BOARD_MARKERS)]
        c = colour[id(r)]
        ax.scatter([x], [y], marker=marker, s=36, zorder=3, facecolors=c if r["fits"] else "none", edgecolors=c)
        if r["pareto"] and (x, y) not in labelled:
            ax.scatter([x], [y], marker="o", s=170, zorder=2, facecolors="none", edgecolors="black", linewidths=1.2)
            # Above and below in turn: front points of one throughput sit side by side.
            ax.annotate(f"{r['format']}, {r['cycles_per_inference']} cyc", (x, y), fontsize=6.5,
                        xytext=(6, 5 if len(labelled) % 2 == 0 else -11), textcoords="offset points")
            labelled.add((x, y))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("LUT (estimated)")
    ax.set_ylabel("inferences/s at the estimated fmax")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color="grey", marker=_BOARD_MARKERS[k % len(_BOARD_MARKERS)], linestyle="", label=b)
               for k, b in enumerate(boards)]
    if not has_acc:
        handles += [Line2D([], [], color=colour[id(next(r for r in ok if r["format"] == f))], marker="o",
                           linestyle="", label=f) for f in formats]
    handles += [Line2D([], [], color="black", marker="o", markersize=11, markerfacecolor="none", linestyle="",
                       label="Pareto front"),
                Line2D([], [], color="grey", marker="o", markerfacecolor="none", linestyle="",
                       label="does not fit its board")]
    ax.legend(handles=handles, fontsize=7, loc="best")
    return _png(fig)


def _colours(n):
    """``n`` distinct colours of matplotlib's default cycle (repeating past ten)."""
    import matplotlib
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[k % len(cycle)] for k in range(n)]


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


def write_sweep(out_dir, rows, *, title, boards, accuracy_rows=(), trained=(), synth=False, inputs=(), force=False,
                failed=()):
    """Write ``sweep.md``, ``sweep.json``, the PNG plots and, for each format trained
    (:class:`TrainedFormat`), ``checkpoints/FORMAT.pt`` into ``out_dir`` (atomically); ``failed``
    (:class:`lowbit.core.executor.Failure`) are the jobs that raised.

    Returns the paths written, by kind.
    """
    out_dir = Path(out_dir)
    boards = [boards] if isinstance(boards, str) else list(boards)
    names = {"report": "sweep.md", "json": "sweep.json", "pareto": "pareto.png", "luts_vs_bits": "luts_vs_bits.png",
             "throughput_vs_luts": "throughput_vs_luts.png"}
    if accuracy_rows:
        names["accuracy_vs_memory"] = "accuracy_vs_memory.png"
    source = ("Yosys synthesis beside the estimate" if synth
              else "the calibrated estimator (lowbit.boards.estimate), not synthesis")
    if trained:
        epochs = trained[0].epochs
        network = (f"Each format was trained for {epochs} epochs in the hardware setting; its accuracy is the "
                   "test accuracy of its integer IR, which the hardware reproduces bit for bit, and its "
                   "checkpoint is in `checkpoints/`. Resources and cycles are those of the trained network.")
    else:
        network = ("Weights, thresholds and batch-norm statistics are seeded random values, not trained ones: "
                   "resources and cycles depend on the shapes, formats and foldings only.")
    front = [r for r in rows if r.get("pareto")]
    report = [f"# Design-space sweep: {title}\n",
              f"Boards: {', '.join(boards)}. {network} Cycles per inference are exact; LUT, FF, BRAM and "
              f"fmax come from {source}, and inferences/s are at that estimated fmax.\n",
              f"{len(front)} of {len(rows)} designs are on the Pareto front (marked *): no other design that "
              "fits its board is at least as good on "
              + ("accuracy, " if any("accuracy" in r for r in rows) else "")
              + "inferences/s and LUTs and better on one.\n",
              markdown_table(rows)]
    if accuracy_rows:
        report.append("\n## Accuracy of the given checkpoints\n\n| checkpoint | format | setting "
                      "| bits/weight | weight memory (bytes) | accuracy |\n|---|---|---|---:|---:|---:|\n")
        report[-1] += "".join(
            f"| {r['checkpoint']} | {r['format']} | {r['setting']} | {r['bits_per_weight']:.2f} | "
            f"{r['weight_memory_bytes']} | {100 * r['accuracy']:.2f} % |\n" for r in accuracy_rows)
    if failed:
        report.append("\n## Failed jobs\n\n" + "".join(f"- {job_name(f.spec)}: {f.error}\n" for f in failed))
    report.append("\n" + "".join(f"![{k}]({v})\n" for k, v in names.items() if v.endswith(".png")))
    with atomic_dir(out_dir, SWEEP_KIND, inputs=inputs, force=force) as tmp:
        (tmp / names["report"]).write_text("\n".join(report), encoding="utf-8")
        (tmp / names["json"]).write_text(json.dumps(
            {"title": title, "boards": boards, "rows": rows, "trained": [t.summary() for t in trained],
             "accuracy": list(accuracy_rows), "failed": [f.as_dict() for f in failed]},
            indent=1) + "\n", encoding="utf-8")
        (tmp / names["pareto"]).write_bytes(plot_pareto(rows, title))
        (tmp / names["luts_vs_bits"]).write_bytes(plot_luts_vs_bits(rows, title))
        (tmp / names["throughput_vs_luts"]).write_bytes(plot_throughput_vs_luts(rows, title))
        if accuracy_rows:
            (tmp / names["accuracy_vs_memory"]).write_bytes(plot_accuracy_vs_memory(accuracy_rows, title))
        if trained:
            (tmp / "checkpoints").mkdir()
            for t in trained:
                (tmp / "checkpoints" / f"{t.fmt}.pt").write_bytes(t.checkpoint)
    paths = {k: out_dir / v for k, v in names.items()}
    if trained:
        paths["checkpoints"] = out_dir / "checkpoints"
    return paths


def job_name(spec):
    """How a failed job reads in the report."""
    if isinstance(spec, TrainingSpec):
        return f"training {spec.fmt} on {spec.dataset}"
    return f"{spec.fmt} at {spec.target} cycles on {spec.board}"
