"""Plots of schedule statistics: levels against the number of superpixels, and reach."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from segmentation.data.images import check_image
from segmentation.visualize._common import (
    FIGURE_FORMATS,
    _check_output,
    _check_positive_int,
    _new_figure,
    save_figure,
)

__all__ = ["DEFAULT_N_SEGMENTS", "LEVEL_ORDER_KINDS", "levels_vs_superpixels",
           "plot_levels_vs_superpixels", "plot_reach_statistics"]

#: Order kinds of :func:`levels_vs_superpixels`. ``"smooth score"`` is a spatially
#: smooth random field averaged over each superpixel: a stand-in for a model's
#: confidence, which is also spatially smooth, when no trained model is at hand.
LEVEL_ORDER_KINDS = ("smooth score", "random", "raster")

#: Default ``n_segments`` of :func:`levels_vs_superpixels`.
DEFAULT_N_SEGMENTS = (100, 200, 400, 800, 1600, 4000)


def _default_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def levels_vs_superpixels(n_segments_list=DEFAULT_N_SEGMENTS, order_kinds=LEVEL_ORDER_KINDS,
                          image=None, *, compactness: float = 10.0, seed: int = 0,
                          smooth_sigma: float = 0.1) -> dict:
    """Number of levels of SLIC superpixel graphs for several orders and sizes.

    For every requested ``n_segments`` the image is segmented once (SLIC), its
    region adjacency graph built, and each order kind scheduled with
    :func:`graphlstm.build_schedule`. The kinds (:data:`LEVEL_ORDER_KINDS`):

    - ``"smooth score"``: a smooth random field
      (:func:`segmentation.models.orders.smooth_random_field`, ``smooth_sigma``)
      averaged over each superpixel, standing in for a model's confidence;
    - ``"random"``: a random permutation;
    - ``"raster"``: centroids top row first, left to right.

    Parameters
    ----------
    n_segments_list : sequence of int, optional
        Requested superpixel counts (SLIC may give somewhat fewer or more).
    order_kinds : sequence of str, optional
    image : ndarray, optional
        Default: :func:`skimage.data.astronaut` (512×512).
    compactness : float, optional
        SLIC compactness.
    seed : int, optional
        Seed of the random order and the smooth field.
    smooth_sigma : float, optional
        Smoothing scale of the field, as a fraction of the image size.

    Returns
    -------
    dict
        ``"n_segments"``: the requested counts; ``"num_nodes"``: the actual
        superpixel counts ``N``; ``"levels"``: ``{kind: [levels per size]}``.

    Raises
    ------
    TypeError, ValueError
        For an unknown kind, a bad count, or a malformed image.
    """
    from graphlstm.schedule import build_schedule
    from segmentation.data.adjacency import region_adjacency
    from segmentation.data.features import superpixel_centroids
    from segmentation.data.superpixels import slic_superpixels
    from segmentation.models.orders import (
        random_score,
        raster_score,
        score_from_image,
        smooth_random_field,
    )

    if isinstance(order_kinds, str) or not isinstance(order_kinds, Sequence) or not order_kinds:
        raise TypeError(f"'order_kinds' must be a non-empty list of {LEVEL_ORDER_KINDS}")
    for kind in order_kinds:
        if kind not in LEVEL_ORDER_KINDS:
            raise ValueError(
                f"'order_kinds' holds {kind!r}; choose from {', '.join(LEVEL_ORDER_KINDS)}"
            )
    if not isinstance(n_segments_list, Sequence) or not n_segments_list:
        raise TypeError("'n_segments_list' must be a non-empty list of positive ints")
    sizes = [_check_positive_int(n, "n_segments_list") for n in n_segments_list]
    image = check_image(_default_image() if image is None else image, name="'image'")
    height, width = image.shape[:2]
    if max(sizes) > height * width:
        raise ValueError(
            f"'n_segments_list' asks for {max(sizes)} superpixels, more than the "
            f"{height * width} pixels of 'image'"
        )
    field = smooth_random_field((height, width), smooth_sigma, seed)
    result = {"n_segments": sizes, "num_nodes": [], "levels": {k: [] for k in order_kinds}}
    for n_segments in sizes:
        labels = slic_superpixels(image, n_segments=n_segments, compactness=compactness)
        edge_index, _ = region_adjacency(labels)
        num = int(labels.max()) + 1
        result["num_nodes"].append(num)
        for kind in order_kinds:
            if kind == "smooth score":
                score = score_from_image(field, labels, num)
            elif kind == "random":
                score = random_score(num, torch.Generator().manual_seed(seed))
            else:
                score = raster_score(superpixel_centroids(labels), width)
            schedule = build_schedule(edge_index, num, score=score)
            result["levels"][kind].append(schedule.num_levels)
    return result


def plot_levels_vs_superpixels(path, n_segments_list=DEFAULT_N_SEGMENTS,
                               order_kinds=LEVEL_ORDER_KINDS, image=None, *,
                               results: dict | None = None, log: bool = True,
                               dpi: int = 100, **kwargs) -> Path:
    """Plot levels against superpixels per order kind, with the ``N`` line.

    A sequential pass takes ``N`` steps; the level-by-level schedule takes as
    many steps as levels. With the defaults (the astronaut image, 100 to 4000
    superpixels) it takes a few seconds.

    Parameters
    ----------
    path : str or path-like
        Output file (``.png``, ``.pdf``, ``.svg``, ``.jpg``), written atomically.
    n_segments_list, order_kinds, image, **kwargs
        Passed to :func:`levels_vs_superpixels`.
    results : dict, optional
        A result of :func:`levels_vs_superpixels` to plot instead of computing.
    log : bool, optional
        Log-log axes (else linear).
    dpi : int, optional

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError, ValueError
        For a bad path (checked before computing) or bad arguments.
    """
    path = _check_output(path, FIGURE_FORMATS)
    dpi = _check_positive_int(dpi, "dpi")
    if results is None:
        results = levels_vs_superpixels(n_segments_list, order_kinds, image, **kwargs)
    elif not isinstance(results, Mapping) or not {"num_nodes", "levels"} <= set(results):
        raise ValueError("'results' must be a dict from levels_vs_superpixels")
    nodes = np.asarray(results["num_nodes"], dtype=np.float64)
    fig = _new_figure(6.0, 4.2, dpi)
    ax = fig.subplots()
    order = np.argsort(nodes)
    line = np.array([nodes.min(), nodes.max()]) if nodes.size else np.array([1.0, 1.0])
    ax.plot(line, line, "k--", linewidth=1, label="sequential pass (N steps)")
    markers = "osD^v<>"
    for i, (kind, levels) in enumerate(results["levels"].items()):
        levels = np.asarray(levels, dtype=np.float64)
        ax.plot(nodes[order], levels[order], marker=markers[i % len(markers)], label=kind)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("superpixels N")
    ax.set_ylabel("levels (parallel steps)")
    ax.set_title("Critical path of the Graph LSTM schedule", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_reach_statistics(rows: Sequence[Mapping], path, *, dpi: int = 100) -> Path:
    """Plot reach statistics (rows of :func:`segmentation.analysis.reach.reach_statistics`).

    Panel (a): the probability that a superpixel ``k`` hops away is in reach,
    against ``k``, one colour per order kind and one line style per graph
    size. Panel (b): the mean reach against the number of superpixels
    (log-log), solid for all superpixels and dotted for the least confident
    quarter.

    Parameters
    ----------
    rows : sequence of dict
        Rows with ``kind``, ``nodes``, ``p_reach``, ``mean_reach`` and
        ``least_confident_reach``.
    path : str or path-like
        Output file (``.png``, ``.pdf``, ``.svg``, ``.jpg``), written atomically.
    dpi : int, optional

    Returns
    -------
    Path

    Raises
    ------
    TypeError, ValueError
        For a bad path or malformed rows.
    """
    path = _check_output(path, FIGURE_FORMATS)
    dpi = _check_positive_int(dpi, "dpi")
    needed = {"kind", "nodes", "p_reach", "mean_reach", "least_confident_reach"}
    if (isinstance(rows, str | Mapping) or not isinstance(rows, Sequence) or not rows
            or not all(isinstance(r, Mapping) and needed <= set(r) for r in rows)):
        raise ValueError(f"'rows' must be a non-empty list of dicts with {sorted(needed)}")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    sizes = sorted({int(r["nodes"]) for r in rows})
    colours = {k: f"C{i}" for i, k in enumerate(kinds)}
    # An order and its reverse have the same curves: the first kinds are drawn wider,
    # so that a later kind on top of them leaves them visible.
    widths = {k: 1.2 + 2.4 * (len(kinds) - 1 - i) / max(len(kinds) - 1, 1)
              for i, k in enumerate(kinds)}
    styles = ["-", "--", ":", "-."]
    fig = _new_figure(11.0, 4.2, dpi)
    left, right = fig.subplots(1, 2)
    for r in rows:
        p = np.asarray(r["p_reach"], dtype=np.float64)
        style = styles[sizes.index(int(r["nodes"])) % len(styles)]
        left.plot(np.arange(p.size), p, style, color=colours[r["kind"]],
                  linewidth=widths[r["kind"]], alpha=0.85)
    handles = [Line2D([], [], color=colours[k], linewidth=widths[k], label=k) for k in kinds]
    handles += [Line2D([], [], color="black", linestyle=styles[i % len(styles)],
                       label=f"N = {n:,}") for i, n in enumerate(sizes)]
    left.legend(handles=handles, fontsize=7)
    left.set_xlabel("hop distance k from the target")
    left.set_ylabel("P(in reach | k hops)")
    left.set_title("(a) how far one layer sees", fontsize=11)
    left.set_ylim(0, 1.02)
    left.grid(True, alpha=0.3)
    for kind in kinds:
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["nodes"])
        nodes = [r["nodes"] for r in mine]
        right.plot(nodes, [r["mean_reach"] for r in mine], "-o", color=colours[kind],
                   linewidth=widths[kind], alpha=0.85, label=f"{kind}: all")
        right.plot(nodes, [r["least_confident_reach"] for r in mine], ":s",
                   color=colours[kind], label=f"{kind}: least confident ¼")
    right.set_xscale("log")
    right.set_yscale("log")
    right.xaxis.set_minor_formatter(NullFormatter())
    right.set_xticks(sizes, labels=[f"{n:,}" for n in sizes])
    right.set_xlabel("superpixels N")
    right.set_ylabel("mean reach (superpixels)")
    right.set_title("(b) reach of one layer", fontsize=11)
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)
