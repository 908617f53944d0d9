"""Reach statistics: every figure recomputed independently on a small image."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from graphlstm.reference import reach_reference
from graphlstm.schedule import order_from_score
from segmentation import region_adjacency, slic_superpixels
from segmentation.datasets import SyntheticScenes
from segmentation.orders import score_from_image, smooth_random_field
from segmentation.reach_stats import (
    bench_reach,
    format_reach_table,
    hop_distances,
    reach_statistics,
)


@pytest.fixture(scope="module")
def image():
    return SyntheticScenes(1, size=(64, 80), seed=1)[0][0]


@pytest.fixture(scope="module")
def rows(image):
    return reach_statistics((30, 60), image=image, max_hops=5, repeats=1)


def test_hop_distances_match_shortest_paths(image):
    labels = slic_superpixels(image, n_segments=40)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    src, dst = edge_index.numpy()
    want = shortest_path(coo_matrix((np.ones(src.size), (src, dst)), shape=(num, num)),
                         directed=False, unweighted=True)
    got = hop_distances(edge_index, num, max_hops=3)
    assert np.array_equal(got, np.where(want > 3, 4, want).astype(np.int16))


def test_statistics_match_a_recomputation(image, rows):
    assert [r["kind"] for r in rows[:4]] == ["smooth score", "reverse score", "random", "raster"]
    labels = slic_superpixels(image, n_segments=30)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    score = score_from_image(smooth_random_field(labels.shape, 0.1, 0), labels, num)
    src, dst = edge_index.numpy()
    hops = shortest_path(coo_matrix((np.ones(src.size), (src, dst)), shape=(num, num)),
                         directed=False, unweighted=True)
    for row, s in ((rows[0], score), (rows[1], -score)):
        reach = reach_reference(edge_index, num, torch.arange(num), order_from_score(s)).numpy()
        assert row["nodes"] == num
        assert row["mean_reach"] == pytest.approx(reach.sum(1).mean())
        quarter = np.argsort(score.numpy(), kind="stable")[: num // 4]
        assert row["least_confident_reach"] == pytest.approx(reach[quarter].sum(1).mean())
        two = reach_reference(edge_index, num, torch.arange(num), order_from_score(s), 2)
        assert row["mean_reach_2_layers"] == pytest.approx(two.numpy().sum(1).mean())
        for k in range(6):
            at_k = hops == k
            assert row["pairs"][k] == at_k.sum()
            if at_k.any():
                assert row["p_reach"][k] == pytest.approx(reach[at_k].mean())
    # An order and its reverse: the same average reach, not the same nodes seeing far.
    assert rows[0]["mean_reach"] == pytest.approx(rows[1]["mean_reach"])
    assert rows[0]["least_confident_reach"] > rows[1]["least_confident_reach"]


def test_table_and_plot(rows, tmp_path):
    table = format_reach_table(rows, hops=(1, 2)).splitlines()
    assert len(table) == 2 + len(rows)
    assert f"| {rows[0]['nodes']:,} | smooth score | {rows[0]['mean_reach']:.1f} |" in table[2]
    from segmentation.visualize import plot_reach_statistics

    path = plot_reach_statistics(rows, tmp_path / "reach.png")
    with Image.open(path) as png:
        assert png.format == "PNG"
    with pytest.raises(ValueError, match="rows"):
        plot_reach_statistics([{"kind": "random"}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="path"):
        plot_reach_statistics(rows, tmp_path / "reach.bmp")


def test_bench_prints_agreement_with_the_search(monkeypatch, image, tmp_path):
    import skimage.data

    monkeypatch.setattr(skimage.data, "astronaut", lambda: image)
    lines = []
    rows = bench_reach((30,), repeats=1, plot_path=tmp_path / "r.png", print_fn=lines.append)
    assert len(rows) == 4 and (tmp_path / "r.png").exists()
    assert any("equal: True" in line for line in lines)


@pytest.mark.parametrize(("kwargs", "match"), [(dict(order_kinds=["bfs"]), "order_kinds"),
                                              (dict(max_hops=0), "max_hops")])
def test_bad_arguments(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        reach_statistics((30,), image=image, **kwargs)
