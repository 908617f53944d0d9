"""Region adjacency graphs of label maps."""

from __future__ import annotations

import numpy as np
import torch

from segmentation.data.images import _integer_map

__all__ = ["check_label_map", "hops_from", "region_adjacency"]

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
    labels = _integer_map(labels, name).astype(np.int64, copy=False)
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
    return _region_adjacency(labels, num_segments, connectivity)


def _region_adjacency(labels: np.ndarray, num_segments: int,
                      connectivity: int) -> tuple[torch.Tensor, torch.Tensor]:
    # region_adjacency on a checked label map (check_label_map's output).
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


def hops_from(edge_index, num_nodes: int, sources=None, *, max_hops: int | None = None
              ) -> np.ndarray:
    """Hop distances from ``sources`` to every node, edges taken in either direction.

    A breadth-first search from all sources at once: each hop visits only the
    edges of the nodes reached by the hop before.

    Parameters
    ----------
    edge_index : Tensor or ndarray, shape (2, E)
    num_nodes : int
    sources : int or sequence of int, optional
        Default: every node (all pairs).
    max_hops : int, optional
        Stop after this many hops.

    Returns
    -------
    ndarray of int64
        ``[S, N]`` (``[N]`` for one ``int`` source): the number of hops, ``-1``
        where a node is unreachable (or farther than ``max_hops``).
    """
    import scipy.sparse

    edges = np.asarray(edge_index.cpu() if torch.is_tensor(edge_index) else edge_index,
                       dtype=np.int64).reshape(2, -1)
    ones = np.ones(edges.shape[1], dtype=np.float32)
    adjacency = scipy.sparse.csr_matrix((ones, (edges[0], edges[1])),
                                        shape=(num_nodes, num_nodes))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
    one_source = np.ndim(sources) == 0 and sources is not None
    starts = np.arange(num_nodes) if sources is None else np.atleast_1d(
        np.asarray(sources, dtype=np.int64))
    rows = np.arange(starts.size)
    distance = np.full((starts.size, num_nodes), -1, dtype=np.int64)
    distance[rows, starts] = 0
    hop = 0
    while rows.size and (max_hops is None or hop < max_hops):
        hop += 1
        frontier = scipy.sparse.csr_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, starts)),
            shape=(distance.shape[0], num_nodes))
        reached = (frontier @ adjacency).tocoo()
        new = distance[reached.row, reached.col] < 0
        rows, starts = reached.row[new], reached.col[new]
        distance[rows, starts] = hop
    return distance[0] if one_source else distance
