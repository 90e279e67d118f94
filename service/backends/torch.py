"""PyTorch backend: ``jepa.load_encoder`` on CPU or CUDA, weights cast to the asked dtype.

Global embedding = mean of the patch tokens computed in float32, exactly as
``Encoder.embed`` does, so float32 results match ``load_encoder(model).embed(images)``.
"""

from __future__ import annotations

import numpy as np
import torch

import jepa
from service.backends.base import BackendInfo
from service.settings import Settings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        self.info = BackendInfo(
            name="torch",
            device=str(self.device),
            dtype=settings.dtype,
            reason=reason,
            details={
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "workers": self.workers,
            },
        )

    @torch.inference_mode()
    def run(self, batch: np.ndarray, patches: bool = True, alone: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        x = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype, non_blocking=True)  # [B, 3, S, S]
        tokens = self.encoder(x).float()  # [B, N, D]
        pooled = tokens.mean(dim=1)  # [B, D]
        return pooled.cpu().numpy(), tokens.cpu().numpy() if patches else None

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
