"""Reading a cleaned ONNX model's graph for the lowering: its constants and attributes, which
node reads a tensor, and where a model tensor's elements sit in the IR (:class:`Layout`); and
what an IR tensor stands for in the model (:class:`Meaning`)."""

from dataclasses import dataclass

import numpy as np

from lowbit.core.errors import LowbitError

__all__ = ["Meaning", "Layout", "LAYERS", "ELEMENTWISE", "SHAPE_OPS", "FIX", "scalar", "attr",
           "only_consumer", "residual_add", "is_output", "through_shapes"]

# The layers (a FINN-ONNX XnorPopcountMatMul is streamlined to a MatMul first).
LAYERS = ("MatMul", "Gemm", "Conv")
ELEMENTWISE = ("Mul", "Div", "Add", "Sub", "BatchNormalization", "Relu", "Clip", "Identity")
SHAPE_OPS = ("Reshape", "Flatten", "Transpose", "Identity")
FIX = "see the README's 'Models in' for the layer patterns lowbit imports"


@dataclass(frozen=True)
class Meaning:
    """An IR tensor and the model tensor it stands for: ``model = a * ir + b``, elementwise."""

    ir: str
    tensor: str
    a: float
    b: float
    layout: str = "flat"  # "chw": the model's tensor is (C, H, W) per example, the IR's (H, W, C)
    # For an activation: its layer's IR accumulator op and ONNX output tensor, with the model value
    # of the output as ``gain * acc + offset`` per channel (see :func:`layer_segment`).
    layer: dict = None

    def to_dict(self):
        d = {"ir": self.ir, "tensor": self.tensor, "a": self.a, "b": self.b, "layout": self.layout}
        return d if self.layer is None else {**d, "layer": self.layer}


def scalar(model, node, index, what):
    v = model.get_initializer(node.input[index])
    if v is None or np.asarray(v).size != 1:
        raise LowbitError(f"node {node.name!r}: its {what} must be one constant, not "
                          f"{'a computed tensor' if v is None else f'an array of shape {np.shape(v)}'}",
                          "export per-tensor quantizers for activations and inputs")
    return float(np.asarray(v).reshape(()))


def attr(node, name, default):
    from qonnx.util.basic import get_by_name

    a = get_by_name(node.attribute, name)
    if a is None:
        return default
    import onnx

    v = onnx.helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def only_consumer(model, tensor, skip=None):
    """The one node that reads ``tensor`` (``skip``, a residual add, aside), or None."""
    users = [u for u in model.find_consumers(tensor) or [] if u is not skip]
    if len(users) > 1:
        raise LowbitError(f"tensor {tensor!r} feeds {len(users)} nodes "
                          f"({', '.join(u.name for u in users)}); lowbit imports chains and residual "
                          "blocks", "branch only into a residual Add that sums the block's input")
    return users[0] if users else None


def residual_add(model, tensor):
    """The Add of a skip connection that reads ``tensor`` beside another consumer, or None."""
    users = model.find_consumers(tensor) or []
    adds = [u for u in users if u.op_type == "Add" and all(model.get_initializer(i) is None for i in u.input)]
    return adds[0] if len(users) == 2 and len(adds) == 1 else None


def is_output(model, tensor):
    return any(o.name == tensor for o in model.graph.output)


class Layout:
    """Where the elements of a model tensor sit in the IR tensor of shape ``ir_shape``:
    ``pos[i]`` (in the model's per-example shape) is the IR's flat index of model element ``i``."""

    def __init__(self, ir_shape, pos):
        self.ir_shape, self.pos = tuple(int(v) for v in ir_shape), pos

    @classmethod
    def of(cls, shape):
        """The IR's own layout of a model tensor of per-example ``shape``: a (C, H, W) feature map
        is (H, W, C) in the IR, anything else is a vector."""
        if len(shape) == 3:
            c, h, w = shape
            return cls((h, w, c), np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1))
        n = int(np.prod(shape))
        return cls((n,), np.arange(n).reshape(shape))

    @property
    def name(self):
        """``"chw"`` or ``"flat"`` if this is the IR's own layout (:meth:`of`) of the tensor, else None."""
        own = Layout.of(self.pos.shape)
        if own.ir_shape == self.ir_shape and np.array_equal(own.pos, self.pos):
            return "chw" if self.pos.ndim == 3 else "flat"
        return None

    def through(self, model, node):
        """The layout after a shape op (Reshape, Flatten, Transpose, Identity)."""
        if node.op_type == "Transpose":
            perm = list(attr(node, "perm", []))
            if not perm or perm[0] != 0:
                raise LowbitError(f"node {node.name!r}: a Transpose that moves the batch axis is not "
                                  "imported", FIX)
            return Layout(self.ir_shape, self.pos.transpose([p - 1 for p in perm[1:]]))
        if node.op_type == "Identity":
            return self
        shape = model.get_tensor_shape(node.output[0])
        if not shape or shape[0] != 1:
            raise LowbitError(f"node {node.name!r}: a {node.op_type} to shape {shape} changes the batch "
                              "of 1", "keep the batch axis first, of size 1")
        return Layout(self.ir_shape, self.pos.reshape(shape[1:]))


def through_shapes(model, tensor, layout, passed=None, skip=None):
    """Follow ``tensor`` through shape ops: ``(the next other node or None, its input, layout)``;
    the shape ops are appended to ``passed``; ``skip`` (a residual add) does not count."""
    node = only_consumer(model, tensor, skip)
    while node is not None and node.op_type in SHAPE_OPS:
        layout = layout.through(model, node)
        if passed is not None:
            passed.append(node)
        tensor, node = node.output[0], only_consumer(model, node.output[0])
    return node, tensor, layout
