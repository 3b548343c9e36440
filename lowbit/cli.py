"""The ``lowbit`` command line. Every user error exits with code 2 and a message that names the fix."""

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

from lowbit.boards.build import MAX_SEEDS, build_for_board, does_not_fit_message
from lowbit.boards.estimate import estimate_manifest
from lowbit.compiler.build import load_build
from lowbit.compiler.codegen import PORT_STYLES, describe, foldings
from lowbit.core.errors import LowbitError
from lowbit.core import status
from lowbit.core.files import claim_output_dir

from .demo import run_demo
from .flow import (compile_checkpoint, evaluate_checkpoint, export_checkpoint, export_qonnx, fold, import_onnx,
                   simulate_build, simulation_problems, synth_build, train_checkpoint)
from .fuzz import fuzz, summary_text
from . import cache, sweep, sweep_accuracy
from .training import INPUT_ENCODINGS, quantize_checkpoint


def _hidden(text):
    try:
        widths = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden widths must be comma-separated integers, not {text!r}")
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"hidden widths must be positive, not {text!r}")
    return widths


_FROM_CHECKPOINT = ("dataset", "arch", "hidden", "format", "act_bits", "input_encoding", "p", "min_compress_size",
                    "seed", "lr", "batch_size", "augment", "teacher", "head_format")


def cmd_train(args):
    if args.resume is not None:
        given = [k for k in _FROM_CHECKPOINT if getattr(args, k) is not None]
        if given:
            raise LowbitError(f"--{given[0].replace('_', '-')} cannot be changed when resuming; "
                              "it comes from the checkpoint", "drop it, or train from scratch without --resume")
        if args.epochs is None:
            raise LowbitError("--resume needs --epochs, the total number of epochs to reach",
                              "pass --epochs N with N above the checkpoint's epoch count")
    output = args.output or args.resume or "model.pt"
    arch = args.arch
    if arch is not None and args.hidden is not None:
        raise LowbitError("give either --arch or --hidden, not both", "use --arch mlp:64,64")
    before = _file_identity(output)
    try:
        m = train_checkpoint(output, dataset=args.dataset or "digits", hidden=args.hidden or [64, 64],
                             arch=arch, weight_format=args.format or "bipolar",
                             act=args.act_bits or "bipolar", p=args.p, min_compress_size=args.min_compress_size,
                             epochs=30 if args.epochs is None else args.epochs,
                             seed=args.seed or 0, lr=args.lr, batch_size=args.batch_size,
                             data_root=args.data, resume=args.resume,
                             input_encoding=args.input_encoding, augment=args.augment,
                             teacher=args.teacher, head_format=args.head_format)
    except KeyboardInterrupt as e:
        if _file_identity(output) != before:  # an epoch's checkpoint was written (atomically: a new file)
            print(f"interrupted; continue with: lowbit train --resume {output} --epochs N", file=sys.stderr)
        else:
            print("interrupted before the first epoch ended; no checkpoint was written", file=sys.stderr)
        return 128 + e.signum if isinstance(e, Terminated) else 130
    print(f"test accuracy {m['test_accuracy']:.4f} after {m['epochs']} epochs ({m['setting']}, "
          f"{m['bits_per_weight']:.3g} bits/weight, {m['weight_memory_bytes'] / 1024:.1f} KiB); wrote {output}")


def _file_identity(path):
    """What tells a file from the one written in its place: None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def cmd_eval(args):
    r = evaluate_checkpoint(args.checkpoint, data_root=args.data, ptq_bits=args.ptq_bits,
                            ptq_method=args.ptq_method)
    what = r["format"] + (f" {r['ptq_bits']}-bit" if r["ptq_bits"] is not None else "")
    print(f"{r['dataset']} test accuracy {r['accuracy']:.4f} on {r['images']} images ({what}, {r['setting']}, "
          f"{r['bits_per_weight']:.3g} bits/weight, {r['weight_memory_bytes'] / 1024:.1f} KiB)")


def cmd_quantize(args):
    r = quantize_checkpoint(args.checkpoint, args.output, bits=args.bits, method=args.method, q=args.q)
    for name, layer in r["layers"].items():
        q = "" if layer["q"] is None else f"q={layer['q']:g}, F={layer['fraction_bits']}, "
        fmt = layer["format"] if len(layer["format"]) <= 48 else layer["format"][:45] + "..."
        print(f"{name}: {q}corr {layer['correlation']:.4f}, {fmt}")
    compiles = "compile it with 'lowbit compile'" if r["integer_exact"] else \
        "float activations: evaluate it with 'lowbit eval' (hardware needs --act-bits bipolar or K)"
    print(f"wrote {args.output} ({r['format']} {r['bits']}-bit); {compiles}")


def _list(text):
    """A comma-separated list of names: at least one, none empty."""
    names = text.split(",")
    if not text or any(not n.strip() for n in names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, not {text!r}")
    return [n.strip() for n in names]


def _integer(least, most=None, what="an integer"):
    """An argparse type: an integer in [least, most]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least or (most is not None and value > most):
            bound = f">= {least}" if most is None else f"in [{least}, {most}]"
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, not {text!r}")
        return value
    return parse


