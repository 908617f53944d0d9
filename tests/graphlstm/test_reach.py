"""graphlstm.reachable: against a per-target search and against the layer's Jacobian."""

import numpy as np
import pytest
import torch
from torch_geometric.utils import to_undirected

from graphlstm import GraphLSTM, build_schedule, order_from_score, reachable
from graphlstm.reference import reach_reference

DT = torch.float64


def random_directed_graph(seed, n_max=40):
    """Directed edges, self-loops, duplicates, isolated nodes; sometimes undirected."""
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, n_max, (1,), generator=gen))
    e = int(torch.randint(0, 3 * n, (1,), generator=gen))
    edge_index = torch.randint(0, max(1, int(0.9 * n)), (2, e), generator=gen)
    loops = torch.arange(0, n, 3).repeat(2, 1)
    edge_index = torch.cat([edge_index, loops], dim=1)
    if seed % 2 == 0:
        edge_index = to_undirected(edge_index, num_nodes=n)
    if edge_index.size(1):
        edge_index = torch.cat([edge_index, edge_index[:, ::3]], dim=1)  # duplicates
    return n, edge_index, gen


def slic_graph(n_segments=50, size=64):
    from skimage import data
    from skimage.transform import resize

    from segmentation.data.adjacency import region_adjacency
    from segmentation.data.superpixels import slic_superpixels

    image = (resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    labels = slic_superpixels(image, n_segments=n_segments, compactness=10.0)
    edge_index, _ = region_adjacency(labels)
    return int(labels.max()) + 1, edge_index


def generic_layer(f, h, seed):
    torch.manual_seed(seed)
    layer = GraphLSTM(f, h).to(DT)
    # Generic weights (no structure that could cancel a path by accident).
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.8)
    return layer


def jacobian_support(fn, inputs, num_nodes, seed=0):
    """``[N, N]`` bool per input: whether output row t depends on input row u.

    One backward pass per target with a random projection of its output row,
    so that no cancellation between output channels can hide a dependence.
    """
    gen = torch.Generator().manual_seed(seed)
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    support = [torch.zeros(num_nodes, num_nodes, dtype=torch.bool) for _ in inputs]
    for t in range(num_nodes):
        v = torch.randn(out.size(1), generator=gen, dtype=DT)
        grads = torch.autograd.grad(out[t] @ v, inputs, retain_graph=True, allow_unused=True)
        for s, g in zip(support, grads, strict=True):
            if g is not None:
                s[t] = g.abs().sum(dim=1) > 0
    return support


def order_kwargs(kind, n, gen):
    if kind == "order":
        return {"order": torch.randperm(n, generator=gen)}
    if kind == "score":
        # Integer-valued scores: many ties, broken by the smaller index.
        return {"score": torch.randint(0, 4, (n,), generator=gen).to(DT)}
    return {}


def as_order(kwargs, n):
    if "order" in kwargs:
        return kwargs["order"]
    if "score" in kwargs:
        return order_from_score(kwargs["score"])
    return torch.arange(n)


def in_neighbour_closure(reach, edge_index):
    """S(A) = A plus every in-neighbour (self-loops carry nothing)."""
    grown = reach.clone()
    for j, i in edge_index.t().tolist():
        if i != j:
            grown[:, j] |= reach[:, i]
    return grown


# --------------------------------------------------------------------- the per-target search


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("kind", ["order", "score", "index"])
def test_equals_per_target_search_on_random_directed_graphs(seed, kind):
    n, edge_index, gen = random_directed_graph(seed)
    kwargs = order_kwargs(kind, n, gen)
    targets = torch.randint(0, n, (7,), generator=gen)  # repeats allowed
    for layers in (1, 2, 3):
        got = reachable(edge_index, n, targets, num_layers=layers, **kwargs)
        want = reach_reference(edge_index, n, targets, as_order(kwargs, n), layers)
        assert got.dtype == torch.bool and got.shape == (7, n)
        assert torch.equal(got, want)


