"""Clip preprocessing: frame sampling covers every video length, and frames are processed exactly
as images are (so an image and a still clip of it get the same pixels)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jepa.config import Temporal, vjepa2_preprocess
from jepa.preprocess import normalize, prepare_image
from jepa.video_preprocess import frames_needed, normalize_clips, prepare_clip, sample_indices


@pytest.mark.parametrize("num_frames", [1, 2, 5, 15, 16, 63, 64, 65, 100, 1000])
@pytest.mark.parametrize(("fpc", "step"), [(16, 4), (8, 1), (2, 7)])
def test_sampling_gives_a_full_ordered_clip_inside_the_video(num_frames, fpc, step):
    idx = sample_indices(num_frames, fpc, step)
    assert len(idx) == fpc
    assert all(0 <= i < num_frames for i in idx)
    assert idx == sorted(idx)
    steps = set(np.diff(idx).tolist())
    if num_frames >= fpc * step:
        assert steps == ({step} if fpc > 1 else set())
        # centred: the unused frames before and after differ by at most one
        before, after = idx[0], num_frames - (idx[-1] + step)
        assert abs(before - after) <= 1
    else:
        assert steps <= {0, step}  # stride, then the last frame repeated
        assert idx[0] == 0


def test_sampling_rejects_empty_videos():
    with pytest.raises(ValueError):
        sample_indices(0, 16, 4)


def test_frames_needed_are_the_distinct_sampled_indices():
    temporal = Temporal(frames_per_clip=4, frame_step=2, image_frames=2)
    assert frames_needed(3, temporal) == [0, 2]
    assert frames_needed(100, temporal) == [46, 48, 50, 52]


def test_clip_frames_are_processed_like_images():
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)) for _ in range(4)]
    config = vjepa2_preprocess(32)
    assert config.resize_size == 36 and config.interpolation == "bilinear"
    clip = prepare_clip(frames, config, 32)
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    for t, frame in enumerate(frames):
        assert np.array_equal(clip[t], prepare_image(frame, config, 32))
    x = normalize_clips(np.stack([clip, clip[::-1]]), config)
    assert x.shape == (2, 4, 3, 32, 32) and x.dtype == np.float32
    assert np.array_equal(x[1, 0], normalize(clip[3:4], config)[0])
    mean = np.asarray(config.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(3, 1, 1)
    np.testing.assert_allclose(x[0, 2], (clip[2].transpose(2, 0, 1) / 255.0 - mean) / std, rtol=1e-6, atol=1e-6)


def test_empty_clip_is_rejected():
    with pytest.raises(ValueError):
        prepare_clip([], vjepa2_preprocess(32), 32)