def _number(low, high=None, *, what="a number"):
    """An argparse type: a finite number above ``low`` (and at most ``high``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= low or (high is not None and value > high):
            bound = "" if low == -math.inf else f" above {low:g}" if high is None else f" in ({low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {what}{bound}, not {text!r}")
        return value
    return parse


_positive = _integer(1)
_natural = _integer(0)
_finite = _number(-math.inf, what="a finite number")
_seed = _integer(0, 2 ** 32 - 1, "a seed")
_rate = _number(0, what="a finite rate")
_lr = _number(0, 1, what="a learning rate")


def _ptq_bits(text):
    if text == "none":
        return []
    try:
        return [int(v) for v in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"PTQ bits must be comma-separated integers or 'none', not {text!r}")


def cmd_sweep_accuracy(args):
    rows, failed = sweep_accuracy.sweep_accuracy(
        args.output, dataset=args.dataset, arch=args.arch, formats=args.formats or sweep_accuracy.DEFAULT_FORMATS,
        settings=args.settings, epochs=args.epochs, seed=args.seed, p=args.p, ptq_bits=args.ptq_bits, lr=args.lr,
        batch_size=args.batch_size, data_root=args.data, force=args.force, executor=_executor(args),
        title=f"{args.dataset}, {args.arch}, {args.epochs} epochs")
    print(sweep_accuracy.markdown_table(rows), end="")
    names = sweep_accuracy.OUTPUTS
    print(f"wrote {args.output}/ ({names['table']}, {names['json']}, {names['plot']} and the checkpoints)")
    for f in failed:
        print(f"lowbit sweep-accuracy: error: {f.spec.setting} {f.spec.fmt} failed: {f.error}\n{f.traceback}",
              file=sys.stderr)
    if failed:
        return 1


def _weight_memories(text):
    """``fc0=block,fc1=lut`` -> ``{"fc0": "block", "fc1": "lut"}``."""
    choices = {}
    for item in text.split(","):
        name, eq, memory = item.strip().partition("=")
        if not eq or not name or not memory or name in choices:
            raise argparse.ArgumentTypeError(f"expected LAYER=MEMORY,... with each layer once "
                                             f"(e.g. fc0=block,fc1=lut), not {text!r}")
        choices[name] = memory
    return choices


def cmd_compile(args):
    target = args.target_cycles
    if args.clock is not None and args.board is None and args.target_fps is None:
        raise LowbitError("--clock is the clock of --target-fps, or with --board the clock to pipeline for",
                          "add --board NAME or --target-fps N, or drop --clock")
    if args.target_fps is not None:
        clock = 100.0 if args.clock is None else args.clock
        if args.target_fps <= 0 or clock <= 0:
            raise LowbitError(f"--target-fps and --clock must be positive, not {args.target_fps} and {clock}")
        # The slowest engine sets the rate: cycles per inference <= clock / fps.
        target = int(clock * 1e6 // args.target_fps)
        if target < 1:
            raise LowbitError(f"{args.target_fps:g} inferences/s needs less than one cycle per inference "
                              f"at {clock:g} MHz", "lower --target-fps or raise --clock")
    manifest, check = compile_checkpoint(args.checkpoint, args.output, folding=args.folding,
                                         target_cycles=target, board=args.board, max_luts=args.max_luts,
                                         data_root=args.data, force=args.force, dataset=args.dataset,
                                         input_encoding=args.input_encoding, ports=args.ports,
                                         pipeline=args.pipeline, clock=args.clock if args.board else None,
                                         weight_memory=args.weight_memory)

    folds = ",".join(foldings(manifest))
    if "reference_disagreements" in check:
        print(_import_summary(check))
    else:
        print(f"IR vs torch on {check['images']} test images: {check['prediction_disagreements']} disagreements")
    latency = manifest["latency_cycles"]
    # Window scans overlap consecutive images: such networks have no single latency figure.
    latency = f"latency {latency} cycles" if latency is not None else "latency: see 'lowbit sim'"
    chosen = manifest.get("pipeline_choice")
    if chosen:
        print(f"pipeline {chosen['levels']}: estimated fmax {chosen['estimated_fmax_mhz']:.1f} MHz on "
              f"{chosen['board']} for the {chosen['clock_mhz']:g} MHz clock (check it placed: lowbit build --clock)")
    paced = manifest.get("folding_choice")
    if paced:
        print(f"target {paced['target_cycles']} cycles/inference not reachable: an engine that no folding speeds up "
              f"takes {paced['paced_at']}, so the matrix engines are folded for {paced['paced_at']}")
    print(f"folding {folds}: {manifest['cycles_per_inference']} cycles/inference, {latency}; "
          f"wrote {args.output}/")


def _pass_summary(report):
    """One line on a streamlining pass and its check against the graph before it."""
    if not report["changed"]:
        return f"pass {report['pass']}: no change"
    values = sum(report["tensor_mismatches"].values())
    ties = sum(report["tensor_ties"].values())
    return (f"pass {report['pass']}: checked on {report['images']} images, {values} values differ in "
            f"{len(report['tensor_mismatches'])} quantized tensors ({ties} float32 ties), "
            f"{report['prediction_disagreements']} prediction disagreements "
            f"({report['tied_disagreements']} of them float32 ties)")


def _import_summary(check):
    lines = [_pass_summary(r) for r in check.get("passes", ())]
    if "source_disagreements" in check:
        lines.append(f"IR vs the file's model, before streamlining: {check['source_disagreements']} "
                     "prediction disagreements; "
                     f"accuracy {check['source_accuracy']:.4f} (file)")
    tensors = ", ".join(f"{t} {n}" for t, n in check["tensor_mismatches"].items())
    ties = sum(check["tensor_ties"].values())
    tied = (f" ({ties} of them float32 accumulation ties of the reference, in {check['tie_images']} images, "
            "the rest following from those)" if ties else "")
    lines.append(f"IR vs ONNX reference on {check['images']} test images: quantized tensors differ in "
                 f"{tensors} values{tied}; {check['reference_disagreements']} prediction disagreements "
                 f"({check['float_ties']} of them float32 ties of the reference); accuracy "
                 f"{check['reference_accuracy']:.4f} (ONNX), {check['ir_accuracy']:.4f} (IR)")
    return "\n".join(lines)


INPUT_ENCODING_HELP = ("for a .onnx model with no input quantizer: 'pixels' if it takes the integer pixels "
                       "themselves (not needed when its input is annotated with an integer datatype)")


def cmd_import(args):
    from lowbit.compiler.serialize import save_graph
    from lowbit.core.files import claim_output_file

    claim_output_file(args.output, inputs=(args.model,), owned=_is_graph_file)
    graph, check = import_onnx(args.model, dataset=args.dataset, data_root=args.data,
                               input_encoding=args.input_encoding)
    print(_import_summary(check))
    save_graph(args.output, graph)
    print(f"wrote {args.output}")


def cmd_export(args):
    check = export_qonnx(args.source, args.qonnx, data_root=args.data, limit=args.limit)
    print(_import_summary(check).replace("IR vs ONNX reference", "read back: IR vs ONNX reference"))
    print(f"the IR read back gives the same hardware output on all {check['images']} test images; "
          f"wrote {args.qonnx}")


def _is_graph_file(path):
    from lowbit.compiler.serialize import load_graph

    try:
        load_graph(path)
    except LowbitError:
        return False
    return True


def cmd_sim(args):
    report = simulate_build(args.build, dataset=args.dataset, limit=args.limit,
                            stalls=not args.no_stalls, seed=args.seed, data_root=args.data)
    return _report_json("sim", report, simulation_problems(report), "the hardware is not as predicted: ")


@contextlib.contextmanager
def _parts_bar(args, what):
    """A progress bar over the jobs of a per-engine synthesis; yields its ``progress`` callback.
    With --flat there are no jobs to count, and Yosys's own status line says what runs."""
    from tqdm import tqdm

    shown = not (args.quiet or args.flat) and sys.stderr.isatty()
    with tqdm(desc=what, unit="job", disable=not shown, leave=False) as bar, \
            (status.bar_shown() if shown else contextlib.nullcontext()):
        def progress(job, done, jobs):
            bar.total = jobs
            bar.update(1)
            bar.set_postfix_str(f"{job.top} {job.digest} done")

        yield progress


