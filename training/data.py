"""Training data: an ``.npz`` of JPEGs decoded once into memory, or an ImageNet-layout folder.

Both yield normalised ``[B, 3, S, S]`` batches on the training device, cropped with the paper's
RandomResizedCrop (scale 0.3-1.0, ratio 3/4-4/3; no torchvision needed).

* ``.npz`` (keys ``jpeg``, ``offsets``, ``labels``, as ../shared/data/cifar10): all images are
  decoded once, in parallel, into one ``uint8 [N, H, W, 3]`` tensor that lives on the device;
  crops and resizes run there in batch (``affine_grid`` + ``grid_sample``), so a GPU is never
  starved by a Python data pipeline.
* an image folder, read as the official code reads ImageNet (``src/datasets/imagenet1k.py``):
  ``root_path/image_folder/train/<class>/...`` (and ``val/`` for evaluation), with torchvision's
  ``ImageFolder`` rules (sorted class folders, files found recursively, its extensions, an empty
  class is an error). A folder without ``train/`` whose sub-folders are the classes (our earlier
  layout) still works. Pillow decodes and crops in DataLoader workers.

Randomness (order and crops) is keyed by ``(seed, epoch)`` and ``(seed, step, rank)``, so a run
resumed at step ``s`` sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from jepa.config import Preprocess
from jepa.heads import Normalize
from jepa.preprocess import prepare_image

# torchvision's IMG_EXTENSIONS, which the official ImageFolder-based dataset accepts
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RATIO = (3 / 4, 4 / 3)


class DataError(ValueError):
    """The training or evaluation data cannot be read; names the path and the problem."""


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from integers, e.g. ``(seed, step, rank)``; the same key, the same stream."""
    seed = int(np.random.SeedSequence([abs(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# reading images


def _decode(blob: np.ndarray) -> np.ndarray:
    with Image.open(io.BytesIO(blob.tobytes())) as im:
        return np.asarray(im.convert("RGB"))


def read_npz(path: Path, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ``.npz`` of JPEGs into ``uint8 [N, H, W, 3]`` and ``int64 [N]`` labels.

    With ``limit``, a seeded random subset (the CIFAR archives are grouped by class).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            jpeg, offsets = z["jpeg"], z["offsets"]
            labels = z["labels"].astype(np.int64) if "labels" in z else np.zeros(len(offsets) - 1, np.int64)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not an .npz with keys jpeg/offsets/labels ({e})") from e
    index = np.arange(len(offsets) - 1)
    if limit is not None and limit < len(index):
        index = np.sort(np.random.default_rng(seed).permutation(len(index))[:limit])
    blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in index]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        images = list(pool.map(_decode, blobs, chunksize=256))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{path}: images have different sizes {sorted(shapes)[:3]}; use an image folder instead")
    return np.stack(images), labels[index]


def split_folder(path: Path, split: str = "train") -> Path:
    """The folder of class sub-folders for ``split``: ``path/train`` (``path/val``) as the official
    ImageNet dataset appends it, or ``path`` itself when it has no such sub-folder (our older layout)."""
    return path / split if (path / split).is_dir() else path


def list_folder(root: Path, split: str = "train") -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files of an ImageNet-layout folder, their class indices and the class names.

    The rules of torchvision's ``ImageFolder`` (which the official code uses): classes are the
    sorted sub-folders; files are found recursively (links followed) in sorted order by their
    extension, case-insensitively; a class without images is an error naming it.
    """
    folder = split_folder(root, split)
    if not folder.is_dir():
        raise DataError(f"{root}: not a directory (expected {root}/{split}/<class>/<image> or {root}/<class>/<image>)")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image>)")
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        found = [Path(d) / f for d, _, names in sorted(os.walk(folder / name, followlinks=True))
                 for f in sorted(names) if f.lower().endswith(IMAGE_SUFFIXES)]  # fmt: skip
        empty += [] if found else [name]
        files += found
        labels += [label] * len(found)
    if empty:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in class folder(s) {', '.join(empty[:5])}")
    return files, np.asarray(labels, np.int64), classes


def load_eval_arrays(path: Path, n: int | None, size: int, seed: int, split: str = "train"
                     ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` seeded-random images of ``path`` (npz, or a folder's ``split``) as ``uint8 [n, size, size, 3]``
    + labels."""
    pre = Preprocess(resize="shorter_crop", resize_size=size)
    if path.suffix == ".npz":
        images, labels = read_npz(path, n, seed)
        if images.shape[1:3] != (size, size):
            images = np.stack([prepare_image(Image.fromarray(im), pre, size) for im in images])
        return images, labels
    files, labels, _ = list_folder(path, split)
    index = np.random.default_rng(seed).permutation(len(files))[: n or len(files)]
    images = []
    for i in index:
        with Image.open(files[i]) as im:
            images.append(prepare_image(im, pre, size))
    return np.stack(images), labels[index]


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``uint8 [B, H, W, 3]`` (any device) -> normalised ``float32 [B, 3, H, W]``: the core's
    :class:`jepa.heads.Normalize`, the arithmetic the service and the exported graphs use."""
    return Normalize(mean, std).to(images.device)(images)


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop


def crop_boxes(gen: torch.Generator, n: int, height: int, width: int, scale: tuple[float, float]) -> Tensor:
    """RandomResizedCrop boxes ``[n, 4]`` as ``(top, left, h, w)`` in pixels, torchvision's rule.

    Ten tries per image of (area scale, log-uniform aspect); the first that fits wins, else the
    whole image (a centre crop clamped to the ratio range, which is the whole image for squares).
    """
    tries = 10
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=gen))
    log_r = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * torch.rand(n, tries, generator=gen)
    ratio = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * ratio))
    h = torch.round(torch.sqrt(area / ratio))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    u = torch.rand(n, 2, generator=gen)
    pick = first.clamp(min=0)[:, None]
    valid = first >= 0
    ch, cw = _fallback(height, width)
    bh = torch.where(valid, h.gather(1, pick)[:, 0], float(ch))
    bw = torch.where(valid, w.gather(1, pick)[:, 0], float(cw))
    top = torch.where(valid, torch.floor(u[:, 0] * (height - bh + 1)), float((height - ch) // 2))
    left = torch.where(valid, torch.floor(u[:, 1] * (width - bw + 1)), float((width - cw) // 2))
    return torch.stack([top, left, bh, bw], dim=1)


def _fallback(height: int, width: int) -> tuple[int, int]:
    r = width / height
    if r < RATIO[0]:
        return round(width / RATIO[0]), width
    if r > RATIO[1]:
        return height, round(height * RATIO[1])
    return height, width


def crop_resize(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop ``boxes`` out of float ``[B, 3, H, W]`` and resize each to ``size`` (bilinear), in one call."""
    B, _, H, W = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(B, 2, 3, device=images.device)
    sx = w / W
    theta[:, 0, 0] = sx if flip is None else torch.where(flip.to(images.device), -sx, sx)
    theta[:, 0, 2] = 2 * (left + w / 2) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = 2 * (top + h / 2) / H - 1
    grid = F.affine_grid(theta, [B, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------------------------
# loaders


@dataclass(frozen=True)
class Augment:
    crop_size: int
    scale: tuple[float, float]
    flip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class InMemoryLoader:
    """Batches from a decoded ``uint8 [N, H, W, 3]`` array kept on ``device``; crops run there."""

    def __init__(self, images: np.ndarray, batch_size: int, aug: Augment, seed: int, rank: int, world: int, device):
        self.images = torch.from_numpy(images).to(device)
        self.batch_size, self.aug, self.seed = batch_size, aug, seed
        self.rank, self.world, self.device = rank, world, device
        self.steps_per_epoch = len(images) // (batch_size * world)
        self._order: tuple[int, Tensor] | None = None
        if self.steps_per_epoch < 1:
            raise DataError(f"{len(images)} images is fewer than one batch of {batch_size} x {world} processes")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int) -> Tensor:
        """The normalised, augmented batch of ``step`` for this rank: ``[B, 3, S, S]``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(len(self.images), generator=keyed_generator(self.seed, 1, epoch)))
        order = self._order[1]
        per_step = self.batch_size * self.world
        start = i * per_step + self.rank * self.batch_size
        idx = order[start : start + self.batch_size].to(self.device)
        gen = keyed_generator(self.seed, 2, step, self.rank)
        _, H, W, _ = self.images.shape
        boxes = crop_boxes(gen, len(idx), H, W, self.aug.scale)
        flip = torch.rand(len(idx), generator=gen) < 0.5 if self.aug.flip else None
        x = normalize(self.images[idx], self.aug.mean, self.aug.std)
        return crop_resize(x, boxes, self.aug.crop_size, flip)

    def iterate(self, start_step: int) -> Iterator[Tensor]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1


class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], aug: Augment, seed: int) -> None:
        self.files, self.aug, self.seed = files, aug, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        index, epoch = key
        with Image.open(self.files[index]) as im:
            im = im.convert("RGB")
        gen = keyed_generator(self.seed, 3, epoch, index)
        top, left, h, w = (int(v) for v in crop_boxes(gen, 1, im.height, im.width, self.aug.scale)[0])
        im = im.resize((self.aug.crop_size,) * 2, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        if self.aug.flip and torch.rand((), generator=gen) < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(im).copy())


class FolderLoader:
    """Batches from an image folder through DataLoader workers, with a DistributedSampler per epoch."""

    def __init__(self, root: Path, batch_size: int, aug: Augment, seed: int, rank: int, world: int, device, workers):
        files, _, _ = list_folder(root)
        self.dataset = _FolderDataset(files, aug, seed)
        self.batch_size, self.aug, self.seed = batch_size, aug, seed
        self.rank, self.world, self.device, self.workers = rank, world, device, workers
        self.steps_per_epoch = len(files) // (batch_size * world)
        if self.steps_per_epoch < 1:
            raise DataError(f"{root}: {len(files)} images is fewer than one batch of {batch_size} x {world}")

    def __len__(self) -> int:
        return len(self.dataset)

    def _batches(self, start_step: int) -> Iterator[list[tuple[int, int]]]:
        from torch.utils.data import DistributedSampler

        epoch, skip = divmod(start_step, self.steps_per_epoch)
        while True:
            sampler = DistributedSampler(self.dataset, self.world, self.rank, shuffle=True, seed=self.seed)
            sampler.set_epoch(epoch)
            idx = list(sampler)
            for b in range(skip, self.steps_per_epoch):
                yield [(i, epoch) for i in idx[b * self.batch_size : (b + 1) * self.batch_size]]
            epoch, skip = epoch + 1, 0

    def iterate(self, start_step: int) -> Iterator[Tensor]:
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self._batches(start_step),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.workers > 0,
        )
        for batch in loader:
            yield normalize(batch.to(self.device, non_blocking=True), self.aug.mean, self.aug.std)


def make_loader(path: Path, batch_size: int, aug: Augment, seed: int, rank: int, world: int, device, workers: int,
                limit: int | None = None) -> InMemoryLoader | FolderLoader:  # fmt: skip
    """The right loader for ``path``: ``.npz`` -> in memory on ``device``; a directory -> DataLoader workers."""
    if path.suffix == ".npz":
        images, _ = read_npz(path, limit, seed)
        return InMemoryLoader(images, batch_size, aug, seed, rank, world, device)
    if limit is not None:
        raise DataError("data.limit is only supported for .npz data")
    return FolderLoader(path, batch_size, aug, seed, rank, world, device, workers)


if __name__ == "__main__":  # ``python -m training.data``: fetch and check data (training/datasets.py)
    import sys

    from training.datasets import main

    sys.exit(main())
