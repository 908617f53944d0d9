"""Pictures and animations of the update order of a Graph LSTM.

A :class:`graphlstm.Schedule` assigns every superpixel a *rank* (when the
sequential pass updates it) and a *level* (which parallel step updates it:
superpixels of one level are non-adjacent and run together, SPEC §2). This
module turns both into images:

- :func:`rank_image`, :func:`level_image`: the per-node values painted onto the
  pixels of a superpixel label map; :func:`colorize` maps values to RGB with a
  perceptual colormap; :func:`overlay` blends colours over an image and marks
  the superpixel boundaries.
- :func:`plot_update_order`: one figure with the rank, the level and the
  confidence (or score) of every superpixel; :func:`plot_order_comparison`:
  rank and level for several orders of the same superpixels.
- :func:`level_frames` and :func:`save_level_animation`: an animation that
  fills the superpixels level by level (GIF, or MP4 where a writer exists).
- :func:`lattice_levels`, :func:`lattice_wavefront_frames` and
  :func:`plot_lattice_wavefront`: the same engine on a 2-D lattice, where the
  levels of an MD-LSTM scan are its anti-diagonal wavefronts.
- :func:`levels_vs_superpixels` and :func:`plot_levels_vs_superpixels`: how the
  number of levels (the critical path) grows with the number of superpixels.

Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas:
nothing is shown and no global ``pyplot`` state is touched. Every file is
written atomically (a temporary file renamed over the destination).

Frame layout
------------
Every animation frame is a ``uint8`` array of shape ``(S + H, W, 3)``: a
counter strip of ``S`` rows on top (``S = 0`` with ``counter=False``) that
reads ``"level k / K"``, and the picture in the bottom ``H`` rows. Frame ``k``
for ``k = 0..K`` (``K`` = number of levels) shows exactly the nodes of the
levels ``< k`` filled: frame 0 has nothing filled, frame ``K`` everything, so
there are ``K + 1`` frames and no title frames.
"""

from __future__ import annotations

import importlib.util
import io
import math
import numbers
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from segmentation.images import atomic_path, atomic_write, check_image
from segmentation.rag import check_label_map

__all__ = [
    "LEVEL_ORDER_KINDS",
    "colorize",
    "lattice_levels",
    "lattice_wavefront_frames",
    "level_frames",
    "level_image",
    "levels_vs_superpixels",
    "mp4_writer_available",
    "overlay",
    "plot_lattice_wavefront",
    "plot_levels_vs_superpixels",
    "plot_order_comparison",
    "plot_update_order",
    "rank_image",
    "save_figure",
    "save_level_animation",
]

#: Order kinds of :func:`levels_vs_superpixels`. ``"smooth score"`` is a spatially
#: smooth random field averaged over each superpixel: a stand-in for a model's
#: confidence, which is also spatially smooth, when no trained model is at hand.
LEVEL_ORDER_KINDS = ("smooth score", "random", "raster")

#: Default ``n_segments`` of :func:`levels_vs_superpixels`.
DEFAULT_N_SEGMENTS = (100, 200, 400, 800, 1600, 4000)

_FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
_ANIMATION_FORMATS = (".gif", ".mp4")
_BACKGROUND = (235, 235, 235)  # unfilled lattice cells
_STRIP = (32, 32, 32)  # counter strip
_TEXT = (255, 255, 255)


# --------------------------------------------------------------------------- validation


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _node_values(values, num_nodes: int, name: str, *, integer: bool = False) -> np.ndarray:
    """A 1-D array of ``num_nodes`` finite values (non-negative ints when ``integer``)."""
    if values is None:
        raise TypeError(f"'{name}' must be an array of {num_nodes} values, got None")
    array = _as_numpy(values)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"'{name}' must hold numbers, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != num_nodes:
        raise ValueError(
            f"'{name}' must have one value per superpixel, shape ({num_nodes},), "
            f"got shape {array.shape}"
        )
    if integer:
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"'{name}' must hold integers, got dtype {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"'{name}' must be non-negative, got the minimum {array.min()}")
        return array.astype(np.int64, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"'{name}' must be finite, got NaN or inf")
    return array.astype(np.float64, copy=False)


