"""Learning rate, weight decay and EMA momentum as pure functions of the step.

Nothing here keeps a counter, so resuming at step ``s`` needs only ``s`` (the official
schedulers are stateful and must be replayed step by step after a restart).
``schedule_steps`` is the length the curves are laid over (the official ``ipe_scale`` can
stretch it beyond the steps actually trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """The numbers every schedule needs, in steps."""

    schedule_steps: int
    warmup_steps: int
    start_lr: float
    lr: float
    final_lr: float
    weight_decay: float
    final_weight_decay: float
    ema_start: float
    ema_end: float


def _cosine(progress: float, start: float, end: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(step: int, s: Schedule) -> float:
    """Linear warm-up ``start_lr -> lr`` over ``warmup_steps``, then cosine ``lr -> final_lr``."""
    if step < s.warmup_steps:
        return s.start_lr + (s.lr - s.start_lr) * step / s.warmup_steps
    span = max(1, s.schedule_steps - s.warmup_steps)
    return _cosine((step - s.warmup_steps) / span, s.lr, s.final_lr)


def weight_decay(step: int, s: Schedule) -> float:
    """Cosine ``weight_decay -> final_weight_decay`` (0.04 -> 0.4 in the paper) over all steps."""
    return _cosine(step / max(1, s.schedule_steps), s.weight_decay, s.final_weight_decay)


def ema_momentum(step: int, s: Schedule) -> float:
    """Linear ``ema_start -> ema_end`` (0.996 -> 1.0) over all steps."""
    progress = min(max(step / max(1, s.schedule_steps), 0.0), 1.0)
    return s.ema_start + (s.ema_end - s.ema_start) * progress
