"""Accuracy against weight memory: one architecture trained in every weight format.

Each format is trained from the same seed for the same number of epochs, in one or both settings
(:mod:`lowbit.training`): weights-only (float activations) and hardware (quantized activations,
thermometer inputs). Post-training quantization adds rows without training: the float (``fp32``)
weights-only model quantized exponentially (``expq``) and linearly at 2..6 bits.

Activations of the hardware setting (:data:`HARDWARE_ACT`): bipolar for the one-bit weight formats
(``bipolar``, ``binary01``, tiled), whose lanes are XNOR/AND-popcount; 2-bit unsigned (``u2``) for
the multi-level formats, the smallest activation with zero and more than one non-zero level, so
that those formats are compared at one small, equal activation cost.
"""

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir, atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .training import FLOAT_FORMAT, SETTINGS, evaluate_loaded, known_formats, train_model

__all__ = ["DEFAULT_FORMATS", "HARDWARE_ACT", "DEFAULT_PTQ_BITS", "sweep_accuracy", "TrainingJob",
           "train_accuracy_job", "format_label",
           "markdown_table", "pareto_front", "plot_pareto", "write_sweep", "SWEEP_ACCURACY_KIND", "OUTPUTS"]

SWEEP_ACCURACY_KIND = "sweep-accuracy"

DEFAULT_FORMATS = (FLOAT_FORMAT, "bipolar", "binary01", "ternary", "levels5", "levels9", "levels17",
                   "pow2", "tiled")
DEFAULT_PTQ_BITS = (2, 3, 4, 5, 6)
HARDWARE_ACT = {"bipolar": "bipolar", "binary01": "bipolar", "tiled": "bipolar"}
"""Activation of each format in the hardware setting; formats not listed use ``"u2"``."""
MULTI_LEVEL_ACT = "u2"


def hardware_act(fmt):
    return HARDWARE_ACT.get(fmt, MULTI_LEVEL_ACT)


def format_label(row):
    """How a row's format reads in a table: ``tiled p=4``, ``expq 3-bit``, ``linear-ptq 3-bit``."""
    if row["format"] == "tiled":
        return f"tiled p={row['p']}"
    if row.get("ptq_bits") is not None:
        return f"{row['format']} {row['ptq_bits']}-bit"
    return row["format"]


def _checked(formats, settings, p, ptq_bits):
    allowed = [f for f in known_formats() if f != "expq"]
    for f in formats:
        if f not in allowed:
            raise LowbitError(f"unknown weight format {f!r} for the sweep",
                              f"use any of: {', '.join(allowed)} (expq rows come from --ptq-bits)")
    for s in settings:
        if s not in SETTINGS:
            raise LowbitError(f"unknown setting {s!r}", f"use {' or '.join(SETTINGS)}")
    if not formats or not settings:
        raise LowbitError("the sweep needs at least one format and one setting")
    if ptq_bits and (FLOAT_FORMAT not in formats or "weights-only" not in settings):
        raise LowbitError("post-training quantization rows need the fp32 weights-only model",
                          "add fp32 to the formats and weights-only to the settings, or pass --ptq-bits none")
    if "tiled" in formats and p is None:
        raise LowbitError("the tiled format needs the tile copy count", "pass --p, e.g. --p 4")


