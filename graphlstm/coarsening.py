r"""Graph coarsening by merge probabilities, and the structure-evolution step of
Liang et al., "Interpretable Structure-Evolving LSTM" (CVPR 2017, arXiv 1703.03055).

A coarsening assigns every node of a graph to a **cluster**: a connected set
of nodes that becomes one node of the next, coarser graph. Clusters are
numbered ``0..C-1`` by their smallest node index, so a batch of graphs (PyG's
``batch`` vector, nodes of graph 0 first) keeps its graphs in order, and
nothing in this module ever merges two graphs of a batch.

- :func:`coarsen`: clusters from a merge probability per edge, deterministic
  (connected components of the edges whose probability reaches a threshold)
  or sampled (one Bernoulli draw per undirected pair).
- :func:`evolve`: the Metropolis-Hastings evolution step: a sampled coarsening
  is the proposal, accepted or rejected per graph.
- :func:`pool`, :func:`pool_edges`, :func:`pool_batch`, :func:`unpool`,
  :func:`compose`: what a model needs around a coarsening: node features and
  states averaged per cluster, the coarse graph, values carried back to the
  nodes, and a chain of coarsenings flattened.
- :func:`merge_targets`, :func:`majority_label`: the supervision of the merge
  probabilities (two nodes of one label should merge).

Undirected pairs
----------------
``merge_prob`` holds one probability per directed edge of ``edge_index``.
Merging is symmetric, so every unordered pair :math:`\{i, j\}`, :math:`i \ne j`,
that is joined by at least one edge (in either direction, any number of
copies) is one **pair**, with the probability
:math:`p_{ij} = \max` over its edges. Then "the components of the edges whose
probability is :math:`\ge t`" and "the components of the pairs whose
probability is :math:`\ge t`" are the same thing; a graph that holds both
directions with equal probabilities (what a symmetric merge head gives) has
:math:`p_{ij}` equal to either. Self-loops are ignored.

Connected components run as union-find compiled by numba on the CPU
(:mod:`graphlstm._kernels.coarsen`, chosen like every compiled kernel by
:mod:`graphlstm.backend`) and as min-label propagation with pointer jumping in
PyTorch elsewhere (CUDA); both give the same clusters.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.utils import coalesce, scatter

from graphlstm import backend
from graphlstm._validation import check_edge_index, check_num_nodes, check_tensor

__all__ = [
    "Evolution",
    "coarsen",
    "compose",
    "evolve",
    "majority_label",
    "merge_targets",
    "pool",
    "pool_batch",
    "pool_edges",
    "unpool",
]


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

def _check_merge_prob(merge_prob, num_edges: int, name: str = "merge_prob") -> Tensor:
    check_tensor(merge_prob, name)
    if not merge_prob.is_floating_point():
        raise TypeError(f"'{name}' must be a floating point tensor (one probability per edge), "
                        f"got dtype {merge_prob.dtype}")
    if merge_prob.dim() == 2 and merge_prob.size(1) == 1:
        merge_prob = merge_prob.view(-1)
    if merge_prob.dim() != 1 or merge_prob.numel() != num_edges:
        raise ValueError(f"'{name}' must hold one probability per edge, shape [{num_edges}], "
                         f"got {list(merge_prob.shape)}")
    if num_edges:
        if bool(torch.isnan(merge_prob).any()):
            raise ValueError(f"'{name}' must not contain NaN")
        lo, hi = float(merge_prob.min()), float(merge_prob.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"'{name}' must be probabilities in [0, 1], got values in "
                             f"[{lo}, {hi}]")
    return merge_prob


def _check_threshold(threshold, name: str = "threshold") -> float:
    if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
            or not 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"'{name}' must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"'generator' must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")


def _check_batch(batch, num_nodes: int, edge_index: Tensor | None = None) -> Tensor | None:
    if batch is None:
        return None
    check_tensor(batch, "batch")
    if batch.dtype not in (torch.int64, torch.int32) or batch.dim() != 1:
        raise TypeError(f"'batch' must be a 1-D integer tensor (the graph of every node), "
                        f"got dtype {batch.dtype} and shape {list(batch.shape)}")
    if batch.numel() != num_nodes:
        raise ValueError(f"'batch' must hold one graph index per node, shape [{num_nodes}], "
                         f"got {list(batch.shape)}")
    batch = batch.long()
    if num_nodes and int(batch.min()) < 0:
        raise ValueError(f"'batch' must be non-negative, got the minimum {int(batch.min())}")
    if edge_index is not None and edge_index.numel():
        crossing = batch[edge_index[0]] != batch[edge_index[1]]
        if bool(crossing.any()):
            e = int(crossing.nonzero()[0, 0])
            raise ValueError(
                f"'edge_index' joins two graphs of the batch: edge {e} "
                f"({int(edge_index[0, e])} -> {int(edge_index[1, e])}) links graph "
                f"{int(batch[edge_index[0, e]])} and graph {int(batch[edge_index[1, e]])}"
            )
    return batch


def _check_cluster(cluster, num_nodes: int | None = None, name: str = "cluster") -> Tensor:
    check_tensor(cluster, name)
    if cluster.dtype not in (torch.int64, torch.int32) or cluster.dim() != 1:
        raise TypeError(f"'{name}' must be a 1-D integer tensor (the cluster of every node), "
                        f"got dtype {cluster.dtype} and shape {list(cluster.shape)}")
    if num_nodes is not None and cluster.numel() != num_nodes:
        raise ValueError(f"'{name}' must hold one cluster per node, shape [{num_nodes}], "
                         f"got {list(cluster.shape)}")
    if cluster.numel() and int(cluster.min()) < 0:
        raise ValueError(f"'{name}' must be non-negative, got the minimum {int(cluster.min())}")
    return cluster.long()


def _num_clusters(cluster: Tensor, num_clusters, name: str = "num_clusters") -> int:
    needed = int(cluster.max()) + 1 if cluster.numel() else 0
    if num_clusters is None:
        return needed
    num_clusters = check_num_nodes(num_clusters, name)
    if num_clusters < needed:
        raise ValueError(f"'{name}' is {num_clusters}, but 'cluster' holds the cluster "
                         f"{needed - 1}")
    return num_clusters


# ---------------------------------------------------------------------------
# Pairs and connected components
# ---------------------------------------------------------------------------

def _pairs(edge_index: Tensor, merge_prob: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The undirected pairs ``[2, P]`` (smaller node first, sorted) and their
    probability ``[P]`` (the maximum over the pair's edges); self-loops dropped."""
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    proper = lo != hi
    lo, hi, prob = lo[proper], hi[proper], merge_prob[proper]
    key = lo * num_nodes + hi
    unique, inverse = torch.unique(key, sorted=True, return_inverse=True)
    pair_prob = prob.new_zeros(unique.numel()).scatter_reduce(
        0, inverse, prob, reduce="amax", include_self=False
    )
    return torch.stack([unique // num_nodes, unique % num_nodes]), pair_prob


def _components(src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """Cluster of every node: the connected components of the edges ``src - dst``
    (direction ignored), numbered by their smallest node."""
    kernels = backend.kernels_for(src)
    if kernels is not None:
        try:
            from graphlstm._kernels.coarsen import connected_components

            cluster, _ = connected_components(
                src.contiguous().numpy(), dst.contiguous().numpy(), num_nodes
            )
            return torch.from_numpy(cluster)
        except kernels.CompileError as error:
            backend.disable_after_failure(error)
    return _components_torch(src, dst, num_nodes)


def _components_torch(src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """Min-label propagation with pointer jumping (runs on any device).

    Every label is a node of the same component and never above the node
    itself; each round lowers both ends of every edge to the smaller of their
    labels, then jumps every label to its label's label. At the fixed point
    every edge joins equal labels, so each component holds one label, which is
    its smallest node (that node's label can never go below itself).
    """
    arange = torch.arange(num_nodes, device=src.device)
    label = arange.clone()
    if src.numel():
        while True:
            low = torch.minimum(label[src], label[dst])
            new = label.scatter_reduce(0, src, low, reduce="amin")
            new = new.scatter_reduce(0, dst, low, reduce="amin")
            new = new[new]
            if torch.equal(new, label):
                break
            label = new
    is_root = label == arange
    number = torch.cumsum(is_root, 0) - 1
    return number[label]


# ---------------------------------------------------------------------------
# Coarsening
# ---------------------------------------------------------------------------

def _keep(pair_prob: Tensor, threshold: float | None, generator) -> Tensor:
    if threshold is not None:
        return pair_prob >= threshold
    device = generator.device if generator is not None else pair_prob.device
    draws = torch.rand(pair_prob.numel(), generator=generator, device=device,
                       dtype=torch.float64)
    # rand is in [0, 1): p = 0 is never kept, p = 1 always.
    return draws.to(pair_prob.device) < pair_prob.double()


def _prepare(edge_index, num_nodes, merge_prob, threshold, generator, batch):
    num_nodes = check_num_nodes(num_nodes)
    edge_index = check_edge_index(edge_index, num_nodes)
    merge_prob = _check_merge_prob(merge_prob, edge_index.size(1))
    if merge_prob.device != edge_index.device:
        raise ValueError(f"'merge_prob' is on {merge_prob.device}, 'edge_index' on "
                         f"{edge_index.device}")
    if threshold is not None:
        threshold = _check_threshold(threshold)
    _check_generator(generator)
    batch = _check_batch(batch, num_nodes, edge_index)
    pairs, pair_prob = _pairs(edge_index, merge_prob.detach(), num_nodes)
    return num_nodes, pairs, pair_prob, threshold, batch


def coarsen(
    edge_index: Tensor,
    num_nodes: int,
    merge_prob: Tensor,
    *,
    threshold: float | None = None,
    generator: torch.Generator | None = None,
    batch: Tensor | None = None,
) -> Tensor:
    r"""Group the nodes of a graph into clusters by the merge probability of its edges.

    Every undirected pair :math:`\{i, j\}` joined by an edge is **kept** or not
    (see the module docstring for how the edges of a pair combine into one
    probability :math:`p_{ij}`):

    - with ``threshold=t``: kept iff :math:`p_{ij} \ge t` (deterministic);
    - without: kept with probability :math:`p_{ij}`, one Bernoulli draw per
      pair, drawn from ``generator`` (pairs in ascending order of
      :math:`(i, j)`, :math:`i < j`).

    The clusters are the connected components of the kept pairs.

    Parameters
    ----------
    edge_index : LongTensor ``[2, E]``
        The graph (PyG convention; direction does not matter here).
    num_nodes : int
        ``N``.
    merge_prob : Tensor ``[E]``
        Probability in ``[0, 1]`` that the two ends of each edge merge.
        Detached: the clusters carry no gradient (supervise the probabilities
        with a loss of their own, e.g. against :func:`merge_targets`).
    threshold : float in ``[0, 1]``, optional
        Deterministic mode: keep the pairs with probability ``>= threshold``.
    generator : torch.Generator, optional
        The source of the draws in sampled mode (default: PyTorch's global one).
    batch : LongTensor ``[N]``, optional
        The graph of every node (PyG's ``batch``). Checked: no edge may join
        two graphs, so no cluster ever spans two graphs. In deterministic mode
        the clusters of a batch are those of its graphs coarsened alone (then
        renumbered); sampled, the draws are shared among the graphs.

    Returns
    -------
    cluster : LongTensor ``[N]``
        Values ``0..C-1``; clusters numbered in the order of their smallest node.

    Examples
    --------
    >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    >>> coarsen(edge_index, 3, torch.tensor([0.9, 0.9, 0.1, 0.1]), threshold=0.5)
    tensor([0, 0, 1])
    """
    num_nodes, pairs, pair_prob, threshold, _ = _prepare(
        edge_index, num_nodes, merge_prob, threshold, generator, batch
    )
    keep = _keep(pair_prob, threshold, generator)
    return _components(pairs[0, keep], pairs[1, keep], num_nodes)


# ---------------------------------------------------------------------------
# Metropolis-Hastings evolution step
# ---------------------------------------------------------------------------

class Evolution(NamedTuple):
    """The result of :func:`evolve`.

    Fields
    ------
    cluster : LongTensor ``[N]``
        The accepted clustering (every node alone in a graph whose proposals
        were all rejected).
    accepted : BoolTensor ``[B]``
        Per graph, whether the last step accepted its proposal.
    acceptance : Tensor ``[B]`` (float64)
        Per graph, the acceptance probability :math:`\\alpha` of the last step.
    """

    cluster: Tensor
    accepted: Tensor
    acceptance: Tensor


def _absorbed_log_weight(pairs: Tensor, pair_logit: Tensor, kept: Tensor, cluster: Tensor,
                         group: Tensor, num_groups: int) -> Tensor:
    """``log w`` summed per group (graph or clique) for the bond configuration
    ``kept`` whose components are ``cluster``."""
    absorbed = (cluster[pairs[0]] == cluster[pairs[1]]) & ~kept
    terms = torch.where(absorbed, pair_logit, 0.0)
    log_w = terms.new_zeros(num_groups).index_add(0, group, terms)
    # +inf and -inf in one group (a certain and an impossible absorbed pair)
    # cannot arise from proposals; count it as impossible all the same.
    return torch.nan_to_num(log_w, nan=-torch.inf)


def _accept(log_ratio: Tensor, deterministic: bool, generator, device) -> tuple[Tensor, Tensor]:
    acceptance = log_ratio.clamp(max=0.0).exp()
    if deterministic:
        return acceptance >= 0.5, acceptance
    gen_device = generator.device if generator is not None else device
    draws = torch.rand(acceptance.numel(), generator=generator, device=gen_device,
                       dtype=torch.float64).to(device)
    return draws < acceptance, acceptance


def evolve(
    edge_index: Tensor,
    num_nodes: int,
    merge_prob: Tensor,
    *,
    batch: Tensor | None = None,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    threshold: float = 0.5,
    num_steps: int = 1,
    acceptance: str = "graph",
) -> Evolution:
    r"""One structure-evolution step: propose a coarsening, accept it by
    Metropolis-Hastings (per graph of a batch).

    This follows the evolution step of Liang et al. (CVPR 2017, §3.2): the
    merge probabilities of the edges propose a grouping of the nodes into
    cliques, and a Metropolis-Hastings test decides whether the graph takes
    it. The paper's own equations for the proposal and the target could not
    be read here (only its abstract and a reader's notes on it, which say the
    paper's target rewards candidates that improve the task), so the
    following is *our* reading, stated so that it can be checked; the docs
    page ``docs/evolving.md`` says where it differs.

    **State.** A bond configuration :math:`b \in \{0, 1\}^P` over the
    undirected pairs of the graph; the graph it stands for, :math:`G(b)`, has
    the connected components of the kept pairs as nodes. The chain starts at
    :math:`b_0 = 0`: :math:`G(b_0)` is the current graph, every node alone.

    **Proposal** (the paper's "candidate structure": nodes grouped into
    cliques by sampling the edges with their merge probabilities). An
    independence proposal, one Bernoulli draw per pair:

    .. math::
        q(b \to b') = Q(b') = \prod_{e} p_e^{b'_e} (1 - p_e)^{1 - b'_e}.

    **Target.** The merge probabilities as an edge-compatibility model of the
    *clustering*: every pair inside a cluster of :math:`G(b)` counts as
    merged, every pair between clusters as cut,

    .. math::
        P(b \mid I) \propto Q(b)\, w(b), \qquad
        w(b) = \prod_{e \in A(b)} \frac{p_e}{1 - p_e},

    where :math:`A(b)` are the pairs that the components of :math:`b` absorb
    without having been drawn (both ends in one cluster, :math:`b_e = 0`).
    This is :math:`\prod_{e\ \mathrm{merged}} p_e \prod_{e\ \mathrm{cut}} (1 - p_e)`
    with "merged" read from the clusters rather than from the draws: a clique
    that chains through drawn pairs also merges the pairs it closes over, and
    the target charges them at their own probability.

    **Acceptance** (Metropolis-Hastings):

    .. math::
        \alpha(b \to b') = \min\Big(1,
            \frac{q(b' \to b)\, P(b' \mid I)}{q(b \to b')\, P(b \mid I)}\Big)
        = \min\Big(1, \frac{w(b')}{w(b)}\Big).

    From :math:`b_0` (where :math:`w = 1`) a proposal is accepted with
    probability :math:`\min(1, w(b'))`: always when it absorbs no pair, more
    rarely the more pairs of low probability its cliques close over. A
    rejected graph keeps its structure for this step. ``num_steps > 1`` runs
    the chain further (its stationary distribution is :math:`P(b \mid I)`).

    ``acceptance="clique"`` (our extension, for large graphs, where one test
    for the whole graph almost always finds some absorbed pair of low
    probability and rejects everything) tests every proposed clique
    :math:`c` on its own with :math:`\alpha_c = \min(1, w_c)`, :math:`w_c`
    the product over the pairs that :math:`c` absorbs; :math:`w(b') = \prod_c
    w_c`, so a graph of one clique is tested exactly as in ``"graph"`` mode.
    One step only.

    **Deterministic mode** (evaluation): the proposal keeps the pairs with
    :math:`p_e \ge` ``threshold`` (the most probable draw when
    ``threshold=0.5``) and a graph (or clique) accepts when
    :math:`\alpha \ge 1/2` (the more probable outcome of the acceptance
    draw). No randomness is used.

    Parameters
    ----------
    edge_index, num_nodes, merge_prob, batch
        As in :func:`coarsen`.
    generator : torch.Generator, optional
        The source of the proposal and acceptance draws (default: PyTorch's
        global one); give one to make a run reproducible.
    deterministic : bool, optional
        See above. (default: ``False``)
    threshold : float in ``[0, 1]``, optional
        The proposal threshold of deterministic mode. (default: ``0.5``)
    num_steps : int, optional
        Metropolis-Hastings steps (``"graph"`` mode). (default: ``1``)
    acceptance : ``"graph"`` or ``"clique"``, optional
        What one acceptance test decides on. (default: ``"graph"``)

    Returns
    -------
    Evolution
        ``(cluster, accepted, acceptance)``; see :class:`Evolution`. In
        ``"clique"`` mode ``accepted`` says whether a graph accepted any
        clique and ``acceptance`` is its smallest clique acceptance.
    """
    if not isinstance(deterministic, bool):
        raise TypeError(f"'deterministic' must be a bool, got {deterministic!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"'num_steps' must be a positive int, got {num_steps!r}")
    if acceptance not in ("graph", "clique"):
        raise ValueError(f"'acceptance' must be 'graph' or 'clique', got {acceptance!r}")
    if acceptance == "clique" and num_steps != 1:
        raise ValueError(f"'num_steps' must be 1 with acceptance='clique', got {num_steps}")
    threshold = _check_threshold(threshold)
    num_nodes, pairs, pair_prob, _, batch = _prepare(
        edge_index, num_nodes, merge_prob, None, generator, batch
    )
    device = pairs.device
    if batch is None:
        num_graphs = 1 if num_nodes else 0
        node_graph = torch.zeros(num_nodes, dtype=torch.long, device=device)
    else:
        num_graphs = int(batch.max()) + 1 if num_nodes else 0
        node_graph = batch
    graph = node_graph[pairs[0]]
    pair_logit = torch.logit(pair_prob.double())
    proposal_threshold = threshold if deterministic else None

    if acceptance == "clique":
        proposal = _keep(pair_prob, proposal_threshold, generator)
        proposed = _components(pairs[0, proposal], pairs[1, proposal], num_nodes).to(device)
        num_cliques = int(proposed.max()) + 1 if num_nodes else 0
        log_w = _absorbed_log_weight(pairs, pair_logit, proposal, proposed,
                                     proposed[pairs[0]], num_cliques)
        taken, clique_acceptance = _accept(log_w, deterministic, generator, device)
        kept = proposal & taken[proposed[pairs[0]]]
        cluster = _components(pairs[0, kept], pairs[1, kept], num_nodes).to(device)
        # Per graph: any merge taken; the smallest acceptance of its cliques.
        merged = torch.zeros(num_nodes, dtype=torch.bool, device=device)
        merged[pairs[0, kept]] = True
        accepted = torch.zeros(num_graphs, dtype=torch.bool, device=device)
        accepted = accepted.index_put((node_graph[merged],), torch.ones_like(merged[merged]))
        clique_graph = torch.zeros(num_cliques, dtype=torch.long, device=device)
        clique_graph = clique_graph.scatter(0, proposed, node_graph)
        smallest = torch.ones(num_graphs, dtype=torch.float64, device=device).scatter_reduce(
            0, clique_graph, clique_acceptance, reduce="amin"
        )
        return Evolution(cluster, accepted, smallest)

    kept = torch.zeros(pairs.size(1), dtype=torch.bool, device=device)
    log_w = torch.zeros(num_graphs, dtype=torch.float64, device=device)
    cluster = torch.arange(num_nodes, device=device)
    accepted = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    alpha = torch.ones(num_graphs, dtype=torch.float64, device=device)
    for _ in range(1 if deterministic else num_steps):
        proposal = _keep(pair_prob, proposal_threshold, generator)
        proposed = _components(pairs[0, proposal], pairs[1, proposal], num_nodes).to(device)
        log_w_new = _absorbed_log_weight(pairs, pair_logit, proposal, proposed, graph,
                                         num_graphs)
        log_ratio = log_w_new - log_w
        log_ratio = torch.where(torch.isnan(log_ratio), -torch.inf, log_ratio)
        accepted, alpha = _accept(log_ratio, deterministic, generator, device)
        kept = torch.where(accepted[graph], proposal, kept)
        log_w = torch.where(accepted, log_w_new, log_w)
        if bool(accepted.all()):
            cluster = proposed
        else:
            cluster = _components(pairs[0, kept], pairs[1, kept], num_nodes).to(device)
    return Evolution(cluster, accepted, alpha)


# ---------------------------------------------------------------------------
# Around a coarsening: pooling, the coarse graph, unpooling
# ---------------------------------------------------------------------------

def pool(src: Tensor, cluster: Tensor, num_clusters: int | None = None) -> Tensor:
    """The mean of ``src`` ``[N, ...]`` over the nodes of every cluster: ``[C, ...]``.

    Use it for node features and for LSTM states ``h`` and ``m`` alike;
    differentiable. A cluster without nodes (only when ``num_clusters`` is
    larger than needed) gets zeros.
    """
    check_tensor(src, "src")
    cluster = _check_cluster(cluster)
    if src.dim() == 0 or src.size(0) != cluster.numel():
        raise ValueError(f"'src' must have one row per node of 'cluster' ({cluster.numel()}), "
                         f"got shape {list(src.shape)}")
    num_clusters = _num_clusters(cluster, num_clusters)
    return scatter(src, cluster.to(src.device), 0, dim_size=num_clusters, reduce="mean")


def pool_edges(
    edge_index: Tensor,
    cluster: Tensor,
    edge_weight: Tensor | None = None,
    num_clusters: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The coarse graph: every edge ``j -> i`` becomes ``cluster[j] -> cluster[i]``;
    edges inside a cluster (self-loops) are dropped and duplicates coalesced
    (sorted by target then source, PyG's ``coalesce`` order).

    Returns ``(edge_index, edge_weight)``: with ``edge_weight`` given, the
    weights of the edges merged into one are summed (pass ones to count the
    edges between two clusters); otherwise ``None``.
    """
    cluster = _check_cluster(cluster)
    num_clusters = _num_clusters(cluster, num_clusters)
    edge_index = check_edge_index(edge_index, cluster.numel())
    if edge_weight is not None:
        check_tensor(edge_weight, "edge_weight")
        if edge_weight.dim() != 1 or edge_weight.numel() != edge_index.size(1):
            raise ValueError(f"'edge_weight' must hold one weight per edge, shape "
                             f"[{edge_index.size(1)}], got {list(edge_weight.shape)}")
    coarse = cluster.to(edge_index.device)[edge_index]
    proper = coarse[0] != coarse[1]
    coarse = coarse[:, proper]
    if edge_weight is None:
        return coalesce(coarse, num_nodes=num_clusters), None
    return coalesce(coarse, edge_weight[proper], num_clusters, reduce="sum")


def pool_batch(batch: Tensor | None, cluster: Tensor, num_clusters: int | None = None
               ) -> Tensor | None:
    """The graph of every cluster (``None`` for ``None``: a single graph)."""
    cluster = _check_cluster(cluster)
    if batch is None:
        return None
    batch = _check_batch(batch, cluster.numel())
    num_clusters = _num_clusters(cluster, num_clusters)
    return batch.new_zeros(num_clusters).scatter_(0, cluster.to(batch.device), batch)


def unpool(src: Tensor, cluster: Tensor) -> Tensor:
    """Every node takes the value of its cluster: ``src[cluster]``, ``[N, ...]``."""
    check_tensor(src, "src")
    cluster = _check_cluster(cluster)
    if cluster.numel() and (src.dim() == 0 or int(cluster.max()) >= src.size(0)):
        raise ValueError(f"'src' must have a row for every cluster (at least "
                         f"{int(cluster.max()) + 1}), got shape {list(src.shape)}")
    return src[cluster.to(src.device)]


def compose(clusters) -> list[Tensor]:
    """Flatten a chain of coarsenings: ``clusters[k]`` maps the nodes of level
    ``k`` to those of level ``k+1``; returns, for every level ``k+1``, the node
    of that level that holds each node of level 0."""
    result = []
    current = None
    for k, cluster in enumerate(clusters):
        cluster = _check_cluster(cluster, None, f"clusters[{k}]")
        if current is not None and current.numel() and int(current.max()) >= cluster.numel():
            raise ValueError(f"'clusters[{k}]' has {cluster.numel()} entries, but level {k} "
                             f"has {int(current.max()) + 1} nodes")
        current = cluster if current is None else cluster[current]
        result.append(current)
    return result


# ---------------------------------------------------------------------------
# Supervision of the merge probabilities
# ---------------------------------------------------------------------------

def majority_label(labels: Tensor, cluster: Tensor, num_clusters: int | None = None,
                   ignore_index: int = -100) -> Tensor:
    """The most frequent label of the nodes of every cluster (ties: the smaller
    label); ``ignore_index`` labels do not vote, and a cluster with no voter
    gets ``ignore_index``."""
    check_tensor(labels, "labels")
    cluster = _check_cluster(cluster)
    if labels.dim() != 1 or labels.numel() != cluster.numel():
        raise ValueError(f"'labels' must hold one label per node, shape [{cluster.numel()}], "
                         f"got {list(labels.shape)}")
    num_clusters = _num_clusters(cluster, num_clusters)
    labels = labels.long()
    valid = labels != ignore_index
    if bool((labels[valid] < 0).any()):
        raise ValueError("'labels' must be non-negative (or ignore_index)")
    num_classes = int(labels[valid].max()) + 1 if bool(valid.any()) else 1
    votes = torch.zeros(num_clusters, num_classes, dtype=torch.long, device=labels.device)
    votes.index_put_((cluster.to(labels.device)[valid], labels[valid]),
                     torch.ones_like(labels[valid]), accumulate=True)
    count, best = votes.max(dim=1)
    return torch.where(count > 0, best, torch.full_like(best, ignore_index))


def merge_targets(edge_index: Tensor, labels: Tensor, ignore_index: int = -100
                  ) -> tuple[Tensor, Tensor]:
    """Merge supervision per edge: ``target[e] = 1.0`` when both ends carry one
    label, else ``0.0``; ``valid[e]`` is ``False`` where either end is
    ``ignore_index`` (leave those edges out of the loss)."""
    check_tensor(labels, "labels")
    if labels.dim() != 1:
        raise ValueError(f"'labels' must be 1-D (one label per node), got {list(labels.shape)}")
    edge_index = check_edge_index(edge_index, labels.numel())
    a, b = labels[edge_index[0]], labels[edge_index[1]]
    valid = (a != ignore_index) & (b != ignore_index)
    return (a == b).to(torch.get_default_dtype()), valid
