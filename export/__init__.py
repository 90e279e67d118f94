"""Encoder -> ONNX graphs (fp32, fp16, int8, uint8 input), verified against PyTorch, and a Triton repository.

``python -m export SOURCE --out DIR`` is the entry point; :func:`export.onnx.export_onnx` is the
library function underneath. Importing this package imports nothing heavy.
"""
