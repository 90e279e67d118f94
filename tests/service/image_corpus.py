"""Real image files of every supported format, made here by each format's own encoder.

The classes of input the decode tests draw from: one small real photo saved as JPEG, PNG, WEBP,
GIF, BMP, TIFF, AVIF (Pillow's libavif) and HEIC (libheif's x265 through pillow-heif); the same
photo in every Pillow mode each encoder accepts; elongated shapes; and truncations of all of them.
Nothing here is a hand-written byte string posing as a format.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image, PngImagePlugin

from service.decode import FORMATS, register_plugins

# Encoder-side format names (Pillow saves HEIC as "HEIF" once pillow-heif is registered).
SAVE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heic",
}
# Every mode Pillow can create; each encoder takes some of them.
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F")
# The largest side each format's encoder here writes (JPEG and GIF 65,535; WEBP 16,383; AVIF 16,384;
# x265 refuses a 1 x 6,000 HEIC; PNG, BMP and TIFF are only bounded by max_pixels).
MAX_SIDE = {"JPEG": 65_535, "GIF": 65_535, "WEBP": 16_383, "AVIF": 16_384, "HEIF": 4_096}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    register_plugins()  # HEIF needs pillow-heif's saver
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def small_photo(photo: Image.Image, size: tuple[int, int] = (48, 32)) -> Image.Image:
    return photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def format_samples(photo: Image.Image) -> dict[str, bytes]:
    """The photo (48 x 32) as a file of each supported format."""
    assert set(SAVE_FORMATS) == set(FORMATS), "a supported format without a sample file"
    rgb = small_photo(photo)
    return {fmt: encode(rgb, fmt) for fmt in SAVE_FORMATS}


def mode_image(photo: Image.Image, mode: str) -> Image.Image:
    """The photo in ``mode``, with real content in every band (alpha: a gradient)."""
    rgb = small_photo(photo)
    if mode in ("LA", "PA", "RGBA"):
        alpha = Image.linear_gradient("L").resize(rgb.size)
        base = rgb.convert("RGB" if mode == "RGBA" else "L")
        if mode == "PA":
            base = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
            out = base.convert("PA")
            out.putalpha(alpha)
            return out
        out = base.convert(mode)
        out.putalpha(alpha)
        return out
    if mode in ("I", "I;16", "F"):
        grey = np.asarray(rgb.convert("L"), dtype=np.float64)
        scale = {"I": 65535 * 64, "I;16": 65535, "F": 255}[mode] / 255
        values = grey * scale
        dtype = {"I": np.int32, "I;16": np.uint16, "F": np.float32}[mode]
        return Image.fromarray(values.astype(dtype), mode=None).convert(mode) if mode != "I;16" else (
            Image.fromarray(values.astype(dtype)))  # fmt: skip
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return rgb.convert(mode)


def mode_variants(photo: Image.Image) -> Iterator[tuple[str, bytes]]:
    """``(label, file)`` for every (format, mode) pair whose encoder accepts that mode and whose file
    Pillow opens again: the odd-but-valid files a server meets (1-bit TIFF, 16-bit PNG, CMYK JPEG,
    LA WEBP, palette BMP, float TIFF...)."""
    register_plugins()
    for fmt in SAVE_FORMATS:
        for mode in MODES:
            try:
                data = encode(mode_image(photo, mode), fmt)
                with Image.open(io.BytesIO(data)) as check:
                    check.load()
            except (OSError, ValueError, KeyError, TypeError):
                continue  # this encoder does not take this mode
            yield f"{fmt}/{mode}", data


# Encoder options that change the file's structure, per format: progressive and 4:4:4 JPEG,
# optimised PNG, lossless WEBP, every TIFF compression Pillow writes, GIF interlacing...
OPTIONS: dict[str, list[dict[str, object]]] = {
    "JPEG": [{"progressive": True}, {"subsampling": 0, "quality": 100}, {"optimize": True, "quality": 5}],
    "PNG": [{"optimize": True}, {"compress_level": 0}],
    "WEBP": [{"lossless": True}, {"quality": 1}],
    "GIF": [{"interlace": False}, {"optimize": True}],
    "BMP": [{}],
    "TIFF": [{"compression": c} for c in ("tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg", "tiff_deflate")],
    "AVIF": [{"quality": 100}, {"subsampling": "4:2:0", "quality": 10}],
    "HEIF": [{"quality": -1}, {"quality": 10}],
}


def option_variants(photo: Image.Image) -> Iterator[tuple[str, bytes]]:
    """``(label, file)`` for each format saved with each of its structural options."""
    rgb = small_photo(photo)
    for fmt, choices in OPTIONS.items():
        for params in choices:
            yield f"{fmt}/{params}", encode(rgb, fmt, **params)


def elongated_shapes(long: int) -> list[tuple[int, int]]:
    """Width x height pairs from 1 x ``long`` to ``long`` x 1, through thin stripes."""
    return [(1, long), (long, 1), (2, long), (long, 2), (3, long // 3), (long // 3, 3), (7, long // 7)]


def elongated(fmt: str, size: tuple[int, int], photo: Image.Image) -> bytes:
    """A ``size`` image of ``fmt`` with the photo's colours along its length."""
    strip = small_photo(photo, (max(1, min(size[0], 64)), max(1, min(size[1], 64))))
    return encode(strip.resize(size, Image.Resampling.NEAREST), fmt)


