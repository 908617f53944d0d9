"""Compiled schedule: levels and the level-sorted layouts in O(N + E).

The same :class:`~graphlstm.schedule.Schedule` as the PyTorch reference
(:func:`graphlstm.schedule._schedule_torch`, Kahn's algorithm one frontier per
level), in a few linear passes instead of a handful of tensor ops per level:

1. Every non-self-loop edge is oriented from its earlier to its later end (by
   rank), and the earlier ends are bucketed under the later one (a counting
   sort); one pass over the ranks then sets ``level = 1 + max level`` of the
   earlier neighbours, which are all final by then.
2. A counting sort of the nodes by level, visiting them in rank order, gives
   ``perm`` sorted by ``(level, rank)``, its inverse ``pos`` and ``ptr``.
3. A counting sort of the visited (and of the unvisited) edges by the position
   of their target, visiting them in column order, gives the groups sorted by
   ``pos`` of the target with ties in column order: what the reference's stable
   ``argsort`` gives.

Graphs in a random order make every pass a stream of random accesses, so the
arrays used inside are 32-bit (node and edge counts below 2^31): half the cache
footprint of the int64 outputs, which are filled by sequential passes.
"""

from __future__ import annotations

import numpy as np

from graphlstm._kernels._jit import jit

__all__ = ["schedule_layout"]