def _labels(superpixels, shape=None) -> tuple[np.ndarray, int]:
    labels, num = check_label_map(superpixels, name="'superpixels'")
    if shape is not None and labels.shape != tuple(shape):
        raise ValueError(
            f"'superpixels' has shape {labels.shape} but 'image' is {tuple(shape)} "
            "(they must cover the same pixels)"
        )
    return labels, num


def _rgb_uint8(image) -> np.ndarray:
    """``image`` as ``uint8`` ``H×W×3``: grayscale replicated, floats scaled by 255."""
    image = check_image(image, name="'image'")
    if image.dtype != np.uint8:
        image = np.rint(image * 255.0).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"'alpha' must be a number in [0, 1], got {alpha!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"'alpha' must be in [0, 1], got {alpha}")
    return float(alpha)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"'{name}' must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"'{name}' must be a positive int, got {value}")
    return int(value)


def _get_cmap(cmap, name: str = "cmap"):
    import matplotlib

    if isinstance(cmap, matplotlib.colors.Colormap):
        return cmap
    if not isinstance(cmap, str):
        raise TypeError(f"'{name}' must be a colormap name or Colormap, got {type(cmap).__name__}")
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"'{name}' {cmap!r} is not a matplotlib colormap (e.g. 'viridis', 'plasma')"
        ) from None


def _check_schedule(schedule, num_nodes: int):
    from graphlstm.schedule import Schedule

    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"'schedule' must be a graphlstm.Schedule (graphlstm.build_schedule), "
            f"got {type(schedule).__name__}"
        )
    if schedule.num_nodes != num_nodes:
        raise ValueError(
            f"'schedule' has {schedule.num_nodes} nodes but 'superpixels' has {num_nodes} "
            "superpixels (build the schedule on the same superpixel graph)"
        )
    return schedule.to("cpu")


def _check_output(path, formats: Sequence[str], name: str = "path") -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"'{name}' must be a file path, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() not in formats:
        raise ValueError(
            f"'{name}' {str(path)!r} must end in one of {', '.join(formats)}"
        )
    if not path.parent.is_dir():
        raise ValueError(f"folder {str(path.parent)!r} of '{name}' {str(path)!r} does not exist")
    return path


# --------------------------------------------------------------------------- value maps


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