@pytest.mark.parametrize("kind", ["order", "score", "index"])
def test_equals_per_target_search_on_a_slic_graph(kind):
    n, edge_index = slic_graph(400, 128)
    kwargs = order_kwargs(kind, n, torch.Generator().manual_seed(1))
    got = reachable(edge_index, n, torch.arange(n), **kwargs)
    assert torch.equal(got, reach_reference(edge_index, n, torch.arange(n), as_order(kwargs, n)))
    # The order bounds the reach: a target reads only nodes updated before it.
    rank = build_schedule(edge_index, n, **kwargs).rank
    rows, cols = got.nonzero().t()
    assert bool((rank[cols] <= rank[rows]).all())


def test_path_graph_by_hand():
    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # 0 - 1 - 2 - 3
    index = reachable(path, 4, torch.arange(4))
    assert torch.equal(index, torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    reverse = reachable(path, 4, torch.arange(4), order=torch.tensor([3, 2, 1, 0]))
    assert torch.equal(reverse, torch.triu(torch.ones(4, 4, dtype=torch.bool)))
    # Middle first (1 before 2: ties go to the smaller index), then the ends.
    middle = reachable(path, 4, [0, 3], score=torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert middle.int().tolist() == [[1, 1, 0, 0], [0, 1, 1, 1]]
    # Directed: an edge 0 -> 1 carries nothing back from 1 to 0.
    assert reachable(torch.tensor([[0], [1]]), 2, [0, 1]).int().tolist() == [[1, 0], [1, 1]]


def test_self_loops_and_duplicates_change_nothing():
    n, edge_index, gen = random_directed_graph(5)
    order = torch.randperm(n, generator=gen)
    base = reachable(edge_index, n, torch.arange(n), order=order)
    loops = torch.arange(n).repeat(2, 1)
    noisy = torch.cat([edge_index, loops, edge_index, loops], dim=1)
    assert torch.equal(reachable(noisy, n, torch.arange(n), order=order), base)


def test_two_layers_grow_the_reach_one_hop_and_a_path():
    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    order = torch.tensor([3, 2, 1, 0])  # 3 first: node 1 sees 2, 3 in one layer
    one = reachable(path, 4, [1], order=order)
    two = reachable(path, 4, [1], order=order, num_layers=2)
    assert one.int().tolist() == [[0, 1, 1, 1]]
    assert two.int().tolist() == [[1, 1, 1, 1]]  # node 0 comes in through the state


# --------------------------------------------------------------------- the Jacobian


GRAPHS = [("random", s) for s in (0, 3, 4, 7)] + [("slic", 0)]


def graph_case(name, seed):
    if name == "slic":
        n, edge_index = slic_graph()
        gen = torch.Generator().manual_seed(seed)
    else:
        n, edge_index, gen = random_directed_graph(seed, n_max=30)
    return n, edge_index, gen


@pytest.mark.parametrize(("name", "seed"), GRAPHS)
@pytest.mark.parametrize("kind", ["order", "score"])
def test_support_of_the_layer_jacobian_is_the_reach(name, seed, kind):
    n, edge_index, gen = graph_case(name, seed)
    kwargs = order_kwargs(kind, n, gen)
    layer = generic_layer(3, 2, seed)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    (support,) = jacobian_support(lambda x: layer(x, edge_index, **kwargs)[0], [x], n)
    assert torch.equal(support, reachable(edge_index, n, torch.arange(n), **kwargs))


@pytest.mark.parametrize(("name", "seed"), GRAPHS[:2] + GRAPHS[-1:])
def test_with_a_previous_state_x_reach_is_unchanged_and_states_come_from_every_neighbour(
        name, seed):
    n, edge_index, gen = graph_case(name, seed)
    kwargs = order_kwargs("score", n, gen)
    layer = generic_layer(3, 2, seed)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    h, m = torch.randn(2, n, 2, generator=gen, dtype=DT)
    sx, sh, sm = jacobian_support(
        lambda x, h, m: layer(x, edge_index, state=(h, m), **kwargs)[0], [x, h, m], n)
    reach = reachable(edge_index, n, torch.arange(n), **kwargs)
    assert torch.equal(sx, reach)
    closure = in_neighbour_closure(reach, edge_index)
    assert torch.equal(sh, closure) and torch.equal(sm, closure)


@pytest.mark.parametrize(("name", "seed"), GRAPHS[:2] + GRAPHS[-1:])
def test_stacked_layers_compose_the_reach(name, seed):
    n, edge_index, gen = graph_case(name, seed)
    kwargs = order_kwargs("order", n, gen)
    first, second = generic_layer(3, 3, seed), generic_layer(3, 3, seed + 1)
    x = torch.randn(n, 3, generator=gen, dtype=DT)

    def passing_state(x):
        out, state = first(x, edge_index, **kwargs)
        return second(x + out, edge_index, state=state, **kwargs)[0]  # residual, as the model

    def from_zero(x):
        out, _ = first(x, edge_index, **kwargs)
        return second(out, edge_index, **kwargs)[0]

    (stacked,) = jacobian_support(passing_state, [x], n)
    assert torch.equal(stacked, reachable(edge_index, n, torch.arange(n), num_layers=2, **kwargs))
    # Without the state passed on, a second layer in the same order adds nothing: R∘R = R.
    (restarted,) = jacobian_support(from_zero, [x], n)
    assert torch.equal(restarted, reachable(edge_index, n, torch.arange(n), **kwargs))


# --------------------------------------------------------------------- input checks


def test_targets_forms_and_empty_cases():
    path = torch.tensor([[0, 1], [1, 0]])
    assert torch.equal(reachable(path, 2, 1), reachable(path, 2, [1]))
    assert torch.equal(reachable(path, 2, torch.tensor(1)), reachable(path, 2, [1]))
    assert reachable(path, 2, []).shape == (0, 2)
    assert reachable(torch.zeros(2, 0, dtype=torch.long), 3, [2]).int().tolist() == [[0, 0, 1]]
    assert reachable(torch.zeros(2, 0, dtype=torch.long), 0, []).shape == (0, 0)
    assert torch.equal(reachable(path, None, [0, 1]), reachable(path, 2, [0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(targets=[0, 3]), ValueError, "targets"),
        (dict(targets=[-1]), ValueError, "targets"),
        (dict(targets=[0.5]), TypeError, "targets"),
        (dict(targets=torch.tensor([[0, 1]])), ValueError, "targets"),
        (dict(targets=torch.tensor([True])), TypeError, "targets"),
        (dict(targets="ab"), TypeError, "targets"),
        (dict(targets=[0], order=torch.tensor([0, 0, 1])), ValueError, "order"),
        (dict(targets=[0], score=torch.tensor([0.0, float("nan"), 1.0])), ValueError, "score"),
        (dict(targets=[0], order=torch.arange(3), score=torch.zeros(3)), ValueError, "not both"),
        (dict(targets=[0], num_layers=0), ValueError, "num_layers"),
        (dict(targets=[0], num_layers=1.0), TypeError, "num_layers"),
        (dict(targets=[0], edge_index=torch.tensor([[0, 5], [1, 0]])), ValueError, "edge_index"),
        (dict(targets=[0], edge_index=torch.zeros(3, 1, dtype=torch.long)), ValueError,
         "edge_index"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        reachable(**args)


@pytest.mark.parametrize(("name", "seed"), GRAPHS[:1] + GRAPHS[-1:])
def test_graph_lstm_stack_jacobian_is_the_composed_reach(name, seed):
    from graphlstm.nn import GraphLSTMStack

    n, edge_index, gen = graph_case(name, seed)
    kwargs = order_kwargs("score", n, gen)
    torch.manual_seed(seed)
    stack = GraphLSTMStack(3, 3, num_layers=3, residual=True).to(DT)
    with torch.no_grad():
        for p in stack.parameters():
            p.normal_(0.0, 0.8)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    (support,) = jacobian_support(lambda x: stack(x, edge_index, **kwargs)[0], [x], n)
    assert torch.equal(support, reachable(edge_index, n, torch.arange(n), num_layers=3, **kwargs))


def test_bidirectional_layer_reaches_both_ways():
    from graphlstm.nn import GraphLSTMStack

    n, edge_index, gen = graph_case("random", 4)
    order = torch.randperm(n, generator=gen)
    torch.manual_seed(0)
    stack = GraphLSTMStack(3, 2, bidirectional=True).to(DT)
    with torch.no_grad():
        for p in stack.parameters():
            p.normal_(0.0, 0.8)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    (support,) = jacobian_support(lambda x: stack(x, edge_index, order=order)[0], [x], n)
    both = (reachable(edge_index, n, torch.arange(n), order=order)
            | reachable(edge_index, n, torch.arange(n), order=order.flip(0)))
    assert torch.equal(support, both)
