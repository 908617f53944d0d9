"""Edge features of superpixel graphs and the edge-weight recipe, against plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data, transform
from skimage.color import rgb2lab

import segmentation.data.transforms as transforms_module
from segmentation.data.adjacency import region_adjacency
from segmentation.data.features import (
    EDGE_FEATURE_NAMES,
    edge_features,
    edge_weight_from_features,
)
from segmentation.data.superpixels import relabel_contiguous, slic_superpixels
from segmentation.data.transforms import SuperpixelGraph


def small_image(seed: int = 0, size: tuple[int, int] = (36, 44)) -> np.ndarray:
    image = transform.resize(data.astronaut(), (160, 160), anti_aliasing=True)
    y, x = 20 * (seed % 5), 17 * (seed % 6)
    return np.rint(image[y : y + size[0], x : x + size[1]] * 255).astype(np.uint8)


def loop_edge_features(image, labels, edge_index, connectivity):
    """One edge at a time: touching pixel pairs counted with masks, mean CIELAB
    and centroid of each segment from its pixel mask."""
    rgb = image.astype(np.float64) / 255.0
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    lab = rgb2lab(rgb)
    shifts = [(labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])]
    if connectivity == 8:
        shifts += [(labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1])]
    rows = []
    for u, v in edge_index.t().tolist():
        boundary = 0
        if u != v:
            for a, b in shifts:
                boundary += int((((a == u) & (b == v)) | ((a == v) & (b == u))).sum())
        mean = [lab[labels == k].mean(0) for k in (u, v)]
        ys, xs = zip(*[np.nonzero(labels == k) for k in (u, v)], strict=True)
        centroid = [np.array([x.mean(), y.mean()]) for x, y in zip(xs, ys, strict=True)]
        rows.append([boundary, np.linalg.norm(mean[0] - mean[1]),
                     np.linalg.norm(centroid[0] - centroid[1])])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("gray", [False, True])
def test_edge_features_equal_a_per_edge_loop(connectivity, gray):
    image = small_image(1)
    if gray:
        image = image[..., 1].copy()
    labels = slic_superpixels(image, n_segments=25, compactness=10.0)
    edge_index, _ = region_adjacency(labels, connectivity=connectivity)
    # Plus pairs that do not touch, a duplicate and a self-loop.
    n = int(labels.max()) + 1
    extra = torch.tensor([[0, n - 1, 3, 2], [n - 1, 0, 3, 5]])
    edge_index = torch.cat([edge_index, extra, edge_index[:, :2]], dim=1)
    got = edge_features(image, labels, edge_index, connectivity=connectivity)
    assert got.dtype == torch.float32 and got.shape == (edge_index.size(1), 3)
    expected = loop_edge_features(image, labels, edge_index, connectivity)
    assert torch.equal(got[:, 0].double(), expected[:, 0])  # counts: exact
    assert bool((got[-6:-2, 0] == 0).sum() >= 2)  # the non-touching pairs
    # float32 Lab (as superpixel_features) against float64 here
    torch.testing.assert_close(got[:, 1].double(), expected[:, 1], atol=2e-3, rtol=0)
    torch.testing.assert_close(got[:, 2].double(), expected[:, 2], atol=1e-4, rtol=1e-6)


def test_edge_features_of_a_relabelled_map():
    # A label map that no SLIC made: random blocks, relabelled to 0..N-1.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 9, size=(6, 7)).repeat(5, axis=0).repeat(6, axis=1)
    labels = relabel_contiguous(blocks)
    image = rng.integers(0, 256, size=(*labels.shape, 3), dtype=np.uint8)
    edge_index, boundary = region_adjacency(labels)
    got = edge_features(image, torch.from_numpy(labels), edge_index)
    assert torch.equal(got[:, 0], boundary)
    expected = loop_edge_features(image, labels, edge_index, 4)
    torch.testing.assert_close(got[:, 1:].double(), expected[:, 1:], atol=2e-3, rtol=0)


def test_edge_weight_recipe_equals_its_formula():
    image = small_image(2)
    labels = slic_superpixels(image, n_segments=25, compactness=10.0)
    edge_index, _ = region_adjacency(labels)
    attr = edge_features(image, labels, edge_index)
    # a node whose in-edges share no boundary: weight 0
    attr[edge_index[1] == 4, 0] = 0.0
    weight = edge_weight_from_features(attr, edge_index, colour_sigma=7.0)
    boundary, colour = attr[:, 0].tolist(), attr[:, 1].tolist()
    targets = edge_index[1].tolist()
    for e, i in enumerate(targets):
        total = sum(b for b, t in zip(boundary, targets, strict=True) if t == i)
        expected = math.exp(-colour[e] / 7.0) * boundary[e] / total if total > 0 else 0.0
        assert abs(float(weight[e]) - expected) < 1e-6
    assert bool((weight[edge_index[1] == 4] == 0).all())
    assert float(weight.min()) >= 0 and float(weight.max()) <= 1


def test_transform_adds_edge_features_behind_an_option(tmp_path, monkeypatch):
    image = small_image(3)
    plain = SuperpixelGraph(n_segments=25)(image)
    rich_transform = SuperpixelGraph(n_segments=25, edge_features=True, cache_dir=tmp_path)
    rich = rich_transform(image)
    assert plain.edge_attr.shape == (plain.edge_index.size(1), 1)  # the default is unchanged
    assert rich.edge_attr.shape == (rich.edge_index.size(1), len(EDGE_FEATURE_NAMES))
    assert torch.equal(rich.edge_index, plain.edge_index)
    assert torch.equal(rich.edge_attr[:, 0], plain.edge_attr[:, 0])
    assert torch.equal(rich.edge_attr, edge_features(image, rich.superpixels[0], rich.edge_index))
    assert "edge_features=True" in repr(rich_transform)

    def no_slic(*args, **kwargs):
        raise AssertionError("SLIC ran")

    monkeypatch.setattr(transforms_module, "slic_superpixels", no_slic)
    assert torch.equal(rich_transform(image).edge_attr, rich.edge_attr)  # from the cache
    with pytest.raises(AssertionError, match="SLIC ran"):  # the option is part of the key
        SuperpixelGraph(n_segments=25, cache_dir=tmp_path)(image)


@pytest.mark.parametrize(
    "edge_index, exc, match",
    [
        (torch.tensor([[0, 99], [1, 0]]), ValueError, "outside"),
        (torch.tensor([[0.0], [1.0]]), TypeError, "edge_index"),
        (torch.tensor([0, 1]), ValueError, r"shape \[2, E\]"),
    ],
)
def test_bad_edge_index(edge_index, exc, match):
    image = small_image(4)
    labels = slic_superpixels(image, n_segments=10, compactness=10.0)
    with pytest.raises(exc, match=match):
        edge_features(image, labels, edge_index)


def test_bad_recipe_arguments():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    attr = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[E, 3\]"):
        edge_weight_from_features(attr[:, :1], edge_index)
    with pytest.raises(TypeError, match="edge_attr"):
        edge_weight_from_features(attr.long(), edge_index)
    with pytest.raises(ValueError, match="2 edges"):
        edge_weight_from_features(attr[:1], edge_index)
    with pytest.raises(ValueError, match="colour_sigma"):
        edge_weight_from_features(attr, edge_index, colour_sigma=0.0)
    with pytest.raises(TypeError, match="edge_features"):
        SuperpixelGraph(n_segments=5, edge_features="yes")
