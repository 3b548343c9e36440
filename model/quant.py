"""Quantizers with straight-through estimators.

Sign convention, shared with the IR and the hardware: ``sign(x) = +1 if x >= 0 else -1``. Zero maps to
+1 so that a bipolar value always fits one bit (1 = +1, 0 = -1).
"""

import torch

__all__ = ["bipolar_sign", "BipolarWeightSTE", "BipolarActSTE"]


def bipolar_sign(x):
    """Forward-only sign with zero mapped to +1."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class BipolarWeightSTE(torch.autograd.Function):
    """Weights: sign in the forward pass, identity in the backward pass (straight-through).

    The latent float weights are clipped to [-1, 1] after each optimizer step (see
    ``QuantLinear.clip_latent``), which keeps them where the straight-through gradient is meaningful.
    """

    @staticmethod
    def forward(ctx, w):
        return bipolar_sign(w)

    @staticmethod
    def backward(ctx, grad):
        return grad


class BipolarActSTE(torch.autograd.Function):
    """Activations: sign forward, hardtanh gradient backward (pass where |x| <= 1, zero elsewhere)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return bipolar_sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)
