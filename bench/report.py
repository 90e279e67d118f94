"""What the service benchmark reports: correctness spot-check, profile summary, goals, table, plot."""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench import pyspy
from bench.ceiling import SHORT_DTYPE
from bench.report_md import markdown

__all__ = ["goals", "machine", "markdown", "metric_lines", "min_cosine", "plot", "profile"]


def machine() -> dict:
    """The host every benchmark header names, including the CPU's ISA (AVX2 / AVX-512 / AMX): the
    same backend and dtype cost very differently across them (service/cpu_features.py)."""
    import onnxruntime
    import torch

    from bench.host import host

    return {
        **host(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def min_cosine(url: str, model: Path, jpegs: list[bytes]) -> float:
    """Smallest cosine between the service's global embeddings and fp32 ``load_encoder(model).embed``."""
    from PIL import Image

    import jepa

    files = [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpegs)]
    r = httpx.post(url + "/embed", files=files, timeout=120)
    r.raise_for_status()
    got = np.array([item["embedding"] for item in r.json()["data"]], dtype=np.float32)
    ref = jepa.load_encoder(model).embed([Image.open(io.BytesIO(b)) for b in jpegs])["global"]
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    return float(cos.min())


def metric_lines(text: str) -> list[str]:
    keep = ("jepa_batch_size_sum", "jepa_batch_size_count", "jepa_stage_seconds_sum", "jepa_stage_seconds_count")
    return [ln for ln in text.splitlines() if ln.startswith(keep) or ln.startswith("jepa_requests_total")]


def profile(server, images: list[bytes], concurrency: int, out: Path, duration_s: float) -> dict:
    """py-spy the server (all non-idle threads, incl. native frames) during a load run; top frames,
    and the CPU time each of the server's threads used per image (from /proc, named by py-spy)."""
    from bench.loadgen import RequestSpec, run_load

    raw = out / "profile.txt"
    spy = pyspy.record(server.pid, raw, duration_s, 100)
    if spy is None:
        return {"error": "py-spy not found (pip install py-spy, part of the bench extra)"}
    before = thread_cpu_s(server.pid)
    load = run_load(RequestSpec(server.url + "/embed"), images, concurrency, duration_s=duration_s - 1).as_dict()
    used = {tid: t - before.get(tid, 0.0) for tid, t in thread_cpu_s(server.pid).items()}
    messages, _ = spy.communicate(timeout=duration_s + 60)
    if spy.returncode != 0 or not raw.is_file():
        return {"error": f"py-spy failed ({spy.returncode}): {messages.decode(errors='replace')[-500:]}"}
    text = raw.read_text()
    names = thread_names(text)
    per_thread: Counter[str] = Counter()
    for tid, seconds in used.items():
        name = names.get(tid, "native threads (ONNX Runtime pools)")
        per_thread[pyspy.thread_group(name)] += seconds
    images_done = load["ok"]
    cpu_ms = {k: 1000 * v / images_done for k, v in per_thread.most_common() if v > 0} if images_done else {}
    return {"load": load, "thread_cpu_ms_per_image": cpu_ms, **summarise_profile(text)}


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of every thread of ``pid`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_names(raw_profile: str) -> dict[int, str]:
    """Thread id -> Python thread name, from py-spy ``--threads`` stacks (``thread (TID): NAME;...``)."""
    found = re.findall(r"(?:^|\n)thread \((\d+)\): ([^;]+);", raw_profile)
    return {int(tid): name.strip() for tid, name in found}


STAGES = {
    "inference (backend.run)": ("run (service/backends/",),
    "decode + resize": ("decode_image (service/decode.py",),
    "normalise batch": ("_assemble (service/batcher.py",),
    "multipart parsing": ("files_from_multipart", "multipart"),
    "response encoding": ("encode (service/encode.py",),
}


def summarise_profile(text: str) -> dict:
    """py-spy raw (``frame;frame;... count``) -> sample shares by stage and the top leaf frames."""
    total, stages, leaves = 0, Counter(), Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        for stage, marks in STAGES.items():
            if any(m in f for f in frames for m in marks):
                stages[stage] += n
                break
        else:
            stages["other (event loop, HTTP, client)"] += n
    share = {k: v / total for k, v in stages.most_common()} if total else {}
    top = [(f, n / total) for f, n in leaves.most_common(12)] if total else []
    return {"samples": total, "stage_share": share, "top_leaf_frames": top}


def _point(sweep: list[dict], c: int) -> dict | None:
    return next((r for r in sweep if r["concurrency"] == c), None)


def matching_ceiling(res: dict) -> dict | None:
    """The ceiling of the backend/dtype the service actually ran (from its /info): the best images/s
    over the thread layouts measured, and the fastest single batch-1 call (one caller, all threads)."""
    backend = res.get("service", {}).get("info", {}).get("backend", {})
    dtype = SHORT_DTYPE.get(backend.get("dtype"), "")
    found = [c for c in res.get("ceiling", []) if c["backend"] == backend.get("name") and c["dtype"] == dtype]
    if not found:
        return None
    best = max(found, key=lambda c: c["best_images_s"])
    alone = [c["batch1_ms"] for c in found if c.get("workers", 1) == 1]
    return {**best, "batch1_ms": min(alone) if alone else best["batch1_ms"]}


def goals(res: dict) -> list[dict]:
    """The issue's targets, each with its measured value and whether it was met (None: not measured)."""
    svc, naive = res.get("service", {}), res.get("naive", {})
    c = 16
    s16, n16 = _point(svc.get("sweep", []), c), _point(naive.get("sweep", []), c)
    ceil = matching_ceiling(res)
    out = []

    def goal(name: str, target: str, value: float | None, ok: bool | None) -> None:
        out.append({"goal": name, "target": target, "measured": value, "met": ok})

    paired = res.get("paired", {}).get("median_ratio", {})
    ratio = s16["images_s"] / n16["images_s"] if s16 and n16 and n16["images_s"] else None
    ratio = paired.get("small JPEG", ratio)
    goal("service / naive images/s at c=16 (small JPEG)", ">= 2.5x", ratio, None if ratio is None else ratio >= 2.5)
    sl, nl = svc.get("large"), naive.get("large")
    ratio = sl["images_s"] / nl["images_s"] if sl and nl and nl["images_s"] else None
    ratio = paired.get("12 MP JPEG", ratio)
    goal("service / naive images/s at c=16 (12 MP JPEG)", ">= 3x", ratio, None if ratio is None else ratio >= 3)
    share = s16["images_s"] / ceil["best_images_s"] if s16 and ceil else None
    goal("service at c=16 / own model-only ceiling", ">= 90%", share, None if share is None else share >= 0.9)
    s1, dec = _point(svc.get("sweep", []), 1), res.get("decode", {}).get("service_decode_ms", {}).get("small")
    # Two estimates: the sweep's c=1 p50 over the ceiling part's floor (measured minutes apart), and
    # the paired rounds (floor measured just before each c=1 run). The goal takes the larger.
    ratios = [res.get("paired", {}).get("median_c1_ratio")]
    if s1 and ceil and dec is not None:
        ratios.append(s1["p50_ms"] / (ceil["batch1_ms"] + dec))
    latency = max((r for r in ratios if r is not None), default=None)
    goal("c=1 p50 / (batch-1 forward + decode)", "<= 1.15", latency, None if latency is None else latency <= 1.15)
    outs = svc.get("outputs", {})
    base = outs.get("global (JSON)")
    for label in ("global+patch (base64 JSON)", "global+patch (binary safetensors)"):
        r = outs.get(label)
        cost = 1 - r["images_s"] / base["images_s"] if r and base and base["images_s"] else None
        goal(f"throughput cost of {label} vs global-only", "< 5%", cost, None if cost is None else cost < 0.05)
    cos = svc.get("min_cosine_vs_fp32")
    goal("min cosine vs fp32 embed()", ">= 0.999", cos, None if cos is None else cos >= 0.999)
    errors = sum(r["errors"] for part in (svc, naive) for r in part.get("sweep", []))
    goal("non-503 errors in all runs", "0", errors, errors == 0)
    if "source" in res:
        from bench.source_bench import goals as source_goals

        out += source_goals(res["source"])
    return out


def plot(res: dict, path: Path) -> None:
    """images/s and p50 latency against concurrency for each server, the ceiling as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("service", "our service (default)"), ("nobatch", "our service, batch 1"), ("naive", "naive")):
        sweep = res.get(key, {}).get("sweep", [])
        if sweep:
            xs = [r["concurrency"] for r in sweep]
            ax1.plot(xs, [r["images_s"] for r in sweep], marker="o", label=label)
            ax2.plot(xs, [r["p50_ms"] for r in sweep], marker="o", label=label)
    ceil = matching_ceiling(res)
    if ceil:
        ax1.axhline(ceil["best_images_s"], ls="--", c="grey", label=f"ceiling {ceil['backend']} {ceil['dtype']}")
    for ax, ylabel in ((ax1, "images/s"), (ax2, "p50 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{Path(res['model']).name} on {res['machine']['affinity']} CPU cores (small JPEGs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
