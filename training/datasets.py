"""Data in one command: ``python -m training.data cifar10`` and ``python -m training.data check PATH``.

``cifar10`` downloads the official CIFAR-10 archive (Krizhevsky's page; the same URL and MD5 as
torchvision's ``CIFAR10``), verifies its MD5 before reading a byte of it, and writes our ``.npz``
layout (``jpeg``/``offsets``/``labels``/``classes``, JPEG quality 75, as ``../shared/data/cifar10``)
for both splits. The archive's batches are pickles of numpy arrays; they are read with an
unpickler that admits only the numpy array and dtype constructors, so even a file that passed the
checksum cannot run code. ``check`` reports the class and image counts of an ImageNet-layout
folder (``train/`` and ``val/`` as the official code reads them) or of an ``.npz``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from training.data import DataError, list_folder, read_npz

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # torchvision.datasets.CIFAR10.tgz_md5
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
JPEG_QUALITY = 75


class DownloadError(DataError):
    """A download failed, was cut short, or does not match its checksum."""


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` (via a temp file, renamed only once its length and MD5 are right).

    An existing ``dest`` with the right MD5 is kept without a download.
    """
    if dest.is_file() and md5_of(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            expected, got = _fetch(url, f, timeout)
        if expected is not None and got != expected:
            raise DownloadError(f"{url}: download cut short ({got} of {expected} bytes)")
        actual = md5_of(Path(tmp))
        if actual != md5:
            raise DownloadError(f"{url}: MD5 {actual} does not match the expected {md5} ({got} bytes); nothing kept")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _fetch(url: str, out: io.BufferedWriter, timeout: float) -> tuple[int | None, int]:
    """Stream ``url`` into ``out``; returns (Content-Length or None, bytes written)."""
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                got += len(chunk)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:  # refused, DNS, timeouts, connection reset
        raise DownloadError(f"{url}: {e}") from e
    except http.client.HTTPException as e:  # IncompleteRead and friends when the server hangs up early
        raise DownloadError(f"{url}: download cut short after {got} bytes ({type(e).__name__})") from e
    return expected, got


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch needs: numpy's array reconstruction and dtypes."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how a protocol-2 pickle written by Python 3 stores bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _read_member(tar: tarfile.TarFile, name: str) -> dict:
    member = f"{CIFAR10_DIR}/{name}"
    try:
        f = tar.extractfile(member)
    except KeyError:
        f = None
    if f is None:
        raise DataError(f"{tar.name}: no {member} (not the official CIFAR-10 python archive)")
    try:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{tar.name}: {member} is not a CIFAR batch ({e})") from e
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _encode(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def write_npz(path: Path, images: Iterable[np.ndarray], labels: np.ndarray, classes: list[str]) -> Path:
    """``uint8 [N, H, W, 3]`` images -> our ``.npz`` of JPEGs, written atomically."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        blobs = list(pool.map(_encode, images, chunksize=256))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    jpeg = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, jpeg=jpeg, offsets=offsets, labels=labels.astype(np.uint8), classes=np.asarray(classes))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def convert_cifar10(archive: Path, out_dir: Path) -> dict[str, Path]:
    """The official ``cifar-10-python.tar.gz`` -> ``cifar10_{train,test}_jpeg.npz`` in ``out_dir``."""
    try:
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115 (closed by the with below; open errors named here)
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"{archive}: not a readable .tar.gz ({e})") from e
    with tar:
        classes = [c.decode() if isinstance(c, bytes) else c for c in _read_member(tar, "batches.meta")["label_names"]]
        written = {}
        for split, names in CIFAR10_SPLITS.items():
            batches = [_read_member(tar, n) for n in names]
            data = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(f"{archive}: {split} data has shape {data.shape}, expected [N, 3072]")
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows of R, G, B planes -> [N, H, W, 3]
            labels = np.concatenate([np.asarray(b["labels"], np.int64) for b in batches])
            written[split] = write_npz(out_dir / f"cifar10_{split}_jpeg.npz", images, labels, classes)
    return written


def describe(path: Path) -> list[str]:
    """Lines reporting classes and images of an ``.npz`` or of a folder's ``train/`` and ``val/``."""
    if path.suffix == ".npz":
        images, labels = read_npz(path, limit=1)  # decodes one image (for its size); counts from the full labels
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"].astype(np.int64) if "labels" in z else labels
        size = "x".join(str(v) for v in images.shape[1:3])
        return [f"{path}: {len(np.unique(labels))} classes, {len(labels)} images of {size}" + _spread(labels)]
    lines = []
    for split in [s for s in ("train", "val") if (path / s).is_dir()] or ["train"]:
        files, labels, classes = list_folder(path, split)
        where = path / split if (path / split).is_dir() else path
        lines.append(f"{where}: {len(classes)} classes, {len(files)} images" + _spread(labels))
    return lines


def _spread(labels: np.ndarray) -> str:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    return f" ({counts.min()}-{counts.max()} per class)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cifar10", help="download the official CIFAR-10 archive and write our .npz files")
    c.add_argument("--out", default="data/cifar10", help="folder for the .npz files and the archive")
    c.add_argument("--archive", help="use this already downloaded archive instead of downloading")
    c.add_argument("--url", default=CIFAR10_URL, help="a mirror of the official archive")
    c.add_argument("--md5", default=CIFAR10_MD5, help=argparse.SUPPRESS)  # for tests with their own archive
    k = sub.add_parser("check", help="count classes and images of an image folder or an .npz")
    k.add_argument("path")
    args = p.parse_args(argv)
    try:
        if args.command == "check":
            print("\n".join(describe(Path(args.path))))
            return 0
        out = Path(args.out)
        archive = Path(args.archive) if args.archive else out / "cifar-10-python.tar.gz"
        if not args.archive:
            print(f"downloading {args.url} -> {archive}", flush=True)
            download(args.url, archive, args.md5)
        elif md5_of(archive) != args.md5:
            raise DownloadError(f"{archive}: MD5 {md5_of(archive)} does not match the expected {args.md5}")
        print(f"{archive}: MD5 {args.md5} verified", flush=True)
        for path in convert_cifar10(archive, out).values():
            print("\n".join(describe(path)))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
