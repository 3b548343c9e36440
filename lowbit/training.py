"""Training, resuming and evaluating checkpoints of every architecture and weight format.

Two settings, as in the papers lowbit implements:

* **weights-only** (``act="float"``): float activations (ReLU, GELU in the transformer) and float
  pixels in [0, 1]; only the weights are low-bit. This is how weight formats are usually compared.
* **hardware** (``act`` = ``"bipolar"`` or ``"uK"``): quantized activations and the thermometer
  input code of :func:`lowbit.model.data.load_hardware_dataset`, or (``input_encoding="pixels"``)
  the integer pixels themselves, K bits wide, into the first layer: the network the compiler turns
  into hardware.

A checkpoint is written atomically after every epoch with the state a resumed run needs
(:class:`lowbit.model.train.TrainState`), so an interrupted run loses at most one epoch and
``--resume`` continues it exactly.
"""

import math
import os
from pathlib import Path

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.cache import sha256_file
from lowbit.core.files import claim_output_file
from lowbit.core.formats import (ALPHA_BITS, FORMAT_FAMILIES, WEIGHT_FORMATS, activation_format, format_family,
                                 weight_format)
from lowbit.model.data import THERMOMETER_LEVELS, PixelInput, Thermometer, load_dataset, load_hardware_dataset

__all__ = ["FLOAT_FORMAT", "SETTINGS", "INPUT_ENCODINGS", "parse_arch", "parse_act", "setting_of", "image_shape",
           "input_encoding", "encode_inputs", "build_arch", "train_model", "parse_augment", "teacher_logits",
           "evaluate_model", "evaluate_loaded", "apply_ptq", "quantize_checkpoint", "weight_memory",
           "known_formats"]

FLOAT_FORMAT = "fp32"
"""The float baseline's weight format name (not a registry entry: it has no hardware lane)."""

SETTINGS = ("weights-only", "hardware")


def setting_of(act):
    """``"weights-only"`` for float activations, else ``"hardware"``."""
    return "weights-only" if act == "float" else "hardware"


def parse_act(text):
    """``--act-bits``: ``float``, ``bipolar``, ``K`` (unsigned K-bit, K = 1..8) or ``uK``."""
    text = str(text)
    if text in ("float", "bipolar"):
        return text
    spec = f"u{text}" if text.isdigit() else text
    fmt = activation_format(spec)
    if fmt.kind == "int":
        raise LowbitError(f"hidden activations are bipolar or unsigned, not {text!r}",
                          "use --act-bits float, bipolar or 1..8")
    return spec


