"""How far an update order lets information travel in one Graph LSTM layer: reach statistics.

For SLIC graphs of an image (``skimage.data.astronaut()`` by default) at a few
sizes and several orders, :func:`reach_statistics` measures, with
:func:`graphlstm.reachable`:

- the **mean reach**: how many superpixels can change a superpixel's output
  in one layer from a zero state (itself included), and the same for a stack
  of two layers that passes its state on (the segmentation model);
- the mean reach of the **least** and the **most confident quarter** of the
  superpixels (by the smooth score that stands in for a confidence);
- :math:`P(u \\in R(t) \\mid d(u, t) = k)`: the probability that a
  superpixel ``k`` hops away (shortest path in the region adjacency graph)
  is in reach.

Order kinds (:data:`REACH_ORDER_KINDS`): ``"smooth score"`` (a smooth
random field averaged per superpixel, higher first: a stand-in for a model's
confidence), ``"reverse score"`` (the same, lowest first), ``"random"`` and
``"raster"``. On an undirected graph an order and its reverse have the same
mean reach and the same :math:`P(\\cdot \\mid k)` (a path that increases in
one decreases in the other), so what tells them apart is *who* has the large
reach: the last nodes of an order see far, the first ones see only
themselves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from graphlstm import reachable
from segmentation._checks import check_int
from segmentation.data.adjacency import hops_from
from segmentation.data.images import check_image

__all__ = [
    "REACH_ORDER_KINDS",
    "cue_in_reach",
    "share_of_targets_reaching_cues",
    "format_reach_table",
    "hop_distances",
    "reach_statistics",
]

#: Order kinds of :func:`reach_statistics`.
REACH_ORDER_KINDS = ("smooth score", "reverse score", "random", "raster")


def hop_distances(edge_index: torch.Tensor, num_nodes: int, max_hops: int) -> np.ndarray:
    """All-pairs hop distances, capped: ``[N, N]`` int16, ``max_hops + 1`` for farther
    or unreachable pairs (:func:`segmentation.data.adjacency.hops_from` for every node)."""
    distance = hops_from(edge_index, num_nodes, max_hops=max_hops)
    distance[distance < 0] = max_hops + 1
    return distance.astype(np.int16)


def _score(kind: str, labels: np.ndarray, field: np.ndarray, seed: int) -> torch.Tensor:
    from segmentation.data.features import superpixel_centroids
    from segmentation.models.orders import random_score, raster_score, score_from_image

    num = int(labels.max()) + 1
    if kind == "smooth score":
        return score_from_image(field, labels, num)
    if kind == "reverse score":
        return -score_from_image(field, labels, num)
    if kind == "random":
        return random_score(num, torch.Generator().manual_seed(seed))
    return raster_score(superpixel_centroids(labels), labels.shape[1])


def reach_statistics(
    n_segments_list: Sequence[int] = (200, 1000, 4000),
    order_kinds: Sequence[str] = REACH_ORDER_KINDS,
    image=None,
    *,
    max_hops: int = 8,
    compactness: float = 10.0,
    seed: int = 0,
    smooth_sigma: float = 0.1,
    repeats: int = 3,
) -> list[dict]:
    """Reach statistics of SLIC graphs of ``image`` (see the module docstring).

    Parameters
    ----------
    n_segments_list : sequence of int
        Requested SLIC sizes (one graph each).
    order_kinds : sequence of str
        From :data:`REACH_ORDER_KINDS`.
    image : ndarray, optional
        Default: ``skimage.data.astronaut()`` (512×512).
    max_hops : int
        Largest hop distance ``k`` of the conditional probabilities.
    compactness, seed, smooth_sigma
        SLIC compactness; seed of the random order and of the smooth field;
        the field's smoothing scale (fraction of the image size).
    repeats : int
        Timed calls of :func:`graphlstm.reachable` (all targets); the median
        is reported.

    Returns
    -------
    list of dict
        One row per size and kind: ``n_segments``, ``nodes``, ``edges``,
        ``kind``, ``mean_reach``, ``mean_reach_2_layers``,
        ``least_confident_reach``, ``most_confident_reach`` (mean reach of the
        quarter of nodes with the lowest / highest smooth score),
        ``p_reach`` (list over ``k = 0..max_hops`` of P(in reach | k hops);
        NaN where no pair is ``k`` hops apart), ``pairs`` (pairs per ``k``),
        ``seconds`` (median time of ``reachable`` for all targets).
    """
    from segmentation.data.adjacency import region_adjacency
    from segmentation.data.superpixels import slic_superpixels
    from segmentation.models.orders import smooth_random_field

    unknown = [k for k in order_kinds if k not in REACH_ORDER_KINDS]
    if isinstance(order_kinds, str) or not order_kinds or unknown:
        raise ValueError(f"'order_kinds' must be a non-empty list of {REACH_ORDER_KINDS}, "
                         f"got {order_kinds!r}")
    check_int(max_hops, "'max_hops'")
    if image is None:
        from skimage import data

        image = data.astronaut()
    image = check_image(image, name="'image'")
    field = smooth_random_field(image.shape[:2], smooth_sigma, seed)
    rows = []
    for n_segments in n_segments_list:
        labels = slic_superpixels(image, n_segments=n_segments, compactness=compactness)
        edge_index, _ = region_adjacency(labels)
        num = int(labels.max()) + 1
        distance = hop_distances(edge_index, num, max_hops)
        pairs = np.bincount(distance.ravel(), minlength=max_hops + 2)[: max_hops + 1]
        confidence = _score("smooth score", labels, field, seed).numpy()
        quarter = max(1, num // 4)
        by_confidence = np.argsort(confidence, kind="stable")
        least, most = by_confidence[:quarter], by_confidence[-quarter:]
        targets = torch.arange(num)
        for kind in order_kinds:
            score = _score(kind, labels, field, seed)
            times = []
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                reach = reachable(edge_index, num, targets, score=score)
                times.append(time.perf_counter() - start)
            two = reachable(edge_index, num, targets, score=score, num_layers=2)
            size = reach.sum(dim=1).double().numpy()
            in_reach = np.bincount(distance[reach.numpy()], minlength=max_hops + 2)
            with np.errstate(invalid="ignore", divide="ignore"):
                p_reach = in_reach[: max_hops + 1] / pairs
            rows.append({
                "n_segments": int(n_segments), "nodes": num, "edges": int(edge_index.size(1)),
                "kind": kind, "mean_reach": float(size.mean()),
                "mean_reach_2_layers": float(two.sum(dim=1).double().mean()),
                "least_confident_reach": float(size[least].mean()),
                "most_confident_reach": float(size[most].mean()),
                "p_reach": [float(p) for p in p_reach], "pairs": pairs.tolist(),
                "seconds": float(np.median(times)),
            })
    return rows


def format_reach_table(rows: list[dict], hops: Sequence[int] = (1, 2, 4, 8)) -> str:
    """A markdown table of :func:`reach_statistics` rows."""
    head = ("| superpixels N | order | mean reach | least confident ¼ | most confident ¼ | "
            "2 layers | " + " | ".join(f"P(k={k})" for k in hops) + " |")
    lines = [head, "|---" * (6 + len(hops)) + "|"]
    previous = None
    for row in rows:
        n = f"{row['nodes']:,}" if row["nodes"] != previous else ""
        previous = row["nodes"]
        probs = [row["p_reach"][k] if k < len(row["p_reach"]) else float("nan") for k in hops]
        lines.append(
            f"| {n} | {row['kind']} | {row['mean_reach']:.1f} | "
            f"{row['least_confident_reach']:.1f} | {row['most_confident_reach']:.1f} | "
            f"{row['mean_reach_2_layers']:.1f} | " + " | ".join(f"{p:.3f}" for p in probs) + " |")
    return "\n".join(lines)


def cue_in_reach(graphs: Sequence, score_fn, num_layers: int = 1, cue_labels=(2,),
                 target_labels=(3, 4)) -> float:
    """How often an order lets a cue into the reach of the regions it decides.

    For every graph (a :class:`segmentation.SuperpixelData` with a ``mask``)
    and every *target* superpixel (one holding a pixel of ``target_labels``,
    e.g. the gates of :class:`segmentation.data.datasets.LongRangeScenes`), whether
    any *cue* superpixel (holding a pixel of ``cue_labels``, the beacon) is in
    its reach through ``num_layers`` layers; the mean over all target
    superpixels of all graphs.

    Parameters
    ----------
    graphs : sequence of SuperpixelData
    score_fn : callable
        ``score_fn(graph) -> Tensor [N]``, the order's scores (higher first).
    num_layers : int
    cue_labels, target_labels : sequence of int

    Returns
    -------
    float
        In ``[0, 1]``; NaN if no graph holds a target.
    """
    def reach_of(graph, targets: torch.Tensor) -> torch.Tensor:
        return reachable(graph.edge_index, int(graph.num_nodes), targets,
                         score=score_fn(graph), num_layers=num_layers)

    return share_of_targets_reaching_cues(graphs, reach_of, cue_labels, target_labels)


def share_of_targets_reaching_cues(graphs, reach_of, cue_labels, target_labels) -> float:
    """The share of target superpixels whose reach holds a cue superpixel.

    The counting of :func:`cue_in_reach`, for any model's reach: ``reach_of(graph,
    targets)`` returns a bool tensor ``[len(targets), N]``, row ``t`` the superpixels
    that target ``targets[t]`` can read. Graphs without a target are skipped
    (``reach_of`` is not called for them).

    Returns
    -------
    float
        In ``[0, 1]``; NaN if no graph holds a target.
    """
    hits, total = 0, 0
    for graph in graphs:
        labels = graph.superpixels.reshape(graph.mask.shape[-2:])
        mask = graph.mask.reshape(labels.shape)
        targets = torch.unique(labels[torch.isin(mask, torch.tensor(list(target_labels)))])
        cues = torch.unique(labels[torch.isin(mask, torch.tensor(list(cue_labels)))])
        if targets.numel() == 0:
            continue
        reach = reach_of(graph, targets)
        hits += int(reach[:, cues].any(dim=1).sum())
        total += targets.numel()
    return hits / total if total else float("nan")
