"""Boundary-aware unpooling: a softmax over the nodes found at and around every pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segmentation.models.pooling import PAD_LABEL, soft_unpool, unpool


def block_maps(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Label maps of random rectangles (superpixels of a few pixels across), 0..N_b-1."""
    rng = np.random.default_rng(seed)
    maps = []
    for b in range(batch):
        rows = np.sort(rng.choice(np.arange(1, height), size=2 + b, replace=False))
        cols = np.sort(rng.choice(np.arange(1, width), size=2, replace=False))
        band_r = np.searchsorted(rows, np.arange(height), side="right")
        band_c = np.searchsorted(cols, np.arange(width), side="right")
        maps.append(band_r[:, None] * (len(cols) + 1) + band_c[None, :])
    return torch.from_numpy(np.stack(maps))


def loop_reference(values, keys, queries, labels, radius):
    """Pixel by pixel, from the definition (float64 numpy)."""
    batch, height, width = labels.shape
    offsets = np.concatenate([[0], np.cumsum(labels.reshape(batch, -1).max(1) + 1)[:-1]])
    out = np.zeros((batch, values.shape[1], height, width))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                if labels[b, y, x] == PAD_LABEL:
                    continue
                found = []
                for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy = min(max(y + dy * radius, 0), height - 1)
                    xx = min(max(x + dx * radius, 0), width - 1)
                    if labels[b, yy, xx] != PAD_LABEL:
                        found.append(offsets[b] + labels[b, yy, xx])
                scores = np.array([keys[c] @ queries[b, :, y, x] for c in found])
                scores /= math.sqrt(keys.shape[1])
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                out[b, :, y, x] = sum(w * values[c] for w, c in zip(weights, found, strict=True))
    return out


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_matches_the_loop_reference_in_float64(radius):
    labels = block_maps(2, 9, 11, seed=radius)
    total = int(sum(int(m.max()) + 1 for m in labels))
    gen = torch.Generator().manual_seed(radius)
    values = torch.randn(total, 3, generator=gen, dtype=torch.float64)
    keys = torch.randn(total, 4, generator=gen, dtype=torch.float64)
    queries = torch.randn(2, 4, 9, 11, generator=gen, dtype=torch.float64)
    got = soft_unpool(values, keys, queries, labels, radius=radius)
    expected = loop_reference(values.numpy(), keys.numpy(), queries.numpy(), labels.numpy(),
                              radius)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_pixels_far_from_every_edge_get_their_own_node_exactly():
    labels = torch.zeros(1, 12, 12, dtype=torch.long)
    labels[:, :, 6:] = 1  # two superpixels, split at column 6
    values = torch.tensor([[1.0, 2.0], [-3.0, 5.0]], dtype=torch.float64)
    keys = torch.randn(2, 4, dtype=torch.float64)
    queries = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    got = soft_unpool(values, keys, queries, labels, radius=2)
    hard = unpool(values, labels)
    columns = torch.arange(12)
    far = (columns < 4) | (columns >= 8)  # no candidate point crosses the split
    assert torch.equal(got[..., far], hard[..., far])
    assert not torch.allclose(got[..., ~far], hard[..., ~far])  # near it, the mix differs


def test_equal_scores_give_the_count_weighted_mean_of_the_candidates():
    # Zero queries: every candidate weighs the same, so a node found at two of
    # the five points counts twice.
    labels = torch.tensor([[[0, 0, 1]]])
    values = torch.tensor([[0.0], [10.0]])
    got = soft_unpool(values, torch.ones(2, 3), torch.zeros(1, 3, 1, 3), labels, radius=1)
    # Pixel (0, 1): points at itself, up, down (clamped: itself) -> node 0 three
    # times, left -> node 0, right -> node 1: mean 10 / 5.
    assert got[0, 0, 0, 1].item() == pytest.approx(2.0)
    # Pixel (0, 2): itself, up, down, right (clamped) -> node 1 four times, left -> node 0.
    assert got[0, 0, 0, 2].item() == pytest.approx(8.0)