def _ints(text, what):
    """Comma-separated positive integers: none may be missing."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise LowbitError(f"{what} must be comma-separated integers, not {text!r}") from None
    if any(v < 1 for v in values):
        raise LowbitError(f"{what} must be positive, not {text!r}")
    return values


def parse_arch(spec):
    """Parse an architecture spec into a partial ``arch`` dict (no input shape or classes yet).

    * ``mlp:256,256`` (hidden widths; ``mlp`` alone: 64,64);
    * ``cnn``, ``cnn:16,32`` or ``cnn:16,32:64`` (conv channels, then fully connected widths;
      ``cnn`` alone: 16,32 and no hidden fully connected layer);
    * ``vit`` or ``vit:dim=64,depth=2,heads=4,mlp_dim=128,patch=7`` (any subset of the keys;
      the default patch cuts the image into 4 x 4 patches).

    mlp and cnn specs take options after ``+``: ``+res`` (skip connections, arch key
    ``residual``), and for cnn ``+pad=N`` and ``+stride=N``, e.g. ``mlp:64,64,64+res`` or
    ``cnn:8,8+pad=1+res``. ``vit+integer`` is the integer-only ViT
    (:mod:`lowbit.model.integer_vit`, arch key ``integer``).

    Raises
    ------
    LowbitError
        On an unknown kind or a malformed list.
    """
    spec, *options = str(spec).split("+")
    kind, colon, rest = spec.partition(":")
    if colon and (not rest or rest.startswith(":") or rest.endswith(":")):
        raise LowbitError(f"architecture {spec!r} has an empty list of sizes",
                          f"give the sizes, e.g. {kind}:64,64, or write {kind!r} alone for the defaults")
    if kind == "mlp":
        arch = {"kind": "mlp", "hidden": _ints(rest, "MLP hidden widths") if rest else [64, 64]}
        return _arch_options(arch, options)
    if kind == "cnn":
        channels, _, fc = rest.partition(":")
        arch = {"kind": "cnn", "channels": _ints(channels, "CNN channels") if channels else [16, 32],
                "fc": _ints(fc, "CNN fully connected widths") if fc else []}
        return _arch_options(arch, options)
    if kind == "vit":
        arch = {"kind": "vit"}
        for option in options:
            if option != "integer":
                raise LowbitError(f"bad vit option {option!r}", "options: integer")
            arch["integer"] = True
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if key not in ("dim", "depth", "heads", "mlp_dim", "patch") or not eq or not value.isdigit():
                raise LowbitError(f"bad ViT option {item!r}",
                                  "use key=integer with keys dim, depth, heads, mlp_dim, patch")
            arch[key] = int(value)
        return arch
    raise LowbitError(f"unknown architecture {spec!r}",
                      "use mlp:H1,H2,..., cnn[:C1,C2[:F1,...]] or vit[:key=value,...]")


def _arch_options(arch, options):
    """Apply the ``+`` options of an mlp or cnn spec (see :func:`parse_arch`)."""
    keys = {"pad": "padding", "stride": "stride"} if arch["kind"] == "cnn" else {}
    for option in options:
        key, eq, value = option.partition("=")
        if option == "res":
            arch["residual"] = True
        elif key in keys and eq and value.isdigit():
            arch[keys[key]] = int(value)
        else:
            allowed = "res" + (", pad=N, stride=N" if keys else "")
            raise LowbitError(f"bad {arch['kind']} option {option!r}", f"options: {allowed}")
    return arch


def image_shape(ds):
    """(H, W, C) of a dataset's images: flat grey images are square."""
    if ds.x_train.ndim == 4:
        return tuple(int(s) for s in ds.x_train.shape[1:])
    side = math.isqrt(ds.x_train.shape[1])
    if side * side != ds.x_train.shape[1]:
        raise LowbitError(f"dataset {ds.name!r} has {ds.x_train.shape[1]} pixels per image, not a square")
    return side, side, 1


INPUT_ENCODINGS = ("thermometer", "pixels")
"""The input encodings of the hardware setting: the thermometer code, or the integer pixels."""


def input_encoding(dataset, act, seed=0, data_root=None, encoding=None):
    """``(Dataset, encoding dict)`` for a setting: in the hardware setting the flow's thermometer
    code (the default), or with ``encoding="pixels"`` the integer pixels
    (:class:`lowbit.model.data.PixelInput`); float pixels in [0, 1] in the weights-only setting."""
    if encoding is not None and encoding not in INPUT_ENCODINGS:
        raise LowbitError(f"unknown input encoding {encoding!r}", f"use one of {', '.join(INPUT_ENCODINGS)}")
    if setting_of(act) == "hardware" and encoding == "pixels":
        ds = load_dataset(dataset, root=data_root, seed=seed)
        enc = PixelInput(int(ds.max_value).bit_length(), int(ds.max_value)).to_dict()
    elif setting_of(act) == "hardware":
        if dataset not in THERMOMETER_LEVELS:
            raise LowbitError(f"dataset {dataset!r} has no thermometer code for the hardware setting yet",
                              "train on the integer pixels: --input-encoding pixels")
        ds, enc = load_hardware_dataset(dataset, seed, data_root)
        enc = enc.to_dict()
    elif encoding is not None:
        raise LowbitError(f"--input-encoding {encoding} is for the hardware setting; with float activations "
                          "the first layer takes the float pixels",
                          f"drop --input-encoding {encoding}, or quantize the activations: --act-bits bipolar or K")
    else:
        ds = load_dataset(dataset, root=data_root, seed=seed)
        enc = {"encoding": "float", "max_value": int(ds.max_value)}
    return ds, {**enc, "image_shape": list(image_shape(ds))}


