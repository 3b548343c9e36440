"""Models in, over whole test sets: Brevitas models trained here, exported to QONNX, imported,
compiled and run in Verilator.

Usage::

    python -m benchmarks.imported --data ../shared/data            # every case, full test sets
    python -m benchmarks.imported --data ../shared/data --write    # also results/imported.json, BENCHMARKS.md
    python -m benchmarks.imported --cases brevitas-w2a2-mlp --limit 1000

Each case trains a Brevitas model (:func:`brevitas_model`), exports it with
``brevitas.export.export_qonnx`` (the TorchScript exporter, ``dynamo=False``), and imports it with
:func:`lowbit.flow.import_onnx`, which compares the integer IR with qonnx's ``execute_onnx`` at
every quantized tensor and at the prediction, over the whole test set. The build is then compiled
for ``--target-cycles`` and every test image runs through the Verilog with random stalls.

Row: ``{source, model, dataset, images, reference_accuracy, ir_accuracy, hw_accuracy,
reference_disagreements, float_ties, tensor_mismatches, mismatches, cycles_predicted,
cycles_measured}``. The last layer of every model has power-of-two scales and no bias, so its
float32 logits are exact multiples of the integer accumulators and the reference's argmax is the
IR's (``reference_disagreements`` 0 by construction of the model, not by tolerance).
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.interchange.read import read_onnx

from .report import ROOT, add_case_arguments, chosen_cases, update_section, write_results

# case -> (source, dataset, model kind): "brevitas" models are Brevitas kinds (KINDS) exported
# with export_qonnx; "finn-onnx" is the Brevitas kind streamlined to FINN-ONNX
# (:func:`finn_onnx`); "lowbit" kinds are `lowbit train` architectures (LOWBIT_KINDS) exported with
# `lowbit export --qonnx` and read back.
CASES = {
    "brevitas-w1a1-mlp": ("brevitas", "mnist", "w1a1-mlp"),
    "brevitas-w2a2-mlp": ("brevitas", "mnist", "w2a2-mlp"),
    "brevitas-w2a2-cnn": ("brevitas", "fashion-mnist", "w2a2-cnn"),
    "brevitas-w2a2-res-cnn": ("brevitas", "fashion-mnist", "w2a2-res-cnn"),
    "brevitas-w4a4-in8-mlp": ("brevitas", "mnist", "w4a4-in8-mlp"),
    "finn-onnx-w1a1-mlp-xnor": ("finn-onnx", "mnist", "w1a1-mlp"),
    "lowbit-bipolar-mlp": ("lowbit", "mnist", "bipolar-mlp"),
    "lowbit-ternary-cnn": ("lowbit", "fashion-mnist", "ternary-cnn"),
}
KINDS = ("w1a1-mlp", "w2a2-mlp", "w2a2-cnn", "w2a2-res-cnn", "w4a4-in8-mlp")
# lowbit kind -> `lowbit train` options
LOWBIT_KINDS = {
    "bipolar-mlp": {"hidden": (256, 256), "weight_format": "bipolar"},
    "ternary-cnn": {"arch": "cnn:16,32:64+pad=1", "weight_format": "ternary"},
}


def brevitas_model(kind, side, hidden=64, channels=(16, 32), seed=0):
    """A Brevitas model for ``side`` x ``side`` grey images scaled to [0, 1], input quantized to
    8 bits unsigned:

    - ``w1a1-mlp``: TFC-like, 3 hidden layers of ``hidden``, bipolar weights and activations;
    - ``w2a2-mlp``: the same with ternary (2-bit narrow) weights and 2-bit ReLU activations;
    - ``w2a2-cnn``: conv3x3 - pool - conv3x3 - pool - fc, 2-bit weights and activations;
    - ``w2a2-res-cnn``: conv3x3 - a residual block (conv3x3 whose activation shares the block
      input's quantizer, so the add sums integers of one scale) - 3-bit activation - pool - fc;
    - ``w4a4-in8-mlp``: 2 hidden layers, 4-bit weights and activations, float biases.

    The last layer and the activation before it use power-of-two scales, with no bias.
    """
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import (Int8WeightPerTensorFixedPoint, SignedBinaryActPerTensorConst,
                                SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFixedPoint,
                                Uint8ActPerTensorFloat)
    from torch import nn

    if kind not in KINDS:
        raise LowbitError(f"unknown Brevitas model kind {kind!r}", f"kinds: {', '.join(KINDS)}")
    torch.manual_seed(seed)
    layers = [qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)]
    bits = {"w1a1-mlp": 1, "w2a2-mlp": 2, "w2a2-cnn": 2, "w2a2-res-cnn": 2, "w4a4-in8-mlp": 4}[kind]

    def act(last):
        if bits == 1:
            return qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
        if last:  # power-of-two scale into the last layer
            return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=True)
        return qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)

    def last_linear(n_in):
        if bits == 1:
            return qnn.QuantLinear(n_in, 10, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        return qnn.QuantLinear(n_in, 10, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                               weight_bit_width=bits)

    if kind == "w2a2-res-cnn":
        c1 = channels[0]
        return _ResidualCNN(layers[0], qnn.QuantConv2d(1, c1, 3, padding=1, bias=False, weight_bit_width=bits),
                            nn.BatchNorm2d(c1), act(False),
                            qnn.QuantConv2d(c1, c1, 3, padding=1, bias=False, weight_bit_width=bits),
                            nn.BatchNorm2d(c1),
                            qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=3, return_quant_tensor=True),
                            last_linear(c1 * (side // 2) ** 2))
    if kind == "w2a2-cnn":
        c1, c2 = channels
        layers += [qnn.QuantConv2d(1, c1, 3, padding=1, bias=False, weight_bit_width=bits), nn.BatchNorm2d(c1),
                   act(False), nn.MaxPool2d(2),
                   qnn.QuantConv2d(c1, c2, 3, padding=1, bias=False, weight_bit_width=bits), nn.BatchNorm2d(c2),
                   act(True), nn.MaxPool2d(2), nn.Flatten(), last_linear(c2 * (side // 4) ** 2)]
        return nn.Sequential(*layers)
    depth = 2 if kind == "w4a4-in8-mlp" else 3
    n_in = side * side
    for i in range(depth):
        if bits == 1:
            layers += [qnn.QuantLinear(n_in, hidden, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
                       nn.BatchNorm1d(hidden)]
        elif bits == 4:  # float biases, no BatchNorm
            layers += [qnn.QuantLinear(n_in, hidden, bias=True, weight_bit_width=bits)]
        else:
            layers += [qnn.QuantLinear(n_in, hidden, bias=False, weight_bit_width=bits), nn.BatchNorm1d(hidden)]
        layers.append(act(i == depth - 1))
        n_in = hidden
    layers.append(last_linear(n_in))
    return nn.Sequential(*layers)


def _ResidualCNN(quant_in, conv0, bn0, act, conv1, bn1, out_act, fc):
    """conv0 - act, then ``x + act(bn1(conv1(x)))`` with the same ``act`` (one scale on both
    sides of the add), then out_act - pool - fc."""
    from torch import nn

    class ResidualCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant_in, self.conv0, self.bn0, self.act = quant_in, conv0, bn0, act
            self.conv1, self.bn1, self.out_act, self.fc = conv1, bn1, out_act, fc
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            x = self.act(self.bn0(self.conv0(self.quant_in(x))))
            y = self.out_act(x + self.act(self.bn1(self.conv1(x))))
            return self.fc(self.pool(y).flatten(1))

    return ResidualCNN()


def model_input(kind, x, max_value, side):
    """The model's float input for integer images ``x``: ``x / max_value`` in float32, as
    :class:`lowbit.model.data.QuantInput` computes it, shaped for the model."""
    import numpy as np
    import torch

    f = np.asarray(x, np.float32).reshape(len(x), -1) / np.float32(max_value)
    return torch.from_numpy(f.reshape(len(x), 1, side, side) if kind.endswith("cnn") else f)


def train(model, kind, ds, side, *, epochs, batch=128, lr=1e-2, seed=0, log=None):
    """Adam with a cosine schedule on the training split; returns the model in eval mode."""
    import torch
    from torch import nn

    x, y = model_input(kind, ds.x_train, ds.max_value, side), torch.as_tensor(ds.y_train, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
        if log:
            log(f"epoch {epoch + 1}/{epochs}")
    return model.eval()


def export(model, kind, path, ds, side):
    """``brevitas.export.export_qonnx`` to ``path``, atomically, with the TorchScript exporter:
    the one whose output matched the Brevitas model here (brevitas 0.13.4, torch 2.13)."""
    from brevitas.export import export_qonnx

    path = Path(path)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_qonnx(model, input_t=model_input(kind, ds.x_test[:1], ds.max_value, side),
                         export_path=str(part), dynamo=False)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def trained_onnx(kind, dataset, work, *, data, epochs, seed=0, **sizes):
    """The exported model of ``kind`` trained on ``dataset``, trained once into ``work``."""
    from lowbit.model.data import load_dataset

    ds = load_dataset(dataset, root=data, seed=seed)
    side = int(round((ds.x_train[0].size) ** 0.5))
    path = Path(work) / f"{kind}-{dataset}-e{epochs}.onnx"
    if not path.exists():
        model = brevitas_model(kind, side, seed=seed, **sizes)
        train(model, kind, ds, side, epochs=epochs, seed=seed,
              log=lambda m: print(f"{kind} on {dataset}: {m}", file=sys.stderr, flush=True))
        export(model, kind, path, ds, side)
    return path


def finn_onnx(kind, dataset, work, *, data, epochs, seed=0):
    """The Brevitas model of ``kind`` streamlined to FINN-ONNX: lowbit's import turns its Quant
    nodes, scales and BatchNorms into integer weights and MultiThreshold nodes (written back by
    :func:`lowbit.interchange.write.write_qonnx`, with FINN datatype annotations), then qonnx's
    ``ConvertBipolarMatMulToXnorPopcount`` makes every bipolar MatMul an XnorPopcountMatMul on
    {0, 1} tensors. qonnx itself has no Quant-to-MultiThreshold transform (that one is FINN's)."""
    from lowbit.flow import import_onnx
    from lowbit.interchange.write import write_qonnx
    from lowbit.model.data import load_dataset
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount

    path = Path(work) / f"finn-{kind}-{dataset}-e{epochs}.onnx"
    if not path.exists():
        source = trained_onnx(kind, dataset, work, data=data, epochs=epochs, seed=seed)
        graph, _ = import_onnx(source, dataset=dataset, seed=seed, data_root=data, limit=1000)
        ds = load_dataset(dataset, root=data, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # qonnx warns that tensor datatypes change
            model = ModelWrapper(write_qonnx(graph, int(ds.max_value))).transform(ConvertBipolarMatMulToXnorPopcount())
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        model.save(str(part))
        os.replace(part, path)
    return path


def lowbit_onnx(kind, dataset, work, *, data, epochs, seed=0):
    """``(checkpoint, QONNX file)`` of the lowbit model of ``kind``: trained with
    :func:`lowbit.flow.train_checkpoint`, written by :func:`lowbit.flow.export_qonnx`."""
    from lowbit.flow import export_qonnx, train_checkpoint

    ckpt = Path(work) / f"lowbit-{kind}-{dataset}-e{epochs}.pt"
    path = ckpt.with_suffix(".onnx")
    if not ckpt.exists():
        train_checkpoint(ckpt, dataset=dataset, epochs=epochs, seed=seed, data_root=data, progress=True,
                         **LOWBIT_KINDS[kind])
    if not path.exists():
        export_qonnx(ckpt, path, data_root=data)
    return ckpt, path


def run_case(name, *, work, data, epochs, limit, target_cycles, seed=0):
    from lowbit.compiler.build import load_build
    from lowbit.compiler.codegen import foldings
    from lowbit.flow import compile_graph, export_checkpoint, import_onnx, simulate_build, simulation_problems

    source, dataset, kind = CASES[name]
    same_verilog = None
    if source == "brevitas":
        onnx_path = trained_onnx(kind, dataset, work, data=data, epochs=epochs, seed=seed)
    elif source == "finn-onnx":
        onnx_path = finn_onnx(kind, dataset, work, data=data, epochs=epochs, seed=seed)
    else:
        ckpt, onnx_path = lowbit_onnx(kind, dataset, work, data=data, epochs=epochs, seed=seed)
    graph, check = import_onnx(onnx_path, dataset=dataset, seed=seed, data_root=data, limit=limit)
    build = Path(work) / name
    manifest = compile_graph(graph, build, target_cycles=target_cycles, force=True)
    if source == "lowbit":  # the round trip: the checkpoint's own build, at the same target
        compile_graph(export_checkpoint(ckpt, data)[0], Path(work) / f"{name}-source",
                      target_cycles=target_cycles, force=True)
        same_verilog = load_build(build).verilog() == load_build(Path(work) / f"{name}-source").verilog()
    start = time.monotonic()
    sim = simulate_build(build, limit=limit, data_root=data, seed=seed)
    problems = simulation_problems(sim)
    if check["reference_disagreements"]:
        problems.append(f"{check['reference_disagreements']} predictions differ from the ONNX reference")
    if same_verilog is False:
        problems.append("the round trip's Verilog differs from the checkpoint's")
    return {
        "case": name, "source": source, "model": kind, "dataset": dataset, "images": sim["images"],
        "ops": sorted({n.op_type for n in read_onnx(onnx_path).graph.node}),
        "same_verilog_as_source": same_verilog,
        "reference_accuracy": check["reference_accuracy"], "ir_accuracy": check["ir_accuracy"],
        "hw_accuracy": sim["hw_accuracy"], "reference_disagreements": check["reference_disagreements"],
        "float_ties": check["float_ties"], "tensor_mismatches": sum(check["tensor_mismatches"].values()),
        "tensor_ties": sum(check["tensor_ties"].values()), "tie_images": check["tie_images"],
        "unexplained": sum(check["unexplained"].values()),
        "quantized_tensors": len(check["tensor_mismatches"]), "mismatches": sim["mismatches"],
        "passes": {p["pass"]: {"values_differ": sum(p["tensor_mismatches"].values()),
                               "ties": sum(p["tensor_ties"].values()),
                               "prediction_disagreements": p["prediction_disagreements"],
                               "tied_disagreements": p["tied_disagreements"]}
                   for p in check["passes"] if p["changed"]},
        "source_disagreements": check.get("source_disagreements", 0),
        "cycles_predicted": sim["cycles_predicted"], "cycles_measured": sim["cycles_measured"],
        "latency_predicted": sim["latency_predicted"], "latency_measured": sim["latency_measured"],
        "formats": graph.meta["formats"]["weights"], "folding": ",".join(foldings(manifest)),
        "epochs": epochs, "sim_seconds": round(time.monotonic() - start, 1), "problems": problems,
    }


def _ties(row):
    ties = row.get("tensor_ties", 0)
    return f"{ties} float32 ties in {row['tie_images']} images; " if ties else ""


def _passes(row):
    """The streamlining passes that changed the model, with their checks: values differing (ties)
    / prediction disagreements."""
    done = row.get("passes", {})
    return "; ".join(f"{name}: {p['values_differ']} ({p['ties']}) / {p['prediction_disagreements']}"
                     for name, p in done.items()) or "none changed it"


def table(rows):
    lines = ["| source | model | dataset | images | ref acc | IR acc | HW acc | streamlining passes: values "
             "differ (ties) / disagreements | ref disagreements (file's) | "
             "tensor mismatches | HW mismatches | cycles pred / meas | Verilog = source's |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        same = {None: "", True: "yes", False: "NO"}[r.get("same_verilog_as_source")]
        lines.append(f"| {r['source']} | {r['model']} | {r['dataset']} | {r['images']} "
                     f"| {r['reference_accuracy']:.4f} | {r['ir_accuracy']:.4f} | {r['hw_accuracy']:.4f} "
                     f"| {_passes(r)} | {r['reference_disagreements']} ({r.get('source_disagreements', 0)}) "
                     f"| {r['tensor_mismatches']} ({_ties(r)}{r['quantized_tensors']} tensors) "
                     f"| {r['mismatches']} | {r['cycles_predicted']} / {r['cycles_measured']} | {same} |")
    return "\n".join(lines)


METHOD = """Command: `python -m benchmarks.imported --data ../shared/data --write`. Each case trains a Brevitas
0.13.4 model here (inputs `images / 255` quantized to 8 bits unsigned; Adam with a cosine schedule),
exports it with `brevitas.export.export_qonnx(..., dynamo=False)`, and imports the file with `lowbit
import` (`lowbit.flow.import_onnx`): each streamlining pass that changes the model is checked against
the graph before it (quantized values that differ, of them float32 ties, and prediction disagreements),
then the integer IR is compared with qonnx's `execute_onnx` of the streamlined model at every quantized
tensor (`tensor mismatches`, counted in elements over the whole test set) and at the prediction (`ref
disagreements`; in brackets, against the file's model before streamlining). The graph is compiled for
1024 cycles per inference and every test image runs through the Verilog in Verilator with random stalls
on both sides (`HW mismatches` counts output words that differ from the IR). The last layer of each
Brevitas model has power-of-two scales and no bias, so its float32 logits are exact and cannot tie
differently from the integers.

The `finn-onnx` row is the Brevitas W1A1 MLP streamlined to FINN-ONNX: lowbit's import turns its Quant
nodes, scales and BatchNorms into integer weights and `MultiThreshold` nodes on the integer accumulators
(written back as QONNX with FINN datatype annotations), then qonnx's
`ConvertBipolarMatMulToXnorPopcount` turns every bipolar `MatMul` into an `XnorPopcountMatMul` on {0, 1}
tensors, which lowbit's `binary_to_bipolar` pass turns back. The `lowbit` rows are `lowbit train` models
(thermometer inputs) written with `lowbit export --qonnx` and imported back; `Verilog = source's` says
whether the file's build is byte-identical to the checkpoint's own build at the same folding."""


def _write(rows):
    """Merge ``rows`` into the recorded results (by case, in CASES order) and update BENCHMARKS.md."""
    import json

    path = ROOT / "benchmarks" / "results" / "imported.json"
    recorded = {r["case"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    recorded.update({r["case"]: r for r in rows})
    merged = [recorded[c] for c in CASES if c in recorded]
    write_results("imported", merged)
    update_section("imported", "## Models in and out: Brevitas, FINN-ONNX and lowbit -> QONNX -> lowbit (Verilator)",
                   METHOD + "\n\n" + table(merged))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.imported", description=__doc__.split("\n")[0])
    add_case_arguments(ap, CASES, "imported")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--target-cycles", type=int, default=1024, help="folding target per inference")
    args = ap.parse_args(argv)
    names = chosen_cases(args, CASES)
    if names is None:
        return 2
    work = Path(args.work)
    rows = []
    for name in names:
        try:
            row = run_case(name, work=work, data=args.data, epochs=args.epochs, limit=args.limit,
                           target_cycles=args.target_cycles)
        except LowbitError as e:
            print(f"{name}: error: {e}", file=sys.stderr)
            return 2
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        if args.write:  # after every case: a stopped run keeps what it measured
            _write(rows)
    print(table(rows))
    for r in rows:
        for problem in r["problems"]:
            print(f"{r['case']}: NOT AS PREDICTED: {problem}", file=sys.stderr)
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
