"""The kNN probe a run takes during training, with a cost it can predict before it runs.

A probe embeds a bank of training images and a set of held-out queries with the target encoder
and reports kNN top-1. Under a time budget, :meth:`Probe.estimate` times a small slice first, so
the loop can skip a probe that would not end in time instead of discovering it afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jepa.vit import Encoder
from training.config import TrainConfig
from training.data import load_eval_arrays
from training.evaluate import embed, knn_top1

SLICE = 64  # images timed to estimate a probe's cost


@dataclass
class Probe:
    """A fixed kNN probe: bank images from the training data, queries from the held-out split."""

    bank: np.ndarray
    bank_y: torch.Tensor
    queries: np.ndarray
    query_y: torch.Tensor
    seconds: float = 0.0  # cost of the last full probe
    estimated: float = 0.0  # cost predicted from a timed slice, before the first full probe

    def __call__(self, encoder: Encoder, device: torch.device) -> float:
        t0 = time.perf_counter()
        a, b = embed(encoder, self.bank, "mean", device), embed(encoder, self.queries, "mean", device)
        acc = knn_top1(a, self.bank_y.to(device), b, self.query_y.to(device))
        self.seconds = time.perf_counter() - t0
        return acc

    def estimate(self, encoder: Encoder, device: torch.device) -> float:
        """Seconds a full probe will take: the last one's, or a timed slice scaled up (with 20% to spare)."""
        if self.seconds:
            return self.seconds
        if not self.estimated:
            n = len(self.bank) + len(self.queries)
            embed(encoder, self.bank[:SLICE], "mean", device)  # warm-up: kernels, allocations
            t0 = time.perf_counter()
            embed(encoder, self.bank[:SLICE], "mean", device)
            self.estimated = 1.2 * (time.perf_counter() - t0) * n / min(SLICE, len(self.bank))
        return self.estimated


def make_probe(cfg: TrainConfig) -> Probe | None:
    d = cfg.data
    if cfg.logging.probe_evals <= 0 or not d.eval_path:
        return None
    bank, bank_y = load_eval_arrays(d.path, d.eval_train_size, d.crop_size, cfg.meta.seed, split="train")
    queries, query_y = load_eval_arrays(Path(d.eval_path), d.eval_test_size, d.crop_size, cfg.meta.seed, split="val")
    return Probe(bank, torch.from_numpy(bank_y), queries, torch.from_numpy(query_y))


def probe_steps(total_steps: int, count: int) -> set[int]:
    """Steps at which to probe: 0 and ``count`` evenly spaced steps up to the end."""
    return {0} | {round(total_steps * i / count) for i in range(1, count + 1)} if count > 0 else {0}