def encode_inputs(x, encoding, kind):
    """Encode integer images for a model: flat (N, features) for ``mlp``, (N, C, H, W) otherwise.

    The thermometer code of a pixel's channel c at level t is channel ``c*T + t`` of the image.
    """
    h, w, c = encoding["image_shape"]
    x = np.asarray(x).reshape(len(x), h * w * c)
    if encoding["encoding"] == "thermometer":
        x = Thermometer.from_dict(encoding)(x).astype(np.float32)
    elif encoding["encoding"] == "pixels":  # unscaled: the first layer's integer levels
        x = x.astype(np.float32)
    elif encoding["encoding"] == "float":
        x = x.astype(np.float32) / np.float32(encoding["max_value"])
    else:
        raise LowbitError(f"unknown input encoding {encoding['encoding']!r} in the checkpoint",
                          "re-create it with 'lowbit train'")
    if kind == "mlp":
        return x
    return np.ascontiguousarray(x.reshape(len(x), h, w, -1).transpose(0, 3, 1, 2))


def build_arch(partial, ds, encoding, weight_format, act, p):
    """The full ``arch`` dict for a dataset: the input shape and classes filled in."""
    a = dict(partial)
    h, w, _ = encoding["image_shape"]
    channels = encode_inputs(ds.x_train[:1], encoding, "cnn").shape[1]
    if a["kind"] == "mlp":
        a["in_features"] = channels * h * w
    else:
        a["in_shape"] = [channels, h, w]
    if a["kind"] == "vit" and "patch" not in a:
        if h % 4 or w % 4:
            raise LowbitError(f"the {h}x{w} images do not split into 4 x 4 patches",
                              "give the patch size: --arch vit:patch=N")
        a["patch"] = h // 4
    a.update(classes=int(ds.classes), weight_format=weight_format, act=act, p=p)
    if encoding["encoding"] == "pixels":
        a["input"] = f"u{encoding['bits']}"
    return a


def _checked_format(fmt, p):
    """Validate ``--format``/``--p``: returns ``(registry format or fp32, p)``."""
    if fmt == "tiled" or (fmt == "bipolar" and p is not None):
        if p is None:
            raise LowbitError("format 'tiled' needs the tile copy count", "pass --p, e.g. --p 4")
        return "bipolar", format_family("tiled").check(p)
    if p is not None:
        raise LowbitError(f"--p {p} is for tiled weights, not format {fmt!r}",
                          "drop --p or use --format tiled")
    if fmt == FLOAT_FORMAT:
        return fmt, None
    if fmt in FORMAT_FAMILIES:  # expq: trained as fp32, quantized after training
        raise LowbitError(f"format {fmt!r} is applied after training, not trained",
                          "train --format fp32, then 'lowbit quantize CKPT --bits K -o OUT' "
                          "(or 'lowbit eval CKPT --ptq-bits K')")
    weight_format(fmt)
    return fmt, None


def _check_tiles_are_whole_rows(model):
    """Before training: in the hardware setting each copy of a tiled layer's tile must be whole
    output channels (one scale per channel; :func:`lowbit.model.quant.row_scales`)."""
    from .model.quant import TiledQuantizer

    for name, module in model.named_modules():
        q = getattr(module, "quantizer", None)
        if isinstance(q, TiledQuantizer) and q.compressed and q.shape[0] % q.p:
            raise LowbitError(f"tiled layer {name!r} has {q.shape[0]} output channels, which its p = {q.p} copies "
                              "do not split into whole channels as the hardware needs",
                              f"use a --p that divides {q.shape[0]}, or a --min-compress-size above its "
                              f"{q.numel} weights so that it stays bipolar")


