"""``Accept`` negotiation as RFC 9110 section 12.5.1 describes it.

Each media range may carry a weight (``q=0`` .. ``q=1``, default 1; ``q=0`` means "not
acceptable"). An offered type takes the weight of the *most specific* range that matches it
(``type/subtype`` over ``type/*`` over ``*/*``), so ``application/x-npy;q=0, */*`` refuses npy
even though ``*/*`` would admit it. The offer with the highest weight wins; among equal weights
the one the client named first wins, then the server's own order. When no offer has a weight
above 0, the answer is 406. A missing or empty header accepts anything, and so does one with no
well-formed range at all (RFC 9110 lets a server disregard a malformed field); a lone ``*`` is
read as ``*/*``, as old Java clients send it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MediaRange:
    type: str  # "application", or "*"
    subtype: str  # "json", or "*"
    q: float
    position: int  # order in the header, for ties

    def specificity(self, media_type: str) -> int:
        """-1 when this range does not match ``media_type``, else 0 (``*/*``), 1 (``type/*``) or 2 (exact)."""
        kind, _, sub = media_type.partition("/")
        if self.type == "*":
            return 0
        if self.type != kind:
            return -1
        if self.subtype == "*":
            return 1
        return 2 if self.subtype == sub else -1


def parse_accept(header: str) -> list[MediaRange]:
    """The header's media ranges; malformed ranges and weights are skipped, not fatal."""
    ranges = []
    for position, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        kind, sep, sub = ("*/*" if fields[0] == "*" else fields[0].lower()).partition("/")
        if not sep or not kind or not sub or (kind == "*" and sub != "*"):
            continue
        q = _weight(fields[1:])
        if q is not None:
            ranges.append(MediaRange(kind, sub, q, position))
    return ranges


def _weight(params: Sequence[str]) -> float | None:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def choose(header: str | None, offers: Sequence[str]) -> str | None:
    """The best of ``offers`` (in the server's order of preference) for ``header``; None = 406."""
    if header is None or not header.strip():
        return offers[0] if offers else None
    ranges = parse_accept(header)
    if not ranges:
        return offers[0] if offers else None
    best: tuple[float, int, int] | None = None
    chosen = None
    for rank, offer in enumerate(offers):
        matches = [(r.specificity(offer), r) for r in ranges]
        matches = [(spec, r) for spec, r in matches if spec >= 0]
        if not matches:
            continue
        top = max(spec for spec, _ in matches)
        q = max(r.q for spec, r in matches if spec == top)
        position = min(r.position for spec, r in matches if spec == top)
        if q <= 0:
            continue
        key = (-q, position, rank)
        if best is None or key < best:
            best, chosen = key, offer
    return chosen