def cmd_synth(args):
    with _parts_bar(args, "synthesis per engine") as progress:
        r, parts = synth_build(args.build, args.family, flat=args.flat, executor=_executor(args), progress=progress)
    for name, p in (parts or {}).items():
        print(f"  {name:<8} {p.luts:>8} LUT {p.ffs:>8} FF {p.brams:>4} BRAM {p.dsps:>3} DSP"
              f"  ({'cached' if p.cached else f'{p.seconds:.1f} s'})")
    print(f"{r.device}{', per engine' if parts else ', flat'}: {r.luts} LUT, {r.ffs} FF, {r.brams} BRAM, "
          f"{r.dsps} DSP ({'cached' if r.cached else f'{r.seconds:.1f} s of Yosys'})")


def cmd_demo(args):
    report = run_demo(args.output, epochs=args.epochs, seed=args.seed, family=args.family, force=args.force)
    problems = [f"{d['label']}: {p}" for d in report["details"] for p in d["problems"]]
    if problems:
        print(f"lowbit demo: error: the hardware is not as predicted: {'; '.join(problems)}", file=sys.stderr)
        return 1


def _estimate_target(target):
    """Manifest of a build folder, or of a checkpoint exported and folded most in memory."""
    if Path(target).is_dir():
        return load_build(target).manifest
    if not Path(target).is_file():
        raise LowbitError(f"{target!r} is neither a build folder nor a checkpoint file",
                          "pass a folder from 'lowbit compile' or a .pt from 'lowbit train'")
    return describe(fold(export_checkpoint(target)[0]))


