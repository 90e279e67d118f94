"""``python -m training.data``: the CIFAR-10 converter on an archive in the official format, the real
download code against a loopback HTTP server (good, wrong checksum, cut short, missing), and the
folder check."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from train_data_util import CLASSES, imagenet_tree, photo_crops

from training.data import read_npz
from training.datasets import CIFAR10_MD5, CIFAR10_URL, DownloadError, convert_cifar10, download, main

REPO = Path(__file__).resolve().parents[2]


def test_official_url_and_checksum_are_torchvisions():
    assert CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


def test_converter_writes_our_npz_layout(cifar_npz, photos):
    assert sorted(cifar_npz) == ["test", "train"]
    with np.load(cifar_npz["train"], allow_pickle=False) as z:
        assert sorted(z.files) == ["classes", "jpeg", "labels", "offsets"]
        assert z["classes"].tolist() == CLASSES and z["labels"].dtype == np.uint8
    images, labels = read_npz(cifar_npz["test"])
    want, want_labels = photo_crops(photos, 64, seed=0)  # what the archive's test batch holds
    assert images.shape == (64, 32, 32, 3) and labels.tolist() == want_labels.tolist()
    mse = np.mean((images.astype(np.float64) - want) ** 2, axis=(1, 2, 3))
    psnr = 10 * np.log10(255**2 / np.maximum(mse, 1e-9))
    assert psnr.min() > 22, "pixels came out scrambled (channel planes or row order)"
    train, train_labels = read_npz(cifar_npz["train"])
    assert len(train) == 40 and np.bincount(train_labels).sum() == 40


def test_converter_refuses_code_in_a_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        blob = pickle.dumps({b"label_names": [Evil()]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    from training.data import DataError

    with pytest.raises(DataError, match="refusing to load"):
        convert_cifar10(path, tmp_path / "out")
    with pytest.raises(DataError, match="not a readable"):
        convert_cifar10(tmp_path / "missing.tar.gz", tmp_path / "out")


class _Server:
    """A real HTTP server on loopback serving ``routes``: path -> (bytes, how)."""

    def __init__(self, routes: dict[str, tuple[bytes, str]]) -> None:
        routes_ = routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in routes_:
                    self.send_error(404, "no such archive")
                    return
                body, how = routes_[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if how == "full" else body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(cifar_archive):
    data = cifar_archive.read_bytes()
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    s = _Server({"/ok.tar.gz": (data, "full"), "/corrupt.tar.gz": (bytes(corrupt), "full"),
                 "/short.tar.gz": (data, "short")})  # fmt: skip
    s.md5 = hashlib.md5(data).hexdigest()
    yield s
    s.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_renames_only_a_complete_file(server, tmp_path):
    dest = tmp_path / "dl" / "cifar-10-python.tar.gz"
    assert download(server.url + "/ok.tar.gz", dest, server.md5) == dest
    assert hashlib.md5(dest.read_bytes()).hexdigest() == server.md5 and _leftovers(dest.parent) == [dest.name]
    server.close()  # a second call with the file in place does not download again
    assert download(server.url + "/ok.tar.gz", dest, server.md5) == dest


@pytest.mark.parametrize(("path", "message"), [("/corrupt.tar.gz", "does not match the expected"),
                                               ("/short.tar.gz", "cut short"),
                                               ("/missing.tar.gz", "HTTP 404")])  # fmt: skip
def test_bad_downloads_fail_loudly_and_leave_nothing(server, tmp_path, path, message):
    dest = tmp_path / "dl" / "cifar-10-python.tar.gz"
    with pytest.raises(DownloadError, match=message):
        download(server.url + path, dest, server.md5)
    assert _leftovers(dest.parent) == []


def test_refused_connection_is_a_download_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        download(f"http://127.0.0.1:{port}/x.tar.gz", tmp_path / "x.tar.gz", "0" * 32, timeout=5)


def test_cli_downloads_converts_and_reports(server, tmp_path, capsys):
    out = tmp_path / "cifar10"
    assert main(["cifar10", "--out", str(out), "--url", server.url + "/ok.tar.gz", "--md5", server.md5]) == 0
    text = capsys.readouterr().out
    assert f"MD5 {server.md5} verified" in text
    assert f"{out / 'cifar10_train_jpeg.npz'}: 6 classes, 40 images of 32x32" in text
    assert f"{out / 'cifar10_test_jpeg.npz'}: 6 classes, 64 images of 32x32" in text
    assert main(["cifar10", "--out", str(tmp_path / "x"), "--url", server.url + "/corrupt.tar.gz",
                 "--md5", server.md5]) == 2  # fmt: skip
    assert "does not match" in capsys.readouterr().err
    assert main(["cifar10", "--out", str(out), "--archive", str(out / "cifar-10-python.tar.gz")]) == 2
    assert f"does not match the expected {CIFAR10_MD5}" in capsys.readouterr().err


def test_check_counts_an_imagenet_folder_from_the_command_line(photos, tmp_path):
    root = imagenet_tree(tmp_path / "in1k", photos)
    done = subprocess.run([sys.executable, "-m", "training.data", "check", str(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{root / 'train'}: 3 classes, 9 images (3-3 per class)",
                                        f"{root / 'val'}: 3 classes, 3 images (1-1 per class)"]  # fmt: skip
    bad = subprocess.run([sys.executable, "-m", "training.data", "check", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "not a directory" in bad.stderr
