"""What a run leaves for people to read: a JSONL log and PNG plots of loss, schedules and probe accuracy."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class JsonlLog:
    """Append-only JSON lines (``{"type": "train" | "probe" | "sync" | "budget", "step": ...}``).

    On resume, records beyond the checkpoint's step (written by the run that died after its last
    checkpoint) are dropped, so the log reads as one uninterrupted run.
    """

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        else:
            kept = [r for r in read_log(path) if r.get("step", 0) < resume_step or r["type"] == "budget"]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a log, skipping a last line cut short by a kill."""
    out = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class TextProgress:
    """A stand-in for tqdm where it is not installed: one line every ``every`` seconds on stderr."""

    def __init__(self, total: int, initial: int = 0, disable: bool = False, every: float = 10.0, **_: Any) -> None:
        self.total, self.n, self.disable, self.every = total, initial, disable, every
        self.start, self.start_n, self.last, self.postfix = time.perf_counter(), initial, 0.0, {}

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.disable or now - self.last < self.every:
            return
        self.last = now
        rate = (self.n - self.start_n) / max(now - self.start, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        info = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(f"step {self.n}/{self.total} {info} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress_bar(**kwargs: Any) -> Any:
    """tqdm when installed, else :class:`TextProgress`."""
    try:
        from tqdm import tqdm
    except ImportError:
        return TextProgress(**kwargs)
    return tqdm(**kwargs)


def plot_run(log_path: Path, out_path: Path) -> Path | None:
    """Three panels: loss, lr and EMA momentum, kNN probe top-1, all against the step.

    Returns None (with a message) when matplotlib is not installed: the plot is a convenience, and
    the log holds the same numbers.
    """
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib not installed: no plot written (the numbers are in {log_path})", file=sys.stderr)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [r for r in records if r["type"] == "train"]
    probe = [r for r in records if r["type"] == "probe"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], lw=0.8)
    axes[0].set(title="loss (smooth L1)", xlabel="step", yscale="log")
    axes[1].plot(steps, [r["lr"] for r in train], label="lr")
    axes[1].set(title="schedules", xlabel="step", ylabel="lr")
    twin = axes[1].twinx()
    twin.plot(steps, [r["momentum"] for r in train], color="tab:orange", label="EMA momentum")
    twin.set_ylabel("EMA momentum")
    axes[1].legend(loc="center left")
    twin.legend(loc="center right")
    if probe:
        axes[2].plot([r["step"] for r in probe], [100 * r["knn_top1"] for r in probe], marker="o")
    axes[2].set(title="kNN probe top-1 (%)", xlabel="step")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
