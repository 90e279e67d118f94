"""Fuzzing the decode path for a bounded time, seeded with real files of every supported format.

- atheris (coverage-guided, libFuzzer) runs tests/service/fuzz_decode.py in a child process:
  ``FUZZ_SECONDS`` by default, ``FUZZ_SECONDS_SLOW`` in the slow run (.ci/run);
- Hypothesis mutates the same real files (bit flips, overwritten, inserted, deleted and repeated
  byte runs) where atheris has no wheel, and everywhere as a second, differently biased search.

The property for both: ``decode_image`` returns ``uint8 [S, S, 3]`` or raises our typed 400/413
naming the index; any other exception, a hang or a memory blow-up fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from image_corpus import format_samples, mode_variants, option_variants
from mutations import mutated

from jepa.config import Preprocess
from service.decode import DecodeOptions, decode_image
from service.errors import InvalidImage, PayloadTooLarge

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(__file__).with_name("fuzz_decode.py")
FUZZ_SECONDS, FUZZ_SECONDS_SLOW = 10, 180
SIZE = 32
OPTIONS = DecodeOptions(Preprocess(resize="shorter_crop", resize_size=SIZE), SIZE, 4_000_000, jpeg_draft=True)


@pytest.fixture(scope="module")
def seeds(photos) -> list[bytes]:
    """Real files: the formats, every mode each encoder takes, each encoder's options."""
    files = list(format_samples(photos[0]).values())
    files += [data for _, data in mode_variants(photos[1])]
    files += [data for _, data in option_variants(photos[2])]
    return files


def run_atheris(seeds: list[bytes], tmp_path: Path, seconds: int) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, data in enumerate(seeds):
        (corpus / f"seed{i:03d}").write_bytes(data)
    args = [f"-max_total_time={seconds}", "-timeout=30", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/crash-"]
    result = subprocess.run(
        [sys.executable, str(TARGET), *args, str(corpus)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=seconds + 240,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    log = result.stdout + result.stderr
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, f"{crashes}\n{log[-4000:]}"
    runs = re.search(r"Done (\d+) runs", log)
    cover = re.findall(r"cov: (\d+)", log)
    assert runs and int(runs.group(1)) > len(seeds), log[-2000:]  # it really mutated, not just replayed seeds
    print(f"atheris: {runs.group(1)} inputs in {seconds} s, coverage {cover[-1] if cover else '?'} edges")


def test_atheris_finds_no_crash_hang_or_blowup(seeds, tmp_path: Path) -> None:
    run_atheris(seeds, tmp_path, FUZZ_SECONDS)


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS_SLOW + 300)
def test_atheris_longer_run(seeds, tmp_path: Path) -> None:
    run_atheris(seeds, tmp_path, FUZZ_SECONDS_SLOW)


def test_hypothesis_mutations_of_real_files(seeds) -> None:
    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated(seeds))
    def check(data: bytes) -> None:
        try:
            out = decode_image(data, 4, OPTIONS)
        except (InvalidImage, PayloadTooLarge) as e:
            assert e.index == 4, e.message
            return
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8

    check()
