"""The server process runs with the switch interval its settings ask for (sys.setswitchinterval,
set once in ``main``), shown in /info, and a JPEG through it is embedded as the in-process path does."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from service.settings import Settings
from tests.service.helpers import rel_err, start_subprocess


def test_server_process_uses_the_asked_switch_interval(tiny_model_dir, tiny_encoder, jpeg_bytes):
    args = ["--model", str(tiny_model_dir), "--backend", "torch", "--device", "cpu"]
    args += ["--no-batch-probe", "--no-jpeg-draft"]
    proc, url = start_subprocess([*args, "--gil-switch-interval-ms", "2.5"])
    try:
        assert httpx.get(url + "/info").json()["limits"]["gil_switch_interval_ms"] == 2.5
        r = httpx.post(url + "/embed", content=jpeg_bytes[0], headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert r.status_code == 200
        expected = tiny_encoder.embed([Image.open(io.BytesIO(jpeg_bytes[0]))])["global"][0]
        assert rel_err(np.array(r.json()["data"][0]["embedding"]), expected) < 1e-4
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("bad", ["0", "-1", "101"])
def test_switch_interval_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="gil_switch_interval_ms"):
        Settings(gil_switch_interval_ms=bad)
