"""Training configuration: the official I-JEPA YAML layout in, frozen pydantic models out.

The five sections of the official files (``data``, ``logging``, ``mask``, ``meta``,
``optimization``) load as they are. Every key the official files have is a field here, even the
ones we do not act on (``copy_data``, ``pin_mem`` ...), so that an official file loads while a
misspelt key still fails (``extra="forbid"``). Keys we add are marked "ours". Command-line
overrides use the same dotted names: ``--optimization.epochs=3``. The resolved config (after
overrides and the time-budget step count) is written beside the checkpoints and restored on
``--resume``. Parsing happens once, in :func:`load_config`; below it everything reads attributes.

The project parses every configuration with pydantic (the service's settings, the model
directory's ``config.json``); training does too, so there is one way to say "a typed, frozen
config that rejects unknown keys".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jepa.errors import ConfigError

MODEL_NAMES = {f"vit_{s}": s for s in ("tiny", "small", "base", "large", "huge", "giant")}
Range = tuple[float, float]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    batch_size: int = Field(128, ge=1)  # per process, as in the official code
    color_jitter_strength: float = 0.0  # accepted; only used with use_color_distortion (unsupported)
    crop_scale: Range = (0.3, 1.0)
    crop_size: int = Field(224, ge=1)
    # An ImageNet folder read as the official code reads it (root_path/image_folder/train/<class>/),
    # a folder of class sub-folders, or an .npz of JPEGs; relative to root_path.
    image_folder: str = ""
    num_workers: int = Field(8, ge=0)
    pin_mem: bool = True
    root_path: str = ""
    use_color_distortion: bool = False  # must stay false: the paper uses none
    use_gaussian_blur: bool = False  # must stay false: the paper uses none
    use_horizontal_flip: bool = False
    eval_path: str | None = None  # ours: held-out split for the periodic kNN probe
    eval_train_size: int = Field(5000, ge=1)  # ours: probe bank drawn from the training data
    eval_test_size: int = Field(1000, ge=1)  # ours: probe queries drawn from eval_path
    limit: int | None = Field(None, ge=1)  # ours: train on a seeded random subset of this many images

    @property
    def path(self) -> Path:
        return Path(self.root_path) / self.image_folder if self.root_path else Path(self.image_folder)


class LoggingConfig(_Section):
    folder: str = "runs/jepa"
    write_tag: str = "jepa"
    log_every: int = Field(10, ge=1)  # ours: steps between log lines
    probe_evals: int = Field(0, ge=0)  # ours: periodic kNN probes over the run (plus one at step 0)
    checkpoint_every: int = Field(1000, ge=1)  # ours: steps between checkpoints (and one at the end)
    keep_checkpoints: int = Field(2, ge=1)  # ours
    progress_bar: bool = True  # ours


class MaskConfig(_Section):
    allow_overlap: bool = False
    aspect_ratio: Range = (0.75, 1.5)
    enc_mask_scale: Range = (0.85, 1.0)
    min_keep: int = Field(10, ge=0)
    num_enc_masks: Literal[1] = 1  # only 1 is supported (as every official config uses)
    num_pred_masks: int = Field(4, ge=1)
    patch_size: int = Field(16, ge=1)
    pred_mask_scale: Range = (0.15, 0.2)
    max_tries: int = Field(20, ge=1)  # ours: bound on context re-draws (the official loop has none)
    # ours (docs/training/meta_parity.md): "meta" draws one number for a block's scale and aspect
    # and rounds its area down, as the official collator does; "independent" draws two (the paper's text).
    shape_draw: Literal["meta", "independent"] = "meta"
    full_grid_blocks: bool = False  # ours: let a block span the whole grid (the official code stops one short)
    min_keep_strict: bool = True  # ours: a context needs more than min_keep patches (official); false: at least


class MetaConfig(_Section):
    copy_data: bool = False  # accepted, ignored (a cluster-local copy step of the official code)
    load_checkpoint: bool = False  # same as --resume
    model_name: str = "vit_huge"
    pred_depth: int = Field(12, ge=1)
    pred_emb_dim: int = Field(384, ge=1)
    read_checkpoint: str | None = None  # a checkpoint file to resume from instead of the latest
    use_bfloat16: bool = True  # bf16 autocast on CUDA; CPU always runs fp32
    seed: int = 0  # ours
    encoder_depth: int | None = Field(None, ge=1)  # ours: override the named size's depth
    time_budget_min: float | None = Field(None, gt=0)  # ours: the whole run (probes, saving) fits this
    measure_steps: int = Field(20, ge=1)  # ours: most steps timed before the budget fixes the step count
    device: Literal["auto", "cpu", "cuda"] = "auto"  # ours
    run_name: str | None = None  # ours: defaults to logging.write_tag
    # ours: keep the model's 1/sqrt(2*layer) rescaling of residual projections, which the official
    # helper.init_model overwrites by re-initialising every Linear afterwards.
    depth_rescale_init: bool = False


class OptimizationConfig(_Section):
    ema: Range = (0.996, 1.0)
    epochs: int = Field(300, ge=1)
    final_lr: float = 1.0e-6
    final_weight_decay: float = 0.4
    ipe_scale: float = Field(1.0, gt=0)
    lr: float = 1.0e-3
    start_lr: float = 2.0e-4
    warmup: float = Field(40, ge=0)  # epochs
    weight_decay: float = 0.04
    total_steps: int | None = Field(None, ge=1)  # ours: resolved from epochs or the time budget
    warmup_steps: int | None = Field(None, ge=0)  # ours: resolved from warmup
    # ours: "meta" steps the lr and weight-decay schedules before the forward pass (step s trains
    # with the value of s+1) and counts steps with int(), as the official code; "from_start"
    # trains step s with the value of s and rounds, so it starts at start_lr exactly.
    schedule: Literal["meta", "from_start"] = "meta"


class TrainConfig(_Section):
    data: DataConfig = DataConfig()
    logging: LoggingConfig = LoggingConfig()
    mask: MaskConfig = MaskConfig()
    meta: MetaConfig = MetaConfig()
    optimization: OptimizationConfig = OptimizationConfig()

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """Values we cannot honour, across sections, named by key."""
        if self.meta.model_name not in MODEL_NAMES:
            raise ValueError(f"meta.model_name {self.meta.model_name!r} unknown; valid: {', '.join(MODEL_NAMES)}")
        if self.data.use_color_distortion or self.data.use_gaussian_blur:
            raise ValueError(
                "data.use_color_distortion / data.use_gaussian_blur are not supported (the paper uses none)"
            )
        if self.data.crop_size % self.mask.patch_size:
            raise ValueError(f"data.crop_size {self.data.crop_size} is not a multiple of mask.patch_size")
        lo, hi = self.data.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"data.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.data.crop_scale}")
        return self

    @property
    def size(self) -> str:
        return MODEL_NAMES[self.meta.model_name]

    @property
    def run_name(self) -> str:
        return self.meta.run_name or self.logging.write_tag

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, section: str, **values: Any) -> TrainConfig:
        """A copy with ``values`` set in ``section``, validated again."""
        raw = self.to_dict()
        raw[section].update(values)
        return from_dict(raw)


def _describe(e: ValidationError) -> str:
    """One line per problem, named by its dotted key; unknown keys list the valid ones."""
    lines = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            lines.append(f"unknown section {loc[0]!r}; valid sections: {', '.join(TrainConfig.model_fields)}")
        elif err["type"] == "extra_forbidden":
            valid = TrainConfig.model_fields[loc[0]].annotation.model_fields
            lines.append(f"unknown key {loc[1]!r} in section {loc[0]!r}; valid keys: {', '.join(valid)}")
        else:
            where = ".".join(loc[:2]) if loc else "config"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg} (got {err.get('input')!r})" if loc else msg)
    return "; ".join(lines)


def from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from the YAML mapping; unknown sections or keys raise."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


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


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
