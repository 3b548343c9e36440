"""The model's input code, read from its first nodes: an input quantizer, a thermometer code, or
the integer pixels themselves; each becomes the encoding lowbit applies to a dataset's images
(:mod:`lowbit.model.data`) and the IR's input type."""

import numpy as np

from lowbit.compiler.ir import BIPOLAR, ValueType
from lowbit.core.errors import LowbitError

from .quantizers import quantizer_levels
from .tensors import LAYERS, Layout, Meaning, attr, only_consumer, scalar, through_shapes

__all__ = ["input_quantizer", "pixel_input", "thermometer_input"]


def input_quantizer(model, max_value, input_encoding=None):
    """The input's shape ops and quantizer: ``(encoding record, IR input type, its meaning, the
    quantizer's output tensor, its layout)``. Images stream in their own (h, w) order, so the
    shape ops before the quantizer may reshape but not reorder, and a feature map has one channel.

    The quantizer's scale may come first, as a Div of the input into a Quant of scale 1 (as lowbit
    writes FINN-style models, whose layers compute on the integers): ``round(x / s)`` either way.
    A model with no input quantizer takes the integer pixels (:func:`pixel_input`) when its input
    is annotated with an integer datatype, or ``input_encoding`` is ``"pixels"``.
    """
    from lowbit.model.data import QuantInput
    from qonnx.custom_op.general.intquant import max_int, min_int

    tensor = model.graph.input[0].name
    shape = model.get_tensor_shape(tensor)
    pixels = int(np.prod(shape[1:]))
    node, tensor, order = through_shapes(model, tensor, Layout((pixels,), np.arange(pixels).reshape(shape[1:])))
    annotated = model.get_tensor_datatype(model.graph.input[0].name)
    if node is not None and node.op_type in LAYERS and (input_encoding == "pixels" or annotated.is_integer()):
        return pixel_input(model, node, tensor, order, max_value)
    if input_encoding is not None:
        raise LowbitError(f"--input-encoding {input_encoding} is for models that take the pixels into their "
                          f"first layer; this one reaches {'nothing' if node is None else node.op_type} first",
                          "drop --input-encoding: the model's own input code is read from it")
    if node is not None and node.op_type == "Mul":
        return thermometer_input(model, node, order, max_value)
    divisor = None
    if node is not None and node.op_type == "Div" and node.input[0] == tensor:
        divisor, div = scalar(model, node, 1, "divisor"), node
        node = only_consumer(model, node.output[0])
    if node is None or node.op_type not in ("Quant", "BipolarQuant"):
        found = "nothing" if node is None else f"a {node.op_type} ({node.name!r})"
        raise LowbitError(f"the input is not quantized: it reaches {found} before any Quant or "
                          "BipolarQuant", "quantize the model's input (e.g. a QuantIdentity first), or "
                          "pass --input-encoding to say how lowbit should encode images")
    if divisor is not None and (divisor <= 0 or scalar(model, node, 1, "scale") != 1):
        raise LowbitError(f"node {div.name!r}: the input is divided by {divisor:g} before a quantizer "
                          "whose scale is not 1", "give the input quantizer its scale, or divide by it "
                          "first into a quantizer of scale 1")
    _same_order(order)
    layout = Layout.of(order.pos.shape)
    levels = quantizer_levels(model, node)
    if levels.count == 2 and levels.offset == -levels.step / 2:  # sign(x / s) = sign(x)
        enc = QuantInput("bipolar", 1, levels.step / 2, 0.0, -1, 1, max_value)
        return enc, BIPOLAR, Meaning("input", node.output[0], enc.scale, 0.0, layout.name), node.output[0], layout
    zp = scalar(model, node, 2, "zero point")
    if zp != 0:
        raise LowbitError(f"input quantizer {node.name!r} has zero point {zp:g}",
                          "export the input quantizer with zero point 0")
    signed, narrow, bits = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0)), \
        int(scalar(model, node, 3, "bit width"))
    lo, hi = int(min_int(signed, narrow, bits)), int(max_int(signed, narrow, bits))
    kind = "int" if signed else "uint"
    enc = QuantInput(kind, bits, levels.step if divisor is None else divisor, 0.0, lo, hi, max_value)
    return enc, ValueType(kind, bits), Meaning("input", node.output[0], levels.step, 0.0, layout.name), \
        node.output[0], layout


