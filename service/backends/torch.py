"""PyTorch backend: ``jepa.load_encoder`` on CPU or CUDA, weights cast to the asked dtype.

It takes raw ``uint8 [B, S, S, 3]`` batches and normalises on the device: on a GPU that moves a
quarter of the bytes across PCIe and takes the float work off the host's cores, which feed the
GPU (decode, HTTP) and share one GIL. The arithmetic is ``jepa.preprocess.normalize``'s, in the
same order and in float32, and the global embedding is the float32 mean of the patch tokens, as
``Encoder.embed`` does, so float32 results match ``load_encoder(model).embed(images)``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

import jepa
from service.backends.base import BackendInfo
from service.backends.cuda_graphs import GraphSet, bucket_sizes
from service.settings import Settings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sdpa_backends(name: str) -> contextlib.AbstractContextManager[None]:
    """The SDPA kernels attention may use: ``auto`` leaves PyTorch's choice; the others pin one
    (cuDNN attention and flash are the candidates on Hopper; bench/gpu_bench.py measures each)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPA_BACKENDS[name](SDPBackend)])


SDPA_BACKENDS = {
    "flash": lambda b: b.FLASH_ATTENTION,
    "cudnn": lambda b: b.CUDNN_ATTENTION,
    "efficient": lambda b: b.EFFICIENT_ATTENTION,
    "math": lambda b: b.MATH,
}


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda asked for, but torch sees no CUDA device")
    return device


class TorchBackend:
    """Runs the encoder under ``torch.inference_mode`` in the batcher's inference threads."""

    wide = False  # no all-thread mode for lone batches: torch's thread count is per process, not per call

    def __init__(self, model: str, settings: Settings, reason: str) -> None:
        self.workers = settings.inference_workers or 1
        if threads := settings.threads_per_worker(self.workers):
            torch.set_num_threads(threads)
        self.device = torch.device(pick_device(settings.device))
        self.dtype = DTYPES[settings.dtype]
        encoder = jepa.load_encoder(model)
        self.config = encoder.config
        self.encoder = encoder.to(device=self.device, dtype=self.dtype).eval()
        pre = encoder.config.preprocess
        self._mean = torch.tensor(pre.mean, dtype=torch.float32, device=self.device).reshape(1, 3, 1, 1)
        self._std = torch.tensor(pre.std, dtype=torch.float32, device=self.device).reshape(1, 3, 1, 1)
        self.attention = settings.attention_backend
        self._pinned: torch.Tensor | None = None
        if self.device.type == "cuda" and self.workers == 1:
            size = self.config.image_size
            self._pinned = torch.empty((settings.max_batch_size, size, size, 3), dtype=torch.uint8).pin_memory()
        self._graphs: GraphSet | None = None
        if settings.cuda_graphs and self.device.type == "cuda" and self.workers == 1:
            # graphs replay one batch at a time from one shared memory pool: one worker only
            sizes = bucket_sizes(settings.max_batch_size)
            self._graphs = GraphSet(self._forward, sizes, self.config.image_size, self.device)
        self.info = BackendInfo(
            name="torch",
            device=str(self.device),
            dtype=settings.dtype,
            reason=reason,
            input_kind="uint8",
            details={
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "workers": self.workers,
                "cuda_graphs": self._graphs.sizes if self._graphs is not None else None,
                "attention_backend": self.attention,
                "pinned_input": self._pinned is not None,
            },
        )

    @torch.inference_mode()
    def run(
        self, batch: np.ndarray | torch.Tensor, patches: bool = True, alone: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``batch``: uint8 ``[B, S, S, 3]`` on the host, or already on the device (``--gpu-decode``)."""
        pixels = self._stage(batch)
        if self._graphs is not None:
            tokens, pooled = self._graphs.run(pixels)
        else:  # the raw bytes cross to the GPU, not float32
            tokens, pooled = self._forward(pixels.to(self.device, non_blocking=True))
        return pooled.cpu().numpy(), tokens.cpu().numpy() if patches else None

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

    def _forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[B, S, S, 3]`` on the device -> float32 tokens ``[B, N, D]`` and their mean ``[B, D]``."""
        with sdpa_backends(self.attention):
            tokens = self.encoder(self._normalize(pixels)).float()
        return tokens, tokens.mean(dim=1)

    def normalize(self, batch: np.ndarray) -> torch.Tensor:
        """``uint8 [B, S, S, 3]`` on the host -> normalised ``[B, 3, S, S]`` in the model's dtype on its device."""
        return self._normalize(torch.from_numpy(batch).to(self.device))

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        x *= 1.0 / 255.0
        x -= self._mean
        x /= self._std
        return x.to(self.dtype)

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
