"""Models by Hub id through the real huggingface_hub code path, against a loopback stand-in Hub
(tests/jepa/hub_standin.py) serving random-weight models in the layout of facebook/ijepa_vith14_1k
(config.json, model.safetensors, preprocessor_config.json, plus files we must not fetch).

Every failure mode ends in a ModelSourceError that says what happened and what to do, and leaves
nothing in the cache that a later run would serve.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import jepa
from jepa import ModelSourceError
from jepa.formats import load
from jepa.hub import HUB_FILES, resolve
from tests.helpers import randomize
from tests.jepa.hub_standin import StandIn

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "facebook/ijepa_tiny_test"
NEEDED = {"config.json", "model.safetensors", "preprocessor_config.json"}
# What the real repository holds besides the encoder's files, and weights in another format.
EXTRA = {
    "README.md": b"# model card\n",
    ".gitattributes": b"*.safetensors filter=lfs\n",
    "pytorch_model.bin": b"x" * 999,
}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random IJepaModel saved as the Hub repository holds it."""
    torch.manual_seed(0)
    config = transformers.IJepaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                      intermediate_size=128, patch_size=8, image_size=32)  # fmt: skip
    model = transformers.IJepaModel(config)
    randomize(model, 0)
    path = tmp_path_factory.mktemp("hf") / "ijepa_tiny"
    model.save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture
def hub(hf_dir: Path):
    """The stand-in Hub serving ``REPO_ID`` (revisions ``main`` and ``v1``)."""
    standin = StandIn().start()
    files = {p.name: p.read_bytes() for p in hf_dir.iterdir()}
    assert set(files) >= NEEDED, files.keys()
    repo = standin.add_repo(REPO_ID, {**files, **EXTRA})
    repo.revisions = ("main", "v1")
    yield standin
    standin.stop()


def fetch(hub: StandIn, cache: Path, source: str = REPO_ID, **kw: object):
    return resolve(source, endpoint=hub.endpoint, cache_dir=cache, **kw)