def test_padding_is_never_a_candidate_and_gets_zeros():
    labels = torch.tensor([[[0, 0, 1, PAD_LABEL, PAD_LABEL]],
                           [[0, 1, 1, 1, 2]]])
    values = torch.arange(5, dtype=torch.float64).view(5, 1) + 1.0  # nodes 0, 1 | 2, 3, 4
    keys = torch.randn(5, 2, dtype=torch.float64)
    queries = torch.randn(2, 2, 1, 5, dtype=torch.float64, requires_grad=True)
    got = soft_unpool(values, keys, queries, labels, num_nodes=[2, 3], radius=1)
    expected = loop_reference(values.numpy(), keys.numpy(), queries.detach().numpy(),
                              labels.numpy(), 1)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    assert torch.all(got[0, :, 0, 3:] == 0)
    got.sum().backward()
    assert torch.isfinite(queries.grad).all()


def test_gradcheck_float64():
    labels = block_maps(1, 5, 6, seed=3)
    total = int(labels.max()) + 1
    values = torch.randn(total, 2, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(total, 3, dtype=torch.float64, requires_grad=True)
    queries = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, k, q: soft_unpool(v, k, q, labels, radius=1), (values, keys, queries)
    )


def test_default_radius_is_half_the_superpixel_spacing():
    # 4 superpixels of 8 x 8 pixels: spacing 8, radius 4.
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :8, 8:], labels[:, 8:, :8], labels[:, 8:, 8:] = 1, 2, 3
    values, keys = torch.randn(4, 2), torch.randn(4, 3)
    queries = torch.randn(1, 3, 16, 16)
    assert torch.equal(soft_unpool(values, keys, queries, labels),
                       soft_unpool(values, keys, queries, labels, radius=4))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(node_values=torch.zeros(3, 2)), ValueError, "node_keys has 2 rows"),
        (dict(node_keys=torch.zeros(2, 5)), ValueError, "pixel_queries has 3 channels"),
        (dict(pixel_queries=torch.zeros(1, 3, 4)), ValueError, "pixel_queries must have shape"),
        (dict(pixel_queries=torch.zeros(1, 3, 4, 4, dtype=torch.float64)), TypeError,
         "share one dtype"),
        (dict(node_values=torch.zeros(2, 2, dtype=torch.long)), TypeError,
         "node_values must have a floating dtype"),
        (dict(superpixels=torch.zeros(1, 4, 5, dtype=torch.long)), ValueError,
         r"superpixels must have shape \[B, H, W\] = \[1, 4, 4\]"),
        (dict(superpixels=torch.zeros(1, 4, 4)), TypeError, "integer dtype"),
        (dict(radius=0), ValueError, "radius must be a positive int"),
        (dict(radius=1.5), ValueError, "radius must be a positive int"),
        (dict(num_nodes=[1]), ValueError, "label 1 but num_nodes"),
    ],
)
def test_rejects_bad_input(change, error, match):
    superpixels = torch.zeros(1, 4, 4, dtype=torch.long)
    superpixels[:, :, 2:] = 1
    args = dict(node_values=torch.zeros(2, 2), node_keys=torch.zeros(2, 3),
                pixel_queries=torch.zeros(1, 3, 4, 4), superpixels=superpixels)
    args.update(change)
    with pytest.raises(error, match=match):
        soft_unpool(**args)


def test_gradcheck_with_padding_and_pixels_alone_in_their_superpixel():
    labels = torch.tensor([[[0] * 4 + [1] * 2 + [PAD_LABEL] * 2] * 6,
                           [[0] * 5 + [1] * 3] * 3 + [[2] * 8] * 3])
    num_nodes = [2, 3]
    alone = torch.zeros(2, 6, 8, dtype=torch.bool)  # all five points (radius 1) in one node
    for b in range(2):
        for y in range(6):
            for x in range(8):
                points = {int(labels[b, min(max(y + dy, 0), 5), min(max(x + dx, 0), 7)])
                          for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))}
                alone[b, y, x] = len(points) == 1 and labels[b, y, x] != PAD_LABEL
    assert alone.any() and (~alone).any()
    values = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    queries = torch.randn(2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, k, q: soft_unpool(v, k, q, labels, num_nodes=num_nodes, radius=1),
        (values, keys, queries),
    )
    # A pixel alone in its superpixel takes its node's value and sends nothing to
    # the scores: no gradient reaches its query.
    soft_unpool(values, keys, queries, labels, num_nodes=num_nodes, radius=1).sum().backward()
    assert torch.all(queries.grad.permute(0, 2, 3, 1)[alone] == 0)
    assert torch.any(queries.grad.permute(0, 2, 3, 1)[~alone] != 0)
