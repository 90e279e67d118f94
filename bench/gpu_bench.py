"""The GPU run: ViT-H/14 (random weights) model-only ceiling vs the service, against the card's matmul rate.

Parts (``--parts``), each in its own ``try`` so one failure keeps the others' results: the card's
measured bf16 matmul rate (an ``n^3`` matmul), the model's FLOPs per image, the torch ceiling
(``--dtypes``, ``--batch-sizes``) and its model FLOP utilisation, the service under concurrency
with real JPEGs in each of ``--variants`` (see :data:`VARIANTS`; by default GPU decode, CPU
decode and decode processes, all with CUDA graphs), the naive
IJepaModel server on the same device in bf16 (``naive``), the model's own kernels (``kernels``:
SDPA backends and a CUDA graph, bench/gpu_model.py) and ``torch.compile`` (``compile``), and ONNX
Runtime CUDA (``onnx``: the fp16 graph's ceiling, and the service on it) when that build is
installed. ``--profile S`` records the ``--full`` variants' servers with py-spy for S seconds under
load. Results go to ``OUT/results.json`` (after every part) and ``OUT/results.md``, with issue
13's goals per variant.

    python -m bench.gpu_bench OUT [--size huge --patch 14 --device cuda]   # see bench/gpu.sh
    python -m bench.gpu_bench /tmp/g --size tiny --patch 16 --device cpu --matmul 512 --quick   # CPU check
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

from bench import ceiling as ceiling_mod
from bench import pyspy
from bench.flops import counted_flops, encoder_flops
from bench.gpu_report import markdown

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Service configurations to compare, by name: extra flags for ``python -m service``.
VARIANTS = {
    # the service's default on a GPU (CUDA graphs; --gpu-decode is off by default until measured)
    "torch-bf16-graphs": "--backend torch --dtype bfloat16 --cuda-graphs",
    "torch-bf16-graphs-procs8": "--backend torch --dtype bfloat16 --cuda-graphs --decode-processes 8",
    "torch-bf16": "--backend torch --dtype bfloat16 --no-cuda-graphs",  # eager: one launch per operator
    "torch-bf16-2workers": "--backend torch --dtype bfloat16 --inference-workers 2",  # eager (graphs need 1)
    "torch-bf16-16decode": "--backend torch --dtype bfloat16 --no-cuda-graphs --decode-threads 16",
    "torch-bf16-wait5": "--backend torch --dtype bfloat16 --no-cuda-graphs --max-wait-ms 5",
    "ort-fp16": "--backend onnxruntime --dtype float16",
    # issue 13: where decode runs, and what the GIL switch interval and the attention kernel change
    "graphs-cpudecode": "--backend torch --dtype bfloat16 --cuda-graphs --gpu-decode off",
    "graphs-gpudecode": "--backend torch --dtype bfloat16 --cuda-graphs --gpu-decode on",
    "graphs-procs8": "--backend torch --dtype bfloat16 --cuda-graphs --gpu-decode off --decode-processes 8",
    "graphs-switch5": "--backend torch --dtype bfloat16 --cuda-graphs --gpu-decode off --gil-switch-interval-ms 5",
    "graphs-gpudecode-cudnn": "--backend torch --dtype bfloat16 --gpu-decode on --attention-backend cudnn",
}
# Service cases by name (service_cases): small JPEGs 1 or 8 per request, 3 MP JPEGs 1 per request.
CASES = ("small1", "small8", "large1")
# the first two run every case (--full 2); ort-fp16 runs where onnxruntime-gpu is installed
# issue 13's run: GPU decode (on), the default (CPU decode), decode processes (graphs-switch5 by hand)
DEFAULT_VARIANTS = "graphs-gpudecode,torch-bf16-graphs,graphs-procs8"
PARTS = ("matmul", "model", "ceiling", "service", "naive", "kernels", "compile", "onnx")
DEFAULT_PARTS = "matmul,model,ceiling,service,naive,kernels,compile"  # onnx: where onnxruntime-gpu is carried


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
    """Random-weight encoder (built on the device, so ViT-H initialises quickly) saved as a model dir.
    An existing ``root / "model"`` of the same architecture is reused (a second run on a warm machine)."""
    import torch

    import jepa

    path = root / "model"
    info_file = root / "model_info.json"
    if info_file.is_file() and (info := json.loads(info_file.read_text())).get("key") == _model_key(args):
        return path, {**info, "reused": True}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(args.device):
        model = jepa.build_encoder(args.size, patch_size=args.patch, image_size=args.image_size)
    info = {
        "key": _model_key(args),
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
    jepa.save_model_dir(model.cpu(), path)
    info["build_and_save_s"] = time.perf_counter() - t0
    info_file.write_text(json.dumps(info))
    del model
    return path, info


def _model_key(args: argparse.Namespace) -> str:
    return f"{args.size}/{args.patch}/{args.image_size}"


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
    """Export the fp16 graph (weights beside it), measure its ONNX Runtime CUDA ceiling, and leave it
    in the model directory for the ``ort-fp16`` service variant."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if args.device == "cuda" and "CUDAExecutionProvider" not in providers:
        return {"skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {providers})"}
    import jepa
    from export.onnx import export_onnx

    graph = model_dir / ceiling_mod.ONNX_GRAPHS["fp16"]
    t0 = time.perf_counter()
    if not graph.is_file():
        export_onnx(jepa.load_encoder(model_dir), graph, dtype="float16")
    export_s = time.perf_counter() - t0
    res = ceiling_mod.ceilings(
        model_dir,
        variants=[("onnxruntime", "fp16")],
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        device=args.device,
        min_time_s=args.min_time,
    )
    if not res:
        raise RuntimeError(f"no ceiling measured for {graph.name}")
    return {"onnxruntime": ort.__version__, "export_s": round(export_s, 1), "ceilings": [c.as_dict() for c in res]}


