"""training.evaluate on a small CIFAR subset: the table, the floors, and the failure path."""

from __future__ import annotations

import torch

from training.evaluate import knn_top1, linear_top1, main


def test_evaluate_prints_table_with_floors(tiny_model_dir, small_npz, capsys, tmp_path):
    out = tmp_path / "rows.json"
    assert (
        main([str(tiny_model_dir), "--data", str(small_npz), "--device", "cpu", "--linear-iters=10", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    for row in ("raw pixels", "random weights, mean pool", "random weights, last-4 layers",
                "tiny-test, mean pool", "tiny-test, last-4 layers"):  # fmt: skip
        assert f"| {row} |" in text
    assert "held-out 12 images" in text and out.is_file()


def test_evaluate_bad_model_is_a_clear_error(small_npz, tmp_path, capsys):
    assert main([str(tmp_path), "--data", str(small_npz)]) == 2
    assert "error:" in capsys.readouterr().err


def test_probes_separate_separable_features():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=gen)
    x = torch.randn(400, 16, generator=gen) * 0.3 + torch.nn.functional.one_hot(y, 16).float() * 3
    assert knn_top1(x[:300], y[:300], x[300:], y[300:]) > 0.95
    assert linear_top1(x[:300], y[:300], x[300:], y[300:]) > 0.95
    noise = torch.randn(400, 16, generator=gen)
    assert linear_top1(noise[:300], y[:300], noise[300:], y[300:]) < 0.5


def test_evaluate_reads_an_imagenet_layout_train_and_val(tiny_model_dir, photos, tmp_path, capsys):
    """``--data ROOT --eval-data ROOT``: the training split from ROOT/train, the held-out one from ROOT/val."""
    from train_data_util import imagenet_tree

    root = imagenet_tree(tmp_path / "in1k", photos, per_class=4)
    args = [str(tiny_model_dir), "--data", str(root), "--eval-data", str(root), "--device", "cpu", "--linear-iters=5"]
    assert main(args) == 0
    assert "train 12 images, held-out 3 images" in capsys.readouterr().out
