"""V-JEPA 2 on this machine: model-only clips/s and images/s (the ceiling) against the service's.

A random-weight V-JEPA 2 model of a named size (default ViT-L/16 at 256, the shape of Meta's
``vjepa2-vitl-fpc64-256``), fixed seed, cached under ``runs/bench/``. The ceiling is the torch
encoder on ready tensors at batch 1 (median of repeated forwards); the service is a real server
process (torch backend, batch 1) answering sequential ``POST /embed`` requests of a real MP4 (made
with PyAV) and of a JPEG photo, so its figure includes HTTP, video decoding and preprocessing.
Both stay loaded and are timed in interleaved rounds, so the machine's drift hits both alike.
Images cost what clips cost: a V-JEPA 2 model embeds an image as an ``image_frames`` still clip.

    python -m bench.video_bench [--size large] [--image-size 256] [--frames 4] [--rounds 3] [--requests 3]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.ceiling import time_forward
from bench.host import host_line
from bench.report import machine
from bench.server_proc import ServerProcess
from bench.stages import breakdown, scrape

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


def ceiling_runners(model_dir: Path) -> dict[str, Callable[[], object]]:
    """Model-only forwards at batch 1 of what the torch backend runs (``EmbeddingHeads`` on raw
    uint8 pixels, normalised inside, global embedding only), on ready tensors: a clip and an image.

    The same module as the service's on purpose: a separately loaded bare encoder fed float32 ran
    10-20% slower than ``EmbeddingHeads`` in the same process here, enough to put the service
    above its own ceiling."""
    import torch

    import jepa
    from jepa.heads import EmbeddingHeads

    encoder = jepa.load_encoder(model_dir)
    heads = EmbeddingHeads(encoder, uint8_input=True, dtype=torch.float32).eval()
    size, frames = encoder.config.image_size, encoder.config.input_shape[0]
    rng = np.random.default_rng(0)
    clip = torch.from_numpy(rng.integers(0, 256, (1, frames, size, size, 3), dtype=np.uint8))
    image = torch.from_numpy(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8))
    only = frozenset({"global"})

    def forward(pixels: torch.Tensor) -> object:
        with torch.inference_mode():
            return heads(pixels, only)

    return {"clips_s": lambda: forward(clip), "images_s": lambda: forward(image)}


def service_args(model_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--backend", "torch", "--device", "cpu", "--max-batch-size", "1",
            "--no-batch-probe", "--log-level", "warning"]  # fmt: skip


def request_runners(url: str) -> dict[str, Callable[[], object]]:
    """One ``POST /embed`` each: the MP4 (clips/s) and the JPEG (images/s)."""
    import httpx

    files = {"clips_s": (sample_video(), "video/mp4"), "images_s": (sample_photo(), "image/jpeg")}

    def post(body: bytes, media: str) -> None:
        httpx.post(url + "/embed", content=body, headers={"content-type": media}, timeout=900).raise_for_status()

    return {k: (lambda body=body, media=media: post(body, media)) for k, (body, media) in files.items()}


class CeilingProcess:
    """The model-only side in a fresh process of its own, as the server is one: timed in the
    bench's own process, the same forward ran 1.2-1.6x slower than in a fresh one on the 2-core
    machine, so an in-process ceiling came out below the service it bounds."""

    def __init__(self, model_dir: Path) -> None:
        cmd = [sys.executable, "-m", "bench.video_bench", "--worker", str(model_dir)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout is None or self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the ceiling worker did not start")

    def seconds(self, kind: str, calls: int) -> float:
        """Median seconds per forward of ``calls`` timed forwards (after a warm-up) of ``kind``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind} {calls}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def worker(model_dir: Path) -> None:
    """``--worker``: answer ``KIND CALLS`` lines on stdin with the median seconds per forward."""
    runners = ceiling_runners(model_dir)
    print("ready", flush=True)
    for line in sys.stdin:
        kind, calls = line.split()
        print(time_forward(runners[kind], 0.0, int(calls)), flush=True)


def measure(model_dir: Path, rounds: int, per_round: int, log: Path) -> dict:
    """Rounds that each time the model alone and the service, clip then image, in alternating
    order: both stay loaded throughout, each in a process of its own, so a drift of the machine
    hits both sides of every ratio alike. Rates are 1 / the median seconds per call of the round."""
    model = CeilingProcess(model_dir)
    out: dict = {"rounds": []}
    try:
        with ServerProcess(service_args(model_dir), log_path=log, ready_timeout_s=900) as server:
            served = request_runners(server.url)
            for r in range(rounds):
                point = {}
                for kind in ("clips_s", "images_s"):
                    stages: dict[str, float] = {}

                    def serve(k: str = kind, stages: dict[str, float] = stages) -> float:
                        before = scrape(server.url)
                        seconds = time_forward(served[k], 0.0, per_round)
                        stages.update(breakdown(before, scrape(server.url)))
                        return seconds

                    sides = {"ceiling": lambda k=kind: model.seconds(k, per_round), "service": serve}
                    order = ("ceiling", "service") if r % 2 == 0 else ("service", "ceiling")
                    rates = {side: 1 / sides[side]() for side in order}
                    # the server's own forward time per request (batch 1), from its metrics: the
                    # same process and weights as the requests, so no drift between processes
                    in_model = stages.get("inference_ms", float("nan")) / 1000 * rates["service"]
                    point[kind] = {**rates, "ratio": rates["service"] / rates["ceiling"],
                                   "in_model_share": in_model, "stages_ms": stages}  # fmt: skip
                out["rounds"].append(point)
                print(json.dumps(point), flush=True)
    finally:
        model.close()
    for kind in ("clips_s", "images_s"):
        keys = ("ceiling", "service", "ratio", "in_model_share")
        out[kind] = {k: float(np.median([r[kind][k] for r in out["rounds"]])) for k in keys}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="large")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--frames", type=int, default=4, help="frames per clip (and per image's still clip)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ceiling and service")
    p.add_argument("--requests", type=int, default=3, help="timed calls per kind and side in each round")
    p.add_argument("--out", type=Path, default=CACHE / "video_bench.json")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # the ceiling's own process
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.worker)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    model_dir = video_model(a.size, a.image_size, a.frames)
    result = measure(model_dir, a.rounds, a.requests, a.out.with_suffix(".log"))
    report = {"model": model_dir.name, "machine": machine(), "frames": a.frames, **result}
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(host_line())
    print(f"{model_dir.name}, {a.frames}-frame clips, batch 1, torch fp32; median of {a.rounds} interleaved rounds")
    for kind, name in (("clips_s", "clips/s"), ("images_s", "images/s")):
        r = report[kind]
        print(
            f"{name}: ceiling {r['ceiling']:.3f}, service {r['service']:.3f}, service / ceiling {r['ratio']:.2f}; "
            f"share of a request's time in the server's own forward {r['in_model_share']:.0%}"
        )


if __name__ == "__main__":
    main()
