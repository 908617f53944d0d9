"""Compiled schedule: levels and the level-sorted layouts in O(N + E).

The same :class:`~graphlstm.schedule.Schedule` as the PyTorch reference
(:func:`graphlstm.schedule._schedule_torch`, Kahn's algorithm one frontier per
level), in a few linear passes instead of a handful of tensor ops per level:

1. Two counting sorts of the edges (in column order) give, per node, its
   neighbours in either direction and its in-edges (self-loops dropped).
2. Kahn's algorithm on the DAG that orients every edge from its earlier to its
   later end (by rank) gives ``level = 1 + max level`` of the earlier
   neighbours: a queue that holds the levels one after the other.
3. A counting sort of the nodes by level, visiting them in rank order, gives
   ``perm`` sorted by ``(level, rank)``, its inverse ``pos`` and ``ptr``.
4. Per node, its in-edges split into visited (earlier source) and unvisited,
   written as 32-bit records to the slots of the node's position (and
   transposed into the int64 outputs at the end): the groups come out sorted by
   ``pos`` of the target with ties in column order, as the reference's stable
   ``argsort`` gives them.

Every pass over edges runs through the nodes in *index* order and reads the
arrays of the node's neighbours by node index, so on graphs whose neighbours
have nearby indices (lattices, region adjacency graphs) it stays in cache even
when the update order is random; what a random order costs is a few accesses
per node, not per edge. Arrays used inside are 32-bit (node and edge counts
below 2^31).

On large graphs much of the time is the first touch of fresh memory (hundreds
of MB for 10^6 nodes), so the arrays are allocated by NumPy, which asks Linux
for transparent huge pages, and the compiled passes (:func:`_adjacency`,
:func:`_levels_and_layout`, :func:`_edges`) fill them; a page fault per 2 MB
instead of per 4 kB makes a 1000×1000 grid several times faster.
"""

from __future__ import annotations

import numpy as np

from graphlstm._kernels._jit import jit

__all__ = ["schedule_layout"]


def schedule_layout(src, dst, order):
    """All index tensors of a schedule (see :class:`graphlstm.schedule.Schedule`).

    ``src``, ``dst``: int64 ``[E]`` (validated: in ``[0, N)``); ``order``: an int64
    permutation ``[N]``, ``N`` and ``E`` below ``2^31``. Returns ``(rank, level, perm, pos, ptr,
    visited_eid, visited_ptr, visited, unvisited_eid, unvisited_ptr,
    unvisited_edge_index, unvisited_edge_index_pos, in_degree)``, all int64 arrays, where
    ``visited`` stacks ``visited_src, visited_dst, visited_src_pos,
    visited_dst_pos, visited_dst_local``.
    """
    n = order.size
    rank = np.empty(n, np.int64)
    node32 = np.empty((n, 4), np.int32)  # rank, level, visited in-edges, in-degree
    adj_ptr = np.empty(n + 1, np.int32)
    in_ptr = np.empty(n + 1, np.int32)
    in_degree = np.empty(n, np.int64)
    num_visited = _count(src, dst, order, rank, node32, adj_ptr, in_ptr, in_degree)
    num_in = int(in_ptr[n])
    adj = np.empty(int(adj_ptr[n]), np.int32)
    in_edges = np.empty((num_in, 2), np.int32)  # edge id, source
    queue = np.empty(n, np.int32)
    waiting = np.empty(n, np.int32)
    later_start = np.empty(n, np.int32)
    level = np.empty(n, np.int64)
    perm = np.empty(n, np.int64)
    pos = np.empty(n, np.int64)
    edge_start = np.empty((n, 2), np.int64)
    ptr, visited_ptr, unvisited_ptr = _levels_and_layout(
        src, dst, order, node32, adj_ptr, adj, in_ptr, in_edges, queue, waiting, later_start,
        level, perm, pos, edge_start)
    num_unvisited = num_in - num_visited
    visited_eid = np.empty(num_visited, np.int64)
    visited = np.empty((5, num_visited), np.int64)  # src, dst, src_pos, dst_pos, dst_local
    unvisited_eid = np.empty(num_unvisited, np.int64)
    unvisited = np.empty((2, num_unvisited), np.int64)
    unvisited_pos = np.empty((2, num_unvisited), np.int64)
    _edges(node32, in_ptr, in_edges, pos, ptr, level, edge_start, visited_eid, visited,
           unvisited_eid, unvisited, unvisited_pos)
    return (rank, level, perm, pos, ptr, visited_eid, visited_ptr, visited, unvisited_eid,
            unvisited_ptr, unvisited, unvisited_pos, in_degree)


@jit()
def _count(src, dst, order, rank, node32, adj_ptr, in_ptr, in_degree):
    """Ranks, and per node the number of neighbours (either direction) and of
    in-edges, as prefix sums ``adj_ptr``, ``in_ptr``; returns the number of
    visited edges. Self-loops are dropped."""
    n = order.size
    for k in range(n):
        rank[order[k]] = k
        node32[order[k], 0] = k
    for v in range(n + 1):
        adj_ptr[v] = 0
        in_ptr[v] = 0
    num_visited = 0
    for e in range(src.size):
        a, b = src[e], dst[e]
        if a != b:
            adj_ptr[a + 1] += 1
            adj_ptr[b + 1] += 1
            in_ptr[b + 1] += 1
            if node32[a, 0] < node32[b, 0]:
                num_visited += 1
    for v in range(n):
        in_degree[v] = in_ptr[v + 1]
        node32[v, 3] = in_ptr[v + 1]
        adj_ptr[v + 1] += adj_ptr[v]
        in_ptr[v + 1] += in_ptr[v]
    return num_visited


