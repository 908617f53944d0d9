"""Compiled connected components for :func:`graphlstm.coarsen` (union-find).

One pass over the kept edges with union-find (path halving; the root of a set
is always its smallest node, because a union links the larger root under the
smaller one), then one pass over the nodes that numbers the sets in the order
of their smallest node. O((N + E) α(N)), no per-iteration tensor work, which
is what makes it pay on the CPU: the PyTorch path (min-label propagation with
pointer jumping, :func:`graphlstm.coarsening._components_torch`) needs a few
whole-graph scatters per round and a number of rounds that grows with the
diameter of the merged regions.
"""

from __future__ import annotations

import numpy as np

from graphlstm._kernels._jit import jit

__all__ = ["connected_components"]


def connected_components(src, dst, num_nodes):
    """Cluster id ``[N]`` (int64) of every node and the number of clusters.

    ``src``, ``dst``: int64 ``[E]`` in ``[0, num_nodes)``, the kept edges
    (direction ignored). Clusters are numbered ``0..C-1`` by their smallest node.
    """
    cluster = np.empty(num_nodes, np.int64)
    num_clusters = _union_find(src, dst, num_nodes, cluster)
    return cluster, int(num_clusters)


@jit()
def _find(parent, node):
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving
        node = parent[node]
    return node


@jit()
def _union_find(src, dst, num_nodes, cluster):
    parent = np.arange(num_nodes)
    for e in range(src.size):
        a = _find(parent, src[e])
        b = _find(parent, dst[e])
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b
    # Roots are the smallest node of their set and come first in index order,
    # so one ascending pass numbers the sets by their smallest node.
    count = 0
    for node in range(num_nodes):
        root = _find(parent, node)
        if root == node:
            cluster[node] = count
            count += 1
        else:
            cluster[node] = cluster[root]
    return count
