"""service.multipart on bodies httpx itself encodes (what real clients send) and on broken ones."""

from __future__ import annotations

import httpx
import pytest

from service.multipart import MultipartError, TooManyParts, parse_multipart


def encoded(files: list, data: dict | None = None) -> tuple[bytes, str]:
    req = httpx.Request("POST", "http://x/embed", files=files, data=data)
    return req.read(), req.headers["content-type"]


def test_parts_come_back_byte_exact_and_in_order():
    blobs = [bytes(range(256)) * 40, b"\r\n--not-a-boundary\r\n" * 3, b""]
    body, kind = encoded([("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)], {"note": "hi"})
    parts = parse_multipart(body, kind, max_parts=8)
    files = [p for p in parts if p.name == "image"]
    assert [p.data for p in files] == blobs
    assert [p.filename for p in files] == ["0.jpg", "1.jpg", "2.jpg"] and files[0].content_type == "image/jpeg"
    (field,) = [p for p in parts if p.name == "note"]
    assert field.filename is None and field.data == b"hi"


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_a_body_cut_short_is_an_error(cut):
    body, kind = encoded([("image", ("a.jpg", b"x" * 5000, "image/jpeg"))])
    with pytest.raises(MultipartError):
        parse_multipart(body[: int(len(body) * cut)], kind, max_parts=4)


def test_too_many_parts_stops_early():
    body, kind = encoded([("image", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(5)])
    with pytest.raises(TooManyParts, match="more than 4 parts"):
        parse_multipart(body, kind, max_parts=4)
    assert len(parse_multipart(body, kind, max_parts=5)) == 5


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"--b\r\nContent-Type: image/jpeg\r\n\r\nxx\r\n--b--\r\n", "multipart/form-data; boundary=b"),  # no name
        (b"hello", "multipart/form-data; boundary=b"),  # no boundary in the body
        (b"--b\r\n\r\nxx\r\n--b--\r\n", "multipart/form-data"),  # no boundary in the header
    ],
)
def test_malformed_bodies_are_errors(body, kind):
    with pytest.raises(MultipartError):
        parse_multipart(body, kind, max_parts=4)
