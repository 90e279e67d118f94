"""V-JEPA 2 through the export CLI: clip graphs (fp32, fp16, int8, uint8 input) with a dynamic
batch, each verified against PyTorch on random clips and panning photo clips, served by ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jepa
from jepa.video_preprocess import normalize_clips

ort = pytest.importorskip("onnxruntime")

FRAMES = 4


@pytest.fixture(scope="module")
def video_export(tmp_path_factory):
    from export.__main__ import main

    root = tmp_path_factory.mktemp("video")
    temporal = jepa.Temporal(frames_per_clip=FRAMES, frame_step=2, image_frames=FRAMES)
    model = jepa.build_video_encoder("tiny", image_size=32, depth=2, temporal=temporal)
    source = jepa.save_model_dir(model, root / "src")
    out, triton = root / "model", root / "triton"
    argv = [str(source), "--out", str(out), "--fp16", "--int8", "--uint8-input", "--triton", str(triton)]
    assert main([*argv, "--no-progress"]) == 0
    return out, triton, jepa.load_encoder(source)


def rel(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(ref - got).max() / np.abs(ref).max())


def clips(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, FRAMES, 32, 32, 3), dtype=np.uint8)


def torch_tokens(encoder, pixels: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return encoder(torch.from_numpy(normalize_clips(pixels, encoder.config.preprocess))).numpy()


def test_export_json_records_clip_inputs_and_passing_checks(video_export):
    out, _, _ = video_export
    report = json.loads((out / "export.json").read_text())
    assert report["num_patches"] == FRAMES // 2 * 2 * 2
    graphs = report["graphs"]
    assert set(graphs) == {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.uint8.onnx"}
    assert graphs["model.onnx"]["input"] == "float" and graphs["model.uint8.onnx"]["input"] == "uint8"
    assert graphs["model.onnx"]["summary"]["max_rel"] < 1e-4
    assert graphs["model.fp16.onnx"]["summary"]["max_rel"] < 1e-2
    assert graphs["model.int8.onnx"]["summary"]["photos_global_cos_mean"] >= 0.99
    assert {c["inputs"] for c in graphs["model.onnx"]["checks"]} == {"random", "photos"}
    assert jepa.formats.native.read_config(out).family == "vjepa2"


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fp32_graph_has_a_dynamic_batch_and_matches_torch(video_export, batch):
    out, _, encoder = video_export
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [FRAMES, 3, 32, 32]
    pixels = clips(batch, seed=batch)
    pooled, tokens = session.run(
        ["global_embedding", "patch_embeddings"], {"pixel_values": normalize_clips(pixels, encoder.config.preprocess)}
    )
    ref = torch_tokens(encoder, pixels)
    assert tokens.shape == ref.shape == (batch, FRAMES // 2 * 4, 192)
    assert rel(ref, tokens) < 1e-4 and rel(ref.mean(1), pooled) < 1e-4


def test_uint8_graph_normalises_clips_inside(video_export):
    out, _, encoder = video_export
    session = ort.InferenceSession(str(out / "model.uint8.onnx"), providers=["CPUExecutionProvider"])
    pixels = clips(2, seed=7)
    assert session.get_inputs()[0].shape[1:] == [FRAMES, 32, 32, 3]
    (tokens,) = session.run(["patch_embeddings"], {"images": pixels})
    assert rel(torch_tokens(encoder, pixels), tokens) < 1e-4


def test_still_clip_of_an_image_is_the_image_embedding(video_export):
    """The service feeds an image to a video graph as ``image_frames`` copies: that is model(image)."""
    import torch

    out, _, encoder = video_export
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    image = clips(1, seed=3)[:, 0]  # [1, S, S, 3]
    still = np.repeat(image[:, None], FRAMES, axis=1)
    (tokens,) = session.run(["patch_embeddings"], {"pixel_values": normalize_clips(still, encoder.config.preprocess)})
    from jepa.preprocess import normalize

    with torch.no_grad():
        ref = encoder(torch.from_numpy(normalize(image, encoder.config.preprocess))).numpy()
    assert rel(ref, tokens) < 1e-4


def test_triton_config_has_the_clip_dims(video_export):
    _, triton, _ = video_export
    text = next(triton.rglob("config.pbtxt")).read_text()
    assert f"dims: [ {FRAMES}, 3, 32, 32 ]" in text
