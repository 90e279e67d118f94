"""Multi-block masks for I-JEPA: per image, M target blocks and one context block minus the targets.

Sampled in batch with torch ops on one ``torch.Generator`` so a batch of 512 costs milliseconds.
It avoids three faults of the official collator:

* block corners are drawn from ``[0, grid - size]`` inclusive, so blocks touch the last row and
  column (the official ``randint`` bound never does);
* retries are bounded (``max_tries``); after them the context falls back to "every patch that is
  not a target" and, on a grid the targets cover completely, to one random patch, so sampling
  terminates on any grid (the official loop spins forever on 8x8 with ``min_keep=10``);
* every target block in a batch has the same height and width (one size drawn per batch, as the
  official sampler draws one scale per batch), so targets need no truncation; context sets differ
  in size and are cut to the batch minimum by a *random* subset, not by keeping the first indices
  (which would drop the bottom rows more often).

Elsewhere it follows the official collator by default (``docs/training/meta_parity.md``): one
random number sets both a target block's scale and its aspect ratio and the block's area is rounded
down (``shape_draw="meta"``); no block spans the whole grid (``full_grid=False``: the context block
of a 14x14 grid is at most 13x13); a context needs *more* than ``min_keep`` patches
(``min_keep_strict=True``). Each has an option that restores the alternative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskBatch:
    """Indices into the row-major patch grid: ``context [B, Kc]`` (sorted) and ``targets [B, M, Kt]``."""

    context: Tensor
    targets: Tensor


@dataclass(frozen=True)
class MaskSpec:
    """What to sample: the official ``mask`` section's numbers."""

    grid: tuple[int, int]
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 10
    allow_overlap: bool = False
    max_tries: int = 20
    shape_draw: str = "meta"  # "meta": one draw for scale and aspect, area rounded down; "independent"
    full_grid: bool = False  # let a block span the whole grid (the official sizes stop one short)
    min_keep_strict: bool = True  # a context needs more than min_keep patches (official); else at least


def _uniform(gen: Tensor | torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def block_size(grid: tuple[int, int], scale: float, aspect: float, floor_area: bool = False,
               full_grid: bool = True) -> tuple[int, int]:  # fmt: skip
    """Height and width of a block covering ``scale`` of the grid with ``height / width = aspect``.

    ``floor_area`` rounds the area down to whole patches first (the official code); without
    ``full_grid`` a side is at most the grid's side minus one, as the official code keeps it.
    """
    gh, gw = grid
    area = int(scale * gh * gw) if floor_area else scale * gh * gw
    h = round(math.sqrt(area * aspect))
    w = round(math.sqrt(area / aspect))
    max_h, max_w = (gh, gw) if full_grid else (max(1, gh - 1), max(1, gw - 1))
    return min(max(h, 1), max_h), min(max(w, 1), max_w)


def draw_shape(gen: torch.Generator, spec: MaskSpec, scale: tuple[float, float], aspect: tuple[float, float]
               ) -> tuple[int, int]:  # fmt: skip
    """A block shape: one uniform draw for scale and aspect (``meta``) or one each (``independent``)."""
    if spec.shape_draw == "meta":
        u = torch.rand((), generator=gen).item()
        s, a = scale[0] + u * (scale[1] - scale[0]), aspect[0] + u * (aspect[1] - aspect[0])
        return block_size(spec.grid, s, a, floor_area=True, full_grid=spec.full_grid)
    s, a = _uniform(gen, *scale), _uniform(gen, *aspect)
    return block_size(spec.grid, s, a, floor_area=False, full_grid=spec.full_grid)


def _corners(gen: torch.Generator, n: tuple[int, ...], grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Top-left corners ``[*n, 2]`` drawn uniformly so a block may touch the last row and column."""
    top = torch.randint(0, grid[0] - size[0] + 1, n, generator=gen)
    left = torch.randint(0, grid[1] - size[1] + 1, n, generator=gen)
    return torch.stack([top, left], dim=-1)


def _block_mask(corners: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Boolean masks ``[*n, gh, gw]`` of rectangles with the given corners ``[*n, 2]``."""
    rows = torch.arange(grid[0])
    cols = torch.arange(grid[1])
    top, left = corners[..., 0:1], corners[..., 1:2]
    in_rows = (rows >= top) & (rows < top + size[0])  # [*n, gh]
    in_cols = (cols >= left) & (cols < left + size[1])  # [*n, gw]
    return in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)


def _block_indices(corners: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Row-major indices ``[*n, h*w]`` of the rectangles, in row-major order within each block."""
    dr = torch.arange(size[0]).repeat_interleave(size[1])
    dc = torch.arange(size[1]).repeat(size[0])
    rows = corners[..., 0:1] + dr
    cols = corners[..., 1:2] + dc
    return rows * grid[1] + cols


def _sample_context(gen: torch.Generator, spec: MaskSpec, targets_union: Tensor, size: tuple[int, int]) -> Tensor:
    """Context masks ``[B, gh, gw]`` with at least ``min_keep`` patches where the tries allow it."""
    B = targets_union.shape[0]
    n_patches = spec.grid[0] * spec.grid[1]
    need = max(1, min(spec.min_keep + spec.min_keep_strict, n_patches))
    context = torch.zeros(B, *spec.grid, dtype=torch.bool)
    todo = torch.arange(B)
    for _ in range(spec.max_tries):
        block = _block_mask(_corners(gen, (len(todo),), spec.grid, size), spec.grid, size)
        if not spec.allow_overlap:
            block &= ~targets_union[todo]
        context[todo] = block
        todo = todo[block.flatten(1).sum(1) < need]
        if len(todo) == 0:
            return context
    # Bounded tries are spent: use every patch that is not a target, and on a grid the targets
    # cover completely keep one random patch, so there is always some context.
    rest = ~targets_union[todo] if not spec.allow_overlap else torch.ones_like(targets_union[todo])
    empty = rest.flatten(1).sum(1) == 0
    if empty.any():
        pick = torch.randint(0, n_patches, (int(empty.sum()),), generator=gen)
        flat = rest[empty].flatten(1)
        flat[torch.arange(len(pick)), pick] = True
        rest[empty] = flat.view(-1, *spec.grid)
    context[todo] = rest
    return context


def _random_subset(gen: torch.Generator, masks: Tensor, k: int) -> Tensor:
    """``k`` indices per row of boolean ``masks [B, N]``, a uniformly random subset of the set ones, sorted."""
    scores = torch.rand(masks.shape, generator=gen)
    scores[~masks] = 2.0  # never chosen while a set index remains
    chosen = scores.argsort(dim=1)[:, :k]
    return chosen.sort(dim=1).values


def sample_masks(gen: torch.Generator, spec: MaskSpec, batch_size: int) -> MaskBatch:
    """One batch of multi-block masks; see the module docstring for the guarantees."""
    grid = spec.grid
    t_size = draw_shape(gen, spec, spec.target_scale, spec.target_aspect)
    c_size = draw_shape(gen, spec, spec.context_scale, (1.0, 1.0))
    t_corners = _corners(gen, (batch_size, spec.num_targets), grid, t_size)
    targets = _block_indices(t_corners, grid, t_size)  # [B, M, Kt]
    union = _block_mask(t_corners, grid, t_size).any(dim=1)  # [B, gh, gw]
    context_mask = _sample_context(gen, spec, union, c_size).flatten(1)  # [B, N]
    k = int(context_mask.sum(1).min())
    return MaskBatch(context=_random_subset(gen, context_mask, k), targets=targets)
