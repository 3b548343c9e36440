"""The end-to-end flow: train -> export -> check -> compile -> simulate -> synthesize.

Each step is a function the CLI calls; ``run_demo`` chains them at two foldings.
"""

import contextlib
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from lowbit.boards.build import does_not_fit_message
from lowbit.boards.engine_synth import synthesize_engines
from lowbit.boards.estimate import estimate_manifest
from lowbit.boards.synth import synthesize
from lowbit.compiler.build import BUILD_KIND, load_build, write_build
from lowbit.compiler.codegen import PORT_STYLES, describe
from lowbit.compiler.folding import apply_folding, most_folded, parse_folding
from lowbit.compiler.passes import choose_memories, remove_identities, set_pipeline, set_weight_memories
from lowbit.core.errors import LowbitError
from lowbit.core.files import claim_output_dir
from lowbit.hw.payload import VectorFormat
from lowbit.model.data import input_encoding, load_hardware_dataset
from lowbit.sim.runner import MAX_GAP, StallConfig, run_stream

from .folding import fold_for_board, fold_for_cycles, fold_for_luts
from .pipelining import pipeline_for_clock

DEFAULT_HIDDEN = (64, 64)
DEFAULT_EPOCHS = 30


def train_checkpoint(path, *, dataset="digits", hidden=DEFAULT_HIDDEN, epochs=DEFAULT_EPOCHS,
                     seed=0, data_root=None, progress=True, arch=None, weight_format="bipolar",
                     act="bipolar", p=None, lr=None, batch_size=None, resume=None, input_encoding=None,
                     augment=None, teacher=None, head_format=None, min_compress_size=None):
    """Train a model and write its checkpoint atomically (after every epoch, so it can resume).

    The defaults train the binary MLP of the hardware flow: bipolar weights and activations,
    hidden widths ``hidden``, thermometer-coded inputs. ``arch`` (a spec such as ``"mlp:256,256"``,
    ``"cnn:16,32"`` or ``"vit"``; it overrides ``hidden``), ``weight_format`` (a registry format,
    ``"tiled"`` with ``p``, or ``"fp32"``) and ``act`` (``"float"``, ``"bipolar"`` or ``"uK"``)
    choose any other network (``min_compress_size``: tiled layers with fewer weights stay bipolar);
    ``input_encoding="pixels"`` feeds the integer pixels to the first
    layer; ``head_format`` gives the last layer a format of its own; ``augment`` and ``teacher``
    add flips and shifts, and distillation from a checkpoint;
    ``resume`` continues a checkpoint up to ``epochs`` in total.
    See :func:`lowbit.training.train_model`. Returns the metrics dict.
    """
    from .training import train_model  # torch

    if arch is None:
        if not hidden or any(h < 1 for h in hidden):
            raise LowbitError(f"hidden widths must be positive integers, not {list(hidden)}")
        arch = {"kind": "mlp", "hidden": list(hidden)}
    return train_model(path, arch=arch, weight_format_name=weight_format, act=act, p=p,
                       dataset=dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                       data_root=data_root, resume=resume, progress=progress,
                       input_encoding_name=input_encoding, augment=augment, teacher=teacher,
                       head_format=head_format, min_compress_size=min_compress_size)


def evaluate_checkpoint(ckpt, *, data_root=None, ptq_bits=None, ptq_method="exponential"):
    """Test-split accuracy of a checkpoint, optionally after post-training quantization of a
    float (``fp32``) model to ``ptq_bits`` bits; see :func:`lowbit.training.evaluate_model`."""
    from .training import evaluate_model  # torch

    return evaluate_model(ckpt, data_root=data_root, ptq_bits=ptq_bits, ptq_method=ptq_method)


