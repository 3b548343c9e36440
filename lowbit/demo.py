"""``lowbit demo``: train a binary MLP on digits, then compile, simulate and synthesize it at two foldings.

Writes ``build/demo/``: the checkpoint, one build folder per folding (Verilog, manifest.json,
graph.npz), ``report.json``, ``report.png`` and ``report.md``. The folder appears only when every
step succeeded.
"""

import json
from pathlib import Path

from lowbit.boards.estimate import estimate_fmax_mhz
from lowbit.compiler.build import write_build
from lowbit.compiler.folding import most_folded
from lowbit.core.files import atomic_dir, atomic_write_bytes, atomic_write_text

from .folding import fold_for_cycles
from .flow import (DEFAULT_EPOCHS, DEFAULT_HIDDEN, export_checkpoint, simulate_build, simulation_problems,
                   synth_build, train_checkpoint)

# The parallel build must be at least 8x faster than the most folded one; 64x shows the trade-off.
SPEEDUP = 64
COLUMNS = [
    ("format", "format"), ("folding", "folding"), ("torch acc", "torch_accuracy"),
    ("IR acc", "ir_accuracy"), ("hw acc", "hw_accuracy"), ("mismatches", "mismatches"),
    ("images", "images"), ("LUT", "luts"), ("FF", "ffs"), ("BRAM", "brams"),
    ("cycles/inference", "cycles_per_inference"), ("fmax MHz (modelled)", "fmax_mhz_modelled"),
    ("inferences/s at modelled fmax", "inferences_per_second_at_modelled_fmax"),
]


def run_demo(out_dir="build/demo", *, hidden=DEFAULT_HIDDEN, epochs=DEFAULT_EPOCHS, seed=0,
             family="xilinx", progress=True, log=print, force=False):
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "demo", force=force) as tmp:
        log(f"[1/4] training a bipolar MLP {list(hidden)} on digits ({epochs} epochs, seed {seed})")
        metrics = train_checkpoint(tmp / "model.pt", hidden=hidden, epochs=epochs, seed=seed,
                                   progress=progress)
        log(f"      torch test accuracy {metrics['test_accuracy']:.4f}")
        log("[2/4] exporting to the IR and checking it against PyTorch on every test image")
        graph, check = export_checkpoint(tmp / "model.pt")
        log(f"      {check['images']} images: {check['prediction_disagreements']} prediction "
            f"disagreements, activation mismatches {check['activation_mismatches']}, "
            f"logit mismatches {check['logit_mismatches']}, "
            f"float-tie thresholds {check['threshold_float_ties']}")
        slow = most_folded(graph)
        fast = fold_for_cycles(graph, max(1, slow.cycles_per_inference() // SPEEDUP))
        rows = []
        for label, g in (("most-folded", slow), ("parallel", fast)):
            folding = ",".join(str(m.folding) for m in g.matmuls())
            log(f"[3/4] {label} ({folding}): Verilog, then Verilator over the test split with stalls")
            manifest = write_build(g, tmp / label)
            sim = simulate_build(tmp / label, progress=progress)
            problems = simulation_problems(sim)
            log(f"      {sim['mismatches']} mismatches over {sim['images']} images, "
                f"{sim['cycles_measured']} cycles/inference measured ({sim['cycles_predicted']} predicted), "
                f"latency {sim['latency_measured']} ({sim['latency_predicted']} predicted)"
                + "".join(f"\n      NOT AS PREDICTED: {p}" for p in problems))
            log(f"[4/4] {label}: Yosys synthesis ({family})")
            syn, _ = synth_build(tmp / label, family, flat=True)  # small: one Yosys run each
            # The demo places nothing: its clock is the estimator's model for the family, labelled so.
            fmax = estimate_fmax_mhz(manifest["layers"], family)
            rows.append({
                "format": "bipolar W1A1",
                "folding": folding,
                "torch_accuracy": check["torch_accuracy"],
                "ir_accuracy": check["ir_accuracy"],
                "hw_accuracy": sim["hw_accuracy"],
                "mismatches": sim["mismatches"],
                "images": sim["images"],
                "luts": syn.luts, "ffs": syn.ffs, "brams": syn.brams,
                "cycles_per_inference": sim["cycles_measured"],
                "fmax_mhz_modelled": round(fmax, 1),
                "inferences_per_second_at_modelled_fmax": fmax * 1e6 / manifest["cycles_per_inference"],
                "_detail": {"label": label, "sim": sim, "problems": problems, "synth_device": syn.device,
                            "latency_cycles": manifest["latency_cycles"], "layers": manifest["layers"]},
            })
        report = {
            "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "synthesis_device": rows[0]["_detail"]["synth_device"],
            "check": check,
            "details": [r["_detail"] for r in rows],
        }
        atomic_write_text(tmp / "report.json", json.dumps(report, indent=2) + "\n")
        table = format_table(report["rows"])
        atomic_write_text(tmp / "report.md", f"# lowbit demo\n\nSynthesis: {report['synthesis_device']}\n\n{table}\n")
        plot_report(rows, tmp / "report.png")
    log("")
    log(table)
    log(f"\nwrote {out_dir}/ (report.json, report.md, report.png, model.pt, "
        f"{', '.join(r['_detail']['label'] for r in rows)})")
    return report


def format_table(rows):
    def cell(key, v):
        if key.endswith("accuracy"):
            return f"{100 * v:.2f}%"
        if key == "inferences_per_second_at_modelled_fmax":
            return f"{v:,.0f}"
        return str(v)
    head = "| " + " | ".join(h for h, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(cell(k, r[k]) for _, k in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def plot_report(rows, path):
    """Resources and throughput of each folding, side by side."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['_detail']['label']}\n{r['folding']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.25
    for k, (key, name) in enumerate((("luts", "LUT"), ("ffs", "FF"), ("brams", "BRAM"))):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        values = [r[key] for r in rows]
        # A zero has no bar on a log axis; its label still says 0.
        ax1.bar(xs, [v if v > 0 else float("nan") for v in values], width, label=name)
        for x, v in zip(xs, values):
            ax1.annotate(f"{v:g}", (x, max(v, 1)), ha="center", va="bottom", fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylim(0.5, max(r["luts"] for r in rows) * 3)
    ax1.set_xlim(-0.5, len(rows) - 0.5)  # a zero bar does not widen the axis; its label must show
    ax1.set_xticks(range(len(rows)), labels)
    ax1.set_title(f"Resources ({rows[0]['_detail']['synth_device']})")
    ax1.legend()
    for r, label in zip(rows, labels):
        ax2.scatter(r["luts"], r["inferences_per_second_at_modelled_fmax"], s=60)
        ax2.annotate(label.replace("\n", " "), (r["luts"], r["inferences_per_second_at_modelled_fmax"]),
                     textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.margins(x=0.4, y=0.4)
    ax2.set_xlabel("LUTs")
    ax2.set_ylabel("inferences/s at the modelled fmax")
    ax2.set_title("Throughput vs area (simulated cycles)")
    ax2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
