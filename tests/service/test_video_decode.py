"""Video decoding (service/video.py) on real short videos from PyAV's encoders: every container
and codec gives the right sampled frames, and every broken or oversized file a typed 4xx."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from video_util import (
    AVAILABLE,
    LEVEL_STEP,
    PORTRAIT_MATRIX,
    make_audio_only,
    make_mp4,
    make_video,
    top_level_boxes,
    with_track_matrix,
)

from jepa.config import Temporal, vjepa2_preprocess
from service.errors import ApiError, InvalidVideo, PayloadTooLarge, UnsupportedMediaType, status_of
from service.video import VideoOptions, container_of, decode_video

TEMPORAL = Temporal(frames_per_clip=4, frame_step=3, image_frames=4)


def options(**limits: object) -> VideoOptions:
    return VideoOptions(preprocess=vjepa2_preprocess(32), image_size=32, temporal=TEMPORAL, **limits)


def source_frame(clip_frame: np.ndarray) -> int:
    """Which source frame a decoded one was: the median level over the bar-free rows, / LEVEL_STEP."""
    return round(float(np.median(clip_frame[8:])) / LEVEL_STEP)


@pytest.mark.parametrize("kind", AVAILABLE)
def test_each_container_and_codec_gives_the_centred_strided_clip(kind):
    clip = decode_video(make_video(kind, frames=24), 0, options())
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    # 24 frames, clip of 4 frames 3 apart, centred: frames 6, 9, 12, 15
    assert [source_frame(f) for f in clip] == [6, 9, 12, 15]


@pytest.mark.parametrize("kind", AVAILABLE)
def test_a_short_video_repeats_its_last_frame(kind):
    clip = decode_video(make_video(kind, frames=5), 0, options())
    assert [source_frame(f) for f in clip] == [0, 3, 3, 3]  # frames 0 and 3, then the last one taken again


@pytest.mark.parametrize("kind", AVAILABLE)
def test_truncation_at_any_offset_is_a_typed_4xx(kind):
    """Every prefix, not a sample of them: a GIF cut where its LZW data held 0x3B (its trailer
    byte) once passed as a whole file."""
    data = make_video(kind, frames=12)
    outcomes = {}
    for cut in range(len(data)):
        with pytest.raises(ApiError) as info:
            decode_video(data[:cut], 3, options())
        assert 400 <= status_of(info.value) < 500, (cut, info.value)
        assert info.value.index == 3
        outcomes[type(info.value).__name__] = outcomes.get(type(info.value).__name__, 0) + 1
    assert set(outcomes) <= {"InvalidVideo", "UnsupportedMediaType"}, outcomes
    assert decode_video(data, 3, options()).shape == (4, 32, 32, 3)  # the whole file is fine


def test_a_web_optimised_mp4_decodes_and_refuses_every_cut():
    data = make_mp4("faststart")
    assert [kind for kind, _ in top_level_boxes(data)][:2] == [b"ftyp", b"moov"]  # the index first
    assert [source_frame(f) for f in decode_video(data, 0, options())] == [6, 9, 12, 15]
    for cut in range(len(data)):
        with pytest.raises(ApiError) as info:
            decode_video(data[:cut], 0, options())
        assert 400 <= status_of(info.value) < 500, (cut, info.value)


def test_a_fragmented_mp4_cut_between_fragments_is_the_shorter_recording():
    """A fragmented MP4 (as browsers' recorders and live encoders write) declares no total: cut
    where a fragment ends it is a complete recording of fewer frames, as a live stream stopped
    there would be, and is embedded as such. Cut anywhere else, a fragment's header (``moof``)
    without its samples (``mdat``) included, it is a typed 4xx."""
    data = make_mp4("fragmented")
    boxes = top_level_boxes(data)
    assert [kind for kind, _ in boxes][:4] == [b"ftyp", b"moov", b"moof", b"mdat"]
    whole_fragments = {end for kind, end in boxes if kind == b"mdat"} | {len(data)}  # the file ends in mfra
    assert len(whole_fragments) >= 4, boxes
    for cut in range(len(data) + 1):
        if cut in whole_fragments:
            with av.open(io.BytesIO(data[:cut])) as container:  # the frames present, by PyAV alone
                present = sum(1 for _ in container.decode(video=0))
            clip = decode_video(data[:cut], 0, options())
            shorter = decode_video(make_video("mp4-h264", frames=present), 0, options())
            assert [source_frame(f) for f in clip] == [source_frame(f) for f in shorter], (cut, present)
        else:
            with pytest.raises(ApiError) as info:
                decode_video(data[:cut], 0, options())
            assert 400 <= status_of(info.value) < 500, (cut, info.value)


@pytest.mark.parametrize("kind", AVAILABLE)
def test_corrupted_bytes_give_a_typed_4xx_or_a_full_clip(kind):
    """Decoders conceal some damage (that is their job); what they cannot must be a 4xx, never a crash."""
    data = make_video(kind, frames=12)
    rng = np.random.default_rng(len(data))
    for trial in range(30):
        damaged = bytearray(data)
        at = rng.integers(0, len(data), size=8)
        start = int(at[0])
        span = slice(start, start + 1 + trial % 32)
        damaged[span] = rng.integers(0, 256, size=len(damaged[span]), dtype=np.uint8).tobytes()
        for i in at[1:]:
            damaged[i] ^= 0xFF
        try:
            clip = decode_video(bytes(damaged), 0, options())
        except ApiError as e:
            assert 400 <= status_of(e) < 500
        else:
            assert clip.shape == (4, 32, 32, 3)


def test_frame_size_duration_and_frame_count_limits_are_413():
    data = make_video("mp4-h264", frames=24, width=64, height=48, rate=12)
    with pytest.raises(PayloadTooLarge, match="64x48"):
        decode_video(data, 0, options(max_pixels=64 * 48 - 1))
    with pytest.raises(PayloadTooLarge, match=r"lasts 2\.0 s"):
        decode_video(data, 0, options(max_duration_s=1.5))
    with pytest.raises(PayloadTooLarge, match="more than 10 frames"):
        decode_video(data, 0, options(max_frames=10))
    assert decode_video(data, 0, options(max_pixels=64 * 48, max_frames=24, max_duration_s=2.0)).shape[0] == 4


def test_streamed_webm_without_sizes_is_still_bounded_by_frames():
    data = make_video("webm-vp9", frames=24)
    with pytest.raises(PayloadTooLarge):
        decode_video(data, 0, options(max_frames=5))


def test_decode_time_limit_is_a_400():
    with pytest.raises(InvalidVideo, match="took longer than"):
        decode_video(make_video("mp4-h264", frames=24), 0, options(timeout_s=1e-9))


def test_no_video_stream_and_unknown_containers():
    with pytest.raises(InvalidVideo, match="no video stream"):
        decode_video(make_audio_only(), 1, options())
    with pytest.raises(UnsupportedMediaType):
        decode_video(b"\xff\xd8\xff\xe0" + bytes(100), 1, options())  # a JPEG header
    with pytest.raises(InvalidVideo):
        decode_video(b"\x00\x00\x00\x18ftypisom" + bytes(200), 1, options())
    with pytest.raises(InvalidVideo):
        decode_video(b"\x1a\x45\xdf\xa3" + bytes(64), 1, options())


def test_unsupported_codec_is_415():
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as container:
        stream = container.add_stream("png", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(UnsupportedMediaType, match="codec 'png'"):
        decode_video(buf.getvalue(), 0, options())


def test_container_sniffing_leaves_still_images_to_the_image_decoder():
    assert container_of(make_video("mp4-h264", frames=2)) == "mov"
    assert container_of(make_video("webm-vp8", frames=2)) == "matroska"
    assert container_of(b"GIF89a" + bytes(10)) == "gif"
    assert container_of(b"\x00\x00\x00\x18ftypheic" + bytes(10)) is None  # HEIC photo
    assert container_of(b"\x00\x00\x00\x1cftypavif" + bytes(10)) is None  # AVIF photo
    assert container_of(b"\x00\x00\x00\x1cftypav") is None  # cut in its brand: photo or video, nobody knows
    assert container_of(b"\x89PNG\r\n\x1a\n" + bytes(10)) is None
    assert container_of(b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(10)) == "avi"
    assert container_of(b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(10)) is None  # WebP photo
    assert container_of(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(10)) is None  # audio


def top_bright(i: int, width: int, height: int) -> np.ndarray:
    """Upright content: the top half white, the bottom half black."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2] = 255
    return pixels


def sideways(i: int, width: int, height: int) -> np.ndarray:
    """:func:`top_bright` as a phone stores it: turned a quarter counter-clockwise (top to the left)."""
    return np.rot90(top_bright(i, height, width)).copy()


# MP4/MOV kinds whose encoders take any small size (x265 crashes on a 48 px wide frame).
TAGGABLE = [k for k in AVAILABLE if k in ("mp4-h264", "mp4-mpeg4", "mov-h264")]


@pytest.mark.parametrize("kind", TAGGABLE)
def test_a_phone_video_stored_on_its_side_is_embedded_upright(kind):
    """Phones store portrait video landscape and tag the track with a quarter-turn matrix; the clip
    is what a player shows (as EXIF orientation is honoured for photos), not the stored pixels."""
    upright = decode_video(make_video(kind, frames=6, width=48, height=64, pixels=top_bright), 0, options())
    stored = make_video(kind, frames=6, width=64, height=48, pixels=sideways)
    tagged = decode_video(with_track_matrix(stored, PORTRAIT_MATRIX), 0, options())
    as_stored = decode_video(stored, 0, options())
    assert tagged[:, :12].mean() > 200 and tagged[:, -12:].mean() < 50  # bright on top, as shot
    assert np.abs(tagged.astype(int) - upright).mean() < 4
    assert as_stored[:, :, :12].mean() > 200 and as_stored[:, :, -12:].mean() < 50  # untagged: bright left


def edge_columns(i: int, width: int, height: int) -> np.ndarray:
    """White outer quarters, a black middle half."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 4] = pixels[:, 3 * width // 4 :] = 255
    return pixels


def stored_sample_aspect(data: bytes) -> Fraction | None:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio


@pytest.mark.parametrize("kind", TAGGABLE)  # PyAV's WebM muxing drops the tag
def test_anamorphic_pixels_are_shown_square(kind):
    """Pixels tagged twice as wide as tall: shown 128 x 48, the centre crop (a third of the width)
    sees only the black middle; read as square pixels it would reach the white quarters."""
    tagged = make_video(kind, frames=6, pixels=edge_columns, sample_aspect=Fraction(2))
    assert stored_sample_aspect(tagged) == 2
    wide = decode_video(tagged, 0, options())
    square = decode_video(make_video(kind, frames=6, pixels=edge_columns), 0, options())
    assert wide.max() < 60, wide.max()
    assert square[:, :, :2].mean() > 200 and square[:, :, -2:].mean() > 200


@pytest.mark.skipif("gif" not in AVAILABLE, reason="this PyAV cannot encode GIF")
def test_a_gif_pixel_aspect_byte_is_ignored_as_browsers_do():
    tagged = make_video("gif", frames=6, pixels=edge_columns, sample_aspect=Fraction(2))
    assert stored_sample_aspect(tagged) == 2
    clip = decode_video(tagged, 0, options())
    assert clip[:, :, :2].mean() > 200 and clip[:, :, -2:].mean() > 200


ODD_SHAPES = [(1024, 2), (2, 1024), (4000, 16), (16, 4000), (1, 1), (3, 5)]
SHAPE_CASES = [
    pytest.param(kind, w, h, id=f"{kind}-{w}x{h}")
    for kind in ("webm-vp9", "gif", "mp4-h264")
    if kind in AVAILABLE
    for w, h in ODD_SHAPES
    if kind != "mp4-h264" or (w % 2 == 0 and h % 2 == 0)  # H.264 4:2:0 needs even sides
]


@pytest.mark.parametrize(("kind", "width", "height"), SHAPE_CASES)
def test_elongated_and_tiny_frames_give_a_full_clip(kind, width, height):
    """Every shape a codec accepts, 1 x 1 to 4000 x 16, becomes the model's square clip (frames go
    through the image path's bounded resize, so a 2 px strip costs no more than its pixels)."""
    clip = decode_video(make_video(kind, frames=6, width=width, height=height), 0, options())
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
