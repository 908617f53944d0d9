"""Update orders for superpixel graphs, as per-node scores (higher = updated earlier).

Every function returns a score per superpixel; :func:`graphlstm.build_schedule`
turns scores into an order (ties by the smaller index). The kinds:

- ``confidence``: the model's confidence per superpixel (see
  :mod:`segmentation.models.segmenter`), the order of Liang et al. 2016;
- ``reverse-confidence``: the same, least confident first (a control: it
  sends information from uncertain superpixels to confident ones);
- ``random``: a random permutation;
- ``raster``: superpixels by their centroid, top row first, left to right;
- a score image: any ``H×W`` map averaged over each superpixel
  (:func:`score_from_image`), e.g. :func:`smooth_random_field`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

ORDER_KINDS = ("confidence", "reverse-confidence", "random", "raster")

__all__ = [
    "ORDER_KINDS",
    "random_score",
    "raster_score",
    "score_from_image",
    "smooth_random_field",
]


def _label_tensor(superpixels) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(superpixels) if not torch.is_tensor(superpixels)
                             else superpixels)
    if labels.dim() == 3 and labels.size(0) == 1:
        labels = labels[0]
    if labels.dim() != 2:
        raise ValueError(
            f"'superpixels' must be an H×W label map, got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"'superpixels' must hold integer labels, got {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("'superpixels' must hold labels 0..N-1, got negative labels")
    return labels.long()


def score_from_image(score_image, superpixels, num_nodes: int | None = None) -> torch.Tensor:
    """Mean of ``score_image`` over each superpixel.

    Parameters
    ----------
    score_image : array_like ``H×W``
        Finite real values, e.g. a confidence map.
    superpixels : array_like ``H×W`` of int
        Labels ``0..N-1``.
    num_nodes : int, optional
        ``N`` (default: max label + 1).

    Returns
    -------
    score : float64 Tensor ``[N]``
    """
    labels = _label_tensor(superpixels)
    values = torch.as_tensor(np.asarray(score_image, dtype=np.float64)
                             if not torch.is_tensor(score_image) else score_image).double()
    if values.shape != labels.shape:
        raise ValueError(
            f"'score_image' has shape {tuple(values.shape)} but 'superpixels' has "
            f"shape {tuple(labels.shape)}"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError("'score_image' must be finite, got NaN or inf")
    n = int(labels.max()) + 1 if num_nodes is None else int(num_nodes)
    flat = labels.reshape(-1)
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, flat, values.reshape(-1))
    count = torch.bincount(flat, minlength=n).clamp(min=1)
    return total / count


def raster_score(pos: torch.Tensor, width: float) -> torch.Tensor:
    """Scores for the raster order of centroids ``pos`` (``[N, 2]``, x then y).

    Rows of superpixels are formed by rounding ``y``; the top row comes first,
    left to right within a row.
    """
    if not torch.is_tensor(pos) or pos.dim() != 2 or pos.size(1) != 2:
        raise ValueError("'pos' must be an [N, 2] tensor of centroids (x, y)")
    x, y = pos[:, 0].double(), pos[:, 1].double()
    return -(torch.round(y) * (float(width) + 1.0) + x)


def random_score(num_nodes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scores of a uniformly random order."""
    return torch.randperm(num_nodes, generator=generator).double()


def smooth_random_field(shape, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """A spatially smooth random field in ``[0, 1]``: Gaussian-filtered white noise.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``.
    sigma : float
        Smoothing scale as a fraction of ``max(H, W)``.
    seed : int
        Seed of the noise.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"'shape' must be (H, W) with positive sizes, got {shape}")
    if not sigma > 0:
        raise ValueError(f"'sigma' must be positive, got {sigma}")
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma * max(shape),
                                    mode="reflect")
    field -= field.min()
    peak = field.max()
    return field / peak if peak > 0 else field
