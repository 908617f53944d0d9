"""Influence pictures: which superpixels can change one target superpixel's output.

For a target superpixel and an update order, the superpixels in its reach
(:func:`graphlstm.reachable`) are shaded, by their hop distance from the
target or by any per-superpixel value, such as the Jacobian norm of a
trained model's output at the target with respect to each superpixel's node
input (:func:`segmentation.analysis.influence.node_influence`); the rest of the image
stays gray and unshaded. The target superpixel is outlined.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

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
from segmentation.visualize.colors import colorize

__all__ = ["hop_distance", "influence_picture", "plot_influence", "target_superpixel"]

_TARGET = (255, 255, 255)  # outline of the target superpixel
_BOUNDARY = (40, 40, 40)  # boundaries inside the reach


def target_superpixel(superpixels, x: int, y: int) -> int:
    """The superpixel under pixel column ``x``, row ``y``.

    Raises
    ------
    TypeError, ValueError
        If ``x``, ``y`` are not ints inside the label map.
    """
    labels, _ = _labels(superpixels)
    height, width = labels.shape
    for name, value, size in (("x", x, width), ("y", y, height)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"'{name}' must be a pixel index (int), got {value!r}")
        if not 0 <= value < size:
            raise ValueError(f"pixel ({x}, {y}) is outside the {width}×{height} image")
    return int(labels[int(y), int(x)])


def hop_distance(edge_index, num_nodes: int, target: int) -> np.ndarray:
    """Hops from ``target`` to every node, edges taken in either direction
    (``-1`` where unreachable): a breadth-first search."""
    edge_index = _as_numpy(edge_index).astype(np.int64)
    distance = np.full(num_nodes, -1, dtype=np.int64)
    distance[target] = 0
    src = np.concatenate([edge_index[0], edge_index[1]])
    dst = np.concatenate([edge_index[1], edge_index[0]])
    frontier = np.zeros(num_nodes, dtype=bool)
    frontier[target] = True
    hop = 0
    while frontier.any():
        hop += 1
        reached = np.zeros(num_nodes, dtype=bool)
        reached[dst[frontier[src]]] = True
        frontier = reached & (distance < 0)
        distance[frontier] = hop
    return distance


def influence_picture(image, superpixels, reach, values, target: int, *, cmap="magma_r",
                      vmin: float | None = None, vmax: float | None = None,
                      alpha: float = 0.75, log: bool = False) -> np.ndarray:
    """The picture of one panel: the reach shaded by ``values``, the rest gray.

    Pixels of superpixels outside the reach are the image's gray (luminance,
    rounded), untouched. Pixels of superpixels in the reach are
    ``round((1 - alpha) * gray + alpha * colour)`` with ``colour`` the
    ``cmap`` colour of their superpixel's value (see :func:`colorize`; with
    ``log``, of ``log10(value)``), except the boundaries between superpixels of
    the reach (dark gray) and the outline of the target superpixel (white),
    both drawn on the reach's own pixels.

    Parameters
    ----------
    image : ndarray
        ``H×W`` or ``H×W×3``, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    reach : array_like ``[N]`` of bool
        The superpixels that can influence the target (it must hold ``target``).
    values : array_like ``[N]``
        Finite values, read on the reach only (positive there with ``log``).
    target : int
        The target superpixel.
    cmap, vmin, vmax, alpha, log
        Colour mapping of the values (default range: their minimum and
        maximum over the reach).

    Returns
    -------
    ndarray of uint8, ``H×W×3``

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs.
    """
    rgb = _rgb_uint8(image)
    labels, num = _labels(superpixels, rgb.shape[:2])
    reach = _as_numpy(reach)
    if reach.dtype != np.bool_ or reach.shape != (num,):
        raise ValueError(f"'reach' must be a bool array of shape ({num},), "
                         f"got {reach.dtype} {reach.shape}")
    if isinstance(target, bool) or not isinstance(target, int | np.integer) or not (
            0 <= target < num):
        raise ValueError(f"'target' must be a superpixel in 0..{num - 1}, got {target!r}")
    if not reach[target]:
        raise ValueError("'reach' must hold the target (a node always reaches itself)")
    alpha = _check_alpha(alpha)
    shade = _node_values(values, num, "values").copy()
    if log:
        if (shade[reach] <= 0).any():
            raise ValueError("'values' must be positive on the reach with log=True")
        shade[~reach] = 1.0  # read on the reach only
        shade = np.log10(shade)
    low = float(shade[reach].min()) if vmin is None else vmin
    high = float(shade[reach].max()) if vmax is None else vmax
    luminance = rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    gray = np.repeat(np.rint(luminance).astype(np.uint8)[:, :, None], 3, axis=2)
    colours = colorize(shade[labels], cmap, low, high)
    inside = reach[labels]
    blended = np.rint((1.0 - alpha) * gray + alpha * colours.astype(np.float64)).astype(np.uint8)
    picture = np.where(inside[:, :, None], blended, gray)

    from skimage.segmentation import find_boundaries

    edges = find_boundaries(labels, mode="inner") & inside
    picture[edges] = _BOUNDARY
    picture[find_boundaries(labels == target, mode="inner")] = _TARGET
    return picture


def plot_influence(image, superpixels, edge_index, target: int, schedules: Mapping, *,
                   values: Mapping | None = None, num_layers: int = 1,
                   value_label: str = "Jacobian norm", path=None, alpha: float = 0.75,
                   cmap="magma_r", dpi: int = 100):
    """One panel per order: the superpixels that can influence ``target``.

    Panel ``i`` shows the reach of ``target`` under the ``i``-th schedule's
    order (:func:`graphlstm.reachable`, ``num_layers`` layers that pass their
    state on), shaded by the hop distance from the target (the default; the
    same colour scale in every panel) or by ``values[name]`` on a log scale;
    see :func:`influence_picture` for the content.

    Parameters
    ----------
    image : ndarray
        ``H×W`` or ``H×W×3``, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    edge_index : LongTensor ``[2, E]``
        The superpixel graph the schedules were built on.
    target : int
        The target superpixel (see :func:`target_superpixel`).
    schedules : mapping of str to graphlstm.Schedule
        One panel per entry, titled by its key.
    values : mapping of str to array_like ``[N]``, optional
        Per-superpixel shading of each panel (e.g. Jacobian norms), positive
        on the reach; keys as in ``schedules``.
    num_layers : int, optional
        Layers of the reach (a stack that passes its state on).
    value_label : str, optional
        Colorbar label of ``values``.
    path : str or path-like, optional
        Also save the figure there, atomically.
    alpha, cmap, dpi
        Opacity and colormap of the shading; figure resolution.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[i].images[0].get_array()`` is the picture of panel ``i``
        (:func:`influence_picture`); the colorbars follow the panels.

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs, before anything is drawn.
    """
    from graphlstm import reachable

    rgb = _rgb_uint8(image)
    labels, num = _labels(superpixels, rgb.shape[:2])
    if not isinstance(schedules, Mapping) or len(schedules) == 0:
        raise TypeError("'schedules' must be a non-empty mapping of name -> Schedule")
    checked = {str(name): _check_schedule(s, num) for name, s in schedules.items()}
    if isinstance(target, bool) or not isinstance(target, int | np.integer) or not (
            0 <= target < num):
        raise ValueError(f"'target' must be a superpixel in 0..{num - 1}, got {target!r}")
    if values is not None:
        if not isinstance(values, Mapping) or set(map(str, values)) != set(checked):
            raise ValueError(f"'values' must map the same names as 'schedules' "
                             f"({', '.join(checked)}) to per-superpixel values")
        values = {str(k): _node_values(v, num, f"values[{k!r}]") for k, v in values.items()}
    colormap = _get_cmap(cmap)
    alpha = _check_alpha(alpha)
    dpi = _check_positive_int(dpi, "dpi")
    if path is not None:
        path = _check_output(path, FIGURE_FORMATS)
    edge_index = torch.as_tensor(_as_numpy(edge_index)).long()
    hops = hop_distance(edge_index, num, int(target))
    reaches = {name: reachable(edge_index, num, [int(target)], order=s.order,
                               num_layers=num_layers)[0].numpy()
               for name, s in checked.items()}

    height, width = labels.shape
    panels = len(checked)
    panel_w = 3.8
    fig = _new_figure(panel_w * panels + 1.2, panel_w * height / width + 0.9, dpi)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if values is None:
        high = max(float(hops[r].max()) for r in reaches.values())
        ranges = {name: (0.0, max(high, 1.0)) for name in checked}
    else:
        ranges = {}
        for name, reach in reaches.items():
            shown = values[name][reach]
            if (shown <= 0).any():
                raise ValueError(f"'values[{name!r}]' must be positive on the reach")
            ranges[name] = (float(np.log10(shown.min())), float(np.log10(shown.max())))
    for ax, (name, reach) in zip(axes, reaches.items(), strict=True):
        shade = hops.astype(np.float64) if values is None else values[name]
        low, high = ranges[name]
        picture = influence_picture(rgb, labels, reach, shade, int(target), cmap=colormap,
                                    vmin=low, vmax=high, alpha=alpha, log=values is not None)
        layers = "" if num_layers == 1 else f", {num_layers} layers"
        _image_axes(ax, picture, f"{name}: {int(reach.sum())} of {num} superpixels{layers}")
    for ax, name in zip(axes, reaches, strict=True):
        low, high = ranges[name]
        if values is None:
            _colorbar(fig, ax, colormap, low, high, "hops from the target", integer=True)
        else:
            _colorbar(fig, ax, colormap, low, high if high > low else low + 1.0,
                      f"log10 {value_label}")
    ys, xs = np.nonzero(labels == target)
    depth = "one layer" if num_layers == 1 else f"{num_layers} layers"
    fig.suptitle(f"Which superpixels can change superpixel {int(target)} (outlined, near "
                 f"x={int(xs.mean())}, y={int(ys.mean())}) in {depth}, per update order",
                 fontsize=11)
    if path is not None:
        save_figure(fig, path)
    return fig