def export_checkpoint(ckpt, data_root=None):
    """Load a checkpoint, export it to the IR and check the IR against PyTorch on the test split."""
    # torch: loaded only by the steps that need a model.
    from lowbit.model.check import compare_with_torch
    from lowbit.model.checkpoint import load_checkpoint
    from lowbit.model.export import export_model

    model, meta = load_checkpoint(ckpt)
    graph = export_model(model, {"input": meta["input"], "dataset": meta.get("dataset"),
                                 "formats": meta["formats"]})
    if meta.get("dataset") is None:
        raise LowbitError(f"checkpoint {str(ckpt)!r} does not name its dataset",
                          "re-create it with 'lowbit train'")
    recorded = {k: v for k, v in meta["input"].items() if k != "image_shape"}
    # Integer pixels are a choice at training; the thermometer code is the dataset's own.
    ds, enc = load_hardware_dataset(meta["dataset"]["name"], meta["dataset"]["seed"], data_root,
                                    encoding=recorded if recorded.get("encoding") == "pixels" else None)
    if recorded != enc.to_dict():
        raise LowbitError(f"checkpoint {str(ckpt)!r} records the input encoding {recorded}, not the "
                          f"{meta['dataset']['name']} encoding {enc.to_dict()} that lowbit compiles and "
                          "simulates with", "re-create the checkpoint with 'lowbit train'")
    check = compare_with_torch(model, graph, enc(ds.x_test), ds.y_test)
    if check["export_errors"] or any(check["activation_mismatches"].values()):
        raise LowbitError(f"the IR does not reproduce the PyTorch model: {check}",
                          "this is a bug in lowbit's export; please report it with the checkpoint")
    return graph, check


def import_onnx(path, *, dataset, seed=0, data_root=None, limit=None, input_encoding=None):
    """Read a QONNX or FINN-ONNX model, streamline it (named ONNX passes, each checked against the
    graph before it: :mod:`lowbit.interchange.streamline`), lower it to the IR and check the IR
    against qonnx's execution of the streamlined model on the dataset's test split (at every
    quantized tensor; differences must be float32 accumulation ties of the model, or follow from
    one in the same image).

    ``input_encoding="pixels"`` says that a model with no input quantizer takes the integer pixels
    themselves (as one whose input is annotated UINT8 does, which needs no saying).

    Returns the graph and the check (:func:`lowbit.interchange.exact.compare_with_onnx`).

    Raises
    ------
    LowbitError
        If the model cannot be read or lowered, or the IR differs from the model at a quantized
        tensor (the message names it).
    """
    from lowbit.interchange.exact import compare_with_onnx
    from lowbit.interchange.inputs import input_quantizer
    from lowbit.interchange.lower import lower_model
    from lowbit.interchange.read import read_onnx
    from lowbit.interchange.streamline import streamline
    from lowbit.model.data import input_encoding as encoding_of
    from lowbit.model.data import load_dataset, reference_floats

    if dataset is None:
        raise LowbitError(f"{str(path)!r} does not say which dataset its model was trained on",
                          "name it with --dataset (digits, mnist or fashion-mnist); images are "
                          "scaled to [0, 1] before the model's input quantizer")
    model = read_onnx(path)
    ds = load_dataset(dataset, root=data_root, seed=seed)
    x, y = (ds.x_test, ds.y_test) if limit is None else (ds.x_test[:limit], ds.y_test[:limit])
    x = x.reshape(len(x), -1)
    record = input_quantizer(model, int(ds.max_value), input_encoding)[0].to_dict()
    floats = reference_floats(record, x, ds.max_value)
    model, passes, source_predictions = streamline(model, floats)
    graph = lower_model(model, max_value=int(ds.max_value), dataset={"name": dataset, "seed": seed},
                        input_encoding=input_encoding)
    enc = encoding_of(record)  # the dataset is loaded once, above
    # source_predictions: the file's own model, when a pass changed it
    check = compare_with_onnx(model, graph, floats, enc(x), y, source_predictions=source_predictions)
    check["passes"] = passes
    bad = {t: n for t, n in check["unexplained"].items() if n}
    if bad:  # float32 accumulation ties, and what follows from them in their images, are explained
        tensor, n = next(iter(bad.items()))
        raise LowbitError(f"the imported IR differs from the model at tensor {tensor!r} ({n} values over "
                          f"{check['images']} test images, not float32 ties)", "this model cannot be made "
                          "exact by lowbit's import; please report it with the .onnx file")
    return graph.replace_meta({**graph.meta, "import": {**graph.meta["import"], "check": check}}), check


def source_graph(source, data_root=None):
    """The IR graph of a build folder, a graph file (``.npz``) or a checkpoint (exported and
    checked against PyTorch)."""
    from lowbit.compiler.serialize import load_graph

    path = Path(source)
    if path.is_dir():
        return load_build(path).graph()
    if path.suffix == ".onnx":
        raise LowbitError(f"{str(source)!r} is an ONNX model, not a lowbit model",
                          "read it with 'lowbit import' or 'lowbit compile' (and export that build)")
    if path.suffix == ".npz":
        return load_graph(path)
    return export_checkpoint(path, data_root)[0]


