"""Structural mutations of real files for Hypothesis: the damage files meet in transit and on
disk (flipped bits, overwritten, inserted, deleted and repeated byte runs), shared by the image
and video fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, files: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(files)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "repeat"]))
        run = draw(st.binary(min_size=1, max_size=16))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            data[pos : pos + len(run)] = run
        elif kind == "insert":
            data[pos:pos] = run
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 256))] * draw(st.integers(2, 8))
    return bytes(data)
