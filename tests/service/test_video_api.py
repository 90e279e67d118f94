"""POST /embed on a V-JEPA 2 model, through a real uvicorn server: real videos (MP4, WebM, MOV,
GIF made with PyAV) and images in the three body forms, answers equal to the PyTorch model on the
same clip, a [T', H', W', D] patch grid, and a typed 4xx for every broken or oversized video."""

from __future__ import annotations

import base64
import io
import shutil

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from video_util import AVAILABLE, make_audio_only, make_video

import jepa
from jepa.preprocess import normalize, prepare_image
from jepa.video_preprocess import normalize_clips
from service.video import VideoOptions, decode_video

FRAMES = 4


@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    torch.manual_seed(0)
    temporal = jepa.Temporal(frames_per_clip=FRAMES, frame_step=2, image_frames=FRAMES)
    model = jepa.build_video_encoder("tiny", image_size=32, depth=2, temporal=temporal)
    return jepa.save_model_dir(model, tmp_path_factory.mktemp("vjepa2") / "model")


@pytest.fixture(scope="module")
def onnx_video_model(video_model, tmp_path_factory):
    from export.onnx import export_onnx

    out = tmp_path_factory.mktemp("vjepa2_onnx")
    shutil.copy(video_model / "config.json", out / "config.json")
    export_onnx(jepa.load_encoder(video_model), out / "model.onnx")
    return out


