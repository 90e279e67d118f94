"""Clip preprocessing as V-JEPA 2's evaluation does it, without torchvision (numpy and Pillow only).

Two steps, matching :mod:`jepa.preprocess` for images: per clip, :func:`sample_indices` picks
``frames_per_clip`` frames ``frame_step`` apart and :func:`prepare_clip` resizes the shorter side
to ``resize_size`` (bilinear; Pillow antialiases on downscaling, as torchvision's
``Resize(antialias=True)`` in transformers' ``VJEPA2VideoProcessor`` does), centre-crops and
stacks ``uint8 [T, S, S, 3]``; per batch, :func:`normalize_clips` scales by 1/255 and applies the
ImageNet mean/std (``uint8 [B, T, S, S, 3] -> float32 [B, T, 3, S, S]``, Hugging Face's layout).
The torch-free ONNX Runtime service uses this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from jepa.config import Preprocess, Temporal
from jepa.preprocess import normalize, prepare_image


def sample_indices(num_frames: int, frames_per_clip: int, frame_step: int) -> list[int]:
    """Indices of the clip's frames in a video of ``num_frames`` frames.

    The clip spans ``frames_per_clip * frame_step`` frames, centred in the video (one test view, as
    Meta's evaluation takes from a video that holds exactly one); a video shorter than that gives
    every ``frame_step``-th frame from its start and repeats its last frame to fill the clip, as
    Meta's ``VideoDataset`` pads short videos.
    """
    if num_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    span = frames_per_clip * frame_step
    start = max((num_frames - span) // 2, 0)
    picked = [i for i in range(start, min(start + span, num_frames), frame_step)][:frames_per_clip]
    return picked + [picked[-1]] * (frames_per_clip - len(picked))


def frames_needed(num_frames: int, temporal: Temporal) -> list[int]:
    """The distinct frame indices a video of ``num_frames`` frames contributes to its clip, sorted."""
    return sorted(set(sample_indices(num_frames, temporal.frames_per_clip, temporal.frame_step)))


def prepare_clip(frames: Sequence[Image.Image], config: Preprocess, image_size: int) -> np.ndarray:
    """Frames (already sampled) -> ``uint8 [T, S, S, 3]``, each resized and cropped like an image."""
    if not frames:
        raise ValueError("a clip needs at least one frame")
    return np.stack([prepare_image(frame, config, image_size) for frame in frames])


def normalize_clips(batch: np.ndarray, config: Preprocess) -> np.ndarray:
    """``uint8 [B, T, S, S, 3] -> float32 [B, T, 3, S, S]``: scale to [0, 1], mean, std."""
    B, T = batch.shape[:2]
    flat = normalize(batch.reshape(B * T, *batch.shape[2:]), config)  # [B*T, 3, S, S]
    return flat.reshape(B, T, *flat.shape[1:])
