"""Split an in-memory ``multipart/form-data`` body into its parts with python-multipart's parser.

Why not starlette's ``MultiPartParser``: it copies every file into a ``SpooledTemporaryFile`` and
wraps it in an ``UploadFile`` that must be read back, a visible share of the event loop's CPU per
request in a yappi profile at c=16 (a development measurement, not a repo benchmark). The
service already holds the body in memory (it enforces ``max_body_bytes`` while reading it), so it
drives the same low-level parser directly and keeps each part as ``bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """The body is not valid ``multipart/form-data`` (or breaks a count limit); the message says why."""


class TooManyParts(MultipartError):
    """More parts than the caller allows (refused before their data is kept)."""


@dataclass
class Part:
    name: str
    filename: str | None  # None for a plain form field (no ``filename=`` in Content-Disposition)
    content_type: str
    chunks: list[bytes] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def boundary_of(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("missing boundary in the multipart Content-Type")
    return boundary


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """The parts of ``body`` in order; raises :class:`MultipartError` on malformed input or when
    there are more than ``max_parts`` parts (checked as they appear, before their data is kept)."""
    boundary = boundary_of(content_type)
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    header_field: list[bytes] = []
    header_value: list[bytes] = []
    ended: list[bool] = []  # python-multipart's finalize() accepts a body cut short: track the end

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(header_field).lower()] = b"".join(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        if len(parts) >= max_parts:
            raise TooManyParts(f"more than {max_parts} parts")
        disposition, options = parse_options_header(headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartError("each part needs 'Content-Disposition: form-data; name=...'")
        filename = options.get(b"filename")
        kind = headers.get(b"content-type", b"").decode("latin-1")
        parts.append(Part(options[b"name"].decode("utf-8", "replace"), _text(filename), kind))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].chunks.append(data[start:end])

    def on_end() -> None:
        ended.append(True)

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise MultipartError(f"invalid multipart data ({e})") from e
    if not ended:
        raise MultipartError("the body ends before the closing boundary")
    return parts


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")
