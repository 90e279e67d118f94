from __future__ import annotations

import itertools
import math

import pytest

from training.schedules import Schedule, ema_momentum, learning_rate, weight_decay

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
    assert [learning_rate(s, S) for s in (7, 700)] == [learning_rate(s, S) for s in (7, 700)]
    assert not math.isnan(learning_rate(0, Schedule(1, 0, 0, 1, 0, 0, 0, 0, 1)))
