"""Estimator accuracy: estimated vs Yosys-synthesized LUTs and BRAMs for every engine of the sweep.

The sweep (:data:`lowbit.boards.calibrate.SWEEP`) covers every lane, both input kinds, several
foldings and sizes, and the window, pool, collect and normalize-sign engines; each engine is
synthesized alone for xc7, iCE40 and ECP5 (:func:`lowbit.boards.synth.synthesize`). The LUT and
FF models of :mod:`lowbit.boards.estimate` are fitted to these results, so the "err %" column is
in-sample. The "held-out %" column is a prediction: each engine estimated by a model refitted
without it (leave one engine out); "n/a" where the engine is the only one of its kind, so that
no model without it knows its lane. BRAM comes from the Yosys mapping rule and is not fitted.

Usage::

    python -m benchmarks.estimator            # table from boards/calibration.json
    python -m benchmarks.estimator --write    # synthesize the sweep (cached), refit, and update
                                              # boards/calibration.json, benchmarks/results/
                                              # estimator.json and BENCHMARKS.md
    python -m benchmarks.estimator --write --placed   # plus placed iCE40/ECP5 networks: fmax
"""

import argparse
import json
import sys
from pathlib import Path

from lowbit.boards.calibrate import CALIBRATION_PATH, FAMILIES, calibration_jobs, load_calibration, run_sweep
from lowbit.boards.estimate import estimate_layer
from lowbit.boards.fit import fit_models
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_text

from .report import replace_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "estimator.json"
SECTION = "## Estimator vs synthesis"
TABLE_BEGIN = "<!-- estimator table begin -->"
TABLE_END = "<!-- estimator table end -->"
GOAL_PCT = 15.0


def held_out_luts(rows, row):
    """LUT estimate of ``row`` by a model fitted to every other engine (None: its kind is unique)."""
    others = [r for r in rows if r["engine"] != row["engine"] and r["family"] == row["family"]]
    try:
        return estimate_layer(row["layer"], row["family"], fit_models(others))["luts"]
    except LowbitError:
        return None


def _pct(est, true):
    return round(100 * (est - true) / max(true, 1), 1)


def compare(rows, models):
    """One result row per calibration row: estimate (in-sample and held out) next to synthesis."""
    out = []
    for r in rows:
        est = estimate_layer(r["layer"], r["family"], models)
        held = held_out_luts(rows, r)
        out.append({"engine": r["engine"], "device": r["family"], "flow": r["flow"],
                    "est_luts": est["luts"], "synth_luts": r["luts"],
                    "err_pct": _pct(est["luts"], r["luts"]),
                    "held_out_luts": held,
                    "held_out_err_pct": None if held is None else _pct(held, r["luts"]),
                    "est_ffs": est["ffs"], "synth_ffs": r["ffs"],
                    "est_brams": est["brams"], "synth_brams": r["brams"],
                    "est_dsps": est["dsps"], "synth_dsps": r["dsps"],
                    "est_lut_parts": est["lut_parts"], "synth_lut_parts": r["lut_parts"]})
    return out


def table(results):
    head = ("| engine | device | est LUT | synth LUT | err % | held-out % | est FF | synth FF | est BRAM "
            "| synth BRAM |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")

    def held(r):
        return "n/a" if r["held_out_err_pct"] is None else f"{r['held_out_err_pct']:+.1f}"
    return head + "".join(
        f"| {r['engine']} | {r['device']} | {r['est_luts']} | {r['synth_luts']} | {r['err_pct']:+.1f} | "
        f"{held(r)} | {r['est_ffs']} | {r['synth_ffs']} | {r['est_brams']} | {r['synth_brams']} |\n"
        for r in results)


_STREAM_OPS = ("sliding_window", "maxpool", "collect", "normalize", "fifo")


def _is_rom_probe(r):
    return r["engine"].startswith("rom-")