@jit()
def schedule_layout(src, dst, order):
    """All index tensors of a schedule (see :class:`graphlstm.schedule.Schedule`).

    ``src``, ``dst``: int64 ``[E]`` (validated: in ``[0, N)``); ``order``: an int64
    permutation ``[N]``, ``N`` and ``E`` below ``2^31``. Returns ``(rank, level, perm, pos, ptr,
    visited_eid, visited_ptr, visited, unvisited_eid, unvisited_ptr,
    unvisited_edge_index, unvisited_edge_index_pos, in_degree)``, all int64, where
    ``visited`` stacks ``visited_src, visited_dst, visited_src_pos,
    visited_dst_pos, visited_dst_local``.
    """
    n = order.size
    num_edges = src.size
    rank = np.empty(n, np.int64)
    rank32 = np.empty(n, np.int32)
    for k in range(n):
        rank[order[k]] = k
        rank32[order[k]] = k

    # 1. Levels. Ranks of both ends of every edge (-1: a self-loop), and the earlier
    #    end's rank bucketed under the later end's rank.
    src_rank = np.empty(num_edges, np.int32)
    dst_rank = np.empty(num_edges, np.int32)
    later_ptr = np.zeros(n + 1, np.int32)
    in_degree32 = np.zeros(n, np.int32)
    for e in range(num_edges):
        a, b = src[e], dst[e]
        if a == b:
            src_rank[e] = -1
            continue
        ra, rb = rank32[a], rank32[b]
        src_rank[e] = ra
        dst_rank[e] = rb
        in_degree32[b] += 1
        later_ptr[max(ra, rb) + 1] += 1
    for r in range(n):
        later_ptr[r + 1] += later_ptr[r]
    fill = later_ptr[:n].copy()
    earlier = np.empty(later_ptr[n], np.int32)
    for e in range(num_edges):
        ra = src_rank[e]
        if ra < 0:
            continue
        rb = dst_rank[e]
        later = max(ra, rb)
        earlier[fill[later]] = min(ra, rb)
        fill[later] += 1
    level_of_rank = np.empty(n, np.int32)
    num_levels = 1 if n > 0 else 0
    for r in range(n):
        depth = 0
        for q in range(later_ptr[r], later_ptr[r + 1]):
            d = level_of_rank[earlier[q]] + 1
            if d > depth:
                depth = d
        level_of_rank[r] = depth
        if depth + 1 > num_levels:
            num_levels = depth + 1
    in_degree = np.empty(n, np.int64)
    for v in range(n):
        in_degree[v] = in_degree32[v]

    # 2. Level-sorted layout, rank order within a level. Per rank, its position and
    #    its position within its level side by side (one cache line to look up).
    ptr = np.zeros(num_levels + 1, np.int64)
    for r in range(n):
        ptr[level_of_rank[r] + 1] += 1
    for lvl in range(num_levels):
        ptr[lvl + 1] += ptr[lvl]
    fill = ptr[:num_levels].copy()
    perm = np.empty(n, np.int64)
    pos = np.empty(n, np.int64)
    level = np.empty(n, np.int64)
    pos_of_rank = np.empty((n, 2), np.int32)
    for r in range(n):
        v = order[r]
        lvl = level_of_rank[r]
        p = fill[lvl]
        fill[lvl] += 1
        perm[p] = v
        pos[v] = p
        level[v] = lvl
        pos_of_rank[r, 0] = p
        pos_of_rank[r, 1] = p - ptr[lvl]

    # 3. Visited and unvisited edges, each grouped by the position of the target with
    #    column order within (counting sorts). Per edge, the positions of both ends
    #    are looked up once; each edge's output record is then written to its slot
    #    at once, and the records are transposed at the end.
    start = np.zeros((n + 1, 2), np.int32)  # column 0: visited, 1: unvisited
    src_pos = np.empty(num_edges, np.int32)
    dst_pos = np.empty((num_edges, 2), np.int32)
    for e in range(num_edges):
        ra = src_rank[e]
        if ra < 0:
            continue
        rb = dst_rank[e]
        src_pos[e] = pos_of_rank[ra, 0]
        pb = pos_of_rank[rb, 0]
        dst_pos[e, 0] = pb
        dst_pos[e, 1] = pos_of_rank[rb, 1]
        start[pb + 1, 0 if ra < rb else 1] += 1
    for p in range(n):
        start[p + 1, 0] += start[p, 0]
        start[p + 1, 1] += start[p, 1]
    num_visited, num_unvisited = start[n, 0], start[n, 1]
    visited_ptr = np.empty(num_levels + 1, np.int64)
    unvisited_ptr = np.empty(num_levels + 1, np.int64)
    for lvl in range(num_levels + 1):
        visited_ptr[lvl] = start[ptr[lvl], 0]
        unvisited_ptr[lvl] = start[ptr[lvl], 1]
    # Records (32 bit): eid, src, dst, src_pos, dst_pos, dst_local (visited only).
    visited_rec = np.empty((num_visited, 6), np.int32)
    unvisited_rec = np.empty((num_unvisited, 5), np.int32)
    for e in range(num_edges):
        ra = src_rank[e]
        if ra < 0:
            continue
        pb = dst_pos[e, 0]
        if ra < dst_rank[e]:
            q = start[pb, 0]
            start[pb, 0] += 1
            visited_rec[q, 0] = e
            visited_rec[q, 1] = src[e]
            visited_rec[q, 2] = dst[e]
            visited_rec[q, 3] = src_pos[e]
            visited_rec[q, 4] = pb
            visited_rec[q, 5] = dst_pos[e, 1]
        else:
            q = start[pb, 1]
            start[pb, 1] += 1
            unvisited_rec[q, 0] = e
            unvisited_rec[q, 1] = src[e]
            unvisited_rec[q, 2] = dst[e]
            unvisited_rec[q, 3] = src_pos[e]
            unvisited_rec[q, 4] = pb
    visited_eid = np.empty(num_visited, np.int64)
    visited = np.empty((5, num_visited), np.int64)  # src, dst, src_pos, dst_pos, dst_local
    for q in range(num_visited):
        visited_eid[q] = visited_rec[q, 0]
        for c in range(5):
            visited[c, q] = visited_rec[q, c + 1]
    unvisited_eid = np.empty(num_unvisited, np.int64)
    unvisited = np.empty((2, num_unvisited), np.int64)
    unvisited_pos = np.empty((2, num_unvisited), np.int64)
    for q in range(num_unvisited):
        unvisited_eid[q] = unvisited_rec[q, 0]
        unvisited[0, q] = unvisited_rec[q, 1]
        unvisited[1, q] = unvisited_rec[q, 2]
        unvisited_pos[0, q] = unvisited_rec[q, 3]
        unvisited_pos[1, q] = unvisited_rec[q, 4]
    return (rank, level, perm, pos, ptr, visited_eid, visited_ptr, visited, unvisited_eid,
            unvisited_ptr, unvisited, unvisited_pos, in_degree)
