"""Hand-crafted superpixel features: colour, colour spread, position, size; and
edge features of region adjacency graphs (boundary length, colour difference,
centroid distance) with a recipe that turns them into edge weights.

Every statistic is a per-segment sum over pixels computed with
:func:`numpy.bincount`, so the cost is a few linear passes over the image
whatever the number of superpixels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch
from skimage.color import rgb2lab

from segmentation._checks import check_int
from segmentation.data.adjacency import _region_adjacency, check_label_map
from segmentation.data.images import IGNORE_INDEX, check_image, check_mask

__all__ = [
    "EDGE_FEATURE_NAMES",
    "FEATURE_NAMES",
    "edge_features",
    "edge_weight_from_features",
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

#: Column names of :func:`edge_features`, in order.
EDGE_FEATURE_NAMES: list[str] = [
    "boundary_length",
    "colour_difference",
    "centroid_distance",
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
    return _centroids(labels, num_segments)


def _centroids(labels: np.ndarray, num_segments: int) -> torch.Tensor:
    # superpixel_centroids of a checked label map.
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
    return _features_and_centroids(image, labels, num_segments)


def _features_and_centroids(image: np.ndarray, labels: np.ndarray,
                            num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    # superpixel_features_and_centroids of a checked image and label map of one size.
    height, width = labels.shape
    num_pixels = height * width
    means, counts = _segment_means(image, labels, num_segments)

    mean_rgb = means[:, 0:3]
    mean_lab = means[:, 3:6]
    std_rgb = np.sqrt(np.maximum(means[:, 6:9] - mean_rgb * mean_rgb, 0.0))
    lab_scaled = (mean_lab + np.array([0.0, 128.0, 128.0])) / np.array([100.0, 255.0, 255.0])
    pos = means[:, 9:11]
    centroid = pos / np.array([width, height], dtype=np.float64)
    area = (counts / num_pixels)[:, None]
    features = np.concatenate([mean_rgb, lab_scaled, std_rgb, centroid, area], axis=1)
    return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(pos.astype(np.float32))


def _segment_means(
    image: np.ndarray, labels: np.ndarray, num_segments: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment means ``[N, 11]`` of RGB, CIELAB, RGB squared, column and row,
    and the pixel count of every segment (checked, channels-last inputs)."""
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
    return _segment_sums(flat_labels, values, num_segments) / counts[:, None], counts


def edge_features(
    image: np.ndarray,
    labels,
    edge_index,
    *,
    connectivity: int = 4,
    channel_axis: int | None = -1,
) -> torch.Tensor:
    r"""Features of the edges of a superpixel graph, from the image.

    Columns (see :data:`EDGE_FEATURE_NAMES`), each the same for ``u -> v`` and
    ``v -> u``:

    - ``boundary_length``: the number of touching pixel pairs of the two
      segments (the length of their shared boundary in pixel edges, as
      :func:`segmentation.data.adjacency.region_adjacency` counts it with the same
      ``connectivity``); 0 for segments that do not touch;
    - ``colour_difference``: the CIE76 colour difference
      :math:`\Delta E^*_{ab}` (Euclidean distance in CIELAB, D65, ``L*`` in
      ``[0, 100]``) between the mean colours of the two segments;
    - ``centroid_distance``: the distance between their centroids, in pixels.

    All are computed for all edges at once from per-segment sums over pixels
    (no loop over edges or segments), so the graph may be any ``edge_index``
    on the segments, e.g. one rebuilt from a transformed label map.

    Parameters
    ----------
    image : ndarray
        ``H×W``, ``H×W×3`` or ``H×W×4`` (alpha ignored); ``uint8`` or floating
        in ``[0, 1]``. Grayscale is replicated to RGB.
    labels : ndarray or Tensor
        ``H×W`` integer label map with contiguous labels ``0..N-1``.
    edge_index : LongTensor or ndarray, shape (2, E)
        Edges ``edge_index[0] -> edge_index[1]`` between segments.
    connectivity : {4, 8}, optional
        Pixel neighbourhood of the boundary length.
    channel_axis : int or None, optional
        Axis of the channels of a 3-D ``image``.

    Returns
    -------
    edge_attr : FloatTensor, shape (E, len(EDGE_FEATURE_NAMES))

    Raises
    ------
    TypeError, ValueError
        If ``image``, ``labels`` or ``edge_index`` is malformed, the sizes of
        ``image`` and ``labels`` differ, or ``edge_index`` names a segment
        outside ``0..N-1``.

    See Also
    --------
    edge_weight_from_features : edge weights for :class:`graphlstm.GraphLSTM`.
    """
    image = check_image(image, channel_axis=channel_axis, name="image")
    labels, num_segments = check_label_map(labels, name="labels")
    _check_same_size(image, labels)
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return _edge_features(image, labels, num_segments, edge_index, connectivity)


