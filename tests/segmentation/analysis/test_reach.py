"""Reach statistics: every figure recomputed independently on a small image."""

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from graphlstm.reference import reach_reference
from graphlstm.schedule import order_from_score
from segmentation import region_adjacency, slic_superpixels
from segmentation.analysis.reach import (
    format_reach_table,
    hop_distances,
    reach_statistics,
)
from segmentation.data.datasets import SyntheticScenes
from segmentation.models.orders import score_from_image, smooth_random_field
from tests.helpers import record_saved_figures, saved_figure


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


def test_table_and_plot(rows, tmp_path, monkeypatch):
    table = format_reach_table(rows, hops=(1, 2)).splitlines()
    assert len(table) == 2 + len(rows)
    assert f"| {rows[0]['nodes']:,} | smooth score | {rows[0]['mean_reach']:.1f} |" in table[2]
    from segmentation.visualize import plot_reach_statistics

    saved = record_saved_figures(monkeypatch)
    path = plot_reach_statistics(rows, tmp_path / "reach.png")
    fig = saved_figure(path, saved)
    # What the figure draws: (a) one curve P(reach | k hops) per row, against k, in
    # its kind's colour; (b) per kind, mean reach and least-confident reach against N.
    left, right = fig.axes[:2]
    assert len(left.lines) == len(rows)
    colours = {}
    for line, row in zip(left.lines, rows, strict=True):
        assert np.array_equal(line.get_xdata(), np.arange(len(row["p_reach"])))
        assert np.array_equal(line.get_ydata(), np.asarray(row["p_reach"], dtype=np.float64))
        colours.setdefault(row["kind"], line.get_color())
        assert line.get_color() == colours[row["kind"]]
    kinds = list(colours)
    assert len(set(colours.values())) == len(kinds)
    assert len(right.lines) == 2 * len(kinds)
    for kind, (mean, least) in zip(kinds, zip(right.lines[::2], right.lines[1::2],
                                                strict=True), strict=True):
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["nodes"])
        for line, key in ((mean, "mean_reach"), (least, "least_confident_reach")):
            assert list(line.get_xdata()) == [r["nodes"] for r in mine]
            assert list(line.get_ydata()) == [r[key] for r in mine]
            assert line.get_color() == colours[kind]
    with pytest.raises(ValueError, match="rows"):
        plot_reach_statistics([{"kind": "random"}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="path"):
        plot_reach_statistics(rows, tmp_path / "reach.bmp")


@pytest.mark.parametrize(("kwargs", "match"), [(dict(order_kinds=["bfs"]), "order_kinds"),
                                              (dict(max_hops=0), "max_hops")])
def test_bad_arguments(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        reach_statistics((30,), image=image, **kwargs)


def test_cue_in_reach_is_one_when_the_order_spreads_from_the_cue():
    from segmentation.analysis.reach import cue_in_reach
    from segmentation.data.datasets import LongRangeScenes
    from segmentation.engine.train import build_graphs
    from segmentation.visualize import hop_distance

    graphs = build_graphs(LongRangeScenes(3, seed=5), n_segments=150)

    def from_beacon(graph, sign=-1.0):
        labels = graph.superpixels.reshape(graph.mask.shape[-2:])
        beacon = int(torch.unique(labels[graph.mask.reshape(labels.shape) == 2])[0])
        hops = hop_distance(graph.edge_index, int(graph.num_nodes), beacon)
        return sign * torch.from_numpy(hops).double()

    # Nearest to the beacon first: every shortest path from it has increasing ranks.
    assert cue_in_reach(graphs, from_beacon) == 1.0
    # Farthest first: a gate reads only nodes farther from the beacon than itself.
    assert cue_in_reach(graphs, lambda g: from_beacon(g, 1.0)) == 0.0
    # Any order: the figure is the share of gate superpixels whose reach holds a beacon one.
    scores = [torch.randn(int(g.num_nodes), generator=torch.Generator().manual_seed(i))
              for i, g in enumerate(graphs)]
    hits = total = 0
    for g, s in zip(graphs, scores, strict=True):
        labels = g.superpixels.reshape(g.mask.shape[-2:]).numpy()
        mask = g.mask.reshape(labels.shape).numpy()
        gates, beacons = np.unique(labels[mask >= 3]), np.unique(labels[mask == 2])
        reach = reach_reference(g.edge_index, int(g.num_nodes), torch.from_numpy(gates),
                                order_from_score(s), 2).numpy()
        hits += int(reach[:, beacons].any(axis=1).sum())
        total += len(gates)
    it = iter(scores)
    assert cue_in_reach(graphs, lambda g: next(it), num_layers=2) == pytest.approx(hits / total)
