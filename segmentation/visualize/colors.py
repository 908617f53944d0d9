"""Values to colours, and colours blended over an image with superpixel boundaries."""

from __future__ import annotations

import math
import numbers

import numpy as np

from segmentation.visualize._common import _as_numpy, _check_alpha, _get_cmap, _labels, _rgb_uint8

__all__ = ["colorize", "overlay"]


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
