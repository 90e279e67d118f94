"""Decode cost: ms per image for 0.3, 3 and 12 MP JPEG photos, full decode vs Pillow ``draft``.

``draft`` asks libjpeg for a DCT-domain reduced-scale decode (1/2, 1/4 or 1/8) no smaller than the
requested size, so a 12 MP photo headed for 224 px is never decoded at full size. Each row times
decode alone and decode + ``jepa.preprocess.prepare_image`` (resize/crop to the model's input), and
reports how far the draft path's final uint8 input is from the full decode's (mean abs, 0-255).

    python -m bench.decode_bench [--sizes 0.3,3,12] [--image-size 224] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from bench.host import host_line
from bench.images import jpegs_at
from jepa.config import Preprocess
from jepa.preprocess import prepare_image


def open_full(data: bytes, size: int) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def open_draft(data: bytes, size: int) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (size, size))  # smallest DCT scale with both sides >= size
    im.load()
    return im


def ms_per_call(fn: Callable[[], object], min_time_s: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < min_time_s:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n * 1000.0


def bench_size(megapixels: float, preprocess: Preprocess, image_size: int, min_time_s: float) -> dict:
    """One row: the mean over a few real-photo JPEGs of about ``megapixels`` MP."""
    files = jpegs_at(megapixels, count=2)
    short = preprocess.resize_size or image_size
    row: dict = {"megapixels": megapixels, "jpeg_kib": np.mean([len(f) for f in files]) / 1024}
    for name, opener in (("full", open_full), ("draft", open_draft)):
        decode = [ms_per_call(lambda f=f, o=opener: o(f, short), min_time_s) for f in files]
        total = [
            ms_per_call(lambda f=f, o=opener: prepare_image(o(f, short), preprocess, image_size), min_time_s)
            for f in files
        ]
        row[f"{name}_decode_ms"], row[f"{name}_total_ms"] = np.mean(decode), np.mean(total)
    diffs = [
        np.abs(
            prepare_image(open_full(f, short), preprocess, image_size).astype(np.int16)
            - prepare_image(open_draft(f, short), preprocess, image_size).astype(np.int16)
        ).mean()
        for f in files
    ]
    row["draft_mean_abs_diff"] = float(np.mean(diffs))
    row["speedup"] = row["full_total_ms"] / row["draft_total_ms"]
    return {k: float(v) for k, v in row.items()}


def decode_table(
    sizes: Sequence[float] = (0.3, 3.0, 12.0), image_size: int = 224, min_time_s: float = 0.5
) -> list[dict]:
    pre = Preprocess(resize_size=round(image_size * 256 / 224))
    return [bench_size(mp, pre, image_size, min_time_s) for mp in sizes]


def markdown(rows: Sequence[dict]) -> str:
    lines = [
        "| JPEG | KiB | full decode ms | full decode+resize ms | draft decode ms | draft decode+resize ms "
        "| speed-up | draft vs full (mean abs, 0-255) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['megapixels']:g} MP | {r['jpeg_kib']:.0f} | {r['full_decode_ms']:.1f} | {r['full_total_ms']:.1f} "
            f"| {r['draft_decode_ms']:.1f} | {r['draft_total_ms']:.1f} | {r['speedup']:.1f}x "
            f"| {r['draft_mean_abs_diff']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="0.3,3,12", help="megapixels, comma-separated")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of repeats per measurement")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    print(host_line(), flush=True)
    rows = decode_table([float(s) for s in a.sizes.split(",")], a.image_size, a.min_time)
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
