"""Reading an ONNX model: the checks a file must pass, then qonnx's cleanup and shape inference.

Every refusal names the problem and the fix (:class:`LowbitError`), before anything is written.
"""

from pathlib import Path

from lowbit.core.errors import LowbitError

__all__ = ["read_onnx", "source_name", "SUPPORTED_OPS", "QUANTIZERS", "OPSETS"]

# The op types the importer lowers (see lowbit.interchange.lower), by role.
QUANTIZERS = ("Quant", "BipolarQuant", "MultiThreshold", "Sign", "Trunc")
SUPPORTED_OPS = (*QUANTIZERS, "MatMul", "Gemm", "XnorPopcountMatMul", "Conv", "MaxPool", "BatchNormalization", "Mul", "Div",
                 "Add", "Sub", "Relu", "Clip", "Pad", "Reshape", "Flatten", "Transpose", "Identity")
# Default-domain opsets the importer and qonnx's execution are known to handle.
OPSETS = (9, 21)
# The node property that keeps a node's name from the file: qonnx's cleanup renames every node
# (``MatMul_0``, ...), and the IR names its ops after the file's names where it can.
SOURCE_NAME = "lowbit.source_name"


def _fail(path, problem, fix):
    raise LowbitError(f"{str(path)!r}: {problem}", fix)


def read_onnx(path):
    """Load, check and clean the ONNX model at ``path``; returns a qonnx ``ModelWrapper``.

    Raises
    ------
    LowbitError
        If the file is missing or not ONNX, its opset is out of range, its input shape is dynamic,
        or it holds an op the importer does not lower.
    """
    import onnx  # only for importing models
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    if not path.is_file():
        _fail(path, "does not exist", "check the path of the .onnx file")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError, and others for other damage
        _fail(path, f"is not an ONNX model ({type(e).__name__})",
              "pass a .onnx file, e.g. one written by brevitas.export.export_qonnx")
    if not proto.graph.node:
        _fail(path, "is not an ONNX model (it has no graph nodes)",
              "pass a .onnx file, e.g. one written by brevitas.export.export_qonnx")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSETS[0] <= opset <= OPSETS[1]:
        _fail(path, f"uses ONNX opset {opset}, outside the supported {OPSETS[0]}..{OPSETS[1]}",
              f"export with opset_version between {OPSETS[0]} and {OPSETS[1]}")
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        _fail(path, f"has {len(inputs)} graph inputs, not one", "export a model with a single image input")
    dims = inputs[0].type.tensor_type.shape.dim
    if not dims or any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims):
        shown = [d.dim_param or d.dim_value if d.HasField("dim_value") or d.dim_param else "?" for d in dims]
        _fail(path, f"input {inputs[0].name!r} has a dynamic shape {shown}",
              "export with a fixed input shape, e.g. a batch of 1 (dynamic_axes off)")
    for node in proto.graph.node:
        prop = node.metadata_props.add()
        prop.key, prop.value = SOURCE_NAME, node.name
    try:
        model = cleanup_model(ModelWrapper(proto)).transform(InferShapes())
    except Exception as e:  # qonnx's own errors on graphs it cannot clean
        _fail(path, f"could not be cleaned by qonnx ({type(e).__name__}: {e})",
              "check that the model runs with onnxruntime or qonnx's execute_onnx")
    left = [n for n in model.graph.node if n.op_type not in SUPPORTED_OPS]
    if left:
        n = left[0]
        _fail(path, f"node {n.name!r} is a {n.op_type}, which lowbit cannot lower",
              f"supported ops: {', '.join(SUPPORTED_OPS)}")
    return model


def source_name(node):
    """The name ``node`` had in the file (before qonnx's cleanup renamed it)."""
    return next((p.value for p in node.metadata_props if p.key == SOURCE_NAME), node.name)
