"""Markdown tables for :mod:`bench.serve_bench` results (kept apart from the measuring code)."""

from __future__ import annotations


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def load_table(rows: list[tuple[str, dict]]) -> list[str]:
    out = [
        "| server | case | clients | images/s | p50 ms | p95 ms | p99 ms | requests | 503s | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in rows:
        server, _, case = label.partition(" | ")
        out.append(
            f"| {server} | {case} | {r['concurrency']} | {r['images_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['p99_ms']:.0f} | {r['requests']} | {r['rejected']} | {r['errors']} |"
        )
    return out


def ceiling_table(ceilings: list[dict]) -> list[str]:
    sizes = sorted({int(b) for c in ceilings for b in c["images_s"]})
    out = [
        "| backend | dtype | workers | " + " | ".join(f"batch {b} img/s" for b in sizes) + " | best | batch-1 ms |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in sizes) + " | ---: | ---: |",
    ]
    for c in ceilings:
        rates = {int(k): v for k, v in c["images_s"].items()}
        cells = " | ".join(_fmt(rates.get(b)) for b in sizes)
        out.append(
            f"| {c['backend']} | {c['dtype']} | {c.get('workers', 1)} | {cells} "
            f"| {c['best_images_s']:.1f} (b={c['best_batch']}) | {c['batch1_ms']:.1f} |"
        )
    return out


def goal_table(goals: list[dict]) -> list[str]:
    out = ["| goal | target | measured | met |", "| --- | --- | ---: | --- |"]
    for g in goals:
        v = g["measured"]
        shown = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        out.append(f"| {g['goal']} | {g['target']} | {shown} | {met} |")
    return out


def _runs(res: dict) -> list[tuple[str, dict]]:
    rows = []
    for key, name in (("service", "service"), ("nobatch", "service, batch 1"), ("naive", "naive")):
        part = res.get(key, {})
        rows += [(f"{name} | small JPEG, global", r) for r in part.get("sweep", [])]
        if "large" in part:
            rows.append((f"{name} | 12 MP JPEG, global", part["large"]))
    for label, r in res.get("service", {}).get("outputs", {}).items():
        if label != "global (JSON)":
            rows.append((f"service | small JPEG, {label}", r))
    return rows


def profile_lines(prof: dict) -> list[str]:
    if "error" in prof:
        return [f"Profile failed: {prof['error']}"]
    out = []
    if prof.get("thread_cpu_ms_per_image"):
        cpu = prof["thread_cpu_ms_per_image"]
        out += ["CPU time per image answered, by server thread (/proc, during the profiled c=16 run):", ""]
        out += [f"- {name}: {ms:.2f} ms" for name, ms in cpu.items()]
        out += [f"- all threads: {sum(cpu.values()):.2f} ms", ""]
    out += [f"py-spy, {prof['samples']} samples of non-idle threads at c=16:", ""]
    out += [f"- {stage}: {share:.0%}" for stage, share in prof["stage_share"].items()]
    out += ["", "Top leaf frames:", ""]
    out += [f"- {share:.1%} `{frame}`" for frame, share in prof["top_leaf_frames"]]
    return out


def paired_lines(paired: dict) -> list[str]:
    out = [
        f"Both servers up at once, alternating rounds at c={paired['concurrency']} (goal ratios use the medians):",
        "",
        "| round | images | service images/s | service batch-1 images/s | naive images/s | service/naive |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in paired["rounds"]:
        one = r.get("service, batch 1")
        out.append(
            f"| {r['round']} | {r['images']} | {r['service']['images_s']:.1f} "
            f"| {'' if one is None else format(one['images_s'], '.1f')} | {r['naive']['images_s']:.1f} "
            f"| {r['ratio']:.2f} |"
        )
    medians = ", ".join(f"{k} {v:.2f}x" for k, v in paired["median_ratio"].items())
    nobatch = paired.get("median_nobatch_ratio")
    extra = "" if nobatch is None else f" Service with batch 1 / naive (small JPEG): {nobatch:.2f}x."
    out += ["", f"Median service/naive ratio: {medians}.{extra}"]
    if paired.get("c1_latency"):
        out += [
            "",
            "Lone requests, each round: the service's c=1 p50 next to the floor measured just before in the "
            "bench process (the service's `decode_image` on the small photos + one batch-1 forward of its "
            "backend, medians):",
            "",
            "| round | floor ms | service c=1 p50 ms | ratio |",
            "| ---: | ---: | ---: | ---: |",
        ]
        out += [
            f"| {x['round']} | {x['floor_ms']:.1f} | {x['service_p50_ms']:.1f} | {x['ratio']:.3f} |"
            for x in paired["c1_latency"]
        ]
        out += ["", f"Median ratio: {paired['median_c1_ratio']:.3f}."]
    return out


def stage_lines(metric_lines: list[str]) -> list[str]:
    """Means over the whole service run from its own /metrics (every case, incl. 12 MP photos)."""
    values = {}
    for line in metric_lines:
        key, _, value = line.rpartition(" ")
        values[key] = float(value)

    def stage(name: str) -> tuple[float, float]:
        return values.get(f'jepa_stage_seconds_sum{{stage="{name}"}}', 0.0), values.get(
            f'jepa_stage_seconds_count{{stage="{name}"}}', 0.0
        )

    batches, images = values.get("jepa_batch_size_count", 0.0), values.get("jepa_batch_size_sum", 0.0)
    if not batches:
        return []
    inf_s, _ = stage("inference")
    parts = [f"{images / batches:.1f} images per batch", f"inference {1000 * inf_s / images:.1f} ms per image"]
    for name in ("decode", "queue", "encode"):
        total, count = stage(name)
        if count:
            parts.append(f"{name} {1000 * total / count:.1f} ms per {'image' if name == 'queue' else 'request'}")
    return ["From the service's /metrics over its whole run: " + "; ".join(parts) + "."]


def isa_line(machine: dict) -> str:
    """The CPU's ISA for a report header (older results.json files have none)."""
    isa = machine.get("isa")
    if not isa:
        return "ISA: not recorded."
    bf16 = "yes" if isa["native_bf16"] else "no (emulated)"
    vnni = "yes" if isa["vnni"] else "no"
    flags = " ".join(isa["flags"]) or "no AVX2"
    return f"ISA: **{isa['kind']}** ({flags}); bf16 in hardware: {bf16}, int8 VNNI: {vnni}."


def markdown(res: dict) -> str:
    m = res["machine"]
    svc = res.get("service", {})
    backend = svc.get("info", {}).get("backend", {})
    lines = [
        "# Service benchmark (bench/serve_bench.py)",
        "",
        f"Machine: {m['cpu']}, {m['affinity']} CPUs usable; Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}. Model: `{res['model']}`.",
        isa_line(m),
        f"Config: {res['config']}",
        "",
    ]
    if backend:
        lines += [
            f"The service ran `{' '.join(svc['argv'])}`: backend **{backend.get('name')}**, dtype "
            f"{backend.get('dtype')}, device {backend.get('device')} ({backend.get('why')}); "
            f"peak RSS {svc.get('peak_rss_mib', 0):.0f} MiB. Min cosine of its global embeddings vs fp32 "
            f"`embed()`: {_fmt(svc.get('min_cosine_vs_fp32'), '.6f')}.",
            "",
        ]
    lines += [*stage_lines(svc.get("metrics", [])), ""]
    if "goals" in res:
        lines += ["## Goals", "", *goal_table(res["goals"]), ""]
    if "source" in res:
        from bench.source_bench import markdown as source_markdown

        lines += source_markdown(res["source"])
    if "ceiling" in res:
        lines += ["## Model-only ceiling", "", *ceiling_table(res["ceiling"]), ""]
    lines += ["## Load (closed-loop clients, multipart JPEG uploads)", "", *load_table(_runs(res)), ""]
    if "paired" in res:
        lines += ["## Service vs naive, paired", "", *paired_lines(res["paired"]), ""]
    if "decode" in res:
        from bench.decode_bench import markdown as decode_md

        dec = res["decode"]["service_decode_ms"]
        lines += ["## Decode", "", decode_md(res["decode"]["table"]), ""]
        lines += [
            f"Through the service's own `decode_image`: small JPEG {dec['small']:.1f} ms, 12 MP JPEG "
            f"{dec['large']:.1f} ms per image.",
            "",
        ]
    if "profile" in svc:
        lines += ["## Profile", "", *profile_lines(svc["profile"]), ""]
    lines += ["Seconds per part: " + ", ".join(f"{k} {v}" for k, v in res.get("seconds", {}).items())]
    return "\n".join(lines) + "\n"
