"""Images/s of the exported ONNX graphs in ONNX Runtime vs the PyTorch module, side by side in one run.

    python bench/export_bench.py                      # ViT-S/16 at 224 (random weights) + the default model if present
    python bench/export_bench.py --batch-sizes 1,8,32 --min-seconds 2 --device cuda

Columns: PyTorch eager fp32 and bf16; ONNX Runtime fp32 (CUDA provider when there is one, else CPU),
fp16 (CUDA only) and dynamic int8 (CPU). Every timing feeds a host float32 array and returns host
arrays, so copies to and from the GPU count for both runtimes. Figures are noisy on a shared
machine; compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, importing this checkout

from bench.host import host_line  # noqa: E402 (after the path is set)

DEFAULT_MODEL = REPO / "models" / "ijepa-vit-tiny-cifar10"
COLUMNS = ("torch fp32", "torch bf16", "ORT fp32", "ORT fp16", "ORT int8 (CPU)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", help="model sources (default: random ViT-S/16@224 + the default model)")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--min-seconds", type=float, default=0.5, help="time each cell about this long (on average)")
    p.add_argument("--min-rounds", type=int, default=2, help="at least this many timed calls per cell")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


def interleaved_rates(
    runners: dict[str, Callable[[], object]], batch: int, min_seconds: float, min_rounds: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Images/s of each runner, timed round-robin (one call each per round) after one warm-up call.

    Interleaving spreads any change in machine load over all columns alike, so the ratios hold
    even when the absolute figures drift.
    """
    spent = dict.fromkeys(runners, 0.0)
    for fn in runners.values():
        fn()
    sync()
    rounds, start = 0, time.perf_counter()
    while rounds < min_rounds or time.perf_counter() - start < min_seconds * len(runners):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            sync()
            spent[name] += time.perf_counter() - t0
        rounds += 1
    return {name: rounds * batch / t for name, t in spent.items()}


def torch_runner(encoder, device: str, dtype: torch.dtype, x: np.ndarray) -> Callable[[], object]:
    from jepa.heads import mean_pool

    model = copy.deepcopy(encoder).to(device=device, dtype=dtype)  # the caller's encoder stays fp32 on CPU

    @torch.inference_mode()
    def run():
        tokens = model(torch.from_numpy(x).to(device=device, dtype=dtype))
        return tokens.float().cpu().numpy(), mean_pool(tokens).float().cpu().numpy()

    return run


def ort_runner(path: Path, providers: list[str], x: np.ndarray) -> Callable[[], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # idle ORT threads spin by default, which would steal cores from the PyTorch runs in between
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=providers)
    return lambda: session.run(None, {"pixel_values": x})


def export_graphs(encoder, workdir: Path, cuda: bool) -> dict[str, Path]:
    from export.onnx import export_onnx
    from export.quantize import quantize_int8

    graphs = {"fp32": export_onnx(encoder, workdir / "model.onnx")}
    graphs["int8"] = quantize_int8(graphs["fp32"], workdir / "model.int8.onnx")
    if cuda:
        graphs["fp16"] = export_onnx(encoder, workdir / "model.fp16.onnx", dtype="float16")
    return graphs


def bench_model(name: str, encoder, args: argparse.Namespace, cuda: bool) -> list[str]:
    """One markdown row per batch size for ``encoder``."""
    import onnxruntime as ort

    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ort_cuda = cuda and "CUDAExecutionProvider" in ort.get_available_providers()
    main_providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if ort_cuda else ["CPUExecutionProvider"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        graphs = export_graphs(encoder, Path(tmp), ort_cuda)
        print(f"<!-- {name}: exported {', '.join(graphs)} in {time.perf_counter() - start:.0f} s -->", flush=True)
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            s = encoder.config.image_size
            x = np.random.default_rng(0).standard_normal((batch, 3, s, s)).astype(np.float32)
            runners = {
                "torch fp32": torch_runner(encoder, device, torch.float32, x),
                "torch bf16": torch_runner(encoder, device, torch.bfloat16, x),
                "ORT fp32": ort_runner(graphs["fp32"], main_providers, x),
                "ORT fp16": ort_runner(graphs["fp16"], main_providers, x) if ort_cuda else None,
                "ORT int8 (CPU)": ort_runner(graphs["int8"], ["CPUExecutionProvider"], x),
            }
            active = {k: fn for k, fn in runners.items() if fn is not None}
            rate = dict.fromkeys(COLUMNS) | interleaved_rates(active, batch, args.min_seconds, args.min_rounds, sync)
            cells = [f"{rate[c]:.1f}" if rate[c] else "n/a" for c in COLUMNS]
            ratio = rate["ORT fp32"] / rate["torch fp32"]
            rows.append(f"| {name} | {batch} | {' | '.join(cells)} | {ratio:.2f}x |")
            print(rows[-1], flush=True)
    return rows


def models(args: argparse.Namespace) -> list[tuple[str, object]]:
    import jepa

    if args.models:
        return [(Path(m).name, jepa.load_encoder(m)) for m in args.models]
    torch.manual_seed(0)
    out = [("ViT-S/16@224 (random)", jepa.build_encoder("small", patch_size=16, image_size=224))]
    if DEFAULT_MODEL.is_dir():
        out.append((DEFAULT_MODEL.name, jepa.load_encoder(DEFAULT_MODEL)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(host_line())
    print(f"command: python {shlex.join(['bench/export_bench.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"device: {where}; torch {torch.__version__}, onnxruntime {ort.__version__} {ort.get_available_providers()}")
    ort_device = "CUDA" if cuda and "CUDAExecutionProvider" in ort.get_available_providers() else "CPU"
    print(f"torch runs on {'CUDA' if cuda else 'CPU'}; ORT fp32/fp16 on {ort_device}; ORT int8 on CPU")
    print("images/s (higher is better); last column = ORT fp32 / torch fp32\n")
    print(f"| model | batch | {' | '.join(COLUMNS)} | ORT/torch fp32 |")
    print("| --- | ---: |" + " ---: |" * (len(COLUMNS) + 1), flush=True)
    for name, encoder in models(args):
        bench_model(name, encoder, args, cuda)
    return 0


if __name__ == "__main__":
    sys.exit(main())
