"""The MLP: hidden stages QuantLinear -> BatchNorm -> activation, then a QuantLinear -> BatchNorm head.

The head's BatchNorm is a per-class affine map: the hardware emits the integer accumulators of the last
layer and the host applies that map (or just the argmax, when every scale is positive).
"""

from .arch import LowbitNet

__all__ = ["LowbitMLP"]


class LowbitMLP(LowbitNet):
    """A low-bit multilayer perceptron (``arch`` kind ``"mlp"``; see :mod:`lowbit.model.arch`).

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
    act : str
        ``"bipolar"``, ``"u1"``..``"u8"``, or ``"float"`` (ReLU).
    p : int or None
        Tile copies (tiled bipolar weights).
    """

    def __init__(self, in_features, hidden, classes, weight_format="bipolar", act="bipolar", p=None):
        super().__init__({"kind": "mlp", "in_features": in_features, "hidden": list(hidden),
                          "classes": classes, "weight_format": weight_format, "act": act, "p": p})

    @property
    def linears(self):
        return self.weight_layers
