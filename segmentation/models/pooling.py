"""Differentiable pooling of pixel features to superpixel nodes, and back.

A batch of ``B`` images with superpixel label maps ``[B, H, W]`` (labels
``0..N_b-1`` per image) corresponds to a PyG ``Batch`` of ``B`` graphs: the
nodes of image ``b`` are ``offset_b .. offset_b + N_b - 1`` with
``offset_b = N_0 + ... + N_{b-1}``. :func:`pool` averages the pixel features of
every superpixel into its node; :func:`unpool` paints every pixel with the
value of its node. Both are a single scatter/gather over all images at once,
differentiable, and run on the device of their inputs.

Pixels labelled :data:`PAD_LABEL` (``-1``) are padding (images of different
sizes padded to one batch, see :func:`segmentation.data.loading.pad_collate`): they
belong to no node, :func:`pool` skips them and :func:`unpool` paints them
with zeros.

:func:`soft_unpool` is the boundary-aware way back: a pixel near the edge of
its superpixel takes a softmax-weighted mix of its own node and the nodes of
the superpixels a short step away, weighted by how well its own features match
each node (a learnt dot product), so that the pixels of a superpixel that
straddles two regions need not all carry the same node value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["PAD_LABEL", "SOFT_UNPOOL_STEPS", "pool", "soft_unpool", "unpool"]

#: Superpixel label of padding pixels: they belong to no node.
PAD_LABEL = -1

#: Where :func:`soft_unpool` looks for candidate nodes, in units of its radius
#: ``(rows, columns)``: the pixel itself and one step up, down, left and right.
SOFT_UNPOOL_STEPS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def _check_superpixels(superpixels: torch.Tensor, name: str = "superpixels") -> torch.Tensor:
    if not isinstance(superpixels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(superpixels).__name__}")
    if (
        superpixels.dtype.is_floating_point
        or superpixels.dtype.is_complex
        or (superpixels.dtype == torch.bool)
    ):
        raise TypeError(f"{name} must have an integer dtype (int64), got {superpixels.dtype}")
    if superpixels.dim() not in (2, 3):
        raise ValueError(
            f"{name} must have shape [B, H, W] or [H, W], got {tuple(superpixels.shape)}"
        )
    if superpixels.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(superpixels.shape)})")
    return superpixels.long()


def _node_offsets(
    superpixels: torch.Tensor, num_nodes: torch.Tensor | Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
    """Validate labels against ``num_nodes``.

    Returns (counts [B], offsets [B], total, whether some pixel is padding).
    """
    batch_size = superpixels.shape[0]
    device = superpixels.device
    minimum = int(superpixels.min())
    if minimum < PAD_LABEL:
        raise ValueError(
            f"superpixels must be non-negative (or PAD_LABEL = {PAD_LABEL} for padding), "
            f"got the minimum {minimum}"
        )
    max_label = superpixels.reshape(batch_size, -1).amax(dim=1)
    if num_nodes is None:
        counts = max_label + 1
    else:
        counts = torch.as_tensor(num_nodes, device=device)
        if counts.dtype.is_floating_point or counts.dtype == torch.bool:
            raise TypeError(f"num_nodes must hold integers, got dtype {counts.dtype}")
        counts = counts.long().reshape(-1)
        if counts.numel() != batch_size:
            raise ValueError(
                f"num_nodes must have one count per image ({batch_size}), got {counts.numel()}"
            )
        too_large = max_label >= counts
        if bool(too_large.any()):
            b = int(torch.nonzero(too_large)[0])
            raise ValueError(
                f"superpixels of image {b} has label {int(max_label[b])} but "
                f"num_nodes[{b}] = {int(counts[b])}; labels must be < num_nodes"
            )
    offsets = torch.cumsum(counts, dim=0) - counts
    return counts, offsets, int(counts.sum()), minimum == PAD_LABEL


def _global_index(
    superpixels: torch.Tensor, offsets: torch.Tensor, total: int, padded: bool
) -> torch.Tensor:
    # Shift every image's labels by its node offset: one flat index for the batch.
    index = (superpixels + offsets.view(-1, 1, 1)).reshape(-1)
    if padded:
        # Padding goes to one extra row ``total`` that the callers drop (pool) or
        # fill with zeros (unpool): no boolean selection, no host synchronisation.
        index = torch.where(superpixels.reshape(-1) == PAD_LABEL, total, index)
    return index


def _node_index_of_pixels(
    superpixels: torch.Tensor, num_nodes, num_rows: int
) -> tuple[torch.Tensor, int, bool]:
    """The flat node index of every pixel for unpooling ``num_rows`` node values
    (padding: ``total``), the number of nodes ``total`` and whether there is padding."""
    _, offsets, total, padded = _node_offsets(superpixels, num_nodes)
    if num_rows != total:
        raise ValueError(
            f"node_values has {num_rows} rows but the superpixels define "
            f"{total} nodes (sum of num_nodes)"
        )
    return _global_index(superpixels, offsets, total, padded), total, padded


def pool(
    features: torch.Tensor,
    superpixels: torch.Tensor,
    num_nodes: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Average pixel features over every superpixel.

    Parameters
    ----------
    features : Tensor, shape (B, C, H, W)
        Floating-point pixel features.
    superpixels : LongTensor, shape (B, H, W) or (H, W)
        Label map of every image, labels ``0..N_b-1`` per image, or
        :data:`PAD_LABEL` for padding pixels (skipped); a single ``(H, W)``
        map is shared by all ``B`` images.
    num_nodes : Tensor or sequence of int, shape (B,), optional
        Number of nodes ``N_b`` of every image; default: largest label + 1.
        Nodes without pixels get zeros.

    Returns
    -------
    node_features : Tensor, shape (sum_b N_b, C)
        Row ``offset_b + k`` is the mean of ``features[b]`` over the pixels of
        superpixel ``k`` of image ``b`` (PyG ``Batch`` node order); padding
        pixels contribute to no row.

    Raises
    ------
    TypeError
        If ``features`` is not a floating tensor or ``superpixels`` not an
        integer tensor.
    ValueError
        If the shapes or devices disagree, a label is negative (other than
        :data:`PAD_LABEL`), or a label is ``>= num_nodes``.
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"features must have a floating dtype, got {features.dtype}")
    if features.dim() != 4:
        raise ValueError(f"features must have shape [B, C, H, W], got {tuple(features.shape)}")
    superpixels = _check_superpixels(superpixels)
    batch_size, channels, height, width = features.shape
    if superpixels.dim() == 2:
        superpixels = superpixels.unsqueeze(0).expand(batch_size, -1, -1)
    if tuple(superpixels.shape) != (batch_size, height, width):
        raise ValueError(
            f"superpixels has shape {tuple(superpixels.shape)} but features has shape "
            f"{tuple(features.shape)}; expected superpixels of shape "
            f"[{batch_size}, {height}, {width}] (resize the features to the label map first)"
        )
    if superpixels.device != features.device:
        raise ValueError(
            f"superpixels is on {superpixels.device} but features is on {features.device}"
        )
    _, offsets, total, padded = _node_offsets(superpixels, num_nodes)
    index = _global_index(superpixels, offsets, total, padded)
    rows = total + int(padded)
    pixels = features.permute(0, 2, 3, 1).reshape(-1, channels)
    sums = features.new_zeros(rows, channels).index_add(0, index, pixels)[:total]
    counts = torch.bincount(index, minlength=rows)[:total].clamp_(min=1).to(features.dtype)
    return sums / counts.unsqueeze(1)


def unpool(
    node_values: torch.Tensor,
    superpixels: torch.Tensor,
    num_nodes: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Paint every pixel with the value of its superpixel node.

    Parameters
    ----------
    node_values : Tensor, shape (sum_b N_b, C)
        One row per node, in PyG ``Batch`` order (see :func:`pool`).
    superpixels : LongTensor, shape (B, H, W) or (H, W)
        Label map of every image, labels ``0..N_b-1`` per image, or
        :data:`PAD_LABEL` for padding pixels (painted with zeros). A single
        ``(H, W)`` map with ``N`` nodes is shared by ``B`` images, ``B`` taken
        from ``num_nodes`` or else from ``node_values.shape[0] / N``.
    num_nodes : Tensor or sequence of int, shape (B,), optional
        Number of nodes ``N_b`` of every image; default: largest label + 1.

    Returns
    -------
    pixel_values : Tensor, shape (B, C, H, W)
        Contiguous; ``pixel_values[b, :, y, x] = node_values[offset_b + superpixels[b, y, x]]``,
        zeros where ``superpixels[b, y, x]`` is :data:`PAD_LABEL`.

    Raises
    ------
    TypeError
        If ``node_values`` or ``superpixels`` is not a tensor of the right kind.
    ValueError
        If the number of rows of ``node_values`` is not ``sum_b N_b``, shapes or
        devices disagree, or a label is negative (other than :data:`PAD_LABEL`)
        or ``>= num_nodes``.
    """
    if not isinstance(node_values, torch.Tensor):
        raise TypeError(f"node_values must be a torch.Tensor, got {type(node_values).__name__}")
    if node_values.dim() != 2:
        raise ValueError(
            f"node_values must have shape [num_nodes, C], got {tuple(node_values.shape)}"
        )
    superpixels = _check_superpixels(superpixels)
    if superpixels.device != node_values.device:
        raise ValueError(
            f"superpixels is on {superpixels.device} but node_values is on {node_values.device}"
        )
    if superpixels.dim() == 2:
        if num_nodes is not None:
            batch_size = torch.as_tensor(num_nodes).numel()
        else:
            per_image = int(superpixels.max()) + 1
            if per_image == 0:
                raise ValueError(
                    "the shared [H, W] superpixels map is all padding (no node); "
                    "pass num_nodes to give the number of images"
                )
            batch_size, remainder = divmod(node_values.shape[0], per_image)
            if remainder or batch_size == 0:
                raise ValueError(
                    f"node_values has {node_values.shape[0]} rows, not a positive multiple of "
                    f"the {per_image} nodes of the shared [H, W] superpixels map"
                )
        superpixels = superpixels.unsqueeze(0).expand(batch_size, -1, -1)
    batch_size, height, width = superpixels.shape
    index, total, padded = _node_index_of_pixels(superpixels, num_nodes, node_values.shape[0])
    if padded:
        node_values = torch.cat([node_values, node_values.new_zeros(1, node_values.shape[1])])
    pixels = node_values.index_select(0, index)
    channels = node_values.shape[1]
    return pixels.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()