def _same_order(order):
    """Refuse an input that is reordered before its code, or has more than one channel."""
    if not np.array_equal(order.pos.reshape(-1), np.arange(order.pos.size)):
        raise LowbitError("the model reorders its input pixels before quantizing them (a Transpose?)",
                          "quantize the input as it comes, in (C, H, W) or flat order")
    if order.pos.ndim == 3 and order.pos.shape[0] != 1:
        raise LowbitError(f"the model's input has {order.pos.shape[0]} channels; lowbit imports "
                          "one-channel images", "train on grey-level images (digits, MNIST, Fashion-MNIST)")


def pixel_input(model, layer, tensor, order, max_value):
    """The integer pixels straight into the first ``layer``: what :func:`input_quantizer` returns,
    the encoding being a :class:`PixelInput` of the annotated width (or the pixels' own)."""
    from lowbit.model.data import PixelInput

    name = model.graph.input[0].name
    dt = model.get_tensor_datatype(name)
    if dt.is_integer():
        if dt.min() > 0 or dt.max() < max_value:
            raise LowbitError(f"the model's input {name!r} is annotated {dt.name}, but the dataset's pixels "
                              f"run from 0 to {max_value}", "annotate it with an unsigned type that holds them "
                              f"(UINT{int(max_value).bit_length()}), or quantize the input in the model")
        bits = int(dt.bitwidth()) if dt.min() == 0 else int(dt.bitwidth()) - 1
    else:
        bits = int(max_value).bit_length()
    _same_order(order)
    layout = Layout.of(order.pos.shape)
    enc = PixelInput(bits, int(max_value))
    return enc, ValueType("uint", bits), Meaning("input", name, 1.0, 0.0, layout.name), tensor, layout


def thermometer_input(model, mul, order, max_value):
    """A thermometer code of the input, as lowbit writes it: the image times ones (one copy per
    level, on a new axis) into a MultiThreshold with one threshold per copy and a bipolar output.
    Returns what :func:`input_quantizer` returns, the encoding being a :class:`Thermometer`."""
    from lowbit.model.data import Thermometer, model_floats

    ones = model.get_initializer(mul.input[1])
    fix = "quantize the input with a Quant, or write the thermometer as `lowbit export --qonnx` does"
    if ones is None or not np.all(np.asarray(ones) == 1):
        raise LowbitError(f"node {mul.name!r}: the input is scaled by a Mul before it is quantized", fix)
    before = tuple(order.pos.shape)
    after = tuple(model.get_tensor_shape(mul.output[0])[1:])
    channel_axis = 0 if len(after) == 3 else len(after) - 1  # the copies: qonnx's NCHW and NWC
    mt = only_consumer(model, mul.output[0])
    if len(before) != len(after) or before[channel_axis] != 1 or mt is None or mt.op_type != "MultiThreshold" \
            or any(a != b for i, (a, b) in enumerate(zip(before, after)) if i != channel_axis):
        raise LowbitError(f"node {mul.name!r}: the input is copied to shape {after}, but not into a "
                          "MultiThreshold along one new axis", fix)
    copies = after[channel_axis]
    thr = model.get_initializer(mt.input[1])
    if thr is None or thr.shape != (copies, 1):
        raise LowbitError(f"node {mt.name!r}: a thermometer needs one threshold per copy of the input, "
                          f"along the copies' axis", fix)
    levels = quantizer_levels(model, mt)
    if levels.count != 2:
        raise LowbitError(f"node {mt.name!r}: a thermometer's output has two levels, bipolar or {{0, 1}}", fix)
    _same_order(order)
    # Each threshold as the least pixel value that reaches it, in the model's own float32.
    floats = model_floats(np.arange(max_value + 1), max_value)
    reached = floats[None, :] >= np.asarray(thr, np.float32).reshape(-1, 1)
    pixel = np.where(reached.any(axis=1), reached.argmax(axis=1), max_value + 1)
    enc = Thermometer(tuple(int(v) for v in pixel))
    layout = Layout.of(after)
    return enc, BIPOLAR, levels.meaning("input", mt.output[0], layout.name), mt.output[0], layout
