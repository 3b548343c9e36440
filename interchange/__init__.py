"""Models in from QONNX and FINN-ONNX: read with qonnx, lowered to lowbit's integer IR, checked
against qonnx's own execution of the model."""
