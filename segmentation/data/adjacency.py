"""Region adjacency graphs of label maps."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_label_map", "region_adjacency"]

# Above this many possible (u, v) keys a dense bincount would waste memory, so
# the boundary pairs are counted with np.unique (a sort) instead.
_DENSE_KEY_LIMIT = 1 << 22


def check_label_map(labels, *, name: str = "labels") -> tuple[np.ndarray, int]:
    """Validate a superpixel label map.

    Parameters
    ----------
    labels : ndarray or Tensor
        ``H×W`` integer array of segment indices.
    name : str, optional
        Name of the argument, used in error messages.

    Returns
    -------
    labels : ndarray of int64, shape (H, W)
    num_segments : int
        ``N``, one more than the largest label.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        If ``labels`` is not 2-D, is empty, has negative labels, or the labels
        are not contiguous (some label in ``0..N-1`` is absent).
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or tensor, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H×W) label map, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{name} is empty (shape {labels.shape})")
    labels = labels.astype(np.int64, copy=False)
    low = int(labels.min())
    if low < 0:
        raise ValueError(f"{name} must be non-negative, got the minimum {low}")
    num_segments = int(labels.max()) + 1
    counts = np.bincount(labels.ravel(), minlength=num_segments)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(
            f"{name} must be contiguous (every label in 0..{num_segments - 1} present); "
            f"{missing.size} labels are missing, e.g. {missing[:5].tolist()} "
            "(use segmentation.data.superpixels.relabel_contiguous)"
        )
    return labels, num_segments


def region_adjacency(labels, connectivity: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Region adjacency graph of a label map, with shared boundary lengths.

    Two segments are adjacent when a pixel of one touches a pixel of the other
    (4-connectivity: horizontally or vertically; 8-connectivity: also
    diagonally). The edge attribute counts the touching pixel pairs, i.e. the
    length of the shared boundary in pixel edges (with 8-connectivity the
    diagonal pairs count too).

    Parameters
    ----------
    labels : ndarray or Tensor
        ``H×W`` integer label map with contiguous labels ``0..N-1``.
    connectivity : {4, 8}, optional
        Pixel neighbourhood.

    Returns
    -------
    edge_index : LongTensor, shape (2, E)
        Both directions of every adjacency, no self-loops, no duplicates,
        sorted by source then target (coalesced, as
        :func:`torch_geometric.utils.coalesce`).
    boundary_length : FloatTensor, shape (E,)
        Number of touching pixel pairs of each edge (the same both ways).

    Raises
    ------
    TypeError, ValueError
        If ``labels`` is not a valid label map (see :func:`check_label_map`)
        or ``connectivity`` is not 4 or 8.
    """
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    labels, num_segments = check_label_map(labels, name="labels")

    shifts = [(labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])]
    if connectivity == 8:
        shifts += [(labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1])]
    sources, targets = [], []
    for first, second in shifts:
        differ = first != second
        sources.append(first[differ])
        targets.append(second[differ])
    # Each touching pixel pair is one unordered pair; list it in both directions.
    src = np.concatenate(sources + targets)
    dst = np.concatenate(targets + sources)
    keys = src * num_segments + dst

    if num_segments * num_segments <= _DENSE_KEY_LIMIT:
        counts = np.bincount(keys, minlength=num_segments * num_segments)
        unique_keys = np.flatnonzero(counts)
        lengths = counts[unique_keys]
    else:
        unique_keys, lengths = np.unique(keys, return_counts=True)
    # Keys are row-major (source, target), so increasing keys are PyG's coalesced order.
    edge_index = np.stack([unique_keys // num_segments, unique_keys % num_segments])
    return (
        torch.from_numpy(edge_index.astype(np.int64, copy=False)),
        torch.from_numpy(lengths.astype(np.float32)),
    )
