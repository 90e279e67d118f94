"""JPEG decode, orientation, resize and crop on the GPU (``--gpu-decode``), for the torch backend on CUDA.

Why: ViT-H/14 on an H200 eats about 1,000 images/s, and a 3 MP JPEG costs a CPU core some 23 ms
to decode and resize, so no host CPU keeps up (docs/BENCHMARKS.md). torchvision's
``decode_jpeg(list, device="cuda")`` runs nvJPEG on a whole list of files in one call, and
the pixels never leave the device: the decoder hands the batcher ``uint8 [S, S, 3]`` CUDA tensors,
which it stacks on the device into the model's input.

Why torchvision rather than nvImageCodec: the CUDA builds of torch that users install come with a
matching torchvision (one more wheel, built against the same CUDA), while nvImageCodec is a separate
NVIDIA package per CUDA major version whose tensors must be handed to torch through DLPack; both
wrap nvJPEG. torchvision is only in the optional ``gpu`` extra and imported only here, only when
the backend runs on CUDA.

Files arriving together are decoded in one call: :class:`GpuDecoder` sends what is pending when
the event loop turns, and while a batch is on the GPU it gathers the next one. What
:func:`service.gpu_plan.plan_image` keeps on the CPU (not a JPEG, CMYK, progressive, an
interpolation the device lacks), what nvJPEG refuses, and anything whose header fails to parse go
through :func:`service.decode.decode_image` instead, one image at a time;
``jepa_decode_path_total{path, reason}`` counts both ways.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from prometheus_client import CollectorRegistry, Counter

from service.decode import FORMATS, DecodeOptions, decode_image
from service.gpu_plan import Plan, plan_image

log = logging.getLogger("service")


def nvjpeg_problem(device: torch.device) -> str | None:
    """None when torchvision's nvJPEG decodes a JPEG on ``device``, else why not."""
    if device.type != "cuda":
        return f"device is {device.type}, not cuda"
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError as e:
        return f"torchvision is not installed ({e}); pip install 'jepa-embed[gpu]'"
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 90)).save(buf, "JPEG")
    try:
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
    except Exception as e:  # a CPU-only torchvision build, or a driver/library mismatch
        return f"torchvision's decode_jpeg on {device} failed: {type(e).__name__}: {e}"
    return None


def open_gpu_decoder(
    required: bool, device: str, cpu_pool: ThreadPoolExecutor, registry: CollectorRegistry
) -> GpuDecoder | None:
    """The decoder when nvJPEG works on ``device``; otherwise None (logged), or, when
    ``required`` (``--gpu-decode on``), a start-up error naming why."""
    problem = nvjpeg_problem(torch.device(device))
    if problem is None:
        return GpuDecoder(torch.device(device), cpu_pool, registry)
    if required:
        raise RuntimeError(f"--gpu-decode on, but {problem}")
    log.warning("JPEGs decode on the CPU: %s", problem)
    return None


