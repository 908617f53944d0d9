"""Hand-crafted superpixel features: colour, colour spread, position, size.

Every statistic is a per-segment sum over pixels computed with
:func:`numpy.bincount`, so the cost is a few linear passes over the image
whatever the number of superpixels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch
from skimage.color import rgb2lab

from segmentation.images import IGNORE_INDEX, check_image, check_mask
from segmentation.rag import check_label_map

__all__ = [
    "FEATURE_NAMES",
    "majority_labels",
    "superpixel_centroids",
    "superpixel_features",
    "superpixel_features_and_centroids",
]

#: Column names of :func:`superpixel_features`, in order.
FEATURE_NAMES: list[str] = [
    "mean_r",
    "mean_g",
    "mean_b",
    "mean_lab_l",
    "mean_lab_a",
    "mean_lab_b",
    "std_r",
    "std_g",
    "std_b",
    "centroid_x",
    "centroid_y",
    "area",
]


def _segment_sums(flat_labels: np.ndarray, values: np.ndarray, num_segments: int) -> np.ndarray:
    # (P, K) -> (N, K) per-segment sums as one sparse product with the (P, N)
    # one-hot assignment matrix, built directly in CSR form (one entry per row,
    # so no sorting): several times faster than a bincount per column.
    num_pixels = flat_labels.shape[0]
    assignment = scipy.sparse.csr_matrix(
        (np.ones(num_pixels), flat_labels, np.arange(num_pixels + 1)),
        shape=(num_pixels, num_segments),
    )
    return np.asarray(assignment.T @ values)


def _check_same_size(image: np.ndarray, labels: np.ndarray) -> None:
    if image.shape[:2] != labels.shape:
        raise ValueError(
            f"labels has shape {labels.shape} but image is {image.shape[0]}×{image.shape[1]}; "
            "they must have the same height and width"
        )


def superpixel_centroids(labels) -> torch.Tensor:
    """Centroid of every segment, in pixel units, ``x`` (column) then ``y`` (row).

    The same convention as the ``pos`` of :class:`torch_geometric.transforms.ToSLIC`:
    the mean column and mean row index of the segment's pixels.

    Parameters
    ----------
    labels : ndarray or Tensor
        ``H×W`` integer label map with contiguous labels ``0..N-1``.

    Returns
    -------
    pos : FloatTensor, shape (N, 2)

    Raises
    ------
    TypeError, ValueError
        If ``labels`` is not a valid label map.
    """
    labels, num_segments = check_label_map(labels, name="labels")
    height, width = labels.shape
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=num_segments).astype(np.float64)
    rows, cols = np.divmod(np.arange(height * width, dtype=np.int64), width)
    sum_x = np.bincount(flat, weights=cols.astype(np.float64), minlength=num_segments)
    sum_y = np.bincount(flat, weights=rows.astype(np.float64), minlength=num_segments)
    pos = np.stack([sum_x / counts, sum_y / counts], axis=1)
    return torch.from_numpy(pos.astype(np.float32))


def superpixel_features(
    image: np.ndarray, labels, *, channel_axis: int | None = -1
) -> torch.Tensor:
    """Per-superpixel appearance and geometry features.

    Columns (see :data:`FEATURE_NAMES`), all roughly in ``[0, 1]``:

    - ``mean_r, mean_g, mean_b``: mean RGB, in ``[0, 1]``;
    - ``mean_lab_l, mean_lab_a, mean_lab_b``: mean CIELAB
      (:func:`skimage.color.rgb2lab`, D65) scaled as ``L/100``,
      ``(a+128)/255``, ``(b+128)/255``;
    - ``std_r, std_g, std_b``: standard deviation of RGB within the segment;
    - ``centroid_x, centroid_y``: centroid column / ``W`` and row / ``H``;
    - ``area``: number of pixels / ``H*W``.

    Grayscale images are replicated to RGB.

    Parameters
    ----------
    image : ndarray
        ``H×W``, ``H×W×3`` or ``H×W×4`` (alpha ignored); ``uint8`` or floating
        in ``[0, 1]``.
    labels : ndarray or Tensor
        ``H×W`` integer label map with contiguous labels ``0..N-1``.
    channel_axis : int or None, optional
        Axis of the channels of a 3-D ``image``.

    Returns
    -------
    features : FloatTensor, shape (N, len(FEATURE_NAMES))

    Raises
    ------
    TypeError, ValueError
        If ``image`` or ``labels`` is malformed, or their sizes differ.
    """
    features, _ = superpixel_features_and_centroids(image, labels, channel_axis=channel_axis)
    return features


def superpixel_features_and_centroids(
    image: np.ndarray, labels, *, channel_axis: int | None = -1
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`superpixel_features` and :func:`superpixel_centroids` in one pass.

    Parameters
    ----------
    image : ndarray
        As for :func:`superpixel_features`.
    labels : ndarray or Tensor
        ``H×W`` integer label map with contiguous labels ``0..N-1``.
    channel_axis : int or None, optional
        Axis of the channels of a 3-D ``image``.

    Returns
    -------
    features : FloatTensor, shape (N, len(FEATURE_NAMES))
    pos : FloatTensor, shape (N, 2)
        Centroids in pixel units, x then y.

    Raises
    ------
    TypeError, ValueError
        If ``image`` or ``labels`` is malformed, or their sizes differ.
    """
    image = check_image(image, channel_axis=channel_axis, name="image")
    labels, num_segments = check_label_map(labels, name="labels")
    _check_same_size(image, labels)
    height, width = labels.shape
    num_pixels = height * width

    # float32 halves the cost of the Lab conversion; its error (~1e-4 in L*a*b*
    # units) is far below what the features need.
    if image.dtype == np.uint8:
        rgb = image.astype(np.float32) / np.float32(255.0)
    else:
        rgb = image.astype(np.float32, copy=False)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    lab = rgb2lab(rgb)

    flat_labels = labels.ravel()
    values = np.empty((num_pixels, 11), dtype=np.float64)
    values[:, 0:3] = rgb.reshape(num_pixels, 3)
    values[:, 3:6] = lab.reshape(num_pixels, 3)
    np.square(values[:, 0:3], out=values[:, 6:9])
    rows, cols = np.divmod(np.arange(num_pixels, dtype=np.int64), width)
    values[:, 9] = cols
    values[:, 10] = rows
    counts = np.bincount(flat_labels, minlength=num_segments).astype(np.float64)
    means = _segment_sums(flat_labels, values, num_segments) / counts[:, None]

    mean_rgb = means[:, 0:3]
    mean_lab = means[:, 3:6]
    std_rgb = np.sqrt(np.maximum(means[:, 6:9] - mean_rgb * mean_rgb, 0.0))
    lab_scaled = (mean_lab + np.array([0.0, 128.0, 128.0])) / np.array([100.0, 255.0, 255.0])
    pos = means[:, 9:11]
    centroid = pos / np.array([width, height], dtype=np.float64)
    area = (counts / num_pixels)[:, None]
    features = np.concatenate([mean_rgb, lab_scaled, std_rgb, centroid, area], axis=1)
    return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(pos.astype(np.float32))


