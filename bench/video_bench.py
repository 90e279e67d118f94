"""V-JEPA 2 on this machine: model-only clips/s and images/s (the ceiling) against the service's.

A random-weight V-JEPA 2 model of a named size (default ViT-L/16 at 256, the shape of Meta's
``vjepa2-vitl-fpc64-256``), fixed seed, cached under ``runs/bench/``. The ceiling is the torch
encoder on ready tensors at batch 1 (median of repeated forwards); the service is a real server
process (torch backend, batch 1) answering sequential ``POST /embed`` requests of a real MP4 (made
with PyAV) and of a JPEG photo, so its figure includes HTTP, video decoding and preprocessing.
Images cost what clips cost: a V-JEPA 2 model embeds an image as an ``image_frames`` still clip.

    python -m bench.video_bench [--size large] [--image-size 256] [--frames 4] [--requests 3]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

from bench.ceiling import time_forward, torch_runner
from bench.server_proc import ServerProcess

CACHE = Path("runs/bench")


def video_model(size: str, image_size: int, frames: int, cache: Path = CACHE) -> Path:
    """A random V-JEPA 2 model directory (seed 0) whose clips and images are ``frames`` frames."""
    import torch

    import jepa

    out = cache / f"vjepa2-{size}-{image_size}-f{frames}"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    temporal = jepa.Temporal(frames_per_clip=frames, frame_step=2, image_frames=frames)
    model = jepa.build_video_encoder(size, image_size=image_size, temporal=temporal, name=out.name)
    return jepa.save_model_dir(model, out)


def sample_video(frames: int = 48, width: int = 320, height: int = 240) -> bytes:
    """An H.264 MP4 of a moving gradient, made with PyAV (no download)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy) // 3 % 256], -1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def sample_photo() -> bytes:
    """scikit-image's astronaut as a JPEG (a synthetic image when scikit-image is absent)."""
    from PIL import Image

    try:
        import skimage.data

        pixels = skimage.data.astronaut()
    except ImportError:
        pixels = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def ceiling(model_dir: Path, min_iters: int) -> dict[str, float]:
    """Model-only clips/s and images/s at batch 1 (torch fp32 on normalised tensors)."""
    from jepa.formats.native import read_config

    config = read_config(model_dir)
    run = torch_runner(model_dir, "fp32", "cpu")
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((1, *config.input_shape), dtype=np.float32)
    image = rng.standard_normal((1, 3, config.image_size, config.image_size), dtype=np.float32)
    return {
        "clips_s": 1 / time_forward(lambda: run(clip), 0.0, min_iters),
        "images_s": 1 / time_forward(lambda: run(image), 0.0, min_iters),
    }


def service(model_dir: Path, requests: int, log: Path) -> dict[str, float]:
    """Sequential requests' rate: clips/s for the MP4, images/s for the JPEG, through a real server."""
    import httpx

    files = {"clips_s": (sample_video(), "video/mp4"), "images_s": (sample_photo(), "image/jpeg")}
    args = ["--model", str(model_dir), "--backend", "torch", "--device", "cpu", "--max-batch-size", "1",
            "--no-batch-probe", "--log-level", "warning"]  # fmt: skip
    out = {}
    with ServerProcess(args, log_path=log, ready_timeout_s=900) as server:
        for name, (body, media) in files.items():
            start = time.perf_counter()
            for _ in range(requests):
                r = httpx.post(server.url + "/embed", content=body, headers={"content-type": media}, timeout=900)
                r.raise_for_status()
            out[name] = requests / (time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="large")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--frames", type=int, default=4, help="frames per clip (and per image's still clip)")
    p.add_argument("--requests", type=int, default=3, help="sequential requests per kind to the service")
    p.add_argument("--out", type=Path, default=CACHE / "video_bench.json")
    a = p.parse_args(argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    model_dir = video_model(a.size, a.image_size, a.frames)
    top = ceiling(model_dir, min_iters=a.requests)
    served = service(model_dir, a.requests, a.out.with_suffix(".log"))
    report = {
        "model": model_dir.name,
        "ceiling_torch_fp32_batch1": top,
        "service_torch_fp32_sequential": served,
        "service_over_ceiling": {k: served[k] / top[k] for k in top},
    }
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