def summary(results):
    lines = []
    for device in sorted({r["device"] for r in results}):
        rs = [r for r in results if r["device"] == device]
        # The lone ROMs are not engines but the probes that the ROM table is measured on; they are
        # reported apart, by LUTs off, since they are a few LUTs each.
        engines = [r for r in rs if not _is_rom_probe(r)]
        probes = [r for r in rs if _is_rom_probe(r)]
        worst = max(engines, key=lambda r: abs(r["err_pct"]))
        mean = sum(abs(r["err_pct"]) for r in engines) / len(engines)
        over = [r for r in engines if abs(r["err_pct"]) > GOAL_PCT]
        held = [r for r in engines if r["held_out_err_pct"] is not None]
        held_mean = sum(abs(r["held_out_err_pct"]) for r in held) / max(len(held), 1)
        held_worst = max(held, key=lambda r: abs(r["held_out_err_pct"])) if held else None
        held_over = [r for r in held if abs(r["held_out_err_pct"]) > GOAL_PCT]
        brams_ok = sum(r["est_brams"] == r["synth_brams"] for r in rs)
        dsps_ok = sum(r["est_dsps"] == r["synth_dsps"] for r in rs)
        lines.append(
            f"- {device}: {len(engines)} engines; in-sample mean |LUT error| {mean:.1f} %, worst "
            f"{worst['err_pct']:+.1f} % ({worst['engine']}), {len(over)} over {GOAL_PCT:.0f} %; "
            f"held out ({len(held)} engines) mean {held_mean:.1f} %"
            + (f", worst {held_worst['held_out_err_pct']:+.1f} % ({held_worst['engine']})"
               if held_worst else "")
            + f", {len(held_over)} over {GOAL_PCT:.0f} %; BRAM exact on {brams_ok} of {len(rs)}, "
            f"DSP exact on {dsps_ok} of {len(rs)} (lone ROMs included).")
        if probes:
            off = [abs(r["est_luts"] - r["synth_luts"]) for r in probes]
            worst_probe = max(probes, key=lambda r: abs(r["est_luts"] - r["synth_luts"]))
            lines.append(
                f"  - {device} lone ROMs: {len(probes)}, {sum(o <= 1 for o in off)} within a LUT, "
                f"{sum(abs(r['err_pct']) <= GOAL_PCT for r in probes)} within {GOAL_PCT:.0f} %; "
                f"worst {worst_probe['engine']}: {worst_probe['est_luts']} LUTs estimated, "
                f"{worst_probe['synth_luts']} synthesized.")
        if any(r["synth_lut_parts"]["rows"] for r in rs):
            # Where synthesis counts the parts apart, each part's own error over the engines
            # that have it, by LUTs: how far each part of the model is from its count.
            errs = []
            for part, what in (("rom", "ROMs"), ("rows", "PE rows"), ("glue", "the rest")):
                have = [r for r in rs if r["synth_lut_parts"][part] or r["est_lut_parts"][part]]
                off = sum(abs(r["est_lut_parts"][part] - r["synth_lut_parts"][part]) for r in have)
                total = sum(r["synth_lut_parts"][part] for r in have)
                errs.append(f"{what} {100 * off / max(total, 1):.1f} % of {total} LUTs "
                            f"({len(have)} engines)")
            lines.append(f"  - {device} by part, |estimate - synthesis| summed over the engines: "
                         + "; ".join(errs) + ".")
    return "\n".join(lines)


# Placed networks (random W1A1 MLPs behind the UART top): widths and (PE, SIMD) per layer.
PLACED = (
    ("icebreaker", (64, 16, 10), ((1, 16), (2, 16))),
    ("ulx3s", (64, 16, 10), ((1, 16), (2, 16))),
    ("ulx3s", (256, 64, 10), ((8, 64), (10, 16))),
    ("ulx3s", (784, 64, 64, 10), ((1, 196), (1, 16), (1, 4))),
)


