"""Video bytes -> one V-JEPA 2 clip ``uint8 [T, S, S, 3]``, through PyAV (FFmpeg); no torch.

Runs in the decode pool, never on the event loop. What a stranger's bytes can make FFmpeg do is
bounded before and while it runs:

- the container is named from its magic bytes (MP4/MOV, Matroska/WebM, AVI, GIF) and opened with that
  demuxer only, so FFmpeg never probes the rest of its formats (playlists that fetch URLs, ...);
- the codec must be one of :data:`CODECS`;
- frame size (``max_pixels``, checked on the header and on every decoded frame), duration,
  frame count and wall time are limits: a first pass only demuxes (counts packets, cheap), the
  second decodes and keeps just the sampled frames, each shown as a player shows it (display
  rotation, square pixels: :func:`as_displayed`) and prepared like an image.

A corrupt or truncated file is refused, never embedded from what happened to decode: FFmpeg
errors, fewer frames than the MP4 index lists, MP4 boxes, AVI chunks or a Matroska segment
longer than the bytes sent, a GIF whose blocks do not run to its trailer. Errors are the
service's typed 4xx (:mod:`service.errors`).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from jepa.config import Preprocess, Temporal
from jepa.preprocess import RESAMPLING, prepare_image
from jepa.video_preprocess import sample_indices
from service.errors import ApiError, InvalidVideo, PayloadTooLarge, UnsupportedMediaType
from service.video_index import FrameIndex

# ISO-BMFF major brands that are still images (HEIF/AVIF, Canon CR3 raw): those go to the image decoder.
IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"crx ")
CODECS = ("h264", "hevc", "mpeg4", "vp8", "vp9", "av1", "gif", "mjpeg", "prores")
_EBML = b"\x1a\x45\xdf\xa3"
_SEGMENT = b"\x18\x53\x80\x67"
log = logging.getLogger("service")
# Containers whose demuxers seek by timestamp to a keyframe (MP4/MOV by its index, Matroska by its
# cues or a scan), and codecs whose packets are not one frame each (VP8's invisible frames).
SEEKABLE = ("mov", "matroska")
NO_SEEK_CODECS = ("vp8",)
# What users call each container container_of names.
VIDEO_NAMES = {"mov": "MP4/MOV", "matroska": "WebM/Matroska", "avi": "AVI", "gif": "GIF"}
# Counter-clockwise quarter turns, as Pillow names them.
_QUARTER_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class VideoOptions:
    """How a video becomes a clip, and the limits on the work it may cost."""

    preprocess: Preprocess
    image_size: int
    temporal: Temporal
    max_pixels: int = 4096 * 2304
    max_frames: int = 3600
    max_duration_s: float = 120.0
    timeout_s: float = 20.0


def container_of(data: bytes) -> str | None:
    """The FFmpeg demuxer for ``data`` (``mov``, ``matroska``, ``avi``, ``gif``), or None when it is no video."""
    if data[4:8] == b"ftyp" and len(data) < 12:
        return None  # cut before its brand, the one thing that tells a photo (HEIC, AVIF) from a video
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip") and data[8:12] not in IMAGE_BRANDS:
        return "mov"
    if data.startswith(_EBML):
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":  # not RIFF....WEBP, a still image
        return "avi"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def decode_video(data: bytes, index: int, options: VideoOptions) -> np.ndarray:
    """Decode one video into its clip ``uint8 [frames_per_clip, S, S, 3]``; raises :class:`ApiError`."""
    fmt = container_of(data)
    if fmt is None:
        raise UnsupportedMediaType(f"video {index} is not MP4, MOV, WebM/Matroska, AVI or GIF", index=index)
    _check_complete(data, fmt, index)
    deadline = time.monotonic() + options.timeout_s
    try:
        count, frames = _count_frames(data, fmt, index, options, deadline)
        clip, decoded = _decode_frames(data, fmt, index, options, deadline, count, frames)
        if decoded != count and decoded > 0:  # packets that were no frames (e.g. invisible VP8 frames)
            clip, decoded = _decode_frames(data, fmt, index, options, deadline, decoded)
    except ApiError:
        raise
    except (av.FFmpegError, OSError, EOFError, IndexError, ValueError, MemoryError) as e:
        reason = " ".join(str(e).split())[:200]
        raise InvalidVideo(f"video {index} is corrupt or truncated ({type(e).__name__}: {reason})", index=index) from e
    if decoded == 0:
        raise InvalidVideo(f"video {index} has no decodable frames (corrupt or truncated)", index=index)
    return clip


def _open_stream(data: bytes, fmt: str, index: int) -> tuple[av.container.InputContainer, av.VideoStream]:
    container = av.open(io.BytesIO(data), mode="r", format=fmt)
    if not container.streams.video:
        container.close()
        raise InvalidVideo(f"video {index} has no video stream", index=index)
    stream = container.streams.video[0]
    codec = _codec_name(stream)
    if codec not in CODECS:
        container.close()
        raise UnsupportedMediaType(f"video {index} uses codec {codec!r}; supported: {', '.join(CODECS)}", index=index)
    return container, stream


def _codec_name(stream: av.VideoStream) -> str:
    """The format's name, not the decoder's: PyAV decodes AV1 with libdav1d, named "libdav1d"."""
    return stream.codec_context.codec.canonical_name if stream.codec_context else "unknown"


def _check_pixels(width: int, height: int, index: int, options: VideoOptions) -> None:
    if width * height > options.max_pixels:
        raise PayloadTooLarge(
            f"video {index} frames are {width}x{height} = {width * height} pixels, over the limit of "
            f"{options.max_pixels}",
            index=index,
        )


def _check_time(deadline: float, index: int, options: VideoOptions) -> None:
    if time.monotonic() > deadline:
        raise InvalidVideo(f"video {index} took longer than {options.timeout_s:g} s to decode", index=index)


def _count_frames(
    data: bytes, fmt: str, index: int, options: VideoOptions, deadline: float
) -> tuple[int, FrameIndex | None]:
    """First pass: demux only. Checks size, duration and frame limits; returns the number of frames
    and, where the decode pass may seek by it, their :class:`FrameIndex`."""
    container, stream = _open_stream(data, fmt, index)
    with container:
        _check_pixels(stream.codec_context.width, stream.codec_context.height, index, options)
        if container.duration is not None and container.duration / 1e6 > options.max_duration_s:
            raise PayloadTooLarge(
                f"video {index} lasts {container.duration / 1e6:.1f} s, over the limit of {options.max_duration_s:g} s",
                index=index,
            )
        count, pts, keys = 0, [], []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            pts.append(None if packet.is_discard else packet.pts)  # a discarded packet shows no frame
            if packet.is_keyframe:
                keys.append(packet.pts)
            seconds = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else 0.0
            if count > options.max_frames or seconds > options.max_duration_s:
                raise PayloadTooLarge(
                    f"video {index} holds more than {options.max_frames} frames or {options.max_duration_s:g} s",
                    index=index,
                )
            _check_time(deadline, index, options)
        if stream.frames and count < stream.frames:
            raise InvalidVideo(f"video {index} is truncated: {count} of {stream.frames} frames present", index=index)
        seekable = fmt in SEEKABLE and _codec_name(stream) not in NO_SEEK_CODECS
        return count, FrameIndex.of(pts, keys) if seekable else None


def _decode_frames(
    data: bytes,
    fmt: str,
    index: int,
    options: VideoOptions,
    deadline: float,
    count: int,
    frames: FrameIndex | None = None,
) -> tuple[np.ndarray, int]:
    """Second pass: decode, keep the sampled frames prepared; returns the clip and the frames seen.

    With ``frames`` (:mod:`service.video_index`) it starts at the keyframe before the clip and
    stops after the clip's last frame; should the decoded frames not match the index (a timestamp
    it does not hold, or out of order, or a frame of the clip missing) it decodes every frame from
    the start instead, as without one."""
    temporal = options.temporal
    wanted = sample_indices(max(count, 1), temporal.frames_per_clip, temporal.frame_step)
    needed = set(wanted)
    start = frames.seek_target(min(needed)) if frames is not None else None
    positions = frames.positions() if frames is not None and start is not None else None
    kept: dict[int, np.ndarray] = {}
    container, stream = _open_stream(data, fmt, index)
    # A GIF's pixel-aspect byte is ignored by browsers, the players GIFs are made for; so here too.
    sample_aspect = None if fmt == "gif" else stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    decoded, last = 0, -1
    with container:
        if positions is not None:
            try:
                container.seek(start, stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:  # a file that cannot seek is not a bad file: read it from the start
                log.debug("video %d: the seek failed; decoding every frame", index)
                return _decode_frames(data, fmt, index, options, deadline, count)
        for frame in container.decode(stream):
            _check_pixels(frame.width, frame.height, index, options)
            at = decoded if positions is None else positions.get(frame.pts, -1)  # pts None: not in it either
            if positions is not None and at <= last:  # not the frame the index says: trust no more of it
                break
            if at in needed:
                image = as_displayed(frame.to_image(), frame.rotation, sample_aspect, options.preprocess)
                kept[at] = prepare_image(image, options.preprocess, options.image_size)
            decoded, last = decoded + 1, at
            _check_time(deadline, index, options)
            if positions is not None and len(kept) == len(needed):
                return np.stack([kept[i] for i in wanted]), count
    if positions is not None:  # the index and the stream disagree: decode as if there were none
        log.debug("video %d: frames after the seek do not match the demuxed index; decoding every frame", index)
        return _decode_frames(data, fmt, index, options, deadline, count)
    if decoded == 0 or len(kept) < len(needed):
        return np.empty(0, np.uint8), decoded
    return np.stack([kept[i] for i in wanted]), decoded


def as_displayed(
    image: Image.Image, rotation: float, sample_aspect: Fraction | None, config: Preprocess
) -> Image.Image:
    """A decoded frame as players show it, which is what the clip should be of (as EXIF
    orientation is honoured for photos): anamorphic pixels (sample aspect ratio not 1, e.g. DV
    and broadcast) scaled to square ones, by shrinking the longer side so the frame never grows;
    then turned by the display matrix's ``rotation`` (degrees counter-clockwise, as FFmpeg reads
    it), which phones set on video they store landscape. A mirroring matrix is not applied."""
    if sample_aspect is not None and sample_aspect > 0 and sample_aspect != 1:
        w, h = image.size
        size = (w, max(1, round(h / sample_aspect))) if sample_aspect > 1 else (max(1, round(w * sample_aspect)), h)
        image = image.resize(size, resample=RESAMPLING[config.interpolation])
    turn = round(rotation) % 360
    if turn in _QUARTER_TURNS:
        return image.transpose(_QUARTER_TURNS[turn])
    return image if turn == 0 else image.rotate(turn, resample=Image.Resampling.BICUBIC, expand=True)


def _check_complete(data: bytes, fmt: str, index: int) -> None:
    """Truncation that demuxers let pass silently: MP4/MOV boxes, AVI's RIFF chunks and a Matroska
    segment of declared size must fit in the bytes sent (live recordings declare no segment size),
    a fragmented MP4 must not end in a fragment's header, and a GIF's blocks must run to its trailer."""
    if fmt == "mov":
        end, last = _iso_boxes_end(data)
        if end > len(data):
            raise InvalidVideo(
                f"video {index} is truncated: its MP4/MOV boxes declare {end} bytes, {len(data)} sent", index=index
            )
        if last == b"moof":  # a fragment's header, its samples (the mdat after it) cut off
            raise InvalidVideo(
                f"video {index} is truncated: it ends in a fragment header without its data", index=index
            )
    if fmt == "avi" and (end := _riff_chunks_end(data)) > len(data):
        raise InvalidVideo(
            f"video {index} is truncated: its AVI chunks declare {end} bytes, {len(data)} sent", index=index
        )
    if fmt == "gif" and (problem := _gif_problem(data)) is not None:
        raise InvalidVideo(f"video {index} is {problem}", index=index)
    if fmt == "matroska":
        try:
            end = _matroska_segment_end(data)
        except ValueError as e:
            raise InvalidVideo(f"video {index} is corrupt or truncated ({e})", index=index) from e
        if end is not None and end > len(data):
            raise InvalidVideo(
                f"video {index} is truncated: its WebM/Matroska segment declares {end} bytes, {len(data)} sent",
                index=index,
            )


def _gif_problem(data: bytes) -> str | None:
    """Why a GIF's block structure is incomplete or corrupt, or None when it runs whole to its
    trailer. Walked rather than checking the last byte: a file cut where its LZW data happens to
    hold 0x3B (``;``) would otherwise pass as complete, and FFmpeg decodes what precedes the cut."""
    pos = 13  # signature (6) and logical screen descriptor (7)
    if len(data) < pos:
        return "a truncated GIF (header)"
    if data[10] & 0x80:  # global colour table
        pos += 3 << ((data[10] & 7) + 1)
    while pos < len(data):
        introducer = data[pos]
        if introducer == 0x3B:  # trailer: the rest (padding, appended bytes) is not ours to judge
            return None
        if introducer == 0x21:  # extension: a label, then data sub-blocks
            pos += 2
        elif introducer == 0x2C:  # image: descriptor, local colour table, LZW code size, sub-blocks
            if pos + 10 > len(data):
                break
            packed = data[pos + 9]
            pos += 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1
        else:
            return f"a corrupt GIF (block introducer 0x{introducer:02X} at byte {pos})"
        while pos < len(data) and data[pos] != 0:  # sub-blocks: a size byte, that many bytes
            pos += 1 + data[pos]
        pos += 1  # the zero-size terminator
    return "a truncated GIF (its blocks end before the trailer)"


def _iso_boxes_end(data: bytes) -> tuple[int, bytes]:
    """Where the last top-level ISO-BMFF box ends by its declared size (size 0: to the end of the
    file), and that box's type."""
    pos, kind = 0, b""
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > len(data):
                return pos + 16, kind
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            return len(data), kind
        if size < 8:
            return len(data) + 1, kind  # a box smaller than its own header: corrupt
        pos += size
    return (pos if pos >= len(data) else pos + 8), kind


def _riff_chunks_end(data: bytes) -> int:
    """Where the last top-level RIFF chunk ends by its declared size (an AVI over 1 GB continues in
    ``RIFF AVIX`` chunks after the first); sizes are little-endian and odd ones padded to even."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)
    return pos if pos >= len(data) else pos + 8


def _vint(data: bytes, pos: int) -> tuple[int, int, bool]:
    """An EBML variable-length integer at ``pos``: (value, length, all value bits set = unknown)."""
    if pos >= len(data) or data[pos] == 0:
        raise ValueError("malformed EBML header")
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        raise ValueError("truncated EBML header")
    value = data[pos] & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length, value == (1 << (7 * length)) - 1


def _matroska_segment_end(data: bytes) -> int | None:
    """Byte offset where the Segment ends, or None when its size is unknown (streamed files)."""
    header_size, n, _ = _vint(data, 4)
    pos = 4 + n + header_size
    if data[pos : pos + 4] != _SEGMENT:
        raise ValueError("no Segment after the EBML header")
    size, n, unknown = _vint(data, pos + 4)
    return None if unknown else pos + 4 + n + size
