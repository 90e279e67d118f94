"""Markdown for :mod:`bench.gpu_bench` results: every figure next to the part that produced it."""

from __future__ import annotations

from bench.report_md import isa_line


def _ceiling_rows(results: dict) -> list[str]:
    flops = results.get("model", {}).get("flops_per_image_g", 0.0) * 1e9
    peak = results.get("matmul", {}).get("tflops", 0.0) * 1e12
    rows = [
        "| backend | dtype | batch | images/s | model TFLOP/s | share of measured matmul rate |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in _all_ceilings(results):
        for bs, rate in c["images_s"].items():
            achieved = rate * flops
            share = f"{achieved / peak:.0%}" if peak else "n/a"
            best = " (best)" if int(bs) == int(c["best_batch"]) else ""
            rows.append(
                f"| {c['backend']} | {c['dtype']} | {bs}{best} | {rate:.1f} | {achieved / 1e12:.3g} | {share} |"
            )
    return rows


def _all_ceilings(results: dict) -> list[dict]:
    return results.get("ceiling", []) + results.get("onnxruntime_cuda", {}).get("ceilings", [])


def _service_ceiling(results: dict, svc: dict) -> tuple[str, float | None]:
    """The model-only ceiling of the backend and dtype the service ran (from its /info), matched as
    ``serve_bench`` matches it (the best thread layout where several were measured)."""
    from bench.ceiling import SHORT_DTYPE
    from bench.report import matching_ceiling

    backend = svc.get("info", {}).get("backend", {})
    label = f"{backend.get('name', '?')} {SHORT_DTYPE.get(backend.get('dtype', ''), '?')}"
    match = matching_ceiling({"service": svc, "ceiling": _all_ceilings(results)})
    return label, (match["best_images_s"] if match else None)


STAGE_COLUMNS = ("batch_size", "handler_ms", "decode_ms", "queue_ms", "inference_ms")


def _stage(run: dict, key: str) -> str:
    value = run.get("stages", {}).get(key)
    return "n/a" if value is None else f"{value:.1f}"


def _service_rows(results: dict) -> list[str]:
    rows = [
        "| variant | case | concurrency | images/s | share of its ceiling | p50 ms | p95 ms | p99 ms | 503s | errors "
        "| images/batch | handler ms | decode ms | queue ms | inference ms/batch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for key, svc in results.items():
        if not key.startswith("service:"):
            continue
        label, best = _service_ceiling(results, svc)
        limits = svc.get("info", {}).get("limits", {})
        switch = limits.get("gil_switch_interval_ms", "n/a")
        decode = f"GPU decode: {limits.get('gpu_decode', 'n/a')}; switch interval {switch} ms"
        notes.append(f"- `{svc['variant']}`: `{' '.join(svc.get('argv', []))}`; peak RSS "
                     f"{svc.get('peak_rss_mib', float('nan')):.0f} MiB; ceiling: {label}; {decode}")  # fmt: skip
        for r in svc.get("runs", []):
            share = f"{r['images_s'] / best:.0%}" if best else "n/a"
            rows.append(
                f"| {svc['variant']} | {r['case']} | {r['concurrency']} | {r['images_s']:.1f} | {share} "
                f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['rejected']} | {r['errors']} | "
                + " | ".join(_stage(r, k) for k in STAGE_COLUMNS)
                + " |"
            )
    legend = (
        "Stage means come from the server's own metrics over each run (bench/stages.py): handler, decode "
        "ms per request, queue ms per image, inference ms per batch; client p50 minus handler is HTTP "
        "and the client."
    )
    return [*rows, "", legend, "", *notes]


def _kernel_rows(results: dict) -> list[str]:
    peak = results.get("matmul", {}).get("tflops", 0.0)
    rows = [
        "| variant (bench/gpu_model.py) | batch | images/s | model TFLOP/s | share of measured matmul rate | setup s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in results.get("kernels", []):
        if "error" in k:
            rows.append(f"| {k['variant']} | {k['batch']} | failed: {k['error'][:120]} | | | |")
            continue
        tflops = k.get("tflops", 0.0)
        share = f"{tflops / peak:.0%}" if peak and tflops else "n/a"
        rows.append(
            f"| {k['variant']} | {k['batch']} | {k['images_s']:.1f} | {tflops:.3g} | {share} | {k.get('setup_s', '')} |"
        )
    return rows


def _first_run(svc: dict, case: str) -> dict | None:
    return next((r for r in svc.get("runs", []) if r["case"] == case), None)


def goal_rows(results: dict) -> list[str]:
    """Issue 13's goals for every service variant that ran: shares of its ceiling on small and
    3 MP JPEGs (1 per request), and its small-JPEG rate over the naive server's."""
    naive = _first_run(results.get("naive", {}), "small JPEG, 1 image/request")
    rows = [
        "| variant | small JPEG share (goal >= 90%) | 3 MP share (goal >= 70%) | x naive, small JPEG (goal >= 15x) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, svc in results.items():
        if not key.startswith("service:"):
            continue
        _, best = _service_ceiling(results, svc)
        small = _first_run(svc, "small JPEG, 1 image/request")
        large = _first_run(svc, "3 MP JPEG, 1 image/request")
        cells = [f"{r['images_s'] / best:.0%}" if r and best else "n/a" for r in (small, large)]
        ratio = f"{small['images_s'] / naive['images_s']:.1f}x" if small and naive and naive["images_s"] else "n/a"
        rows.append(f"| {svc['variant']} | {cells[0]} | {cells[1]} | {ratio} |")
    return rows


def _naive_lines(results: dict) -> list[str]:
    naive = results.get("naive", {})
    run = _first_run(naive, "small JPEG, 1 image/request")
    if run is None:
        return []
    return [
        f"Naive server (`{' '.join(naive.get('argv', []))}`): {run['images_s']:.1f} images/s at "
        f"{run['concurrency']} clients, small JPEGs, p50 {run['p50_ms']:.0f} ms, {run['errors']} errors.",
        "",
    ]


def markdown(results: dict) -> str:
    env = results.get("environment", {})
    mm = results.get("matmul", {})
    model = results.get("model", {})
    lines = [
        "# GPU benchmark (bench/gpu_bench.py)",
        "",
        f"Device: {env.get('gpu', env.get('device', '?'))}; torch {env.get('torch', '?')}; "
        f"CUDA {env.get('cuda', 'n/a')}; Python {env.get('python', '?')}.",
        isa_line({"isa": results.get("isa")}),
        f"Measured matmul rate: {mm.get('tflops', float('nan')):.3g} TFLOP/s "
        f"({mm.get('dtype', '?')}, {mm.get('n', '?')}^3).",
        f"Model: ViT-{model.get('size', '?')}/{model.get('patch', '?')} at {model.get('image_size', '?')} px, "
        f"{model.get('params_m', float('nan')):.0f} M parameters, {model.get('flops_per_image_g', float('nan')):.1f} "
        f"GFLOP/image (architecture count; torch's counter: {model.get('counted_flops_per_image_g', 'n/a')}).",
        "",
        "## Model-only ceiling",
        "",
        *_ceiling_rows(results),
        "",
    ]
    if "skipped" in results.get("onnxruntime_cuda", {}):
        lines += [f"ONNX Runtime CUDA: skipped ({results['onnxruntime_cuda']['skipped']}).", ""]
    if results.get("kernels"):
        lines += ["## The model's own kernels (bf16, input on the device)", "", *_kernel_rows(results), ""]
    if any(key.startswith("service:") for key in results):
        lines += ["## Service", "", *_service_rows(results), ""]
        lines += ["## Goals (issue 13)", "", *goal_rows(results), "", *_naive_lines(results)]
    if results.get("errors"):
        lines += ["## Parts that failed", ""]
        for name, err in results["errors"].items():
            lines += [f"### {name}", "", "```", err.strip()[-2500:], "```", ""]
    lines += ["Seconds per part: " + ", ".join(f"{k} {v}" for k, v in results.get("seconds", {}).items())]
    return "\n".join(lines) + "\n"
