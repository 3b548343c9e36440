"""The MLP builder: blocks of QuantLinear -> BatchNorm -> sign, then a QuantLinear -> BatchNorm head.

The head's BatchNorm is a per-class affine map: the hardware emits the integer accumulators of the last
layer and the host applies that map (or just the argmax, when every scale is positive).
"""

from torch import nn

from .layers import BipolarAct, QuantLinear

__all__ = ["LowbitMLP", "build_model"]


class LowbitMLP(nn.Module):
    """A low-bit multilayer perceptron.

    Parameters
    ----------
    in_features : int
        Length of the (already encoded) input vector.
    hidden : list of int
        Widths of the hidden layers.
    classes : int
        Number of outputs.
    weight_format : str
        Weight format of every layer.
    """

    def __init__(self, in_features, hidden, classes, weight_format="bipolar"):
        super().__init__()
        widths = [in_features, *hidden, classes]
        self.arch = {"kind": "mlp", "in_features": in_features, "hidden": list(hidden),
                     "classes": classes, "weight_format": weight_format}
        self.linears = nn.ModuleList(
            QuantLinear(a, b, weight_format) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in widths[1:])
        self.act = BipolarAct()

    def forward(self, x):
        return self.trace(x)[-1]

    def trace(self, x):
        """All layer outputs: the ±1 activations of each hidden layer, then the logits."""
        outs = []
        for i, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            x = norm(linear(x))
            if i < len(self.linears) - 1:
                x = self.act(x)
            outs.append(x)
        return outs

    def clip_latent(self):
        for linear in self.linears:
            linear.clip_latent()


def build_model(arch):
    """Build a model from the ``arch`` dictionary stored in a checkpoint."""
    if arch.get("kind") != "mlp":
        from lowbit.errors import LowbitError
        raise LowbitError(f"unknown architecture kind {arch.get('kind')!r}", "supported kinds: mlp")
    return LowbitMLP(arch["in_features"], arch["hidden"], arch["classes"], arch["weight_format"])
