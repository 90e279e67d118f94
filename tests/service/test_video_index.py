"""Seeking to the clip (service/video_index.py, service/video.py): the frame index from the demux
pass, and long videos of every seekable kind giving exactly the clip that decoding every frame
gives, through the seek and not around it."""

from __future__ import annotations

import io
import logging
import time

import av
import numpy as np
import pytest
from video_util import AVAILABLE, cycling_pixels, make_live_webm, make_mp4, make_video

from jepa.config import Temporal, vjepa2_preprocess
from jepa.preprocess import prepare_image
from jepa.video_preprocess import sample_indices
from service.video import VideoOptions, _count_frames, _matroska_segment_end, as_displayed, container_of, decode_video
from service.video_index import FrameIndex

TEMPORAL = Temporal(frames_per_clip=4, frame_step=3, image_frames=4)
OPTIONS = VideoOptions(preprocess=vjepa2_preprocess(32), image_size=32, temporal=TEMPORAL)


def test_the_index_names_frames_in_presentation_order():
    index = FrameIndex.of([0, 3000, 1000, 2000, 4000], [0, 2000])  # decode order, as B-frames give
    assert index is not None and index.pts == (0, 1000, 2000, 3000, 4000) and index.keys == (0, 2000)
    assert index.positions() == {0: 0, 1000: 1, 2000: 2, 3000: 3, 4000: 4}
    assert index.seek_target(4) == 2000 and index.seek_target(2) == 2000
    assert index.seek_target(1) is None  # its keyframe is the first frame: nothing to skip
    assert FrameIndex.of([0, 1, 2], [1]).seek_target(0) is None  # no keyframe before frame 0


@pytest.mark.parametrize(
    ("pts", "keys"),
    [([0, None, 2], [0]), ([0, 1, 1], [0]), ([0, 1, 2], []), ([0, 1, 2], [None]), ([], [])],
    ids=["a packet without a timestamp", "a shared timestamp", "no keyframe", "an unknown keyframe", "empty"],
)
def test_no_index_where_timestamps_cannot_name_frames(pts, keys):
    assert FrameIndex.of(pts, keys) is None


def every_frame_clip(data: bytes) -> np.ndarray:
    """The clip as decoding every frame from the start makes it: PyAV alone, no index, no seek."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        frames = [as_displayed(f.to_image(), f.rotation, sar, OPTIONS.preprocess) for f in container.decode(stream)]
    picked = sample_indices(len(frames), TEMPORAL.frames_per_clip, TEMPORAL.frame_step)
    return np.stack([prepare_image(frames[i], OPTIONS.preprocess, OPTIONS.image_size) for i in picked])


SEEKING = [k for k in AVAILABLE if k.startswith(("mp4", "mov", "webm", "mkv")) and k != "webm-vp8"]


def seeks_to_the_clip(data: bytes, caplog: pytest.LogCaptureFixture) -> np.ndarray:
    """``decode_video(data)``, checking that it took the seek: the demux pass indexed the frames,
    the clip starts past the first keyframe, and the decode did not fall back to every frame."""
    count, index = _count_frames(data, container_of(data), 0, OPTIONS, time.monotonic() + 60)
    assert index is not None and len(index.pts) == count
    first = min(sample_indices(count, TEMPORAL.frames_per_clip, TEMPORAL.frame_step))
    assert index.seek_target(first) is not None
    with caplog.at_level(logging.DEBUG, logger="service"):
        clip = decode_video(data, 0, OPTIONS)
    assert not [r for r in caplog.records if "decoding every frame" in r.getMessage()]
    return clip


@pytest.mark.parametrize("kind", SEEKING)
def test_a_long_video_seeks_and_gives_the_clip_of_every_frame(kind, caplog):
    data = make_video(kind, frames=150, gop=10)
    np.testing.assert_array_equal(seeks_to_the_clip(data, caplog), every_frame_clip(data))


@pytest.mark.parametrize("layout", ["faststart", "fragmented"])
def test_web_and_fragmented_mp4_seek_to_the_same_clip(layout, caplog):
    data = make_mp4(layout, frames=120)
    np.testing.assert_array_equal(seeks_to_the_clip(data, caplog), every_frame_clip(data))


def test_a_live_webm_without_cues_or_sizes_seeks_to_the_same_clip(caplog):
    data = make_live_webm()
    assert _matroska_segment_end(data) is None and b"\x1c\x53\xbb\x6b" not in data  # no size, no Cues element
    np.testing.assert_array_equal(seeks_to_the_clip(data, caplog), every_frame_clip(data))


def test_the_clip_is_the_frames_sampled_by_index_through_the_seek(caplog):
    """Each kept frame is the one its index names: frame i's grey is 9 * (i mod 28)."""
    data = make_video("mp4-h264", frames=150, gop=10, pixels=cycling_pixels)
    clip = seeks_to_the_clip(data, caplog)
    picked = sample_indices(150, TEMPORAL.frames_per_clip, TEMPORAL.frame_step)
    assert [round(float(np.median(f[8:])) / 9) for f in clip] == [i % 28 for i in picked]


def test_an_index_the_stream_contradicts_falls_back_to_every_frame(caplog):
    """Timestamps that name no decoded frame (an index from a lying container, say): the decode
    notices at the first frame and decodes every frame instead, giving the true clip."""
    from service.video import _decode_frames

    data = make_video("mp4-h264", frames=150, gop=10)
    count, index = _count_frames(data, "mov", 0, OPTIONS, time.monotonic() + 60)
    shifted = FrameIndex(tuple(p + 1 for p in index.pts), tuple(k + 1 for k in index.keys))
    with caplog.at_level(logging.DEBUG, logger="service"):
        clip, decoded = _decode_frames(data, "mov", 0, OPTIONS, time.monotonic() + 60, count, shifted)
    assert decoded == 150 and any("decoding every frame" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(clip, every_frame_clip(data))