def placed_rows(progress=None):
    """Estimate beside nextpnr for each :data:`PLACED` network (bitstreams built and cached)."""
    import tempfile

    from lowbit.boards.build import build_for_board
    from lowbit.boards.calibrate import random_bipolar_mlp
    from lowbit.compiler.build import write_build

    rows = []
    for board, widths, foldings in PLACED:
        with tempfile.TemporaryDirectory() as tmp:
            write_build(random_bipolar_mlp(list(widths), [tuple(f) for f in foldings]), f"{tmp}/b")
            report = build_for_board(f"{tmp}/b", board, f"{tmp}/out")
        est, placed = report["estimate"], report["placed"]
        used = {k: v["used"] for k, v in placed["utilization"].items()}
        lut_key = "ICESTORM_LC" if "ICESTORM_LC" in used else "TRELLIS_COMB"
        bram_key = "ICESTORM_RAM" if "ICESTORM_RAM" in used else "DP16KD"
        fmax = min(placed["fmax_mhz"].values())
        rows.append({"board": board, "network": "-".join(map(str, widths)),
                     "folding": ",".join(f"{p}x{s}" for p, s in foldings),
                     "cycles_per_inference": est["cycles_per_inference"],
                     "est_luts": est["total"]["luts"], "placed_luts": used.get(lut_key),
                     "est_brams": est["total"]["brams"], "placed_brams": used.get(bram_key, 0),
                     "est_fmax_mhz": round(est["fmax_mhz"], 1), "placed_fmax_mhz": round(fmax, 1),
                     "fmax_err_pct": _pct(est["fmax_mhz"], fmax),
                     "pnr_seconds": round(placed["seconds"], 1)})
        if progress:
            progress(rows[-1])
    return rows


def placed_table(rows):
    head = ("| board | network | PExSIMD | cycles | est LUT (network) | placed LUT (with UART) | est BRAM "
            "| placed BRAM | est fmax MHz | nextpnr fmax MHz | fmax err % |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['board']} | {r['network']} | {r['folding']} | {r['cycles_per_inference']} | "
        f"{r['est_luts']} | {r['placed_luts']} | {r['est_brams']} | {r['placed_brams']} | "
        f"{r['est_fmax_mhz']} | {r['placed_fmax_mhz']} | {r['fmax_err_pct']:+.1f} |\n" for r in rows)


PLOT = ROOT / "benchmarks" / "results" / "estimator.png"


