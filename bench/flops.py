"""FLOPs of one encoder forward, counted two ways: from the architecture, and by torch's counter.

One multiply-add is two FLOPs. Per token and block: qkv (3D^2) + projection (D^2) + MLP (2*D*M)
multiply-adds, plus attention's QK^T and AV (2*N*D); plus the patch embedding. LayerNorm, GELU and
softmax are left out (a few per cent at most), as is usual when quoting model FLOPs.
"""

from __future__ import annotations

from jepa.config import Architecture


def encoder_flops(arch: Architecture, image_size: int | None = None) -> float:
    """Forward FLOPs for one image at ``image_size`` (default: the trained size)."""
    size = image_size or arch.image_size
    n = (size // arch.patch_size) ** 2
    d, m = arch.embed_dim, arch.mlp_dim
    per_token_block = 4 * d * d + 2 * d * m + 2 * n * d  # multiply-adds
    patch_embed = n * arch.in_chans * arch.patch_size**2 * d
    return 2.0 * (arch.depth * n * per_token_block + patch_embed)


def counted_flops(model, image_size: int, device: str = "cpu") -> float:
    """FLOPs of one batch-1 forward as ``torch.utils.flop_counter`` counts them.

    It counts matmuls and convolutions, and SDPA only where the kernel it dispatches to is
    registered (CUDA flash/efficient attention; not the CPU kernel), so on CPU it comes out lower
    than :func:`encoder_flops` by exactly the attention term.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=device, dtype=next(model.parameters()).dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops())
