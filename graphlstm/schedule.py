r"""Update schedules: from an update order to levels of independent nodes.

A recurrent layer on a graph updates every node once, in an *update order*
(a permutation of the nodes); each update reads the **new** state of the
neighbours that came before and the **previous** state of the rest (see docs/design.md,
"The sequential pass" and "Levels").
Run literally, that is one step per node.

Orient every edge, whatever its direction, from its earlier to its later
endpoint: the result is a DAG, and

.. math::
    \mathrm{level}(v) = 1 + \max_{u \sim v,\ \mathrm{rank}(u) < \mathrm{rank}(v)}
    \mathrm{level}(u) \qquad (0 \text{ if there is no such } u)

gives levels whose nodes are pairwise non-adjacent. Updating level after level,
all reads of a level before its writes, is exactly the sequential pass, so the
critical path is the number of levels rather than the number of nodes. Both
edge directions count: for an edge :math:`u \to v` with :math:`u` after
:math:`v`, :math:`v` must read :math:`u`'s *old* state, so :math:`u` may not
run before :math:`v`.

Because adjacent nodes are ordered the same way by rank and by level, an
in-neighbour ``j`` of ``i`` is *visited* (``rank[j] < rank[i]``) exactly when it
lies in an earlier level.

A :class:`Schedule` depends on the graph and the order only, so it is computed
once and shared by every layer (and every training step) that uses the same
graph and order. It is computed on the CPU and moved with :meth:`Schedule.to`:
by default in O(N + E) compiled code (one pass over the nodes in rank order, and
counting sorts for the layouts; :mod:`graphlstm._kernels.schedule`), or by the
PyTorch reference (Kahn's algorithm, a handful of tensor ops per level), which
gives the identical :class:`Schedule` (see :mod:`graphlstm.backend`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from graphlstm import backend
from graphlstm._dispatch import call
from graphlstm._validation import (
    check_edge_index,
    check_num_nodes,
    check_order,
    check_score,
    check_tensor,
)

__all__ = ["Schedule", "build_schedule", "order_from_score"]


@dataclass(frozen=True)
class Schedule:
    """The levels of an update order on a graph (see the module docstring).

    Attributes
    ----------
    num_nodes : int
        Number of nodes ``N``.
    num_edges : int
        Number of columns of the ``edge_index`` it was built for.
    num_levels : int
        Number of levels ``K`` (the length of the critical path).
    order : LongTensor ``[N]``
        ``order[k]`` is the ``k``-th node updated.
    rank : LongTensor ``[N]``
        Inverse of ``order``: ``rank[v]`` is the step at which ``v`` is updated.
    level : LongTensor ``[N]``
        Level of every node.
    perm : LongTensor ``[N]``
        Nodes sorted by ``(level, rank)``; level ``l`` is ``perm[ptr[l]:ptr[l+1]]``.
    pos : LongTensor ``[N]``
        Inverse of ``perm``: where each node sits in the level-sorted layout.
    ptr : list of int, length ``K + 1``
        Level offsets into ``perm``.
    visited_eid : LongTensor ``[E_v]``
        Columns of ``edge_index`` that are *visited* in-edges ``j -> i``
        (``rank[j] < rank[i]``, self-loops excluded), grouped by the level of
        ``i`` and sorted by ``pos[i]``.
    visited_ptr : list of int, length ``K + 1``
        Level offsets into ``visited_eid``: level ``l`` reads, through its
        visited in-edges, only nodes of levels ``< l``.
    visited_src, visited_dst : LongTensor ``[E_v]``
        Source and target node of each visited edge.
    visited_src_pos, visited_dst_pos : LongTensor ``[E_v]``
        ``pos`` of the source and target of each visited edge.
    visited_dst_local : LongTensor ``[E_v]``
        ``pos`` of the target minus the first position of its level.
    unvisited_eid : LongTensor ``[E_u]``
        Columns of the other non-self-loop edges (``rank[j] > rank[i]``): their
        source is read in its previous state. Grouped by the level of ``i`` and
        sorted by ``pos[i]``, like the visited edges.
    unvisited_ptr : list of int, length ``K + 1``
        Level offsets into ``unvisited_eid``.
    unvisited_edge_index : LongTensor ``[2, E_u]``
        Those edges.
    unvisited_edge_index_pos : LongTensor ``[2, E_u]``
        Those edges in the level-sorted layout (``pos`` of both endpoints).
    in_degree : LongTensor ``[N]``
        In-degree without self-loops. Duplicate edges count with their
        multiplicity, as in PyG's ``aggr="mean"``.
    """

    num_nodes: int
    num_edges: int
    num_levels: int
    order: Tensor
    rank: Tensor
    level: Tensor
    perm: Tensor
    pos: Tensor
    ptr: list
    visited_eid: Tensor
    visited_ptr: list
    visited_src: Tensor
    visited_dst: Tensor
    visited_src_pos: Tensor
    visited_dst_pos: Tensor
    visited_dst_local: Tensor
    unvisited_eid: Tensor
    unvisited_ptr: list
    unvisited_edge_index: Tensor
    unvisited_edge_index_pos: Tensor
    in_degree: Tensor

    def __post_init__(self) -> None:
        # The three offset lists once more as one CPU tensor: the operators take it,
        # and a compiled model reads it without guarding on the lists' values.
        # (Through NumPy: torch.tensor reads nested lists of ints three times slower.)
        offsets = torch.from_numpy(
            np.array([self.ptr, self.visited_ptr, self.unvisited_ptr], dtype=np.int64))
        object.__setattr__(self, "_offsets", offsets)

    @property
    def offsets(self) -> Tensor:
        """``[3, K + 1]`` int64 tensor, always on the CPU: rows ``ptr``,
        ``visited_ptr``, ``unvisited_ptr``."""
        return self._offsets

    @property
    def device(self) -> torch.device:
        return self.order.device

    def level_nodes(self, level: int) -> Tensor:
        """The nodes of one level, in rank order."""
        return self.perm[self.ptr[level]:self.ptr[level + 1]]

    def level_sizes(self) -> Tensor:
        """Number of nodes in every level, ``[K]``."""
        return torch.tensor(self.ptr).diff()

    def to(self, device) -> Schedule:
        """This schedule with every tensor on ``device``."""
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.to(device) if isinstance(v, Tensor) else v
        return Schedule(**values)

    def check_graph(self, num_nodes: int, edge_index: Tensor, name: str = "schedule") -> None:
        """Raise if this schedule was built for a graph of another size."""
        if num_nodes != self.num_nodes or edge_index.size(1) != self.num_edges:
            raise ValueError(
                f"'{name}' was built for {self.num_nodes} nodes and {self.num_edges} edges, "
                f"but the input has {num_nodes} nodes and {edge_index.size(1)} edges"
            )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_nodes={self.num_nodes}, "
            f"num_edges={self.num_edges}, num_levels={self.num_levels})"
        )


def order_from_score(score: Tensor) -> Tensor:
    """The update order of per-node scores: higher score first, ties by smaller index.

    Parameters
    ----------
    score : Tensor ``[N]``
        Finite real scores.

    Returns
    -------
    order : LongTensor ``[N]``
    """
    check_tensor(score, "score")
    score = check_score(score, score.numel())
    # A stable descending sort keeps equal scores in index order.
    return torch.sort(score, descending=True, stable=True).indices


# Built outside any torch.compile'd graph: the number of levels and the sizes of the
# edge groups depend on the values of the graph and the order, and validation
# reads values too. Dynamo runs this function eagerly (a graph break) and traces
# on with the Schedule, whose tensors become inputs of the compiled graph with
# symbolic sizes; nothing it reads is a Python list. (An operator with
# data-dependent output sizes would keep one graph, but then validation and the
# Schedule's lists could not be built.)
@torch.compiler.disable
def build_schedule(
    edge_index: Tensor,
    num_nodes: int | None = None,
    order: Tensor | None = None,
    score: Tensor | None = None,
) -> Schedule:
    """Compute the levels of an update order on a graph.

    Parameters
    ----------
    edge_index : LongTensor ``[2, E]``
        Edges ``edge_index[0] -> edge_index[1]`` (PyG convention). Works on a
        PyG ``Batch`` as on one graph: disjoint graphs share levels.
    num_nodes : int, optional
        Number of nodes (default: ``max(edge_index) + 1``).
    order : LongTensor ``[N]``, optional
        The update order as a permutation (``order[k]`` is updated ``k``-th).
    score : Tensor ``[N]``, optional
        The update order as per-node scores, higher first, ties broken by the
        smaller node index. At most one of ``order`` and ``score`` may be
        given; with neither, nodes are updated in index order.

    Returns
    -------
    Schedule
        On the device of ``edge_index``.

    Raises
    ------
    TypeError, ValueError
        For a malformed ``edge_index``, ``order`` that is not a permutation,
        ``score`` with NaN/inf or the wrong length, or both given.
    """
    if num_nodes is None:
        if not isinstance(edge_index, Tensor):
            check_edge_index(edge_index, 0)
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() > 0 else 0
    num_nodes = check_num_nodes(num_nodes)
    edge_index = check_edge_index(edge_index, num_nodes)
    if order is not None and score is not None:
        raise ValueError("give at most one of 'order' and 'score', not both")
    device = edge_index.device
    cpu = torch.device("cpu")
    ei = edge_index.to(cpu)
    n = num_nodes

    if order is not None:
        order = check_order(order, n).to(cpu)
    elif score is not None:
        order = order_from_score(check_score(score, n).detach().to(cpu))
    else:
        order = torch.arange(n)

    kernels = backend.kernels_for()
    schedule = None
    if kernels is not None and n < 2**31:  # the kernel counts nodes in 32 bits
        try:
            schedule = _schedule_compiled(kernels, ei, order)
        except kernels.CompileError as error:
            backend.disable_after_failure(error)
    if schedule is None:
        schedule = _schedule_torch(ei, order)
    return schedule if device == cpu else schedule.to(device)


def _schedule_compiled(kernels, ei: Tensor, order: Tensor) -> Schedule:
    """The schedule from the O(N + E) kernel (:mod:`graphlstm._kernels.schedule`)."""
    ei = ei.contiguous()
    (rank, level, perm, pos, ptr, vis_eid, visited_ptr, visited, unvisited_eid, unvisited_ptr,
     unvisited, unvisited_pos, in_degree) = call(torch.ops.graphlstm.schedule_layout, ei[0],
                                                 ei[1], order)
    ptr = ptr.tolist()
    return Schedule(
        num_nodes=order.numel(),
        num_edges=ei.size(1),
        num_levels=len(ptr) - 1,
        order=order,
        rank=rank,
        level=level,
        perm=perm,
        pos=pos,
        ptr=ptr,
        visited_eid=vis_eid,
        visited_ptr=visited_ptr.tolist(),
        visited_src=visited[0],
        visited_dst=visited[1],
        visited_src_pos=visited[2],
        visited_dst_pos=visited[3],
        visited_dst_local=visited[4],
        unvisited_eid=unvisited_eid,
        unvisited_ptr=unvisited_ptr.tolist(),
        unvisited_edge_index=unvisited,
        unvisited_edge_index_pos=unvisited_pos,
        in_degree=in_degree,
    )


def _schedule_torch(ei: Tensor, order: Tensor) -> Schedule:
    """The schedule in whole-tensor PyTorch operations: the readable reference.

    Levels by Kahn's algorithm one frontier per level (:func:`_levels`), layouts by
    stable sorts.
    """
    n = order.numel()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)

    src, dst = ei[0], ei[1]
    not_loop = src != dst
    level = _levels(rank, src[not_loop], dst[not_loop], n)
    num_levels = int(level.max()) + 1 if n > 0 else 0

    # Level-sorted layout: by level, then by rank within a level.
    perm = torch.argsort(level * max(n, 1) + rank)
    pos = torch.empty_like(perm)
    pos[perm] = torch.arange(n)
    ptr = [0] + torch.bincount(level, minlength=num_levels).cumsum(0).tolist()

    eid = torch.arange(ei.size(1))
    visited = not_loop & (rank[src] < rank[dst])
    vis_eid = eid[visited]
    vis_eid = vis_eid[torch.argsort(pos[dst[vis_eid]], stable=True)]
    vis_counts = torch.bincount(level[dst[vis_eid]], minlength=num_levels)
    visited_ptr = [0] + vis_counts.cumsum(0).tolist()
    unvisited_eid = eid[not_loop & ~visited]
    unvisited_eid = unvisited_eid[torch.argsort(pos[dst[unvisited_eid]], stable=True)]
    unv_counts = torch.bincount(level[dst[unvisited_eid]], minlength=num_levels)
    unvisited_ptr = [0] + unv_counts.cumsum(0).tolist()
    in_degree = torch.bincount(dst[not_loop], minlength=n)

    return Schedule(
        num_nodes=n,
        num_edges=ei.size(1),
        num_levels=num_levels,
        order=order,
        rank=rank,
        level=level,
        perm=perm,
        pos=pos,
        ptr=ptr,
        visited_eid=vis_eid,
        visited_ptr=visited_ptr,
        visited_src=src[vis_eid],
        visited_dst=dst[vis_eid],
        visited_src_pos=pos[src[vis_eid]],
        visited_dst_pos=pos[dst[vis_eid]],
        visited_dst_local=pos[dst[vis_eid]] - torch.tensor(ptr)[level[dst[vis_eid]]],
        unvisited_eid=unvisited_eid,
        unvisited_ptr=unvisited_ptr,
        unvisited_edge_index=ei[:, unvisited_eid],
        unvisited_edge_index_pos=pos[ei[:, unvisited_eid]],
        in_degree=in_degree,
    )


def _levels(rank: Tensor, a: Tensor, b: Tensor, num_nodes: int) -> Tensor:
    """Longest-path depth in the DAG that orients every edge earlier -> later.

    Kahn's algorithm, one frontier per level: each edge is touched once, and
    the only Python loop runs over levels.
    """
    level = torch.zeros(num_nodes, dtype=torch.long)
    if num_nodes == 0 or a.numel() == 0:
        return level
    a_first = rank[a] < rank[b]
    earlier = torch.where(a_first, a, b)
    later = torch.where(a_first, b, a)

    # CSR of the DAG by its earlier endpoint.
    by_earlier = torch.argsort(earlier, stable=True)
    targets = later[by_earlier]
    row_ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    row_ptr[1:] = torch.bincount(earlier, minlength=num_nodes).cumsum(0)
    waiting = torch.bincount(later, minlength=num_nodes)

    frontier = (waiting == 0).nonzero().view(-1)
    depth = 0
    while frontier.numel() > 0:
        level[frontier] = depth
        starts = row_ptr[frontier]
        counts = row_ptr[frontier + 1] - starts
        total = int(counts.sum())
        if total == 0:
            break
        # Edge ids of all out-edges of the frontier, without a loop over nodes.
        offsets = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
        out = targets[offsets + torch.arange(total)]
        waiting.index_add_(0, out, torch.full_like(out, -1))
        frontier = torch.unique(out[waiting[out] == 0])
        depth += 1
    return level
