"""Video decode cost: the clip through the seek (service/video_index.py) vs decoding every frame.

A long video holds far more frames than a clip needs: ``frames_per_clip`` (16) frames
``frame_step`` (4) apart, centred. The service seeks to the keyframe before the clip and stops
after it; before, it decoded every frame from the start. This times both on the same bytes, in
interleaved rounds (so a busy machine slows both alike), checks they give the same clip, and
prints the ratio. The videos are made here with PyAV's encoders (x264, GOP of 2 s at 30 frames/s,
as phones and cameras write), or read from ``--video`` files.

    python -m bench.video_seek_bench [--seconds 20,60] [--size 1920x1080] [--rounds 3] [--video F ...]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import av
import numpy as np

from bench.host import host, host_line
from jepa.config import Temporal, vjepa2_preprocess
from service.video import VideoOptions, _count_frames, _decode_frames, container_of, decode_video

OPTIONS = VideoOptions(
    preprocess=vjepa2_preprocess(256),
    image_size=256,
    temporal=Temporal(frames_per_clip=16, frame_step=4, image_frames=16),
    max_frames=100_000,
    max_duration_s=3600.0,
    timeout_s=3600.0,
)


def make_video(seconds: int, width: int, height: int, fps: int = 30) -> bytes:
    """A panning real photo (scikit-image's astronaut when installed, else noise blocks), H.264."""
    from PIL import Image

    try:
        import skimage.data

        source = skimage.data.astronaut()
    except ImportError:
        source = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    canvas = np.asarray(Image.fromarray(source).resize((width + 2 * fps * seconds, height + 64)))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(2 * fps), "preset": "veryfast"}
        for i in range(seconds * fps):
            frame = np.ascontiguousarray(canvas[(i // 8) % 64 : (i // 8) % 64 + height, 2 * i : 2 * i + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def every_frame(data: bytes) -> np.ndarray:
    """What the service did before the seek: both passes, the second decoding every frame."""
    fmt = container_of(data)
    deadline = time.monotonic() + OPTIONS.timeout_s
    count, _ = _count_frames(data, fmt, 0, OPTIONS, deadline)
    return _decode_frames(data, fmt, 0, OPTIONS, deadline, count)[0]


def bench(name: str, data: bytes, rounds: int) -> dict:
    times: dict[str, list[float]] = {"seek": [], "every_frame": []}
    clips = {}
    for _ in range(rounds):
        for label, fn in (("seek", lambda: decode_video(data, 0, OPTIONS)), ("every_frame", lambda: every_frame(data))):
            started = time.perf_counter()
            clips[label] = fn()
            times[label].append(time.perf_counter() - started)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames, size = stream.frames, f"{stream.codec_context.width}x{stream.codec_context.height}"
    seek_s, full_s = statistics.median(times["seek"]), statistics.median(times["every_frame"])
    return {
        "video": name,
        "size": size,
        "frames": frames,
        "mib": round(len(data) / 2**20, 1),
        "seek_s": round(seek_s, 3),
        "every_frame_s": round(full_s, 3),
        "speedup": round(full_s / seek_s, 2),
        "same_clip": bool(np.array_equal(clips["seek"], clips["every_frame"])),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.video_seek_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", default="20,60", help="lengths of the videos made here, comma-separated")
    p.add_argument("--size", default="1920x1080", help="their frame size, WxH")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--video", type=Path, nargs="*", default=[], help="time these files instead")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    width, height = (int(v) for v in a.size.lower().split("x"))
    videos = [(path.name, path.read_bytes()) for path in a.video]
    if not videos:
        for seconds in (int(s) for s in a.seconds.split(",")):
            started = time.perf_counter()
            videos.append((f"{seconds} s H.264", make_video(seconds, width, height)))
            print(f"made a {seconds} s {a.size} video in {time.perf_counter() - started:.0f} s", flush=True)
    rows = [bench(name, data, a.rounds) for name, data in videos]
    result = {"machine": host(), "clip": OPTIONS.temporal.model_dump(), "rounds": a.rounds, "rows": rows}
    print(host_line())
    print("| video | size | frames | MiB | seek s | every frame s | speed-up | same clip |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['video']} | {r['size']} | {r['frames']} | {r['mib']} | {r['seek_s']} | {r['every_frame_s']} "
              f"| {r['speedup']}x | {r['same_clip']} |")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0 if all(r["same_clip"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
