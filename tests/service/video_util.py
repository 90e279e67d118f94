"""Real short videos made with PyAV's encoders, for the video tests (nothing is downloaded).

Frame ``i`` is a flat grey of level ``LEVEL_STEP * i`` with a small moving bar, so a decoded
frame's mean says which source frame it was, through lossy codecs too.
"""

from __future__ import annotations

import io

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


def make_video(kind: str, frames: int = 24, width: int = 64, height: int = 48, rate: int = 12) -> bytes:
    fmt, codec, pix_fmt = KINDS[kind]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


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