def cmd_estimate(args):
    est = estimate_manifest(_estimate_target(args.target), args.board)
    if args.json:
        print(json.dumps(est, indent=2))
        return
    print(f"{est['board']} ({est['device']}), per engine:")
    print(f"{'layer':<10} {'lane':<14} {'shape':>9} {'PExSIMD':>8} {'cyc/inf':>8} {'LUT':>7} {'FF':>7} "
          f"{'BRAM':>5} {'DSP':>4} {'fmax':>6}")
    for r in est["layers"]:
        print(f"{r['name']:<10} {r['lane']:<14} {r['shape']:>9} {r['folding']:>8} {r['cycles_per_inference']:>8} "
              f"{r['luts']:>7} {r['ffs']:>7} {r['brams']:>5} {r['dsps']:>4} {r['fmax_mhz']:>6.1f}")
    t, c = est["total"], est["capacity"]
    print(f"{'total':<53} {t['luts']:>7} {t['ffs']:>7} {t['brams']:>5} {t['dsps']:>4}")
    print(f"{'capacity':<53} {c['luts']:>7} {c['ffs']:>7} {c['brams']:>5} {c['dsps']:>4}")
    if est["fits"]:
        print("fits: " + ", ".join(f"{k[:-1].upper()} {v:.0%}" for k, v in est["utilization"].items()))
    else:
        print(does_not_fit_message(est))
    def us(v):
        return f", {v:.2f} us" if v is not None else ""
    latency = (f"latency {est['latency_cycles']} cycles" if est["latency_cycles"] is not None
               else "images overlap in the window scans")
    print(f"{est['cycles_per_inference']} cycles/inference, {latency}; "
          f"at fmax {est['fmax_mhz']:.1f} MHz: {est['inferences_per_second_at_fmax']:,.0f} inferences/s"
          f"{us(est['latency_us_at_fmax'])}; at the board clock {est['clock_mhz']:g} MHz: "
          f"{est['inferences_per_second_at_clock']:,.0f} inferences/s{us(est['latency_us_at_clock'])}")


def cmd_build(args):
    with _parts_bar(args, "synthesis per engine") as progress:
        report = build_for_board(args.build, args.board, args.output, force=args.force, flat=args.flat,
                                 executor=_executor(args), progress=progress, clock_mhz=args.clock,
                                 allow_slower=args.allow_slower, seeds=args.seeds)
    for warning in report["warnings"]:
        print(f"lowbit build: warning: {warning}", file=sys.stderr)
    if "placed" in report:
        pl, ck = report["placed"], report["clock"]
        used = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in pl["utilization"].items()
                         if v["used"])
        where = "the board clock" if ck["pll"] is None else "the PLL clock"
        pll = "" if ck["pll"] is None else (f"; network clock {ck['network_mhz']:g} MHz from the PLL "
                                            f"(asked {ck['requested_mhz']:g}, oscillator {ck['oscillator_mhz']:g})")
        if len(pl["fmax_by_seed"]) > 1:
            tried = ", ".join(f"seed {k}: {v:.1f}" for k, v in pl["fmax_by_seed"].items())
            print(f"{report['board']}: placed with seed {pl['seed']} (fmax MHz by seed: {tried})")
        print(f"{report['board']}: {used}; fmax {ck['network_fmax_mhz']:.1f} MHz{pll} "
              f"({pl['inferences_per_second_at_fmax']:,.0f} inferences/s at fmax, "
              f"{pl['inferences_per_second_at_clock']:,.0f} at {where}); wrote {args.output}/")
    else:
        sy = report["synth"]
        print(f"{report['board']} (Yosys, out of context): {sy['luts']} LUT, {sy['ffs']} FF, "
              f"{sy['brams']} BRAM, {sy['dsps']} DSP; Verilog in {args.output}/")


def cmd_program(args):
    from lowbit.boards.program import program_board

    command = program_board(args.bitstream, args.board, dry_run=args.dry_run)
    print(("would run: " if args.dry_run else "programmed: ") + " ".join(command))


def cmd_run(args):
    from lowbit.flow import board_run_problems, run_board

    report = run_board(args.build, port=args.port, sim=args.sim, baud=args.baud, dataset=args.dataset,
                       limit=args.limit, data_root=args.data, divisor=args.divisor, fault_rate=args.faults,
                       seed=args.seed, window=args.window, progress=not args.quiet and sys.stderr.isatty(),
                       network_period_ns=args.network_period)
    return _report_json("run", report, board_run_problems(report))


def _report_json(command, report, problems, lead=""):
    """Print a run's report; exit 1, naming what is wrong, when it found problems."""
    print(json.dumps(report, indent=2))
    if problems:
        print(f"lowbit {command}: error: {lead}{'; '.join(problems)}", file=sys.stderr)
        return 1


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 0.5, not {text!r}")
    return value


