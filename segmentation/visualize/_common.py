"""Checks and figure helpers shared by the picture modules (private)."""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segmentation.data.adjacency import check_label_map
from segmentation.data.images import atomic_write, check_image

FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


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
    path = _check_output(path, FIGURE_FORMATS)
    buffer = io.BytesIO()
    fmt = path.suffix.lower().lstrip(".")
    fig.savefig(buffer, format="jpeg" if fmt == "jpg" else fmt)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