def colorize(values, cmap="viridis", vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """Map values through a colormap to ``uint8`` RGB.

    Parameters
    ----------
    values : array_like
        Finite real values of any shape (e.g. an ``H×W`` :func:`rank_image`).
    cmap : str or matplotlib Colormap, optional
        A perceptual colormap by default (``"viridis"``).
    vmin, vmax : float, optional
        The values mapped to the two ends of the colormap (default: the
        minimum and the maximum of ``values``); values outside are clipped.
        When ``vmin == vmax`` every value maps to the low end.

    Returns
    -------
    ndarray of uint8, ``values.shape + (3,)``
        ``round(255 * cmap((values - vmin) / (vmax - vmin)))``, the alpha
        channel dropped.

    Raises
    ------
    TypeError, ValueError
        If ``values`` is not numeric or holds NaN/inf, ``cmap`` is unknown, or
        ``vmin > vmax``.
    """
    array = _as_numpy(values)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
        or array.dtype == np.bool_
    ):
        raise TypeError(f"'values' must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("'values' must be finite, got NaN or inf")
    colormap = _get_cmap(cmap)
    for name, bound in (("vmin", vmin), ("vmax", vmax)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, numbers.Real)
                                  or not math.isfinite(bound)):
            raise ValueError(f"'{name}' must be a finite number or None, got {bound!r}")
    if vmin is not None:
        low = float(vmin)
    else:
        low = float(array.min()) if array.size else 0.0
    if vmax is not None:
        high = float(vmax)
    else:
        high = float(array.max()) if array.size else low
    if low > high:
        raise ValueError(f"'vmin' ({low:g}) must not exceed 'vmax' ({high:g})")
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    rgba = colormap(np.clip(scaled, 0.0, 1.0))
    return np.rint(rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(image, superpixels, colors, *, alpha: float = 0.6, mask=None,
            boundaries: bool = True, boundary_color=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Blend per-pixel colours over an image and mark the superpixel boundaries.

    Parameters
    ----------
    image : ndarray
        ``H×W`` grayscale (replicated to RGB) or ``H×W×3``; ``uint8`` or float
        in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    colors : ndarray of uint8, ``H×W×3``
        The colour of every pixel (e.g. :func:`colorize` of a
        :func:`rank_image`).
    alpha : float, optional
        Opacity of ``colors``: ``1`` paints solid colours, ``0`` leaves the image.
    mask : ndarray of bool, ``H×W``, optional
        Where to blend (default: everywhere); elsewhere the image is kept.
    boundaries : bool, optional
        Mark the superpixel boundaries with
        :func:`skimage.segmentation.mark_boundaries`.
    boundary_color : tuple of 3 floats, optional
        RGB in ``[0, 1]`` of the boundaries.

    Returns
    -------
    ndarray of uint8, ``H×W×3``
        ``round((1 - alpha) * image + alpha * colors)`` where ``mask``, the
        image elsewhere, boundary pixels in ``boundary_color``.

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs.
    """
    rgb = _rgb_uint8(image)
    labels, _ = _labels(superpixels, rgb.shape[:2])
    colors = _as_numpy(colors)
    if colors.dtype != np.uint8:
        raise TypeError(f"'colors' must be uint8 RGB (see colorize), got dtype {colors.dtype}")
    if colors.shape != rgb.shape:
        raise ValueError(f"'colors' must have shape {rgb.shape}, got {colors.shape}")
    alpha = _check_alpha(alpha)
    blended = np.rint((1.0 - alpha) * rgb + alpha * colors.astype(np.float64)).astype(np.uint8)
    if mask is not None:
        mask = _as_numpy(mask)
        if mask.dtype != np.bool_ or mask.shape != labels.shape:
            raise ValueError(f"'mask' must be a bool array of shape {labels.shape}")
        blended = np.where(mask[:, :, None], blended, rgb)
    if boundaries:
        from skimage.segmentation import mark_boundaries

        color = tuple(float(c) for c in boundary_color)
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"'boundary_color' must be 3 floats in [0, 1], got {boundary_color}")
        marked = mark_boundaries(blended.astype(np.float64) / 255.0, labels, color=color)
        blended = np.rint(marked * 255.0).astype(np.uint8)
    return blended


# --------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colorbar(fig, ax, cmap, vmin: float, vmax: float, label: str, integer: bool = False):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    mappable = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, shrink=0.8, label=label)
    if integer:
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    return bar


def _image_axes(ax, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def save_figure(fig, path) -> Path:
    """Save a figure atomically (temporary file, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or path-like
        Ends in ``.png``, ``.pdf``, ``.svg``, ``.jpg`` or ``.jpeg``; its
        folder must exist.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For another suffix or a missing folder.
    """
    path = _check_output(path, _FIGURE_FORMATS)
    buffer = io.BytesIO()
    fmt = path.suffix.lower().lstrip(".")
    fig.savefig(buffer, format="jpeg" if fmt == "jpg" else fmt)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


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
        path = _check_output(path, _FIGURE_FORMATS)

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
        from segmentation.features import superpixel_centroids

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
        path = _check_output(path, _FIGURE_FORMATS)
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


# --------------------------------------------------------------------------- animations


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _strip_height(width: int) -> int:
    return int(np.clip(width // 16, 10, 18)) + 6


def _with_counter(picture: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    width = picture.shape[1]
    strip_h = _strip_height(width)
    strip = Image.new("RGB", (width, strip_h), _STRIP)
    ImageDraw.Draw(strip).text((3, 2), text, fill=_TEXT, font=_font(strip_h - 6))
    return np.concatenate([np.asarray(strip, dtype=np.uint8), picture], axis=0)


def _level_array(level) -> np.ndarray:
    from graphlstm.schedule import Schedule

    if isinstance(level, Schedule):
        level = level.level
    array = _as_numpy(level)
    if array.ndim != 1:
        raise ValueError(f"'level' must be 1-D (one level per node), got shape {array.shape}")
    return array


def level_frames(image, superpixels, level, *, cmap="plasma", alpha: float = 0.85,
                 gray: bool = True, boundaries: bool = True,
                 counter: bool = True) -> list[np.ndarray]:
    """Frames that fill the superpixels level by level.

    Frame ``k``, ``k = 0..K`` (``K = max(level) + 1``), shows exactly the
    superpixels of levels ``< k`` filled with the colour of their level
    (``cmap`` over ``0..K-1``, blended with ``alpha`` over the background)
    and the others as the background: the image, in gray with ``gray``. Frame
    0 has nothing filled, frame ``K`` everything. That is
    ``K + 1`` frames, no title frame. See the module docstring for the layout
    (a counter strip ``"level k / K"`` above the picture).

    Parameters
    ----------
    image : ndarray
        ``H×W`` or ``H×W×3``, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    level : array_like ``[N]`` of int, or graphlstm.Schedule
        The level of every superpixel (:attr:`graphlstm.Schedule.level`).
    cmap : str or Colormap, optional
    alpha : float, optional
        Opacity of the fill (1 = solid).
    gray : bool, optional
        Show the image in gray (its luminance, rounded) so that the fills
        stand out, and a GIF palette spends its colours on them.
    boundaries : bool, optional
        Mark the superpixel boundaries in white in every frame (the pixels of
        :func:`skimage.segmentation.find_boundaries`, ``mode="outer"``).
    counter : bool, optional
        Put the strip with ``"level k / K"`` above every picture.

    Returns
    -------
    list of ndarray of uint8, each ``(S + H)×W×3``
        ``S`` rows of counter strip (0 without ``counter``), then the picture.

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs.
    """
    rgb = _rgb_uint8(image)
    labels, num = _labels(superpixels, rgb.shape[:2])
    level = _node_values(_level_array(level), num, "level", integer=True)
    colormap = _get_cmap(cmap)
    alpha = _check_alpha(alpha)
    k_total = int(level.max()) + 1
    if not isinstance(gray, bool | np.bool_):
        raise TypeError(f"'gray' must be a bool, got {gray!r}")
    if gray:
        luminance = rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
        rgb = np.repeat(np.rint(luminance).astype(np.uint8)[:, :, None], 3, axis=2)
    colors = colorize(level[labels], colormap, 0, max(k_total - 1, 0))
    filled = overlay(rgb, labels, colors, alpha=alpha, boundaries=False)
    pixel_level = level[labels]
    if boundaries:
        from skimage.segmentation import find_boundaries

        # The same boundary pixels in every frame: mark_boundaries's outer mode.
        edge = find_boundaries(labels, mode="outer")
    frames = []
    for k in range(k_total + 1):
        picture = np.where((pixel_level < k)[:, :, None], filled, rgb)
        if boundaries:
            picture = picture.copy()
            picture[edge] = 255
        frames.append(_with_counter(picture, f"level {k} / {k_total}") if counter else picture)
    return frames


def mp4_writer_available() -> bool:
    """Whether :func:`save_level_animation` can write MP4 here (imageio with ffmpeg)."""
    if importlib.util.find_spec("imageio") is None:
        return False
    return importlib.util.find_spec("imageio_ffmpeg") is not None or shutil.which(
        "ffmpeg") is not None


def _check_frames(frames) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, Sequence) or len(frames) == 0:
        raise ValueError("'frames' must be a non-empty list of H×W×3 uint8 arrays")
    out = []
    for i, frame in enumerate(frames):
        frame = _as_numpy(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"'frames'[{i}] must be an H×W×3 uint8 array, got {frame.dtype} {frame.shape}"
            )
        if frame.shape != _as_numpy(frames[0]).shape:
            raise ValueError(
                f"'frames'[{i}] has shape {frame.shape}, unlike 'frames'[0] "
                f"{_as_numpy(frames[0]).shape}"
            )
        out.append(np.ascontiguousarray(frame))
    return out


def save_level_animation(path, frames, fps: float = 4.0, *, hold_last: float = 1.5,
                         loop: bool = True) -> Path:
    """Write frames as an animated GIF (or MP4), atomically.

    Parameters
    ----------
    path : str or path-like
        ``.gif`` (Pillow, always available) or ``.mp4`` (needs imageio with
        ``imageio-ffmpeg`` or an ``ffmpeg`` binary, see
        :func:`mp4_writer_available`). Its folder must exist.
    frames : sequence of ndarray
        ``H×W×3`` ``uint8`` frames of one shape (e.g. :func:`level_frames`).
        The GIF holds exactly one image per frame, in order.
    fps : float, optional
        Frames per second.
    hold_last : float, optional
        Seconds the last frame stays before the loop restarts (GIF: a longer
        duration of the last frame, not extra frames; MP4: ignored).
    loop : bool, optional
        Loop the GIF forever.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For another suffix, a missing folder, malformed frames, or
        ``fps``/``hold_last`` out of range.
    RuntimeError
        For ``.mp4`` without a writer; nothing is written.
    """
    path = _check_output(path, _ANIMATION_FORMATS)
    frames = _check_frames(frames)
    for name, value, low in (("fps", fps, 0.0), ("hold_last", hold_last, -1.0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value > low):
            raise ValueError(f"'{name}' must be a finite number > {max(low, 0):g}, got {value!r}")
    if path.suffix.lower() == ".mp4":
        return _save_mp4(path, frames, float(fps))

    from PIL import Image

    # One palette for all frames, from the first and the last (together they
    # hold every colour: the image, every level's fill, the counter), without
    # dithering: steady colours and a small, well-compressed file.
    sample = Image.fromarray(np.concatenate([frames[0], frames[-1]], axis=0))
    palette = sample.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE)
              for f in frames]
    step = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    durations = [step] * len(images)
    durations[-1] = max(step, int(round(hold_last * 100.0)) * 10)
    buffer = io.BytesIO()
    options = {"loop": 0} if loop else {}
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, optimize=False, disposal=1, **options)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _save_mp4(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    if not mp4_writer_available():
        raise RuntimeError(
            f"cannot write {str(path)!r}: MP4 needs imageio with ffmpeg "
            "(pip install imageio-ffmpeg); write a .gif instead"
        )
    import imageio.v3 as iio

    # Video encoders want even sizes.
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    stack = np.stack([np.pad(f, pad, mode="edge") for f in frames])
    with atomic_path(path, suffix=".mp4") as tmp:
        iio.imwrite(tmp, stack, extension=".mp4", fps=fps)
    return path


# --------------------------------------------------------------------------- lattices


def _lattice_shape(shape) -> tuple[int, int]:
    from graphlstm.lattice import check_shape

    shape = check_shape(shape, "shape")
    if len(shape) != 2:
        raise ValueError(f"'shape' must be 2-D (rows, columns) for a picture, got {shape}")
    return shape


def _directions(direction, ndim: int = 2) -> tuple[int, ...]:
    from graphlstm.lattice import check_direction

    if isinstance(direction, Sequence) and not isinstance(direction, str):
        if len(direction) == 0:
            raise ValueError("'direction' must not be empty")
        return tuple(check_direction(d, ndim, "direction") for d in direction)
    return (check_direction(direction, ndim, "direction"),)


def lattice_levels(shape, direction: int = 0) -> np.ndarray:
    """The levels of a lattice scan, from :func:`graphlstm.build_schedule`.

    The schedule of :func:`graphlstm.lattice.lattice_graph` in its raster
    order: on a 2-D grid scanned forwards, cell ``(r, c)`` is at level
    ``r + c``, the anti-diagonal wavefront of an MD-LSTM.

    Parameters
    ----------
    shape : sequence of int
        Lattice size, any number of dimensions.
    direction : int, optional
        In ``0..2**D - 1``; bit ``d`` set scans dimension ``d`` backwards.

    Returns
    -------
    ndarray of int64, of shape ``shape``

    Raises
    ------
    TypeError, ValueError
        For a malformed ``shape`` or ``direction``.
    """
    from graphlstm.lattice import lattice_graph
    from graphlstm.schedule import build_schedule

    edge_index, _, order = lattice_graph(shape, direction)
    schedule = build_schedule(edge_index, order.numel(), order=order)
    return schedule.level.numpy().reshape(tuple(int(n) for n in shape))


def _lattice_picture(levels: np.ndarray, k: int, k_total: int, cell: int, colormap,
                     grid: bool) -> np.ndarray:
    colors = colorize(levels, colormap, 0, max(k_total - 1, 0))
    picture = np.where((levels < k)[:, :, None], colors,
                       np.array(_BACKGROUND, dtype=np.uint8))
    picture = np.repeat(np.repeat(picture, cell, axis=0), cell, axis=1)
    if grid and cell >= 3:
        picture[cell - 1::cell, :] = 120
        picture[:, cell - 1::cell] = 120
    return picture


def lattice_wavefront_frames(shape, direction=0, *, cell: int = 16, cmap="plasma",
                             grid: bool = True, counter: bool = True,
                             gap: int = 8) -> list[np.ndarray]:
    """Frames of an MD-LSTM scan of a 2-D lattice, one wavefront (level) at a time.

    The levels come from :func:`lattice_levels` (the Graph LSTM schedule of the
    lattice graph), so the picture is what the engine runs. Frame ``k``,
    ``k = 0..K`` (``K = rows + columns - 1``), shows exactly the cells of
    levels ``< k`` filled with their level's colour and the others light gray;
    ``K + 1`` frames, no title frame. Cell ``(r, c)`` covers pixel rows
    ``S + r*cell .. S + (r+1)*cell - 1`` and the same columns, ``S`` being
    the counter strip (see the module docstring); with ``grid`` the last row
    and column of each cell are a gray grid line.

    Parameters
    ----------
    shape : (int, int)
        Rows and columns of the lattice.
    direction : int or sequence of int, optional
        Scan direction in ``0..3`` (bit 0: rows bottom-up, bit 1: columns
        right to left). Several directions are drawn side by side, ``gap``
        white pixels apart, in the given order (all have ``K`` levels).
    cell : int, optional
        Pixels per cell side.
    cmap : str or Colormap, optional
    grid : bool, optional
    counter : bool, optional
        The ``"level k / K"`` strip above the picture.
    gap : int, optional
        White columns between directions.

    Returns
    -------
    list of ndarray of uint8

    Raises
    ------
    TypeError, ValueError
        For a malformed ``shape``, ``direction``, ``cell`` or ``gap``.
    """
    shape = _lattice_shape(shape)
    directions = _directions(direction)
    cell = _check_positive_int(cell, "cell")
    if isinstance(gap, bool) or not isinstance(gap, numbers.Integral) or gap < 0:
        raise ValueError(f"'gap' must be a non-negative int, got {gap!r}")
    colormap = _get_cmap(cmap)
    levels = [lattice_levels(shape, d) for d in directions]
    k_total = int(levels[0].max()) + 1
    frames = []
    for k in range(k_total + 1):
        parts = []
        for i, lv in enumerate(levels):
            if i:
                parts.append(np.full((shape[0] * cell, gap, 3), 255, dtype=np.uint8))
            parts.append(_lattice_picture(lv, k, k_total, cell, colormap, grid))
        picture = np.concatenate(parts, axis=1)
        frames.append(_with_counter(picture, f"level {k} / {k_total}") if counter else picture)
    return frames


def _direction_name(direction: int) -> str:
    rows = "rows bottom-up" if direction & 1 else "rows top-down"
    cols = "columns right-to-left" if direction & 2 else "columns left-to-right"
    return f"direction {direction}: {rows},\n{cols}"


def plot_lattice_wavefront(shape=(6, 8), directions=None, path=None, *, numbers: bool = True,
                           cmap="plasma", dpi: int = 100):
    """A static picture of MD-LSTM scans of a 2-D lattice, cells coloured by level.

    Cells of one colour are one anti-diagonal wavefront, updated in parallel.
    The starting corner is marked with a circle.

    Parameters
    ----------
    shape : (int, int), optional
        Rows and columns.
    directions : int or sequence of int, optional
        Directions in ``0..3``, one panel each (default: all four).
    path : str or path-like, optional
        Also save the figure there, atomically.
    numbers : bool, optional
        Write the level in each cell (for small lattices).
    cmap : str or Colormap, optional
    dpi : int, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[i].images[0].get_array()`` holds the levels of panel ``i``.

    Raises
    ------
    TypeError, ValueError
        For a malformed ``shape`` or ``directions``.
    """
    shape = _lattice_shape(shape)
    directions = (0, 1, 2, 3) if directions is None else _directions(directions)
    colormap = _get_cmap(cmap)
    dpi = _check_positive_int(dpi, "dpi")
    if path is not None:
        path = _check_output(path, _FIGURE_FORMATS)
    rows, cols = shape
    count = len(directions)
    panel_w = 3.0
    fig = _new_figure(panel_w * count + 0.8, panel_w * rows / cols + 0.9, dpi)
    axes = fig.subplots(1, count, squeeze=False)[0]
    k_total = rows + cols - 1
    show_numbers = numbers and rows * cols <= 400
    for ax, direction in zip(axes, directions, strict=True):
        levels = lattice_levels(shape, direction)
        ax.imshow(levels, cmap=colormap, vmin=0, vmax=max(k_total - 1, 1),
                  interpolation="nearest")
        ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(_direction_name(direction), fontsize=8)
        if show_numbers:
            size = float(np.clip(90.0 / max(rows, cols), 4.0, 9.0))
            for r in range(rows):
                for c in range(cols):
                    value = int(levels[r, c])
                    ax.text(c, r, str(value), ha="center", va="center", fontsize=size,
                            color="white" if value < 0.6 * k_total else "black")
        start = np.argwhere(levels == 0)[0]
        ax.plot(start[1], start[0], "o", markersize=14, markerfacecolor="none",
                markeredgecolor="cyan", markeredgewidth=2)
    _colorbar(fig, list(axes), colormap, 0, max(k_total - 1, 1), "level (wavefront)",
              integer=True)
    fig.suptitle(f"{rows}×{cols} lattice: {rows * cols} cells in {k_total} levels",
                 fontsize=11)
    if path is not None:
        save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------- levels vs N


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
      (:func:`segmentation.orders.smooth_random_field`, ``smooth_sigma``)
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
    from segmentation.features import superpixel_centroids
    from segmentation.orders import (
        random_score,
        raster_score,
        score_from_image,
        smooth_random_field,
    )
    from segmentation.rag import region_adjacency
    from segmentation.superpixels import slic_superpixels

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
    path = _check_output(path, _FIGURE_FORMATS)
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
