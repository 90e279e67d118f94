"""``--dtype auto``: on a CPU the int8 graph only when the export measured it within cosine 0.999
of fp32; otherwise float32. The shipped default model serves int8 within that bound."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from export.verify import compare
from service.plan import choose_dtype
from service.settings import DEFAULT_MODEL_DIR, Settings
from tests.service.helpers import REPO, encode

CPU = {"model": "x", "device": "cpu"}


@pytest.fixture(scope="module")
def int8_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "m"
    cmd = [sys.executable, "-m", "export", str(tiny_model_dir), "--out", str(out), "--int8", "--no-progress"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
    return out


def with_int8_cosine(export: Path, to: Path, cosine: float) -> Path:
    """A copy of ``export`` whose export.json records ``cosine`` for the int8 graph."""
    shutil.copytree(export, to)
    record = json.loads((to / "export.json").read_text())
    record["graphs"]["model.int8.onnx"]["summary"]["photos_global_cos_mean"] = cosine
    (to / "export.json").write_text(json.dumps(record))
    return to


def test_auto_picks_verified_int8_on_cpu(int8_export, tmp_path):
    """A recorded cosine at or above the bound picks int8, whatever this export happened to measure."""
    high = with_int8_cosine(int8_export, tmp_path / "high", 0.9995)
    dtype, why = choose_dtype(Settings(**CPU), str(high))
    assert dtype == "int8" and "0.999500" in why, why
    assert choose_dtype(Settings(**CPU, dtype="float32"), str(int8_export)) == ("float32", "asked for explicitly")
    assert choose_dtype(Settings(**CPU, backend="torch"), str(int8_export))[0] == "float32"


def test_auto_refuses_int8_below_bound_or_unrecorded(int8_export, tmp_path):
    low = with_int8_cosine(int8_export, tmp_path / "low", 0.998)
    dtype, why = choose_dtype(Settings(**CPU), str(low))
    assert dtype == "float32" and "0.99800" in why
    record = json.loads((low / "export.json").read_text())
    record["format_version"] = 1  # a record this version cannot read: float32, and the reason says so
    (low / "export.json").write_text(json.dumps(record))
    dtype, why = choose_dtype(Settings(**CPU), str(low))
    assert dtype == "float32" and "export.json is unreadable" in why and "re-export" in why, why
    (low / "export.json").unlink()
    dtype, why = choose_dtype(Settings(**CPU), str(low))
    assert dtype == "float32" and "no verified model.int8.onnx" in why


def test_int8_with_torch_backend_is_a_settings_error():
    with pytest.raises(ValueError, match="int8 is only supported by the onnxruntime backend"):
        Settings(model="x", backend="torch", dtype="int8")


def test_shipped_default_model_serves_int8_close_to_fp32(serve, photos):
    import jepa

    model_dir = REPO / DEFAULT_MODEL_DIR
    if not (model_dir / "model.int8.onnx").is_file():
        pytest.skip("the default model directory holds no int8 graph")
    srv = serve(model_dir, device="cpu")
    info = httpx.get(srv.url + "/info").json()
    assert info["backend"]["dtype"] == "int8", info
    blobs = [("image", ("p.png", encode(im, "PNG"), "image/png")) for im in photos]
    r = httpx.post(srv.url + "/embed", files=blobs, timeout=60)
    assert r.status_code == 200, r.text
    served = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    reference = jepa.load_encoder(model_dir).embed(photos)["global"]
    cos_min = compare(reference, served)["cos_min"]
    assert cos_min >= 0.999, cos_min