def blobs(cache: Path) -> list[str]:
    folder = cache / ("models--" + REPO_ID.replace("/", "--")) / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def output(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


def test_hub_id_fetches_only_the_encoder_files_and_loads_like_the_directory(hub, hf_dir, tmp_path):
    resolved = fetch(hub, tmp_path)
    commit = hub.repos[REPO_ID].commit
    assert resolved.path == tmp_path / f"models--facebook--ijepa_tiny_test/snapshots/{commit}"
    assert {p.name for p in resolved.path.iterdir()} == NEEDED
    assert resolved.origin == f"hf:{REPO_ID}@{commit}"
    touched = {p.rsplit("/", 1)[-1] for p in hub.paths() if "/resolve/" in p or "/cdn/" in p}
    assert touched == NEEDED  # never README.md, .gitattributes or pytorch_model.bin
    torch.testing.assert_close(output(load(resolved.path)), output(load(hf_dir)), rtol=0, atol=0)
    # Every file was checked against its ETag: sha256 (LFS) or git blob sha1 (small files).
    names = sorted(p.name for p in (resolved.path.parent.parent / ".jepa-verified").iterdir())
    assert names == blobs(tmp_path) and len(names) == 3


def test_revisions_branch_tag_and_commit(hub, tmp_path):
    commit = hub.repos[REPO_ID].commit
    for rev in ("v1", commit):
        assert fetch(hub, tmp_path, f"{REPO_ID}@{rev}").path.name == commit
    with pytest.raises(ModelSourceError, match=rf"^{REPO_ID}@nope: the repository has no such revision on http"):
        fetch(hub, tmp_path, f"{REPO_ID}@nope")


def test_unknown_repository_is_a_clear_404(hub, tmp_path):
    with pytest.raises(ModelSourceError, match=r"^facebook/nope: no such Hub repository on http://127.0.0.1:\d+ "
                       r"\(or it is private: set HF_TOKEN\), and no local file or directory of that name"):  # fmt: skip
        fetch(hub, tmp_path, "facebook/nope")


def test_repository_without_encoder_files_is_refused(hub, tmp_path):
    hub.add_repo("facebook/card_only", {"README.md": b"hi", "config.json": b"{}"})
    expected = r"no config.json and model.safetensors \(or model.onnx\) \(fetched: config.json\)"
    with pytest.raises(ModelSourceError, match=expected):
        fetch(hub, tmp_path, "facebook/card_only")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_truncated_download_is_never_kept(hub, tmp_path, name):
    hub.faults[f"{REPO_ID}/{name}"] = "truncate"
    with pytest.raises(ModelSourceError, match=rf"^{REPO_ID}: download from .* failed \(OSError: Consistency "
                       r"check failed.*no partial file was kept"):  # fmt: skip
        fetch(hub, tmp_path)
    assert not [b for b in blobs(tmp_path) if b.endswith(".incomplete")]
    hub.faults.clear()  # the next run completes the snapshot
    assert {p.name for p in fetch(hub, tmp_path).path.iterdir()} == NEEDED


@pytest.mark.parametrize("name", ["model.safetensors", "preprocessor_config.json"])
def test_corrupt_download_is_deleted_not_served(hub, tmp_path, name):
    hub.faults[f"{REPO_ID}/{name}"] = "corrupt"
    kind = "sha256" if name.endswith(".safetensors") else "git blob sha1"
    with pytest.raises(ModelSourceError, match=rf"{REPO_ID}: {name} is corrupt \({kind} [0-9a-f]+, the Hub names"):
        fetch(hub, tmp_path)
    snapshot = tmp_path / f"models--facebook--ijepa_tiny_test/snapshots/{hub.repos[REPO_ID].commit}"
    assert not (snapshot / name).exists()
    hub.faults.clear()
    resolved = fetch(hub, tmp_path)
    data = hub.repos[REPO_ID].files[name]
    assert (resolved.path / name).read_bytes() == data


def test_broken_transfer_resumes_with_range(hub, tmp_path):
    """huggingface_hub resumes a broken transfer from the last whole 10 MB chunk it wrote
    (constants.DOWNLOAD_CHUNK_SIZE), so the weights here are 24 MB."""
    big = bytes(range(256)) * (24 * 4096)
    repo = hub.add_repo("facebook/big", {"config.json": b"{}", "model.safetensors": big})
    hub.faults["facebook/big/model.safetensors"] = "drop_once"
    resolved = fetch(hub, tmp_path, "facebook/big")
    ranges = [h.get("Range") or h.get("range") for m, p, h in hub.requests if m == "GET" and p.startswith("/cdn/")]
    assert ranges == [None, f"bytes={10 * 1024 * 1024}-"], ranges
    assert (resolved.path / "model.safetensors").read_bytes() == big
    assert resolved.origin == f"hf:facebook/big@{repo.commit}"


def test_offline_serves_the_cache_without_any_request(hub, tmp_path):
    first = fetch(hub, tmp_path)
    hub.stop()
    before = len(hub.requests)
    assert fetch(hub, tmp_path, offline=True).path == first.path
    assert fetch(hub, tmp_path, f"{REPO_ID}@main", offline=True).path == first.path
    assert len(hub.requests) == before


def test_offline_or_unreachable_without_cache_says_what_to_download_and_where(hub, tmp_path):
    hub.stop()
    cache = tmp_path / "cache"
    folder = "models--facebook--ijepa_tiny_test"
    for offline, why in ((True, r"offline mode is on \(HF_HUB_OFFLINE=1\)"),
                         (False, r"the Hub at http://127.0.0.1:\d+ cannot be reached")):  # fmt: skip
        with pytest.raises(ModelSourceError) as info:
            fetch(hub, cache, offline=offline)
        text = str(info.value)
        assert text.startswith(f"{REPO_ID}: no local file or directory of that name, not in the Hub cache {cache}")
        assert re.search(why, text), text
        assert f"`python -m jepa download {REPO_ID}`" in text and f"copy {folder}/ into" in text
        assert "HF_HOME" in text and "--model PATH" in text
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))


def test_unreachable_hub_falls_back_to_a_complete_cache(hub, tmp_path):
    first = fetch(hub, tmp_path)
    hub.stop()
    assert fetch(hub, tmp_path).path == first.path


def test_file_corrupted_in_the_cache_is_not_served(hub, tmp_path):
    weights = fetch(hub, tmp_path).path / "model.safetensors"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match=r"model\.safetensors is corrupt"):
        fetch(hub, tmp_path, offline=True)
    assert not blob.exists() and not weights.exists()


def test_not_a_name_at_all(tmp_path):
    for bad in ("./missing/dir/x", "a/b/c", "org/name@", "/abs/path/nope"):
        with pytest.raises(
            ModelSourceError, match=r": no such file or directory \(it does not exist\), and not a catalogue"
        ):
            resolve(bad, cache_dir=tmp_path, offline=True)


def test_hub_files_cover_the_real_layouts():
    from fnmatch import fnmatch

    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "video_preprocessor_config.json",
                 "model-00001-of-00002.safetensors", "model.safetensors.index.json"):  # fmt: skip
        assert any(fnmatch(name, pat) for pat in HUB_FILES), name
    for name in ("model.onnx", "model.int8.onnx", "model.onnx.data", "export.json"):  # what `python -m export` writes
        assert any(fnmatch(name, pat) for pat in HUB_FILES), name
    for name in ("README.md", "pytorch_model.bin", "flax_model.msgpack", "predictor.pt", "onnx/model.onnx"):
        assert not any(fnmatch(name, pat) for pat in HUB_FILES), name


