"""``python -m training.pretrain --config FILE [--section.key=value ...] [--resume]``.

CLI -> :class:`TrainConfig` -> :func:`run`. ``run`` wires data, masks, models, schedules,
checkpoints and probes around :func:`training.loop.train_step`, and at the end writes the target
encoder as a model directory (``<logging.folder>/model``) that the export and the service take.
The first lines it prints (and logs as ``{"type": "plan"}``) name the device, the data, the model
size and the planned steps. With ``meta.time_budget_min`` the whole run, probes and the final
writes included, ends within the budget plus ``budget.MARGIN_S`` (see ``training/budget.py``);
the step count it fixes is recorded in the resolved config for ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jepa import save_model_dir
from jepa.config import Preprocess
from jepa.errors import JepaError
from training import checkpoint as ckpt
from training.budget import MARGIN_S, STEP_PER_FORWARD, Budget, checkpoint_seconds, finish_reserve
from training.config import TrainConfig, load_config, save_config
from training.data import Augment, DataError, keyed_generator, make_loader, split_folder
from training.distributed import (
    DistInfo,
    DistributedError,
    broadcast_int,
    gather_floats,
    init_distributed,
    param_checksum,
    shutdown,
)
from training.loop import Models, NonFiniteLossError, check_finite, param_groups, train_step
from training.masks import MaskBatch, MaskSpec, sample_masks
from training.models import build_models, count_parameters
from training.probe import Probe, make_probe, probe_steps
from training.report import JsonlLog, plot_run, progress_bar
from training.schedules import Schedule, StepPlan, ema_momentum, learning_rate, make_schedule, plan_steps, weight_decay


@dataclass
class RunState:
    cfg: TrainConfig
    dist: DistInfo
    models: Models
    opt: torch.optim.Optimizer
    loader: object
    folder: Path
    plan: StepPlan
    schedule: Schedule  # built once per plan, never per step
    budget: Budget | None
    started: float  # perf_counter() when the command parsed its config
    step: int = 0
    probe_count: int = 0  # periodic probes after step 0

    @property
    def budget_fixed(self) -> bool:
        return self.budget is None or self.cfg.optimization.total_steps is not None

    def set_plan(self, plan: StepPlan) -> None:
        """The one place the step counts change: the plan, its schedule and the recorded config."""
        self.plan, self.schedule = plan, make_schedule(self.cfg.optimization, plan)
        self.cfg = self.cfg.replace("optimization", total_steps=plan.total_steps, warmup_steps=plan.warmup_steps)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") else module


def setup(cfg: TrainConfig, resume: bool, started: float) -> tuple[RunState, dict | None]:
    """Process group, data, models (DDP-wrapped when distributed), optimiser, plan, and the resume state."""
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
    budget = None
    if cfg.meta.time_budget_min is not None:
        reserve = finish_reserve(count_parameters(encoder, predictor), count_parameters(target))
        budget = Budget(cfg.meta.time_budget_min * 60, started, reserve)
    if dist.world > 1:
        ids = [dist.local_rank] if dist.device.type == "cuda" else None
        encoder = nn.parallel.DistributedDataParallel(encoder, device_ids=ids)
        predictor = nn.parallel.DistributedDataParallel(predictor, device_ids=ids)
    plan = plan_steps(cfg.optimization, loader.steps_per_epoch)
    run = RunState(cfg, dist, Models(encoder, predictor, target), opt, loader, folder, plan,
                   make_schedule(cfg.optimization, plan), budget, started, step=state["step"] if state else 0,
                   probe_count=cfg.logging.probe_evals)  # fmt: skip
    if run.budget_fixed:
        run.set_plan(plan)
    return run, state


def plan_lines(run: RunState) -> list[str]:
    """What a user should see first: device, data, model size, planned steps."""
    cfg, dist, loader = run.cfg, run.dist, run.loader
    cpu = f"CPU ({torch.get_num_threads()} threads)"
    dev = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else cpu
    enc, pred = _unwrap(run.models.encoder), _unwrap(run.models.predictor)
    a = enc.config.architecture
    per_step = cfg.data.batch_size * dist.world
    lines = [
        f"device: {dev}, {dist.world} process(es), torch {torch.__version__}",
        f"data: {split_folder(cfg.data.path)}: {len(loader)} images, "
        f"{loader.steps_per_epoch} steps of {per_step} per epoch",
        f"model: {cfg.meta.model_name} width {a.embed_dim} depth {a.depth} patch {a.patch_size} at {a.image_size} px: "
        f"encoder {count_parameters(enc) / 1e6:.2f} M parameters, predictor {count_parameters(pred) / 1e6:.2f} M",
    ]
    p = run.plan
    if run.budget_fixed:
        lines.append(f"plan: {p.total_steps} steps from step {run.step} (warm-up {p.warmup_steps}), "
                     f"schedule {cfg.optimization.schedule}")  # fmt: skip
    else:
        budget = f"{cfg.meta.time_budget_min:g} min (the run ends by then + {MARGIN_S:g} s)"
        lines.append(
            f"plan: at most {p.total_steps} steps ({cfg.optimization.epochs} epochs), fewer if they do not "
            f"fit the time budget of {budget}; fixed after timing <= {cfg.meta.measure_steps} steps"
        )
    return lines


def fix_budget(run: RunState, probe: Probe | None, log: JsonlLog) -> None:
    """Choose the total step count that fits the time left, and the probes that fit beside it."""
    b, cfg = run.budget, run.cfg
    step_s = b.typical_step()
    probe_s = (probe.seconds or probe.estimated) if probe else 0.0
    run.probe_count = b.probes_that_fit(probe_s, cfg.logging.probe_evals) if probe else 0
    ckpt_s = checkpoint_seconds_of(run)
    steps = b.steps_with_checkpoints(step_s, ckpt_s, cfg.logging.checkpoint_every, run.probe_count * probe_s)
    total = broadcast_int(min(run.step + steps, run.plan.total_steps), run.dist)  # the budget only shortens
    plan = plan_steps(cfg.optimization, run.loader.steps_per_epoch, total_steps=max(total, 1))
    warmup = min(max(plan.warmup_steps, run.step + 1), plan.total_steps)
    run.set_plan(StepPlan(plan.total_steps, warmup, plan.schedule_steps, plan.ema_span))
    log.write({"type": "budget", "step": run.step, "step_seconds": step_s, "total_steps": run.plan.total_steps,
               "warmup_steps": warmup, "probes": run.probe_count, "probe_seconds": probe_s,
               "elapsed_s": b.elapsed()})  # fmt: skip
    if run.dist.is_main:
        save_config(run.cfg, run.folder / "config.yaml")


def _agree(run: RunState, decision: bool) -> bool:
    """Rank 0's decision on every rank (budget checks read each rank's clock)."""
    return bool(broadcast_int(int(decision), run.dist)) if run.dist.world > 1 else decision


def save(run: RunState, log: JsonlLog) -> None:
    """Checkpoint (rank 0), after checking the replicas still agree when distributed."""
    m = run.models
    enc, pred = _unwrap(m.encoder), _unwrap(m.predictor)
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
    s, step = run.schedule, run.step
    amp = run.dist.device.type == "cuda" and run.cfg.meta.use_bfloat16
    out = train_step(run.models, images, masks, run.opt, step, learning_rate(step, s), weight_decay(step, s),
                     ema_momentum(step, s), amp=amp)  # fmt: skip
    return {"type": "train", "step": out.step, "loss": out.loss, "lr": out.lr, "wd": out.weight_decay,
            "momentum": out.momentum}  # fmt: skip


def mask_spec(cfg: TrainConfig) -> MaskSpec:
    m = cfg.mask
    return MaskSpec((cfg.data.crop_size // m.patch_size,) * 2, m.num_pred_masks, m.pred_mask_scale, m.aspect_ratio,
                    m.enc_mask_scale, m.min_keep, m.allow_overlap, m.max_tries, m.shape_draw, m.full_grid_blocks,
                    m.min_keep_strict)  # fmt: skip


def mask_stream(cfg: TrainConfig, rank: int, start: int) -> Iterator[MaskBatch]:
    """Masks of steps ``start, start+1, ...`` (keyed by seed, step, rank), sampled one step ahead in a
    thread so the CPU work overlaps the device's step."""
    spec = mask_spec(cfg)

    def sample(step: int) -> MaskBatch:
        return sample_masks(keyed_generator(cfg.meta.seed, 4, step, rank), spec, cfg.data.batch_size)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(sample, start)
        step = start
        while True:
            step += 1
            current, pending = pending, pool.submit(sample, step)
            yield current.result()