def export_qonnx(source, out, *, data_root=None, limit=None):
    """Write the model of ``source`` (see :func:`source_graph`) as QONNX to ``out``.

    The file is checked before it is written: it is read back with :func:`import_onnx`, which
    compares qonnx's execution of it with the IR read back at every quantized tensor, and that
    IR must give the same hardware output as the graph written on every test image (the first
    ``limit`` of them). Returns the import check with ``"ir_rows_differ"`` added.

    Raises
    ------
    LowbitError
        If ``out`` exists and lowbit did not write it, the graph has ops with no QONNX form, or
        the file read back differs from the graph (nothing is written then).
    """
    import tempfile

    from lowbit.core.files import atomic_write_bytes, claim_output_file
    from lowbit.interchange.write import is_lowbit_onnx, write_qonnx
    from lowbit.model.data import load_dataset

    out = claim_output_file(out, inputs=(source, data_root), owned=is_lowbit_onnx)  # before any work
    graph = source_graph(source, data_root)
    ds_meta = graph.meta.get("dataset")
    if not ds_meta:
        raise LowbitError(f"{str(source)!r} does not record the dataset its model was trained on",
                          "export a build or checkpoint made by lowbit from a dataset")
    ds = load_dataset(ds_meta["name"], root=data_root, seed=ds_meta["seed"])
    data = write_qonnx(graph, int(ds.max_value)).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="lowbit-export-") as tmp:
        written = Path(tmp) / "model.onnx"
        written.write_bytes(data)
        back, check = import_onnx(written, dataset=ds_meta["name"], seed=ds_meta["seed"],
                                  data_root=data_root, limit=limit)
    enc = input_encoding(graph.meta["input"])
    x = enc(ds.x_test.reshape(len(ds.x_test), -1)[:limit])
    differ = int(np.any(back.hardware_output(x) != graph.hardware_output(x), axis=1).sum())
    if differ:
        raise LowbitError(f"the QONNX model read back differs from {str(source)!r} on {differ} of "
                          f"{len(x)} test images", "this is a bug in lowbit's QONNX writer; please "
                          "report it with the model")
    atomic_write_bytes(out, data)
    return {**check, "ir_rows_differ": differ}


def fold(graph, *, folding=None, target_cycles=None, board=None, max_luts=None):
    """Apply a hand-given folding spec, or search one: the cheapest meeting ``target_cycles``, or
    the fastest whose estimate fits ``board`` or ``max_luts`` LUTs; else the most folded. A
    ``board`` given with a folding or a cycle target checks that it fits."""
    given = [k for k, v in (("a folding", folding), ("a cycle target", target_cycles),
                            ("a LUT budget", max_luts)) if v is not None]
    if len(given) > 1 or (board is not None and max_luts is not None):
        given += ["a board"] if board is not None else []
        raise LowbitError(f"give one of a folding, a target, a board or a LUT budget, not {' and '.join(given)}")
    if folding is not None:
        folded = apply_folding(graph, parse_folding(folding, graph))
    elif target_cycles is not None:
        folded = fold_for_cycles(graph, target_cycles)
    elif board is not None:
        return fold_for_board(graph, board)
    elif max_luts is not None:
        return fold_for_luts(graph, max_luts)
    else:
        return most_folded(graph)
    if board is not None:
        _check_fits(folded, board)
    return folded


def _check_fits(graph, board, how=""):
    """Refuse ``graph`` if its estimate does not fit ``board``."""
    estimate = estimate_manifest(describe(graph), board)
    if not estimate["fits"]:
        raise LowbitError(how + does_not_fit_message(estimate),
                          "fold further (a larger --target-cycles, a lower --target-fps or a smaller folding), "
                          "or drop them to get the fastest folding that fits the board")


