"""Reach benchmark: the reach table of four orders, and the time of
:func:`graphlstm.reachable` against the per-target search of
:func:`graphlstm.reference.reach_reference` (the ``reach`` case of
``python -m benchmarks.run``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from benchmarks.layers.graph_lstm import median_time
from graphlstm import order_from_score, reachable
from graphlstm.reference import reach_reference
from segmentation.analysis.reach import _score, format_reach_table, reach_statistics

__all__ = ["bench_reach"]


def bench_reach(n_segments_list: Sequence[int] = (200, 1000, 4000), repeats: int = 3,
                plot_path=None, print_fn=print) -> list[dict]:
    """Print the reach table, the time of :func:`graphlstm.reachable` for all targets
    and the per-target search (:func:`graphlstm.reference.reach_reference`) for the
    smooth score, side by side, and plot the statistics to ``plot_path``."""
    from segmentation.data.adjacency import region_adjacency
    from segmentation.data.superpixels import slic_superpixels
    from segmentation.models.orders import smooth_random_field
    from segmentation.visualize import plot_reach_statistics

    if plot_path is not None:  # a bad path fails before the work
        from segmentation.visualize._common import FIGURE_FORMATS, _check_output

        _check_output(plot_path, FIGURE_FORMATS)
    rows = reach_statistics(n_segments_list, repeats=repeats)
    print_fn(format_reach_table(rows))
    print_fn("")
    print_fn("reachable(all targets), median of "
             f"{repeats}: " + "; ".join(f"N={r['nodes']:,} {r['kind']} "
                                        f"{1e3 * r['seconds']:.1f} ms" for r in rows))
    from skimage import data

    image = data.astronaut()
    field = smooth_random_field(image.shape[:2], 0.1, 0)
    for n_segments in n_segments_list:
        labels = slic_superpixels(image, n_segments=n_segments, compactness=10.0)
        edge_index, _ = region_adjacency(labels)
        num = int(labels.max()) + 1
        score = _score("smooth score", labels, field, 0)
        fast, slow, same = _against_reference(edge_index, num, score, repeats)
        print_fn(f"N={num:,}, {edge_index.size(1):,} edges, smooth score, all targets: "
                 f"reachable {1e3 * fast:.1f} ms, per-target search {1e3 * slow:.0f} ms "
                 f"(x{slow / fast:.1f}); equal: {same}")
    if plot_path is not None:
        print_fn(f"wrote {plot_reach_statistics(rows, plot_path)}")
    return rows


def _against_reference(edge_index, num_nodes: int, score, repeats: int):
    """Median seconds of ``reachable`` for all targets, seconds of one per-target
    search, and whether they agree."""
    targets = torch.arange(num_nodes)
    fast = median_time(lambda: reachable(edge_index, num_nodes, targets, score=score), repeats, 1)
    start = time.perf_counter()
    reference = reach_reference(edge_index, num_nodes, targets, order_from_score(score))
    slow = time.perf_counter() - start
    same = bool(torch.equal(reference, reachable(edge_index, num_nodes, targets, score=score)))
    return fast, slow, same
