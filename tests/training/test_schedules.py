"""Schedules: shapes of the curves, the official step-ahead values and int() counts, and purity."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from training.config import OptimizationConfig
from training.schedules import Schedule, ema_momentum, learning_rate, make_schedule, plan_steps, weight_decay

S = Schedule(schedule_steps=1000, warmup_steps=100, start_lr=2e-4, lr=1e-3, final_lr=1e-6,
             weight_decay=0.04, final_weight_decay=0.4, ema_start=0.996, ema_end=1.0)  # fmt: skip


def test_lr_warmup_then_cosine():
    assert learning_rate(0, S) == pytest.approx(2e-4)
    assert learning_rate(50, S) == pytest.approx(6e-4)
    assert learning_rate(100, S) == pytest.approx(1e-3)
    assert learning_rate(550, S) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert learning_rate(1000, S) == pytest.approx(1e-6)
    lrs = [learning_rate(s, S) for s in range(100, 1001)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_weight_decay_cosine_up():
    assert weight_decay(0, S) == pytest.approx(0.04)
    assert weight_decay(500, S) == pytest.approx(0.22)
    assert weight_decay(1000, S) == pytest.approx(0.4)
    assert weight_decay(5000, S) == pytest.approx(0.4)


def test_momentum_linear():
    assert ema_momentum(0, S) == pytest.approx(0.996)
    assert ema_momentum(250, S) == pytest.approx(0.997)
    assert ema_momentum(1000, S) == pytest.approx(1.0)


def test_pure_functions_of_step():
    """Values depend on the step alone: visiting steps in a random order, repeatedly, and between
    calls on another schedule gives exactly the values of one in-order pass (a schedule with a
    hidden counter, as the official ones have, fails this)."""
    other = Schedule(50, 5, 1.0, 2.0, 0.0, 0.1, 0.2, 0.9, 1.0, offset=1)
    steps = list(range(0, 1200, 7))
    in_order = {s: (learning_rate(s, S), weight_decay(s, S), ema_momentum(s, S)) for s in steps}
    shuffled = steps * 2
    random.Random(0).shuffle(shuffled)
    for s in shuffled:
        learning_rate(s % 50, other), weight_decay(s % 50, other)
        assert (learning_rate(s, S), weight_decay(s, S), ema_momentum(s, S)) == in_order[s]
    assert len({v for v, _, _ in in_order.values()}) > 100, "the lr must actually change with the step"
    assert not math.isnan(learning_rate(0, Schedule(1, 0, 0, 1, 0, 0, 0, 0, 1)))


class OfficialWarmupCosine:
    """The official stateful schedulers (src/utils/schedulers.py), written out from their formulas:
    ``step()`` increments its counter first, then computes lr and weight decay."""

    def __init__(self, warmup: int, t_max: int, start_lr, ref_lr, final_lr, ref_wd, final_wd) -> None:
        self.warmup, self.t_max, self.n = warmup, t_max, 0
        self.start_lr, self.ref_lr, self.final_lr, self.ref_wd, self.final_wd = (
            start_lr,
            ref_lr,
            final_lr,
            ref_wd,
            final_wd,
        )

    def step(self) -> tuple[float, float]:
        self.n += 1
        if self.n < self.warmup:
            lr = self.start_lr + self.n / max(1, self.warmup) * (self.ref_lr - self.start_lr)
        else:
            progress = (self.n - self.warmup) / max(1, self.t_max - self.warmup)
            lr = max(
                self.final_lr, self.final_lr + (self.ref_lr - self.final_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            )
        wd = self.final_wd + (self.ref_wd - self.final_wd) * 0.5 * (1 + math.cos(math.pi * self.n / self.t_max))
        wd = min(self.final_wd, wd) if self.final_wd > self.ref_wd else max(self.final_wd, wd)
        return lr, wd


@pytest.mark.parametrize(
    ("epochs", "warmup", "ipe", "ipe_scale"), [(10, 0.35, 13, 1.0), (3, 1, 97, 1.25), (2, 0, 5, 1.0)]
)
def test_meta_schedule_matches_the_official_stateful_schedulers(epochs, warmup, ipe, ipe_scale):
    o = OptimizationConfig(epochs=epochs, warmup=warmup, ipe_scale=ipe_scale)
    plan = plan_steps(o, ipe)
    assert plan.warmup_steps == int(warmup * ipe) and plan.schedule_steps == int(ipe_scale * epochs * ipe)
    s = make_schedule(o, plan)
    ref = OfficialWarmupCosine(int(warmup * ipe), int(ipe_scale * epochs * ipe), o.start_lr, o.lr, o.final_lr,
                               o.weight_decay, o.final_weight_decay)  # fmt: skip
    for step in range(plan.total_steps):
        lr, wd = ref.step()  # the official loop steps its schedulers before the forward pass
        assert learning_rate(step, s) == pytest.approx(lr, rel=1e-12, abs=1e-15)
        assert weight_decay(step, s) == pytest.approx(wd, rel=1e-12)
        # the official momentum generator yields ema0 + i * (ema1 - ema0) / (ipe * epochs * ipe_scale) at step i
        assert ema_momentum(step, s) == pytest.approx(0.996 + step * 0.004 / (ipe * epochs * ipe_scale), rel=1e-12)


def test_meta_counts_use_int_and_from_start_rounds():
    """warmup 0.35 epochs of 13 steps is 4.55 steps: the official int() gives 4, rounding gives 5."""
    meta = plan_steps(OptimizationConfig(epochs=10, warmup=0.35), 13)
    ours = plan_steps(OptimizationConfig(epochs=10, warmup=0.35, schedule="from_start"), 13)
    assert (meta.warmup_steps, ours.warmup_steps) == (4, 5)


def test_meta_reaches_final_lr_and_from_start_begins_at_start_lr():
    o = OptimizationConfig(epochs=2, warmup=1)
    meta, start = (make_schedule(c, plan_steps(c, 10)) for c in (o, o.model_copy(update={"schedule": "from_start"})))
    assert learning_rate(0, start) == o.start_lr and learning_rate(0, meta) > o.start_lr
    assert learning_rate(19, meta) == pytest.approx(o.final_lr) and learning_rate(19, start) > 10 * o.final_lr


def test_budget_plans_keep_the_warmup_share():
    o = OptimizationConfig(epochs=100, warmup=5)
    plan = plan_steps(o, 97, total_steps=1000)
    assert (plan.total_steps, plan.warmup_steps, plan.schedule_steps) == (1000, 50, 1000)
