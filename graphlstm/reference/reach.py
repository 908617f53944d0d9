"""The reach of an update order as a plain search, one target at a time
(docs/design.md, "Reach").

Defines what :func:`graphlstm.reachable` computes; used by the tests and the
benchmarks, never by the library.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["reach_reference"]


def reach_reference(
    edge_index: Tensor,
    num_nodes: int,
    targets,
    order: Tensor | None = None,
    num_layers: int = 1,
) -> Tensor:
    """Reach of every target by depth-first search, literally from the definition.

    One layer: ``u`` reaches ``t`` when ``u == t`` or a path ``u -> ... -> t``
    has strictly increasing ranks; the search walks in-edges ``j -> v`` back
    from ``t`` while ``rank[j] < rank[v]``. Each further layer (state passed
    on) first adds every in-neighbour of the set, then searches again from
    every node of it. Self-loops are skipped.

    Returns
    -------
    BoolTensor ``[len(targets), num_nodes]``
    """
    order = torch.arange(num_nodes) if order is None else order.cpu()
    rank = [0] * num_nodes
    for k, v in enumerate(order.tolist()):
        rank[v] = k
    in_neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for j, v in edge_index.cpu().t().tolist():
        if j != v:
            in_neighbours[v].append(j)

    def search(starts: set[int]) -> set[int]:
        seen = set(starts)
        stack = list(starts)
        while stack:
            v = stack.pop()
            for j in in_neighbours[v]:
                if rank[j] < rank[v] and j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    targets = [int(t) for t in torch.as_tensor(targets).view(-1).tolist()]
    result = torch.zeros(len(targets), num_nodes, dtype=torch.bool)
    for row, t in enumerate(targets):
        reach = search({t})
        for _ in range(num_layers - 1):
            grown = set(reach)
            for v in reach:
                grown.update(in_neighbours[v])
            reach = search(grown)
        result[row, sorted(reach)] = True
    return result
