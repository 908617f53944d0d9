"""MD-LSTM scans of a 2-D lattice: levels, wavefront frames and a picture."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from segmentation._checks import check_int
from segmentation.visualize._common import (
    FIGURE_FORMATS,
    _check_output,
    _colorbar,
    _get_cmap,
    _new_figure,
    save_figure,
)
from segmentation.visualize.animation import _with_counter
from segmentation.visualize.colors import colorize

__all__ = ["lattice_levels", "lattice_wavefront_frames", "plot_lattice_wavefront"]

_BACKGROUND = (235, 235, 235)  # unfilled lattice cells


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
    cell = check_int(cell, "'cell'")
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
    dpi = check_int(dpi, "'dpi'")
    if path is not None:
        path = _check_output(path, FIGURE_FORMATS)
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
