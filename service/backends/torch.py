"""PyTorch backend: ``jepa.load_encoder`` on CPU or CUDA, weights cast to the plan's dtype.

It takes raw ``uint8 [B, S, S, 3]`` batches and normalises on the device: on a GPU that moves a
quarter of the bytes across PCIe and takes the float work off the host's cores, which feed the
GPU (decode, HTTP) and share one GIL. Normalisation and pooling are the core's
(:class:`jepa.heads.EmbeddingHeads`), as in ``Encoder.embed`` and the exported graphs, so float32
results match ``load_encoder(model).embed(images)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

import jepa
from jepa.contract import OUTPUTS, Embeddings, Output
from jepa.heads import EmbeddingHeads, Normalize
from service.backends.base import BackendInfo
from service.backends.cuda_graphs import GraphSet, bucket_sizes
from service.plan import Plan

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SDPA_BACKENDS: dict[str, Callable] = {
    "flash": lambda b: b.FLASH_ATTENTION,
    "cudnn": lambda b: b.CUDNN_ATTENTION,
    "efficient": lambda b: b.EFFICIENT_ATTENTION,
    "math": lambda b: b.MATH,
}


def sdpa_backends(name: str) -> contextlib.AbstractContextManager[None]:
    """The SDPA kernels attention may use: ``auto`` leaves PyTorch's choice; the others pin one
    (cuDNN attention and flash are the candidates on Hopper; bench/gpu_model.py measures each)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPA_BACKENDS[name](SDPBackend)])


class TorchBackend:
    """Runs the encoder under ``torch.inference_mode`` in the batcher's inference threads."""

    outputs = frozenset(OUTPUTS)

    def __init__(self, plan: Plan) -> None:
        if plan.threads:
            torch.set_num_threads(plan.threads)
        if plan.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device cuda asked for, but torch sees no CUDA device")
        if plan.dtype not in DTYPES:
            raise ValueError(f"dtype {plan.dtype} is not served by torch (choose one of {', '.join(DTYPES)})")
        self.device = torch.device(plan.device)
        encoder = jepa.load_encoder(plan.model)
        self.config = encoder.config
        self.heads = EmbeddingHeads(encoder, uint8_input=True, dtype=DTYPES[plan.dtype]).to(self.device).eval()
        self._normalize = Normalize(self.config.preprocess.mean, self.config.preprocess.std).to(self.device)
        self.attention = plan.attention_backend
        self._pinned: torch.Tensor | None = None
        if self.device.type == "cuda" and plan.workers == 1:
            size = self.config.image_size
            self._pinned = torch.empty((plan.max_batch_size, size, size, 3), dtype=torch.uint8).pin_memory()
        self._graphs: GraphSet | None = None
        if plan.cuda_graphs and not self.config.is_video:  # graphs are captured for image batches
            # every output is captured; run() copies off only those asked for
            sizes = bucket_sizes(plan.max_batch_size)
            self._graphs = GraphSet(self._forward, sizes, self.config.image_size, self.device)
        self.info = BackendInfo(
            name="torch",
            device=str(self.device),
            dtype=plan.dtype,
            reason=plan.reason,
            input_kind="uint8",
            details={
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "workers": plan.workers,
                "cuda_graphs": self._graphs.sizes if self._graphs is not None else None,
                "attention_backend": self.attention,
                "pinned_input": self._pinned is not None,
            },
        )

    @torch.inference_mode()
    def run(
        self, batch: np.ndarray | torch.Tensor, outputs: frozenset[Output], alone: bool = False
    ) -> Embeddings[np.ndarray]:
        """``batch``: uint8 ``[B, S, S, 3]`` on the host, or already on the device (``--gpu-decode``)."""
        pixels = self._stage(batch)
        if self._graphs is not None:
            result = self._graphs.run(pixels)
        else:  # the raw bytes cross to the GPU, not float32
            result = self._forward(pixels.to(self.device, non_blocking=True), outputs)
        return result.only(outputs).map(lambda t: t.cpu().numpy())

    def _forward(self, pixels: torch.Tensor, outputs: frozenset[Output] | None = None) -> Embeddings[torch.Tensor]:
        """The heads (every output unless ``outputs``) under the pinned attention kernel, if any."""
        with sdpa_backends(self.attention):
            return self.heads(pixels, outputs)

    def _stage(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Host batches go through one pinned buffer, so the copy to the GPU is a DMA that does not
        first bounce through a driver buffer. One worker only: the previous batch's copy is over by
        the time ``run`` returns (its outputs were copied back)."""
        if isinstance(batch, torch.Tensor):
            return batch
        host = torch.from_numpy(batch)
        if self._pinned is None or len(batch) > len(self._pinned):
            return host
        staged = self._pinned[: len(batch)]
        staged.copy_(host)
        return staged

    def normalize(self, batch: np.ndarray) -> torch.Tensor:
        """``uint8 [B, S, S, 3]`` on the host -> normalised float32 ``[B, 3, S, S]`` on the device."""
        return self._normalize(torch.from_numpy(batch).to(self.device))

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
