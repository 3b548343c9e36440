"""The ``lowbit`` command line. Every user error exits with code 2 and a message that names the fix."""

import argparse
import json
import sys

from .errors import LowbitError


def _hidden(text):
    try:
        widths = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden widths must be comma-separated integers, not {text!r}")
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"hidden widths must be positive, not {text!r}")
    return widths


def cmd_train(args):
    from .flow import train_checkpoint
    m = train_checkpoint(args.output, dataset=args.dataset, hidden=args.hidden, epochs=args.epochs,
                         seed=args.seed, data_root=args.data)
    print(f"test accuracy {m['test_accuracy']:.4f}; wrote {args.output}")


def cmd_compile(args):
    from .flow import compile_checkpoint
    manifest, check = compile_checkpoint(args.checkpoint, args.output, folding=args.folding,
                                         target_cycles=args.target_cycles, data_root=args.data)
    folds = ",".join(f"{l['pe']}x{l['simd']}" for l in manifest["layers"])
    print(f"IR vs torch on {check['images']} test images: {check['prediction_disagreements']} disagreements")
    print(f"folding {folds}: {manifest['cycles_per_inference']} cycles/inference, "
          f"latency {manifest['latency_cycles']} cycles; wrote {args.output}/")


def cmd_sim(args):
    from .flow import simulate_build
    report = simulate_build(args.build, dataset=args.dataset, limit=args.limit,
                            stalls=not args.no_stalls, seed=args.seed, data_root=args.data)
    print(json.dumps(report, indent=2))
    if report["mismatches"]:
        return 1


def cmd_synth(args):
    from .flow import synth_build
    r = synth_build(args.build, args.family)
    print(f"{r.device}: {r.luts} LUT, {r.ffs} FF, {r.brams} BRAM, {r.dsps} DSP"
          f" ({'cached' if r.cached else f'{r.seconds:.1f} s'})")


def cmd_demo(args):
    from .demo import run_demo
    report = run_demo(args.output, epochs=args.epochs, seed=args.seed, family=args.family)
    if any(r["mismatches"] for r in report["rows"]):
        return 1


DATA_HELP = "folder with the dataset's files (default: $LOWBIT_DATA); digits needs none"


def build_parser():
    p = argparse.ArgumentParser(prog="lowbit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("train", help="train a bipolar MLP and write a checkpoint")
    s.add_argument("-o", "--output", default="model.pt")
    s.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion-mnist"])
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--hidden", type=_hidden, default=[64, 64], help="hidden widths, e.g. 64,64")
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("compile", help="compile a checkpoint to Verilog + manifest")
    s.add_argument("checkpoint")
    s.add_argument("-o", "--output", required=True, help="build folder to create")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--folding", help="PExSIMD per layer, e.g. 1x64,1x16,1x4")
    g.add_argument("--target-cycles", type=int, help="cheapest folding with at most this many cycles/inference")
    s.add_argument("--data", default=None, help=DATA_HELP + " (to check the IR against PyTorch)")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("sim", help="run the test split through the Verilog in Verilator, bit-exact")
    s.add_argument("build")
    s.add_argument("--dataset", default=None)
    s.add_argument("--data", default=None, help=DATA_HELP)
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--no-stalls", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sim)

    s = sub.add_parser("synth", help="Yosys resource counts for a build")
    s.add_argument("build")
    s.add_argument("--family", default="xilinx", choices=["xilinx", "ice40", "ecp5"])
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("demo", help="train, compile, simulate and synthesize at two foldings")
    s.add_argument("-o", "--output", default="build/demo")
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--family", default="xilinx", choices=["xilinx", "ice40", "ecp5"])
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except LowbitError as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
