"""Decoding for a video model (V-JEPA 2): each file becomes one clip ``uint8 [T, S, S, 3]``.

The one hook from the request path: :func:`decode_inputs` sends an image model's files to the
image decoder unchanged (:func:`service.decode.decode_all`) and, for a video model, sniffs each
file: a video container (:func:`service.video.container_of`) is decoded by PyAV in the decode
thread pool; anything else is decoded as an image and repeated into a still clip of
``image_frames`` frames, which is how the model embeds an image (``jepa.vjepa2``). Both kinds can
share a request and a batch because :func:`video_options` requires ``image_frames ==
frames_per_clip`` (the default, 16 and 16).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor

import numpy as np

from jepa.config import ModelConfig
from service.decode import DecodeOptions, Decoder, decode_all, decode_image
from service.errors import ApiError, InvalidImage, InvalidVideo
from service.settings import Settings
from service.video import VideoOptions, container_of, decode_video


def video_options(config: ModelConfig, settings: Settings) -> VideoOptions | None:
    """The clip geometry and limits for a video model, None for an image model."""
    temporal = config.temporal
    if temporal is None:
        return None
    if temporal.image_frames != temporal.frames_per_clip:
        raise ValueError(
            f"{config.name}: temporal.image_frames {temporal.image_frames} != frames_per_clip "
            f"{temporal.frames_per_clip}; the service batches images and videos together as clips of one length"
        )
    return VideoOptions(
        preprocess=config.preprocess,
        image_size=config.image_size,
        temporal=temporal,
        max_pixels=settings.video_max_pixels,
        max_frames=settings.video_max_frames,
        max_duration_s=settings.video_max_duration_s,
        timeout_s=settings.video_timeout_s,
    )


async def decode_inputs(
    blobs: Sequence[bytes],
    image_options: DecodeOptions,
    video: VideoOptions | None,
    decoder: Executor | Decoder,
    pool: Executor,
    image_timeout_s: float,
) -> list[np.ndarray]:
    """Every file's model input (images ``[S, S, 3]``; for a video model clips ``[T, S, S, 3]``);
    the lowest failing index fails the request, as for images."""
    if video is None:
        return await decode_all(blobs, image_options, decoder, image_timeout_s)
    loop = asyncio.get_running_loop()

    async def one(i: int, blob: bytes) -> np.ndarray:
        if container_of(blob) is not None:
            # decode_video checks its own deadline between frames; this bounds one stuck call
            job = loop.run_in_executor(pool, decode_video, blob, i, video)
            return await _bounded(
                job, video.timeout_s + 5.0, InvalidVideo(f"video {i} took too long to decode", index=i)
            )
        if isinstance(decoder, Executor):
            job = loop.run_in_executor(decoder, decode_image, blob, i, image_options)
        else:
            job = decoder.decode(blob, i, image_options)
        late = InvalidImage(f"image {i} took longer than {image_timeout_s:g} s to decode", index=i)
        pixels = await _bounded(job, image_timeout_s, late)
        return np.repeat(pixels[None], video.temporal.image_frames, axis=0)  # the still clip of an image

    results = await asyncio.gather(*(one(i, b) for i, b in enumerate(blobs)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


async def _bounded(job: Awaitable[np.ndarray], timeout_s: float, late: ApiError) -> np.ndarray:
    try:
        return await asyncio.wait_for(job, timeout_s)
    except asyncio.TimeoutError as e:
        raise late from e
