"""SLIC superpixels with input validation and contiguous labels."""

from __future__ import annotations

import math
import numbers

import numpy as np
from skimage.segmentation import slic

from segmentation.data.images import check_image

__all__ = ["relabel_contiguous", "slic_superpixels"]


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Map the labels present in a label map onto ``0..N-1``, keeping their order.

    Parameters
    ----------
    labels : ndarray
        Integer array of any shape (a ``torch.Tensor`` is converted).

    Returns
    -------
    relabelled : ndarray of int64
        Same shape; the smallest label present becomes 0, the next 1, and so on.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        If ``labels`` is empty.
    """
    if type(labels).__module__.startswith("torch"):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy array, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.size == 0:
        raise ValueError(f"labels is empty (shape {labels.shape})")
    low, high = int(labels.min()), int(labels.max())
    if high - low <= 4 * labels.size:
        # A lookup table over the label range is O(n), np.unique sorts: O(n log n).
        shifted = (labels.astype(np.int64, copy=False) - low).ravel()
        present = np.bincount(shifted, minlength=high - low + 1) > 0
        lookup = np.cumsum(present, dtype=np.int64) - 1
        return lookup[shifted].reshape(labels.shape)
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.astype(np.int64, copy=False).reshape(labels.shape)


def _check_number(value, name: str, *, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {relation} {minimum:g}, got {value!r}")
    return value


def _check_int(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def slic_superpixels(
    image: np.ndarray,
    n_segments: int = 1000,
    compactness: float = 10.0,
    sigma: float = 1.0,
    *,
    channel_axis: int | None = -1,
    enforce_connectivity: bool = True,
    max_num_iter: int = 10,
) -> np.ndarray:
    """Segment an image into SLIC superpixels with labels ``0..N-1``.

    A thin, validating wrapper of :func:`skimage.segmentation.slic`: colour
    images are clustered in CIELAB, grayscale images on intensity. SLIC may
    return fewer segments than requested (and, after connectivity enforcement,
    labels with gaps); the result is relabelled so that every label in
    ``0..N-1`` is present, in the order of SLIC's labels.

    Parameters
    ----------
    image : ndarray
        ``H×W`` grayscale, ``H×W×3`` RGB or ``H×W×4`` RGBA (alpha is ignored);
        ``uint8``, or floating point in ``[0, 1]``. At least 2 pixels.
    n_segments : int, optional
        Approximate number of superpixels, ``1 <= n_segments <= H*W``.
    compactness : float, optional
        Balance of colour and space proximity (> 0); higher is more square.
    sigma : float, optional
        Width (>= 0) of the Gaussian smoothing applied before segmenting.
    channel_axis : int or None, optional
        Axis of the channels of a 3-D ``image`` (scikit-image convention).
    enforce_connectivity : bool, optional
        Make every superpixel one connected region.
    max_num_iter : int, optional
        Maximum number of k-means iterations (>= 1).

    Returns
    -------
    labels : ndarray of int64, shape (H, W)
        Superpixel index of every pixel, contiguous ``0..N-1``.

    Raises
    ------
    TypeError
        If ``image`` is not a ``uint8`` or floating array, or a parameter has
        the wrong type.
    ValueError
        If ``image`` has the wrong number of dimensions or channels, fewer
        than 2 pixels, or non-finite / out-of-range values, or if
        ``n_segments`` is < 1 or larger than the pixel count, or another
        parameter is out of range.
    """
    image = check_image(image, channel_axis=channel_axis, name="image")
    n_segments = _check_int(n_segments, "n_segments", minimum=1)
    num_pixels = image.shape[0] * image.shape[1]
    if n_segments > num_pixels:
        raise ValueError(
            f"n_segments={n_segments} is larger than the number of pixels "
            f"({image.shape[0]}×{image.shape[1]} = {num_pixels})"
        )
    compactness = _check_number(compactness, "compactness", minimum=0.0, strict=True)
    sigma = _check_number(sigma, "sigma", minimum=0.0, strict=False)
    max_num_iter = _check_int(max_num_iter, "max_num_iter", minimum=1)
    if not isinstance(enforce_connectivity, bool | np.bool_):
        raise TypeError(f"enforce_connectivity must be a bool, got {enforce_connectivity!r}")

    labels = slic(
        image,
        n_segments=n_segments,
        compactness=compactness,
        max_num_iter=max_num_iter,
        sigma=sigma,
        enforce_connectivity=bool(enforce_connectivity),
        start_label=0,
        channel_axis=-1 if image.ndim == 3 else None,
    )
    return relabel_contiguous(labels)
