"""A real ONNX graph that fails at run time for some inputs: the fault-injection mechanism.

Same I/O contract as ``model.onnx`` (``pixel_values [B, 3, S, S]`` -> ``patch_embeddings
[B, N, D]``, ``global_embedding [B, D]``): a patch-embedding convolution whose tokens are read
back through a Gather with indices ``0..N-1``, shifted out of range when every value of the batch
is above ``threshold`` (a pure white image after normalisation). ONNX Runtime then raises inside
``session.run`` for exactly the batches made only of such images. (A Reshape to a wrong length
does not work for this: ORT's basic graph optimisations replace its computed shape.) The service
loads the graph through its documented ``--onnx-file`` setting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_faulty_graph(path: Path, *, image_size: int, patch: int, dim: int, threshold: float = 2.0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = (image_size // patch) ** 2
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.02, (dim, 3, patch, patch)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(dim, np.float32), "b"),
        numpy_helper.from_array(np.array([threshold], np.float32), "threshold"),
        numpy_helper.from_array(np.array([1], np.int64), "one_shape"),
        numpy_helper.from_array(np.array([0, dim, n], np.int64), "flat_shape"),
        numpy_helper.from_array(np.arange(n, dtype=np.int64), "positions"),
        numpy_helper.from_array(np.array([1_000_000], np.int64), "far"),
    ]
    nodes = [
        helper.make_node("Conv", ["pixel_values", "w", "b"], ["conv"], kernel_shape=[patch] * 2, strides=[patch] * 2),
        helper.make_node("ReduceMin", ["pixel_values"], ["lowest4d"], keepdims=1),
        helper.make_node("Reshape", ["lowest4d", "one_shape"], ["lowest"]),
        helper.make_node("Greater", ["lowest", "threshold"], ["poisoned"]),
        helper.make_node("Cast", ["poisoned"], ["shift01"], to=TensorProto.INT64),
        helper.make_node("Mul", ["shift01", "far"], ["shift"]),
        helper.make_node("Add", ["positions", "shift"], ["indices"]),  # 0..N-1, or out of range when poisoned
        helper.make_node("Reshape", ["conv", "flat_shape"], ["flat"]),  # [B, D, N]
        helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),  # [B, N, D]
        helper.make_node("Gather", ["tokens", "indices"], ["patch_embeddings"], axis=1),
        helper.make_node("ReduceMean", ["patch_embeddings"], ["global_embedding"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "faulty-jepa",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, image_size, image_size])],
        [
            helper.make_tensor_value_info("patch_embeddings", TensorProto.FLOAT, ["batch", "tokens", "dim"]),
            helper.make_tensor_value_info("global_embedding", TensorProto.FLOAT, ["batch", "dim"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