def maybe_probe(run: RunState, probe: Probe | None, log: JsonlLog) -> None:
    """The kNN probe (rank 0), if one is due at this step and, under a budget, fits the time left."""
    if probe is None or run.step not in probe_steps(run.plan.total_steps, run.probe_count):
        return
    target, device, b = run.models.target_encoder, run.dist.device, run.budget
    if b is not None and not b.probe_fits(probe.estimate(target, device)):
        log.write({"type": "skip", "what": "probe", "step": run.step, "estimated_s": probe.estimate(target, device),
                   "left_s": b.left(), "probe_spent_s": b.probe_spent})  # fmt: skip
        return
    log.write({"type": "probe", "step": run.step, "knn_top1": probe(target, device), "seconds": probe.seconds})
    if b is not None:
        b.record_probe(probe.seconds)


@torch.no_grad()
def first_step_estimate(run: RunState, images: torch.Tensor) -> float:
    """A pessimistic cost for a first step, before any is timed: three times a timed no-grad forward
    of the batch through the target encoder (measured on a quarter of it and scaled up; a step runs
    that forward, the context encoder and predictor, and their backward: 2-3x on the CPUs we timed)."""
    target = run.models.target_encoder
    target(images[:1])  # kernels and allocations
    part = images[: max(1, len(images) // 4)]
    t0 = time.perf_counter()
    target(part)
    return STEP_PER_FORWARD * (time.perf_counter() - t0) * len(images) / len(part)


def train(run: RunState, log: JsonlLog, probe: Probe | None) -> None:
    """The step loop: probe, step, log, fix the budget, checkpoint; stops early only for the budget."""
    cfg, main = run.cfg, run.dist.is_main
    bar = progress_bar(total=run.plan.total_steps, initial=run.step,
                       disable=not (main and cfg.logging.progress_bar), smoothing=0.1)  # fmt: skip
    batch_images = cfg.data.batch_size * run.dist.world
    batches, masks = run.loader.iterate(run.step), mask_stream(cfg, run.dist.rank, run.step)
    first = run.step
    while run.step < run.plan.total_steps:
        maybe_probe(run, probe, log)
        b, images = run.budget, next(batches)
        if b is not None:
            cost = b.next_step_cost() if run.step > first else first_step_estimate(run, images)
            if not _agree(run, b.fits(cost)):
                log.write({"type": "stop", "step": run.step, "planned_steps": run.plan.total_steps,
                           "step_estimate_s": cost, "left_s": b.left()})  # fmt: skip
                break
        t0 = time.perf_counter()
        record = one_step(run, images, next(masks))
        seconds = time.perf_counter() - t0
        run.step += 1
        if b is not None:
            b.record_step(seconds)
        if run.step % cfg.logging.log_every == 0 or run.step == run.plan.total_steps:
            log.write({**record, "img_s": batch_images / seconds, "elapsed_s": time.perf_counter() - run.started})
        if not run.budget_fixed and _agree(run, b.measured_enough(cfg.meta.measure_steps)):
            fix_budget(run, probe, log)
            bar.total = run.plan.total_steps
        due = run.step % cfg.logging.checkpoint_every == 0 and run.step < run.plan.total_steps
        if due and run.budget_fixed and _agree(run, b is None or b.fits(checkpoint_seconds_of(run))):
            save(run, log)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", img_s=f"{batch_images / seconds:.0f}")
        bar.update(1)
    bar.close()
    if run.step > first:
        maybe_probe(run, probe, log)


def checkpoint_seconds_of(run: RunState) -> float:
    m = run.models
    return checkpoint_seconds(count_parameters(m.encoder, m.predictor), count_parameters(m.target_encoder))


def run(cfg: TrainConfig, resume: bool = False, started: float | None = None) -> Path | None:
    """Train to the end of the plan (or the budget); returns the model directory (rank 0) or None."""
    started = time.perf_counter() if started is None else started
    run_state, state = setup(cfg, resume, started)
    main = run_state.dist.is_main
    run_state.folder.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(run_state.folder / "log.jsonl", state["step"] if state else None, enabled=main)
    lines = plan_lines(run_state)
    if main:
        print("\n".join(lines), flush=True)
        save_config(run_state.cfg, run_state.folder / "config.yaml")
    log.write({"type": "plan", "step": run_state.step, "lines": lines})
    probe = make_probe(run_state.cfg) if main else None
    try:
        train(run_state, log, probe)
        save(run_state, log)
    finally:
        shutdown(run_state.dist)
    if not main:
        return None
    model_dir = save_model_dir(run_state.models.target_encoder.cpu(), run_state.folder / "model")
    plot_run(run_state.folder / "log.jsonl", run_state.folder / "training.png")
    log.write({"type": "end", "step": run_state.step, "elapsed_s": time.perf_counter() - started,
               "budget_s": run_state.budget.seconds if run_state.budget else None})  # fmt: skip
    return model_dir


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    p = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML file in the official I-JEPA layout")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in logging.folder")
    args, overrides = p.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        out = run(cfg, resume=args.resume, started=started)
    except (JepaError, DataError, ckpt.ResumeError, NonFiniteLossError, DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out is not None:
        print(f"model directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
