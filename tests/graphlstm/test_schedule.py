import dataclasses

import pytest
import torch
from torch_geometric.data import Batch, Data

from graphlstm.schedule import build_schedule, order_from_score

# Every test runs on the compiled kernels and on the PyTorch reference path.
pytestmark = pytest.mark.usefixtures("engine")


def brute_force_levels(edge_index, order):
    """docs/design.md, "Levels", literally: level(v) = 1 + max level of earlier
    neighbours, either direction."""
    n = order.numel()
    rank = {v: k for k, v in enumerate(order.tolist())}
    neighbours = [set() for _ in range(n)]
    for a, b in edge_index.t().tolist():
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    level = [0] * n
    for v in order.tolist():
        earlier = [level[u] for u in neighbours[v] if rank[u] < rank[v]]
        level[v] = 1 + max(earlier) if earlier else 0
    return level


def random_graph(n, e, gen):
    return torch.randint(0, n, (2, e), generator=gen)


@pytest.mark.parametrize("seed", range(40))
def test_levels_match_definition(seed):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 80, (1,), generator=gen))
    e = int(torch.randint(0, 4 * n, (1,), generator=gen))
    edge_index = random_graph(n, e, gen)  # directed, with self-loops and duplicates
    order = torch.randperm(n, generator=gen)
    s = build_schedule(edge_index, n, order=order)
    assert s.level.tolist() == brute_force_levels(edge_index, order)
    assert s.num_levels == (max(s.level.tolist()) + 1)


def test_schedule_layout_is_consistent():
    gen = torch.Generator().manual_seed(1)
    n = 300
    edge_index = random_graph(n, 1200, gen)
    s = build_schedule(edge_index, n, order=torch.randperm(n, generator=gen))
    src, dst = edge_index
    # perm lists each node once, level by level, rank order within a level.
    assert sorted(s.perm.tolist()) == list(range(n))
    assert torch.equal(s.pos[s.perm], torch.arange(n))
    for lvl in range(s.num_levels):
        nodes = s.level_nodes(lvl)
        assert bool((s.level[nodes] == lvl).all())
        assert bool((s.rank[nodes].diff() > 0).all())
    # adjacent nodes never share a level
    not_loop = src != dst
    assert bool((s.level[src[not_loop]] != s.level[dst[not_loop]]).all())
    # every non-self-loop edge is visited xor unvisited, visited = earlier source
    all_eids = torch.cat([s.visited_eid, s.unvisited_eid]).sort().values
    assert torch.equal(all_eids, not_loop.nonzero().view(-1))
    v = s.visited_eid
    assert bool((s.rank[src[v]] < s.rank[dst[v]]).all())
    assert bool((s.rank[src[s.unvisited_eid]] > s.rank[dst[s.unvisited_eid]]).all())
    # visited edges of level l target level l and read only earlier levels
    for lvl in range(s.num_levels):
        e = v[s.visited_ptr[lvl]:s.visited_ptr[lvl + 1]]
        assert bool((s.level[dst[e]] == lvl).all())
        assert bool((s.level[src[e]] < lvl).all())
    for lvl in range(s.num_levels):
        e = s.unvisited_eid[s.unvisited_ptr[lvl]:s.unvisited_ptr[lvl + 1]]
        assert bool((s.level[dst[e]] == lvl).all())
        assert bool((s.level[src[e]] > lvl).all())  # read before they are updated
    assert s.unvisited_ptr[-1] == s.unvisited_eid.numel()
    assert torch.equal(s.visited_src_pos, s.pos[src[v]])
    local = s.pos[dst[v]] - torch.tensor(s.ptr)[s.level[dst[v]]]
    assert torch.equal(s.visited_dst_local, local)
    assert torch.equal(s.in_degree, torch.bincount(dst[not_loop], minlength=n))


def test_score_order_higher_first_ties_by_index():
    score = torch.tensor([0.5, 2.0, 0.5, -1.0, 2.0])
    assert order_from_score(score).tolist() == [1, 4, 0, 2, 3]
    s = build_schedule(torch.empty(2, 0, dtype=torch.long), 5, score=score)
    assert s.order.tolist() == [1, 4, 0, 2, 3]


def test_default_order_is_index_order_and_chain_is_sequential():
    n = 10
    chain = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    s = build_schedule(chain, n)
    assert torch.equal(s.order, torch.arange(n))
    assert s.level.tolist() == list(range(n))  # a path in order is fully sequential
    # visiting every other node first halves the critical path
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)])
    assert build_schedule(chain, n, order=order).num_levels == 2