def on_device(pixels: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Decoded ``uint8 [3, H, W]`` on the GPU -> upright, resized, cropped ``uint8 [S, S, 3]``."""
    x = pixels
    if plan.steps.transpose:
        x = x.transpose(1, 2)
    flips = [d for d, on in ((1, plan.steps.flip_h), (2, plan.steps.flip_w)) if on]
    if flips:
        x = x.flip(flips)
    (new_w, new_h), (left, top, right, bottom) = plan.geometry.size, plan.geometry.box
    x = x[None].float()  # [1, 3, H, W]
    if x.shape[-2:] != (new_h, new_w):
        antialias = plan.mode in ("bilinear", "bicubic")  # Pillow low-passes when it shrinks
        x = F.interpolate(x, size=(new_h, new_w), mode=plan.mode, antialias=antialias, align_corners=None)
    x = x[0, :, top:bottom, left:right]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


@dataclass
class _Pending:
    data: bytes
    plan: Plan
    future: asyncio.Future[torch.Tensor | None]


class GpuDecoder:
    """The :class:`service.decode.Decoder` for ``--gpu-decode``: nvJPEG in batches, CPU fallback per image."""

    def __init__(self, device: torch.device, cpu_pool: ThreadPoolExecutor, registry: CollectorRegistry) -> None:
        self.device = device
        self._cpu_pool = cpu_pool
        self._gpu_thread = ThreadPoolExecutor(1, thread_name_prefix="jepa-nvjpeg")  # one stream, in order
        self._stream = torch.cuda.Stream(device)
        self._pending: list[_Pending] = []
        self._busy = False  # a batch is in the nvJPEG thread
        self.paths = Counter(
            "jepa_decode_path",
            "Images by decode path: gpu, or cpu with the reason (not_jpeg, colour_mode, progressive, "
            "interpolation, header, refused)",
            ["path", "reason"],
            registry=registry,
        )

    async def decode(
        self, data: bytes, index: int, options: DecodeOptions, on_start: Callable[[], None] | None = None
    ) -> np.ndarray | torch.Tensor:
        """One image, batched with the others in flight (:class:`service.decode_slots.Decoder`: the
        slot's clock starts now, as the batch forms at once)."""
        if on_start is not None:
            on_start()
        plan = plan_for(data, options)
        if isinstance(plan, Plan):
            loop = asyncio.get_running_loop()
            future: asyncio.Future[torch.Tensor | None] = loop.create_future()
            if not self._pending and not self._busy:
                loop.call_soon(self._flush)  # after every decode queued in this turn of the loop
            self._pending.append(_Pending(data, plan, future))
            pixels = await future
            if pixels is not None:
                self.paths.labels("gpu", "").inc()
                return pixels
            plan = "refused"
        self.paths.labels("cpu", plan).inc()
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, decode_image, data, index, options)

    def _flush(self) -> None:
        """Send what is pending to the nvJPEG thread, unless it is busy: then what arrives meanwhile
        waits and goes as one batch when the current one is done."""
        if self._busy or not self._pending:
            return
        batch, self._pending, self._busy = self._pending, [], True
        done = asyncio.get_running_loop().run_in_executor(self._gpu_thread, self._decode_batch, batch)
        done.add_done_callback(lambda f: self._done(batch, f))

    def _done(self, batch: list[_Pending], finished: asyncio.Future[list[torch.Tensor | None]]) -> None:
        self._busy = False
        _settle(batch, finished)
        self._flush()

    def _decode_batch(self, batch: list[_Pending]) -> list[torch.Tensor | None]:
        """In the nvJPEG thread, on its own stream: decode all, or each alone if the batch call fails."""
        from torchvision.io import ImageReadMode, decode_jpeg

        files = [torch.frombuffer(bytearray(p.data), dtype=torch.uint8) for p in batch]
        with torch.cuda.stream(self._stream):
            try:
                decoded: list[torch.Tensor | None] = list(
                    decode_jpeg(files, mode=ImageReadMode.RGB, device=self.device)
                )
            except RuntimeError:  # one bad file fails the call: find it, keep the rest
                decoded = [_decode_one(f, self.device) for f in files]
            out = [None if d is None else on_device(d, p.plan) for d, p in zip(decoded, batch, strict=True)]
            consumer = torch.cuda.default_stream(self.device)  # where the batcher stacks and runs them
            for t in out:
                if t is not None:
                    t.record_stream(consumer)
        self._stream.synchronize()  # the batcher's stream may use them at once
        return out

    def shutdown(self) -> None:
        self._gpu_thread.shutdown(wait=False, cancel_futures=True)


def plan_for(data: bytes, options: DecodeOptions) -> Plan | str:
    """The header says GPU or CPU; a header Pillow cannot read, or over the pixel limit, goes to
    the CPU path, which raises the error the client gets."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:  # header only
            if image.width * image.height > options.max_pixels:
                return "header"
            return plan_image(image, options.preprocess, options.image_size)
    except Exception:  # not a JPEG, a bomb, a broken header: the CPU path names it
        return "header"


def _decode_one(file: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg([file], mode=ImageReadMode.RGB, device=device)[0]
    except RuntimeError:
        return None


class CancelledOnShutdown(Exception):
    """The nvJPEG thread was shut down before this batch ran."""


def _settle(batch: list[_Pending], done: asyncio.Future[list[torch.Tensor | None]]) -> None:
    """Hand each waiter its tensor; if the whole GPU step failed, each falls back to the CPU (None)."""
    error = CancelledOnShutdown() if done.cancelled() else done.exception()
    if error is not None:
        log.warning("GPU decode of %d images failed; decoding them on the CPU", len(batch), exc_info=error)
    results = [None] * len(batch) if error is not None else done.result()
    for pending, pixels in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(pixels)
