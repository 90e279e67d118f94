"""Where a video's frames are, from the demux pass alone: what lets the decode pass start at the
keyframe before the clip instead of at the first frame.

The clip is ``frames_per_clip`` frames ``frame_step`` apart, centred in the video, so in a long
video nearly every frame lies before it or after it. Decoding them all is most of the cost of a
video (a 2-minute 4K phone clip is 3,600 frames, where a clip needs 64 and its GOP), and is what
would run a long but valid video into the decode timeout. The demux pass already reads every
packet's presentation timestamp and keyframe flag, so it records them here; the decode pass seeks
to the last keyframe at or before the clip's first frame and names each decoded frame by its
timestamp. Frame ``i`` stays the ``i``-th frame in presentation order, exactly as when every frame
is decoded (:mod:`service.video` falls back to that whenever the index cannot be trusted).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


@dataclass(frozen=True)
class FrameIndex:
    """Every frame's presentation timestamp, in presentation order, and the keyframes' timestamps,
    sorted (both in the stream's time base)."""

    pts: tuple[int, ...]
    keys: tuple[int, ...]

    @classmethod
    def of(cls, pts: list[int | None], keys: list[int | None]) -> FrameIndex | None:
        """The index of a demuxed stream, or None when it cannot name frames: a packet without a
        timestamp, two packets sharing one, or no keyframe."""
        if not pts or any(p is None for p in pts) or len(set(pts)) != len(pts):
            return None
        known = sorted({k for k in keys if k is not None})
        return cls(tuple(sorted(pts)), tuple(known)) if known else None  # type: ignore[arg-type]

    def seek_target(self, first: int) -> int | None:
        """The timestamp of the last keyframe at or before frame ``first``, or None when decoding
        from the start would skip nothing (that keyframe is the video's first frame, or none is
        before ``first``)."""
        at = bisect_right(self.keys, self.pts[first]) - 1
        if at < 0 or self.keys[at] <= self.pts[0]:
            return None
        return self.keys[at]

    def positions(self) -> dict[int, int]:
        """``{timestamp: frame index}``."""
        return {p: i for i, p in enumerate(self.pts)}