def write_plot(results, path=PLOT):
    """Estimated against synthesized LUTs, one panel per family, held-out estimates filled and
    in-sample ones hollow, with the 15 % band: the picture of the table."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowbit.core.files import atomic_write_bytes

    families = sorted({r["device"] for r in results})
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        rs = [r for r in results if r["device"] == family]
        lo = max(1, min(r["synth_luts"] for r in rs) * 0.7)
        hi = max(max(r["synth_luts"], r["est_luts"]) for r in rs) * 1.4
        line = [lo, hi]
        ax.plot(line, line, color="black", lw=0.8)
        ax.fill_between(line, [v * (1 - GOAL_PCT / 100) for v in line],
                        [v * (1 + GOAL_PCT / 100) for v in line], color="tab:green", alpha=0.15,
                        label=f"within {GOAL_PCT:.0f} %")
        def kind(r):
            if _is_rom_probe(r):
                return "rom"
            return "stream" if r["engine"].split("-")[0] in _STREAM_OPS else "matrix"

        for k, marker, color, label in (("matrix", "o", "tab:red", "matrix engines, held out"),
                                        ("stream", "s", "tab:purple", "stream engines, held out"),
                                        ("rom", "^", "tab:blue", "lone ROMs, held out")):
            sel = [r for r in rs if kind(r) == k]
            held = [r for r in sel if r["held_out_luts"] is not None]
            ax.scatter([r["synth_luts"] for r in held], [max(r["held_out_luts"], lo) for r in held],
                       marker=marker, s=18, color=color, label=label)
            ax.scatter([r["synth_luts"] for r in sel], [max(r["est_luts"], lo) for r in sel],
                       marker=marker, s=18, facecolors="none", edgecolors="gray", lw=0.7,
                       label="in sample" if k == "matrix" else None)
        engines = sum(kind(r) != "rom" for r in rs)
        ax.set(xscale="log", yscale="log", xlim=line, ylim=line, xlabel="Yosys LUTs",
               ylabel="estimated LUTs", title=f"{family} ({engines} engines, {len(rs) - engines} lone ROMs)")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_markdown(results, yosys, placed=()):
    placed_block = ("\nPlaced networks (bitstreams through nextpnr; placed LUT counts include the "
                    "UART top; fmax is nextpnr's for the board's clock constraint):\n\n"
                    + placed_table(placed)) if placed else ""
    block = (f"{TABLE_BEGIN}\n{table(results)}\n{summary(results)}\n\nSynthesis: {yosys}.\n"
             f"{placed_block}{TABLE_END}")
    intro = (f"{SECTION}\n\nCommand: `python -m benchmarks.estimator --write` synthesizes the "
                 "calibration sweep (`lowbit.boards.calibrate.SWEEP`, cached), refits the LUT/FF "
                 "models of `lowbit.boards.fit` and records them in `boards/calibration.json`.\n"
                 "\"err %\" is in-sample (the model is fitted to these same engines); "
                 "\"held-out %\" refits without the engine and predicts it. BRAM is predicted by the "
                 "Yosys ROM-mapping rule, not fitted.\n\n")
    replace_block(TABLE_BEGIN, TABLE_END, block, intro)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="synthesize the sweep, refit and update the recorded files")
    parser.add_argument("--placed", action="store_true",
                        help="also build the placed networks (iCE40/ECP5 bitstreams, cached) and "
                             "compare their fmax and utilization with the estimate")
    parser.add_argument("--workers", type=int, default=None, help="Dask worker processes (default: one per core)")
    parser.add_argument("--scheduler", default=None, help="a running Dask scheduler's address")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="with --write: synthesize only these families (comma-separated) and keep the "
                             "other families' rows from boards/calibration.json (default: all)")
    args = parser.parse_args(argv)
    families = args.families.split(",")
    if not families or not set(families) <= set(FAMILIES):
        print(f"--families: choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    if args.write:
        from lowbit.core.executor import Executor

        fresh = run_sweep(families=families,
                          progress=lambda r: print(f"  {r['engine']} {r['family']}: {r['luts']} LUT", file=sys.stderr),
                          executor=Executor(workers=args.workers, scheduler=args.scheduler))
        # The other families' recorded rows; every row where it was recorded, new ones after.
        recorded = load_calibration() if CALIBRATION_PATH.exists() else []
        by_job = {(r["engine"], r["family"]): r for r in recorded if r["family"] not in families}
        by_job.update({(r["engine"], r["family"]): r for r in fresh})
        order = [(r["engine"], r["family"]) for r in recorded]
        order += [(spec.name, family) for spec, family in calibration_jobs() if (spec.name, family) not in order]
        rows = [by_job[job] for job in order if job in by_job]
        models = fit_models(rows)
        atomic_write_text(CALIBRATION_PATH, json.dumps({"rows": rows, "models": models},
                                                       indent=1, sort_keys=True) + "\n")
    else:
        rows = load_calibration()
        models = json.loads(CALIBRATION_PATH.read_text())["models"]
    results = compare(rows, models)
    print(table(results))
    print(summary(results))
    if args.placed:
        placed = placed_rows(lambda r: print(f"  placed {r['network']} on {r['board']}", file=sys.stderr))
    else:  # the placed networks recorded last time stay recorded
        placed = json.loads(RESULTS.read_text()).get("placed", []) if RESULTS.exists() else []
    if placed:
        print(placed_table(placed))
    if args.write:
        atomic_write_text(RESULTS, json.dumps({"rows": results, "placed": placed,
                                               "yosys": rows[0]["yosys_version"]}, indent=1) + "\n")
        write_markdown(results, rows[0]["yosys_version"], placed)
        write_plot(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
