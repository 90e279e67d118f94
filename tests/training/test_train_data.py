"""Data: the batch crop, RandomResizedCrop boxes, step-keyed determinism, npz and folder loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_data_util import imagenet_tree

from training.data import Augment, DataError, crop_boxes, crop_resize, list_folder, make_loader, read_npz

AUG = Augment(16, (0.3, 1.0), True, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_whole_image_box_is_the_identity():
    x = torch.rand(2, 3, 8, 8)
    out = crop_resize(x, torch.tensor([[0, 0, 8, 8]] * 2, dtype=torch.float32), 8)
    torch.testing.assert_close(out, x)
    flipped = crop_resize(x, torch.tensor([[0, 0, 8, 8]] * 2, dtype=torch.float32), 8, torch.tensor([True, False]))
    torch.testing.assert_close(flipped[0], x[0].flip(-1))
    torch.testing.assert_close(flipped[1], x[1])


def test_crop_boxes_inside_the_image_with_the_paper_scale():
    boxes = crop_boxes(torch.Generator().manual_seed(0), 2000, 32, 48, (0.3, 1.0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 48).all()
    area = h * w / (32 * 48)
    assert area.min() > 0.27 and area.max() <= 1.0 and area.mean() > 0.5


def test_npz_loader_batches_are_keyed_by_step(small_npz):
    a = make_loader(small_npz, 8, AUG, seed=1, rank=0, world=1, device=torch.device("cpu"), workers=0)
    b = make_loader(small_npz, 8, AUG, seed=1, rank=0, world=1, device=torch.device("cpu"), workers=0)
    assert a.steps_per_epoch == 8
    torch.testing.assert_close(a.batch(5), b.batch(5))
    assert a.batch(5).shape == (8, 3, 16, 16) and not torch.equal(a.batch(5), a.batch(6))
    r1 = make_loader(small_npz, 8, AUG, seed=1, rank=1, world=2, device=torch.device("cpu"), workers=0)
    assert not torch.equal(a.batch(0), r1.batch(0))


def test_read_npz_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"bad\.npz"):
        read_npz(tmp_path / "bad.npz")


def test_folder_loader_reads_imagenet_layout(photos, tmp_path):
    for i, im in enumerate(photos):
        folder = tmp_path / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        im.save(folder / f"{i}.jpg")
    loader = make_loader(tmp_path, 2, AUG, seed=0, rank=0, world=1, device=torch.device("cpu"), workers=0)
    batches = loader.iterate(0)
    first, second = next(batches), next(batches)
    assert first.shape == (2, 3, 16, 16) and torch.isfinite(first).all()
    resumed = loader.iterate(1)
    torch.testing.assert_close(next(resumed), second)
    with pytest.raises(DataError, match="not a directory"):
        make_loader(tmp_path / "nope", 2, AUG, 0, 0, 1, torch.device("cpu"), 0)


def test_official_layout_reads_train_and_val_as_imagefolder(photos, tmp_path):
    root = imagenet_tree(tmp_path / "imagenet_full_size" / "061417", photos)
    (root / "train" / "n01440764" / "notes.txt").write_text("not an image")
    nested = root / "train" / "n02102040" / "extra"
    nested.mkdir()
    photos[0].save(nested / "deep.png")  # ImageFolder walks class folders recursively
    files, labels, classes = list_folder(root)
    assert classes == ["n01440764", "n02102040", "n02979186"]
    assert len(files) == 10 and np.bincount(labels).tolist() == [3, 4, 3]
    assert all(f.is_relative_to(root / "train") for f in files)
    # torchvision's order: sorted(os.walk(...)), so a class folder's own files precede its sub-folders'
    assert [f.name for f in files[3:7]] == ["n02102040_0.JPEG", "n02102040_1.JPEG", "n02102040_2.JPEG", "deep.png"]
    val_files, val_labels, _ = list_folder(root, "val")
    assert len(val_files) == 3 and val_labels.tolist() == [0, 1, 2]


def test_older_layout_without_train_still_works_and_empty_classes_are_named(photos, tmp_path):
    for c in ("a", "b"):
        (tmp_path / "flat" / c).mkdir(parents=True)
        photos[0].save(tmp_path / "flat" / c / "x.jpg")
    _, labels, classes = list_folder(tmp_path / "flat")
    assert classes == ["a", "b"] and labels.tolist() == [0, 1]
    (tmp_path / "flat" / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images .* in class folder.*empty"):
        list_folder(tmp_path / "flat")
    with pytest.raises(DataError, match="no class sub-folders"):
        list_folder(tmp_path / "flat" / "a")
