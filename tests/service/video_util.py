"""Real short videos made with PyAV's encoders, for the video tests (nothing is downloaded).

Frame ``i`` is a flat grey of level ``LEVEL_STEP * i`` with a small moving bar, so a decoded
frame's mean says which source frame it was, through lossy codecs too.
"""

from __future__ import annotations

import io
import struct
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

LEVEL_STEP = 9

# name -> (container, codec, pixel format); only those this PyAV build can encode are used.
KINDS: dict[str, tuple[str, str, str]] = {
    "mp4-h264": ("mp4", "libx264", "yuv420p"),
    "mp4-mpeg4": ("mp4", "mpeg4", "yuv420p"),
    "webm-vp8": ("webm", "libvpx", "yuv420p"),
    "webm-vp9": ("webm", "libvpx-vp9", "yuv420p"),
    "mov-h264": ("mov", "libx264", "yuv420p"),
    "avi-mpeg4": ("avi", "mpeg4", "yuv420p"),
    "avi-mjpeg": ("avi", "mjpeg", "yuvj420p"),
    "mp4-hevc-10bit": ("mp4", "libx265", "yuv420p10le"),  # as phones record HDR
    "mp4-av1": ("mp4", "libsvtav1", "yuv420p"),
    "webm-av1": ("webm", "libsvtav1", "yuv420p"),
    "mov-prores": ("mov", "prores_ks", "yuv422p10le"),
    "mp4-h264-444": ("mp4", "libx264", "yuv444p"),  # High 4:4:4, screen recorders
    "mov-h264-422-10bit": ("mov", "libx264", "yuv422p10le"),  # cameras' 10-bit 4:2:2
    "mov-mjpeg": ("mov", "mjpeg", "yuvj422p"),  # older cameras and webcams
    "mkv-h264": ("matroska", "libx264", "yuv420p"),  # OBS and screen recorders
    "webm-vp9-alpha": ("webm", "libvpx-vp9", "yuva420p"),  # transparent video (the alpha is not used)
    "gif": ("gif", "gif", "rgb8"),
}


def can_encode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


AVAILABLE = [name for name, (_, codec, _) in KINDS.items() if can_encode(codec)]


def frame_pixels(i: int, width: int, height: int) -> np.ndarray:
    level = min(LEVEL_STEP * i, 255)
    pixels = np.full((height, width, 3), level, np.uint8)
    pixels[: height // 8, (3 * i) % width :][:, :4] = 255 - level
    return pixels


def make_video(
    kind: str,
    frames: int = 24,
    width: int = 64,
    height: int = 48,
    rate: int = 12,
    pixels: Callable[[int, int, int], np.ndarray] = frame_pixels,
    sample_aspect: Fraction | None = None,
    gop: int | None = None,
    muxer: dict[str, str] | None = None,
) -> bytes:
    """``frames`` frames of ``pixels(i, width, height)``; ``sample_aspect`` tags the stream's pixels
    as that many times wider than tall (anamorphic video); ``gop``: a keyframe every that many
    frames (else the encoder's default, often one for the whole video); ``muxer``: the container's
    options (FFmpeg's MP4 ``faststart`` rewrites the file it wrote, so this writes a real file)."""
    fmt, codec, pix_fmt = KINDS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"clip.{fmt}"
        with av.open(str(path), "w", format=fmt, options=muxer or {}) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            if sample_aspect is not None:
                stream.codec_context.sample_aspect_ratio = sample_aspect
            if gop is not None:
                stream.options = {"g": str(gop)}
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(pixels(i, width, height), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        return path.read_bytes()


def cycling_pixels(i: int, width: int, height: int) -> np.ndarray:
    """:func:`frame_pixels` of ``i mod 28``, so long videos keep levels under 255."""
    return frame_pixels(i % 28, width, height)


def make_audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


# The ISO-BMFF track matrix a phone writes on video it holds landscape but shows portrait: a
# quarter turn clockwise, in 16.16 fixed point (the last entry 2.30).
PORTRAIT_MATRIX = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)


def with_track_matrix(data: bytes, matrix: tuple[int, ...]) -> bytes:
    """An MP4/MOV with its video track header's display matrix replaced, byte for byte."""
    at = data.index(b"tkhd") + 4
    version = data[at]
    # version+flags (4), times/track id/reserved/duration (20 or 32), reserved (8), layer,
    # alternate group, volume, reserved (8), then the nine matrix entries
    start = at + 4 + (20 if version == 0 else 32) + 16
    return data[:start] + struct.pack(">9i", *matrix) + data[start + 36 :]


# MP4 layouts other than PyAV's default (index last): web-optimised files put the index first, and
# fragmented ones (Safari's MediaRecorder, DASH, live recorders) an empty index and then
# self-contained fragments, here one per 6 frames.
MP4_LAYOUTS = {"faststart": "faststart", "fragmented": "frag_keyframe+empty_moov+default_base_moof"}


def make_mp4(layout: str, frames: int = 24) -> bytes:
    """An H.264 MP4 of :func:`frame_pixels` in ``layout``, a keyframe every 6 frames."""
    return make_video("mp4-h264", frames, gop=6, muxer={"movflags": MP4_LAYOUTS[layout]})


def make_live_webm(frames: int = 150, gop: int = 10) -> bytes:
    """A VP9 WebM as a live recorder writes it (FFmpeg's ``live`` option): sizes unknown, no cues,
    so a seek has to scan for its keyframe."""
    return make_video("webm-vp9", frames, gop=gop, pixels=cycling_pixels, muxer={"live": "1"})


def top_level_boxes(data: bytes) -> list[tuple[bytes, int]]:
    """An MP4's top-level boxes: (type, offset where it ends) each."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        kind = data[pos + 4 : pos + 8]
        pos += int.from_bytes(data[pos : pos + 4], "big")
        boxes.append((kind, pos))
    return boxes
