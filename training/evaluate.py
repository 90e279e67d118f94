"""Frozen-feature evaluation: kNN and linear-probe top-1 beside raw-pixel and random-weight floors.

``python -m training.evaluate MODEL --data TRAIN [--eval-data TEST]`` embeds both splits with
the frozen encoder (mean pool of the last layer, and the concatenated mean of the last four), fits
a kNN classifier and a linear probe on the training split and reports top-1 on the held-out one.
The floors are computed in the same run on the same images: raw (normalised) pixels, and the same
architecture with random weights. The loss alone says nothing about quality; these numbers do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from jepa.errors import JepaError
from jepa.heads import embed_tensors
from jepa.vit import Encoder
from training.data import DataError, load_eval_arrays, normalize
from training.models import init_like_meta


@dataclass(frozen=True)
class Row:
    features: str
    dim: int
    knn_top1: float
    linear_top1: float | None


@torch.no_grad()
def embed(encoder: Encoder, images: np.ndarray, pool: str, device: torch.device, batch: int = 500) -> Tensor:
    """``uint8 [n, S, S, 3]`` -> float32 ``[n, D]`` (``mean``) or ``[n, 4D]`` (``last4``) on ``device``."""
    pre = encoder.config.preprocess
    encoder = encoder.to(device).eval()
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    out = []
    for i in range(0, len(images), batch):
        x = normalize(torch.from_numpy(images[i : i + batch]).to(device), pre.mean, pre.std)
        with amp:
            result = embed_tensors(encoder, x, frozenset({"global" if pool == "mean" else "multilayer"}))
        out.append(result.global_embedding if pool == "mean" else result.multilayer_embedding)
    return torch.cat(out)


@torch.no_grad()
def knn_top1(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, k: int = 20, t: float = 0.07) -> float:
    """Cosine kNN with similarity-weighted votes (``exp(sim / t)``), as in DINO's evaluation."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = 0
    for i in range(0, len(test_x), 1000):
        sim, idx = (test_x[i : i + 1000] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(idx), n_classes, device=train_x.device)
        votes.scatter_add_(1, train_y[idx], (sim / t).exp())
        correct += int((votes.argmax(1) == test_y[i : i + 1000]).sum())
    return correct / len(test_x)


def _fit_softmax(x: Tensor, y: Tensor, n_classes: int, wd: float, iters: int) -> Tensor:
    """Multinomial logistic regression (weights with a bias column) by full-batch L-BFGS."""
    w = torch.zeros(x.shape[1] + 1, n_classes, device=x.device, requires_grad=True)
    xb = torch.cat([x, torch.ones(len(x), 1, device=x.device)], dim=1)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + wd * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def _accuracy(w: Tensor, x: Tensor, y: Tensor) -> float:
    xb = torch.cat([x, torch.ones(len(x), 1, device=x.device)], dim=1)
    return float(((xb @ w).argmax(1) == y).float().mean())


def linear_top1(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, iters: int = 100) -> float:
    """Linear probe on standardised features; the L2 strength is picked on a 10% validation split."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(train_x), generator=gen).to(train_x.device)
    n_val = max(1, len(train_x) // 10)
    val, fit = perm[:n_val], perm[n_val:]
    scores = {}
    for wd in (1e-5, 1e-4, 1e-3):
        w = _fit_softmax(train_x[fit], train_y[fit], n_classes, wd, iters)
        scores[wd] = _accuracy(w, train_x[val], train_y[val])
    best = max(scores, key=scores.get)
    return _accuracy(_fit_softmax(train_x, train_y, n_classes, best, iters), test_x, test_y)


def feature_rows(
    models: dict[str, Encoder], splits: tuple[np.ndarray, ...], device: torch.device, linear_iters: int = 100
) -> list[Row]:
    """Rows of the table: raw pixels, then each model's mean-pool and last-4 features."""
    train_im, train_y, test_im, test_y = splits
    ty, vy = torch.from_numpy(train_y).to(device), torch.from_numpy(test_y).to(device)
    pre = next(iter(models.values())).config.preprocess
    feats = {"raw pixels": tuple(normalize(torch.from_numpy(a).to(device), pre.mean, pre.std).flatten(1)
                                 for a in (train_im, test_im))}  # fmt: skip
    for name, model in models.items():
        for pool, label in (("mean", "mean pool"), ("last4", "last-4 layers")):
            feats[f"{name}, {label}"] = tuple(embed(model, a, pool, device) for a in (train_im, test_im))
    rows = []
    for name, (a, b) in feats.items():
        lin = linear_top1(a, ty, b, vy, linear_iters) if linear_iters > 0 else None
        rows.append(Row(name, a.shape[1], knn_top1(a, ty, b, vy), lin))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = ["| features | dim | kNN top-1 (k=20) | linear top-1 |", "| --- | ---: | ---: | ---: |"]
    for r in rows:
        lin = f"{100 * r.linear_top1:.1f}%" if r.linear_top1 is not None else "-"
        lines.append(f"| {r.features} | {r.dim} | {100 * r.knn_top1:.1f}% | {lin} |")
    return "\n".join(lines)


def random_twin(model: Encoder, seed: int = 0) -> Encoder:
    """The same architecture initialised as training starts (``training.models``), untrained: a floor."""
    torch.manual_seed(seed)
    twin = Encoder(model.config)
    init_like_meta(twin, depth_rescale=False)
    return twin.eval()


def load_splits(args: argparse.Namespace, size: int) -> tuple[np.ndarray, ...]:
    """Training and held-out images at the model's input size; without ``--eval-data`` a 20% split."""
    train_im, train_y = load_eval_arrays(Path(args.data), args.train_limit, size, args.seed)
    if args.eval_data:
        test_im, test_y = load_eval_arrays(Path(args.eval_data), args.test_limit, size, args.seed, split="val")
        return train_im, train_y, test_im, test_y
    n_test = len(train_im) // 5
    return train_im[n_test:], train_y[n_test:], train_im[:n_test], train_y[:n_test]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("model", help="model directory, or any source jepa.load_encoder reads (short name, Hub id, URL)")
    p.add_argument("--data", required=True, help="training split: .npz of JPEGs or an ImageNet-layout folder")
    p.add_argument("--eval-data", help="held-out split: .npz or a folder (its val/ if any; default: 20%% of --data)")
    p.add_argument("--train-limit", type=int, help="use a seeded random subset of the training split")
    p.add_argument("--test-limit", type=int, help="use a seeded random subset of the held-out split")
    p.add_argument("--linear-iters", type=int, default=100, help="L-BFGS iterations per probe fit (0: kNN only)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    from jepa import load_encoder

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")  # fmt: skip
    t0 = time.perf_counter()
    try:
        model = load_encoder(args.model)
        splits = load_splits(args, model.config.image_size)
    except (JepaError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models = {"random weights": random_twin(model, args.seed), model.config.name: model}
    rows = feature_rows(models, splits, device, args.linear_iters)
    print(f"train {len(splits[0])} images, held-out {len(splits[2])} images, device {device}, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    print(format_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
