"""Pictures of a structure-evolving Graph LSTM's hierarchy: the merged regions of
every level over the image, coloured by their update rank on that level."""

from __future__ import annotations

import numpy as np

from segmentation.visualize._common import (
    _as_numpy,
    _check_alpha,
    _colorbar,
    _get_cmap,
    _image_axes,
    _labels,
    _new_figure,
    save_figure,
)
from segmentation.visualize.colors import colorize, overlay

__all__ = ["hierarchy_regions", "plot_hierarchy"]


def hierarchy_regions(superpixels, assignments) -> list[np.ndarray]:
    """The region of every pixel on every level: ``assignments[k][superpixels]``.

    Parameters
    ----------
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1`` (the nodes of level 0).
    assignments : sequence of array_like ``[N]`` of int
        :attr:`graphlstm.nn.Hierarchy.assignments`: the level-``k`` node of
        every superpixel.

    Returns
    -------
    list of ndarray of int64, ``H×W``
        One label map per level, labels ``0..N_k-1``.
    """
    labels, num = _labels(superpixels)
    regions = []
    for k, assignment in enumerate(assignments):
        assignment = _as_numpy(assignment)
        if assignment.shape != (num,) or not np.issubdtype(assignment.dtype, np.integer):
            raise ValueError(f"'assignments[{k}]' must hold one integer per superpixel "
                             f"({num}), got shape {list(assignment.shape)}")
        regions.append(assignment.astype(np.int64)[labels])
    return regions


def _ranks(score) -> np.ndarray:
    """Update rank from scores (higher first, ties by the smaller index)."""
    score = _as_numpy(score).astype(np.float64)
    order = np.lexsort((np.arange(score.size), -score))
    rank = np.empty(score.size, np.int64)
    rank[order] = np.arange(score.size)
    return rank


def plot_hierarchy(image, superpixels, hierarchy, path=None, *, alpha: float = 0.6,
                   cmap="viridis", title: str | None = None, dpi: int = 100):
    """One panel per level: the image, every region of that level blended with the
    colour of its update rank on the level (``cmap``, 0 = first), region
    boundaries marked.

    Parameters
    ----------
    image : ndarray
        ``H×W`` or ``H×W×3``, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        The superpixels the hierarchy starts from (one image).
    hierarchy : graphlstm.nn.Hierarchy
        Of one image (e.g. ``EvolvingSegmenter(...).forward_batch(one).hierarchy``).
    path : str or path-like, optional
        Also save the figure there, atomically.
    alpha : float, optional
    cmap : str or Colormap, optional
    title : str, optional
        Figure title (default: the node count of every level).
    dpi : int, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[k].images[0].get_array()`` is the RGB picture of level ``k``.
    """
    alpha = _check_alpha(alpha)
    cmap = _get_cmap(cmap)
    regions = hierarchy_regions(superpixels, hierarchy.assignments)
    levels = len(regions)
    height, width = regions[0].shape
    panel = 3.2
    fig = _new_figure(panel * levels * max(width / height, 0.5) + 1.0, panel + 0.6, dpi)
    axes = fig.subplots(1, levels, squeeze=False)[0]
    for k, (ax, region) in enumerate(zip(axes, regions, strict=True)):
        size = hierarchy.num_nodes[k]
        score = hierarchy.scores[k]
        rank = np.arange(size) if score is None else _ranks(score)
        colors = colorize(rank[region], cmap, vmin=0, vmax=max(size - 1, 1))
        picture = overlay(image, region, colors, alpha=alpha)
        _image_axes(ax, picture, f"level {k}: {size} regions")
        if k == levels - 1:
            _colorbar(fig, ax, cmap, 0, max(size - 1, 1), "update rank on the level",
                      integer=True)
    fig.suptitle(title if title is not None else
                 "merged regions per level: " + " -> ".join(map(str, hierarchy.num_nodes)),
                 fontsize=11)
    if path is not None:
        save_figure(fig, path)
    return fig
