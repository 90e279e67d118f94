"""Export-only constants: opset, exporter, size limits and the operators every target accepts.

The names every exported graph shares with its consumers (file names, input and output names, the
``export.json`` record) are the core's: :mod:`jepa.contract`. Torch-free, so the CLI's ``--help``
stays fast.
"""

from __future__ import annotations

DEFAULT_OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True)"
# Protobuf cannot serialise a model over 2 GiB; above this many bytes of weights we write external data.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
MAX_BATCH = 4096

# Operators every target accepts: ONNX Runtime's CPU/CUDA/TensorRT providers and TensorRT's ONNX
# parser (its operator support matrix). An exported graph using anything else is refused.
TENSORRT_SAFE_OPS = frozenset(
    {
        "Add", "Cast", "Concat", "Constant", "Conv", "Div", "Erf", "Expand", "Flatten", "Gather", "Gelu",
        "Gemm", "Identity", "LayerNormalization", "MatMul", "Mul", "ReduceMean", "Reshape", "Shape",
        "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