def compile_graph(graph, out_dir, *, folding=None, target_cycles=None, board=None, max_luts=None,
                  inputs=(), force=False, ports="axi-stream", pipeline=0, clock=None, weight_memory=None):
    """IR graph -> build folder (Verilog, memory files, manifest.json, graph.npz); returns the manifest.

    The graph may come from :func:`export_checkpoint` or be built from numpy arrays with the ops
    of :mod:`lowbit.compiler.ir` (a network trained elsewhere); the passes, the folding (as
    :func:`fold`) and the code generation are the same. ``ports`` is the top's port style:
    ``"axi-stream"`` or ``"native"`` (see :data:`lowbit.compiler.codegen.PORT_STYLES`).
    ``pipeline``: counter levels between the registers of every matrix engine's tree (0: none).
    ``clock`` (MHz, with ``board``) chooses it instead: the fewest registers expected to close that
    clock on that board (:func:`lowbit.pipelining.pipeline_for_clock`). ``weight_memory``
    (``{layer: "block" | "lut" | "const" | "auto"}``) puts those layers' weights in that memory;
    the compiler chooses the others' (:func:`lowbit.compiler.passes.choose_memories`).
    """
    if ports not in PORT_STYLES:
        raise LowbitError(f"unknown port style {ports!r}", f"use one of {', '.join(PORT_STYLES)}")
    claim_output_dir(out_dir, BUILD_KIND, inputs=inputs, force=force)  # before any work
    graph = remove_identities(graph)
    if weight_memory:
        graph = set_weight_memories(graph, weight_memory)
    if clock is not None and (board is None or pipeline):
        raise LowbitError("a clock picks the pipeline for a board: give --clock with --board, without --pipeline",
                          "add --board NAME, or drop --clock and give --pipeline LEVELS yourself")
    graph = fold(graph, folding=folding, target_cycles=target_cycles, board=board, max_luts=max_luts)
    if clock is not None:
        graph = pipeline_for_clock(graph, clock, board)[0]
    elif pipeline:
        graph = set_pipeline(graph, pipeline)
    if board is not None and (clock is not None or pipeline):
        _check_fits(graph, board, "pipelined, ")
    return write_build(choose_memories(graph), out_dir, inputs=inputs, force=force, ports=ports)


def compile_checkpoint(ckpt, out_dir, *, folding=None, target_cycles=None, board=None, max_luts=None,
                       data_root=None, force=False, dataset=None, input_encoding=None, ports="axi-stream",
                       pipeline=0, clock=None, weight_memory=None):
    """Checkpoint or ``.onnx`` model -> build folder (Verilog, manifest.json, graph.npz). Returns
    the manifest and the check of the IR against PyTorch (or, for ONNX, against qonnx)."""
    inputs = (ckpt, data_root)
    claim_output_dir(out_dir, BUILD_KIND, inputs=inputs, force=force)  # before any work
    if str(ckpt).endswith(".onnx"):
        graph, check = import_onnx(ckpt, dataset=dataset, data_root=data_root, input_encoding=input_encoding)
    else:
        if dataset is not None or input_encoding is not None:
            raise LowbitError("--dataset and --input-encoding are for .onnx models; a checkpoint names its "
                              "own dataset and encoding", "drop them")
        graph, check = export_checkpoint(ckpt, data_root)
    return compile_graph(graph, out_dir, folding=folding, target_cycles=target_cycles, board=board,
                         max_luts=max_luts, inputs=inputs, force=force, ports=ports, pipeline=pipeline,
                         clock=clock, weight_memory=weight_memory), check


def _test_vectors(graph, manifest, *, dataset, data_root, inputs, labels, limit):
    """``(encoded images, labels or None, input beats, expected output words)`` of a build: the
    dataset's test split (or ``inputs``), its first ``limit`` images, as the ports' words."""
    if inputs is None:
        ds_meta = graph.meta.get("dataset") or {"name": "digits", "seed": 0}
        name = dataset or ds_meta["name"]
        if name != ds_meta["name"]:
            raise LowbitError(f"this build was trained on {ds_meta['name']!r}, not {name!r}",
                              f"drop --dataset or pass --dataset {ds_meta['name']}")
        ds, enc = load_hardware_dataset(name, ds_meta["seed"], data_root, graph.meta.get("input"))
        x, y = enc(ds.x_test), ds.y_test
    else:
        if dataset is not None:
            raise LowbitError("give a dataset or inputs to simulate, not both")
        x = np.asarray(inputs)
        if x.ndim < 2 or tuple(x.shape[1:]) != tuple(graph.input_shape):
            raise LowbitError(f"inputs of shape {x.shape} do not fit the graph's input "
                              f"{tuple(graph.input_shape)}", "pass one row per example")
        y = None if labels is None else np.asarray(labels)
    if limit is not None:
        if limit < 1:
            raise LowbitError(f"--limit must be at least 1, not {limit}")
        x, y = x[:limit], (None if y is None else y[:limit])
    in_fmt = VectorFormat(**manifest["ports"]["i"]["format"])
    out_fmt = VectorFormat(**manifest["ports"]["o"]["format"])
    # A feature map streams one pixel (in_fmt.count elements) per beat.
    beats = in_fmt.pack(np.asarray(x).reshape(-1, in_fmt.count))
    return x, y, beats, out_fmt.pack(graph.hardware_output(x))


