"""One I-JEPA training step and the EMA update of the target encoder.

``train_step`` predicts the target encoder's layer-normed tokens at the target blocks from the
context tokens, takes a smooth-L1 (beta 1) loss, checks it is finite before touching any
weight, then steps AdamW and moves the target encoder towards the context encoder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa.layers import gather_tokens
from training.masks import MaskBatch


class NonFiniteLossError(FloatingPointError):
    """The loss (or a weight) became NaN or inf; nothing is saved, the last good checkpoint stays."""

    def __init__(self, step: int, value: float, what: str = "loss") -> None:
        self.step, self.value = step, value
        super().__init__(f"{what} is {value} at step {step}; stopping without saving (last good checkpoint kept)")


def check_finite(step: int, *modules: nn.Module) -> None:
    """Raise :class:`NonFiniteLossError` if any parameter is NaN/inf (run before every save)."""
    for module in modules:
        for name, p in module.named_parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLossError(step, float("nan"), what=f"parameter {name!r}")


@dataclass
class Models:
    """The three networks; ``encoder`` and ``predictor`` may be DDP-wrapped."""

    encoder: nn.Module
    predictor: nn.Module
    target_encoder: nn.Module


@dataclass(frozen=True)
class StepStats:
    step: int
    loss: float
    lr: float
    weight_decay: float
    momentum: float


def param_groups(*modules: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on matrices only; biases, norms and 1-d parameters get none."""
    decay, no_decay = [], []
    for module in modules:
        for _, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def set_hparams(opt: torch.optim.Optimizer, lr: float, wd: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
        if group.get("apply_wd", True):
            group["weight_decay"] = wd


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * online``, parameter by parameter."""
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - m)


def jepa_loss(models: Models, images: Tensor, masks: MaskBatch) -> Tensor:
    """Smooth-L1 between predicted and layer-normed target tokens at the target blocks."""
    B, M, Kt = masks.targets.shape
    with torch.no_grad():
        h = models.target_encoder(images)  # [B, N, D]
        h = F.layer_norm(h, h.shape[-1:])
        targets = gather_tokens(h, masks.targets.reshape(B, M * Kt)).reshape(B, M, Kt, -1)
    context = models.encoder(images, masks.context)  # [B, Kc, D]
    pred = models.predictor(context, masks.context, masks.targets)  # [B, M, Kt, D]
    return F.smooth_l1_loss(pred.float(), targets.float(), beta=1.0)


def train_step(
    models: Models,
    images: Tensor,
    masks: MaskBatch,
    opt: torch.optim.Optimizer,
    step: int,
    lr: float,
    wd: float,
    momentum: float,
    amp: bool = False,
) -> StepStats:
    """One optimiser step at ``step`` with the given schedule values; raises on a non-finite loss."""
    set_hparams(opt, lr, wd)
    device = images.device
    masks = MaskBatch(masks.context.to(device, non_blocking=True), masks.targets.to(device, non_blocking=True))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with autocast:
        loss = jepa_loss(models, images, masks)
    value = float(loss.detach())
    if not torch.isfinite(torch.tensor(value)):
        opt.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, value)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    online = models.encoder.module if hasattr(models.encoder, "module") else models.encoder
    ema_update(models.target_encoder, online, momentum)
    return StepStats(step=step, loss=value, lr=lr, weight_decay=wd, momentum=momentum)