def sweep_accuracy(out_dir, *, dataset="digits", arch="mlp:64,64", formats=DEFAULT_FORMATS,
                   settings=SETTINGS, epochs=30, seed=0, p=4, ptq_bits=DEFAULT_PTQ_BITS, lr=None,
                   batch_size=None, data_root=None, progress=True, log=print, title=None, force=False,
                   executor=None):
    """Train ``arch`` in every format and setting, and write the folder ``out_dir`` (atomically,
    when every run is done): the checkpoints under ``checkpoints/SETTING-FORMAT.pt`` and the
    table, rows and plot of :func:`write_sweep` (``title`` heads the plot).

    Each (setting, format) is one job of ``executor`` (:class:`lowbit.core.executor.Executor`;
    default: in this process, with the training's progress bar when ``progress``); the rows come
    in the order of the settings and formats, whoever trained them, and the client writes every
    file. ``log`` gets a line as each job ends.

    Returns
    -------
    (list of dict, list of Failure)
        The rows, one per (setting, format) and per PTQ method and bit count: ``dataset``,
        ``arch``, ``format``, ``p``, ``ptq_bits``, ``setting``, ``act``, ``bits_per_weight``,
        ``weight_memory_bytes``, ``accuracy``, ``epochs``; and a
        :class:`lowbit.core.executor.Failure` for each job that raised (listed in
        ``failed.json`` and the table; its format has no rows).
    """
    from lowbit.core.executor import Executor

    formats, settings = list(formats), list(settings)
    ptq_bits = list(ptq_bits or [])
    _checked(formats, settings, p, ptq_bits)
    executor = executor or Executor(workers=1)
    jobs = [TrainingJob(dataset, arch, fmt, setting, epochs, seed, p if fmt == "tiled" else None,
                        tuple(ptq_bits) if fmt == FLOAT_FORMAT else (), lr, batch_size,
                        None if data_root is None else str(data_root), progress and executor.workers == 1)
            for setting in settings for fmt in formats
            if not (setting == "hardware" and fmt == FLOAT_FORMAT)]  # float weights have no hardware lane

    def done(job, outcome, finished, failed):
        if isinstance(outcome, TrainedRows):
            for r in outcome.rows:
                what = " (PTQ)" if r["ptq_bits"] is not None else (
                    f", {r['weight_memory_bytes'] / 1024:.1f} KiB, {outcome.seconds:.0f} s")
                log(f"{r['setting']:>12} {format_label(r):>16}: accuracy {r['accuracy']:.4f}{what}")
        else:
            log(f"{job.setting:>12} {job.fmt:>16}: failed: {outcome.error}")

    with atomic_dir(out_dir, SWEEP_ACCURACY_KIND, inputs=(data_root,), force=force) as tmp:
        results, failed = executor.map(train_accuracy_job, jobs, on_done=done)
        ckpt_dir = ensure_writable_dir(tmp / "checkpoints")
        rows = []
        for job, trained in results:
            (ckpt_dir / f"{job.setting}-{job.fmt}.pt").write_bytes(trained.checkpoint)
            rows.extend(trained.rows)
        write_sweep(tmp, rows, title if title is not None else f"{dataset}, {arch}, {epochs} epochs", failed)
    return rows, failed


@dataclass(frozen=True)
class TrainingJob:
    """One (setting, format) of the accuracy sweep; ``ptq_bits`` for the fp32 weights-only model."""
    dataset: str
    arch: str
    fmt: str
    setting: str
    epochs: int
    seed: int
    p: object
    ptq_bits: tuple
    lr: object
    batch_size: object
    data_root: object
    progress: bool


@dataclass(frozen=True)
class TrainedRows:
    """A job's rows, its checkpoint file (the client writes it) and how long it trained."""
    rows: list
    checkpoint: bytes = field(repr=False)
    seconds: float = 0.0


def train_accuracy_job(job):
    """Train one (setting, format) (a job): its row, the PTQ rows of the fp32 model, the checkpoint.

    Training runs on one torch thread wherever the job runs: sums split over another number of
    threads round differently, and the rows must not depend on the worker."""
    import torch

    act = "float" if job.setting == "weights-only" else hardware_act(job.fmt)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_rows(job, act, start)
    finally:
        torch.set_num_threads(threads)


def _train_rows(job, act, start):
    with tempfile.TemporaryDirectory(prefix="lowbit-accuracy-") as tmp:
        ckpt = Path(tmp) / "model.pt"
        m, model, meta = train_model(ckpt, arch=job.arch, weight_format_name=job.fmt, act=act, p=job.p,
                                     dataset=job.dataset, epochs=job.epochs, seed=job.seed, lr=job.lr,
                                     batch_size=job.batch_size, data_root=job.data_root, progress=job.progress,
                                     keep_model=True)
        checkpoint = ckpt.read_bytes()
    row = {"dataset": job.dataset, "arch": job.arch, "format": job.fmt, "p": job.p,
           "ptq_bits": None, "setting": job.setting, "act": act,
           "bits_per_weight": m["bits_per_weight"], "weight_memory_bytes": m["weight_memory_bytes"],
           "accuracy": m["test_accuracy"], "epochs": job.epochs}
    rows = [row]
    for method, name in (("exponential", "expq"), ("linear", "linear-ptq")):
        for bits in job.ptq_bits:
            e = evaluate_loaded(model, meta, data_root=job.data_root, ptq_bits=bits, ptq_method=method)
            rows.append({**row, "format": name, "ptq_bits": bits, "bits_per_weight": e["bits_per_weight"],
                         "weight_memory_bytes": e["weight_memory_bytes"], "accuracy": e["accuracy"]})
    return TrainedRows(rows, checkpoint, round(time.perf_counter() - start, 1))