def run(args: list[str], env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "jepa", *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(cmd, cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_cli_respects_hf_endpoint_home_token_and_offline(hub, tmp_path):
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "home"), "HF_TOKEN": "hf_secret_test"}
    r = run(["download", REPO_ID], env)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path.parents[2] == tmp_path / "home" / "hub" and {p.name for p in path.iterdir()} == NEEDED
    assert f"from hf:{REPO_ID}@" in r.stderr
    auth = {p: h.get("authorization") or h.get("Authorization") for m, p, h in hub.requests if REPO_ID in p}
    assert {a for p, a in auth.items() if not p.startswith("/cdn/")} == {"Bearer hf_secret_test"}
    assert {a for p, a in auth.items() if p.startswith("/cdn/")} == {None}  # the token never goes to the CDN
    hub.stop()
    before = len(hub.requests)
    offline = run(["download", REPO_ID], {**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and Path(offline.stdout.strip()) == path, offline.stderr
    assert len(hub.requests) == before
    empty = run(["download", REPO_ID], {**env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "other")})
    assert empty.returncode == 2 and "offline mode is on (HF_HUB_OFFLINE=1)" in empty.stderr
    assert str(tmp_path / "other" / "hub") in empty.stderr


def test_load_encoder_by_hub_id_records_repo_commit_and_sha256(hub, hf_dir, tmp_path):
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "home")}
    code = ("import sys, jepa; m = jepa.load_encoder(sys.argv[1]); p = m.config.provenance; "
            "print(p.source); print(p.weights_sha256)")  # fmt: skip
    r = run([f"{REPO_ID}@v1"], env, code)
    assert r.returncode == 0, r.stderr
    source, sha = r.stdout.split()
    assert source == f"hf:{REPO_ID}@{hub.repos[REPO_ID].commit}"
    assert sha == hashlib.sha256((hf_dir / "model.safetensors").read_bytes()).hexdigest()


def test_load_encoder_of_a_snapshot_path_names_its_origin(hub, tmp_path):
    snapshot = fetch(hub, tmp_path).path
    model = jepa.load_encoder(snapshot)
    assert model.config.provenance.source == f"hf:{REPO_ID}@{hub.repos[REPO_ID].commit}"


def test_short_name_fetches_the_catalogue_s_hub_repository(hub, hf_dir, tmp_path):
    """``ijepa-vith14-1k`` means facebook/ijepa_vith14_1k: the same files, under the real repo id."""
    files = {p.name: p.read_bytes() for p in hf_dir.iterdir()}
    repo = hub.add_repo("facebook/ijepa_vith14_1k", {**files, "README.md": b"card"})
    resolved = fetch(hub, tmp_path, "ijepa-vith14-1k")
    assert resolved.origin == f"hf:facebook/ijepa_vith14_1k@{repo.commit}"
    assert {p.name for p in resolved.path.iterdir()} == NEEDED


@pytest.mark.parametrize(
    ("module", "args", "prefix"),
    [("export", ["--out", "OUT", "--no-progress"], "error: cannot load ijepa-vith14-1k: facebook/ijepa_vith14_1k: "),
     ("training.evaluate", ["--data", "DATA"], "error: facebook/ijepa_vith14_1k: ")],
)  # fmt: skip
def test_export_and_evaluate_take_names_and_fail_cleanly_offline(tmp_path, module, args, prefix):
    args = [a.replace("OUT", str(tmp_path / "out")).replace("DATA", str(tmp_path / "data")) for a in args]
    code = f"import runpy, sys; sys.argv[0] = {module!r}; runpy.run_module({module!r}, run_name='__main__')"
    r = run(["ijepa-vith14-1k", *args], {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}, code)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(prefix) and "offline mode is on (HF_HUB_OFFLINE=1)" in r.stderr, r.stderr


def test_a_vjepa2_repository_by_name_serves_its_encoder(hub, tmp_path):
    """A V-JEPA 2 repository in the layout of facebook/vjepa2-vitl-fpc64-256 (config.json with
    model_type vjepa2, model.safetensors holding encoder and predictor) loads by name as the
    encoder of transformers' VJEPA2Model."""
    torch.manual_seed(0)
    shape = dict(hidden_size=48, num_attention_heads=3, num_hidden_layers=2, crop_size=32, patch_size=16)
    predictor = dict(pred_hidden_size=24, pred_num_attention_heads=2, pred_num_hidden_layers=1, frames_per_clip=4)
    config = transformers.VJEPA2Config(tubelet_size=2, **shape, **predictor)
    reference = transformers.VJEPA2Model(config)
    randomize(reference, 0)
    reference.eval()
    saved = tmp_path / "vjepa2_tiny"
    reference.save_pretrained(saved)
    hub.add_repo("facebook/vjepa2_tiny_test", {p.name: p.read_bytes() for p in saved.iterdir()})
    resolved = fetch(hub, tmp_path / "cache", "facebook/vjepa2_tiny_test")
    model = load(resolved.path)
    assert model.config.family == "vjepa2"
    clip = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(pixel_values_videos=clip, skip_predictor=True).last_hidden_state
        torch.testing.assert_close(model(clip), expected, rtol=1e-4, atol=1e-5)
