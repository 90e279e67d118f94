"""Every bad input from the issue gets a 4xx JSON error naming the problem (never a 500 or a hang),
and the awkward-but-valid images (animated, 16-bit, CMYK, palette, alpha, EXIF-rotated) embed correctly."""

from __future__ import annotations

import base64
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.helpers import ThreadServer, encode, open_bytes, rel_err, settings_for

LIMITS = {"max_pixels": 300_000, "max_body_bytes": 2_000_000, "max_images_per_request": 4, "max_queue": 16}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ThreadServer(settings_for(tiny_model_dir, backend="torch", **LIMITS)) as srv:
        yield srv


def post_raw(server, data: bytes, content_type: str | None = "image/png", **kw) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.post(server.url + "/embed", content=data, headers=headers, **kw)


def post_files(server, blobs: list[bytes], **kw) -> httpx.Response:
    return httpx.post(
        server.url + "/embed", files=[("image", (f"{i}", b, "image/png")) for i, b in enumerate(blobs)], **kw
    )


def assert_error(r: httpx.Response, status: int, type_: str, index: int | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == type_ and err["message"]
    assert err.get("index") == index
    return err


def bomb_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims ``width x height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- refused --


def test_not_an_image(server):
    err = assert_error(post_raw(server, b"hello, this is text"), 400, "invalid_image", 0)
    assert "not an image in a supported format" in err["message"]


def test_formats_outside_the_allow_list_are_refused(server, photos):
    for fmt in ("PPM", "ICO", "TGA"):  # Pillow reads these; the service does not take them
        assert_error(post_raw(server, encode(photos[1].resize((64, 48)), fmt)), 400, "invalid_image", 0)
    assert_error(post_raw(server, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), 400, "invalid_image", 0)


def test_empty_bodies(server):
    assert_error(post_raw(server, b"", "image/jpeg"), 400, "invalid_request")
    assert_error(post_raw(server, b"", "application/json"), 400, "invalid_request")
    assert_error(post_files(server, [b""]), 400, "invalid_image", 0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(server, photos, fmt):
    data = encode(photos[1], fmt)
    err = assert_error(post_raw(server, data[: len(data) // 2]), 400, "invalid_image", 0)
    assert "truncated or corrupt" in err["message"]


def test_corrupt_png_checksum(server, photos):
    data = bytearray(encode(photos[1], "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40 : idat + 60] = bytes(20)  # damage the compressed pixels
    assert_error(post_raw(server, bytes(data)), 400, "invalid_image", 0)


def test_corrupt_jpeg_header(server, photos):
    data = bytearray(encode(photos[1], "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = b"\x00\x00\x00\x00"  # zero width and height in the frame header
    assert_error(post_raw(server, bytes(data), "image/jpeg"), 400, "invalid_image", 0)


def test_decompression_bomb_refused_by_header(server):
    data = bomb_png(100_000, 100_000)  # 10 gigapixels in ~100 bytes; Pillow's own guard fires too
    assert len(data) < 200
    assert_error(post_raw(server, data), 413, "payload_too_large", 0)
    err = assert_error(post_raw(server, bomb_png(3000, 3000)), 413, "payload_too_large", 0)
    assert "9000000 pixels" in err["message"]


def test_over_pixel_limit(server, photos):
    big = encode(photos[0].resize((600, 600)), "PNG")  # 360,000 > 300,000
    err = assert_error(post_files(server, [encode(photos[1], "PNG"), big]), 413, "payload_too_large", 1)
    assert "600x600" in err["message"]


def test_bad_image_in_a_batch_names_its_index(server, jpeg_bytes):
    r = post_files(server, [jpeg_bytes[1], jpeg_bytes[2], b"GIF89a broken", jpeg_bytes[2]])
    assert_error(r, 400, "invalid_image", 2)


def test_wrong_or_missing_content_type(server, jpeg_bytes):
    assert_error(post_raw(server, jpeg_bytes[1], "text/plain"), 415, "unsupported_media_type")
    assert_error(post_raw(server, jpeg_bytes[1], "application/x-www-form-urlencoded"), 415, "unsupported_media_type")
    assert_error(post_raw(server, jpeg_bytes[1], "application/json"), 400, "invalid_request")


def test_malformed_json_and_base64(server, jpeg_bytes):
    assert_error(post_raw(server, b'{"images": [', "application/json"), 400, "invalid_request")
    assert_error(post_raw(server, b"[1, 2]", "application/json"), 400, "invalid_request")
    assert_error(httpx.post(server.url + "/embed", json={"images": "abc"}), 422, "invalid_parameters")
    good = base64.b64encode(jpeg_bytes[1]).decode()
    r = httpx.post(server.url + "/embed", json={"images": [good, "not base64!!"]})
    assert_error(r, 400, "invalid_request", 1)
    r = httpx.post(server.url + "/embed", json={"images": ["data:text/plain;base64," + good]})
    assert_error(r, 415, "unsupported_media_type", 0)
    r = httpx.post(server.url + "/embed", json={"images": ["http://example.com/cat.jpg"]})
    err = assert_error(r, 400, "invalid_request", 0)
    assert "URLs are not accepted" in err["message"]


def test_malformed_multipart(server, jpeg_bytes):
    req = httpx.Request("POST", server.url + "/embed", files=[("image", ("a.jpg", jpeg_bytes[1], "image/jpeg"))])
    body, kind = req.read(), req.headers["content-type"]
    err = assert_error(post_raw(server, body[: len(body) - 10], kind), 400, "invalid_request")
    assert "malformed multipart body" in err["message"] and "closing boundary" in err["message"]
    assert_error(post_raw(server, body, "multipart/form-data"), 400, "invalid_request")  # no boundary
    r = httpx.post(server.url + "/embed", data={"image": "not a file"}, files=[("x", ("a", b"1", "image/jpeg"))])
    assert_error(r, 422, "invalid_parameters")  # unknown field x
    r = httpx.post(server.url + "/embed", files=[("image", (None, b"plain field", None))])
    assert_error(r, 400, "invalid_request", 0)  # a form field, not a file upload


def test_too_many_images(server, jpeg_bytes):
    err = assert_error(post_files(server, [jpeg_bytes[1]] * 5), 422, "invalid_parameters")
    assert "limit is 4" in err["message"]
    err = assert_error(post_files(server, [b"x"] * 40), 422, "invalid_parameters")  # stops parsing early
    assert "limit is 4" in err["message"]
    good = base64.b64encode(jpeg_bytes[1]).decode()
    assert_error(httpx.post(server.url + "/embed", json={"images": [good] * 5}), 422, "invalid_parameters")
    assert_error(httpx.post(server.url + "/embed", json={"images": []}), 422, "invalid_parameters")


def test_body_too_large(server):
    blob = bytes(2_500_000)
    assert_error(post_raw(server, blob, "image/jpeg"), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(25):
            yield bytes(100_000)

    assert_error(post_raw(server, chunks(), "image/jpeg"), 413, "payload_too_large")
    assert_error(post_files(server, [blob]), 413, "payload_too_large")


def test_stalled_body_times_out(serve, tiny_model_dir):
    import socket

    srv = serve(tiny_model_dir, body_timeout_s=0.5)
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b"\x89PNG")  # then nothing more
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and '"request_timeout"' in reply


def test_unknown_or_bad_options(server, jpeg_bytes):
    def raw(params):
        return post_raw(server, jpeg_bytes[1], "image/jpeg", params=params)

    assert "colour" in assert_error(raw({"colour": "red"}), 422, "invalid_parameters")["message"]
    assert_error(raw({"outputs": "global,everything"}), 422, "invalid_parameters")
    assert_error(raw({"normalize": "perhaps"}), 422, "invalid_parameters")
    assert_error(raw({"encoding": "hex"}), 422, "invalid_parameters")
    assert_error(raw({"outputs": "global,global"}), 422, "invalid_parameters")
    good = base64.b64encode(jpeg_bytes[1]).decode()
    assert_error(
        httpx.post(server.url + "/embed", json={"images": [good], "pooling": "max"}), 422, "invalid_parameters"
    )
    r = httpx.post(server.url + "/embed", json={"images": [good]}, params={"normalize": "true"})
    assert_error(r, 422, "invalid_parameters")
    r = httpx.post(server.url + "/embed", files={"image": ("a", jpeg_bytes[1])}, data={"normalize": "true"})
    assert_error(r, 422, "invalid_parameters")
    r = httpx.post(server.url + "/embed", files={"picture": ("a", jpeg_bytes[1])})
    assert_error(r, 422, "invalid_parameters")


def test_unknown_route_and_method(server):
    assert_error(httpx.get(server.url + "/nope"), 404, "not_found")
    assert_error(httpx.get(server.url + "/embed"), 405, "method_not_allowed")


# -- accepted: awkward but valid images, each equal to embed() of the same decoded image --


def animated(fmt: str, frames: list[Image.Image]) -> bytes:
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **(
        {"lossless": True} if fmt == "WEBP" else {}))  # fmt: skip


def awkward_images(photos: list[Image.Image]) -> dict[str, bytes]:
    small = [p.resize((96, 64)) for p in photos[:3]]
    grey16 = (np.asarray(small[0].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = small[1].convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return {
        "animated_gif": animated("GIF", small),
        "animated_webp": animated("WEBP", small),
        "png16": encode(Image.fromarray(grey16), "PNG"),
        "cmyk_jpeg": encode(small[2].convert("CMYK"), "JPEG", quality=95),
        "palette_png": encode(small[0].convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "rgba_png": encode(rgba, "PNG"),
        "grey_jpeg": encode(small[1].convert("L"), "JPEG"),
    }


def test_awkward_images_embed_like_embed(server, photos, tiny_encoder):
    cases = awkward_images(photos)
    decoded = {name: open_bytes(data) for name, data in cases.items()}
    assert decoded["animated_gif"].n_frames == 3 and decoded["animated_webp"].n_frames == 3
    assert decoded["png16"].mode.startswith("I") and decoded["cmyk_jpeg"].mode == "CMYK"
    assert decoded["palette_png"].mode == "P" and decoded["rgba_png"].mode == "RGBA"
    r = post_files(server, list(cases.values())[:4])
    r2 = post_files(server, list(cases.values())[4:])
    assert r.status_code == 200 and r2.status_code == 200, (r.text, r2.text)
    got = np.array([d["embedding"] for d in r.json()["data"] + r2.json()["data"]])
    ref = tiny_encoder.embed(list(decoded.values()))["global"]  # first frames, as Pillow opens them
    assert rel_err(got, ref) < 1e-4


def test_exif_rotated_equals_upright(server, photos, tiny_encoder):
    upright = photos[3].resize((120, 180))  # portrait, so a wrong rotation changes the crop
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the pixels as a sideways camera wrote them
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(stored, "PNG", exif=exif)
    r = post_raw(server, data)
    assert r.status_code == 200, r.text
    got = np.array(r.json()["data"][0]["embedding"])
    assert rel_err(got, tiny_encoder.embed([upright])["global"][0]) < 1e-4
    assert rel_err(got, tiny_encoder.embed([stored])["global"][0]) > 1e-2  # the tag really mattered


def test_server_still_healthy_after_bad_input(server, jpeg_bytes):
    assert httpx.get(server.url + "/ready").status_code == 200
    assert post_raw(server, jpeg_bytes[1], "image/jpeg").status_code == 200
    assert server.metric("jepa_requests_total", 'outcome="internal_error"') == 0


@pytest.mark.parametrize("kind", ["mp4-h264", "webm-vp9", "avi-mpeg4"])
def test_a_video_sent_to_an_image_model_is_415_saying_so(server, jpeg_bytes, kind):
    """An image model cannot embed a video: the answer names it as one (not "not an image"), in
    each form a file can take; a GIF stays an image here (its first frame, as Pillow reads it)."""
    from tests.service.video_util import make_video

    video = make_video(kind, frames=4)
    files = [("image", ("a.jpg", jpeg_bytes[1], "image/jpeg")), ("video", ("clip", video, "video/mp4"))]
    as_json = {"images": [base64.b64encode(jpeg_bytes[1]).decode(), base64.b64encode(video).decode()]}
    answers = {
        0: post_raw(server, video, "video/mp4"),
        1: httpx.post(server.url + "/embed", files=files),
        2: httpx.post(server.url + "/embed", json=as_json),
    }
    for form, r in answers.items():
        message = assert_error(r, 415, "unsupported_media_type", index=0 if form == 0 else 1)["message"]
        assert "is a video" in message and "V-JEPA 2" in message, (form, message)
