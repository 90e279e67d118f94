"""Odd files through a real server on one keep-alive connection: every failure is a 400 naming
its index, the connection stays open, the log stays quiet; every valid file embeds like ``embed``.

The files come from image_corpus.py (real encoders for every format and mode, truncations, and
corrupt headers built from real files). One ``httpx.Client`` sends them all; the client's local
port before and after shows the TCP connection was never reset.
"""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest
from image_corpus import (
    MAX_SIDE,
    MIME,
    SAVE_FORMATS,
    corrupt_headers,
    elongated,
    encode,
    format_samples,
    mode_variants,
    option_variants,
    small_photo,
    truncation_points,
)
from PIL import Image

from service.decode import register_plugins
from tests.service.helpers import ThreadServer, open_bytes, rel_err, settings_for

MAX_IMAGES = 8


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    settings = settings_for(tiny_model_dir, backend="torch", max_images_per_request=MAX_IMAGES, max_queue=64)
    with ThreadServer(settings) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture):
    """The records the service logs during the test; asserts afterwards that none is above INFO
    and none carries a traceback (a stranger's bad file is not the server's error)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="service")
    yield caplog
    loud = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info]
    assert not loud, [(r.levelname, r.getMessage()[:200]) for r in loud]


def local_port(response: httpx.Response) -> int:
    """The client-side port of the TCP connection that carried ``response``."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def post_raw(client: httpx.Client, data: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return client.post("/embed", content=data, headers=headers)


def post_files(client: httpx.Client, blobs: list[bytes]) -> httpx.Response:
    files = [("image", (f"{i}", b, "application/octet-stream")) for i, b in enumerate(blobs)]
    return client.post("/embed", files=files)


def embeddings(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:500]
    return np.array([item["embedding"] for item in response.json()["data"]])


def reference(tiny_encoder, blobs: list[bytes]) -> np.ndarray:
    register_plugins()
    return tiny_encoder.embed([open_bytes(b) for b in blobs])["global"]


def test_corrupt_headers_get_400_with_index_on_one_kept_alive_connection(server, client, photos, quiet_log) -> None:
    good = format_samples(photos[1])["PNG"]
    first = client.get("/health")
    port = local_port(first)
    for label, bad in corrupt_headers(photos[0]).items():
        for blobs, index in (([bad], 0), ([good, good, bad], 2)):
            r = post_files(client, blobs) if len(blobs) > 1 else post_raw(client, bad, "image/jpeg")
            assert r.status_code == 400, (label, r.status_code, r.text[:300])
            assert r.json()["error"]["type"] == "invalid_image" and r.json()["error"]["index"] == index, label
            assert local_port(r) == port, f"{label}: the connection was closed after the error"
    assert post_raw(client, good, "image/png").status_code == 200
    assert server.metric("jepa_requests_total", 'outcome="internal_error"') == 0


def test_truncations_of_every_format_through_the_server(server, client, photos, quiet_log) -> None:
    """Through HTTP, a sample of the truncation class (first 64 bytes, then every 5%); the decode
    function gets every byte of the first KiB in test_decode_classes.py."""
    port = local_port(client.get("/health"))
    for fmt, data in format_samples(photos[2]).items():
        for cut in [p for p in truncation_points(len(data)) if p and (p < 64 or p >= 1024 or p % 128 == 0)]:
            r = post_raw(client, data[:cut], MIME[fmt])
            assert r.status_code in (200, 400), (fmt, cut, r.status_code, r.text[:300])
            if r.status_code == 400:
                assert r.json()["error"]["index"] == 0
            assert local_port(r) == port, (fmt, cut)


def test_every_mode_and_option_of_every_encoder_embeds_like_embed(client, photos, tiny_encoder, quiet_log) -> None:
    cases = list(mode_variants(photos[3])) + list(option_variants(photos[3]))
    blobs = [data for _, data in cases]
    got = np.concatenate([embeddings(post_files(client, blobs[i : i + MAX_IMAGES])) for i in range(0, len(blobs), 8)])
    expected = reference(tiny_encoder, blobs)
    errors = [rel_err(g, e) for g, e in zip(got, expected, strict=True)]
    worst = int(np.argmax(errors))
    assert errors[worst] < 1e-4, cases[worst][0]


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "image/jpeg", "image/x-unknown"])
def test_raw_body_format_is_sniffed_whatever_the_content_type(client, photos, tiny_encoder, content_type) -> None:
    """A raw body is one image whose format comes from its bytes: octet-stream, no Content-Type
    and a wrong image/* subtype all work, for every format."""
    samples = format_samples(photos[4])
    got = np.concatenate([embeddings(post_raw(client, data, content_type)) for data in samples.values()])
    assert rel_err(got, reference(tiny_encoder, list(samples.values()))) < 1e-4


def test_other_content_types_stay_415(client, photos) -> None:
    r = post_raw(client, format_samples(photos[4])["PNG"], "text/plain")
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"
    r = post_raw(client, format_samples(photos[4])["PNG"], "application/x-www-form-urlencoded")
    assert r.status_code == 415 and "Content-Type: application/octet-stream" in r.json()["error"]["message"]


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF", "JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied_for_phone_formats(client, photos, tiny_encoder, fmt) -> None:
    """A sideways-stored photo tagged "rotate 90 clockwise" (EXIF 6) embeds like the upright one:
    AVIF keeps the tag (applied by exif_transpose), HEIC turns it into an irot box (applied by
    libheif); either way, the result must match the upright file and not the sideways one."""
    upright = small_photo(photos[3], (40, 64))  # portrait, so a wrong rotation changes the crop
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    lossless = {"JPEG": {"quality": 100}, "WEBP": {"lossless": True}, "AVIF": {"quality": 100}, "HEIF": {"quality": -1}}
    params = lossless.get(fmt, {})
    tagged = encode(stored, fmt, exif=exif.tobytes(), **params)
    got = embeddings(post_raw(client, tagged, MIME[fmt]))[0]
    right = reference(tiny_encoder, [encode(upright, fmt, **params)])[0]
    wrong = reference(tiny_encoder, [encode(stored, fmt, **params)])[0]
    assert np.linalg.norm(got - right) < 0.5 * np.linalg.norm(got - wrong), fmt


def test_elongated_images_embed(client, photos, tiny_encoder) -> None:
    """Thin images of every format that can store them, up to 1 x 100,000 (a few hundred bytes as PNG)."""
    shapes = [(1, 100_000), (100_000, 1), (3, 30_000), (30_000, 3), (1, 16_000), (16_000, 1), (1, 4_000), (4_000, 2)]
    for shape in shapes:
        fmts = [f for f in SAVE_FORMATS if f != "JPEG" and max(shape) <= MAX_SIDE.get(f, 10**9)]
        blobs = [elongated(fmt, shape, photos[0]) for fmt in fmts]
        got = embeddings(post_files(client, blobs))
        assert got.shape == (len(blobs), tiny_encoder.config.embed_dim), shape
        assert np.isfinite(got).all()


@pytest.mark.parametrize("fmt", SAVE_FORMATS)
def test_one_bad_image_among_good_ones_names_its_index(client, photos, fmt) -> None:
    data = format_samples(photos[5])[fmt]
    r = post_files(client, [data, data, data[: len(data) // 3], data])
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"] == {**r.json()["error"], "type": "invalid_image", "index": 2}
