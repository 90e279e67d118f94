"""Hypothesis mutations of real videos of every container and codec the tests can encode: the
decoder returns the clip or raises the service's typed 4xx naming the index, whatever the damage
(sizes that no longer match, repeated boxes, cut and spliced frames). Some seeds are long enough,
with keyframes often enough, that their decode seeks to the clip (service/video_index.py), so
damage meets the index and its fall-back too. A crash in FFmpeg would take the test process down
with it, which fails the run too."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from mutations import mutated
from video_util import AVAILABLE, make_mp4, make_video

from jepa.config import Temporal, vjepa2_preprocess
from service.errors import ApiError, status_of
from service.video import VideoOptions, decode_video

OPTIONS = VideoOptions(
    preprocess=vjepa2_preprocess(32), image_size=32, temporal=Temporal(frames_per_clip=4, frame_step=3, image_frames=4)
)


@pytest.fixture(scope="module")
def videos() -> list[bytes]:
    seeking = [
        make_video(kind, frames=60, gop=6) for kind in ("mp4-h264", "webm-vp9", "mp4-hevc-10bit") if kind in AVAILABLE
    ]
    return (
        [make_video(kind, frames=12) for kind in AVAILABLE] + [make_mp4("faststart"), make_mp4("fragmented")] + seeking
    )


def check(videos: list[bytes], examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated(videos))
    def one(data: bytes) -> None:
        try:
            clip = decode_video(data, 5, OPTIONS)
        except ApiError as e:
            assert 400 <= status_of(e) < 500 and e.index == 5, e
            return
        assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8

    one()


def test_hypothesis_mutations_of_real_videos(videos) -> None:
    check(videos, 300)


@pytest.mark.slow
def test_hypothesis_mutations_of_real_videos_longer(videos) -> None:
    check(videos, 3000)
