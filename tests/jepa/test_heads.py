"""The core's heads: one normalisation (torch == numpy, bit for bit) and the multilayer embedding,
checked against the blocks run by hand, for a model deeper than four blocks and one shallower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jepa
from jepa.contract import Embeddings, multilayer_blocks
from jepa.heads import EmbeddingHeads, Normalize, embed_tensors
from jepa.preprocess import normalize


@torch.inference_mode()
def by_hand(encoder, pixel_values: torch.Tensor, last: int) -> torch.Tensor:
    """Mean tokens of each of the last ``last`` blocks, through the final norm, concatenated."""
    x = encoder.patch_embed(pixel_values) + encoder.pos_embed
    means = []
    for block in encoder.blocks:
        x = block(x)
        means.append(encoder.norm(x).mean(1))
    return torch.cat(means[-last:], dim=-1)


@pytest.mark.parametrize(("depth", "blocks"), [(6, 4), (4, 4), (2, 2)])
def test_multilayer_is_the_last_four_blocks(depth, blocks):
    torch.manual_seed(depth)
    encoder = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=depth)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        result = embed_tensors(encoder, x, frozenset({"global", "patch", "multilayer"}))
        tokens = encoder(x)
    assert multilayer_blocks(depth) == blocks
    assert result.multilayer_embedding.shape == (3, blocks * 192)
    torch.testing.assert_close(result.multilayer_embedding, by_hand(encoder, x, blocks), rtol=1e-5, atol=1e-6)
    # the last block's slice is the global embedding, and the patch grid is the usual forward
    torch.testing.assert_close(result.multilayer_embedding[:, -192:], result.global_embedding)
    torch.testing.assert_close(result.patch_embeddings, tokens)


def test_outputs_not_asked_for_are_absent():
    encoder = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=2)
    with torch.inference_mode():
        result = embed_tensors(encoder, torch.randn(2, 3, 32, 32), frozenset({"global"}))
    assert result.present() == {"global"} and result.patch_embeddings is None


def test_torch_normalize_is_numpy_normalize_bit_for_bit():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    config = jepa.Preprocess()
    ours = Normalize(config.mean, config.std)(torch.from_numpy(pixels))
    np.testing.assert_array_equal(ours.numpy(), normalize(pixels, config))


def test_uint8_heads_equal_float_heads_on_normalised_input():
    encoder = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=2)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        raw = EmbeddingHeads(encoder, uint8_input=True)(torch.from_numpy(pixels))
        normed = EmbeddingHeads(encoder)(torch.from_numpy(normalize(pixels, encoder.config.preprocess)))
    for name in ("global", "patch", "multilayer"):
        torch.testing.assert_close(raw.get(name), normed.get(name), rtol=0, atol=0)


def test_embed_gives_multilayer_when_asked(photos):
    encoder = jepa.build_encoder("tiny", patch_size=8, image_size=32, depth=5)
    out = encoder.embed(photos[:2], outputs=("global", "multilayer"))
    assert set(out) == {"global", "multilayer"} and out["multilayer"].shape == (2, 4 * 192)
    x = encoder.preprocess(photos[:2])
    np.testing.assert_allclose(out["multilayer"], by_hand(encoder, x, 4).numpy(), rtol=1e-5, atol=1e-6)
    assert set(encoder.embed(photos[:1])) == {"global", "patch"}  # the default stays as it was


def test_embeddings_rows_and_selection():
    batch = Embeddings(np.arange(6.0).reshape(3, 2), np.zeros((3, 4, 2)), np.ones((3, 8)))
    row = batch.map(lambda a: a[1]).only(frozenset({"global", "multilayer"}))
    assert row.global_embedding.tolist() == [2.0, 3.0] and row.patch_embeddings is None
    assert row.multilayer_embedding.shape == (8,) and row.present() == {"global", "multilayer"}
