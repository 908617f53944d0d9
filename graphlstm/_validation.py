"""Argument checks shared by the public functions (see docs/design.md, "Bad input").

Every check raises ``TypeError`` for a wrong type or dtype and ``ValueError``
for a wrong shape or value, and names the offending argument, so that a user
sees *which* input is malformed and what was expected.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def check_tensor(value, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_num_nodes(num_nodes, name: str = "num_nodes") -> int:
    if isinstance(num_nodes, Tensor) and num_nodes.numel() == 1:
        num_nodes = int(num_nodes)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral):
        raise TypeError(f"'{name}' must be an int, got {type(num_nodes).__name__}")
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"'{name}' must be non-negative, got {num_nodes}")
    return num_nodes


def check_edge_index(edge_index, num_nodes: int, name: str = "edge_index") -> Tensor:
    """``edge_index`` must be an integer ``[2, E]`` tensor with entries in ``[0, num_nodes)``."""
    check_tensor(edge_index, name)
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"'{name}' must have dtype torch.long, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'{name}' must have shape [2, num_edges], got {list(edge_index.shape)}")
    if edge_index.numel() > 0:
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(
                f"'{name}' holds node indices in [{lo}, {hi}], outside [0, {num_nodes}) "
                f"for num_nodes={num_nodes}"
            )
    return edge_index.long()


def check_order(order, num_nodes: int, name: str = "order") -> Tensor:
    """``order`` must be a permutation of ``0..num_nodes-1``."""
    check_tensor(order, name)
    if order.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"'{name}' must be an integer permutation, got dtype {order.dtype}")
    if order.dim() != 1 or order.numel() != num_nodes:
        raise ValueError(
            f"'{name}' must be a 1-D permutation of {num_nodes} nodes, "
            f"got shape {list(order.shape)}"
        )
    order = order.long()
    if num_nodes > 0:
        if int(order.min()) < 0 or int(order.max()) >= num_nodes:
            raise ValueError(f"'{name}' must be a permutation of 0..{num_nodes - 1}")
        seen = torch.zeros(num_nodes, dtype=torch.bool, device=order.device)
        seen[order] = True
        if not bool(seen.all()):
            raise ValueError(
                f"'{name}' is not a permutation: {int((~seen).sum())} node(s) are missing "
                f"and others repeat"
            )
    return order


def check_score(score, num_nodes: int, name: str = "score") -> Tensor:
    """``score`` must be a finite floating ``[num_nodes]`` (or ``[num_nodes, 1]``) tensor."""
    check_tensor(score, name)
    if score.dim() == 2 and score.size(1) == 1:
        score = score.view(-1)
    if score.dim() != 1 or score.numel() != num_nodes:
        raise ValueError(
            f"'{name}' must hold one value per node, shape [{num_nodes}], "
            f"got {list(score.shape)}"
        )
    if score.dtype == torch.bool or score.is_complex():
        raise TypeError(f"'{name}' must be a real tensor, got dtype {score.dtype}")
    if score.is_floating_point() and not bool(torch.isfinite(score).all()):
        raise ValueError(f"'{name}' must be finite, got NaN or inf")
    return score


def check_node_features(
    x, num_nodes: int | None, channels: int | None, name: str
) -> Tensor:
    """A floating ``[num_nodes, channels]`` tensor (either may be ``None`` = any)."""
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"'{name}' must be a floating point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"'{name}' must have shape [num_nodes, channels], got {list(x.shape)}")
    if num_nodes is not None and x.size(0) != num_nodes:
        raise ValueError(f"'{name}' must have {num_nodes} rows (one per node), got {x.size(0)}")
    if channels is not None and x.size(1) != channels:
        raise ValueError(f"'{name}' must have {channels} channels, got {x.size(1)}")
    return x


def check_edge_weight(edge_weight, num_edges: int, name: str = "edge_weight") -> Tensor:
    """A floating, finite, non-negative ``[num_edges]`` tensor (docs/design.md, "Edge weights")."""
    check_tensor(edge_weight, name)
    if not edge_weight.is_floating_point():
        raise TypeError(
            f"'{name}' must be a floating point tensor (one weight per edge), "
            f"got dtype {edge_weight.dtype}"
        )
    if edge_weight.dim() != 1 or edge_weight.size(0) != num_edges:
        raise ValueError(
            f"'{name}' must hold one weight per edge, shape [{num_edges}], "
            f"got {list(edge_weight.shape)}"
        )
    if num_edges > 0:
        if not bool(torch.isfinite(edge_weight).all()):
            raise ValueError(f"'{name}' must be finite, got NaN or inf")
        if bool((edge_weight < 0).any()):
            raise ValueError(
                f"'{name}' must be non-negative, got the minimum {float(edge_weight.min())}"
            )
    return edge_weight
