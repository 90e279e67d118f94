"""Step counts, learning rate, weight decay and EMA momentum as pure functions of the step.

Nothing here keeps a counter, so resuming at step ``s`` needs only ``s`` (the official
schedulers are stateful and must be replayed step by step after a restart).

:func:`plan_steps` computes the step counts once per run (:class:`StepPlan`); :func:`make_schedule`
turns them into the numbers the curves need (:class:`Schedule`), also once. With
``optimization.schedule: meta`` (the default) the values are the official ones: its schedulers
``step()`` before the forward pass, so training step ``s`` uses the value the official scheduler
computes for ``s + 1`` (``offset = 1``), and its step counts use ``int()``. ``from_start`` trains
step ``s`` with the value of ``s`` and rounds the counts (our earlier behaviour, kept as an option).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.config import OptimizationConfig


@dataclass(frozen=True)
class StepPlan:
    """How many steps a run trains, warms up for, and lays its curves over."""

    total_steps: int
    warmup_steps: int
    schedule_steps: int  # the official T_max: ipe_scale * total, so the curves may end after training does
    ema_span: float  # the official momentum denominator: ipe * epochs * ipe_scale (a float)


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
    offset: int = 0  # 1: step s uses the value of s + 1 (the official schedulers step first)
    ema_span: float | None = None  # momentum denominator; default schedule_steps


def plan_steps(o: OptimizationConfig, steps_per_epoch: int, total_steps: int | None = None) -> StepPlan:
    """Step counts from ``epochs x steps_per_epoch``, or from ``total_steps`` (a time budget's or a
    resumed run's), with warm-up keeping its share ``warmup / epochs`` of the steps."""
    count = int if o.schedule == "meta" else round
    total = total_steps or o.total_steps or o.epochs * steps_per_epoch
    if o.warmup_steps is not None:
        warmup = o.warmup_steps
    elif total_steps is None and o.total_steps is None:
        warmup = count(o.warmup * steps_per_epoch)
    else:
        warmup = count(total * o.warmup / o.epochs)
    span = total * o.ipe_scale
    return StepPlan(total, min(warmup, total), max(1, count(span)), max(1.0, span))


def make_schedule(o: OptimizationConfig, plan: StepPlan) -> Schedule:
    return Schedule(
        schedule_steps=plan.schedule_steps,
        warmup_steps=plan.warmup_steps,
        start_lr=o.start_lr,
        lr=o.lr,
        final_lr=o.final_lr,
        weight_decay=o.weight_decay,
        final_weight_decay=o.final_weight_decay,
        ema_start=o.ema[0],
        ema_end=o.ema[1],
        offset=1 if o.schedule == "meta" else 0,
        ema_span=plan.ema_span,
    )


def _cosine(progress: float, start: float, end: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(step: int, s: Schedule) -> float:
    """Linear warm-up ``start_lr -> lr`` over ``warmup_steps``, then cosine ``lr -> final_lr``."""
    t = step + s.offset
    if t < s.warmup_steps:
        return s.start_lr + (s.lr - s.start_lr) * t / s.warmup_steps
    span = max(1, s.schedule_steps - s.warmup_steps)
    return _cosine((t - s.warmup_steps) / span, s.lr, s.final_lr)


def weight_decay(step: int, s: Schedule) -> float:
    """Cosine ``weight_decay -> final_weight_decay`` (0.04 -> 0.4 in the paper) over all steps."""
    return _cosine((step + s.offset) / max(1, s.schedule_steps), s.weight_decay, s.final_weight_decay)


def ema_momentum(step: int, s: Schedule) -> float:
    """Linear ``ema_start -> ema_end`` (0.996 -> 1.0) over all steps; the official momentum is drawn
    after the optimiser step, so it has no offset."""
    progress = min(max(step / (s.ema_span or max(1, s.schedule_steps)), 0.0), 1.0)
    return s.ema_start + (s.ema_end - s.ema_start) * progress