def _edge_features(image: np.ndarray, labels: np.ndarray, num_segments: int, edge_index,
                   connectivity: int, touching=None) -> torch.Tensor:
    # edge_features of a checked image and label map of one size; ``touching`` is
    # their region_adjacency (computed if not given).
    src, dst = _check_segment_edges(edge_index, num_segments)
    means, _ = _segment_means(image, labels, num_segments)

    # Boundary lengths: look each edge up among the touching pairs of the map,
    # whose keys u * N + v come sorted (coalesced) from region_adjacency.
    if touching is None:
        touching = _region_adjacency(labels, num_segments, connectivity)
    touching, lengths = touching
    touching_keys = (touching[0] * num_segments + touching[1]).numpy()
    keys = src * num_segments + dst
    at = np.searchsorted(touching_keys, keys)
    found = at < touching_keys.size
    found[found] = touching_keys[at[found]] == keys[found]
    boundary = np.zeros(keys.size)
    boundary[found] = lengths.numpy()[at[found]]

    mean_lab, pos = means[:, 3:6], means[:, 9:11]
    colour = np.linalg.norm(mean_lab[src] - mean_lab[dst], axis=1)
    distance = np.linalg.norm(pos[src] - pos[dst], axis=1)
    features = np.stack([boundary, colour, distance], axis=1)
    return torch.from_numpy(features.astype(np.float32))


def edge_weight_from_features(
    edge_attr: torch.Tensor,
    edge_index: torch.Tensor,
    num_nodes: int | None = None,
    *,
    colour_sigma: float = 10.0,
) -> torch.Tensor:
    r"""Edge weights from :func:`edge_features`: similar colour and a long shared
    boundary make a strong edge.

    .. math::
        w_{ji} = \exp(-\Delta E_{ji} / \sigma) \,
                 \frac{b_{ji}}{\sum_{k \to i} b_{ki}}

    with :math:`\Delta E` the ``colour_difference`` and :math:`b` the
    ``boundary_length`` of each edge: the boundary length is normalised to
    the fraction of the target's boundary that it shares with the source.
    Weights lie in ``[0, 1]``; a target without boundary (no in-edges that
    touch it) gets 0 on every in-edge. :class:`graphlstm.GraphLSTM` takes
    weighted means, which do not change when all weights into one node are
    scaled alike, so the normalisation matters only to layers that sum.

    Parameters
    ----------
    edge_attr : Tensor, shape (E, len(EDGE_FEATURE_NAMES))
        The output of :func:`edge_features` (or
        ``SuperpixelGraph(edge_features=True)``'s ``edge_attr``).
    edge_index : LongTensor, shape (2, E)
        Edges ``edge_index[0] -> edge_index[1]``.
    num_nodes : int, optional
        Number of nodes (default: ``edge_index.max() + 1``).
    colour_sigma : float, optional
        :math:`\sigma` in ``Delta E`` units (about 2.3 is a just noticeable
        difference; 10 halves the weight of an edge every 6.9 units).

    Returns
    -------
    edge_weight : FloatTensor, shape (E,)

    Examples
    --------
    >>> from skimage import data
    >>> from graphlstm import GraphLSTM
    >>> from segmentation import SuperpixelGraph
    >>> graph = SuperpixelGraph(n_segments=100, edge_features=True)(data.astronaut())
    >>> graph.edge_weight = edge_weight_from_features(graph.edge_attr, graph.edge_index)
    >>> bool((graph.edge_weight >= 0).all())
    True
    >>> out, _ = GraphLSTM(-1, 64)(graph.x, graph.edge_index, graph.edge_weight)
    >>> out.shape == (graph.num_nodes, 64)
    True
    """
    if not isinstance(edge_attr, torch.Tensor) or not edge_attr.is_floating_point():
        raise TypeError(f"edge_attr must be a floating point tensor, got {edge_attr!r:.60}")
    if edge_attr.dim() != 2 or edge_attr.size(1) != len(EDGE_FEATURE_NAMES):
        raise ValueError(
            f"edge_attr must have shape [E, {len(EDGE_FEATURE_NAMES)}] (the columns "
            f"{', '.join(EDGE_FEATURE_NAMES)}), got {list(edge_attr.shape)}"
        )
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    src, dst = _check_segment_edges(edge_index, num_nodes)
    if edge_attr.size(0) != src.size:
        raise ValueError(
            f"edge_attr has {edge_attr.size(0)} rows but edge_index has {src.size} edges"
        )
    if isinstance(colour_sigma, bool) or not isinstance(colour_sigma, int | float) or not (
        np.isfinite(colour_sigma) and colour_sigma > 0
    ):
        raise ValueError(f"colour_sigma must be a positive number, got {colour_sigma!r}")
    boundary = edge_attr[:, EDGE_FEATURE_NAMES.index("boundary_length")]
    colour = edge_attr[:, EDGE_FEATURE_NAMES.index("colour_difference")]
    target = torch.from_numpy(dst).to(edge_attr.device)
    total = boundary.new_zeros(num_nodes).index_add_(0, target, boundary)[target]
    share = torch.where(total > 0, boundary / total.clamp(min=torch.finfo(total.dtype).tiny), 0)
    return torch.exp(-colour / colour_sigma) * share


def _check_segment_edges(edge_index, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """``edge_index`` as two int64 arrays, checked against ``num_segments``."""
    if isinstance(edge_index, torch.Tensor):
        edge_index = edge_index.detach().cpu().numpy()
    if not isinstance(edge_index, np.ndarray) or not np.issubdtype(edge_index.dtype,
                                                                  np.integer):
        raise TypeError(f"edge_index must be an integer tensor or array, got {edge_index!r:.60}")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")
    edge_index = edge_index.astype(np.int64, copy=False)
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= num_segments):
        raise ValueError(
            f"edge_index holds segments in [{edge_index.min()}, {edge_index.max()}], "
            f"outside 0..{num_segments - 1}"
        )
    return edge_index[0], edge_index[1]


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
    elif check_int(num_classes, "num_classes") < observed:
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