@jit()
def _levels_and_layout(src, dst, order, node32, adj_ptr, adj, in_ptr, in_edges, queue,
                       waiting, later_start, level, perm, pos, edge_start):
    """Fill the neighbour lists, the levels (Kahn), the level-sorted layout, and per
    node the first slot of its visited and of its unvisited in-edges in the
    outputs; return ``ptr``, ``visited_ptr``, ``unvisited_ptr``."""
    n = order.size
    # Neighbours in either direction, and in-edges (edge id, source), column order.
    adj_fill = adj_ptr[:n].copy()
    in_fill = in_ptr[:n].copy()
    for e in range(src.size):
        a, b = src[e], dst[e]
        if a != b:
            adj[adj_fill[a]] = b
            adj_fill[a] += 1
            adj[adj_fill[b]] = a
            adj_fill[b] += 1
            q = in_fill[b]
            in_fill[b] += 1
            in_edges[q, 0] = e
            in_edges[q, 1] = a

    # Levels by Kahn's algorithm on the DAG that orients every edge from its earlier
    # to its later end: a node joins the queue once its last earlier neighbour is
    # done, so the queue holds the levels one after the other. Also counts each
    # node's visited in-edges (earlier source).
    # Each neighbour list is reordered, earlier neighbours first, so that the queue
    # loop below walks only the later ones (from later_start[v]).
    tail = 0
    for v in range(n):
        rv = node32[v, 0]
        first, last = adj_ptr[v], adj_ptr[v + 1] - 1
        while first <= last:
            if node32[adj[first], 0] < rv:
                first += 1
            else:
                adj[first], adj[last] = adj[last], adj[first]
                last -= 1
        waiting[v] = first - adj_ptr[v]
        later_start[v] = first
        if first == adj_ptr[v]:
            queue[tail] = v
            tail += 1
        c = 0
        for q in range(in_ptr[v], in_ptr[v + 1]):
            if node32[in_edges[q, 1], 0] < rv:
                c += 1
        node32[v, 2] = c
    depth = 0
    level_end = tail
    for head in range(n):
        if head == level_end:
            depth += 1
            level_end = tail
        v = queue[head]
        node32[v, 1] = depth
        for q in range(later_start[v], adj_ptr[v + 1]):
            u = adj[q]
            waiting[u] -= 1
            if waiting[u] == 0:
                queue[tail] = u
                tail += 1
    num_levels = depth + 1 if n > 0 else 0

    # Level-sorted layout, rank order within a level (a counting sort by level), and
    # the slots of every node's edges, which follow the same order.
    ptr = np.zeros(num_levels + 1, np.int64)
    visited_ptr = np.zeros(num_levels + 1, np.int64)
    unvisited_ptr = np.zeros(num_levels + 1, np.int64)
    for v in range(n):
        lvl = node32[v, 1]
        level[v] = lvl
        ptr[lvl + 1] += 1
        visited_ptr[lvl + 1] += node32[v, 2]
        unvisited_ptr[lvl + 1] += node32[v, 3] - node32[v, 2]
    for lvl in range(num_levels):
        ptr[lvl + 1] += ptr[lvl]
        visited_ptr[lvl + 1] += visited_ptr[lvl]
        unvisited_ptr[lvl + 1] += unvisited_ptr[lvl]
    fill = ptr[:num_levels].copy()
    vis_fill = visited_ptr[:num_levels].copy()
    unv_fill = unvisited_ptr[:num_levels].copy()
    for r in range(n):
        v = order[r]
        lvl = node32[v, 1]
        p = fill[lvl]
        fill[lvl] += 1
        perm[p] = v
        pos[v] = p
        edge_start[v, 0] = vis_fill[lvl]
        edge_start[v, 1] = unv_fill[lvl]
        vis_fill[lvl] += node32[v, 2]
        unv_fill[lvl] += node32[v, 3] - node32[v, 2]
    return ptr, visited_ptr, unvisited_ptr


@jit()
def _edges(node32, in_ptr, in_edges, pos, ptr, level, edge_start, visited_eid, visited,
           unvisited_eid, unvisited, unvisited_pos):
    """Write every node's visited and unvisited in-edges (column order) to its slots."""
    for v in range(node32.shape[0]):
        rv = node32[v, 0]
        pv = pos[v]
        local = pv - ptr[level[v]]
        qv = edge_start[v, 0]
        qu = edge_start[v, 1]
        for q in range(in_ptr[v], in_ptr[v + 1]):
            e = in_edges[q, 0]
            a = in_edges[q, 1]
            if node32[a, 0] < rv:
                visited_eid[qv] = e
                visited[0, qv] = a
                visited[1, qv] = v
                visited[2, qv] = pos[a]
                visited[3, qv] = pv
                visited[4, qv] = local
                qv += 1
            else:
                unvisited_eid[qu] = e
                unvisited[0, qu] = a
                unvisited[1, qu] = v
                unvisited_pos[0, qu] = pos[a]
                unvisited_pos[1, qu] = pv
                qu += 1