def reference(model_dir, blob: bytes) -> np.ndarray:
    """The PyTorch model's global embedding of one file, decoded as the service decodes it."""
    encoder = jepa.load_encoder(model_dir)
    config = encoder.config
    with torch.no_grad():
        if blob[:4] == b"\x89PNG":
            pixels = prepare_image(Image.open(io.BytesIO(blob)), config.preprocess, config.image_size)[None]
            return encoder(torch.from_numpy(normalize(pixels, config.preprocess))).mean(1)[0].numpy()
        options = VideoOptions(config.preprocess, config.image_size, config.temporal)
        clip = decode_video(blob, 0, options)[None]
        return encoder(torch.from_numpy(normalize_clips(clip, config.preprocess))).mean(1)[0].numpy()


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def files(blobs: list[bytes], field: str = "video") -> list:
    return [(field, (f"{i}.bin", b, "application/octet-stream")) for i, b in enumerate(blobs)]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_videos_and_images_in_one_multipart_request(serve, video_model):
    server = serve(video_model, max_batch_size=4)
    blobs = [make_video(kind, frames=10) for kind in AVAILABLE] + [png(1)]
    r = httpx.post(server.url + "/embed?outputs=global,patch", files=files(blobs), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grid"] == [FRAMES // 2, 2, 2] and r.headers["x-grid"] == f"{FRAMES // 2},2,2"
    assert len(body["data"]) == len(blobs)
    for item, blob in zip(body["data"], blobs, strict=True):
        embedding = np.asarray(item["embedding"], dtype=np.float32)
        assert np.asarray(item["patch_embeddings"]).shape == (FRAMES // 2, 2, 2, 192)
        assert rel(embedding, reference(video_model, blob)) < 1e-4
        assert np.allclose(np.asarray(item["patch_embeddings"]).mean((0, 1, 2)), embedding, atol=1e-5)


def test_raw_video_body_and_json_base64(serve, video_model):
    server = serve(video_model)
    mp4, webm = make_video("mp4-h264", frames=9), make_video("webm-vp9", frames=7)
    raw = httpx.post(server.url + "/embed", content=mp4, headers={"content-type": "video/mp4"}, timeout=60)
    assert raw.status_code == 200, raw.text
    assert rel(np.asarray(raw.json()["data"][0]["embedding"]), reference(video_model, mp4)) < 1e-4
    uri = "data:video/webm;base64," + base64.b64encode(webm).decode()
    js = httpx.post(server.url + "/embed", json={"images": [uri, base64.b64encode(mp4).decode()]}, timeout=60)
    assert js.status_code == 200, js.text
    got = [np.asarray(d["embedding"]) for d in js.json()["data"]]
    assert rel(got[0], reference(video_model, webm)) < 1e-4
    assert rel(got[1], reference(video_model, mp4)) < 1e-4


def test_npz_answer_holds_the_clip_grid(serve, video_model):
    server = serve(video_model)
    r = httpx.post(
        server.url + "/embed?outputs=patch",
        files=files([make_video("mp4-h264", frames=6)] * 2),
        headers={"accept": "application/x-npz"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert np.load(io.BytesIO(r.content))["patch_embeddings"].shape == (2, FRAMES // 2, 2, 2, 192)


@pytest.mark.parametrize(
    ("blob", "status", "kind"),
    [
        (make_video("mp4-h264", frames=10)[:-300], 400, "invalid_video"),
        (make_video("webm-vp8", frames=10)[:700], 400, "invalid_video"),
        (make_video("gif", frames=10)[:-1], 400, "invalid_video"),
        (make_audio_only(), 400, "invalid_video"),
        (b"\x1a\x45\xdf\xa3" + bytes(40), 400, "invalid_video"),
        (make_video("mp4-h264", frames=10, width=128, height=96), 413, "payload_too_large"),
        (make_video("mp4-h264", frames=40), 413, "payload_too_large"),
    ],
    ids=[
        "mp4-truncated",
        "webm-truncated",
        "gif-no-trailer",
        "audio-only",
        "ebml-garbage",
        "big-frames",
        "many-frames",
    ],
)
def test_broken_or_oversized_videos_are_typed_4xx_naming_the_index(serve, video_model, blob, status, kind):
    server = serve(video_model, video_max_pixels=64 * 48, video_max_frames=30)
    r = httpx.post(server.url + "/embed", files=files([png(2), blob]), timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind and r.json()["error"]["index"] == 1
    # the server is unharmed: the next request is answered
    ok = httpx.post(server.url + "/embed", files=files([make_video("mp4-h264", frames=6)]), timeout=60)
    assert ok.status_code == 200


def test_onnx_runtime_serves_the_video_graph(serve, video_model, onnx_video_model):
    server = serve(onnx_video_model, backend="onnxruntime")
    info = httpx.get(server.url + "/info").json()
    assert info["backend"]["name"] == "onnxruntime" and info["family"] == "vjepa2"
    assert info["grid"] == [FRAMES // 2, 2, 2] and info["temporal"]["frames_per_clip"] == FRAMES
    blobs = [make_video("mov-h264", frames=12), png(3)]
    r = httpx.post(server.url + "/embed", files=files(blobs, field="image"), timeout=60)
    assert r.status_code == 200, r.text
    for item, blob in zip(r.json()["data"], blobs, strict=True):
        assert rel(np.asarray(item["embedding"]), reference(video_model, blob)) < 1e-4


def test_a_model_whose_images_and_clips_differ_in_length_is_refused(tmp_path):
    from service.media import video_options
    from service.settings import Settings

    temporal = jepa.Temporal(frames_per_clip=4, image_frames=2)
    config = jepa.build_video_encoder("tiny", image_size=32, depth=1, temporal=temporal).config
    with pytest.raises(ValueError, match="image_frames 2 != frames_per_clip 4"):
        video_options(config, Settings(model=str(tmp_path)))


def test_the_python_client_sends_videos_as_files(serve, video_model, tmp_path):
    """``JepaClient`` sends paths and bytes as they are, so a video file needs nothing special;
    the patch grid comes back as ``[B, T', H', W', D]``."""
    from service.client import JepaClient

    server = serve(video_model)
    clip = tmp_path / "clip.webm"
    clip.write_bytes(make_video("webm-vp9", frames=8))
    mp4 = make_video("mp4-h264", frames=12)
    with JepaClient(server.url) as client:
        result = client.embeddings([clip, mp4, png(3)], outputs=("global", "patch"))
    assert result.patch_embeddings.shape == (3, FRAMES // 2, 2, 2, 192)
    for got, blob in zip(result.global_embedding, [clip.read_bytes(), mp4, png(3)], strict=True):
        assert rel(got, reference(video_model, blob)) < 1e-4
