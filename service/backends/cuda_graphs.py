"""CUDA graphs for the torch backend: the whole forward captured once per batch-size bucket.

Eager PyTorch launches every operator from Python: a ViT-H/14 forward is hundreds of launches,
each holding the GIL, so on a GPU the inference thread competes with the event loop and the
decode threads for that one lock (py-spy on the lent H200: the forward's Python frames were the
inference thread's largest cost, docs/BENCHMARKS.md). A captured graph replays all of them with
one call. Batches are padded up to the next captured size (1, 2, 4, ... ``max_batch_size``);
rows are independent in a ViT, so the padding rows' stale pixels never touch the real ones.

The captures share one memory pool, which is safe because a :class:`GraphSet` replays one graph
at a time (the backend allows one inference worker with graphs) and the caller copies the
outputs off before the next replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from jepa.contract import Embeddings

Forward = Callable[[Tensor], Embeddings[Tensor]]  # uint8 [B, S, S, 3] on the GPU -> every output


def bucket_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... below ``max_batch``, then ``max_batch`` itself."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


class GraphSet:
    """One captured forward per bucket size, with its static input and output tensors."""

    def __init__(self, forward: Forward, sizes: list[int], image_size: int, device: torch.device) -> None:
        self.sizes = sorted(sizes)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Embeddings[Tensor]]] = {}
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(device)
        with torch.inference_mode():
            for size in reversed(self.sizes):  # largest first: it sizes the shared pool
                static = torch.zeros((size, image_size, image_size, 3), dtype=torch.uint8, device=device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):  # warm up outside the capture (library handles, workspaces)
                    forward(static)
                torch.cuda.current_stream(device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    outputs = forward(static)
                self._graphs[size] = (graph, static, outputs)
        torch.cuda.synchronize(device)

    def bucket(self, n: int) -> int:
        for size in self.sizes:
            if size >= n:
                return size
        raise ValueError(f"batch of {n} is larger than the largest captured size {self.sizes[-1]}")

    def run(self, batch: Tensor) -> Embeddings[Tensor]:
        """Replay the bucket's graph on ``batch`` (uint8 ``[B, S, S, 3]``, pinned host memory or on
        the GPU); returns views of its static outputs, valid until the next :meth:`run`."""
        n = len(batch)
        graph, static, outputs = self._graphs[self.bucket(n)]
        static[:n].copy_(batch, non_blocking=True)
        graph.replay()
        return outputs.map(lambda t: t[:n])
