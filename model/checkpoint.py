"""Checkpoints: written atomically, carrying the architecture, formats and input encoding."""

import io
from pathlib import Path

import torch

from lowbit.core.version import __version__
from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_bytes

from .arch import build_model

__all__ = ["save_checkpoint", "load_checkpoint"]

_REQUIRED = ("lowbit_version", "arch", "formats", "input", "state_dict")


def save_checkpoint(path, model, *, formats, input_encoding, extra=None):
    """Write ``model`` and its metadata to ``path`` atomically (temporary file, then rename)."""
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
    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        missing = [k for k in _REQUIRED if not isinstance(payload, dict) or k not in payload]
        raise LowbitError(f"{str(path)!r} is not a lowbit checkpoint (missing {', '.join(missing)})",
                          "pass a checkpoint written by 'lowbit train'")
    model = build_model(payload["arch"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise LowbitError(f"checkpoint {str(path)!r} does not match its architecture: {e}",
                          "re-create it with 'lowbit train'") from None
    for name, t in payload["state_dict"].items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise LowbitError(f"checkpoint {str(path)!r} has non-finite values in {name}",
                              "retrain the model; NaN or infinite parameters cannot be quantized")
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
