"""Training configuration: the official I-JEPA YAML layout in, frozen dataclasses out.

The five sections of the official files (``data``, ``logging``, ``mask``, ``meta``,
``optimization``) load as they are. Every key the official files have is a field here, even the
ones we do not act on (``copy_data``, ``pin_mem`` ...), so that an official file loads while a
misspelt key still fails. Keys we add are marked "ours". Command-line overrides use the same
dotted names: ``--optimization.epochs=3``. The resolved config (after overrides and the
time-budget step count) is written beside the checkpoints and restored on ``--resume``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from jepa.errors import ConfigError

MODEL_NAMES = {f"vit_{s}": s for s in ("tiny", "small", "base", "large", "huge", "giant")}


@dataclass(frozen=True)
class DataConfig:
    batch_size: int = 128  # per process, as in the official code
    color_jitter_strength: float = 0.0  # accepted; only used with use_color_distortion (unsupported)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_size: int = 224
    image_folder: str = ""  # an ImageNet-layout folder or an .npz of JPEGs, relative to root_path
    num_workers: int = 8
    pin_mem: bool = True
    root_path: str = ""
    use_color_distortion: bool = False  # must stay false: the paper uses none
    use_gaussian_blur: bool = False  # must stay false: the paper uses none
    use_horizontal_flip: bool = False
    eval_path: str | None = None  # ours: held-out split for the periodic kNN probe
    eval_train_size: int = 5000  # ours: probe bank drawn from the training data
    eval_test_size: int = 1000  # ours: probe queries drawn from eval_path
    limit: int | None = None  # ours: train on a seeded random subset of this many images

    @property
    def path(self) -> Path:
        return Path(self.root_path) / self.image_folder if self.root_path else Path(self.image_folder)


@dataclass(frozen=True)
class LoggingConfig:
    folder: str = "runs/jepa"
    write_tag: str = "jepa"
    log_every: int = 10  # ours: steps between log lines
    probe_evals: int = 0  # ours: periodic kNN probes over the run (plus one at step 0)
    checkpoint_every: int = 1000  # ours: steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # ours
    progress_bar: bool = True  # ours


@dataclass(frozen=True)
class MaskConfig:
    allow_overlap: bool = False
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    enc_mask_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 10
    num_enc_masks: int = 1  # only 1 is supported (as every official config uses)
    num_pred_masks: int = 4
    patch_size: int = 16
    pred_mask_scale: tuple[float, float] = (0.15, 0.2)
    max_tries: int = 20  # ours: bound on context re-draws


@dataclass(frozen=True)
class MetaConfig:
    copy_data: bool = False  # accepted, ignored (a cluster-local copy step of the official code)
    load_checkpoint: bool = False  # same as --resume
    model_name: str = "vit_huge"
    pred_depth: int = 12
    pred_emb_dim: int = 384
    read_checkpoint: str | None = None  # a checkpoint file to resume from instead of the latest
    use_bfloat16: bool = True  # bf16 autocast on CUDA; CPU always runs fp32
    seed: int = 0  # ours
    encoder_depth: int | None = None  # ours: override the named size's depth
    time_budget_min: float | None = None  # ours: fix total steps from measured speed to fit this
    measure_steps: int = 20  # ours: steps timed before the time budget fixes the step count
    device: str = "auto"  # ours: auto | cpu | cuda
    run_name: str | None = None  # ours: defaults to logging.write_tag


@dataclass(frozen=True)
class OptimizationConfig:
    ema: tuple[float, float] = (0.996, 1.0)
    epochs: int = 300
    final_lr: float = 1.0e-6
    final_weight_decay: float = 0.4
    ipe_scale: float = 1.0
    lr: float = 1.0e-3
    start_lr: float = 2.0e-4
    warmup: float = 40  # epochs
    weight_decay: float = 0.04
    total_steps: int | None = None  # ours: resolved from epochs or the time budget
    warmup_steps: int | None = None  # ours: resolved from warmup


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)

    @property
    def size(self) -> str:
        return MODEL_NAMES[self.meta.model_name]

    @property
    def run_name(self) -> str:
        return self.meta.run_name or self.logging.write_tag

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(dataclasses.asdict(getattr(self, f.name))) for f in fields(self)}

    def replace(self, section: str, **values: Any) -> TrainConfig:
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **values)})


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's type; lists become tuples, ints become floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        return _coerce(where, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(where, v, a) for v, a in zip(value, args, strict=True))
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _section(cls: type, name: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"section {name!r} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key(s) in section {name!r}: {', '.join(unknown)}; valid keys: {', '.join(hints)}")
    return cls(**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in raw.items()})


def from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from the YAML mapping; unknown sections or keys raise."""
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}; valid sections: {', '.join(hints)}")
    cfg = TrainConfig(**{name: _section(hints[name], name, raw.get(name, {})) for name in hints})
    validate(cfg)
    return cfg


def parse_override(arg: str) -> tuple[str, str, Any]:
    """``--section.key=value`` -> (section, key, YAML-parsed value)."""
    if not arg.startswith("--") or "=" not in arg or "." not in arg.split("=", 1)[0]:
        raise ConfigError(f"override {arg!r} must look like --section.key=value")
    name, text = arg[2:].split("=", 1)
    section, key = name.split(".", 1)
    return section, key, yaml.safe_load(text)


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read an (official or our) YAML file and apply ``--section.key=value`` overrides."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    for arg in overrides:
        section, key, value = parse_override(arg)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"override {arg!r}: section {section!r} is not a mapping")
        raw[section][key] = value
    return from_dict(raw)


def validate(cfg: TrainConfig) -> None:
    """Reject values we cannot honour, naming the key."""
    if cfg.meta.model_name not in MODEL_NAMES:
        raise ConfigError(f"meta.model_name {cfg.meta.model_name!r} unknown; valid: {', '.join(MODEL_NAMES)}")
    if cfg.data.use_color_distortion or cfg.data.use_gaussian_blur:
        raise ConfigError("data.use_color_distortion / data.use_gaussian_blur are not supported (the paper uses none)")
    if cfg.mask.num_enc_masks != 1:
        raise ConfigError(f"mask.num_enc_masks must be 1, got {cfg.mask.num_enc_masks}")
    if cfg.data.crop_size % cfg.mask.patch_size:
        raise ConfigError(f"data.crop_size {cfg.data.crop_size} is not a multiple of mask.patch_size")
    lo, hi = cfg.data.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.crop_scale must satisfy 0 < lo <= hi <= 1, got {cfg.data.crop_scale}")
    if cfg.data.batch_size < 1 or cfg.optimization.epochs < 1:
        raise ConfigError("data.batch_size and optimization.epochs must be positive")
    if cfg.meta.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"meta.device must be auto, cpu or cuda, got {cfg.meta.device!r}")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
