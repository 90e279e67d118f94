import math

import torch
import torch.nn.functional as F

from jepa.layers import Attention, sincos_2d


def test_sincos_2d_matches_formula_width_half_first():
    dim, gh, gw = 16, 3, 5
    table = sincos_2d(dim, gh, gw)
    assert table.shape == (gh * gw, dim)
    quarter = dim // 4
    for row in range(gh):
        for col in range(gw):
            vec = table[row * gw + col]
            for i in range(quarter):
                omega = 1.0 / 10000 ** (i / quarter)
                # first half: column (width) index; second half: row (height) index
                assert math.isclose(vec[i].item(), math.sin(col * omega), abs_tol=1e-6)
                assert math.isclose(vec[quarter + i].item(), math.cos(col * omega), abs_tol=1e-6)
                assert math.isclose(vec[2 * quarter + i].item(), math.sin(row * omega), abs_tol=1e-6)
                assert math.isclose(vec[3 * quarter + i].item(), math.cos(row * omega), abs_tol=1e-6)


def test_sdpa_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=4)
    x = torch.randn(2, 7, 32)
    B, N, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, N, 3, 4, D // 4).permute(2, 0, 3, 1, 4)
    weights = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // 4), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(B, N, D))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)
