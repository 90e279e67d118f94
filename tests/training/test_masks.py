"""Property tests of the multi-block mask sampler: coverage, termination, no truncation bias, shapes."""

from __future__ import annotations

import time

import pytest
import torch

from training.masks import MaskSpec, block_size, sample_masks


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("grid", [(8, 8), (14, 14), (6, 9)])
def test_every_position_is_covered_by_targets_and_context(grid):
    spec = MaskSpec(grid)
    gen = _gen()
    t_seen = torch.zeros(grid[0] * grid[1], dtype=torch.long)
    c_seen = torch.zeros_like(t_seen)
    for _ in range(200):
        m = sample_masks(gen, spec, 16)
        t_seen += torch.bincount(m.targets.flatten(), minlength=len(t_seen))
        c_seen += torch.bincount(m.context.flatten(), minlength=len(c_seen))
    assert (t_seen > 0).all(), "some patch is never a target"
    assert (c_seen > 0).all(), "some patch is never context"
    last_row = torch.arange(grid[1]) + (grid[0] - 1) * grid[1]
    last_col = torch.arange(grid[0]) * grid[1] + grid[1] - 1
    assert t_seen[last_row].min() > 0 and t_seen[last_col].min() > 0


@pytest.mark.parametrize("grid", [(8, 8), (4, 4), (2, 2), (1, 7), (1, 1), (3, 1)])
def test_terminates_on_small_grids_with_bounded_tries(grid):
    spec = MaskSpec(grid, min_keep=10, max_tries=5)
    t0 = time.perf_counter()
    for seed in range(50):
        m = sample_masks(_gen(seed), spec, 8)
        assert m.context.shape[1] >= 1
        n = grid[0] * grid[1]
        assert int(m.context.max()) < n and int(m.targets.max()) < n
    assert time.perf_counter() - t0 < 10


def test_shapes_consistent_and_context_excludes_targets():
    spec = MaskSpec((8, 8))
    m = sample_masks(_gen(1), spec, 32)
    B, M, _Kt = m.targets.shape
    assert (B, M) == (32, 4) and m.context.shape[0] == 32
    assert (m.context.diff(dim=1) > 0).all(), "context indices sorted and unique"
    for b in range(B):
        assert not set(m.context[b].tolist()) & set(m.targets[b].flatten().tolist())


def test_target_blocks_are_rectangles_of_the_drawn_scale():
    spec = MaskSpec((14, 14))
    for seed in range(20):
        m = sample_masks(_gen(seed), spec, 4)
        idx = m.targets[0, 0]
        rows, cols = idx // 14, idx % 14
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h * w == idx.numel()
        assert 0.1 <= idx.numel() / 196 <= 0.26


def test_no_positional_bias_from_cutting_context_to_the_batch_minimum():
    """Context kept per position should track how often each position is available as context.

    Cutting by keeping the first indices (the official collator) starves the last rows; a random
    subset keeps the ratio kept/available flat across rows.
    """
    grid = (8, 8)
    spec = MaskSpec(grid)
    gen = _gen(3)
    kept = torch.zeros(64)
    for _ in range(300):
        m = sample_masks(gen, spec, 32)
        kept += torch.bincount(m.context.flatten(), minlength=64).float()
    grid_counts = kept.view(8, 8)
    for counts in (grid_counts.sum(1), grid_counts.sum(0)):  # per row, per column
        # The sampler is mirror-symmetric, so row i and row 7-i must be kept about equally often;
        # keeping the first k indices would starve the last rows (and columns) instead.
        ratio = counts / counts.flip(0)
        assert ((ratio > 0.93) & (ratio < 1.07)).all(), counts


def test_random_subset_is_unbiased_where_first_k_is_not():
    from training.masks import _random_subset

    gen = _gen(5)
    masks = torch.ones(4000, 64, dtype=torch.bool)
    counts = torch.bincount(_random_subset(gen, masks, 32).flatten(), minlength=64).float()
    assert counts.min() / counts.max() > 0.9
    assert (_random_subset(gen, masks, 64) == torch.arange(64)).all()


def test_block_size_clamps_to_grid():
    assert block_size((2, 2), 0.2, 1.5) == (1, 1)
    assert block_size((1, 10), 1.0, 1.0)[0] == 1


def test_same_generator_state_same_masks():
    a = sample_masks(_gen(7), MaskSpec((8, 8)), 4)
    b = sample_masks(_gen(7), MaskSpec((8, 8)), 4)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