def truncation_points(length: int) -> list[int]:
    """Every byte of the first KiB, then every 5% of the rest (the file's own length excluded)."""
    points = set(range(min(length, 1024)))
    points |= {length * p // 100 for p in range(5, 100, 5)}
    return sorted(p for p in points if p < length)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """``data`` with the struct field at ``offset`` set to ``value`` (a header made to lie)."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def corrupt_headers(photo: Image.Image, seed: int = 0) -> dict[str, bytes]:
    """Files whose *header* a parser cannot make sense of, built from real files: the classes that
    once got 500 (Image.open raised OSError, ValueError, SyntaxError, struct.error, EOFError...)."""
    samples = format_samples(photo)
    jpeg, png, bmp, tiff = samples["JPEG"], samples["PNG"], samples["BMP"], samples["TIFF"]
    noise = random.Random(seed).randbytes(4000)
    too_big = zlib.compress(b"\0" * (PngImagePlugin.MAX_TEXT_CHUNK + 1024), 9)
    out = {
        "jpeg cut at 200 bytes": jpeg[:200],
        "jpeg magic then noise": jpeg[:4] + noise,
        "jpeg SOI only": jpeg[:2],
        "png signature then noise": png[:8] + noise,
        "png zTXt over the text limit": with_chunk_after_ihdr(png, png_chunk(b"zTXt", b"Comment\0\0" + too_big)),
        "png iCCP over the limit": with_chunk_after_ihdr(png, png_chunk(b"iCCP", b"icc\0\0" + too_big)),
        "png IHDR width 0": patched(png, 16, ">I", 0),
        "bmp header size 0": patched(bmp, 14, "<I", 0),
        "bmp header size 13": patched(bmp, 14, "<I", 13),
        "bmp header size 4 GiB": patched(bmp, 14, "<I", 0xFFFFFFFF),
        "tiff first IFD past the end": patched(tiff, 4, "<I", len(tiff) + 4096),
        "tiff first IFD at 0": patched(tiff, 4, "<I", 0),
        "gif magic then noise": samples["GIF"][:6] + noise,
        "webp riff then noise": samples["WEBP"][:12] + noise,
        "avif ftyp then noise": samples["AVIF"][:32] + noise,
        "heic ftyp then noise": samples["HEIF"][:32] + noise,
    }
    for bits in (0, 3, 7, 12, 64, 65535):
        out[f"bmp bit count {bits}"] = patched(bmp, 28, "<H", bits)
    for compression in (4, 5, 7, 13, 99, 0xFFFFFFFF):
        out[f"bmp compression {compression}"] = patched(bmp, 30, "<I", compression)
    return out
