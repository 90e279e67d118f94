"""Encoder -> ONNX graph with named outputs, a dynamic batch axis and only TensorRT-safe operators.

Exporter choice: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript). Its graph for our
ViT is plain ``Conv``, ``MatMul``, ``Softmax``, ``LayerNormalization``, ``Erf`` (exact GELU) and
shape ops; the legacy TorchScript exporter also works but recomputes the attention scale per
layer (``Shape``/``Cast``/``Sqrt``). The dynamo exporter emits opset 18 natively and its down-
conversion to 17 fails on ``ReduceMean``'s axes input, so 18 is our default (ONNX Runtime and
TensorRT >= 8.6 read it). The spatial size is fixed to the model's ``image_size``, so the position
table is a constant in the graph; only the batch axis is dynamic. A V-JEPA 2 graph takes clips
``[batch, frames_per_clip, 3, S, S]`` (its RoPE tables become constants the same way); the service
feeds images to it as still clips.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from export.contract import DEFAULT_OPSET, EXPORTER, EXTERNAL_DATA_THRESHOLD, MAX_BATCH, TENSORRT_SAFE_OPS
from jepa.contract import GRAPH_OUTPUT_NAMES, INPUT_NAME, OUTPUTS, UINT8_INPUT_NAME
from jepa.heads import EmbeddingHeads
from jepa.vit import Encoder

__all__ = ["EXPORTER", "ExportError", "export_onnx", "graph_ops"]

Dtype = Literal["float32", "float16"]


class ExportError(RuntimeError):
    """The exporter produced no graph, or one we refuse (unsupported operators, failed check)."""


class GraphHead(nn.Module):
    """:class:`~jepa.heads.EmbeddingHeads` with every output, as the tuple the exporter names by
    :data:`~jepa.contract.GRAPH_OUTPUT_NAMES` (an exported graph's outputs are positional).

    With ``dtype=float16`` the encoder runs in half precision while the graph's inputs and outputs
    stay float32 (casts inside), and the pooling is taken in float32. With ``uint8_input`` the
    input is raw RGB ``images [B, S, S, 3]`` and the model's normalisation runs inside."""

    def __init__(self, encoder: Encoder, dtype: Dtype = "float32", uint8_input: bool = False) -> None:
        super().__init__()
        self.uint8_input = uint8_input
        self.heads = EmbeddingHeads(encoder, frozenset(OUTPUTS), uint8_input=uint8_input, dtype=getattr(torch, dtype))

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        result = self.heads(pixels)
        return tuple(result.get(o) for o in OUTPUTS)


def build_head(encoder: Encoder, *, dtype: Dtype = "float32", uint8_input: bool = False) -> GraphHead:
    """The module that is exported; works on a copy so the caller's encoder keeps its dtype."""
    return GraphHead(copy.deepcopy(encoder).eval(), dtype, uint8_input).eval()


def example_input(encoder: Encoder, batch: int = 2, *, uint8_input: bool = False) -> Tensor:
    """Images ``[B, 3, S, S]``, or for a video model clips ``[B, T, 3, S, S]`` of ``frames_per_clip``."""
    config = encoder.config
    if uint8_input:
        return torch.randint(0, 256, (batch, *config.pixel_shape), dtype=torch.uint8)
    return torch.randn(batch, *config.input_shape)


def export_onnx(
    encoder: Encoder,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    *,
    dtype: Dtype = "float32",
    uint8_input: bool = False,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> Path:
    """Export ``encoder`` to ``out_path`` and check the result; returns ``out_path``.

    Weights larger than ``external_data_threshold`` bytes go to ``<out_path>.data`` beside the
    graph. Raises :class:`ExportError` when the exporter fails, ``onnx.checker`` (full check)
    rejects the graph, or the graph uses an operator outside :data:`TENSORRT_SAFE_OPS`.
    """
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    out_path = Path(out_path)
    head = build_head(encoder, dtype=dtype, uint8_input=uint8_input)
    name = UINT8_INPUT_NAME if uint8_input else INPUT_NAME
    weight_bytes = sum(p.numel() * p.element_size() for p in head.state_dict().values())
    _run_exporter(head, example_input(encoder, uint8_input=uint8_input), name, opset, out_path,
                  external_data=weight_bytes > external_data_threshold)  # fmt: skip
    check_graph(out_path)
    return out_path


def _run_exporter(
    head: nn.Module, example: Tensor, input_name: str, opset: int, out_path: Path, *, external_data: bool
) -> None:
    """``torch.onnx.export`` (dynamo) with a dynamic batch axis, saved to ``out_path``."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    _quiet_exporter_logs()
    with warnings.catch_warnings():
        # torch.export's pytree deprecation notices come from inside torch; nothing for our users to act on
        warnings.simplefilter("ignore", FutureWarning)
        try:
            program = torch.onnx.export(
                head,
                (example,),
                None,
                input_names=[input_name],
                output_names=list(GRAPH_OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"pixels": {0: batch}},  # GraphHead.forward's argument
                optimize=True,
                verbose=False,
            )
            program.save(out_path, external_data=external_data)
        except Exception as e:  # the exporter raises many unrelated types; name the step and re-raise typed
            raise ExportError(f"torch.onnx.export failed for {out_path.name}: {type(e).__name__}: {e}") from e


def check_graph(path: Path) -> None:
    """``onnx.checker`` with full shape inference, then the operator allow-list."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{path.name} fails onnx.checker: {e}") from e
    unsupported = graph_ops(path) - TENSORRT_SAFE_OPS
    if unsupported:
        raise ExportError(f"{path.name} uses operators outside the TensorRT-safe list: {sorted(unsupported)}")


def graph_ops(path: Path) -> set[str]:
    """Operator types in the main graph (and any local functions), without loading external weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    for function in model.functions:
        ops |= {node.op_type for node in function.node}
    return ops


def _quiet_exporter_logs() -> None:
    """The exporter warns once per missing torchvision op; irrelevant here and noisy in a CLI."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
