"""Data the training tests make themselves: a CIFAR-10 archive in the official format (photo crops
instead of CIFAR images) and an ImageNet-layout folder tree. Nothing needs ../shared/data."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["astronaut", "cat", "coffee", "rocket", "motorcycle", "retina"]


def photo_crops(photos: list[Image.Image], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 32x32 crops (at random scales) of real photos; the label is the photo's index."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        label = i % len(photos)
        im = photos[label]
        side = int(rng.integers(min(im.size) // 4, min(im.size)))
        left, top = int(rng.integers(0, im.width - side + 1)), int(rng.integers(0, im.height - side + 1))
        crop = im.resize((32, 32), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        images.append(np.asarray(crop))
        labels.append(label)
    return np.stack(images), np.asarray(labels)


def _batch(images: np.ndarray, labels: np.ndarray, name: str) -> bytes:
    """One batch as the official archive stores it: a protocol-2 pickle of a dict with bytes keys,
    ``data`` uint8 ``[N, 3072]`` (the R, G, B planes of each image, row-major)."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    names = [f"{name}_{i}.png".encode() for i in range(len(images))]
    batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data, b"filenames": names}
    return pickle.dumps(batch, protocol=2)


def write_cifar_archive(path: Path, photos: list[Image.Image], per_batch: int, n_test: int) -> Path:
    """A ``cifar-10-python.tar.gz`` in the official layout (``cifar-10-batches-py/data_batch_1..5``,
    ``test_batch``, ``batches.meta``) with photo crops instead of CIFAR images."""
    members = {"batches.meta": pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2)}
    for i in range(1, 6):
        members[f"data_batch_{i}"] = _batch(*photo_crops(photos, per_batch, seed=i), f"training batch {i} of 5")
    members["test_batch"] = _batch(*photo_crops(photos, n_test, seed=0), "testing batch 1 of 1")
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def imagenet_tree(root, photos, classes=("n01440764", "n02102040", "n02979186"), per_class=3):
    """``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``, as the official ImageNet folders
    (upper-case extensions, as ILSVRC ships them)."""
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 1):
                photos[(c + i) % len(photos)].resize((40, 30)).save(folder / f"{name}_{i}.JPEG")
    return root