def run_service(model_dir: Path, args: argparse.Namespace, out: Path, variant: str, full: bool) -> dict:
    """The real service on loopback under ``--concurrency`` clients sending real JPEGs. The first
    ``--full`` variants run every case (and the py-spy profiles); the others the first case only."""
    import httpx

    from bench.images import jpegs_at, small_jpegs
    from bench.loadgen import RequestSpec, run_load
    from bench.server_proc import ServerProcess, rss_kib
    from bench.stages import breakdown, scrape

    argv = ["--model", str(model_dir), "--device", args.device, *VARIANTS[variant].split()]
    argv += args.service_args.split()
    result: dict = {"variant": variant, "argv": argv}
    with ServerProcess(argv, log_path=out / f"service-{variant}.log", ready_timeout_s=args.ready_timeout) as server:
        result["info"] = httpx.get(server.url + "/info", timeout=10).json()
        cases = service_cases(args, full, small_jpegs(12), jpegs_at)
        runs = []
        for k, (label, images, per_request, concurrency) in enumerate(cases):
            spec = RequestSpec(server.url + "/embed", images_per_request=per_request)
            # the first case: where every thread spends its time; the second: who holds the GIL
            mode = {0: "idle", 1: "gil"}.get(k) if full else None
            profiler = _start_profile(server.pid, out / f"pyspy-{variant}-{mode}.txt", mode, args) if mode else None
            before = scrape(server.url)
            r = run_load(spec, images, concurrency, duration_s=args.duration, procs=args.client_procs)
            stages = breakdown(before, scrape(server.url))
            if profiler is not None:
                result[f"profile_{mode}"] = _finish_profile(profiler)
            runs.append({"case": label, **r.as_dict(), "stages": stages})
            _save_partial(out, {variant: runs})
        result["runs"] = runs
        result["peak_rss_mib"] = rss_kib(server.pid, "VmHWM") / 1024
        result["metrics_excerpt"] = _batch_metrics(httpx.get(server.url + "/metrics", timeout=10).text)
    return result


def service_cases(args: argparse.Namespace, full: bool, small: list[bytes], jpegs_at) -> list[tuple]:
    """``(label, images, per request, clients)`` for ``--cases``: a full variant runs them all
    (``small1`` at every ``--concurrency``), the others the first case only."""
    cases = []
    for name in args.cases.split(",")[: None if full else 1]:
        if name == "small1":
            levels = args.concurrency[: None if full else 1]
            cases += [("small JPEG, 1 image/request", small, 1, c) for c in levels]
        elif name == "small8":
            cases.append(("small JPEG, 8 images/request", small, 8, args.concurrency[0]))
        elif name == "large1" and not args.quick:
            cases.append(("3 MP JPEG, 1 image/request", jpegs_at(3.0, 4), 1, args.concurrency[0]))
    return cases