def train_model(path, *, arch="mlp:64,64", weight_format_name="bipolar", act="bipolar", p=None,
                dataset="digits", epochs=30, seed=0, lr=None, batch_size=None, data_root=None,
                resume=None, progress=True, keep_model=False, input_encoding_name=None,
                augment=None, teacher=None, head_format=None, min_compress_size=None):
    """Train (or resume) a model and write its checkpoint to ``path`` after every epoch.

    Parameters
    ----------
    path : path-like
        Checkpoint to write (atomically).
    arch : str or dict
        An architecture spec (:func:`parse_arch`) or a partial ``arch`` dict.
    weight_format_name : str
        A registry weight format, ``"tiled"`` (with ``p``) or ``"fp32"``.
    act : str
        ``"float"`` (weights-only setting), ``"bipolar"`` or ``"uK"`` (hardware setting).
    input_encoding_name : str, optional
        In the hardware setting, ``"thermometer"`` (the default) or ``"pixels"`` (:data:`INPUT_ENCODINGS`).
    augment : str, optional
        Image augmentation while training (:func:`parse_augment`), e.g. ``"flip,shift=2"``.
    head_format : str, optional
        The last layer's weight format, when it differs from ``weight_format_name`` (a
        higher-precision head, e.g. ``"levels17"``).
    min_compress_size : int, optional
        Tiled weights only: layers with fewer weights stay plain bipolar (the model's default,
        :data:`lowbit.model.quant.DEFAULT_MIN_COMPRESS_SIZE`, when None).
    teacher : path-like, optional
        A checkpoint of the same dataset to distill from (:func:`teacher_logits`), e.g. the
        fp32 twin of the network; recorded with its hash, which a resumed run checks.
    resume : path-like, optional
        A checkpoint written by this function; its architecture, formats, dataset, seed, learning
        rate and batch size are used, and training goes on up to ``epochs`` in total.
    keep_model : bool
        Also return the trained model and its metadata (``dataset``, ``input``).

    Returns
    -------
    dict
        ``test_accuracy``, ``final_loss``, ``epochs``, ``setting``, ``weight_memory_bytes``,
        ``bits_per_weight``; with ``keep_model``, ``(metrics, model, meta)``.
    """
    import torch

    from .model.arch import build_model
    from .model.checkpoint import is_lowbit_checkpoint, load_checkpoint, save_checkpoint
    from .model.train import DEFAULT_BATCH_SIZE, DEFAULT_LR, TrainState, evaluate, set_seed, train

    if not isinstance(epochs, int) or epochs < 1:
        raise LowbitError(f"epochs must be at least 1, not {epochs}")
    if teacher is not None and resume is None:
        _check_teacher_file(teacher)
    # Resuming writes the checkpoint it reads; any other input must stay as it is.
    same = resume is not None and Path(os.path.realpath(resume)) == Path(os.path.realpath(path))
    claim_output_file(path, inputs=(data_root, None if same else resume, teacher), owned=is_lowbit_checkpoint)
    if resume is not None:
        model, meta = load_checkpoint(resume)
        if "resume" not in meta or "training" not in meta:
            raise LowbitError(f"checkpoint {str(resume)!r} holds no resume state",
                              "resume a checkpoint written by 'lowbit train'")
        state = TrainState.from_dict(meta["resume"])
        cfg = meta["training"]
        a, enc = model.arch, meta["input"]
        dataset, seed = meta["dataset"]["name"], meta["dataset"]["seed"]
        lr, batch_size = cfg["lr"], cfg["batch_size"]
        augment, teacher_record = cfg.get("augment"), cfg.get("teacher")
        if teacher_record is not None:  # the teacher of the run is an input too
            claim_output_file(path, inputs=(teacher_record["path"],), owned=is_lowbit_checkpoint)
        ds = load_dataset(dataset, root=data_root, seed=seed)
    else:
        fmt, p = _checked_format(weight_format_name, p)
        act = parse_act(act)
        ds, enc = input_encoding(dataset, act, seed, data_root, input_encoding_name)
        partial = parse_arch(arch) if isinstance(arch, str) else dict(arch)
        a = build_arch(partial, ds, enc, fmt, act, p)
        if head_format is not None:  # checked with the architecture
            a["head_format"] = head_format
        if min_compress_size is not None:
            if p is None:
                raise LowbitError(f"a minimum compressed layer size ({min_compress_size}) is for tiled weights, "
                                  f"not format {weight_format_name!r}",
                                  "drop --min-compress-size or use --format tiled")
            if isinstance(min_compress_size, bool) or not isinstance(min_compress_size, int) or min_compress_size < 1:
                raise LowbitError(f"the minimum compressed layer size must be a positive integer, not "
                                  f"{min_compress_size!r}")
            a["min_compress_size"] = min_compress_size
        set_seed(seed)  # the initial weights too, not just the batches
        model = build_model(a)
        if setting_of(act) == "hardware":
            _check_tiles_are_whole_rows(model)
        state = None
        lr = DEFAULT_LR if lr is None else lr
        batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        augment = parse_augment(augment, a) if augment is not None else None
        teacher_record = None if teacher is None else {"path": str(Path(teacher).resolve()),
                                                       "sha256": sha256_file(teacher)}
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise LowbitError(f"the learning rate must be a positive number, not {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise LowbitError(f"the batch size must be an integer of at least 2, not {batch_size!r}")
    x_train = torch.from_numpy(encode_inputs(ds.x_train, enc, a["kind"]))
    teach = None if teacher_record is None else teacher_logits(teacher_record, dataset, seed, enc, a["kind"])
    formats = {"weights": a["weight_format"], "activations": a["act"], "p": a["p"]}
    if a.get("head_format"):
        formats["head"] = a["head_format"]
    training = {"epochs": epochs, "lr": float(lr), "batch_size": batch_size,
                "setting": setting_of(a["act"]), "augment": augment, "teacher": teacher_record}
    extra = {"dataset": {"name": dataset, "seed": seed}, "training": training}
    memory = weight_memory(model)

    def save(st, metrics):
        save_checkpoint(path, model, formats=formats, input_encoding=enc,
                        extra={**extra, "metrics": metrics, "resume": st.to_dict()})

    def on_epoch(st):
        save(st, {"epochs": st.epoch, "final_loss": st.losses[-1]})

    state = train(model, x_train, ds.y_train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  progress=progress, state=state, on_epoch=on_epoch, augment=augment, teacher=teach)
    acc, _ = evaluate(model, encode_inputs(ds.x_test, enc, a["kind"]), ds.y_test)
    metrics = {"test_accuracy": acc, "final_loss": state.losses[-1] if state.losses else None,
               "epochs": state.epoch, "setting": setting_of(a["act"]),
               "weight_memory_bytes": memory["bytes"], "bits_per_weight": memory["bits_per_weight"]}
    save(state, metrics)
    if keep_model:
        return metrics, model, {"dataset": extra["dataset"], "input": enc}
    return metrics


def parse_augment(text, arch):
    """``--augment`` for a network ``arch``: comma-separated ``flip`` (mirror left-right, half of
    the time) and ``shift=N`` (move by up to N pixels each way, less than half the image);
    returns ``{"flip": bool, "shift": int}``."""
    if arch["kind"] not in ("cnn", "vit"):
        raise LowbitError(f"augmentation flips and shifts images; an {arch['kind']} takes flat vectors",
                          "augment a cnn or vit, or drop --augment")
    side = min(arch["in_shape"][1:])
    most = (side - 1) // 2
    out, seen = {"flip": False, "shift": 0}, set()
    for item in str(text).split(","):
        key, eq, value = item.partition("=")
        if key in seen:
            raise LowbitError(f"augmentation {text!r} names {key!r} twice", "name each of flip and shift=N once")
        seen.add(key)
        if item == "flip":
            out["flip"] = True
        elif key == "shift" and eq and value.isascii() and value.isdigit() and 1 <= int(value) <= 8:
            out["shift"] = int(value)
        else:
            raise LowbitError(f"bad augmentation {item!r}", "use flip, shift=N (N = 1..8), or both: flip,shift=2")
    if out["shift"] > most:
        raise LowbitError(f"a shift of {out['shift']} pixels moves {side}x{side} images half out of sight",
                          f"shift by at most {most}: --augment shift={max(most, 1)}" if most else
                          "drop the shift")
    return out


def _check_teacher_file(teacher):
    if str(teacher) != "" and Path(teacher).is_dir():  # Path("") is the current folder
        raise LowbitError(f"teacher checkpoint {str(teacher)!r} is a folder", "pass a checkpoint file")
    if str(teacher) == "" or not Path(teacher).is_file():
        raise LowbitError(f"teacher checkpoint {str(teacher)!r} does not exist",
                          "pass a checkpoint written by 'lowbit train', e.g. the fp32 twin")


def teacher_logits(record, dataset, seed, encoding, kind):
    """The logits of the teacher checkpoint ``record["path"]`` as a function of a batch of the
    student's inputs (encoded by ``encoding`` for an architecture of ``kind``).

    The teacher must be of the same dataset and take the same inputs, or float pixels when the
    student takes the integer pixels (divided by the largest pixel value, as its encoding does).
    Its file must still have the recorded hash.
    """
    from .model.checkpoint import load_checkpoint

    path = record["path"]
    if not Path(path).is_file():
        raise LowbitError(f"teacher checkpoint {path!r}, which this training distills from, is gone",
                          "restore it at that path, or train again without --resume")
    if sha256_file(path) != record["sha256"]:
        raise LowbitError(f"teacher checkpoint {path!r} has changed since this training started",
                          "restore it, or train again without --resume")
    try:
        model, meta = load_checkpoint(path)
    except LowbitError as e:
        raise LowbitError(f"teacher checkpoint {path!r} cannot be read: {e.message}",
                          "pass a checkpoint written by 'lowbit train'") from None
    theirs = meta.get("dataset") or {}
    # The seed splits digits into training and test images; the file datasets have a fixed split.
    if theirs.get("name") != dataset or (dataset == "digits" and theirs.get("seed") != seed):
        raise LowbitError(f"teacher checkpoint {path!r} was trained on {theirs}, not on the "
                          f"{dataset!r} training split of this run (seed {seed})",
                          "distill from a network trained on the same training images")
    mine = {k: v for k, v in encoding.items() if k != "image_shape"}
    theirs = {k: v for k, v in meta["input"].items() if k != "image_shape"}  # now its encoding
    if theirs == mine:
        scale = 1.0
    elif mine.get("encoding") == "pixels" and theirs.get("encoding") == "float":
        scale = 1.0 / mine["max_value"]
    else:
        raise LowbitError(f"teacher checkpoint {path!r} takes inputs encoded as {theirs}, which cannot be "
                          f"made from the student's {mine}",
                          "distill from a teacher on the student's encoding, or from a float one "
                          "(--act-bits float) for a student on --input-encoding pixels")
    if kind == "mlp" and model.arch["kind"] != "mlp":
        raise LowbitError(f"teacher checkpoint {path!r} is a {model.arch['kind']}, which takes images, and the "
                          "student is an mlp, which takes flat vectors",
                          "distill an mlp from an mlp; a cnn or vit student may learn from either")
    model.eval()
    flat = model.arch["kind"] == "mlp" and kind != "mlp"

    def logits(xb):
        x = xb * scale
        if flat:  # an image (N, C, H, W) as the (h, w, c) vector an MLP takes
            x = x.permute(0, 2, 3, 1).reshape(len(x), -1)
        return model(x)

    return logits


def apply_ptq(model, bits, method="exponential", q=None):
    """Post-training quantization of a float (``fp32``) model: ``(model, per-layer info)``; see
    :func:`lowbit.model.ptq.ptq`."""
    from .model.ptq import ptq

    if model.arch.get("weight_format") != FLOAT_FORMAT:
        raise LowbitError(f"post-training quantization needs a float model, not weight format "
                          f"{model.arch.get('weight_format')!r}", "train one with --format fp32")
    return ptq(model, bits, method, q)


def quantize_checkpoint(ckpt, out, *, bits, method="exponential", q=None):
    """Write the post-training quantized form of a float checkpoint to ``out`` (atomically).

    The result is a checkpoint like any other: ``lowbit eval`` and, with quantized activations,
    ``lowbit compile`` take it. It holds no resume state (a quantized model is not trained on).

    Returns
    -------
    dict
        ``format`` (``expq`` or ``linear-ptq``), ``bits``, ``layers``: per layer its ``q``, ``F``
        and hardware ``format``; ``integer_exact`` (whether the model compiles to hardware).

    Raises
    ------
    LowbitError
        On a checkpoint that is not float, bits outside 2..6, a q outside (0, 1) or too small to
        fit the fixed point, or an output that cannot be written; nothing is written then.
    """
    from .model.checkpoint import is_lowbit_checkpoint, load_checkpoint, save_checkpoint
    from .model.ptq import PTQ_FORMATS, check_ptq_arguments

    # Every check that needs no model comes first, before the work.
    check_ptq_arguments(bits, method, q)
    claim_output_file(out, inputs=(ckpt,), owned=is_lowbit_checkpoint)
    model, meta = load_checkpoint(ckpt)
    quantized, layers = apply_ptq(model, bits, method, q)
    summary = {name: {"q": info.q, "fraction_bits": info.fraction_bits, "format": info.format,
                      "correlation": info.correlation} for name, info in layers.items()}
    formats = {**meta["formats"], "weights": PTQ_FORMATS[method], "ptq_bits": bits}
    extra = {k: v for k, v in meta.items()
             if k not in ("lowbit_version", "arch", "formats", "input", "resume", "metrics")}
    save_checkpoint(out, quantized, formats=formats, input_encoding=meta["input"],
                    extra={**extra, "ptq": {"method": method, "bits": bits, "q": q, "layers": summary}})
    return {"format": PTQ_FORMATS[method], "bits": bits, "layers": summary,
            "integer_exact": bool(getattr(quantized, "integer_exact", False))}


def evaluate_model(ckpt, *, data_root=None, ptq_bits=None, ptq_method="exponential"):
    """Test accuracy of a checkpoint, optionally after post-training quantization.

    Returns
    -------
    dict
        ``accuracy``, ``images``, ``dataset``, ``format``, ``setting``, ``bits_per_weight`` and
        ``weight_memory_bytes`` (after PTQ when it is applied).
    """
    from .model.checkpoint import load_checkpoint

    model, meta = load_checkpoint(ckpt)
    return evaluate_loaded(model, meta, data_root=data_root, ptq_bits=ptq_bits, ptq_method=ptq_method,
                           name=ckpt)


def evaluate_loaded(model, meta, *, data_root=None, ptq_bits=None, ptq_method="exponential", name=None):
    """:func:`evaluate_model` of a model in memory, with its checkpoint metadata ``meta``
    (``dataset`` and ``input``); ``name`` names the checkpoint in errors."""
    from .model.train import evaluate

    if "dataset" not in meta or "input" not in meta:
        raise LowbitError(f"checkpoint {str(name)!r} does not name its dataset and input encoding",
                          "re-create it with 'lowbit train'")
    a = model.arch
    fmt = "tiled" if a.get("p") else a["weight_format"]
    ptq_layers = None
    quantized_bits = a["ptq"]["bits"] if a.get("ptq") else None  # a checkpoint from 'lowbit quantize'
    if ptq_bits is not None:
        model, ptq_layers = apply_ptq(model, ptq_bits, ptq_method)
        fmt = "expq" if ptq_method == "exponential" else "linear-ptq"
    dataset, seed = meta["dataset"]["name"], meta["dataset"]["seed"]
    ds = load_dataset(dataset, root=data_root, seed=seed)
    enc = {"image_shape": list(image_shape(ds)), **meta["input"]}
    acc, _ = evaluate(model, encode_inputs(ds.x_test, enc, a["kind"]), ds.y_test)
    memory = weight_memory(model, ptq_layers)
    return {"accuracy": acc, "images": int(len(ds.y_test)), "dataset": dataset, "format": fmt,
            "setting": setting_of(a["act"]), "bits_per_weight": memory["bits_per_weight"],
            "weight_memory_bytes": memory["bytes"],
            "ptq_bits": ptq_bits if ptq_bits is not None else quantized_bits}


def _weight_layers(model):
    from torch import nn

    if hasattr(model, "weight_layers"):
        return list(model.weight_layers)
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight_memory(model, ptq_layers=None):
    """Weight storage of a model: ``{"bits", "bytes", "weights", "bits_per_weight"}``.

    Per layer: ``storage_bits`` of its registry format per weight (ternary: 2 bits); tiled layers
    N/p tile bits plus p float32 alphas; ``binary01`` layers one bit per weight and per bias;
    float layers 32 bits; post-training quantized layers (fixed levels, or float layers named in
    ``ptq_layers``) the PTQ bit budget. ``bits_per_weight`` is the information per weight averaged
    over the network: log2 of the level count (ternary: 1.58), so ``bits`` can exceed
    ``bits_per_weight * weights``.
    Scales, biases of other formats, and normalization parameters are not weights and are not
    counted.
    """
    from .model.layers import (BinaryNormConv2d, BinaryNormEmbedding, BinaryNormLinear, FixedLevelsConv2d,
                               FixedLevelsLinear)

    names = {id(m): n for n, m in model.named_modules()}
    total_bits = info_bits = weights = 0.0
    for layer in _weight_layers(model):
        n = layer.weight.numel()
        if isinstance(layer, (BinaryNormLinear, BinaryNormConv2d, BinaryNormEmbedding)):
            n += 0 if getattr(layer, "bias", None) is None else layer.bias.numel()
            stored = info = n
        elif isinstance(layer, (FixedLevelsLinear, FixedLevelsConv2d)):
            stored = info = n * layer.bits  # the PTQ bit budget: sign and magnitude code
        elif hasattr(layer, "integer_weights"):
            if layer.tiled and layer.copies > 1:
                stored = info = n / layer.copies + layer.copies * ALPHA_BITS
            else:
                stored, info = n * layer.format.storage_bits, n * layer.format.bits_per_weight
        elif ptq_layers is not None and names.get(id(layer)) in ptq_layers:
            stored = info = n * ptq_layers[names[id(layer)]].bits
        else:
            stored = info = n * 32
        total_bits += stored
        info_bits += info
        weights += n
    return {"bits": int(math.ceil(total_bits)), "bytes": int(math.ceil(total_bits / 8)),
            "weights": int(weights), "bits_per_weight": info_bits / weights if weights else 0.0}


def known_formats():
    """Every ``--format`` value: the registry's, the families and the float baseline."""
    return [FLOAT_FORMAT, *WEIGHT_FORMATS, *FORMAT_FAMILIES]