def quiet_cycles(manifest):
    """How long a build's ports may stay still before a simulation calls its beats missing: a
    slow build (a ViT folded 1 x 1 takes 196,608 cycles per image, and holds about three
    images) can go that long, stalls included, without a beat in or out."""
    return max(100_000, 4 * manifest["cycles_per_inference"] + 2 * (manifest["latency_cycles"] or 0))


def simulate_build(build_dir, *, dataset=None, limit=None, stalls=True, seed=0, timing_items=8,
                   data_root=None, progress=True, inputs=None, labels=None):
    """Run the dataset's test split through the build's Verilog in Verilator; compare every word.

    ``inputs`` (encoded integers, one row per example, of the graph's input shape) replace the
    dataset, e.g. for a graph built from numpy arrays; the accuracies then need ``labels``.

    Returns a plain dict: images, mismatches, IR and hardware accuracy (None without labels),
    measured and predicted cycles per inference and latency.
    """
    build = load_build(build_dir)
    manifest, graph = build.manifest, build.graph()
    x, y, beats, expected = _test_vectors(graph, manifest, dataset=dataset, data_root=data_root, inputs=inputs,
                                          labels=labels, limit=limit)
    out_fmt = VectorFormat(**manifest["ports"]["o"]["format"])
    # Gaps up to twice the bottleneck's cycles per input beat, so that stalls really starve and
    # block the pipeline (a feature map has one beat per pixel, so its gaps are per pixel), as
    # long as the harness draws them.
    per_beat = manifest["cycles_per_inference"] // manifest.get("beats_per_inference", 1)
    stall = StallConfig(seed=seed, max_gap=min(max(2, 2 * per_beat), MAX_GAP)) if stalls else None
    result = run_stream(build.verilog(), manifest["top"], beats, expected,
                        n_items=len(x), timing_items=min(timing_items, len(x)), stall=stall,
                        seed=seed, progress=progress, timeout_cycles=quiet_cycles(manifest))
    hw = out_fmt.unpack(result.outputs)
    for node in graph.host_nodes:
        hw = node.reference(hw)
    ir_pred = graph.predict(x)
    intervals = sorted(set(result.interval))
    return {
        "images": int(len(x)),
        "mismatches": int(result.mismatches),
        "ir_accuracy": None if y is None else float((ir_pred == y).mean()),
        "hw_accuracy": None if y is None else
        float((hw[:, 0] == y).mean()) if len(hw) == len(y) else 0.0,
        "cycles_predicted": manifest["cycles_per_inference"],
        "cycles_measured": intervals[0] if len(intervals) == 1 else intervals,
        "latency_predicted": manifest["latency_cycles"],
        "latency_measured": result.latency,
        "idle_fraction_in": result.in_idle_fraction,
        "idle_fraction_out": result.out_idle_fraction,
        "sim_seconds": result.seconds,
    }


def simulate_axi_stream(build_dir, *, dataset=None, limit=None, seed=0, pause=0.3, data_root=None):
    """Run the dataset's test split through the build's AXI4-Stream top under cocotbext-axi
    (:func:`lowbit.sim.axi_stream.run_axi_stream`), ``pause`` the chance of a paused cycle on
    either side. Returns its report with the hardware and IR accuracy and images per second of
    wall time."""
    from lowbit.sim.axi_stream import run_axi_stream

    build = load_build(build_dir)
    if build.ports != "axi-stream":
        raise LowbitError(f"build {str(build_dir)!r} has {build.ports} ports, not AXI4-Stream",
                          "compile it again without --ports native")
    manifest, graph = build.manifest, build.graph()
    x, y, beats, expected = _test_vectors(graph, manifest, dataset=dataset, data_root=data_root, inputs=None,
                                          labels=None, limit=limit)
    r = run_axi_stream(build.verilog(), manifest["top"], beats, expected, n_items=len(x), in_pause=pause,
                       out_pause=pause, seed=seed, timeout_cycles=2 * quiet_cycles(manifest))
    hw = VectorFormat(**manifest["ports"]["o"]["format"]).unpack(r.pop("outputs"))
    for node in graph.host_nodes:
        hw = node.reference(hw)
    return {**r, "ir_accuracy": float((graph.predict(x) == y).mean()),
            "hw_accuracy": float((hw[:, 0] == y).mean()) if len(hw) == len(y) else 0.0,
            "images_per_s": round(r["images"] / r["seconds"], 1) if r["seconds"] else None}


