"""Checkpoint URLs (Meta's .pth.tar files) against a loopback server: cached once, resumed with
Range after a broken transfer, checked against a pinned sha256, and served offline from the cache.
A file reaches its final name only whole and checked; the failure modes leave nothing servable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import jepa
from jepa import ModelSourceError
from jepa.download import cached_path, fetch_url
from tests.jepa.hub_standin import StandIn
from tests.jepa.test_meta_parity import official_state, write_checkpoint

transformers = pytest.importorskip("transformers")

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def server():
    standin = StandIn().start()
    standin.urls["/files/IN1K-vit.h.14-300e.pth.tar"] = DATA
    yield standin
    standin.stop()


def url_of(server: StandIn, name: str = "IN1K-vit.h.14-300e.pth.tar") -> str:
    return f"{server.endpoint}/files/{name}"


def leftovers(root: Path) -> list[str]:
    folder = root / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def test_download_once_with_a_sidecar_recording_its_sha256(server, tmp_path):
    url = url_of(server)
    path = fetch_url(url, root=tmp_path, progress=False)
    assert path == cached_path(url, tmp_path) and path.read_bytes() == DATA
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["url"] == url and record["size"] == len(DATA) and record["pinned"] is False
    assert record["sha256"] == hashlib.sha256(DATA).hexdigest()
    gets = len(server.paths("GET"))
    assert fetch_url(url, root=tmp_path, progress=False) == path and len(server.paths("GET")) == gets
    assert leftovers(tmp_path) == sorted([path.name, path.name + ".json"])


def test_broken_transfer_keeps_the_part_and_the_next_run_resumes_with_range(server, tmp_path):
    url = url_of(server)
    server.faults["/files/IN1K-vit.h.14-300e.pth.tar"] = "drop"
    expected = r": download failed \(RemoteProtocolError: .*\); \d+ bytes kept in .*\.part, the next run resumes"
    with pytest.raises(ModelSourceError, match=expected):
        fetch_url(url, root=tmp_path, progress=False)
    final = cached_path(url, tmp_path)
    part = final.with_name(final.name + ".part")
    kept = part.stat().st_size
    assert 0 < kept < len(DATA) and not final.exists()
    server.faults.clear()
    assert fetch_url(url, root=tmp_path, progress=False).read_bytes() == DATA
    last = [h.get("Range") for m, p, h in server.requests if m == "GET"][-1]
    assert last == f"bytes={kept}-" and not part.exists()


def test_pinned_checksum_mismatch_deletes_the_download(server, tmp_path):
    url = url_of(server)
    with pytest.raises(ModelSourceError, match=r"sha256 [0-9a-f]{64} does not match the pinned 0{64}; deleted"):
        fetch_url(url, sha256="0" * 64, root=tmp_path, progress=False)
    assert leftovers(tmp_path) == []
    path = fetch_url(url, sha256=hashlib.sha256(DATA).hexdigest(), root=tmp_path, progress=False)
    assert json.loads(path.with_name(path.name + ".json").read_text())["pinned"] is True


def test_truncated_response_with_a_pinned_checksum_is_refused(server, tmp_path):
    server.faults["/files/IN1K-vit.h.14-300e.pth.tar"] = "truncate"
    with pytest.raises(ModelSourceError, match="does not match the pinned"):
        fetch_url(url_of(server), sha256=hashlib.sha256(DATA).hexdigest(), root=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_offline_uses_the_cache_only(server, tmp_path):
    url = url_of(server)
    final = cached_path(url, tmp_path)
    with pytest.raises(ModelSourceError) as info:
        fetch_url(url, offline=True, root=tmp_path, progress=False)
    text = str(info.value)
    assert f"{url}: not in the download cache and offline mode is on (HF_HUB_OFFLINE=1)" in text
    assert f"put it at {final}" in text and "JEPA_CACHE" in text and server.requests == []
    fetch_url(url, root=tmp_path, progress=False)
    server.stop()
    before = len(server.requests)
    assert fetch_url(url, offline=True, root=tmp_path, progress=False) == final and len(server.requests) == before


def test_404_and_unreachable(server, tmp_path):
    with pytest.raises(ModelSourceError, match=r"/files/nope.pth.tar: HTTP 404 Not Found; check the URL"):
        fetch_url(url_of(server, "nope.pth.tar"), root=tmp_path, progress=False)
    server.stop()
    with pytest.raises(ModelSourceError, match=r"failed \(ConnectError: .*put it at .*--model PATH"):
        fetch_url(url_of(server), root=tmp_path, progress=False)


def test_load_encoder_by_url_serves_the_target_encoder_and_records_the_url(server, tmp_path, monkeypatch,
                                                                          make_hf_model):  # fmt: skip
    shape = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128, patch_size=8,
                 image_size=32)  # fmt: skip
    target, context = make_hf_model(1, **shape), make_hf_model(2, **shape)
    local = write_checkpoint(tmp_path / "ck.pth.tar", official_state(target, tmp_path / "t"),
                             official_state(context, tmp_path / "c"))  # fmt: skip
    server.urls["/files/IN1K-vit.tiny-300e.pth.tar"] = local.read_bytes()
    monkeypatch.setenv("JEPA_CACHE", str(tmp_path / "cache"))
    url = url_of(server, "IN1K-vit.tiny-300e.pth.tar")
    model = jepa.load_encoder(url, num_heads=4)
    reference = jepa.load_encoder(local, num_heads=4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert model.config.provenance.source == f"meta:url:{url}:target_encoder"
    assert model.config.provenance.weights_sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    # The cached file, passed as a path, still names its URL.
    cached = cached_path(url, tmp_path / "cache")
    assert jepa.load_encoder(cached, num_heads=4).config.provenance.source == f"meta:url:{url}:target_encoder"
