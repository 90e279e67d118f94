"""Process group set-up from torchrun's environment; failures are loud, never a silent single process.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``. Without
``RANK`` we run as one process. With it, the group must start (gloo on CPU, NCCL on CUDA) or
we raise: carrying on alone would train N unsynchronised copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """The process group could not start, or ranks disagree."""


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DistributedError("meta.device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """One process unless torchrun's ``RANK`` is set; then join the group or raise."""
    if "RANK" not in os.environ:
        return DistInfo(0, 1, 0, pick_device(requested_device))
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    except (KeyError, ValueError) as e:
        raise DistributedError(f"RANK is set but WORLD_SIZE/LOCAL_RANK are missing or invalid: {e}") from e
    device = pick_device(requested_device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {rank}/{world}: could not start the {backend} process group: {e}") from e
    return DistInfo(rank, world, local_rank, device)


def shutdown(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def param_checksum(module: torch.nn.Module) -> float:
    """A float64 sum of all parameters, weighted by position, to compare replicas cheaply."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(module.parameters()):
        total += (i + 1) * p.detach().double().sum().cpu()
    return float(total)


def gather_floats(value: float, info: DistInfo) -> list[float]:
    """``value`` from every rank (a one-element list when single-process)."""
    if info.world == 1:
        return [value]
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    out = [torch.zeros_like(t) for _ in range(info.world)]
    dist.all_gather(out, t)
    return [float(x) for x in out]


def broadcast_int(value: int, info: DistInfo) -> int:
    """Rank 0's ``value`` on every rank (used to agree on the time-budget step count)."""
    if info.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=info.device)
    dist.broadcast(t, 0)
    return int(t.item())
