"""Long-range scenes: determinism, hops on the training's SLIC graphs, the exact look-alike."""

import numpy as np
import pytest
from scipy import ndimage

from segmentation.data.datasets import (
    LONG_RANGE_CLASSES,
    LongRangeScenes,
    generate_long_range_scene,
)
from segmentation.data.datasets.long_range import (
    BEACON,
    COLD_GATE,
    PATH,
    WARM_GATE,
    long_range_gap,
)
from segmentation.engine.train import build_graphs


def graph_hops(graph, mask, first, second):
    """Hops between the superpixels holding pixels of `first` and of `second` (plain BFS)."""
    labels = graph.superpixels.reshape(mask.shape).numpy()
    start = set(np.unique(labels[np.isin(mask, first)]).tolist())
    goal = set(np.unique(labels[np.isin(mask, second)]).tolist())
    neighbours = {}
    for j, i in graph.edge_index.t().tolist():
        neighbours.setdefault(j, set()).add(i)
    frontier, seen, hops = start, set(start), 0
    while not frontier & goal:
        frontier = {i for j in frontier for i in neighbours.get(j, ())} - seen
        seen |= frontier
        hops += 1
        assert frontier, "the beacon is not connected to the gate"
    return hops


def test_deterministic_and_distinct():
    a = generate_long_range_scene(3)
    b = generate_long_range_scene(3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = generate_long_range_scene(4)
    assert not np.array_equal(a[0], c[0])
    scenes = LongRangeScenes(4, seed=2)
    assert np.array_equal(scenes[1][0], generate_long_range_scene((2, 0, 1))[0])
    assert not np.array_equal(scenes[1][0], LongRangeScenes(4, seed=2, stream=1)[1][0])
    assert len(scenes[1:3]) == 2 and len(scenes) == 4 and "min_hops=4" in repr(scenes)


@pytest.mark.parametrize("size", [(96, 96), (80, 120)])
def test_scene_format(size):
    image, mask = generate_long_range_scene(5, size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    present = set(np.unique(mask).tolist())
    assert {0, PATH, BEACON} <= present and len(present & {WARM_GATE, COLD_GATE}) == 1
    assert present <= set(range(len(LONG_RANGE_CLASSES)))
    # One beacon, one gate, and the path touches both.
    for label in (BEACON, WARM_GATE if WARM_GATE in present else COLD_GATE):
        region = mask == label
        assert ndimage.label(region)[1] == 1
        assert (ndimage.binary_dilation(region, iterations=2) & (mask == PATH)).any()


@pytest.mark.parametrize("min_hops", [2, 4, 5])
def test_gate_is_at_least_min_hops_from_the_beacon_on_the_training_graph(min_hops):
    scenes = LongRangeScenes(8, seed=min_hops, min_hops=min_hops)
    graphs = build_graphs(scenes, n_segments=150)  # what the training builds
    hops = [graph_hops(g, mask, BEACON, (WARM_GATE, COLD_GATE))
            for g, (_, mask) in zip(graphs, scenes, strict=True)]
    assert min(hops) >= min_hops
    # The gap in pixels is many times what the 7x7 backbone sees.
    for _, mask in scenes:
        distance = ndimage.distance_transform_edt(mask != BEACON)
        assert distance[mask >= WARM_GATE].min() >= long_range_gap(min_hops=min_hops) > 3 * 3


def test_the_class_changes_the_beacon_and_nothing_else():
    seen = set()
    for seed in range(8):
        image, mask = generate_long_range_scene(seed)
        own = "warm" if (mask == WARM_GATE).any() else "cold"
        other = "cold" if own == "warm" else "warm"
        seen.add(own)
        same = generate_long_range_scene(seed, beacon=own)
        assert np.array_equal(same[0], image) and np.array_equal(same[1], mask)
        flipped, flipped_mask = generate_long_range_scene(seed, beacon=other)
        beacon = mask == BEACON
        assert np.array_equal(beacon, flipped_mask == BEACON)
        changed = (flipped != image).any(axis=2)
        assert changed.any() and not (changed & ~beacon).any()
        gate = mask >= WARM_GATE
        assert np.array_equal(gate, flipped_mask >= WARM_GATE)
        assert set(np.unique(mask[gate])) | set(np.unique(flipped_mask[gate])) == {3, 4}
        # So every gate pixel's 7x7 neighbourhood is the same whichever the class.
        window = ndimage.binary_dilation(gate, np.ones((7, 7), bool))
        assert np.array_equal(image[window], flipped[window])
    assert seen == {"warm", "cold"}


def test_classes_are_balanced():
    warm = sum(bool((generate_long_range_scene(s)[1] == WARM_GATE).any()) for s in range(30))
    assert 6 <= warm <= 24  # binomial(30, 1/2): outside this with probability < 4e-4


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: generate_long_range_scene(0, min_hops=0), ValueError, "min_hops"),
        (lambda: generate_long_range_scene(0, min_hops=2.0), TypeError, "min_hops"),
        (lambda: generate_long_range_scene(0, (48, 48), min_hops=8), ValueError, "too small"),
        (lambda: generate_long_range_scene(0, beacon="red"), ValueError, "beacon"),
        (lambda: generate_long_range_scene(0, compactness=0), ValueError, "compactness"),
        (lambda: generate_long_range_scene(-1), ValueError, "seed"),
        (lambda: generate_long_range_scene(0, (20, 96)), ValueError, "size"),
        (lambda: LongRangeScenes(-1), ValueError, "num_scenes"),
        (lambda: LongRangeScenes(2, (48, 48), min_hops=8), ValueError, "too small"),
        (lambda: LongRangeScenes(2)[2], IndexError, "out of range"),
    ],
)
def test_rejects_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
