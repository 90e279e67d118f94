"""Model configuration: architecture, preprocessing and provenance, as stored in ``config.json``.

One typed object describes a model everywhere (training, export, service). It is parsed once
from JSON and rejects unknown keys, so a misspelt field fails loudly instead of silently
falling back to a default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jepa.errors import ConfigError

# width -> (depth, heads, mlp_dim) of the official I-JEPA / ViT sizes.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_dim": 768},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_dim": 1536},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_dim": 4096},
    "huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "mlp_dim": 5120},
    # ViT-g uses an MLP ratio of 48/11: 1408 * 48 / 11 = 6144.
    "giant": {"embed_dim": 1408, "depth": 40, "num_heads": 16, "mlp_dim": 6144},
}

# The official checkpoints store no head count; it follows from the width.
HEADS_BY_WIDTH: dict[int, int] = {spec["embed_dim"]: spec["num_heads"] for spec in SIZES.values()}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Frozen):
    """The encoder's shape. ``image_size`` is the size it was trained at (the position table's grid)."""

    embed_dim: int = Field(gt=0)
    depth: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    mlp_dim: int = Field(gt=0)
    patch_size: int = Field(gt=0)
    image_size: int = Field(gt=0)
    in_chans: int = 3
    norm_eps: float = 1e-6
    qkv_bias: bool = True

    @model_validator(mode="after")
    def _check(self) -> Architecture:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        return self

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw


class Preprocess(_Frozen):
    """How a PIL image becomes the model's input; applied identically by every stage.

    ``resize="squash"`` resizes straight to ``image_size`` x ``image_size`` (what the Hugging Face
    I-JEPA processor does); ``"shorter_crop"`` resizes the shorter side to ``resize_size`` and
    centre-crops ``image_size``.
    """

    resize: Literal["squash", "shorter_crop"] = "shorter_crop"
    resize_size: int | None = None
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class Provenance(_Frozen):
    """Where the weights came from; ``weights_sha256`` is filled in when a model directory is saved."""

    source: str = "random-init"
    training_run: str | None = None
    weights_sha256: str | None = None


class ModelConfig(_Frozen):
    """Everything ``config.json`` of a model directory holds."""

    format: Literal["jepa-encoder"] = "jepa-encoder"
    format_version: Literal[1] = 1
    name: str = "jepa-encoder"
    architecture: Architecture
    preprocess: Preprocess = Preprocess()
    provenance: Provenance = Provenance()

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        resize_size = self.preprocess.resize_size
        if self.preprocess.resize == "shorter_crop" and resize_size is not None and resize_size < self.image_size:
            raise ValueError(f"preprocess.resize_size {resize_size} is smaller than image_size {self.image_size}")
        return self

    @property
    def embed_dim(self) -> int:
        return self.architecture.embed_dim

    @property
    def patch_size(self) -> int:
        return self.architecture.patch_size

    @property
    def image_size(self) -> int:
        return self.architecture.image_size

    @property
    def grid(self) -> tuple[int, int]:
        return self.architecture.grid


def architecture_for(size: str, *, patch_size: int, image_size: int, **overrides: int) -> Architecture:
    """The architecture of a named size; ``overrides`` change single numbers (e.g. ``depth``)."""
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    spec = {**SIZES[size], **overrides}
    return Architecture(patch_size=patch_size, image_size=image_size, **spec)


def heads_for_width(width: int) -> int:
    """Head count of an official checkpoint, which stores none; raises for widths not in SIZES."""
    if width not in HEADS_BY_WIDTH:
        known = ", ".join(f"{w}->{h}" for w, h in HEADS_BY_WIDTH.items())
        raise ConfigError(f"cannot infer num_heads for width {width} (known: {known}); pass num_heads explicitly")
    return HEADS_BY_WIDTH[width]
