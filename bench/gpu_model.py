"""What serves the model itself best on a GPU: SDPA kernels, CUDA graphs, ``torch.compile``.

The bf16 ViT-H/14 ceiling on an H200 was 51-53% of the card's measured matmul rate
(docs/BENCHMARKS.md). Each variant here times the same forward (bf16, one batch already on the
device, no host copies) so only the model's own execution differs:

- ``sdpa-auto`` / ``-flash`` / ``-cudnn`` / ``-efficient`` / ``-math``: the attention kernel,
  as the service's ``--attention-backend`` pins it (cuDNN's fused attention and flash are the
  Hopper candidates);
- ``graphs``: the ``sdpa-auto`` forward captured in a CUDA graph (what ``--cuda-graphs`` runs);
- ``compile``: ``torch.compile`` (inductor, default mode; its compile time is recorded).

A variant a build lacks (no cuDNN attention, say) records its error instead of a rate.

    python -m bench.gpu_model MODEL_DIR [--batch 64] [--variants sdpa-auto,sdpa-cudnn,graphs,compile]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from bench.ceiling import _cuda_sync, time_forward

VARIANTS = ("sdpa-auto", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math", "graphs", "compile")


def model_variants(
    model_dir: Path, device: str, batch: int, min_time_s: float, variants: list[str], flops_per_image: float = 0.0
) -> list[dict]:
    """One row per variant: images/s (or the error), and TFLOP/s when ``flops_per_image`` is given."""
    import torch

    import jepa

    model = jepa.load_encoder(model_dir, device=device).to(torch.bfloat16).eval()
    size = model.config.image_size
    x = torch.randn(batch, 3, size, size, device=device, dtype=torch.bfloat16)
    sync = _cuda_sync if device.startswith("cuda") else (lambda: None)
    rows = []
    for name in variants:
        row: dict = {"variant": name, "batch": batch}
        try:
            t0 = time.perf_counter()
            forward = _build(name, model, x)
            row["setup_s"] = round(time.perf_counter() - t0, 1)
            sec = time_forward(forward, min_time_s, sync=sync)
            row["images_s"] = batch / sec
            if flops_per_image:
                row["tflops"] = batch * flops_per_image / sec / 1e12
        except Exception as e:  # a kernel this build or card lacks: record it and go on
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
        print(f"[gpu_model] {row}", flush=True)
    return rows


def _build(name: str, model, x) -> Callable[[], object]:
    """A no-argument forward for ``name`` (compiling or capturing now, so setup is timed apart)."""
    import torch

    from service.backends.torch import sdpa_backends

    if name.startswith("sdpa-"):
        backend = name.removeprefix("sdpa-")

        def forward() -> object:
            with torch.inference_mode(), sdpa_backends(backend):
                return model(x)

        forward()  # fails here if the kernel is unavailable for these shapes
        return forward
    if name == "graphs":
        return _graphed(model, x)
    if name == "compile":
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(x)  # compile now

        def run_compiled() -> object:
            with torch.inference_mode():
                return compiled(x)

        return run_compiled
    raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")


def _graphed(model, x) -> Callable[[], object]:
    import torch

    side = torch.cuda.Stream()
    with torch.inference_mode():
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            model(x)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
    return graph.replay


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--min-time", type=float, default=1.5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    a = p.parse_args(argv)
    rows = model_variants(Path(a.model_dir), a.device, a.batch, a.min_time, a.variants.split(","))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
