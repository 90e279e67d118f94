"""What a video model (V-JEPA 2) needs to decode its inputs: each file becomes one clip
``uint8 [T, S, S, 3]`` (:meth:`service.decode_slots.DecodeSlots.decode`): a video container
(:func:`service.video.container_of`) is decoded by PyAV in the decode thread pool; anything else
is decoded as an image and repeated into a still clip of ``image_frames`` frames, which is how the
model embeds an image (``jepa.vjepa2``). Both kinds can share a request and a batch because
:func:`video_options` requires ``image_frames == frames_per_clip`` (the default, 16 and 16).
"""

from __future__ import annotations

from jepa.config import ModelConfig
from service.settings import Settings
from service.video import VideoOptions


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