def _positive_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, not {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, not {text!r}")
    return values


def cmd_sweep(args):
    if args.dataset is not None and (args.in_shape is not None or args.classes is not None):
        raise LowbitError("--in-shape and --classes come from the dataset when the sweep trains",
                          "drop them, or drop --dataset to sweep random weights of that shape")
    in_shape = args.in_shape or [64]
    classes = args.classes or 10
    claim_output_dir(args.output, sweep.SWEEP_KIND, inputs=(*args.checkpoint, args.data), force=args.force)
    from tqdm import tqdm

    executor = _executor(args)
    with tqdm(desc="sweep", unit="job", disable=not sys.stderr.isatty(), leave=False) as bar, status.bar_shown():
        def progress(stage, done, failed, jobs):
            if bar.total != jobs or bar.desc != stage:
                bar.reset(total=jobs)
                bar.set_description(stage)
            bar.update(1)
            bar.set_postfix(failed=failed, running=min(jobs - done, executor.workers))

        rows, failed, trained = sweep.sweep_resources(
            args.arch, in_shape=in_shape, classes=classes, formats=args.formats or sweep.DEFAULT_FORMATS,
            targets=args.target_cycles, boards=args.board, p=args.p, min_compress_size=args.min_compress_size,
            seed=args.seed, synth=args.synth, dataset=args.dataset, epochs=args.epochs, data_root=args.data,
            executor=executor, progress=progress, pipeline=args.pipeline)
    acc = sweep.checkpoint_rows(args.checkpoint, data_root=args.data) if args.checkpoint else []
    if args.dataset is not None:
        title = f"{args.arch} on {args.dataset}"
    else:
        title = f"{args.arch}, input {'x'.join(map(str, in_shape))}, {classes} classes"
    paths = sweep.write_sweep(args.output, rows, title=title, boards=args.board, accuracy_rows=acc, trained=trained,
                              synth=args.synth, inputs=(*args.checkpoint, args.data), force=args.force,
                              failed=failed)
    print(sweep.markdown_table(rows), end="")
    print(f"wrote {', '.join(str(v) for v in paths.values())}")
    for f in failed:
        print(f"lowbit sweep: error: {sweep.job_name(f.spec)} failed: {f.error}\n{f.traceback}", file=sys.stderr)
    if failed:
        return 1


def cmd_cache(args):
    if args.action == "info":
        print(cache.format_info(cache.cache_info()))
        return
    if args.max_size is None and not args.all:
        raise LowbitError("'lowbit cache clean' needs --max-size SIZE or --all",
                          "pass --max-size 2G to keep the most recently used 2 GiB, or --all to empty the caches")
    limit = None if args.all else cache.parse_size(args.max_size)
    print(cache.format_clean(cache.cache_clean(max_bytes=limit)))


def cmd_fuzz(args):
    totals = fuzz(args.n, seed=args.seed, vectors=args.vectors, out_dir=args.output, executor=_executor(args))
    print(summary_text(totals))
    if totals["failures"] or totals["failed"]:
        return 1


def _add_executor_options(s):
    s.add_argument("--workers", type=_positive, default=None,
                   help="worker processes of a local Dask cluster (default: one per core; 1: in this process)")
    s.add_argument("--scheduler", default=None, help="run the jobs on a Dask cluster: its scheduler's address")


def _add_synthesis_options(s):
    s.add_argument("--flat", action="store_true",
                   help="synthesize the whole design in one Yosys run, not each engine as its own job")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_executor_options(s)


def _executor(args):
    from lowbit.cache import collect_leftovers
    from lowbit.core.executor import Executor

    return Executor(workers=args.workers, scheduler=args.scheduler, on_stop=collect_leftovers)


DATASETS = ["digits", "mnist", "fashion-mnist", "cifar10"]
DATA_HELP = "folder with the dataset's files (default: $LOWBIT_DATA); digits needs none"


def build_parser():
    p = argparse.ArgumentParser(prog="lowbit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("train", help="train a network in any weight format and write a checkpoint")
    s.add_argument("-o", "--output", default=None,
                   help="checkpoint to write after every epoch (default model.pt, or the --resume one)")
    s.add_argument("--dataset", default=None, choices=DATASETS, help="default digits")
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--arch", default=None,
                   help="mlp:H1,H2,... | cnn[:C1,C2[:F1,...]] | vit[:dim=64,depth=2,heads=4,mlp_dim=128,patch=P]"
                        "; +integer: the integer-only ViT")
    s.add_argument("--hidden", type=_hidden, default=None, help="MLP hidden widths, e.g. 64,64 (default)")
    s.add_argument("--format", default=None, metavar="FORMAT",
                   help="weight format: fp32, tiled (with --p) or a registry format (default bipolar)")
    s.add_argument("--p", type=_positive, default=None, help="tile copies of the tiled format (2, 4, 8, ...)")
    s.add_argument("--min-compress-size", type=_positive, default=None, metavar="N",
                   help="tiled: layers with fewer than N weights stay bipolar (default 65536)")
    s.add_argument("--head-format", default=None, metavar="FORMAT",
                   help="the last layer's weight format, e.g. levels17 for a higher-precision head (mlp, cnn)")
    s.add_argument("--act-bits", default=None,
                   help="activations: float (weights-only setting, float pixels), bipolar (default) or "
                        "K = 1..8 unsigned bits (hardware setting, thermometer inputs)")
    s.add_argument("--input-encoding", default=None, choices=INPUT_ENCODINGS,
                   help="hardware setting: the first layer takes a thermometer code of the pixels (default; "
                        "one level, mid-grey, on MNIST-style images) or the integer pixels themselves")
    s.add_argument("--augment", default=None, metavar="SPEC",
                   help="image augmentation while training: flip, shift=N or flip,shift=2 (cnn and vit)")
    s.add_argument("--teacher", default=None, metavar="CKPT",
                   help="distill from this checkpoint of the same dataset, e.g. the fp32 twin trained with "
                        "--format fp32 --act-bits float")
    s.add_argument("--epochs", type=_positive, default=None, help="total epochs (default 30)")
    s.add_argument("--seed", type=_seed, default=None, help="default 0")
    s.add_argument("--lr", type=_lr, default=None, help="Adam learning rate in (0, 1] (default 0.01)")
    s.add_argument("--batch-size", type=_positive, default=None, help="default 64")
    s.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue this checkpoint up to --epochs in total (same optimizer state and batches)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="test-split accuracy of a checkpoint (optionally after PTQ)")
    s.add_argument("checkpoint")
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--ptq-bits", type=int, default=None,
                   help="quantize an fp32 checkpoint's weights to 2..6 bits after training first")
    s.add_argument("--ptq-method", default="exponential", choices=["exponential", "linear"],
                   help="exponential (expq: ±a*q**k, q per layer) or linear levels")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("quantize", help="post-training quantization of an fp32 checkpoint into a "
                                        "checkpoint that evaluates and compiles like any other")
    s.add_argument("checkpoint")
    s.add_argument("--bits", type=int, required=True, help="bits per weight, 2..6")
    s.add_argument("--method", default="exponential", choices=["exponential", "linear"],
                   help="exponential (expq: ±a*q**k, q per layer) or linear levels")
    s.add_argument("--q", type=_finite, default=None,
                   help="fixed ratio q in (0, 1) for every layer (default: chosen per layer)")
    s.add_argument("-o", "--output", required=True, help="checkpoint to write")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("sweep-accuracy",
                       help="train one architecture in every weight format: accuracy table and Pareto plot")
    s.add_argument("-o", "--output", default="build/sweep-accuracy", help="folder for the table, plot, checkpoints")
    s.add_argument("--force", action="store_true",
                   help="replace a lowbit folder of another kind (never a folder lowbit did not write)")
    s.add_argument("--dataset", default="digits", choices=DATASETS)
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--arch", default="mlp:64,64")
    s.add_argument("--formats", type=_list, default=None,
                   help="comma-separated (default fp32,bipolar,binary01,ternary,levels5,levels9,levels17,pow2,tiled)")
    s.add_argument("--settings", type=_list, default=["weights-only", "hardware"],
                   help="weights-only, hardware or both (default)")
    s.add_argument("--p", type=_positive, default=4, help="tile copies of the tiled format (default 4)")
    s.add_argument("--ptq-bits", type=_ptq_bits, default=[2, 3, 4, 5, 6],
                   help="bit budgets of the expq and linear PTQ rows, or 'none' (default 2,3,4,5,6)")
    s.add_argument("--epochs", type=_positive, default=30)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--lr", type=_lr, default=None)
    s.add_argument("--batch-size", type=_positive, default=None)
    _add_executor_options(s)
    s.set_defaults(func=cmd_sweep_accuracy)

    s = sub.add_parser("import", help="import a QONNX or FINN-ONNX model to an IR graph (graph.npz), "
                                      "checked against qonnx's execution of it")
    s.add_argument("model", help="the .onnx file")
    s.add_argument("-o", "--output", required=True, help="graph file to write (.npz)")
    s.add_argument("--dataset", choices=["digits", "mnist", "fashion-mnist"], default=None,
                   help="the dataset the model was trained on (images scaled to [0, 1])")
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--input-encoding", choices=["pixels"], default=None, help=INPUT_ENCODING_HELP)
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="write a checkpoint, build or graph.npz as a QONNX model, checked "
                                      "by reading it back")
    s.add_argument("source", help="a lowbit checkpoint, a build folder or a graph file (.npz)")
    s.add_argument("--qonnx", required=True, help="the .onnx file to write")
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--limit", type=_positive, default=None,
                   help="check on the first N test images (default: all)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("compile", help="compile a checkpoint or .onnx model to Verilog + manifest")
    s.add_argument("checkpoint", help="a lowbit checkpoint, or a QONNX / FINN-ONNX model (.onnx)")
    s.add_argument("-o", "--output", required=True, help="build folder to create")
    s.add_argument("--force", action="store_true",
                   help="replace a lowbit folder of another kind (never a folder lowbit did not write)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--folding", help="PExSIMD per layer, e.g. 1x64,1x16,1x4")
    g.add_argument("--target-cycles", type=_positive, help="cheapest folding with at most this many cycles/inference")
    g.add_argument("--target-fps", type=_rate, help="cheapest folding reaching this many inferences/s at --clock")
    g.add_argument("--max-luts", type=_positive, help="fastest folding within this many estimated xc7 LUTs")
    s.add_argument("--board", help="alone: the fastest folding whose estimate fits this board (see 'lowbit "
                                   "estimate'); with a folding or target: check that it fits; with --clock: "
                                   "pick the pipeline for the board")
    s.add_argument("--clock", type=_rate, default=None, metavar="MHZ",
                   help="the clock for --target-fps (default 100); with --board, also the fewest pipeline "
                        "registers expected to close it on that board ('lowbit build --clock' checks it placed)")
    s.add_argument("--pipeline", type=_natural, default=0, metavar="LEVELS",
                   help="register every matrix engine's adder tree every LEVELS counter levels, and its ROM "
                        "outputs, accumulator and compare: a faster clock at the same cycles per inference, "
                        "a longer latency (default 0: none)")
    s.add_argument("--weight-memory", type=_weight_memories, default=None, metavar="LAYER=MEMORY,...",
                   help="where the named layers keep their weights: block (block RAM), lut (a ROM in LUTs), "
                        "const (in the logic) or auto (the compiler chooses, as for the layers not named)")
    s.add_argument("--data", default=None, help=DATA_HELP + " (to check the IR against PyTorch)")
    s.add_argument("--dataset", choices=["digits", "mnist", "fashion-mnist"], default=None,
                   help="for a .onnx model: the dataset it was trained on (images scaled to [0, 1])")
    s.add_argument("--input-encoding", choices=["pixels"], default=None, help=INPUT_ENCODING_HELP)
    s.add_argument("--ports", choices=PORT_STYLES, default="axi-stream",
                   help="the top's ports: AXI4-Stream s_axis_*/m_axis_*, aclk, aresetn (default), or "
                        "native i__payload/valid/ready, o__..., clk, rst")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("sim", help="run the test split through the Verilog in Verilator, bit-exact")
    s.add_argument("build")
    s.add_argument("--dataset", default=None)
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--limit", type=_positive, default=None)
    s.add_argument("--no-stalls", action="store_true")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--quiet", action="store_true", help="no status line while Verilator builds")
    s.set_defaults(func=cmd_sim)

    s = sub.add_parser("synth", help="Yosys resource counts for a build")
    s.add_argument("build")
    s.add_argument("--family", default="xilinx", choices=["xilinx", "ice40", "ecp5"])
    _add_synthesis_options(s)
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("demo", help="train, compile, simulate and synthesize at two foldings")
    s.add_argument("-o", "--output", default="build/demo")
    s.add_argument("--force", action="store_true",
                   help="replace a lowbit folder of another kind (never a folder lowbit did not write)")
    s.add_argument("--epochs", type=_positive, default=30)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--family", default="xilinx", choices=["xilinx", "ice40", "ecp5"])
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("estimate", help="LUT/FF/BRAM/DSP, fmax and inferences/s of a build or checkpoint on a board")
    s.add_argument("target", help="build folder, or checkpoint (folded most, nothing written)")
    s.add_argument("--board", required=True, help="icebreaker, ulx3s, arty-a7-35, arty-z7-20")
    s.add_argument("--json", action="store_true", help="print the estimate as JSON")
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("build", help="bitstream (iCE40/ECP5) or Verilog + Yosys counts (Xilinx) for a board")
    s.add_argument("build")
    s.add_argument("--board", required=True, help="icebreaker, ulx3s, arty-a7-35, arty-z7-20")
    s.add_argument("-o", "--output", required=True, help="folder to create")
    s.add_argument("--force", action="store_true",
                   help="replace a lowbit folder of another kind (never a folder lowbit did not write)")
    s.add_argument("--clock", type=_rate, default=None, metavar="MHZ",
                   help="run the network at this clock from the FPGA's PLL (the nearest it makes), the UART on "
                        "the oscillator (default: everything on the oscillator)")
    s.add_argument("--allow-slower", action="store_true",
                   help="build even if the network's placed fmax is below --clock (a warning, not an error)")
    s.add_argument("--seeds", type=_integer(1, MAX_SEEDS, "a number of placement seeds"), default=1, metavar="N",
                   help="place with nextpnr seeds 1..N until one reaches --clock (without --clock: all N) and "
                        "keep the fastest; one design's fmax moves by about 10 %% from seed to seed (default 1)")
    _add_synthesis_options(s)
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("program", help="program a board with a bitstream from 'lowbit build' (iceprog or "
                                       "openFPGALoader, through the board's amaranth-boards platform)")
    s.add_argument("bitstream", help="the .bin / .bit file, or the folder 'lowbit build' wrote")
    s.add_argument("--board", required=True, help="icebreaker or ulx3s")
    s.add_argument("--dry-run", action="store_true", help="print the programmer's command, do not run it")
    s.set_defaults(func=cmd_program)

    s = sub.add_parser("run", help="stream the test split to a board over its UART (or to the simulated board "
                                   "top) and check every result against the IR")
    s.add_argument("build", help="the folder 'lowbit compile' wrote (the board runs 'lowbit build' of it)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board (/dev/ttyUSB1), or a pyserial URL")
    where.add_argument("--sim", action="store_true",
                       help="run the whole board top (UART, framing, network) in Verilator instead")
    s.add_argument("--dataset", default=None)
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--limit", type=_positive, default=None)
    s.add_argument("--baud", type=_positive, default=115200, help="the board top's rate (default 115200)")
    s.add_argument("--window", type=_positive, default=None,
                   help="images in flight, at most the board's window (default: the board's)")
    s.add_argument("--divisor", type=_positive, default=8,
                   help="with --sim: clock cycles per serial bit (default 8; at least 4)")
    s.add_argument("--network-period", type=_rate, default=None, metavar="NS",
                   help="with --sim: run the network on its own clock of this period, beside the 10 ns oscillator, "
                        "as a board with a PLL does (default: one clock)")
    s.add_argument("--faults", type=_fraction, default=0.0,
                   help="with --sim: chance that a frame is damaged on the wire, each way (bit flip, "
                        "dropped byte, or a reset of the board mid-frame)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("fuzz", help="random small networks, each checked bit-exact: IR vs PyTorch, "
                                    "Verilator vs IR with stalls, cycles vs prediction")
    s.add_argument("--n", type=int, default=20, help="networks to check (default 20)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first network; network i has seed+i")
    s.add_argument("--vectors", type=int, default=16, help="random inputs per network in Verilator (default 16)")
    s.add_argument("-o", "--output", default="build/fuzz", help="folder for reproductions of failures")
    _add_executor_options(s)
    s.set_defaults(func=cmd_fuzz)

    s = sub.add_parser("sweep", help="one architecture across weight formats and foldings: LUT, "
                                     "throughput, plots and a report (random weights)")
    s.add_argument("-o", "--output", default="build/sweep", help="folder to create (replaced atomically)")
    s.add_argument("--force", action="store_true",
                   help="replace a lowbit folder of another kind (never a folder lowbit did not write)")
    s.add_argument("--arch", default="mlp:64,64", help="mlp:H1,H2,... | cnn[:C1,C2[:F1,...]]")
    s.add_argument("--in-shape", type=_positive_list, default=None,
                   help="input features (mlp) or H,W,C (cnn) of the random network; default 64")
    s.add_argument("--classes", type=_integer(2), default=None, help="outputs of the random network; default 10")
    s.add_argument("--dataset", choices=DATASETS, default=None,
                   help="train each format on this dataset (hardware setting) and add its test accuracy and the "
                        "Pareto front of accuracy, throughput and LUTs; default: random weights, no accuracy")
    s.add_argument("--epochs", type=_positive, default=20,
                   help="training epochs per format with --dataset (default 20)")
    s.add_argument("--formats", type=_list, default=None,
                   help="comma-separated (default bipolar,tiled,binary01,ternary,levels5,levels9,levels17,pow2)")
    s.add_argument("--target-cycles", type=_positive_list, default=[64, 256, 1024],
                   help="cycles per inference to fold for, comma-separated (default 64,256,1024)")
    s.add_argument("--board", type=_list, default=["arty-a7-35"],
                   help="comma-separated boards: icebreaker, ulx3s, arty-a7-35, arty-z7-20 (default arty-a7-35)")
    s.add_argument("--p", type=_positive, default=4, help="tile copies of the tiled format (default 4)")
    s.add_argument("--min-compress-size", type=_positive, default=None,
                   help="tiled: layers with fewer weights stay bipolar (default: the model's, 64k)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--synth", action="store_true", help="also synthesize every design with Yosys (slow)")
    s.add_argument("--pipeline", type=_natural, default=0, metavar="LEVELS",
                   help="pipeline every design as 'lowbit compile --pipeline' does; its fmax is then the "
                        "estimator's pipelined model (default 0: none)")
    s.add_argument("--checkpoint", action="append", default=[],
                   help="a checkpoint from 'lowbit train' whose accuracy to plot against weight memory "
                        "(repeatable)")
    s.add_argument("--data", default=None, help=DATA_HELP)
    _add_executor_options(s)
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("cache", help="show the caches (Verilator builds, synthesis, place and route, LUT levels), or "
                                     "bound their size")
    s.add_argument("action", choices=["info", "clean"])
    g = s.add_mutually_exclusive_group()
    g.add_argument("--max-size", default=None, metavar="SIZE",
                   help="clean: keep the most recently used entries within SIZE (e.g. 500M, 2G)")
    g.add_argument("--all", action="store_true", help="clean: remove every entry")
    s.set_defaults(func=cmd_cache)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that it unwinds as from Ctrl-C: every
    temporary output is removed and every child process (simulator, Yosys, nextpnr) is killed."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def main(argv=None):
    args = build_parser().parse_args(argv)
    status.set_quiet(getattr(args, "quiet", False))
    # Signal handlers can only be set from the main thread (the CLI's; not an embedding thread).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)} if main_thread else {}
    try:
        return args.func(args) or 0
    except LowbitError as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:
        print(f"lowbit {args.command}: stopped by {e.args[0]}; nothing half-written is left", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
