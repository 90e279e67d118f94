"""What one export run does, parsed once by the CLI; torch-free so ``--help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.contract import DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD


@dataclass(frozen=True)
class ExportOptions:
    """What to export and the thresholds each graph must meet; built once by the CLI."""

    source: str | Path  # a path, or a name jepa.hub resolves (Hub id, short name, URL)
    out: Path
    fp16: bool = False
    int8: bool = False
    uint8_input: bool = False
    triton: Path | None = None
    triton_max_batch: int = 32
    images: Path | None = None
    opset: int = DEFAULT_OPSET
    encoder: str = "target_encoder"
    num_heads: int | None = None
    fp32_max_rel: float = 1e-4
    fp16_max_rel: float = 1e-2
    int8_min_cos: float = 0.99
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
