"""ONNX Runtime dynamic int8 quantisation of an exported fp32 graph, for CPU serving.

Dynamic quantisation stores MatMul weights as int8 and quantises activations per batch at run
time, so it needs no calibration data. Only ``MatMul`` is quantised: the patch-embedding ``Conv``
is a tiny share of the compute, and ``ConvInteger`` is missing from several execution providers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

QUANTIZED_OPS = ("MatMul",)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, *, external_data: bool = False) -> Path:
    """Write the dynamically quantised copy of ``fp32_path`` to ``out_path`` and return it.

    The graph first goes through ONNX Runtime's recommended pre-processing (shape inference and
    graph optimisation), in a temporary directory beside ``out_path``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(
            Path(fp32_path),
            prepared,
            save_as_external_data=external_data,
            all_tensors_to_one_file=True,
            external_data_location="prepared.onnx.data",
        )
        quantize_dynamic(
            prepared,
            out_path,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=False,
            weight_type=QuantType.QInt8,
            use_external_data_format=external_data,
        )
    return out_path
