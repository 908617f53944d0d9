"""PyG's ``Adj``: an ``edge_index`` or a sparse adjacency matrix, as edges and weights.

PyG layers take either an ``edge_index`` (``edge_index[0]`` sends to
``edge_index[1]``) or a sparse adjacency matrix. A sparse adjacency is read in
PyG's *transposed* convention, the ``adj_t`` of
:class:`torch_geometric.transforms.ToSparseTensor`: row ``i`` holds the
in-edges of node ``i``, so entry ``(i, j)`` with value ``w`` is the edge
``j -> i`` with weight ``w``. This is how ``GCNConv``, ``GraphConv`` or
``SAGEConv`` read a ``torch.sparse`` tensor or a ``torch_sparse.SparseTensor``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.typing import SparseTensor

from graphlstm._validation import check_edge_index, check_edge_weight

_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)


def is_sparse_adjacency(adj) -> bool:
    """Whether ``adj`` is a ``torch.sparse`` matrix or a ``torch_sparse.SparseTensor``."""
    # Without torch_sparse, torch_geometric.typing.SparseTensor is a placeholder
    # class that nothing is an instance of.
    return isinstance(adj, SparseTensor) or (
        isinstance(adj, Tensor) and adj.layout in _SPARSE_LAYOUTS
    )


def edges_and_weights(
    adj, edge_weight: Tensor | None, num_nodes: int, name: str = "edge_index"
) -> tuple[Tensor, Tensor | None]:
    """``(edge_index [2, E], edge_weight [E] or None)`` of any PyG ``Adj``, validated.

    A sparse adjacency ``[num_nodes, num_nodes]`` gives its entries as edges
    ``j -> i`` (row ``i``, column ``j``) and its values as their weights;
    ``edge_weight`` must then be omitted. Duplicate entries of an uncoalesced
    ``torch.sparse`` matrix are summed, which is what a duplicate edge means
    for a weighted layer (each copy adds its weight). Gradients flow into the
    values.
    """
    if is_sparse_adjacency(adj):
        if edge_weight is not None:
            raise ValueError(
                f"'{name}' is a sparse adjacency matrix whose values are the edge weights; "
                "do not give 'edge_weight' as well"
            )
        if isinstance(adj, SparseTensor):
            sizes = tuple(adj.sparse_sizes())
            row, col, value = adj.coo()
        else:
            sizes = tuple(adj.shape)
            coo = adj if adj.layout == torch.sparse_coo else adj.to_sparse_coo()
            coo = coo.coalesce()
            (row, col), value = coo.indices(), coo.values()
        if sizes != (num_nodes, num_nodes):
            raise ValueError(
                f"'{name}' must be a sparse adjacency matrix of shape [{num_nodes}, {num_nodes}] "
                f"(num_nodes, num_nodes), got {list(sizes)}"
            )
        edge_index = torch.stack([col, row], dim=0)
        edge_weight = value
        weight_name = f"{name}.values()"
    else:
        edge_index = check_edge_index(adj, num_nodes, name)
        weight_name = "edge_weight"
    if edge_weight is not None:
        edge_weight = check_edge_weight(edge_weight, edge_index.size(1), weight_name)
    return edge_index, edge_weight


def rescale_in_weights(
    edge_index: Tensor, edge_weight: Tensor, num_nodes: int, dtype: torch.dtype
) -> Tensor:
    """Every edge weight divided by the largest weight into the same node.

    A weighted mean over in-neighbours (SPEC §3.1a) does not change when all
    of a node's in-weights are scaled alike, but computing it from the raw
    weights does: ``1 / s_i`` overflows for tiny ones (``s_i`` below ~3e-39
    in float32, ~6e-309 in float64) and ``s_i`` itself for huge ones. Once
    rescaled, every weight lies in ``[0, 1]`` and a node with any positive
    in-weight has ``s_i >= 1``, for any finite non-negative input. Self-loops
    do not count (the layers drop them); a node whose in-weights are all zero
    keeps them. The divisor is a constant for autograd: by the invariance its
    own derivative contributes nothing, so the gradient in ``edge_weight`` is
    that of the rescaled weights divided by it; it overflows only where the
    true value does.

    The result has the wider of ``edge_weight.dtype`` and ``dtype`` (the
    features' dtype): float32 weights of float64 features give what their
    float64 values give, and float64 weights lose no range before rescaling.
    """
    edge_weight = edge_weight.to(torch.promote_types(edge_weight.dtype, dtype))
    edge_index = edge_index.as_subclass(Tensor)
    src, dst = edge_index[0], edge_index[1]
    in_weight = edge_weight.detach().masked_fill(src == dst, 0.0)
    peak = in_weight.new_zeros(num_nodes).scatter_reduce(0, dst, in_weight, "amax")
    peak = torch.where(peak > 0, peak, 1.0)
    return edge_weight / peak.index_select(0, dst)
