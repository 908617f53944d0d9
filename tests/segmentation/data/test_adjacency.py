"""Region adjacency graphs against hand-built maps and a brute-force reference."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from skimage import data, transform
from torch_geometric.utils import coalesce, is_undirected

import segmentation.data.adjacency as rag
from segmentation.data.adjacency import region_adjacency
from segmentation.data.superpixels import relabel_contiguous, slic_superpixels


def brute_force_adjacency(labels: np.ndarray, connectivity: int) -> Counter:
    """Count touching pixel pairs per ordered segment pair with a plain loop."""
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    height, width = labels.shape
    counts: Counter = Counter()
    for y in range(height):
        for x in range(width):
            for dy, dx in offsets:
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width:
                    a, b = int(labels[y, x]), int(labels[ny, nx])
                    if a != b:
                        counts[(a, b)] += 1
                        counts[(b, a)] += 1
    return counts


def as_counter(edge_index: torch.Tensor, lengths: torch.Tensor) -> Counter:
    pairs = zip(edge_index.t().tolist(), lengths.tolist(), strict=True)
    return Counter({(int(u), int(v)): float(w) for (u, v), w in pairs})


def assert_well_formed(edge_index: torch.Tensor, lengths: torch.Tensor, num_nodes: int) -> None:
    assert edge_index.dtype == torch.int64 and lengths.dtype == torch.float32
    assert edge_index.dim() == 2 and edge_index.shape[0] == 2
    assert lengths.shape == (edge_index.shape[1],)
    assert not bool((edge_index[0] == edge_index[1]).any()), "self-loop"
    assert is_undirected(edge_index, num_nodes=num_nodes)
    # Already coalesced: PyG's coalesce (sort + dedupe) must leave it unchanged.
    assert torch.equal(coalesce(edge_index, num_nodes=num_nodes), edge_index)


QUADRANTS = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 3, 3],
        [2, 2, 3, 3],
    ]
)


def test_quadrants_4_connectivity():
    edge_index, lengths = region_adjacency(QUADRANTS, connectivity=4)
    expected = {(0, 1): 2, (0, 2): 2, (1, 3): 2, (2, 3): 2}
    expected.update({(v, u): w for (u, v), w in expected.items()})
    assert as_counter(edge_index, lengths) == Counter(expected)
    assert_well_formed(edge_index, lengths, 4)


def test_quadrants_8_connectivity_adds_diagonals():
    edge_index, lengths = region_adjacency(QUADRANTS, connectivity=8)
    # Each side pair gains 2 diagonal pixel pairs; the two corner diagonals touch once.
    expected = {(0, 1): 4, (0, 2): 4, (1, 3): 4, (2, 3): 4, (0, 3): 1, (1, 2): 1}
    expected.update({(v, u): w for (u, v), w in expected.items()})
    assert as_counter(edge_index, lengths) == Counter(expected)
    assert_well_formed(edge_index, lengths, 4)


def test_ring_and_island():
    # Segment 1 is a ring around 2; segment 0 surrounds the ring; 3 touches only 0.
    labels = np.zeros((7, 9), np.int64)
    labels[1:6, 1:6] = 1
    labels[2:5, 2:5] = 2
    labels[3, 7] = 3
    edge_index, lengths = region_adjacency(labels)
    expected = {(0, 1): 20, (1, 2): 12, (0, 3): 4}
    expected.update({(v, u): w for (u, v), w in expected.items()})
    assert as_counter(edge_index, lengths) == Counter(expected)


def test_single_segment_has_no_edges():
    edge_index, lengths = region_adjacency(np.zeros((3, 5), np.int32))
    assert edge_index.shape == (2, 0) and lengths.shape == (0,)
    assert edge_index.dtype == torch.int64


@pytest.mark.parametrize("connectivity", [4, 8])
def test_slic_graph_matches_brute_force(connectivity):
    image = transform.resize(data.astronaut(), (64, 80), anti_aliasing=True)
    labels = slic_superpixels(image, n_segments=80)
    num_nodes = int(labels.max()) + 1
    edge_index, lengths = region_adjacency(labels, connectivity=connectivity)
    assert_well_formed(edge_index, lengths, num_nodes)
    # Every edge joins segments that touch and every touching pair is an edge,
    # with the right number of touching pixel pairs.
    assert as_counter(edge_index, lengths) == brute_force_adjacency(labels, connectivity)
    # A superpixel graph is connected: every node has a neighbour.
    assert torch.unique(edge_index[0]).numel() == num_nodes


@pytest.mark.parametrize("connectivity", [4, 8])
def test_sparse_and_dense_counting_agree(monkeypatch, connectivity):
    labels = relabel_contiguous(np.random.default_rng(0).integers(0, 30, size=(12, 10)))
    dense = region_adjacency(labels, connectivity)
    monkeypatch.setattr(rag, "_DENSE_KEY_LIMIT", 0)
    sparse = region_adjacency(labels, connectivity)
    assert torch.equal(dense[0], sparse[0]) and torch.equal(dense[1], sparse[1])
    assert as_counter(*sparse) == brute_force_adjacency(labels, connectivity)


def test_accepts_tensor_labels():
    a = region_adjacency(torch.from_numpy(QUADRANTS))
    b = region_adjacency(QUADRANTS.astype(np.uint8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (QUADRANTS.astype(float), {}, TypeError, "labels must have an integer dtype"),
        (QUADRANTS[None], {}, ValueError, "labels must be 2-D"),
        (np.zeros((0, 3), np.int64), {}, ValueError, "labels is empty"),
        (QUADRANTS - 1, {}, ValueError, "non-negative"),
        (QUADRANTS * 2, {}, ValueError, "contiguous"),
        (QUADRANTS, {"connectivity": 6}, ValueError, "connectivity"),
        ("abc", {}, TypeError, "labels must be a numpy array"),
    ],
)
def test_rejects_bad_input(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        region_adjacency(labels, **kwargs)
