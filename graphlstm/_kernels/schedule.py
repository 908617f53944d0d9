"""Compiled schedule: levels and the level-sorted layouts in O(N + E).

The same :class:`~graphlstm.schedule.Schedule` as the PyTorch reference
(:func:`graphlstm.schedule._schedule_torch`, Kahn's algorithm one frontier per
level), computed in three linear passes instead of a handful of tensor ops per
level:

1. Every non-self-loop edge is oriented from its earlier to its later endpoint
   and bucketed by the later one (a counting sort); then one pass over the
   nodes in rank order sets ``level(v) = 1 + max level`` of its earlier
   neighbours, which are all final by then.
2. A counting sort of the nodes by level, visiting them in rank order, gives
   ``perm`` sorted by ``(level, rank)`` and its offsets ``ptr``.
3. A counting sort of the visited (and of the unvisited) edges by the position
   of their target, visiting them in column order, gives the edge groups sorted
   by ``pos`` of the target with ties in column order: what the reference's
   stable ``argsort`` gives.
"""

from __future__ import annotations

import numpy as np

from graphlstm._kernels._jit import jit

__all__ = ["schedule_layout"]


@jit()
def schedule_layout(src, dst, order):
    """All index tensors of a schedule (see :class:`graphlstm.schedule.Schedule`).

    ``src``, ``dst``: int64 ``[E]`` (validated: in ``[0, N)``); ``order``: an int64
    permutation ``[N]``. Returns ``(rank, level, perm, pos, ptr, visited_eid,
    visited_ptr, visited, unvisited_eid, unvisited_ptr, unvisited_edge_index,
    unvisited_edge_index_pos, in_degree)``, all int64, where ``visited`` stacks
    ``visited_src, visited_dst, visited_src_pos, visited_dst_pos, visited_dst_local``.
    """
    n = order.size
    num_edges = src.size
    rank = np.empty(n, np.int64)
    for k in range(n):
        rank[order[k]] = k

    # 1. Levels: bucket every edge's earlier endpoint under its later endpoint.
    earlier_ptr = np.zeros(n + 1, np.int64)
    in_degree = np.zeros(n, np.int64)
    for e in range(num_edges):
        a, b = src[e], dst[e]
        if a != b:
            in_degree[b] += 1
            later = b if rank[a] < rank[b] else a
            earlier_ptr[later + 1] += 1
    for v in range(n):
        earlier_ptr[v + 1] += earlier_ptr[v]
    fill = earlier_ptr[:n].copy()
    earlier = np.empty(earlier_ptr[n], np.int64)
    for e in range(num_edges):
        a, b = src[e], dst[e]
        if a != b:
            if rank[a] < rank[b]:
                earlier[fill[b]] = a
                fill[b] += 1
            else:
                earlier[fill[a]] = b
                fill[a] += 1
    level = np.zeros(n, np.int64)
    num_levels = 1 if n > 0 else 0
    for k in range(n):
        v = order[k]
        depth = 0
        for q in range(earlier_ptr[v], earlier_ptr[v + 1]):
            d = level[earlier[q]] + 1
            if d > depth:
                depth = d
        level[v] = depth
        if depth + 1 > num_levels:
            num_levels = depth + 1

    # 2. Level-sorted layout, rank order within a level.
    ptr = np.zeros(num_levels + 1, np.int64)
    for v in range(n):
        ptr[level[v] + 1] += 1
    for lvl in range(num_levels):
        ptr[lvl + 1] += ptr[lvl]
    fill = ptr[:num_levels].copy()
    perm = np.empty(n, np.int64)
    pos = np.empty(n, np.int64)
    for k in range(n):
        v = order[k]
        p = fill[level[v]]
        fill[level[v]] += 1
        perm[p] = v
        pos[v] = p

    # 3. Visited / unvisited edges by pos of the target, column order within.
    vis_start = np.zeros(n + 1, np.int64)
    unv_start = np.zeros(n + 1, np.int64)
    for e in range(num_edges):
        a, b = src[e], dst[e]
        if a != b:
            if rank[a] < rank[b]:
                vis_start[pos[b] + 1] += 1
            else:
                unv_start[pos[b] + 1] += 1
    for p in range(n):
        vis_start[p + 1] += vis_start[p]
        unv_start[p + 1] += unv_start[p]
    visited_eid = np.empty(vis_start[n], np.int64)
    unvisited_eid = np.empty(unv_start[n], np.int64)
    visited_ptr = np.empty(num_levels + 1, np.int64)
    unvisited_ptr = np.empty(num_levels + 1, np.int64)
    for lvl in range(num_levels + 1):
        visited_ptr[lvl] = vis_start[ptr[lvl]]
        unvisited_ptr[lvl] = unv_start[ptr[lvl]]
    for e in range(num_edges):
        a, b = src[e], dst[e]
        if a != b:
            p = pos[b]
            if rank[a] < rank[b]:
                visited_eid[vis_start[p]] = e
                vis_start[p] += 1
            else:
                unvisited_eid[unv_start[p]] = e
                unv_start[p] += 1

    # The per-edge views of both groups.
    num_visited = visited_eid.size
    visited = np.empty((5, num_visited), np.int64)  # src, dst, src_pos, dst_pos, dst_local
    for q in range(num_visited):
        e = visited_eid[q]
        a, b = src[e], dst[e]
        visited[0, q] = a
        visited[1, q] = b
        visited[2, q] = pos[a]
        visited[3, q] = pos[b]
        visited[4, q] = pos[b] - ptr[level[b]]
    num_unvisited = unvisited_eid.size
    unvisited = np.empty((2, num_unvisited), np.int64)
    unvisited_pos = np.empty((2, num_unvisited), np.int64)
    for q in range(num_unvisited):
        e = unvisited_eid[q]
        unvisited[0, q] = src[e]
        unvisited[1, q] = dst[e]
        unvisited_pos[0, q] = pos[src[e]]
        unvisited_pos[1, q] = pos[dst[e]]
    return (rank, level, perm, pos, ptr, visited_eid, visited_ptr, visited, unvisited_eid,
            unvisited_ptr, unvisited, unvisited_pos, in_degree)
