"""Shared helpers for the tests of trained-model export."""

import torch


@torch.no_grad()
def random_batchnorm(model, seed):
    """Random BatchNorm statistics and affine parameters (scales of both signs) in every stage,
    so that thresholds land all over each channel's range."""
    g = torch.Generator().manual_seed(seed)
    for stage in model.stages:
        n = stage.norm
        n.running_mean.copy_(torch.rand(n.num_features, generator=g) * 6 - 3)
        n.running_var.copy_(torch.rand(n.num_features, generator=g) * 3 + 0.5)
        n.weight.data.copy_(torch.rand(n.num_features, generator=g) * 3 - 1.5)
        n.bias.data.copy_(torch.rand(n.num_features, generator=g) * 2 - 1)