def run_board(build_dir, *, port=None, sim=False, baud=115200, dataset=None, limit=None, data_root=None,
              divisor=8, fault_rate=0.0, seed=0, window=None, progress=True, inputs=None, labels=None,
              network_period_ns=None):
    """Stream the dataset's test split to a board on ``port`` (a device or pyserial URL), or with
    ``sim`` to the build's whole board top in Verilator (``divisor`` cycles per serial bit,
    ``fault_rate`` the chance that a frame is damaged on the wire, each way), over the framed
    protocol of :mod:`lowbit.boards.protocol`; check every result against the IR.

    Returns a plain dict: images, mismatches (result words that differ), wrong results accepted
    (images), hardware and IR accuracy, images per second of wall time, the link's events, and
    for ``sim`` the faults injected and detected. ``inputs`` and ``labels`` replace the dataset as
    in :func:`simulate_build`. With ``sim``, ``network_period_ns`` runs the network on its own
    clock of that period, across clock-domain crossings as on a board with a PLL
    (:class:`lowbit.sim.uart_board.SimulatedBoard`).
    """
    from tqdm import tqdm

    from lowbit.boards import protocol
    from lowbit.boards.host import BoardClient, open_port

    if (port is None) == (not sim):
        raise LowbitError("give a serial port (--port) or --sim, one of them")
    if fault_rate and not sim:
        raise LowbitError("faults are injected only into the simulated board", "add --sim")
    if network_period_ns is not None and not sim:
        raise LowbitError("a network clock period is set only in the simulated board", "add --sim")
    if sim:
        from lowbit.boards.link import MIN_DIVISOR

        if divisor < MIN_DIVISOR:
            raise LowbitError(f"a serial bit of {divisor} cycles is too short for the board's receiver",
                              f"pass --divisor {MIN_DIVISOR} or more")
    build = load_build(build_dir)
    manifest, graph = build.manifest, build.graph()
    x, y, beats, expected = _test_vectors(graph, manifest, dataset=dataset, data_root=data_root, inputs=inputs,
                                          labels=labels, limit=limit)
    in_bits, out_bits = manifest["ports"]["i"]["payload_bits"], manifest["ports"]["o"]["payload_bits"]
    n = len(x)
    in_beats, out_beats = len(beats) // n, len(expected) // n
    payloads = [protocol.pack_beats(beats[k * in_beats:(k + 1) * in_beats], in_bits) for k in range(n)]
    verilog = build.verilog()
    if sim:
        from lowbit.sim.uart_board import SimulatedBoard

        if progress:
            print("starting the simulated board top (built in Verilator the first time, a minute or so)",
                  file=sys.stderr, flush=True)
        context = SimulatedBoard(build, divisor=divisor, fault_rate=fault_rate, seed=seed,
                                 network_period_ns=network_period_ns)
    else:
        context = contextlib.nullcontext()
    with context as board:
        url = board.url if sim else port
        serial_port = open_port(url, baud)
        try:
            # A simulated board without faults loses nothing: a timeout there would only mean that
            # the simulation runs slowly in wall time, and its resend would break the window.
            client = BoardClient(serial_port, result_bytes=protocol.payload_bytes(out_beats, out_bits),
                                 min_timeout=(0.25 if fault_rate else 5.0) if sim else 0.1)
            # Injected faults hit answers to INFO too: at a rate of 0.5, 20 tries all fail once in a million.
            info = client.info(attempts=20 if fault_rate else 5)
            want = protocol.Info(protocol.VERSION, info.window, len(payloads[0]),
                                 protocol.payload_bytes(out_beats, out_bits), protocol.build_id(verilog))
            if info != want:
                raise LowbitError(f"the board on {url!r} runs another build or protocol: it says {info}, this "
                                  f"build needs {want}",
                                  f"build and program this build: lowbit build {build_dir} --board NAME, then "
                                  "lowbit program")
            window = min(window or info.window, info.window)
            with tqdm(total=n, unit="img", disable=not progress, desc="simulated board" if sim else "board",
                      leave=False) as bar:
                record = client.run(payloads, window=window, progress=bar)
        finally:
            serial_port.close()
        simulated = board.finish() if sim else None
    got = [w for r in record.results for w in protocol.unpack_beats(r, out_beats, out_bits)]
    wrong_words = [a != b for a, b in zip(got, expected)]
    wrong_images = sum(any(wrong_words[k * out_beats:(k + 1) * out_beats]) for k in range(n))
    hw = VectorFormat(**manifest["ports"]["o"]["format"]).unpack(got)
    for node in graph.host_nodes:
        hw = node.reference(hw)
    report = {
        "transport": "uart-sim" if sim else "uart", "port": None if sim else port, "images": n,
        "mismatches": sum(wrong_words), "wrong_results_accepted": wrong_images,
        "hw_accuracy": None if y is None else float((hw[:, 0] == y).mean()),
        "ir_accuracy": None if y is None else float((graph.predict(x) == y).mean()),
        "images_per_s": round(n / record.seconds, 1) if record.seconds else None,
        "seconds": round(record.seconds, 2), "window": window,
        "image_bytes": info.image_bytes, "result_bytes": info.result_bytes,
        "link_events": dict(sorted(record.events.items())),
    }
    if sim:
        from lowbit.sim.uart_board import undetected_faults

        missed = undetected_faults(simulated["faults"], simulated["board_taken"], record.taken)
        kinds = Counter(f"{f['kind']} {f['direction'].replace('_', ' ')}" for f in simulated["faults"])
        report.update({
            "divisor": divisor, "network_period_ns": network_period_ns, "fault_rate": fault_rate,
            "faults_injected": len(simulated["faults"]),
            "faults_detected": len(simulated["faults"]) - len(missed), "faults_by_kind": dict(sorted(kinds.items())),
            "undetected_faults": missed[:10], "board_resets": simulated["resets"],
            "cycles": simulated["cycles"], "bytes_to_board": simulated["bytes_to_board"],
            "bytes_to_host": simulated["bytes_to_host"],
        })
        if simulated["board_bytes_received"] != simulated["bytes_to_board"]:
            raise LowbitError(f"the simulated board received {simulated['board_bytes_received']} bytes of "
                              f"{simulated['bytes_to_board']} sent: the fault record's offsets would be wrong")
    return report


