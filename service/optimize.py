"""Fast by default: build, once, the graphs this device runs best for the model the user gave, and
serve those; the second start finds them in the cache (:mod:`service.cache`).

On a CPU "best" is ONNX Runtime with the dynamic int8 graph where it stays within cosine 0.999 of
fp32 on photos, else the fp32 graph (``--dtype auto`` in :mod:`service.backends` decides from the
export.json the build writes). On CUDA nothing is built: torch bfloat16 with CUDA graphs served
fastest on the H200 (docs/BENCHMARKS.md), and that needs only the weights.

**Why a subprocess (``python -m export SOURCE --out STAGE --int8``) and not an import of export/:**

- service/ must run torch-free from an exported directory (tests/service/test_onnx.py proves it);
  importing export/ would put torch in every service process, and the import arrows
  (service -> jepa only) would break;
- it is the one verified export path users run by hand: the same graph, the same photo check, the
  same export.json -- not a second copy of it that could drift;
- the exporter holds the fp32 weights, a traced copy and the verification batches (GBs for ViT-H);
  a child process returns all of it to the OS when it exits, and an OOM-kill there is reported
  as a failed build (the service then serves the source as before) instead of killing the server.

Where openvino imports, the build then runs the engine trial (``python -m service.engine_trial``,
a second child process) on the new graphs: OpenVINO checked on photos and timed against the ONNX
Runtime graph on this machine, recorded in the entry's ``engines.json``, from which
:mod:`service.engine_choice` picks the engine at every start. A failed trial leaves no record, and
ONNX Runtime is served as before.

The build runs only where torch, onnx, onnxscript and onnxruntime can be imported (checked with
``find_spec``, nothing imported). The cache key covers everything that determines the result:
the weights' sha256, the source's config files, the project version, the versions of torch,
onnx, onnxscript and onnxruntime, the export recipe and the source's name (it becomes the
model's name).
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jepa.contract import CONFIG_FILE, ENGINES_FILE, WEIGHTS_FILE, graph_for_dtype, read_record
from jepa.errors import CheckpointError
from jepa.formats import detect_format, native, shards
from service import cache
from service.cpu_features import CpuIsa, cpu_isa
from service.settings import Settings

log = logging.getLogger("service")
# What the build runs (after SOURCE --out STAGE). The int8 graph is always written and its cosine
# recorded; the 0.999 rule is applied when serving, so a weak int8 graph costs nothing but disk.
RECIPE = ("--int8", "--int8-min-cos", "1e-6")
BUILD_NEEDS = ("torch", "onnx", "onnxscript", "onnxruntime")
KEY_VERSIONS = ("jepa-embed", *BUILD_NEEDS, "openvino")  # openvino: the entry's engines.json
TRIAL_TIMEOUT_S = 1800.0
SOURCE_CONFIGS = (CONFIG_FILE, "preprocessor_config.json")  # ours / HF's, and HF's preprocessing
DROPPED = (WEIGHTS_FILE,)  # the ONNX backend reads the graphs and config.json only
PROGRESS_EVERY_S = 30.0
PROGRESS_SPLIT = re.compile(r"[\r\n]")


class BuildError(RuntimeError):
    """The export subprocess failed; the message holds the end of its output."""


@dataclass
class Optimized:
    """What to load (``model_path``) and what ``/info`` says about how it came to be (``report``)."""

    model_path: str
    report: dict[str, object] = field(default_factory=dict)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_verified_graphs(model: Path) -> bool:
    """The source already holds what a build would make: export.json records the int8 graph and
    both graph files are present (``python -m export --int8`` was run on it)."""
    int8, fp32 = graph_for_dtype("int8"), graph_for_dtype("float32")
    try:
        record = read_record(model)
    except CheckpointError:  # an unreadable or older record: a build writes a current one
        return False
    return record is not None and int8 in record.graphs and all((model / g).is_file() for g in (fp32, int8))


def _format(source: Path) -> str | None:
    try:
        return detect_format(source)
    except CheckpointError:  # reported, naming the problem, when the source is loaded
        return None


def skip_reason(settings: Settings, model: Path, cuda: bool, isa: CpuIsa | None = None) -> str | None:
    """Why nothing is built for this start, or None when the build (or a cache hit) applies."""
    isa = isa or cpu_isa()
    if not settings.optimize:
        return "--no-optimize: serving the source as given"
    if cuda:
        return "device cuda: torch bfloat16 with CUDA graphs serves fastest there (BENCHMARKS.md); nothing to build"
    if settings.dtype == "bfloat16" and not cuda and not isa.native_bf16:
        why = (
            "dtype bfloat16 asked for explicitly, but this CPU has neither AVX512-BF16 nor AMX-BF16: bf16 is "
            "emulated here (ViT-S/16 ran 8x slower than fp32 on an AVX2 machine); --dtype auto never picks it"
        )
        log.warning("optimize: %s", why)
        return why
    if settings.backend == "torch" or settings.dtype in ("bfloat16", "float16") or settings.onnx_file:
        return "backend, dtype or ONNX file asked for explicitly: serving the source as given"
    if model.is_dir() and has_verified_graphs(model):
        return "the model directory already holds verified graphs (its export.json records the int8 graph)"
    if model.is_dir() and _format(model) == "native" and not (model / WEIGHTS_FILE).is_file():
        return "the model directory has graphs but no weights to build from: serving it as given"
    if missing := [m for m in BUILD_NEEDS if not _importable(m)]:
        return f"cannot build here: {', '.join(missing)} not installed (pip install 'jepa-embed[export]')"
    return None


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def cache_key(source: Path) -> tuple[str, dict[str, object]]:
    """``(key, identity)``: the key is the sha256 of the identity, which names every input of the build."""
    fmt = detect_format(source)
    if fmt == "native":
        native.read_config(source)  # an invalid config fails here, naming the problem, not in the export
    if fmt == "hf":
        weights = shards.weight_files(source)  # one file, or the shards its index names
    else:
        weights = [source if fmt == "meta" else source / WEIGHTS_FILE]
        if not weights[0].is_file():
            raise CheckpointError(weights[0], "no weights file to build from")
    configs = {} if fmt == "meta" else {n: cache.file_sum(source / n)["sha256"] for n in SOURCE_CONFIGS
                                        if (source / n).is_file()}  # fmt: skip
    identity: dict[str, object] = {
        "format": fmt,
        "name": source.name,
        "weights_sha256": shards.weights_sha256(weights),
        "configs_sha256": configs,
        "versions": {n: _version(n) for n in KEY_VERSIONS},
        "recipe": list(RECIPE),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:32], identity


class ExportRun:
    """``python -m export`` in a child process, its progress lines logged; :meth:`stop` ends it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.status = "starting the export"
        self._stopped = threading.Event()

    def run(self, source: Path, out: Path) -> float:
        """Export ``source`` into ``out``; returns the seconds it took, raises :class:`BuildError`."""
        cmd = [sys.executable, "-m", "export", str(source.resolve()), "--out", str(out), *RECIPE]
        log.info("optimize: building ONNX graphs: %s", " ".join(cmd))
        started = time.monotonic()
        if self._stopped.is_set():
            raise BuildError("stopped before it began")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines as they happen, not when a buffer fills
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        ticker = threading.Thread(target=self._tick, args=(started,), daemon=True)
        ticker.start()
        tail = self._follow()
        code = self.proc.wait()
        self._stopped.set()
        if code != 0:
            raise BuildError(f"python -m export exited with {code}: " + " | ".join(tail[-6:]))
        for line in tail:
            if line.startswith("| model"):  # the verification table: one row per graph
                log.info("optimize: %s", line)
        return time.monotonic() - started

    def _follow(self) -> list[str]:
        """Log each new step of the export's progress bar (tqdm rewrites its line with ``\\r``);
        returns the last lines of its output."""
        assert self.proc is not None and self.proc.stdout is not None
        lines: list[str] = []
        buffer, text = "", codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := self.proc.stdout.read1(65536):
            *done, buffer = PROGRESS_SPLIT.split(buffer + text.decode(chunk))
            for line in filter(None, (x.strip() for x in done)):
                step = line.split(":", 1)[0]
                if "%|" in line and step != self.status:
                    self.status = step
                    log.info("optimize: %s", line)
                elif "%|" not in line:
                    lines = [*lines[-40:], line]
        return [*lines, buffer.strip()] if buffer.strip() else lines

    def _tick(self, started: float) -> None:
        while not self._stopped.wait(PROGRESS_EVERY_S):
            log.info("optimize: build running for %.0f s", time.monotonic() - started)

    def stop(self) -> None:
        self._stopped.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()