def soft_unpool(
    node_values: torch.Tensor,
    node_keys: torch.Tensor,
    pixel_queries: torch.Tensor,
    superpixels: torch.Tensor,
    num_nodes: torch.Tensor | Sequence[int] | None = None,
    radius: int | None = None,
) -> torch.Tensor:
    r"""Paint every pixel with an attention-weighted mix of its node and the nodes nearby.

    Every pixel :math:`p` has five candidate nodes: the superpixels found at
    :math:`p` and at the four points ``radius`` pixels above, below, left and
    right of it (:data:`SOFT_UNPOOL_STEPS`, clamped to the image). Its value is

    .. math::

        \operatorname{out}_p = \sum_{k=1}^{5} a_{pk}\, v_{c_k(p)}, \qquad
        a_{pk} = \operatorname{softmax}_k \frac{q_p^\top u_{c_k(p)}}{\sqrt{D}},

    with :math:`q_p` the pixel's query, :math:`u_c` and :math:`v_c` the key and
    value of node :math:`c`. A node found at several of the five points counts
    once per point, so a pixel leans towards its own superpixel; a pixel whose
    five points all lie in its own superpixel gets exactly its node's value, as
    with :func:`unpool`. Candidates in padding are skipped; padding pixels get
    zeros.

    Parameters
    ----------
    node_values : Tensor, shape (sum_b N_b, C)
        The value of every node, in PyG ``Batch`` order (see :func:`pool`).
    node_keys : Tensor, shape (sum_b N_b, D)
        The key of every node.
    pixel_queries : Tensor, shape (B, D, H, W)
        The query of every pixel.
    superpixels : LongTensor, shape (B, H, W)
        Label map of every image, as for :func:`unpool`.
    num_nodes : Tensor or sequence of int, shape (B,), optional
        Number of nodes ``N_b`` of every image; default: largest label + 1.
    radius : int, optional
        Distance in pixels of the four outer candidate points. Default: half
        the mean spacing of the superpixels,
        :math:`\max(1, \operatorname{round}(\tfrac12 \sqrt{BHW / \sum_b N_b}))`.

    Returns
    -------
    pixel_values : Tensor, shape (B, C, H, W)

    Raises
    ------
    TypeError
        If an argument is not a tensor of the right kind, or the floating
        dtypes of ``node_values``, ``node_keys`` and ``pixel_queries`` differ.
    ValueError
        If shapes or devices disagree, a label is out of range (see
        :func:`unpool`), or ``radius`` is not a positive int.
    """
    for name, value, dims in (("node_values", node_values, 2), ("node_keys", node_keys, 2),
                              ("pixel_queries", pixel_queries, 4)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
        if value.dim() != dims:
            shape = "[num_nodes, C]" if dims == 2 else "[B, D, H, W]"
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if not node_values.dtype == node_keys.dtype == pixel_queries.dtype:
        raise TypeError(
            f"node_values, node_keys and pixel_queries must share one dtype, got "
            f"{node_values.dtype}, {node_keys.dtype} and {pixel_queries.dtype}"
        )
    if node_keys.shape[0] != node_values.shape[0]:
        raise ValueError(
            f"node_keys has {node_keys.shape[0]} rows but node_values has "
            f"{node_values.shape[0]}: one key per node"
        )
    if pixel_queries.shape[1] != node_keys.shape[1]:
        raise ValueError(
            f"pixel_queries has {pixel_queries.shape[1]} channels but node_keys has "
            f"{node_keys.shape[1]}: queries and keys must have one size D"
        )
    superpixels = _check_superpixels(superpixels)
    if superpixels.dim() != 3 or tuple(superpixels.shape) != (
        pixel_queries.shape[0], *pixel_queries.shape[2:]
    ):
        raise ValueError(
            f"superpixels must have shape [B, H, W] = "
            f"{[pixel_queries.shape[0], *pixel_queries.shape[2:]]} (that of pixel_queries), "
            f"got {list(superpixels.shape)}"
        )
    for name, value in (("node_values", node_values), ("node_keys", node_keys),
                        ("pixel_queries", pixel_queries)):
        if value.device != superpixels.device:
            raise ValueError(
                f"superpixels is on {superpixels.device} but {name} is on {value.device}"
            )
    batch_size, height, width = superpixels.shape
    index, total, padded = _node_index_of_pixels(superpixels, num_nodes, node_values.shape[0])
    if radius is None:
        radius = max(1, round(0.5 * math.sqrt(height * width * batch_size / max(total, 1))))
    elif isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be a positive int, got {radius!r}")

    channels = node_values.shape[1]
    index = index.view(batch_size, height, width)
    if padded:  # a zero row for padding (unpool paints padding with zeros)
        node_values = torch.cat([node_values, node_values.new_zeros(1, channels)])
        node_keys = torch.cat([node_keys, node_keys.new_zeros(1, node_keys.shape[1])])
    rows = torch.arange(height, device=index.device)
    cols = torch.arange(width, device=index.device)
    candidates = torch.stack([
        index[:, (rows + step_row * radius).clamp(0, height - 1)]
        [:, :, (cols + step_col * radius).clamp(0, width - 1)].reshape(-1)
        for step_row, step_col in SOFT_UNPOOL_STEPS
    ])  # [5, P]
    queries = pixel_queries.permute(0, 2, 3, 1).reshape(-1, pixel_queries.shape[1])
    # Where all five candidates are the pixel's own node the mix is that node's
    # value: weight 1 on it, so that such pixels agree exactly with unpool.
    alone = (candidates == candidates[0]).all(dim=0)
    excluded = None
    if padded:
        own_pad = candidates[0] == total
        # Padding is never a candidate of an image pixel (a padding pixel's own
        # scores stay finite, so that no NaN arises; it gets zeros below).
        excluded = (candidates == total) & ~own_pad
    pixels = _CandidateMix.apply(node_values, node_keys, queries, candidates, alone, excluded,
                                 1.0 / math.sqrt(node_keys.shape[1]))
    if padded:
        pixels = pixels.masked_fill(own_pad.unsqueeze(1), 0.0)
    return pixels.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()


class _CandidateMix(torch.autograd.Function):
    r"""The mix of :func:`soft_unpool`, :math:`\operatorname{out}_p = \sum_k a_{pk}\,
    v_{c_k(p)}` with :math:`a_{pk} = \operatorname{softmax}_k(s\, q_p^\top u_{c_k(p)})`,
    one candidate at a time.

    Written out with its backward so that no ``[5, P, C]`` tensor is made: autograd
    through broadcast products would keep several, at full resolution. The tests
    compare it with a per-pixel loop and gradcheck it.
    Inputs: ``values`` ``[N, C]``, ``keys`` ``[N, D]``, ``queries`` ``[P, D]``,
    ``candidates`` ``[K, P]``, ``alone`` ``[P]`` (every candidate is the first: weight 1
    on it, no gradient to the scores), ``excluded`` ``[K, P]`` or ``None`` (weight 0),
    ``scale``.
    """

    @staticmethod
    def forward(ctx, values, keys, queries, candidates, alone, excluded, scale):
        scores = torch.stack([(keys.index_select(0, c) * queries).sum(dim=1)
                              for c in candidates])
        scores = scores * scale
        if excluded is not None:
            scores = scores.masked_fill(excluded, float("-inf"))
        weights = scores.softmax(dim=0).masked_fill(alone, 0.0)
        weights[0].masked_fill_(alone, 1.0)
        pixels = values.index_select(0, candidates[0]) * weights[0].unsqueeze(1)
        for k in range(1, len(candidates)):
            pixels.addcmul_(values.index_select(0, candidates[k]), weights[k].unsqueeze(1))
        ctx.save_for_backward(values, keys, queries, candidates, alone, weights)
        ctx.scale = scale
        return pixels

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_pixels):
        values, keys, queries, candidates, alone, weights = ctx.saved_tensors
        grad_values = torch.zeros_like(values)
        grad_weights = torch.empty_like(weights)
        for k, c in enumerate(candidates):
            grad_values.index_add_(0, c, grad_pixels * weights[k].unsqueeze(1))
            grad_weights[k] = (values.index_select(0, c) * grad_pixels).sum(dim=1)
        grad_scores = weights * (grad_weights - (weights * grad_weights).sum(dim=0))
        grad_scores = grad_scores.masked_fill(alone, 0.0) * ctx.scale
        grad_keys = torch.zeros_like(keys)
        grad_queries = torch.zeros_like(queries)
        for k, c in enumerate(candidates):
            grad_queries.addcmul_(keys.index_select(0, c), grad_scores[k].unsqueeze(1))
            grad_keys.index_add_(0, c, queries * grad_scores[k].unsqueeze(1))
        return grad_values, grad_keys, grad_queries, None, None, None, None
