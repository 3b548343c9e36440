"""Low-bit layers."""

import torch
from torch import nn

from lowbit.formats import weight_format as lookup_weight_format

from .quant import BipolarActSTE, BipolarWeightSTE

__all__ = ["QuantLinear", "BipolarAct"]


class QuantLinear(nn.Linear):
    """A bias-free linear layer whose weights are quantized to a low-bit format in the forward pass.

    Parameters
    ----------
    in_features, out_features : int
        Layer shape.
    weight_format : str
        A name from ``lowbit.formats.WEIGHT_FORMATS``.

    Raises
    ------
    LowbitError
        If the format is unknown.
    """

    def __init__(self, in_features, out_features, weight_format="bipolar"):
        super().__init__(in_features, out_features, bias=False)
        self.format = lookup_weight_format(weight_format)
        with torch.no_grad():
            # Small latent weights: every sign can still flip early in training.
            self.weight.uniform_(-0.1, 0.1)

    def quantized_weight(self):
        return BipolarWeightSTE.apply(self.weight)

    def forward(self, x):
        return nn.functional.linear(x, self.quantized_weight())

    @torch.no_grad()
    def clip_latent(self):
        self.weight.clamp_(-1.0, 1.0)

    def extra_repr(self):
        return f"{super().extra_repr()}, format={self.format.name}"


class BipolarAct(nn.Module):
    """Sign activation onto {-1, +1}, with a hardtanh gradient."""

    def forward(self, x):
        return BipolarActSTE.apply(x)
