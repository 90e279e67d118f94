"""Which CPU engine serves a model: OpenVINO where it was verified and measured faster on this
machine, else ONNX Runtime (int8 where verified, as before). Pure functions of a record.

Why by measurement and not by an ISA table: the engines' relative speed depends on more than
one flag. On a 2-core AMX machine OpenVINO on the fp32 graph (computing in bf16) ran ViT-S/16 at
1.3x our ONNX Runtime int8 graph at batch 1 and 2.0x at batch 8, and on an AVX2-only one its f32
was reported about 1.5x ONNX Runtime *fp32* but not compared with int8 (``python -m
bench.cpu_engines``, issue 17). So
the start-up build times both on the machine that serves (service/engine_trial.py), and a
record only counts on a machine with the same ISA flags, thread budget and engine versions: a
cache volume shared by different nodes, or a directory copied from another host, falls back to
ONNX Runtime rather than trusting another CPU's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jepa.contract import EngineName, EnginesRecord, read_engines
from jepa.errors import CheckpointError
from service.cpu_features import CpuIsa

OPENVINO_MIN_COSINE = 0.999  # the same bar as int8: global embeddings on photos vs the fp32 graph
TRIAL = "python -m service.engine_trial MODEL_DIR"


@dataclass(frozen=True)
class EngineChoice:
    """The engine, why, and the figures it rests on (shown in ``/info``)."""

    engine: EngineName
    why: str
    measured: dict[str, object] | None = None

    def as_dict(self) -> dict[str, object]:
        return {"engine": self.engine, "why": self.why, "measured": self.measured}


def figures(record: EnginesRecord) -> dict[str, object]:
    """The record's numbers in short: images/s by batch for both engines, the cosines, the machine."""
    keep = ("graph", "precision", "workers", "images_s", "rounds")
    return {
        "openvino": record.openvino.model_dump(include=set(keep)),
        "baseline": record.baseline.model_dump(include=set(keep)),
        "cosine_min": record.cosine_min,
        "isa": record.isa.get("kind"),
        "cpus": record.cpus,
        "created": record.created,
    }


def same_machine(record: EnginesRecord, isa: CpuIsa, cpus: int, versions: dict[str, str],
                 workers: dict[str, int]) -> str | None:  # fmt: skip
    """Why ``record`` was not measured on a machine like this one, run as this one would run it
    (None: it was)."""
    flags = sorted(isa.as_dict()["flags"])  # type: ignore[arg-type]
    if sorted(record.isa.get("flags", [])) != flags:
        return f"measured on another CPU (ISA {record.isa.get('kind')} {record.isa.get('flags')}, here {isa.kind})"
    if record.cpus != cpus:
        return f"measured with {record.cpus} threads, this process has {cpus}"
    measured = {"openvino": record.openvino.workers, "onnxruntime": record.baseline.workers}
    if measured != workers:
        return f"measured with workers {measured}, here {workers}"
    if changed := sorted(n for n, v in versions.items() if record.versions.get(n) != v):
        return f"measured with other versions of {', '.join(changed)}"
    return None


def choose_cpu_engine(
    record: EnginesRecord | None,
    isa: CpuIsa,
    cpus: int,
    versions: dict[str, str],
    openvino_installed: bool,
    workers: dict[str, int],
) -> EngineChoice:
    """OpenVINO only when installed, measured here, verified, faster under load and, for a lone
    image, faster or within the rounds' spread (:func:`lone_not_slower`)."""
    if not openvino_installed:
        return EngineChoice("onnxruntime", "openvino is not installed here")
    if record is None:
        return EngineChoice("onnxruntime", f"OpenVINO not measured for this model here ({TRIAL} measures it)")
    measured = figures(record)
    if (other := same_machine(record, isa, cpus, versions, workers)) is not None:
        return EngineChoice("onnxruntime", f"engines.json does not apply: {other} ({TRIAL} re-measures)", measured)
    cosine = record.cosine_min.get("global", float("nan"))
    if not cosine >= OPENVINO_MIN_COSINE:  # NaN fails too
        why = f"OpenVINO's global cosine {cosine:.6f} to the fp32 graph on photos is below {OPENVINO_MIN_COSINE}"
        return EngineChoice("onnxruntime", why, measured)
    ov, base = record.openvino.images_s, record.baseline.images_s
    rates = ", ".join(f"batch {b}: {ov.get(b, 0):.1f} vs {r:.1f} images/s" for b, r in sorted(base.items()))
    against = f"OpenVINO {record.openvino.precision} vs ONNX Runtime {record.baseline.graph} ({rates})"
    loaded = [b for b in base if b > 1]
    if not loaded or any(ov.get(b, 0.0) <= base[b] for b in loaded):
        return EngineChoice("onnxruntime", f"not faster under load here: {against}", measured)
    if 1 in base and not lone_not_slower(record):
        return EngineChoice("onnxruntime", f"slower for a lone image beyond the rounds' spread: {against}", measured)
    return EngineChoice("openvino", f"verified (global cosine {cosine:.6f}) and faster here: {against}", measured)


def lone_not_slower(record: EnginesRecord) -> bool:
    """OpenVINO's batch-1 (lone image) median is higher, or its best round reaches the baseline's
    worst: the difference is within what the machine's own drift moved between rounds. Why the
    leniency: the lone-image figure is one caller on a machine that other work shares, and it
    swung by a fifth between two builds on the same machine, while the loaded figure (the one the
    service exists for) kept its 2x; a strict rule there flipped the choice at random."""
    ov, base = record.openvino, record.baseline
    if ov.images_s.get(1, 0.0) > base.images_s.get(1, float("inf")):
        return True
    ov_rounds, base_rounds = ov.rounds.get(1, ()), base.rounds.get(1, ())
    return bool(ov_rounds and base_rounds) and max(ov_rounds) >= min(base_rounds)


def engine_versions() -> dict[str, str]:
    """The installed versions a record's timings depend on (``absent`` when not installed)."""
    out = {}
    for name in ("openvino", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def choose_for_model(model: str, isa: CpuIsa, cpus: int, workers: dict[str, int]) -> EngineChoice:
    """:func:`choose_cpu_engine` for a model directory's ``engines.json`` and this installation."""
    versions = engine_versions()
    try:
        record = read_engines(model) if Path(model).is_dir() else None
    except CheckpointError as e:
        return EngineChoice("onnxruntime", f"engines.json is unreadable ({e.problem})")
    return choose_cpu_engine(record, isa, cpus, versions, versions["openvino"] != "absent", workers)
