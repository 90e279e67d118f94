"""The three networks of a run, initialised as the official training path initialises them.

The official ``VisionTransformer`` constructor draws truncated-normal weights and then divides
each block's residual projections (``attn.proj``, ``mlp.fc2``) by ``sqrt(2 * layer)``; but
``src/helper.py:init_model`` then re-initialises every ``Linear`` (and ``LayerNorm``) of the
encoder and the predictor, so official training starts *without* that rescaling (the patch
embedding's convolution and the predictor's mask token keep the constructor's draws). That is
our default; ``meta.depth_rescale_init: true`` keeps the rescaling instead.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from jepa.config import ModelConfig, Preprocess, Provenance, architecture_for
from jepa.vit import Encoder, Predictor, init_weights
from training.config import TrainConfig


def init_like_meta(module: nn.Module, depth_rescale: bool, std: float = 0.02) -> None:
    """The model's own initialisation, then (unless ``depth_rescale``) ``init_model``'s second pass."""
    init_weights(module, std=std)
    if depth_rescale:
        return
    for m in module.modules():  # the second pass: each Linear and LayerNorm on its own (no blocks, no rescaling)
        if isinstance(m, nn.Linear | nn.LayerNorm):
            init_weights(m, std=std)


def build_models(cfg: TrainConfig) -> tuple[Encoder, Predictor, Encoder]:
    """Context encoder, predictor and target encoder (a copy of the encoder), seeded by ``meta.seed``."""
    torch.manual_seed(cfg.meta.seed)
    overrides = {"depth": cfg.meta.encoder_depth} if cfg.meta.encoder_depth else {}
    arch = architecture_for(cfg.size, patch_size=cfg.mask.patch_size, image_size=cfg.data.crop_size, **overrides)
    config = ModelConfig(
        name=cfg.run_name,
        architecture=arch,
        preprocess=Preprocess(resize="shorter_crop", resize_size=arch.image_size, interpolation="bicubic"),
        provenance=Provenance(source="training.pretrain", training_run=cfg.run_name),
    )
    encoder = Encoder(config)
    predictor = Predictor(arch.grid, arch.embed_dim, cfg.meta.pred_emb_dim, cfg.meta.pred_depth, arch.num_heads)
    init_like_meta(encoder, cfg.meta.depth_rescale_init)
    init_like_meta(predictor, cfg.meta.depth_rescale_init)
    target = copy.deepcopy(encoder).requires_grad_(False)
    return encoder, predictor, target


def count_parameters(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
