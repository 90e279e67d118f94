"""The exported graphs themselves: I/O contract, opset, checker, operator list, parity in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.contract import TENSORRT_SAFE_OPS
from export.onnx import export_onnx, graph_ops
from jepa.preprocess import normalize

# TensorRT's ONNX parser supports these (onnx-tensorrt operators.md); written out independently of
# export.contract so a careless widening of the allow-list in the package fails here.
TENSORRT_OPS = {
    "Add", "Cast", "Concat", "Constant", "Conv", "Div", "Erf", "Expand", "Gather", "Gelu", "Gemm", "Identity",
    "LayerNormalization", "MatMul", "Mul", "ReduceMean", "Reshape", "Shape", "Slice", "Softmax", "Split", "Sqrt",
    "Squeeze", "Sub", "Transpose", "Unsqueeze", "Flatten",
}  # fmt: skip
FLOAT_GRAPHS = ("model.onnx", "model.fp16.onnx", "model.int8.onnx")


def _io(value: onnx.ValueInfoProto) -> tuple[str, int, list]:
    t = value.type.tensor_type
    return value.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.inference_mode()
def _torch(encoder, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tokens = encoder(torch.from_numpy(pixel_values))
    return tokens.numpy(), tokens.mean(1).numpy()


@torch.inference_mode()
def _multilayer(encoder, pixel_values: np.ndarray) -> np.ndarray:
    """The last four blocks' outputs through the final norm, mean over tokens, concatenated: written
    out here from the blocks themselves, independently of jepa.heads."""
    x = encoder.patch_embed(torch.from_numpy(pixel_values)) + encoder.pos_embed
    means = []
    for block in encoder.blocks:
        x = block(x)
        means.append(encoder.norm(x).mean(1))
    return torch.cat(means[-4:], dim=-1).numpy()


def _run(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the graph, by name (never by position)."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(ref - got).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", FLOAT_GRAPHS)
def test_float_graphs_io_contract(exported, name):
    model = onnx.load(str(exported.out / name), load_external_data=False)
    assert [_io(v) for v in model.graph.input] == [("pixel_values", onnx.TensorProto.FLOAT, ["batch", 3, 32, 32])]
    assert sorted(_io(v) for v in model.graph.output) == [
        ("global_embedding", onnx.TensorProto.FLOAT, ["batch", 192]),
        ("multilayer_embedding", onnx.TensorProto.FLOAT, ["batch", 384]),  # depth 2: both blocks
        ("patch_embeddings", onnx.TensorProto.FLOAT, ["batch", 16, 192]),
    ]


def test_uint8_graph_io_contract(exported):
    model = onnx.load(str(exported.out / "model.uint8.onnx"))
    assert [_io(v) for v in model.graph.input] == [("images", onnx.TensorProto.UINT8, ["batch", 32, 32, 3])]
    assert sorted(v.name for v in model.graph.output) == [
        "global_embedding",
        "multilayer_embedding",
        "patch_embeddings",
    ]


def test_fp16_graph_computes_in_half(exported):
    model = onnx.load(str(exported.out / "model.fp16.onnx"))
    types = {init.data_type for init in model.graph.initializer if init.dims and np.prod(init.dims) > 1000}
    assert types == {onnx.TensorProto.FLOAT16}


@pytest.mark.parametrize("name", [*FLOAT_GRAPHS, "model.uint8.onnx"])
def test_checker_and_opset(exported, name):
    path = exported.out / name
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) >= 17


@pytest.mark.parametrize("name", ["model.onnx", "model.fp16.onnx", "model.uint8.onnx"])
def test_operators_are_tensorrt_safe(exported, name):
    ops = graph_ops(exported.out / name)
    assert ops <= TENSORRT_OPS, ops - TENSORRT_OPS
    assert ops <= TENSORRT_SAFE_OPS
    # attention as plain MatMul/Softmax, exact GELU as Erf, no position-table interpolation left
    assert {"MatMul", "Softmax", "Erf", "LayerNormalization"} <= ops
    assert not ops & {"Resize", "Sin", "Cos", "If", "Loop"}
    model = onnx.load(str(exported.out / name), load_external_data=False)
    assert {n.domain for n in model.graph.node} <= {""}


@pytest.mark.parametrize("batch", [1, 7])
def test_fp32_parity_and_dynamic_batch(exported, tiny_encoder, photo_pixels, batch):
    x = normalize(photo_pixels[:batch], tiny_encoder.config.preprocess)
    got = _run(_session(exported.out / "model.onnx"), {"pixel_values": x})
    ref_patch, ref_pooled = _torch(tiny_encoder, x)
    patch, pooled, multilayer = got["patch_embeddings"], got["global_embedding"], got["multilayer_embedding"]
    assert patch.shape == (batch, 16, 192) and pooled.shape == (batch, 192) and multilayer.shape == (batch, 384)
    assert _rel(ref_patch, patch) < 1e-4 and _rel(ref_pooled, pooled) < 1e-4
    assert _rel(_multilayer(tiny_encoder, x), multilayer) < 1e-4


def test_batched_equals_single(exported, tiny_encoder, photo_pixels):
    session = _session(exported.out / "model.onnx")
    x = normalize(photo_pixels, tiny_encoder.config.preprocess)
    batched = session.run(["global_embedding"], {"pixel_values": x})[0]
    singles = np.concatenate([session.run(["global_embedding"], {"pixel_values": x[i : i + 1]})[0] for i in range(7)])
    np.testing.assert_allclose(batched, singles, rtol=0, atol=1e-5)


def test_fp16_parity(exported, tiny_encoder, photo_pixels):
    x = normalize(photo_pixels, tiny_encoder.config.preprocess)
    got = _run(_session(exported.out / "model.fp16.onnx"), {"pixel_values": x})
    patch, pooled = got["patch_embeddings"], got["global_embedding"]
    ref_patch, ref_pooled = _torch(tiny_encoder, x)
    assert patch.dtype == np.float32
    assert 0 < _rel(ref_patch, patch) < 1e-2  # > 0: it really ran in half precision
    assert _rel(ref_pooled, pooled) < 1e-2


def test_int8_cosine_to_fp32(exported, tiny_encoder, photo_pixels):
    x = normalize(photo_pixels, tiny_encoder.config.preprocess)
    pooled = _session(exported.out / "model.int8.onnx").run(["global_embedding"], {"pixel_values": x})[0]
    ref = _torch(tiny_encoder, x)[1]
    cos = (ref * pooled).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(pooled, axis=1))
    assert cos.mean() >= 0.99
    assert "MatMulInteger" in graph_ops(exported.out / "model.int8.onnx")


@pytest.mark.parametrize("batch", [1, 7])
def test_uint8_input_parity(exported, tiny_encoder, photo_pixels, batch):
    pixels = photo_pixels[:batch]
    got = _run(_session(exported.out / "model.uint8.onnx"), {"images": pixels})
    x = normalize(pixels, tiny_encoder.config.preprocess)
    ref_patch, ref_pooled = _torch(tiny_encoder, x)
    assert _rel(ref_patch, got["patch_embeddings"]) < 1e-4 and _rel(ref_pooled, got["global_embedding"]) < 1e-4
    assert _rel(_multilayer(tiny_encoder, x), got["multilayer_embedding"]) < 1e-4


def test_external_data_loads(tiny_encoder, tmp_path, photo_pixels):
    path = export_onnx(tiny_encoder, tmp_path / "model.onnx", external_data_threshold=0)
    data = tmp_path / "model.onnx.data"
    assert data.is_file() and data.stat().st_size > 3_000_000 > 10 * path.stat().st_size
    onnx.checker.check_model(str(path), full_check=True)
    x = normalize(photo_pixels[:3], tiny_encoder.config.preprocess)
    patch = _session(path).run(["patch_embeddings"], {"pixel_values": x})[0]
    assert _rel(_torch(tiny_encoder, x)[0], patch) < 1e-4


def test_export_keeps_callers_encoder_in_float32(tiny_encoder, tmp_path):
    export_onnx(tiny_encoder, tmp_path / "half.onnx", dtype="float16")
    assert {p.dtype for p in tiny_encoder.parameters()} == {torch.float32}


def test_opset_below_17_is_refused(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(tiny_encoder, tmp_path / "m.onnx", opset=16)


def _cuda_session(path) -> ort.InferenceSession:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (onnxruntime-gpu not installed)")
    return ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "max_rel"), [("model.onnx", 1e-4), ("model.fp16.onnx", 1e-2)])
def test_graphs_on_ort_cuda(exported, tiny_encoder, photo_pixels, name, max_rel):
    session = _cuda_session(exported.out / name)
    x = normalize(photo_pixels, tiny_encoder.config.preprocess)
    patch = session.run(["patch_embeddings"], {"pixel_values": x})[0]
    assert _rel(_torch(tiny_encoder, x)[0], patch) < max_rel


@pytest.mark.gpu
def test_uint8_graph_on_ort_cuda(exported, tiny_encoder, photo_pixels):
    session = _cuda_session(exported.out / "model.uint8.onnx")
    patch = session.run(["patch_embeddings"], {"images": photo_pixels})[0]
    ref = _torch(tiny_encoder, normalize(photo_pixels, tiny_encoder.config.preprocess))[0]
    assert _rel(ref, patch) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["model.onnx", "model.fp16.onnx", "model.uint8.onnx"])
def test_tensorrt_parser_accepts_graph(exported, name):
    trt = pytest.importorskip("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(exported.out / name))
    assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]
