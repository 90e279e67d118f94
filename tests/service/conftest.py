"""Service fixtures: real uvicorn servers on loopback (in a thread, or a subprocess where signals
or a torch-free interpreter matter), ONNX model directories built from the tiny model, images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.service.helpers import ThreadServer, add_poison, encode, export_graph, settings_for


@pytest.fixture
def serve():
    """``serve(model, **settings)`` -> a started :class:`ThreadServer`, stopped after the test."""
    started: list[ThreadServer] = []

    def _serve(model: Path | str, **overrides: object) -> ThreadServer:
        server = ThreadServer(settings_for(model, **overrides)).__enter__()
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.__exit__()


# -- ONNX model directories --


@pytest.fixture(scope="session")
def onnx_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model directory with ``model.onnx`` beside the weights."""
    out = tmp_path_factory.mktemp("tiny_onnx")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, out / name)
    export_graph(tiny_model_dir, out / "model.onnx")
    export_graph(tiny_model_dir, out / "model.uint8.onnx", uint8_input=True)
    export_graph(tiny_model_dir, out / "model.fp16.onnx", dtype="float16")
    from export.quantize import quantize_int8

    quantize_int8(out / "model.onnx", out / "model.int8.onnx")
    return out


@pytest.fixture(scope="session")
def onnx_only_dir(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported directory with no weights: config.json + model.onnx only."""
    out = tmp_path_factory.mktemp("onnx_only")
    for name in ("config.json", "model.onnx"):
        shutil.copy(onnx_model_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def poison_model_dir(onnx_only_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("poison")
    shutil.copytree(onnx_only_dir, out, dirs_exist_ok=True)
    add_poison(out / "model.onnx")
    return out


# -- images --


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    import jepa

    return jepa.load_encoder(tiny_model_dir)


@pytest.fixture(scope="session")
def png_bytes(photos: list[Image.Image]) -> list[bytes]:
    return [encode(im, "PNG") for im in photos[:3]]
