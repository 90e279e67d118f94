"""Coverage-guided fuzz target (atheris / libFuzzer) for the service's decode path.

Run by tests/service/test_decode_fuzz.py for a bounded time, or by hand for longer:

    python tests/service/fuzz_decode.py -max_total_time=600 -rss_limit_mb=2048 CORPUS_DIR

Pillow's format parsers (BmpImagePlugin, PngImagePlugin, TiffImagePlugin, ...) are Python, so
atheris instruments them, our decode module and jepa's preprocessing, and libFuzzer steers its
mutations towards new branches in them; the C decoders behind them run uninstrumented. The one
property: ``decode_image`` returns ``uint8 [S, S, 3]`` or raises our typed 400/413 naming the
index. Any other exception is a crash (libFuzzer saves the input); a hang or a blow-up in memory
trips ``-timeout`` / ``-rss_limit_mb``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["PIL", "service", "jepa"]):
    from PIL import Image

    from jepa.config import Preprocess
    from service.decode import DecodeOptions, decode_image, register_plugins
    from service.errors import InvalidImage, PayloadTooLarge

    Image.init()  # import every Pillow plugin now, inside the instrumented block
    register_plugins()

SIZE = 32
OPTIONS = (
    DecodeOptions(Preprocess(resize="shorter_crop", resize_size=SIZE), SIZE, 4_000_000, jpeg_draft=True),
    DecodeOptions(Preprocess(resize="squash"), SIZE, 4_000_000, jpeg_draft=False),
)


def test_one_input(data: bytes) -> None:
    options = OPTIONS[data[-1] & 1] if data else OPTIONS[0]
    try:
        out = decode_image(data, 7, options)
    except (InvalidImage, PayloadTooLarge) as e:
        if e.index != 7:
            raise AssertionError(f"error names index {e.index}, not 7: {e.message}") from e
        return
    if out.shape != (SIZE, SIZE, 3) or out.dtype.name != "uint8":
        raise AssertionError(f"decoded to {out.shape} {out.dtype}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
