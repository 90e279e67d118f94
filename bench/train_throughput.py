"""Images/s of one I-JEPA training step: ours vs a straightforward reference, side by side.

    python bench/train_throughput.py [--device cpu|cuda] [--steps N] [--cases vits16_224,cifar]

Ours is ``training.loop.train_step``: SDPA attention, foreach AdamW and EMA, and on CUDA bf16
autocast. The reference is what one would write first: explicit ``softmax(q k^T / sqrt(d)) v``
attention, fp32 everywhere, a per-parameter AdamW (``foreach=False``) and a Python loop for the
EMA. Both run the same models (same weights), the same masks and the same random images in the
same process, alternating, so the printed ratio is meaningful even on a noisy machine.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from bench.host import host_line
from jepa.config import ModelConfig, architecture_for
from jepa.layers import Attention
from jepa.vit import Encoder, Predictor, init_weights
from training.loop import Models, jepa_loss, param_groups, train_step
from training.masks import MaskBatch, MaskSpec, sample_masks


class ReferenceAttention(Attention):
    """The same parameters as :class:`Attention`, computed with an explicit softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
        x = F.softmax(attn, dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


@dataclass(frozen=True)
class Case:
    name: str
    size: str
    patch: int
    image: int
    depth: int | None
    pred_dim: int
    pred_depth: int
    batch_cpu: int
    batch_cuda: int


CASES = {
    "vits16_224": Case("ViT-S/16 224px (pred 384x6)", "small", 16, 224, None, 384, 6, 8, 128),
    "cifar": Case("CIFAR config: ViT-Tiny/4 depth 6, 32px (pred 192x4)", "tiny", 4, 32, 6, 192, 4, 64, 512),
}


def build(case: Case, device: torch.device, reference: bool) -> tuple[Models, torch.optim.Optimizer]:
    torch.manual_seed(0)
    overrides = {"depth": case.depth} if case.depth else {}
    arch = architecture_for(case.size, patch_size=case.patch, image_size=case.image, **overrides)
    encoder = Encoder(ModelConfig(architecture=arch))
    predictor = Predictor(arch.grid, arch.embed_dim, case.pred_dim, case.pred_depth, arch.num_heads)
    init_weights(encoder)
    init_weights(predictor)
    if reference:
        for m in [*encoder.modules(), *predictor.modules()]:
            if isinstance(m, Attention):
                m.__class__ = ReferenceAttention
    target = copy.deepcopy(encoder).requires_grad_(False)
    models = Models(encoder.to(device), predictor.to(device), target.to(device))
    groups = param_groups(models.encoder, models.predictor)
    opt = torch.optim.AdamW(groups, lr=1e-4, foreach=not reference)
    return models, opt


def reference_step(models: Models, images, masks, opt, m: float) -> float:
    loss = jepa_loss(models, images, masks)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for t, o in zip(models.target_encoder.parameters(), models.encoder.parameters(), strict=True):
            t.mul_(m).add_(o, alpha=1 - m)
    return float(loss.detach())


def time_steps(step_fn, steps: int, device: torch.device) -> float:
    step_fn()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def run_case(case: Case, device: torch.device, steps: int, rounds: int) -> tuple[int, float, float]:
    batch = case.batch_cuda if device.type == "cuda" else case.batch_cpu
    grid = (case.image // case.patch,) * 2
    masks = sample_masks(torch.Generator().manual_seed(0), MaskSpec(grid), batch)
    masks = MaskBatch(masks.context.to(device), masks.targets.to(device))
    images = torch.randn(batch, 3, case.image, case.image, device=device)
    ours, ours_opt = build(case, device, reference=False)
    ref, ref_opt = build(case, device, reference=True)
    amp = device.type == "cuda"
    ours_t, ref_t = [], []
    for _ in range(rounds):  # alternate so drifting load hits both alike
        ours_t.append(time_steps(lambda: train_step(ours, images, masks, ours_opt, 0, 1e-4, 0.04, 0.996, amp),
                                 steps, device))  # fmt: skip
        ref_t.append(time_steps(lambda: reference_step(ref, images, masks, ref_opt, 0.996), steps, device))
    return batch, batch / min(ours_t), batch / min(ref_t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 3 CPU, 20 CUDA)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    args = p.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    steps = args.steps or (20 if cuda else 3)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(host_line())
    print(f"device: {name}; torch {torch.__version__}; ours = SDPA{' + bf16 autocast' if cuda else ' fp32'}, "
          f"foreach AdamW/EMA; reference = explicit softmax, fp32, per-parameter AdamW/EMA")  # fmt: skip
    print("| case | batch | ours img/s | reference img/s | ours / reference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key in args.cases.split(","):
        case = CASES[key]
        batch, ours, ref = run_case(case, device, steps, args.rounds)
        print(f"| {case.name} | {batch} | {ours:.1f} | {ref:.1f} | {ours / ref:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