def run_naive(model_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    """What a user would write (bench/naive_server.py: IJepaModel, one forward per request) on the
    same device in bf16, with the same weights, under the first service case's load."""
    from bench.images import small_jpegs
    from bench.loadgen import RequestSpec, run_load
    from bench.models import hf_copy
    from bench.server_proc import ServerProcess

    t0 = time.perf_counter()
    hf = hf_copy(model_dir)
    argv = [str(hf), "--device", args.device, "--dtype", "bfloat16"]
    result: dict = {"argv": ["python -m bench.naive_server", *argv], "hf_copy_s": round(time.perf_counter() - t0, 1)}
    with ServerProcess(
        argv, module="bench.naive_server", log_path=out / "naive.log", ready_timeout_s=args.ready_timeout
    ) as server:
        spec = RequestSpec(server.url + "/embed", images_per_request=1)
        r = run_load(spec, small_jpegs(12), args.concurrency[0], duration_s=args.duration, procs=args.client_procs)
        result["runs"] = [{"case": "small JPEG, 1 image/request", **r.as_dict()}]
    return result


def run_kernels(model_dir: Path, args: argparse.Namespace, names: str, flops_g: float) -> list[dict]:
    from bench.gpu_model import model_variants

    batch = max(int(b) for b in args.batch_sizes.split(","))
    kernels = [k for k in names.split(",") if k]
    return model_variants(model_dir, args.device, batch, args.min_time, kernels, flops_g * 1e9)


def _start_profile(pid: int, path: Path, mode: str, args: argparse.Namespace) -> subprocess.Popen | None:
    """py-spy (if installed) sampling the server's threads: every thread, idle ones too
    (``mode="idle"``), or only the thread holding the GIL (``mode="gil"``)."""
    if not args.profile:
        return None
    return pyspy.record(pid, path, args.profile, 200, "--idle" if mode == "idle" else "--gil")


def _finish_profile(proc: subprocess.Popen) -> dict:
    try:
        messages, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        messages, _ = proc.communicate()
    return {"returncode": proc.returncode, "output": messages.decode(errors="replace")[-1500:]}


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
    parts = set(args.parts.split(","))
    if unknown := parts - set(PARTS):
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from {PARTS}")
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown --variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    from service.cpu_features import cpu_isa

    results: dict = {"args": vars(args), "errors": {}, "isa": cpu_isa().as_dict()}

    def part(name: str, fn):
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # keep going: each part is independent; the traceback is recorded
            results["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "results.md").write_text(markdown(results))  # also after each part: a timeout keeps it
        print(f"[gpu_bench] {name}: {'ok' if name in results else 'FAILED'} in {results['seconds'][name]}s", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        root = Path(args.model_root or tmp)
        root.mkdir(parents=True, exist_ok=True)
        part("environment", lambda: environment(args.device))
        if "matmul" in parts:
            part("matmul", lambda: matmul_rate(args.device, args.matmul))
        part("model", lambda: make_model_dir(args, root)[1])
        model_dir = root / "model"
        if "model" in results:
            if "ceiling" in parts:
                part("ceiling", lambda: run_ceilings(model_dir, args))
            if "onnx" in parts:
                part("onnxruntime_cuda", lambda: run_onnx_cuda(model_dir, args))
            flops_g = results["model"].get("flops_per_image_g", 0.0)
            if "service" in parts:
                for k, variant in enumerate(variants):
                    if variant.startswith("ort-") and "ceilings" not in results.get("onnxruntime_cuda", {}):
                        continue  # no ONNX Runtime CUDA here (or its part failed): nothing to serve
                    run = partial(run_service, model_dir, args, out, variant, k < args.full)
                    part(f"service:{variant}", run)
            if "naive" in parts:
                part("naive", lambda: run_naive(model_dir, args, out))
            if "kernels" in parts:
                part("kernels", lambda: run_kernels(model_dir, args, args.kernels, flops_g))
            if "compile" in parts:  # last: its compile time is the least predictable
                part("compile", lambda: run_kernels(model_dir, args, "compile", flops_g))
    (out / "results.md").write_text(markdown(results))
    print((out / "results.md").read_text())
    return 1 if results["errors"] else 0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for results.json / results.md / service.log")
    p.add_argument("--size", default="huge")
    p.add_argument("--patch", type=int, default=14)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda")
    p.add_argument("--matmul", type=int, default=8192, help="n of the n^3 bf16 matmul")
    p.add_argument("--dtypes", default="bf16", help="torch ceiling dtypes (bf16,fp16)")
    p.add_argument("--batch-sizes", default="32,64")
    p.add_argument("--min-time", type=float, default=0.8, help="seconds per ceiling measurement")
    p.add_argument("--parts", default=DEFAULT_PARTS, help=f"which of {','.join(PARTS)} to run (the model always)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument(
        "--service-args",
        default="--max-batch-size 64 --max-concurrent-requests 512 --max-queue 1024",
        help="extra flags for python -m service",
    )
    p.add_argument("--model-root", default="", help="keep the model directory here (reused by a second run)")
    p.add_argument("--full", type=int, default=4, help="the first N variants run every case, the rest one")
    p.add_argument("--profile", type=float, default=0.0, help="py-spy seconds on the full variants' first two cases")
    p.add_argument("--concurrency", type=_ints, default=[64], help="clients; a list (64,256) repeats the first case")
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--quick", action="store_true", help="fewer service cases (the CPU check)")
    p.add_argument("--cases", default="small1,large1", help=f"service cases, of: {', '.join(CASES)}")
    p.add_argument(
        "--kernels",
        default="sdpa-auto,sdpa-flash,sdpa-cudnn,graphs",
        help="bench/gpu_model.py variants for the kernels part (compile is its own part)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
