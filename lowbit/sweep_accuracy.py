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
import time
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir, atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .training import FLOAT_FORMAT, SETTINGS, evaluate_loaded, known_formats, train_model

__all__ = ["DEFAULT_FORMATS", "HARDWARE_ACT", "DEFAULT_PTQ_BITS", "sweep_accuracy", "format_label",
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
                   batch_size=None, data_root=None, progress=True, log=print, title=None, force=False):
    """Train ``arch`` in every format and setting, and write the folder ``out_dir`` (atomically,
    when every run is done): the checkpoints under ``checkpoints/SETTING-FORMAT.pt`` and the
    table, rows and plot of :func:`write_sweep` (``title`` heads the plot).

    Returns
    -------
    list of dict
        One per (setting, format) and per PTQ method and bit count: ``dataset``, ``arch``,
        ``format``, ``p``, ``ptq_bits``, ``setting``, ``act``, ``bits_per_weight``,
        ``weight_memory_bytes``, ``accuracy``, ``epochs``, ``seconds``.
    """
    formats, settings = list(formats), list(settings)
    ptq_bits = list(ptq_bits or [])
    _checked(formats, settings, p, ptq_bits)
    with atomic_dir(out_dir, SWEEP_ACCURACY_KIND, inputs=(data_root,), force=force) as tmp:
        rows = _train_all(tmp / "checkpoints", dataset=dataset, arch=arch, formats=formats,
                          settings=settings, epochs=epochs, seed=seed, p=p, ptq_bits=ptq_bits, lr=lr,
                          batch_size=batch_size, data_root=data_root, progress=progress, log=log)
        write_sweep(tmp, rows, title if title is not None else f"{dataset}, {arch}, {epochs} epochs")
    return rows


def _train_all(ckpt_dir, *, dataset, arch, formats, settings, epochs, seed, p, ptq_bits, lr, batch_size,
               data_root, progress, log):
    """The rows of :func:`sweep_accuracy`, each model trained into ``ckpt_dir``."""
    ensure_writable_dir(ckpt_dir)
    rows = []
    for setting in settings:
        for fmt in formats:
            if setting == "hardware" and fmt == FLOAT_FORMAT:
                continue  # float weights have no hardware lane
            act = "float" if setting == "weights-only" else hardware_act(fmt)
            ckpt = ckpt_dir / f"{setting}-{fmt}.pt"
            start = time.perf_counter()
            m, model, meta = train_model(ckpt, arch=arch, weight_format_name=fmt, act=act,
                                         p=p if fmt == "tiled" else None, dataset=dataset, epochs=epochs,
                                         seed=seed, lr=lr, batch_size=batch_size, data_root=data_root,
                                         progress=progress, keep_model=True)
            row = {"dataset": dataset, "arch": arch, "format": fmt, "p": p if fmt == "tiled" else None,
                   "ptq_bits": None, "setting": setting, "act": act,
                   "bits_per_weight": m["bits_per_weight"], "weight_memory_bytes": m["weight_memory_bytes"],
                   "accuracy": m["test_accuracy"], "epochs": epochs,
                   "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            log(f"{setting:>12} {format_label(row):>16}: accuracy {row['accuracy']:.4f}, "
                f"{row['weight_memory_bytes'] / 1024:.1f} KiB, {row['seconds']:.0f} s")
            if fmt == FLOAT_FORMAT:
                for method, name in (("exponential", "expq"), ("linear", "linear-ptq")):
                    for bits in ptq_bits:
                        e = evaluate_loaded(model, meta, data_root=data_root, ptq_bits=bits,
                                            ptq_method=method)
                        r = {**row, "format": name, "ptq_bits": bits, "bits_per_weight": e["bits_per_weight"],
                             "weight_memory_bytes": e["weight_memory_bytes"], "accuracy": e["accuracy"],
                             "seconds": 0.0}
                        rows.append(r)
                        log(f"{setting:>12} {format_label(r):>16}: accuracy {r['accuracy']:.4f} (PTQ)")
    return rows


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


def write_sweep(out_dir, rows, title=""):
    """Write ``accuracy.json``, ``accuracy.md`` and ``accuracy.png`` into ``out_dir``, each
    atomically; returns their paths."""
    out_dir = Path(out_dir)
    ensure_writable_dir(out_dir)
    paths = {kind: out_dir / name for kind, name in OUTPUTS.items()}
    png = plot_pareto(rows, title)
    atomic_write_text(paths["json"], json.dumps(rows, indent=2) + "\n")
    atomic_write_text(paths["table"], markdown_table(rows))
    atomic_write_bytes(paths["plot"], png)
    return paths
