"""A wall-clock budget for a whole run: setup, probes, steps, checkpoints, model directory, plots.

``meta.time_budget_min: N`` promises that the run ends within N minutes plus :data:`MARGIN_S`,
counted from when the command has parsed its config. Three rules keep it:

1. **Time is kept for the finish.** :func:`finish_reserve` estimates what the last checkpoint,
   the model directory and the plot cost (from the bytes to write); steps and probes only get
   what is left.
2. **The step count is fixed early, by time.** The first steps are timed until
   ``meta.measure_steps`` of them ran *or* they used :data:`MEASURE_SHARE` of the budget, whichever
   comes first (on a slow CPU that is two steps, not twenty); then the plan fills the time left,
   after the probes and periodic checkpoints, with steps of the measured length.
3. **Nothing starts that would not end in time.** Before every step, probe and periodic checkpoint
   the loop asks :meth:`Budget.fits` with a pessimistic cost (the slowest of the last few steps; a
   probe's cost extrapolated from a small timed slice); if it does not fit, it is skipped, and
   training stops early if a step does not fit (the log says so). Before the first step nothing has
   been timed, so its cost is estimated from a timed forward pass (:data:`STEP_PER_FORWARD` times it);
   a budget too short for even one step ends with the untrained model written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MARGIN_S = 15.0  # the stated margin beyond the budget (misestimated finish, clock granularity)
MEASURE_SHARE = 0.1  # at most this share of the budget is spent timing steps before the plan is fixed
PROBE_SHARE = 0.2  # probes may use at most this share of the budget; more are dropped, not squeezed in
WRITE_BYTES_PER_S = 50e6  # a pessimistic disk: checkpoints and model directories are written at this rate
STEP_PER_FORWARD = 3.0  # a training step costs 2-3x a no-grad forward of its batch (timed on the 2-core CPU)
FINISH_FIXED_S = 5.0  # plot (matplotlib import and draw), directory creation, fsync


def finish_reserve(trainable_params: int, target_params: int) -> float:
    """Seconds to keep for the final checkpoint (weights + 2 AdamW moments + target, fp32), the
    model directory (target, fp32) and the plot."""
    checkpoint = 4 * (3 * trainable_params + target_params)
    return FINISH_FIXED_S + (checkpoint + 4 * target_params) / WRITE_BYTES_PER_S


def checkpoint_seconds(trainable_params: int, target_params: int) -> float:
    return 1.0 + 4 * (3 * trainable_params + target_params) / WRITE_BYTES_PER_S


@dataclass
class Budget:
    """The deadline arithmetic, on an injectable clock so the rules can be tested without waiting."""

    seconds: float
    start: float
    reserve: float  # kept for the finish
    clock: Callable[[], float] = time.perf_counter
    step_times: list[float] = field(default_factory=list)
    probe_spent: float = 0.0  # seconds the probes used so far

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left for steps, probes and periodic checkpoints."""
        return self.seconds - self.reserve - self.elapsed()

    def fits(self, cost: float) -> bool:
        return cost <= self.left()

    def record_step(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def typical_step(self) -> float:
        """Median step time, leaving out the first step (allocation and kernel selection) when possible."""
        times = sorted(self.step_times[1:] or self.step_times)
        return times[len(times) // 2]

    def next_step_cost(self) -> float:
        """A pessimistic cost for the next step: the slowest of the last five (leaving out the first
        step, which pays for allocation and kernel selection, once there is another)."""
        times = self.step_times[1:] or self.step_times
        return max(times[-5:]) if times else 0.0

    def measured_enough(self, max_steps: int) -> bool:
        """Stop timing after ``max_steps`` steps or once they used MEASURE_SHARE of the budget (two at least)."""
        n = len(self.step_times)
        return n >= max_steps or (n >= 2 and sum(self.step_times) >= MEASURE_SHARE * self.seconds)

    def probe_fits(self, cost: float) -> bool:
        """A probe of ``cost`` seconds fits what is left of the probe share and of the time."""
        return cost <= PROBE_SHARE * self.seconds - self.probe_spent and self.fits(cost)

    def record_probe(self, seconds: float) -> None:
        self.probe_spent += seconds

    def probes_that_fit(self, probe_seconds: float, wanted: int) -> int:
        """How many of ``wanted`` further probes fit in what is left of the probe share and the time."""
        if probe_seconds <= 0:
            return wanted
        by_share = int(max(0.0, PROBE_SHARE * self.seconds - self.probe_spent) / probe_seconds)
        by_time = int(max(0.0, self.left()) / probe_seconds)
        return max(0, min(wanted, by_share, by_time))

    def steps_that_fit(self, step_seconds: float, overhead: float) -> int:
        """Whole steps of ``step_seconds`` in the time left after ``overhead`` (probes, checkpoints)."""
        return max(0, int((self.left() - overhead) / max(step_seconds, 1e-9)))

    def steps_with_checkpoints(
        self, step_seconds: float, checkpoint_seconds: float, every: int, overhead: float
    ) -> int:
        """Whole steps that fit the time left after ``overhead`` when every ``every``-th step also
        writes a checkpoint of ``checkpoint_seconds``: each step carries its share of them, so the
        plan is solved in one go (planning the steps first and then charging the checkpoints they
        need gave most of a short budget away)."""
        return self.steps_that_fit(step_seconds + checkpoint_seconds / max(every, 1), overhead)
