"""``python -m training.pretrain --config FILE [--section.key=value ...] [--resume]``.

CLI -> :class:`TrainConfig` -> :func:`run`. ``run`` wires data, masks, models, schedules,
checkpoints and probes around :func:`training.loop.train_step`, and at the end writes the target
encoder as a model directory (``<logging.folder>/model``) that the export and the service take.
With ``meta.time_budget_min`` the step count is fixed from the speed measured on the first
``meta.measure_steps`` steps (and the cost of one probe), so a wall-clock-bounded run still gets
a full warm-up + cosine schedule; the count is recorded in the resolved config for ``--resume``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jepa import save_model_dir
from jepa.config import ModelConfig, Preprocess, Provenance, architecture_for
from jepa.errors import JepaError
from jepa.vit import Encoder, Predictor, init_weights
from training import checkpoint as ckpt
from training.config import TrainConfig, load_config, save_config
from training.data import Augment, DataError, keyed_generator, load_eval_arrays, make_loader
from training.distributed import (
    DistInfo,
    DistributedError,
    broadcast_int,
    gather_floats,
    init_distributed,
    param_checksum,
    shutdown,
)
from training.evaluate import embed, knn_top1
from training.loop import Models, NonFiniteLossError, check_finite, param_groups, train_step
from training.masks import MaskBatch, MaskSpec, sample_masks
from training.report import JsonlLog, plot_run, progress_bar
from training.schedules import Schedule, ema_momentum, learning_rate, weight_decay


@dataclass
class Probe:
    """A fixed kNN probe: bank images from the training data, queries from the held-out split."""

    bank: np.ndarray
    bank_y: torch.Tensor
    queries: np.ndarray
    query_y: torch.Tensor
    seconds: float = 0.0

    def __call__(self, encoder: Encoder, device: torch.device) -> float:
        t0 = time.perf_counter()
        a, b = embed(encoder, self.bank, "mean", device), embed(encoder, self.queries, "mean", device)
        acc = knn_top1(a, self.bank_y.to(device), b, self.query_y.to(device))
        self.seconds = time.perf_counter() - t0
        return acc


@dataclass
class RunState:
    cfg: TrainConfig
    dist: DistInfo
    models: Models
    opt: torch.optim.Optimizer
    loader: object
    folder: Path
    step: int = 0
    total_steps: int = 0
    budget_fixed: bool = True
    t_start: float = field(default_factory=time.perf_counter)


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
    init_weights(encoder)
    init_weights(predictor)
    target = copy.deepcopy(encoder).requires_grad_(False)
    return encoder, predictor, target


def make_schedule(cfg: TrainConfig, total_steps: int, warmup_steps: int) -> Schedule:
    o = cfg.optimization
    return Schedule(
        schedule_steps=max(1, round(total_steps * o.ipe_scale)),
        warmup_steps=warmup_steps,
        start_lr=o.start_lr,
        lr=o.lr,
        final_lr=o.final_lr,
        weight_decay=o.weight_decay,
        final_weight_decay=o.final_weight_decay,
        ema_start=o.ema[0],
        ema_end=o.ema[1],
    )


def setup(cfg: TrainConfig, resume: bool) -> tuple[RunState, dict | None]:
    """Process group, data, models (DDP-wrapped when distributed), optimiser, and the resume state."""
    dist = init_distributed(cfg.meta.device)
    folder = Path(cfg.logging.folder)
    state = None
    if resume or cfg.meta.load_checkpoint:
        state = ckpt.load_checkpoint(ckpt.find_resume_checkpoint(folder, cfg.meta.read_checkpoint))
        if state["seed"] != cfg.meta.seed:
            raise ckpt.ResumeError(f"checkpoint seed {state['seed']} differs from meta.seed {cfg.meta.seed}")
        saved = state.get("config", {}).get("optimization", {})
        cfg = cfg.replace("optimization", total_steps=saved.get("total_steps"), warmup_steps=saved.get("warmup_steps"))
    d = cfg.data
    aug = Augment(d.crop_size, d.crop_scale, d.use_horizontal_flip, Preprocess().mean, Preprocess().std)
    loader = make_loader(d.path, d.batch_size, aug, cfg.meta.seed, dist.rank, dist.world, dist.device,
                         d.num_workers, d.limit)  # fmt: skip
    encoder, predictor, target = (m.to(dist.device) for m in build_models(cfg))
    opt = torch.optim.AdamW(param_groups(encoder, predictor), lr=cfg.optimization.lr)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        predictor.load_state_dict(state["predictor"])
        target.load_state_dict(state["target_encoder"])
        opt.load_state_dict(state["optimizer"])
    if dist.world > 1:
        ids = [dist.local_rank] if dist.device.type == "cuda" else None
        encoder = nn.parallel.DistributedDataParallel(encoder, device_ids=ids)
        predictor = nn.parallel.DistributedDataParallel(predictor, device_ids=ids)
    ipe = loader.steps_per_epoch
    o = cfg.optimization
    total = o.total_steps or o.epochs * ipe
    budget_fixed = o.total_steps is not None or cfg.meta.time_budget_min is None
    warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup * ipe)
    cfg = cfg.replace("optimization", total_steps=total, warmup_steps=min(warmup, total))
    run = RunState(cfg, dist, Models(encoder, predictor, target), opt, loader, folder,
                   step=state["step"] if state else 0, total_steps=total, budget_fixed=budget_fixed)  # fmt: skip
    return run, state


def make_probe(cfg: TrainConfig) -> Probe | None:
    d = cfg.data
    if cfg.logging.probe_evals <= 0 or not d.eval_path:
        return None
    bank, bank_y = load_eval_arrays(d.path, d.eval_train_size, d.crop_size, cfg.meta.seed)
    queries, query_y = load_eval_arrays(Path(d.eval_path), d.eval_test_size, d.crop_size, cfg.meta.seed)
    return Probe(bank, torch.from_numpy(bank_y), queries, torch.from_numpy(query_y))


def probe_steps(run: RunState) -> set[int]:
    n = run.cfg.logging.probe_evals
    if not run.budget_fixed:
        return {0}
    return {0} | {round(run.total_steps * i / n) for i in range(1, n + 1)}


def fix_budget(run: RunState, step_seconds: float, probe: Probe | None, log: JsonlLog) -> None:
    """Choose the total step count that fits ``meta.time_budget_min`` and record it in the config."""
    cfg = run.cfg
    elapsed = time.perf_counter() - run.t_start
    n_probes = cfg.logging.probe_evals if probe else 0
    reserve = 5.0 + n_probes * (probe.seconds if probe else 0.0)
    remaining = cfg.meta.time_budget_min * 60 - elapsed - reserve
    total = broadcast_int(max(run.step + 1, run.step + int(remaining / step_seconds)), run.dist)
    o = cfg.optimization
    warmup = max(run.step + 1, round(total * o.warmup / o.epochs))
    run.cfg = cfg.replace("optimization", total_steps=total, warmup_steps=min(warmup, total))
    run.total_steps, run.budget_fixed = total, True
    log.write({"type": "budget", "step": run.step, "step_seconds": step_seconds, "total_steps": total,
               "warmup_steps": run.cfg.optimization.warmup_steps, "elapsed_s": elapsed})  # fmt: skip
    if run.dist.is_main:
        save_config(run.cfg, run.folder / "config.yaml")


def save(run: RunState, log: JsonlLog) -> None:
    """Checkpoint (rank 0), after checking the replicas still agree when distributed."""
    m = run.models
    enc = m.encoder.module if hasattr(m.encoder, "module") else m.encoder
    pred = m.predictor.module if hasattr(m.predictor, "module") else m.predictor
    check_finite(run.step, enc, pred, m.target_encoder)
    if run.dist.world > 1:
        sums = gather_floats(param_checksum(enc), run.dist)
        log.write({"type": "sync", "step": run.step, "checksums": sums})
    if run.dist.is_main:
        state = {"seed": run.cfg.meta.seed, "config": run.cfg.to_dict(), "encoder": enc.state_dict(),
                 "predictor": pred.state_dict(), "target_encoder": m.target_encoder.state_dict(),
                 "optimizer": run.opt.state_dict()}  # fmt: skip
        ckpt.save_checkpoint(run.folder, run.step, state, run.cfg.logging.keep_checkpoints)


def one_step(run: RunState, images: torch.Tensor, masks: MaskBatch) -> dict:
    sched = make_schedule(run.cfg, run.total_steps, run.cfg.optimization.warmup_steps)
    amp = run.dist.device.type == "cuda" and run.cfg.meta.use_bfloat16
    s = train_step(run.models, images, masks, run.opt, run.step, learning_rate(run.step, sched),
                   weight_decay(run.step, sched), ema_momentum(run.step, sched), amp=amp)  # fmt: skip
    return {"type": "train", "step": s.step, "loss": s.loss, "lr": s.lr, "wd": s.weight_decay, "momentum": s.momentum}


def mask_stream(cfg: TrainConfig, rank: int, start: int) -> Iterator[MaskBatch]:
    """Masks of steps ``start, start+1, ...`` (keyed by seed, step, rank), sampled one step ahead in a
    thread so the CPU work overlaps the device's step."""
    m = cfg.mask
    grid = (cfg.data.crop_size // m.patch_size,) * 2
    spec = MaskSpec(grid, m.num_pred_masks, m.pred_mask_scale, m.aspect_ratio, m.enc_mask_scale, m.min_keep,
                    m.allow_overlap, m.max_tries)  # fmt: skip

    def sample(step: int) -> MaskBatch:
        return sample_masks(keyed_generator(cfg.meta.seed, 4, step, rank), spec, cfg.data.batch_size)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(sample, start)
        step = start
        while True:
            step += 1
            current, pending = pending, pool.submit(sample, step)
            yield current.result()


def train(run: RunState, log: JsonlLog, probe: Probe | None) -> None:
    """The step loop: probe, step, log, fix the budget, checkpoint."""
    cfg, main = run.cfg, run.dist.is_main
    bar = progress_bar(
        total=run.total_steps, initial=run.step, disable=not (main and cfg.logging.progress_bar), smoothing=0.1
    )
    batch_images = cfg.data.batch_size * run.dist.world
    timing: list[float] = []
    batches = run.loader.iterate(run.step)
    masks = mask_stream(cfg, run.dist.rank, run.step)
    while run.step < run.total_steps:
        if probe and main and run.step in probe_steps(run):
            log.write(
                {"type": "probe", "step": run.step, "knn_top1": probe(run.models.target_encoder, run.dist.device)}
            )
        t0 = time.perf_counter()
        record = one_step(run, next(batches), next(masks))
        timing.append(time.perf_counter() - t0)
        run.step += 1
        if run.step % cfg.logging.log_every == 0 or run.step == run.total_steps:
            log.write({**record, "img_s": batch_images / timing[-1], "elapsed_s": time.perf_counter() - run.t_start})
        if not run.budget_fixed and run.step >= cfg.meta.measure_steps:
            fix_budget(run, float(np.median(timing[2:] or timing)), probe, log)
            bar.total = run.total_steps
        if run.budget_fixed and (run.step % cfg.logging.checkpoint_every == 0 or run.step == run.total_steps):
            save(run, log)
        bar.set_postfix(
            loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", img_s=f"{batch_images / timing[-1]:.0f}"
        )
        bar.update(1)
    bar.close()
    if probe and main and run.step in probe_steps(run):
        log.write({"type": "probe", "step": run.step, "knn_top1": probe(run.models.target_encoder, run.dist.device)})


def run(cfg: TrainConfig, resume: bool = False) -> Path | None:
    """Train to the end of the schedule; returns the model directory (rank 0) or None."""
    t_start = time.perf_counter()
    run_state, state = setup(cfg, resume)
    run_state.t_start = t_start
    main = run_state.dist.is_main
    run_state.folder.mkdir(parents=True, exist_ok=True)
    if main:
        save_config(run_state.cfg, run_state.folder / "config.yaml")
    log = JsonlLog(run_state.folder / "log.jsonl", state["step"] if state else None, enabled=main)
    probe = make_probe(run_state.cfg) if main else None
    try:
        train(run_state, log, probe)
    finally:
        shutdown(run_state.dist)
    if not main:
        return None
    model_dir = save_model_dir(run_state.models.target_encoder.cpu(), run_state.folder / "model")
    plot_run(run_state.folder / "log.jsonl", run_state.folder / "training.png")
    return model_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML file in the official I-JEPA layout")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in logging.folder")
    args, overrides = p.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        out = run(cfg, resume=args.resume)
    except (JepaError, DataError, ckpt.ResumeError, NonFiniteLossError, DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out is not None:
        print(f"model directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
