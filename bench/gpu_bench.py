"""The GPU run: ViT-H/14 (random weights) model-only ceiling vs the service, against the card's matmul rate.

Parts, each in its own ``try`` so one failure keeps the others' results: the card's measured bf16
matmul rate (an ``n^3`` matmul), the model's FLOPs per image, the torch ceiling in bf16 and fp16
at several batch sizes (and its model FLOP utilisation), ONNX Runtime CUDA if that build is
installed, and the service (torch backend, cuda, bf16) under concurrency with real JPEGs.
Results go to ``OUT/results.json`` (after every part) and ``OUT/results.md``.

    python -m bench.gpu_bench OUT [--size huge --patch 14 --device cuda]   # see bench/gpu.sh
    python -m bench.gpu_bench /tmp/g --size tiny --patch 16 --device cpu --matmul 512 --quick   # CPU check
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path

from bench import ceiling as ceiling_mod
from bench.flops import counted_flops, encoder_flops
from bench.gpu_report import markdown

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def matmul_rate(device: str, n: int, dtype_name: str = "bf16") -> dict:
    """Measured dense matmul FLOP/s of an ``n x n @ n x n`` product (the card's practical peak)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = ceiling_mod._cuda_sync if device == "cuda" else (lambda: None)
    sec = ceiling_mod.time_forward(lambda: a @ b, min_time_s=1.0, min_iters=5, sync=sync)
    return {"n": n, "dtype": dtype_name, "seconds": sec, "tflops": 2 * n**3 / sec / 1e12}


def make_model_dir(args: argparse.Namespace, root: Path) -> tuple[Path, dict]:
    """Random-weight encoder (built on the device, so ViT-H initialises quickly) saved as a model dir."""
    import torch

    import jepa

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(args.device):
        model = jepa.build_encoder(args.size, patch_size=args.patch, image_size=args.image_size)
    info = {
        "size": args.size,
        "patch": args.patch,
        "image_size": args.image_size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "flops_per_image_g": encoder_flops(model.config.architecture) / 1e9,
    }
    try:
        info["counted_flops_per_image_g"] = counted_flops(model, args.image_size, args.device) / 1e9
    except Exception as e:  # the counter is a cross-check only
        info["counted_flops_error"] = repr(e)
    path = jepa.save_model_dir(model.cpu(), root / "model")
    info["build_and_save_s"] = time.perf_counter() - t0
    del model
    return path, info


def run_ceilings(model_dir: Path, args: argparse.Namespace) -> list[dict]:
    variants = [("torch", d) for d in args.dtypes.split(",")]
    res = ceiling_mod.ceilings(
        model_dir,
        variants=variants,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        device=args.device,
        min_time_s=args.min_time,
    )
    return [c.as_dict() for c in res]


def run_onnx_cuda(model_dir: Path, args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return {"skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {providers})"}
    import jepa
    from export.onnx import export_onnx

    export_onnx(jepa.load_encoder(model_dir), model_dir / "model.onnx")
    res = ceiling_mod.ceilings(
        model_dir, variants=[("onnxruntime", "fp32")], batch_sizes=[1, 32], device=args.device, min_time_s=args.min_time
    )
    return {"ceilings": [c.as_dict() for c in res]}


def run_service(model_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    """The real service on loopback under ``--concurrency`` clients sending real JPEGs."""
    import httpx

    from bench.images import jpegs_at, small_jpegs
    from bench.loadgen import RequestSpec, run_load
    from bench.server_proc import ServerProcess, rss_kib

    dtype = DTYPES[args.service_dtype]
    argv = ["--model", str(model_dir), "--backend", "torch", "--device", args.device, "--dtype", dtype]
    argv += args.service_args.split()
    result: dict = {"argv": argv}
    with ServerProcess(argv, log_path=out / "service.log", ready_timeout_s=args.ready_timeout) as server:
        result["info"] = httpx.get(server.url + "/info", timeout=10).json()
        cases = [("small JPEG, 1 image/request", small_jpegs(12), 1)]
        cases.append(("small JPEG, 8 images/request", small_jpegs(12), 8))
        if not args.quick:
            cases.append(("3 MP JPEG, 1 image/request", jpegs_at(3.0, 4), 1))
        runs = []
        for label, images, per_request in cases:
            spec = RequestSpec(server.url + "/embed", images_per_request=per_request)
            r = run_load(spec, images, args.concurrency, duration_s=args.duration, procs=args.client_procs)
            runs.append({"case": label, **r.as_dict()})
            _save_partial(out, {"service_runs_so_far": runs})
        result["runs"] = runs
        result["peak_rss_mib"] = rss_kib(server.pid, "VmHWM") / 1024
        result["metrics_excerpt"] = _batch_metrics(httpx.get(server.url + "/metrics", timeout=10).text)
    return result


def _batch_metrics(text: str) -> list[str]:
    return [line for line in text.splitlines() if "batch" in line and not line.startswith("#")][:40]


def _save_partial(out: Path, extra: dict) -> None:
    (out / "partial.json").write_text(json.dumps(extra, indent=2, default=str))


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": vars(args), "errors": {}}

    def part(name: str, fn):
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # keep going: each part is independent; the traceback is recorded
            results["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"[gpu_bench] {name}: {'ok' if name in results else 'FAILED'} in {results['seconds'][name]}s", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        part("environment", lambda: environment(args.device))
        part("matmul", lambda: matmul_rate(args.device, args.matmul))
        part("model", lambda: make_model_dir(args, Path(tmp))[1])
        model_dir = Path(tmp) / "model"
        if "model" in results:
            part("ceiling", lambda: run_ceilings(model_dir, args))
            if not args.skip_service:
                part("service", lambda: run_service(model_dir, args, out))
            if not args.skip_onnx:
                part("onnxruntime_cuda", lambda: run_onnx_cuda(model_dir, args))
    (out / "results.md").write_text(markdown(results))
    print((out / "results.md").read_text())
    return 1 if results["errors"] else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for results.json / results.md / service.log")
    p.add_argument("--size", default="huge")
    p.add_argument("--patch", type=int, default=14)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda")
    p.add_argument("--matmul", type=int, default=8192, help="n of the n^3 bf16 matmul")
    p.add_argument("--dtypes", default="bf16,fp16", help="torch ceiling dtypes")
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--min-time", type=float, default=1.5, help="seconds per ceiling measurement")
    p.add_argument("--service-dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--service-args", default="--max-batch-size 64", help="extra flags for python -m service")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per load run")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--quick", action="store_true", help="fewer service cases (the CPU check)")
    p.add_argument("--skip-service", action="store_true")
    p.add_argument("--skip-onnx", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
