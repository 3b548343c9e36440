"""Checkpoints: written atomically, carrying the architecture, formats and input encoding."""

import io
from pathlib import Path

import torch

from lowbit.core.version import __version__
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_bytes
from lowbit.core.schema import DICT, NATURAL, POSITIVE, TEXT, Check, Record, list_of, one_of, validate

from .arch import build_model
from .data import DATASET_NAMES

__all__ = ["save_checkpoint", "load_checkpoint", "is_lowbit_checkpoint"]

_FIX = "re-create it with 'lowbit train'"
_INPUT = Record({"encoding": one_of("thermometer", "pixels", "float"), "image_shape": list_of(POSITIVE, length=3)})
# What a checkpoint holds beside its weights; the architecture is checked by building it.
CHECKPOINT = Record({
    "lowbit_version": TEXT, "arch": DICT, "formats": DICT, "input": _INPUT, "state_dict": DICT,
    "dataset": Record({"name": one_of(*DATASET_NAMES), "seed": NATURAL}),
    "training": Record({"lr": Check("a learning rate in (0, 1]", lambda v: 0 < v <= 1), "batch_size": POSITIVE}),
    "metrics": DICT, "resume": DICT,
}, defaults={"dataset": None, "training": None, "metrics": None, "resume": None})
_THERMOMETER = Record({"thresholds": list_of(NATURAL, least=1)})
_PIXELS = Record({"bits": Check("1..8 bits", lambda v: isinstance(v, int) and 1 <= v <= 8), "max_value": POSITIVE})


def save_checkpoint(path, model, *, formats, input_encoding, extra=None):
    """Write ``model`` and its metadata to ``path`` atomically (temporary file, then rename).

    ``input_encoding`` is checked first, so a checkpoint that could not be loaded back is never written.
    """
    _check_input(dict(input_encoding), what="input_encoding", fix="pass the record that "
                 "'lowbit.training.input_encoding' returns (encoding, image_shape, thresholds)")
    payload = {
        "lowbit_version": __version__,
        "arch": model.arch,
        "formats": dict(formats),
        "input": dict(input_encoding),
        "state_dict": model.state_dict(),
        **(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _check_input(record, *, what, fix):
    validate(record, _INPUT, what=what, fix=fix)
    if record["encoding"] == "thermometer":
        validate(record, _THERMOMETER, what=what, fix=fix)
    if record["encoding"] == "pixels":
        validate(record, _PIXELS, what=what, fix=fix)


def is_lowbit_checkpoint(path):
    """Whether ``path`` is a checkpoint lowbit wrote (which a new one may replace)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # anything unreadable is not ours to replace
        return False
    return isinstance(payload, dict) and "lowbit_version" in payload


def load_checkpoint(path):
    """Load a checkpoint; returns ``(model in eval mode, metadata dict)``.

    Raises
    ------
    LowbitError
        If the file is missing, truncated, corrupt or not a lowbit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"checkpoint {str(path)!r} does not exist",
                          "train one with 'lowbit train' or check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LowbitError(f"checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__})",
                          "re-create it with 'lowbit train'") from None
    if not isinstance(payload, dict) or "lowbit_version" not in payload:
        raise LowbitError(f"{str(path)!r} is not a lowbit checkpoint (missing lowbit_version)",
                          "pass a checkpoint written by 'lowbit train'")
    what = f"checkpoint {str(path)!r}"
    validate(payload, CHECKPOINT, what=what, fix=_FIX)
    _check_input(payload["input"], what=what + ", field input", fix=_FIX)
    try:
        model = build_model(payload["arch"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise LowbitError(f"{what}: its architecture cannot be built ({type(e).__name__}: {e})", _FIX) from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        # torch's message spans lines: one line of it, which names the weights.
        detail = " ".join(str(e).split()).replace("Error(s) in loading state_dict for LowbitNet: ", "")
        raise LowbitError(f"checkpoint {str(path)!r} does not match its architecture: {detail}",
                          "re-create it with 'lowbit train'") from None
    for name, t in payload["state_dict"].items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise LowbitError(f"checkpoint {str(path)!r} has non-finite values in {name}",
                              "retrain the model; NaN or infinite parameters cannot be quantized")
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