def majority_labels(
    mask: np.ndarray,
    labels,
    num_classes: int | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Most frequent class of every superpixel (a node target for training).

    Pixels equal to ``ignore_index`` do not vote; a superpixel whose pixels are
    all ignored gets ``ignore_index``. Ties go to the smaller class index.

    Parameters
    ----------
    mask : ndarray
        ``H×W`` integer class mask, values in ``0..num_classes-1`` or
        ``ignore_index``.
    labels : ndarray or Tensor
        ``H×W`` label map with contiguous labels ``0..N-1``.
    num_classes : int, optional
        Number of classes; default: the largest non-ignored class + 1.
    ignore_index : int, optional
        Mask value of unlabelled pixels.

    Returns
    -------
    node_labels : LongTensor, shape (N,)

    Raises
    ------
    TypeError, ValueError
        If ``mask`` or ``labels`` is malformed, their sizes differ, or a mask
        value is ``>= num_classes`` and not ``ignore_index``.
    """
    mask = check_mask(mask, name="mask").astype(np.int64)
    labels, num_segments = check_label_map(labels, name="labels")
    if mask.shape != labels.shape:
        raise ValueError(f"mask has shape {mask.shape} but labels has shape {labels.shape}")
    valid = mask != ignore_index
    observed = int(mask[valid].max()) + 1 if valid.any() else 1
    if num_classes is None:
        num_classes = observed
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    elif observed > num_classes:
        raise ValueError(
            f"mask holds class {observed - 1} but num_classes={num_classes} "
            f"(and it is not ignore_index={ignore_index})"
        )
    votes = np.bincount(
        labels[valid] * num_classes + mask[valid], minlength=num_segments * num_classes
    ).reshape(num_segments, num_classes)
    winner = votes.argmax(axis=1)
    winner[votes.sum(axis=1) == 0] = ignore_index
    return torch.from_numpy(winner.astype(np.int64))