def test_directed_edge_from_later_node_still_orders_levels():
    # Edge 1 -> 0 only, order [0, 1]: node 0 must read node 1's OLD state, so node 1
    # may not run before node 0 even though 0 has no visited in-neighbour.
    s = build_schedule(torch.tensor([[1], [0]]), 2, order=torch.tensor([0, 1]))
    assert s.level.tolist() == [0, 1]
    assert s.visited_eid.numel() == 0 and s.unvisited_eid.tolist() == [0]


def test_batch_shares_levels():
    gen = torch.Generator().manual_seed(3)
    graphs, scores = [], []
    for n in (5, 17, 1, 30):
        graphs.append(Data(edge_index=random_graph(n, 3 * n, gen), num_nodes=n))
        scores.append(torch.rand(n, generator=gen))
    batch = Batch.from_data_list(graphs)
    s = build_schedule(batch.edge_index, batch.num_nodes, score=torch.cat(scores))
    bounds = zip(batch.ptr[:-1].tolist(), batch.ptr[1:].tolist(), strict=True)
    for g, sc, (lo, hi) in zip(graphs, scores, bounds, strict=True):
        alone = build_schedule(g.edge_index, g.num_nodes, score=sc)
        assert torch.equal(s.level[lo:hi], alone.level)
    assert s.num_levels == max(
        build_schedule(g.edge_index, g.num_nodes, score=sc).num_levels
        for g, sc in zip(graphs, scores, strict=True)
    )


def test_empty_graph():
    s = build_schedule(torch.empty(2, 0, dtype=torch.long), 0)
    assert s.num_levels == 0 and s.ptr == [0]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(edge_index=[[0, 1], [1, 0]]), TypeError, "edge_index"),
        (dict(edge_index=torch.tensor([[0.0], [1.0]])), TypeError, "edge_index"),
        (dict(edge_index=torch.tensor([0, 1])), ValueError, "edge_index"),
        (dict(edge_index=torch.tensor([[0], [5]])), ValueError, "edge_index"),
        (dict(edge_index=torch.tensor([[-1], [0]])), ValueError, "edge_index"),
        (dict(order=torch.tensor([0, 0, 1])), ValueError, "order"),
        (dict(order=torch.tensor([0, 1])), ValueError, "order"),
        (dict(order=torch.tensor([0.0, 1.0, 2.0])), TypeError, "order"),
        (dict(score=torch.tensor([0.0, float("nan"), 1.0])), ValueError, "score"),
        (dict(score=torch.tensor([0.0, float("inf"), 1.0])), ValueError, "score"),
        (dict(score=torch.zeros(4)), ValueError, "score"),
        (dict(order=torch.arange(3), score=torch.zeros(3)), ValueError, "order"),
        (dict(num_nodes=-1), ValueError, "num_nodes"),
        (dict(num_nodes=2.5), TypeError, "num_nodes"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        build_schedule(**args)


def test_to_moves_every_tensor():
    # A cycle with a chord and a self-loop: visited and unvisited edges, several levels.
    edge_index = torch.tensor([[0, 1, 2, 3, 0, 2, 1], [1, 2, 3, 0, 2, 0, 1]])
    s = build_schedule(edge_index, 4, order=torch.tensor([2, 0, 3, 1]))
    names = [f.name for f in dataclasses.fields(s)]
    tensors = [name for name in names if isinstance(getattr(s, name), torch.Tensor)]
    others = [name for name in names if name not in tensors]
    assert {"order", "perm", "visited_eid", "unvisited_edge_index_pos"} <= set(tensors)
    # The meta device: a real move on a CPU-only machine (no data, shapes and dtypes kept).
    moved = s.to("meta")
    assert moved is not s and moved.device == torch.device("meta")
    for name in tensors:
        before, after = getattr(s, name), getattr(moved, name)
        assert after.device.type == "meta", name
        assert (after.shape, after.dtype) == (before.shape, before.dtype), name
        assert before.device.type == "cpu", name  # the original stays where it was
    for name in others:
        assert getattr(moved, name) == getattr(s, name), name
    same = s.to("cpu")
    for name in tensors:
        assert torch.equal(getattr(same, name), getattr(s, name)), name
    assert f"num_levels={s.num_levels}" in repr(moved)
