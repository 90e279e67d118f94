"""``python -m export`` end to end: every source format, export.json, the failure paths, Triton's schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

import jepa
from export.__main__ import main
from export.verify import VerificationError, enforce
from jepa.photos import load_photos

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path) -> int:
    return main([*map(str, argv), "--no-progress"])


def _no_staging_left(out: Path) -> bool:
    return not any(p.name.startswith((".export-", ".quant-")) for p in out.iterdir())


def test_export_json_records_every_check(exported):
    report = json.loads((exported.out / "export.json").read_text())
    assert report["opset"] >= 17 and report["exporter"].startswith("torch.onnx.export")
    assert set(report["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert report["verification_images"]["source"] == "scikit-image"
    assert set(report["graphs"]) == {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.uint8.onnx"}
    for name, graph in report["graphs"].items():
        cases = {(c["inputs"], c["batch"]) for c in graph["checks"]}
        assert cases == {("random", 1), ("random", 7), ("photos", 1), ("photos", 7)}, name
        for check in graph["checks"]:
            assert set(check["patch_embeddings"]) == {"max_abs", "rel", "cos_mean", "cos_min"}
    assert report["graphs"]["model.onnx"]["summary"]["max_rel"] < 1e-4
    assert report["graphs"]["model.fp16.onnx"]["summary"]["max_rel"] < 1e-2
    assert report["graphs"]["model.int8.onnx"]["summary"]["photos_global_cos_mean"] >= 0.99
    # the directory is still a model directory of ours, loadable with the same weights
    assert jepa.load_encoder(exported.out).config.architecture == jepa.load_encoder(exported.source).config.architecture
    assert _no_staging_left(exported.out)


def test_triton_config_matches_graph(exported):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    model_dir = exported.triton / "tiny-test"
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "tiny-test" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32 and config.HasField("dynamic_batching")
    graph = onnx.load(str(model_dir / "1" / "model.onnx"))
    dtype = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32}
    for declared, actual in [(config.input, graph.graph.input), (config.output, graph.graph.output)]:
        assert [t.name for t in declared] == [v.name for v in actual]
        for t, v in zip(declared, actual, strict=True):
            dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
            assert v.type.tensor_type.shape.dim[0].dim_param == "batch"
            assert list(t.dims) == dims[1:]
            assert t.data_type == dtype[v.type.tensor_type.elem_type]
    ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def test_from_official_checkpoint(tmp_path):
    torch.manual_seed(1)
    encoder = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=2)
    state = {f"module.{k}": v for k, v in encoder.state_dict().items()}
    checkpoint = {
        "encoder": {k: v + 1.0 for k, v in state.items()},  # context encoder differs: target must be picked
        "target_encoder": state,
        "predictor": {"module.predictor_embed.weight": torch.zeros(8, 192)},
        "opt": {},
        "epoch": 3,
    }
    path = tmp_path / "IN1K-vit.tiny-ep3.pth.tar"
    torch.save(checkpoint, path)
    assert _run(path, "--out", tmp_path / "out") == 0
    x = torch.randn(2, 3, 32, 32)
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["patch_embeddings"], {"pixel_values": x.numpy()})[0]
    with torch.inference_mode():
        ref = encoder(x).numpy()
    assert abs(got - ref).max() / abs(ref).max() < 1e-4


def test_from_hugging_face_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.IJepaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=32, patch_size=8
    )
    torch.manual_seed(2)
    hf_model = transformers.IJepaModel(cfg).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    assert _run(tmp_path / "hf", "--out", tmp_path / "out", "--uint8-input") == 0
    x = torch.randn(3, 3, 32, 32)
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["patch_embeddings"], {"pixel_values": x.numpy()})[0]
    with torch.inference_mode():
        ref = hf_model(pixel_values=x).last_hidden_state.numpy()
    assert abs(got - ref).max() / abs(ref).max() < 1e-4


def test_external_data_for_every_graph(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--out", out, "--int8", "--fp16", "--external-data-threshold", "0") == 0
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        assert (out / f"{name}.data").stat().st_size > 500_000, name
    report = json.loads((out / "export.json").read_text())
    assert report["graphs"]["model.int8.onnx"]["external_data"] == "model.int8.onnx.data"
    assert _no_staging_left(out)


def test_images_dir_is_used(tiny_model_dir, tmp_path, photos):
    images = tmp_path / "images"
    images.mkdir()
    for i, im in enumerate(photos[:2]):
        im.save(images / f"{i}.jpg")
    assert _run(tiny_model_dir, "--out", tmp_path / "out", "--images", images) == 0
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["verification_images"]["source"] == f"dir:{images}"
    assert report["verification_images"]["names"][:3] == ["0.jpg", "1.jpg", "0.jpg"]


def test_synthetic_photos_without_scikit_image(tiny_encoder, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    photos = load_photos(tiny_encoder.config)
    assert photos.source == "synthetic" and photos.pixels.shape == (7, 32, 32, 3) and photos.pixels.std() > 10


def test_missing_source_fails_cleanly(tmp_path, capsys):
    assert _run(tmp_path / "nope", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "error: cannot load" in err and "no such file or directory" in err


def test_garbage_source_fails_cleanly(tmp_path, capsys):
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint at all")
    assert _run(tmp_path / "junk.pth.tar", "--out", tmp_path / "out") == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_unwritable_output_fails_cleanly(tiny_model_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert _run(tiny_model_dir, "--out", blocker / "sub") == 1
    assert "cannot write to output directory" in capsys.readouterr().err
    assert _run(tiny_model_dir, "--out", blocker) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_empty_images_dir_fails_cleanly(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _run(tiny_model_dir, "--out", tmp_path / "out", "--images", tmp_path / "empty") == 1
    assert "no images" in capsys.readouterr().err


def test_images_path_that_is_a_file_fails_cleanly(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "img.txt").write_text("x")
    assert _run(tiny_model_dir, "--out", tmp_path / "out", "--images", tmp_path / "img.txt") == 1
    assert "error: export failed" in capsys.readouterr().err


def test_non_finite_errors_fail_verification():
    summary = {"max_abs": float("nan"), "max_rel": float("nan"), "min_cos": 1.0, "photos_global_cos_mean": 1.0}
    with pytest.raises(VerificationError, match="non-finite"):
        enforce(Path("model.fp16.onnx"), summary, max_rel=1e-2, min_cos=None)


def test_failed_verification_leaves_no_graph(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--out", out, "--fp32-max-rel", "0") == 1
    err = capsys.readouterr().err
    assert "model.onnx: relative error" in err and "> 0" in err and "max abs" in err
    assert not (out / "model.onnx").exists() and not (out / "export.json").exists()
    assert _no_staging_left(out)


def test_int8_refused_below_min_cosine_keeps_earlier_export(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--out", out) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _run(tiny_model_dir, "--out", out, "--int8", "--int8-min-cos", "1.0") == 1
    err = capsys.readouterr().err
    assert "model.int8.onnx: mean cosine to fp32 on photos" in err and "< 1" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # the earlier success is untouched


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--opset", "16", "--opset must be >= 17"), ("--int8-min-cos", "1.5", "--int8-min-cos must be in")],
)
def test_bad_option_values_are_usage_errors(tiny_model_dir, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        _run(tiny_model_dir, "--out", tmp_path / "out", flag, value)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "export", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--uint8-input" in result.stdout and "--triton" in result.stdout
