"""The build cache's store (service/cache.py) and the CPU probe (service/cpu_features.py), on real
files and real processes: an entry is served only when every checksum matches, publishing is one
rename, the per-key flock excludes other processes, and an unwritable root falls back to /tmp."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from service import cache
from service.cpu_features import cpu_isa, parse_cpuinfo
from tests.service.helpers import REPO

KEY = "k" * 32


def built_entry(root: Path, files: dict[str, bytes]) -> Path:
    stage = cache.new_stage(root, KEY)
    for name, data in files.items():
        (stage / name).write_bytes(data)
    cache.write_manifest(stage, KEY, {"why": "test"})
    cache.publish(stage, root / KEY)
    return root / KEY


FILES = {"model.onnx": b"\x08\x01" * 5000, "config.json": b'{"format": "jepa-encoder"}', "export.json": b"{}"}


def test_an_intact_entry_verifies(tmp_path):
    entry = built_entry(tmp_path, FILES)
    manifest, why = cache.verify(entry, KEY)
    assert manifest is not None and why == ""
    assert set(manifest.files) == set(FILES) and manifest.facts == {"why": "test"}
    assert not list(tmp_path.glob(".stage-*"))  # the stage became the entry


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda e: flip_last_byte(e / "model.onnx"), "sha256"),  # same size, one bit pattern changed
        (lambda e: (e / "model.onnx").write_bytes(b"\x08\x01" * 10), "bytes"),  # truncated copy
        (lambda e: (e / "model.onnx").unlink(), "missing"),
        (lambda e: (e / "manifest.json").unlink(), "manifest"),  # a partial entry: manifest never written
        (lambda e: (e / "manifest.json").write_text("{not json"), "manifest"),
        (lambda e: (e / "stray.onnx").write_bytes(b"x"), "not in the manifest"),
    ],
)
def test_damaged_entries_are_rejected(tmp_path, damage, expected):
    entry = built_entry(tmp_path, FILES)
    damage(entry)
    manifest, why = cache.verify(entry, KEY)
    assert manifest is None and expected in why, why


def test_an_entry_for_another_key_is_rejected(tmp_path):
    entry = built_entry(tmp_path, FILES)
    other = tmp_path / ("o" * 32)
    entry.rename(other)
    assert cache.verify(other, "o" * 32)[0] is None
    assert cache.verify(tmp_path / "absent", KEY) == (None, "not built yet")


def test_publish_replaces_a_rejected_entry_and_new_stage_clears_dead_builders(tmp_path):
    entry = built_entry(tmp_path, FILES)
    flip_last_byte(entry / "model.onnx")
    dead = tmp_path / f".stage-{KEY}-dead"  # left by a builder that was killed
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"half")
    stage = cache.new_stage(tmp_path, KEY)
    assert not dead.exists()
    for name, data in FILES.items():
        (stage / name).write_bytes(data)
    cache.write_manifest(stage, KEY, {})
    cache.publish(stage, entry)
    assert cache.verify(entry, KEY)[0] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY]  # no trash or stage left behind


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from service import cache
    with cache.locked(Path(sys.argv[1]), sys.argv[2], on_wait=lambda: print("waited", flush=True)):
        print("locked", flush=True)
        time.sleep(float(sys.argv[3]))
    print("released", flush=True)
    """
)


def hold(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HOLD, *args], cwd=REPO, capture_output=True, text=True, timeout=60, **kw
    )


def test_the_key_lock_excludes_other_processes_until_released(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), KEY, "3"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        waiter = hold(str(tmp_path), KEY, "0")
        assert waiter.stdout.split() == ["waited", "locked", "released"], waiter.stderr
        assert holder.wait(timeout=30) == 0  # the waiter got the lock only after the holder let go
        other = hold(str(tmp_path), "other", "0")
        assert other.stdout.split() == ["locked", "released"]  # another key is not held up
    finally:
        holder.kill()


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), KEY, "60"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=30)
    after = hold(str(tmp_path), KEY, "0")
    assert after.stdout.split() == ["locked", "released"]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """``tempfile.gettempdir()`` -> a test directory, so the /tmp fallback lands there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp


@pytest.mark.parametrize("kind", ["under a regular file", "in /proc"])
def test_an_unwritable_root_falls_back_to_tmp(tmp_path, private_tmp, kind):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    preferred = blocker / "cache" if kind == "under a regular file" else Path("/proc/jepa-embed-cache")
    root = cache.usable_root(preferred)
    assert root == cache.tmp_root() and root.parent == private_tmp and cache.writable(root)


def test_default_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_root() == tmp_path / "jepa-embed"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says: ignore it
    assert cache.default_root() == Path.home() / ".cache" / "jepa-embed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_root() == Path.home() / ".cache" / "jepa-embed"


AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
AMX = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx2 fma avx512f avx512bw "
AMX += "avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8\nprocessor\t: 1\nflags\t\t: avx2\n"


def test_cpu_kinds_from_cpuinfo():
    avx2 = parse_cpuinfo(AVX2_ONLY)
    assert (avx2.kind, avx2.native_bf16, avx2.vnni, avx2.model) == ("avx2", False, False, "AMD EPYC 7B12")
    amx = parse_cpuinfo(AMX)  # the first processor's flags count
    assert (amx.kind, amx.native_bf16, amx.vnni) == ("amx", True, True)
    assert amx.as_dict()["flags"][:3] == ["avx2", "fma", "avx512f"]
    bf16 = parse_cpuinfo(AMX.replace(" amx_bf16 amx_tile amx_int8", ""))
    assert (bf16.kind, bf16.native_bf16) == ("avx512-bf16", True)
    assert parse_cpuinfo("").kind == "other"


def test_this_machine_is_probed():
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo here")
    isa = cpu_isa()
    assert isa.flags and isa.kind in ("amx", "avx512-bf16", "avx512", "avx2", "other")