def board_run_problems(report):
    """What a :func:`run_board` report got wrong, one line each; empty when every result matched."""
    problems = []
    if report["mismatches"]:
        problems.append(f"{report['mismatches']} result words differ from the IR "
                        f"({report['wrong_results_accepted']} images)")
    if report["hw_accuracy"] != report["ir_accuracy"]:
        problems.append(f"hardware accuracy {report['hw_accuracy']} is not the IR's {report['ir_accuracy']}")
    if report.get("faults_injected") and report["faults_detected"] != report["faults_injected"]:
        problems.append(f"{report['faults_injected'] - report['faults_detected']} of "
                        f"{report['faults_injected']} injected faults were not detected")
    return problems


def simulation_problems(report):
    """What a simulation report (:func:`simulate_build`) got wrong, one line each; empty when the
    hardware matched the reference word for word and its cycles and latency were as predicted."""
    problems = []
    if report["mismatches"]:
        problems.append(f"{report['mismatches']} output words differ from the IR reference")
    if report["cycles_measured"] != report["cycles_predicted"]:
        problems.append(f"measured {report['cycles_measured']} cycles per inference, the manifest "
                        f"predicts {report['cycles_predicted']}")
    if report["latency_predicted"] is not None and report["latency_measured"] != report["latency_predicted"]:
        problems.append(f"measured a latency of {report['latency_measured']} cycles, the manifest "
                        f"predicts {report['latency_predicted']}")
    return problems


def synth_build(build_dir, family="xilinx", *, flat=False, executor=None, progress=None):
    """Yosys counts of a build: each engine out of context as a job of ``executor``
    (:func:`lowbit.boards.engine_synth.synthesize_engines`; returns ``(total, parts)``), or the
    whole design in one run with ``flat`` (returns ``(result, None)``)."""
    build = load_build(build_dir)
    if flat:
        return synthesize(Path(build.verilog_path), build.manifest["top"], family), None
    return synthesize_engines(build.verilog_path, build.manifest["top"], family, executor=executor,
                              progress=progress)
