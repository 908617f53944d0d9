"""Pictures of an update order: rank and level per superpixel, one order or several."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from segmentation.visualize._common import (
    FIGURE_FORMATS,
    _as_numpy,
    _check_alpha,
    _check_output,
    _check_positive_int,
    _check_schedule,
    _colorbar,
    _get_cmap,
    _image_axes,
    _labels,
    _new_figure,
    _node_values,
    _rgb_uint8,
    save_figure,
)
from segmentation.visualize.colors import colorize, overlay

__all__ = ["level_image", "plot_order_comparison", "plot_update_order", "rank_image"]


def rank_image(superpixels, rank) -> np.ndarray:
    """The update rank of every pixel's superpixel.

    Parameters
    ----------
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    rank : array_like ``[N]`` of int
        ``rank[v]`` is the step at which superpixel ``v`` is updated
        (:attr:`graphlstm.Schedule.rank`).

    Returns
    -------
    ndarray of int64, ``H×W``
        ``rank[superpixels]``.

    Raises
    ------
    TypeError, ValueError
        If ``superpixels`` is not a contiguous label map or ``rank`` is not one
        non-negative int per superpixel.
    """
    labels, num = _labels(superpixels)
    return _node_values(rank, num, "rank", integer=True)[labels]


def level_image(superpixels, level) -> np.ndarray:
    """The level of every pixel's superpixel.

    Parameters
    ----------
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    level : array_like ``[N]`` of int
        :attr:`graphlstm.Schedule.level`.

    Returns
    -------
    ndarray of int64, ``H×W``
        ``level[superpixels]``.

    Raises
    ------
    TypeError, ValueError
        If ``superpixels`` is not a contiguous label map or ``level`` is not
        one non-negative int per superpixel.
    """
    labels, num = _labels(superpixels)
    return _node_values(level, num, "level", integer=True)[labels]


def plot_update_order(
    image,
    superpixels,
    schedule,
    confidence=None,
    numbers: bool = False,
    path=None,
    *,
    alpha: float = 0.6,
    rank_cmap="viridis",
    level_cmap="plasma",
    confidence_cmap="inferno",
    confidence_label: str = "confidence",
    title: str | None = None,
    dpi: int = 100,
):
    """A figure of the update order of superpixels: rank, level, confidence.

    Panels, left to right:

    (a) the image, each superpixel blended with the colour of its update
        *rank* (``rank_cmap``, 0 = first), boundaries marked, with a colorbar;
        with ``numbers`` the rank is written at each centroid;
    (b) the same with the *level* (``level_cmap``): superpixels of one colour
        are updated together, in parallel;
    (c) only when ``confidence`` is given: the confidence map, or the
        per-superpixel score painted onto its superpixels (``confidence_cmap``).

    Parameters
    ----------
    image : ndarray
        ``H×W`` grayscale or ``H×W×3`` RGB, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    schedule : graphlstm.Schedule
        Built on the superpixels' graph (:func:`graphlstm.build_schedule`).
    confidence : array_like, optional
        ``H×W`` map or ``[N]`` per-superpixel values (finite).
    numbers : bool, optional
        Write each superpixel's rank at its centroid.
    path : str or path-like, optional
        Also save the figure there, atomically (``.png``, ``.pdf``, ``.svg``,
        ``.jpg``).
    alpha : float, optional
        Opacity of the colours over the image (1 = solid).
    rank_cmap, level_cmap, confidence_cmap : str or Colormap, optional
    confidence_label : str, optional
        Title and colorbar label of panel (c).
    title : str, optional
        Figure title (default: the counts of superpixels and levels).
    dpi : int, optional

    Returns
    -------
    matplotlib.figure.Figure
        On the Agg canvas. ``fig.axes[i].images[0].get_array()`` is the RGB
        picture of panel ``i``.

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs, before anything is drawn.
    """
    from matplotlib import patheffects

    rgb = _rgb_uint8(image)
    labels, num = _labels(superpixels, rgb.shape[:2])
    schedule = _check_schedule(schedule, num)
    if not isinstance(numbers, bool | np.bool_):
        raise TypeError(f"'numbers' must be a bool, got {numbers!r}")
    cmaps = [_get_cmap(c, n) for c, n in ((rank_cmap, "rank_cmap"), (level_cmap, "level_cmap"),
                                             (confidence_cmap, "confidence_cmap"))]
    alpha = _check_alpha(alpha)
    dpi = _check_positive_int(dpi, "dpi")
    conf_map = None
    if confidence is not None:
        conf = _as_numpy(confidence)
        if conf.ndim == 2:
            if conf.shape != labels.shape:
                raise ValueError(
                    f"'confidence' map has shape {conf.shape} but the image is {labels.shape}"
                )
            if not np.issubdtype(conf.dtype, np.number) or not np.isfinite(conf).all():
                raise ValueError("'confidence' must hold finite numbers")
            conf_map = conf.astype(np.float64)
        else:
            conf_map = _node_values(conf, num, "confidence")[labels]
    if path is not None:
        path = _check_output(path, FIGURE_FORMATS)

    rank = schedule.rank.numpy()
    level = schedule.level.numpy()
    k = schedule.num_levels
    panels = 3 if conf_map is not None else 2
    height, width = labels.shape
    panel_w = 4.0
    fig = _new_figure(panel_w * panels + 0.8 * panels, panel_w * height / width + 0.7, dpi)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    rank_colors = colorize(rank_image(labels, rank), cmaps[0], 0, max(num - 1, 0))
    _image_axes(axes[0], overlay(rgb, labels, rank_colors, alpha=alpha),
                "(a) update rank (0 = first)")
    _colorbar(fig, axes[0], cmaps[0], 0, max(num - 1, 0), "rank", integer=True)
    if numbers:
        from segmentation.data.features import superpixel_centroids

        pos = superpixel_centroids(labels).numpy()
        size = float(np.clip(200.0 / math.sqrt(max(num, 1)), 3.0, 9.0))
        outline = [patheffects.withStroke(linewidth=1.5, foreground="black")]
        for v in range(num):
            axes[0].text(pos[v, 0], pos[v, 1], str(int(rank[v])), ha="center", va="center",
                         fontsize=size, color="white", path_effects=outline)

    level_colors = colorize(level_image(labels, level), cmaps[1], 0, max(k - 1, 0))
    _image_axes(axes[1], overlay(rgb, labels, level_colors, alpha=alpha),
                f"(b) level: {k} parallel steps")
    _colorbar(fig, axes[1], cmaps[1], 0, max(k - 1, 0), "level", integer=True)

    if conf_map is not None:
        low, high = float(conf_map.min()), float(conf_map.max())
        _image_axes(axes[2], colorize(conf_map, cmaps[2], low, high), f"(c) {confidence_label}")
        _colorbar(fig, axes[2], cmaps[2], low, high if high > low else low + 1.0,
                  confidence_label)
    fig.suptitle(title if title is not None else
                 f"{num} superpixels, {k} levels (a sequential pass takes {num} steps)",
                 fontsize=11)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_order_comparison(image, superpixels, schedules: Mapping, path=None, *,
                          alpha: float = 0.6, rank_cmap="viridis", level_cmap="plasma",
                          dpi: int = 100):
    """Rank and level side by side for several orders of the same superpixels.

    Parameters
    ----------
    image : ndarray
        ``H×W`` or ``H×W×3``, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    schedules : mapping of str to graphlstm.Schedule
        One row per entry, titled by its key (e.g. ``"random"``).
    path : str or path-like, optional
        Also save the figure there, atomically.
    alpha, rank_cmap, level_cmap, dpi
        As in :func:`plot_update_order`.

    Returns
    -------
    matplotlib.figure.Figure
        Row ``r`` holds ``fig.axes[2 r]`` (rank) and ``fig.axes[2 r + 1]``
        (level); the colorbars follow them in ``fig.axes``.

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs.
    """
    rgb = _rgb_uint8(image)
    labels, num = _labels(superpixels, rgb.shape[:2])
    if not isinstance(schedules, Mapping) or len(schedules) == 0:
        raise TypeError("'schedules' must be a non-empty mapping of name -> Schedule")
    checked = {str(name): _check_schedule(s, num) for name, s in schedules.items()}
    cmaps = (_get_cmap(rank_cmap, "rank_cmap"), _get_cmap(level_cmap, "level_cmap"))
    alpha = _check_alpha(alpha)
    dpi = _check_positive_int(dpi, "dpi")
    if path is not None:
        path = _check_output(path, FIGURE_FORMATS)
    height, width = labels.shape
    rows = len(checked)
    panel_w = 3.6
    fig = _new_figure(2 * panel_w + 1.6, rows * (panel_w * height / width + 0.5) + 0.4, dpi)
    axes = fig.subplots(rows, 2, squeeze=False)
    for r, (name, schedule) in enumerate(checked.items()):
        k = schedule.num_levels
        rank_colors = colorize(rank_image(labels, schedule.rank), cmaps[0], 0, max(num - 1, 0))
        level_colors = colorize(level_image(labels, schedule.level), cmaps[1], 0, max(k - 1, 0))
        _image_axes(axes[r, 0], overlay(rgb, labels, rank_colors, alpha=alpha),
                    f"{name}: update rank")
        _image_axes(axes[r, 1], overlay(rgb, labels, level_colors, alpha=alpha),
                    f"{name}: {k} levels")
    # Colorbars after the image axes, so that fig.axes[2 r], [2 r + 1] are the pictures.
    for r, schedule in enumerate(checked.values()):
        k = schedule.num_levels
        _colorbar(fig, axes[r, 0], cmaps[0], 0, max(num - 1, 0), "rank", integer=True)
        _colorbar(fig, axes[r, 1], cmaps[1], 0, max(k - 1, 0), "level", integer=True)
    fig.suptitle(f"{num} superpixels: the same graph in {rows} update orders", fontsize=11)
    if path is not None:
        save_figure(fig, path)
    return fig