def markdown_table(rows):
    """format | setting | act | bits/weight | weight memory (KiB) | accuracy, one line per row."""
    lines = ["| format | setting | activations | bits/weight | weight memory (KiB) | accuracy (%) |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {format_label(r)} | {r['setting']} | {r['act']} | {r['bits_per_weight']:.3g} | "
                     f"{r['weight_memory_bytes'] / 1024:.1f} | {100 * r['accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


def pareto_front(rows):
    """The rows no other row beats: none has less or equal memory and higher accuracy, or less
    memory and equal accuracy. Sorted by memory."""
    front = []
    for r in sorted(rows, key=lambda r: (r["weight_memory_bytes"], -r["accuracy"])):
        if not front or r["accuracy"] > front[-1]["accuracy"]:
            front.append(r)
    return front


# One marker per format, one colour per setting: every point can be told apart without a label.
_MARKERS = {"fp32": "o", "bipolar": "s", "binary01": "D", "ternary": "^", "levels5": "v", "levels9": "<",
            "levels17": ">", "pow2": "P", "tiled": "*", "expq": "X", "linear-ptq": "x"}
# Points further than this below the best accuracy are drawn on the lower edge (a collapsed
# 2-bit PTQ model would otherwise squash every other point into one line).
ZOOM_PT = 5.0


def plot_pareto(rows, title=""):
    """PNG bytes: accuracy against weight memory (log scale), one colour per setting, one marker
    per format, each setting's Pareto front as a line. PTQ points carry their bit count; points more
    than :data:`ZOOM_PT` points below the best sit on the lower edge, listed with their accuracy."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(9, 6), dpi=110)
    ax = fig.add_subplot()
    best = max(100 * r["accuracy"] for r in rows)
    floor = best - ZOOM_PT
    shown = [100 * r["accuracy"] for r in rows if 100 * r["accuracy"] >= floor]
    low = min(shown) - 0.3
    colours = dict(zip(SETTINGS, ("tab:blue", "tab:orange")))
    off_labels = []
    for setting, colour in colours.items():
        pts = [r for r in rows if r["setting"] == setting]
        if not pts:
            continue
        for r in pts:
            x, y = r["weight_memory_bytes"] / 1024, 100 * r["accuracy"]
            off_scale = y < floor
            ax.scatter([x], [low if off_scale else y], color=colour, zorder=3, s=40,
                       marker="v" if off_scale else _MARKERS.get(r["format"], "o"),
                       facecolors="none" if off_scale else colour)
            if off_scale:
                off_labels.append(f"{format_label(r)} ({setting}): {y:.1f} %")
            elif r.get("ptq_bits") is not None:
                ax.annotate(f"{r['ptq_bits']}b", (x, y), fontsize=7, xytext=(4, -8),
                            textcoords="offset points")
        front = [r for r in pareto_front(pts) if 100 * r["accuracy"] >= floor]
        ax.step([r["weight_memory_bytes"] / 1024 for r in front], [100 * r["accuracy"] for r in front],
                where="post", color=colour, alpha=0.6)
    if off_labels:  # listed in a corner, not beside their markers, where they would overlap
        ax.text(0.01, 0.98, "below the axis (open triangles):\n" + "\n".join(off_labels), fontsize=7,
                transform=ax.transAxes, va="top")
    ax.set_xscale("log")
    ax.set_ylim(low - 0.2, best + 0.3)
    ax.set_xlabel("weight memory (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy against weight memory")
    ax.grid(True, which="both", alpha=0.3)
    present = [f for f in _MARKERS if any(r["format"] == f for r in rows)]
    handles = [Line2D([], [], color="grey", marker=_MARKERS[f], linestyle="", label=f) for f in present]
    handles += [Line2D([], [], color=c, marker="o", linestyle="-", label=f"{s} (Pareto front)")
                for s, c in colours.items() if any(r["setting"] == s for r in rows)]
    ax.legend(handles=handles, loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


OUTPUTS = {"json": "accuracy.json", "table": "accuracy.md", "plot": "accuracy.png"}


def write_sweep(out_dir, rows, title="", failed=()):
    """Write ``accuracy.json``, ``accuracy.md`` and ``accuracy.png`` (when there are rows) into
    ``out_dir``, each atomically, and ``failed.json`` for the jobs that raised
    (:class:`lowbit.core.executor.Failure`); returns their paths."""
    out_dir = Path(out_dir)
    ensure_writable_dir(out_dir)
    paths = {kind: out_dir / name for kind, name in OUTPUTS.items()}
    table = markdown_table(rows)
    if failed:
        table += "\n## Failed jobs\n\n" + "".join(
            f"- {f.spec.setting} {f.spec.fmt}: {f.error}\n" for f in failed)
        paths["failed"] = out_dir / "failed.json"
        atomic_write_text(paths["failed"], json.dumps([f.as_dict() for f in failed], indent=2) + "\n")
    atomic_write_text(paths["json"], json.dumps(rows, indent=2) + "\n")
    atomic_write_text(paths["table"], table)
    if rows:
        atomic_write_bytes(paths["plot"], plot_pareto(rows, title))
    else:
        del paths["plot"]
    return paths