def engine_trial(stage: Path, settings: Settings) -> str:
    """Run ``python -m service.engine_trial`` on the built graphs in ``stage``; returns what
    happened, for the entry's facts. A failure only costs the record (ONNX Runtime is served)."""
    if not _importable("openvino"):
        return "skipped: openvino is not installed"
    cmd = [sys.executable, "-m", "service.engine_trial", str(stage), "--threads", str(settings.thread_budget()),
           "--workers", str(settings.inference_workers), "--max-batch-size", str(settings.max_batch_size)]  # fmt: skip
    log.info("optimize: timing OpenVINO against ONNX Runtime: %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TRIAL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"failed: no result after {TRIAL_TIMEOUT_S:.0f} s"
    lines = (done.stdout + done.stderr).strip().splitlines() or ["(no output)"]
    if done.returncode != 0:
        (stage / ENGINES_FILE).unlink(missing_ok=True)
        log.warning("optimize: the engine trial failed (exit %s): %s", done.returncode, " | ".join(lines[-4:]))
        return f"failed (exit {done.returncode}): {lines[-1]}"
    log.info("optimize: %s", lines[-1])
    return "measured"


@dataclass
class Optimizer:
    """One start's optimisation: :meth:`check` (fast) says whether a build is needed, :meth:`build`
    (minutes, call off the event loop) does it; ``status`` is the current step, for ``/ready``."""

    settings: Settings
    source: str
    cuda: bool
    status: str = "checking the cache"
    run: ExportRun = field(default_factory=ExportRun)
    root: Path = field(init=False)  # set by check(), used by build()
    key: str = field(init=False)
    identity: dict[str, object] = field(init=False)

    def check(self) -> Optimized | None:
        """The result when nothing needs building (skipped, or a verified cache entry), else None."""
        reason = skip_reason(self.settings, Path(self.source), self.cuda)
        if reason is not None:
            log.info("optimize: %s", reason)
            return Optimized(self.source, {"status": "skipped", "why": reason, "isa": cpu_isa().as_dict()})
        self.root = cache.usable_root(self.settings.cache_dir)
        self.key, self.identity = cache_key(Path(self.source))
        manifest, why = cache.verify(self.root / self.key, self.key)
        if manifest is not None:
            return self._hit(manifest)
        log.info("optimize: no usable cache entry %s (%s): a build is needed", self.root / self.key, why)
        return None

    def build(self) -> Optimized:
        """Build (or wait for another process's build of) the entry; falls back to the source on failure."""
        entry = self.root / self.key

        def waiting() -> None:
            self.status = f"waiting for another process building {entry}"
            log.info("optimize: %s", self.status)

        with cache.locked(self.root, self.key, on_wait=waiting):
            manifest, why = cache.verify(entry, self.key)
            if manifest is not None:
                return self._hit(manifest)
            if entry.exists():
                log.warning("optimize: cache entry %s rejected (%s); rebuilding it", entry, why)
            self.status = f"building ONNX graphs for {self.source} into {entry}"
            stage = cache.new_stage(self.root, self.key)
            try:
                seconds = self.run.run(Path(self.source), stage)
                for name in DROPPED:
                    (stage / name).unlink(missing_ok=True)
                self.status = f"timing OpenVINO against ONNX Runtime on {entry}"
                trial_started = time.monotonic()
                trial = engine_trial(stage, self.settings)
                trial_seconds = time.monotonic() - trial_started
                manifest = cache.write_manifest(stage, self.key, {**self._facts(seconds, why), "engine_trial": trial})
                cache.publish(stage, entry)
            except (BuildError, OSError) as e:
                shutil.rmtree(stage, ignore_errors=True)
                log.warning("optimize: build failed, serving the source as given: %s", e)
                return Optimized(self.source, {"status": "failed", "why": str(e), "isa": cpu_isa().as_dict()})
        log.info(
            "optimize: built %s: export and verification %.1f s, engine trial %.1f s", entry, seconds, trial_seconds
        )
        return Optimized(str(entry), {"status": "built", **self._report(manifest)})

    def _facts(self, seconds: float, why: str) -> dict[str, object]:
        return {
            "source": self.source,
            "identity": self.identity,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(seconds, 1),
            "built_because": why,
            "isa": cpu_isa().as_dict(),
        }

    def _hit(self, manifest: cache.Manifest) -> Optimized:
        log.info("optimize: serving the cached build %s", self.root / self.key)
        return Optimized(str(self.root / self.key), {"status": "cache hit", **self._report(manifest)})

    def _report(self, manifest: cache.Manifest) -> dict[str, object]:
        facts = manifest.facts
        return {
            "why": "CPU: ONNX Runtime graphs (fp32, and int8 where within cosine 0.999 of fp32 on photos) "
            "run 2-4x eager torch fp32 here, and OpenVINO on the fp32 graph where the entry's engines.json "
            "shows it verified and faster on this machine (backend.engine_choice); the source had none",
            "entry": str(self.root / self.key),
            "source": self.source,
            "created": facts.get("created"),
            "build_seconds": facts.get("build_seconds"),
            "files": sorted(manifest.files),
            "isa": cpu_isa().as_dict(),
            "built_on_isa": facts.get("isa"),
            "engine_trial": facts.get("engine_trial"),
        }

    def progress(self) -> str:
        """The current step, for ``/ready`` while the build runs."""
        return f"{self.status} ({self.run.status})" if self.status.startswith("building") else self.status

    def stop(self) -> None:
        self.run.stop()
