"""graphlstm.coarsen and the evolution step against independent computations:
scipy's connected components, enumerated Metropolis-Hastings chains, plain loops."""

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

import graphlstm
from graphlstm.coarsening import (
    coarsen,
    compose,
    evolve,
    majority_label,
    merge_targets,
    pool,
    pool_batch,
    pool_edges,
    unpool,
)

# The components run on the compiled union-find and on the PyTorch path.
pytestmark = pytest.mark.usefixtures("engine")


def random_graph(seed, n=40, e=90):
    """A directed multigraph with self-loops, duplicates, some reversed twins
    and an independent probability on every edge (twins may disagree)."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=gen)
    twins = edge_index[:, : e // 3].flip(0)
    edge_index = torch.cat([edge_index, twins, edge_index[:, :5]], 1)
    prob = torch.rand(edge_index.size(1), generator=gen, dtype=torch.float64)
    return edge_index, prob


def scipy_clusters(edge_index, prob, n, threshold):
    """Components of the edges with prob >= threshold, numbered by smallest node."""
    keep = (prob >= threshold).numpy()
    src, dst = edge_index[0].numpy()[keep], edge_index[1].numpy()[keep]
    graph = sp.coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    _, label = connected_components(graph, directed=True, connection="weak")
    smallest = {}
    for node, lab in enumerate(label):
        smallest.setdefault(lab, node)
    ranks = {lab: rank for rank, lab in enumerate(sorted(smallest, key=smallest.get))}
    return torch.tensor([ranks[lab] for lab in label])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_threshold_equals_scipy_components(seed, threshold):
    n = 40 + seed
    edge_index, prob = random_graph(seed, n=n)
    if seed == 5:
        prob[:10] = 1.0
    cluster = coarsen(edge_index, n, prob, threshold=threshold)
    assert cluster.dtype == torch.long
    assert torch.equal(cluster, scipy_clusters(edge_index, prob, n, threshold))


def test_large_graph_equals_scipy():
    n = 3000
    edge_index, prob = random_graph(11, n=n, e=6000)
    cluster = coarsen(edge_index, n, prob.float(), threshold=0.4)
    assert torch.equal(cluster, scipy_clusters(edge_index, prob.float(), n, 0.4))


def test_compiled_and_torch_paths_agree():
    edge_index, prob = random_graph(3, n=500, e=900)
    with graphlstm.use_backend("torch"):
        by_torch = coarsen(edge_index, 500, prob, threshold=0.35)
    with graphlstm.use_backend("compiled"):
        by_numba = coarsen(edge_index, 500, prob, threshold=0.35)
    assert torch.equal(by_torch, by_numba)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    with graphlstm.use_backend("torch"):
        by_torch = coarsen(edge_index, 500, prob, generator=g1)
    with graphlstm.use_backend("compiled"):
        by_numba = coarsen(edge_index, 500, prob, generator=g2)
    assert torch.equal(by_torch, by_numba)


def make_batch(seed, sizes=(12, 1, 20, 7)):
    """Graphs alone and the same graphs batched (PyG layout: nodes offset)."""
    graphs, parts, probs, batch = [], [], [], []
    offset = 0
    for g, n in enumerate(sizes):
        edge_index, prob = random_graph(seed * 10 + g, n=n, e=2 * n)
        graphs.append((edge_index, prob, n))
        parts.append(edge_index + offset)
        probs.append(prob)
        batch.append(torch.full((n,), g))
        offset += n
    return graphs, torch.cat(parts, 1), torch.cat(probs), torch.cat(batch), offset


@pytest.mark.parametrize("seed", range(3))
def test_batch_equals_graphs_alone_and_scipy(seed):
    graphs, edge_index, prob, batch, n = make_batch(seed)
    cluster = coarsen(edge_index, n, prob, threshold=0.5, batch=batch)
    assert torch.equal(cluster, scipy_clusters(edge_index, prob, n, 0.5))
    expected, offset = [], 0
    for ei, p, size in graphs:
        alone = coarsen(ei, size, p, threshold=0.5)
        expected.append(alone + offset)
        offset += int(alone.max()) + 1
    assert torch.equal(cluster, torch.cat(expected))
    # No cluster spans two graphs.
    for c in range(int(cluster.max()) + 1):
        assert batch[cluster == c].unique().numel() == 1
    assert torch.equal(pool_batch(batch, cluster)[cluster], batch)


@pytest.mark.parametrize("acceptance", ["graph", "clique"])
def test_evolve_deterministic_batch_equals_graphs_alone(acceptance):
    graphs, edge_index, prob, batch, n = make_batch(7, sizes=(15, 9, 1, 22))
    step = evolve(edge_index, n, prob, batch=batch, deterministic=True, acceptance=acceptance)
    expected, accepted, offset = [], [], 0
    for ei, p, size in graphs:
        alone = evolve(ei, size, p, deterministic=True, acceptance=acceptance)
        expected.append(alone.cluster + offset)
        offset += int(alone.cluster.max()) + 1
        accepted.append(alone.accepted)
    assert torch.equal(step.cluster, torch.cat(expected))
    assert torch.equal(step.accepted, torch.cat(accepted))


def test_sampled_keeps_each_pair_with_its_probability():
    # Disjoint pairs (a matching), so a pair is kept iff its ends share a cluster.
    # Pairs are given as both directions, as duplicates, or one direction only:
    # each must still be one draw with its own probability.
    probs = [0.0, 0.05, 0.2, 0.5, 0.7, 0.95, 1.0]
    src, dst, edge_prob = [], [], []
    for k, p in enumerate(probs):
        a, b = 2 * k, 2 * k + 1
        copies = [(a, b), (b, a)] if k % 3 == 0 else [(a, b)] * 3 if k % 3 == 1 else [(b, a)]
        for s, d in copies:
            src.append(s)
            dst.append(d)
            edge_prob.append(p)
    edge_index = torch.tensor([src, dst])
    prob = torch.tensor(edge_prob, dtype=torch.float64)
    n, trials = 2 * len(probs), 4000
    gen = torch.Generator().manual_seed(2024)
    kept = torch.zeros(len(probs))
    joint = 0  # pairs 3 and 4 kept together: independence of the draws
    for _ in range(trials):
        cluster = coarsen(edge_index, n, prob, generator=gen)
        same = cluster[0::2] == cluster[1::2]
        kept += same
        joint += int(same[3] and same[4])
    for k, p in enumerate(probs):
        sd = math.sqrt(max(p * (1 - p), 1e-12) / trials)
        assert abs(float(kept[k]) / trials - p) <= 5 * sd + 1e-12, (k, p)
    sd = math.sqrt(0.35 * 0.65 / trials)
    assert abs(joint / trials - 0.35) <= 5 * sd


def test_sampled_draws_come_from_the_generator():
    edge_index, prob = random_graph(5, n=60, e=120)
    a = coarsen(edge_index, 60, prob, generator=torch.Generator().manual_seed(1))
    b = coarsen(edge_index, 60, prob, generator=torch.Generator().manual_seed(1))
    c = coarsen(edge_index, 60, prob, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_clusters_are_numbered_by_smallest_node():
    edge_index, prob = random_graph(8, n=80, e=100)
    cluster = coarsen(edge_index, 80, prob, generator=torch.Generator().manual_seed(0))
    first = [int((cluster == c).nonzero()[0]) for c in range(int(cluster.max()) + 1)]
    assert first == sorted(first)
    assert set(cluster.tolist()) == set(range(int(cluster.max()) + 1))


# ---------------------------------------------------------------------------
# Metropolis-Hastings
# ---------------------------------------------------------------------------

TRIANGLE = torch.tensor([[0, 1, 2, 1, 2, 3], [1, 2, 0, 0, 1, 2]])  # pairs 01 12 02 23
TRIANGLE_PROB = torch.tensor([0.7, 0.35, 0.2, 0.7, 0.35, 0.6], dtype=torch.float64)
PAIRS = [(0, 1), (0, 2), (1, 2), (2, 3)]  # ascending, the order of the draws
PAIR_PROB = {(0, 1): 0.7, (1, 2): 0.35, (0, 2): 0.2, (2, 3): 0.6}


def partition(bonds):
    parent = list(range(4))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for (a, b), on in zip(PAIRS, bonds, strict=True):
        if on:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(a) for a in range(4)]
    order = sorted(set(roots))
    return tuple(order.index(r) for r in roots)


def proposal_probability(bonds):
    return math.prod(PAIR_PROB[e] if on else 1 - PAIR_PROB[e]
                     for e, on in zip(PAIRS, bonds, strict=True))


def weight(bonds):
    part = partition(bonds)
    w = 1.0
    for (a, b), on in zip(PAIRS, bonds, strict=True):
        if part[a] == part[b] and not on:
            w *= PAIR_PROB[(a, b)] / (1 - PAIR_PROB[(a, b)])
    return w


STATES = list(itertools.product([0, 1], repeat=4))


def transition_matrix():
    t = np.zeros((len(STATES), len(STATES)))
    for i, b in enumerate(STATES):
        for j, b2 in enumerate(STATES):
            if i != j:
                t[i, j] = proposal_probability(b2) * min(1.0, weight(b2) / weight(b))
        t[i, i] = 1.0 - t[i].sum()
    return t


def test_target_is_stationary_for_the_chain():
    target = np.array([proposal_probability(b) * weight(b) for b in STATES])
    target /= target.sum()
    t = transition_matrix()
    assert np.allclose(target @ t, target, atol=1e-14)
    assert np.allclose(np.linalg.matrix_power(t, 200)[0], target, atol=1e-10)


def test_one_step_acceptance_matches_the_formula():
    for seed in range(30):
        step = evolve(TRIANGLE, 4, TRIANGLE_PROB, generator=torch.Generator().manual_seed(seed))
        gen = torch.Generator().manual_seed(seed)
        draws = torch.rand(len(PAIRS), generator=gen, dtype=torch.float64)
        bonds = tuple(int(float(u) < PAIR_PROB[e]) for u, e in zip(draws, PAIRS, strict=True))
        alpha = min(1.0, weight(bonds))
        assert math.isclose(float(step.acceptance[0]), alpha, rel_tol=1e-12)
        u = float(torch.rand(1, generator=gen, dtype=torch.float64))
        expected = partition(bonds) if u < alpha else (0, 1, 2, 3)
        assert tuple(step.cluster.tolist()) == expected
        assert bool(step.accepted[0]) == (u < alpha)


def test_chain_distribution_after_k_steps():
    steps, trials = 3, 1500
    exact_states = np.linalg.matrix_power(transition_matrix(), steps)[0]
    exact = {}
    for b, p in zip(STATES, exact_states, strict=True):
        exact[partition(b)] = exact.get(partition(b), 0.0) + p
    gen = torch.Generator().manual_seed(99)
    counts = {}
    for _ in range(trials):
        cluster = evolve(TRIANGLE, 4, TRIANGLE_PROB, generator=gen, num_steps=steps).cluster
        key = tuple(cluster.tolist())
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) <= set(exact)
    for key, p in exact.items():
        sd = math.sqrt(p * (1 - p) / trials)
        assert abs(counts.get(key, 0) / trials - p) <= 5 * sd + 1e-9, key


def test_deterministic_mode():
    step = evolve(TRIANGLE, 4, TRIANGLE_PROB, deterministic=True)
    # Proposal: pairs >= 0.5 are 01 and 23 (no absorbed pair): accepted.
    assert step.cluster.tolist() == [0, 0, 1, 1] and bool(step.accepted[0])
    # Threshold 0.3 keeps 01, 12, 23: one clique absorbing 02 (0.2/0.8 < 1/2): rejected.
    step = evolve(TRIANGLE, 4, TRIANGLE_PROB, deterministic=True, threshold=0.3)
    assert math.isclose(float(step.acceptance[0]), 0.25)
    assert step.cluster.tolist() == [0, 1, 2, 3] and not bool(step.accepted[0])


def test_clique_acceptance_tests_each_clique():
    # Two components: the triangle+tail (absorbs 02 at threshold 0.3) and a clean pair.
    edge_index = torch.cat([TRIANGLE, torch.tensor([[4], [5]])], 1)
    prob = torch.cat([TRIANGLE_PROB, torch.tensor([0.9], dtype=torch.float64)])
    graph_mode = evolve(edge_index, 6, prob, deterministic=True, threshold=0.3)
    clique_mode = evolve(edge_index, 6, prob, deterministic=True, threshold=0.3,
                         acceptance="clique")
    assert graph_mode.cluster.tolist() == [0, 1, 2, 3, 4, 5]
    assert clique_mode.cluster.tolist() == [0, 1, 2, 3, 4, 4]
    assert math.isclose(float(clique_mode.acceptance[0]), 0.25)


# ---------------------------------------------------------------------------
# Pooling, the coarse graph, unpooling
# ---------------------------------------------------------------------------

def test_pool_pool_edges_unpool_against_loops():
    edge_index, prob = random_graph(4, n=30, e=70)
    cluster = coarsen(edge_index, 30, prob, threshold=0.6)
    c = int(cluster.max()) + 1
    x = torch.randn(30, 3, dtype=torch.float64)
    pooled = pool(x, cluster)
    for k in range(c):
        assert torch.allclose(pooled[k], x[cluster == k].mean(0), atol=1e-15)
    assert torch.equal(unpool(pooled, cluster), pooled[cluster])
    weight = torch.rand(edge_index.size(1), dtype=torch.float64)
    coarse, coarse_weight = pool_edges(edge_index, cluster, weight)
    expected = {}
    for (j, i), w in zip(edge_index.t().tolist(), weight.tolist(), strict=True):
        a, b = int(cluster[j]), int(cluster[i])
        if a != b:
            expected[(a, b)] = expected.get((a, b), 0.0) + w
    got = {tuple(e): w for e, w in zip(coarse.t().tolist(), coarse_weight.tolist(), strict=True)}
    assert got.keys() == expected.keys() and len(got) == coarse.size(1)
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-12)
    plain, none = pool_edges(edge_index, cluster)
    assert none is None and torch.equal(plain, coarse)


def test_compose_reaches_every_node():
    edge_index, prob = random_graph(6, n=50, e=120)
    first = coarsen(edge_index, 50, prob, threshold=0.7)
    coarse, _ = pool_edges(edge_index, first)
    second = coarsen(coarse, int(first.max()) + 1, torch.rand(coarse.size(1)), threshold=0.5)
    assign = compose([first, second])
    assert torch.equal(assign[0], first) and torch.equal(assign[1], second[first])
    # Every node of every level holds at least one input node.
    assert torch.equal(torch.unique(assign[1]), torch.arange(int(second.max()) + 1))


def test_merge_targets_and_majority_label():
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    labels = torch.tensor([1, 1, 2, -100])
    target, valid = merge_targets(edge_index, labels)
    assert target.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert valid.tolist() == [True, True, False, False]
    cluster = torch.tensor([0, 0, 0, 1, 1])
    assert majority_label(torch.tensor([2, 1, 2, -100, -100]), cluster).tolist() == [2, -100]
    assert majority_label(torch.tensor([3, 1, 1, 3, 0]), cluster).tolist() == [1, 0]


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

EI = torch.tensor([[0, 1], [1, 2]])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(merge_prob=torch.tensor([0.5, 1.5])), ValueError, "'merge_prob'.*\\[0, 1\\]"),
        (dict(merge_prob=torch.tensor([-0.1, 0.5])), ValueError, "'merge_prob'"),
        (dict(merge_prob=torch.tensor([float("nan"), 0.5])), ValueError, "'merge_prob'.*NaN"),
        (dict(merge_prob=torch.tensor([0.5, 0.5, 0.5])), ValueError, "'merge_prob'.*shape"),
        (dict(merge_prob=torch.tensor([1, 0])), TypeError, "'merge_prob'"),
        (dict(merge_prob=[0.5, 0.5]), TypeError, "'merge_prob'"),
        (dict(edge_index=torch.tensor([0, 1])), ValueError, "'edge_index'"),
        (dict(edge_index=torch.tensor([[0, 1], [1, 5]])), ValueError, "'edge_index'"),
        (dict(num_nodes=-1), ValueError, "'num_nodes'"),
        (dict(threshold=1.5), ValueError, "'threshold'"),
        (dict(threshold=float("nan")), ValueError, "'threshold'"),
        (dict(generator=3), TypeError, "'generator'"),
        (dict(batch=torch.tensor([0, 0])), ValueError, "'batch'"),
        (dict(batch=torch.tensor([0, 0, 1])), ValueError, "'edge_index' joins two graphs"),
        (dict(batch=torch.tensor([0.0, 0.0, 0.0])), TypeError, "'batch'"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    args = dict(edge_index=EI, num_nodes=3, merge_prob=torch.tensor([0.5, 0.5]))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        coarsen(args.pop("edge_index"), args.pop("num_nodes"), args.pop("merge_prob"), **args)


def test_evolve_bad_input():
    prob = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="'acceptance'"):
        evolve(EI, 3, prob, acceptance="node")
    with pytest.raises(ValueError, match="'num_steps'"):
        evolve(EI, 3, prob, num_steps=0)
    with pytest.raises(ValueError, match="'num_steps'"):
        evolve(EI, 3, prob, num_steps=2, acceptance="clique")
    with pytest.raises(TypeError, match="'deterministic'"):
        evolve(EI, 3, prob, deterministic="yes")
    with pytest.raises(ValueError, match="'merge_prob'"):
        evolve(EI, 3, torch.tensor([2.0, 0.5]))


def test_pooling_bad_input():
    cluster = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="'src'"):
        pool(torch.ones(4, 2), cluster)
    with pytest.raises(TypeError, match="'cluster'"):
        pool(torch.ones(3, 2), cluster.float())
    with pytest.raises(ValueError, match="'cluster'"):
        pool(torch.ones(3, 2), torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="'num_clusters'"):
        pool(torch.ones(3, 2), cluster, num_clusters=1)
    with pytest.raises(ValueError, match="'src'"):
        unpool(torch.ones(1, 2), cluster)
    with pytest.raises(ValueError, match="'edge_weight'"):
        pool_edges(EI, cluster, torch.ones(3))
    with pytest.raises(ValueError, match="'clusters\\[1\\]'"):
        compose([cluster, torch.tensor([0])])


def test_empty_graphs():
    empty = torch.empty(2, 0, dtype=torch.long)
    assert coarsen(empty, 3, torch.empty(0)).tolist() == [0, 1, 2]
    assert coarsen(empty, 0, torch.empty(0), threshold=0.5).numel() == 0
    assert evolve(empty, 2, torch.empty(0)).cluster.tolist() == [0, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    edge_index, prob = random_graph(9, n=300, e=700)
    cpu = coarsen(edge_index, 300, prob, threshold=0.45)
    gpu = coarsen(edge_index.cuda(), 300, prob.cuda(), threshold=0.45)
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    batch = torch.zeros(300, dtype=torch.long)
    for acceptance in ("graph", "clique"):
        a = evolve(edge_index, 300, prob, batch=batch, deterministic=True, acceptance=acceptance)
        b = evolve(edge_index.cuda(), 300, prob.cuda(), batch=batch.cuda(), deterministic=True,
                   acceptance=acceptance)
        assert torch.equal(a.cluster, b.cluster.cpu())
    cluster = cpu.cuda()
    x = torch.randn(300, 4, dtype=torch.float64)
    assert torch.allclose(pool(x.cuda(), cluster).cpu(), pool(x, cpu))
    coarse, weight = pool_edges(edge_index.cuda(), cluster, torch.ones(edge_index.size(1)).cuda())
    ref, ref_weight = pool_edges(edge_index, cpu, torch.ones(edge_index.size(1)))
    assert torch.equal(coarse.cpu(), ref) and torch.equal(weight.cpu(), ref_weight)
