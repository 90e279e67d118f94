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

# V-JEPA 2's releases (facebookresearch/vjepa2 ``src/hub/backbones.py``): ViT-L/16, ViT-H/16 and
# ViT-g/16, the last as ``vit_giant_xformers`` with 22 heads of 64 (I-JEPA's giant has 16 of 88).
VJEPA2_SIZES: dict[str, dict[str, int]] = {
    "tiny": SIZES["tiny"],
    "small": SIZES["small"],
    "base": SIZES["base"],
    "large": SIZES["large"],
    "huge": SIZES["huge"],
    "giant": {**SIZES["giant"], "num_heads": 22},
}
VJEPA2_HEADS_BY_WIDTH: dict[int, int] = {spec["embed_dim"]: spec["num_heads"] for spec in VJEPA2_SIZES.values()}

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


class Temporal(_Frozen):
    """The time axis of a video model (V-JEPA 2): how clips are cut into tokens and sampled.

    ``tubelet_size`` frames form one token in time; ``frames_per_clip`` and ``frame_step`` say
    which frames of a video make the clip the service embeds (``frames_per_clip`` frames,
    ``frame_step`` apart, centred in the video); ``trained_frames`` is the clip length the model
    was pretrained with (64 for Meta's releases; informational, RoPE has no table to fit).
    ``image_frames`` is how many copies of a still image form the clip it is fed as.
    """

    tubelet_size: int = Field(default=2, gt=0)
    trained_frames: int = Field(default=64, gt=0)
    frames_per_clip: int = Field(default=16, gt=0)
    frame_step: int = Field(default=4, gt=0)
    image_frames: int = Field(default=16, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Temporal:
        for name in ("frames_per_clip", "image_frames"):
            if getattr(self, name) % self.tubelet_size:
                raise ValueError(f"{name} {getattr(self, name)} is not a multiple of tubelet_size {self.tubelet_size}")
        return self


Family = Literal["ijepa", "vjepa2"]


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
    family: Family = "ijepa"
    architecture: Architecture
    temporal: Temporal | None = None
    preprocess: Preprocess = Preprocess()
    provenance: Provenance = Provenance()

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if (self.family == "vjepa2") != (self.temporal is not None):
            need = "needs" if self.family == "vjepa2" else "takes no"
            raise ValueError(f"family {self.family!r} {need} temporal geometry")
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

    @property
    def is_video(self) -> bool:
        return self.temporal is not None

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """One input's prepared pixels, uint8: ``[S, S, 3]``, or a video model's clip ``[T, S, S, 3]``."""
        s = self.image_size
        return (s, s, 3) if self.temporal is None else (self.temporal.frames_per_clip, s, s, 3)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input as the model (and its exported graph) takes it: ``[3, S, S]`` or ``[T, 3, S, S]``."""
        s = self.image_size
        return (3, s, s) if self.temporal is None else (self.temporal.frames_per_clip, 3, s, s)

    @property
    def token_grid(self) -> tuple[int, ...]:
        """The output tokens' grid: ``(H', W')``, or ``(T', H', W')`` for a clip of ``frames_per_clip``."""
        if self.temporal is None:
            return self.grid
        return (self.temporal.frames_per_clip // self.temporal.tubelet_size, *self.grid)


def architecture_for(
    size: str, *, patch_size: int, image_size: int, family: Family = "ijepa", **overrides: int
) -> Architecture:
    """The architecture of a named size; ``overrides`` change single numbers (e.g. ``depth``)."""
    sizes = VJEPA2_SIZES if family == "vjepa2" else SIZES
    if size not in sizes:
        raise ConfigError(f"unknown size {size!r}; valid sizes: {', '.join(sizes)}")
    spec = {**sizes[size], **overrides}
    return Architecture(patch_size=patch_size, image_size=image_size, **spec)


def heads_for_width(width: int, family: Family = "ijepa") -> int:
    """Head count of an official checkpoint, which stores none; raises for widths not in the family's sizes."""
    table = VJEPA2_HEADS_BY_WIDTH if family == "vjepa2" else HEADS_BY_WIDTH
    if width not in table:
        known = ", ".join(f"{w}->{h}" for w, h in table.items())
        raise ConfigError(f"cannot infer num_heads for width {width} (known: {known}); pass num_heads explicitly")
    return table[width]


def vjepa2_preprocess(crop: int) -> Preprocess:
    """V-JEPA 2's evaluation transform: shorter side to ``int(crop * 256 / 224)`` (bilinear), centre
    crop ``crop``, ImageNet mean/std (``evals/*/eval.py`` and transformers' ``VJEPA2VideoProcessor``)."""
    return Preprocess(resize="shorter_crop", resize_size=int(crop * 256 / 224), interpolation="bilinear")
