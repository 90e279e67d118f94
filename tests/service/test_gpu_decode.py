"""--gpu-decode: nvJPEG decode and device resize through the real service, against the CPU path.

The GPU tests (``-m gpu``; skipped without CUDA and torchvision's nvJPEG) serve one 224 px model
twice on the GPU, decoding on the CPU and on the GPU, and hold every photo's embedding to cosine
0.999 of the CPU path's (the rule int8 meets), count the fallbacks in /metrics, and keep a broken
JPEG a 400. The last test runs anywhere: asking for GPU decode where it cannot run is refused.
"""

from __future__ import annotations

import io
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.helpers import REPO, free_port
from tests.service.test_devices import cuda_available, embed


def nvjpeg_available() -> bool:
    if not cuda_available():
        return False
    import torch

    from service.gpu_decode import nvjpeg_problem

    return nvjpeg_problem(torch.device("cuda")) is None


needs_nvjpeg = pytest.mark.skipif(not nvjpeg_available(), reason="needs CUDA and torchvision's nvJPEG")


@pytest.fixture(scope="module")
def model_224(tmp_path_factory: pytest.TempPathFactory):
    import torch

    import jepa
    from jepa.config import Preprocess

    torch.manual_seed(0)
    model = jepa.build_encoder("tiny", patch_size=16, image_size=224, depth=4, preprocess=Preprocess(resize_size=256))
    return jepa.save_model_dir(model, tmp_path_factory.mktemp("model_224"))


def encoded(image: Image.Image, orientation: int = 1, **save: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, **{"format": "JPEG", "quality": 90, "exif": exif.tobytes(), **save})
    return buf.getvalue()


def gpu_photos(photos: list[Image.Image]) -> list[bytes]:
    """Real photos the GPU takes: small and 3 MP, every EXIF rotation, greyscale, 4:4:4."""
    from bench.images import jpegs_at

    return [
        *[encoded(p) for p in photos[:3]],
        *jpegs_at(3.0, 2),
        *[encoded(photos[0].resize((900, 600)), o) for o in (3, 6, 8)],
        encoded(photos[1].convert("L")),
        encoded(photos[2], subsampling=0),
    ]


def cpu_photos(photos: list[Image.Image]) -> dict[str, bytes]:
    """Photos the GPU path leaves to the CPU, by the reason it counts."""
    png = io.BytesIO()
    photos[0].save(png, "PNG")
    return {
        "not_jpeg": png.getvalue(),
        "colour_mode": encoded(photos[1].convert("CMYK")),
        "progressive": encoded(photos[2], progressive=True),
    }


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.gpu
@needs_nvjpeg
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_decode_embeddings_match_the_cpu_path(serve, model_224, photos, dtype):
    blobs = gpu_photos(photos)
    fallbacks = cpu_photos(photos)
    cpu = serve(model_224, backend="torch", device="cuda", dtype=dtype, gpu_decode="off", max_batch_size=16)
    gpu = serve(model_224, backend="torch", device="cuda", dtype=dtype, gpu_decode="on", max_batch_size=16)
    assert httpx.get(gpu.url + "/info").json()["limits"]["gpu_decode"] is True
    assert httpx.get(cpu.url + "/info").json()["limits"]["gpu_decode"] is False
    everything = [*blobs, *fallbacks.values()]
    got, want = embed(gpu.url, everything), embed(cpu.url, everything)
    sims = cosines(got, want)
    print(f"{dtype}: GPU vs CPU decode, cosine per image:", np.round(sims, 6).tolist())
    assert sims.min() >= 0.999
    assert gpu.metric("jepa_decode_path_total", 'path="gpu",reason=""') == len(blobs)
    for reason in fallbacks:
        assert gpu.metric("jepa_decode_path_total", f'path="cpu",reason="{reason}"') == 1, reason


@pytest.mark.gpu
@needs_nvjpeg
def test_broken_jpeg_is_still_a_400_with_gpu_decode(serve, model_224, photos):
    srv = serve(model_224, backend="torch", device="cuda", gpu_decode="on")
    data = encoded(photos[0])
    files = [("image", ("a.jpg", data, "image/jpeg")), ("image", ("b.jpg", data[: len(data) // 3], "image/jpeg"))]
    r = httpx.post(srv.url + "/embed", files=files, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["index"] == 1, r.text
    ok = httpx.post(srv.url + "/embed", files=files[:1], timeout=60)
    assert ok.status_code == 200


@pytest.mark.gpu
@needs_nvjpeg
def test_many_concurrent_requests_batch_their_decodes(serve, model_224, photos):
    """64 requests at once: every answer is closest to the same image's lone answer (batched
    nvJPEG calls and device stacking keep results aligned with their requests)."""
    from concurrent.futures import ThreadPoolExecutor

    srv = serve(model_224, backend="torch", device="cuda", dtype="float32", gpu_decode="on", max_batch_size=32)
    blobs = gpu_photos(photos)[:-1]  # without the 4:4:4 copy of a photo already there: all distinct
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda k: embed(srv.url, [blobs[k % len(blobs)]])[0], range(64)))
    singles = np.stack([embed(srv.url, [blob])[0] for blob in blobs])
    for k, vector in enumerate(together):
        sims = cosines(np.repeat(vector[None], len(blobs), 0), singles)
        assert int(np.argmax(sims)) == k % len(blobs) and sims.max() > 0.9999, (k, sims.round(6).tolist())
    assert srv.metric("jepa_decode_path_total", 'path="gpu",reason=""') == 64 + len(blobs)


def test_gpu_decode_on_without_a_gpu_refuses_to_start(tiny_model_dir):
    """--gpu-decode on where the backend runs on the CPU: the server exits naming why (no silent CPU decode)."""
    args = ["--model", str(tiny_model_dir), "--backend", "torch", "--device", "cpu", "--gpu-decode", "on"]
    cmd = [sys.executable, "-m", "service", *args, "--port", str(free_port()), "--no-warmup"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--gpu-decode on needs the torch backend on cuda, not torch on cpu" in done.stdout + done.stderr
