"""GraphLSTM with edge weights (docs/design.md, "Edge weights") against the weighted
sequential reference."""

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_undirected

from graphlstm import GraphLSTM
from graphlstm.reference import graph_lstm_reference, graph_lstm_weighted_reference

# Every test runs on the compiled kernels and on the PyTorch reference path.
pytestmark = pytest.mark.usefixtures("engine")

DT = torch.float64


def make_layer(f, h, seed=0, bias=True):
    torch.manual_seed(seed)
    layer = GraphLSTM(f, h, bias=bias).to(DT)
    with torch.no_grad():  # larger weights exercise the nonlinearities harder
        for p in layer.parameters():
            p.mul_(2.0)
    return layer


def weighted_case(seed, n_max=40, positive=False):
    """A random graph (directed or not, self-loops, duplicates, isolated nodes),
    random weights with some zeros (unless ``positive``), among them every in-edge
    of one node, a random order and, for most seeds, a random state."""
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, n_max, (1,), generator=gen))
    e = int(torch.randint(0, 3 * n, (1,), generator=gen))
    active = max(2, int(0.8 * n))  # the rest stay isolated
    edge_index = torch.randint(0, active, (2, e), generator=gen)
    if seed % 2 == 0:
        edge_index = to_undirected(edge_index, num_nodes=n)
    if seed % 3 == 0 and edge_index.size(1) > 0:
        edge_index = torch.cat([edge_index, edge_index[:, : edge_index.size(1) // 3]], dim=1)
    loops = torch.arange(0, n, 5).repeat(2, 1)
    edge_index = torch.cat([edge_index, loops], dim=1)
    num_edges = edge_index.size(1)
    if positive:
        weight = 0.2 + 2.0 * torch.rand(num_edges, generator=gen, dtype=DT)
    else:
        weight = 3.0 * torch.rand(num_edges, generator=gen, dtype=DT)
        weight[torch.rand(num_edges, generator=gen) < 0.2] = 0.0
        weight[edge_index[1] == edge_index[1, 0]] = 0.0  # s_i = 0 for one node with edges
    order = torch.randperm(n, generator=gen)
    state = None
    if seed % 4 != 1:
        state = (torch.randn(n, 4, generator=gen, dtype=DT),
                 torch.randn(n, 4, generator=gen, dtype=DT))
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    return x, edge_index, weight, order, state


def test_weighted_reference_with_unit_weights_is_the_unweighted_reference():
    x, edge_index, _, order, state = weighted_case(6)
    layer = make_layer(3, 4, 6)
    ones = torch.ones(edge_index.size(1), dtype=DT)
    h1, m1 = graph_lstm_weighted_reference(layer, x, edge_index, ones, order, state)
    h2, m2 = graph_lstm_reference(layer, x, edge_index, order, state)
    torch.testing.assert_close(h1, h2, atol=1e-12, rtol=0)
    torch.testing.assert_close(m1, m2, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(40))
def test_equals_weighted_reference(seed):
    x, edge_index, weight, order, state = weighted_case(seed)
    layer = make_layer(3, 4, seed, bias=seed % 5 != 0)
    out, (h, m) = layer(x, edge_index, weight, order=order, state=state)
    h_ref, m_ref = graph_lstm_weighted_reference(layer, x, edge_index, weight, order, state)
    assert torch.equal(out, h)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m, m_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("with_state", [False, True])
def test_unit_weights_equal_the_unweighted_layer(with_state):
    x, edge_index, _, order, state = weighted_case(8 if with_state else 9)
    layer = make_layer(3, 4, 3)
    ones = torch.ones(edge_index.size(1), dtype=DT)
    state = state if with_state else None
    out_w, (_, m_w) = layer(x, edge_index, ones, order=order, state=state)
    out, (_, m) = layer(x, edge_index, order=order, state=state)
    torch.testing.assert_close(out_w, out, atol=1e-12, rtol=0)
    torch.testing.assert_close(m_w, m, atol=1e-12, rtol=0)


@pytest.mark.parametrize("with_state", [False, True])
def test_zero_weight_removes_the_edge(with_state):
    x, edge_index, weight, order, state = weighted_case(12)
    state = state if with_state else None
    keep = weight > 0
    layer = make_layer(3, 4, 12)
    out, (_, m) = layer(x, edge_index, weight, order=order, state=state)
    out_r, (_, m_r) = layer(x, edge_index[:, keep], weight[keep], order=order, state=state)
    torch.testing.assert_close(out, out_r, atol=1e-12, rtol=0)
    torch.testing.assert_close(m, m_r, atol=1e-12, rtol=0)


def test_duplicate_edge_adds_its_weight():
    x, edge_index, weight, order, state = weighted_case(16, positive=True)
    layer = make_layer(3, 4, 16)
    doubled = torch.cat([edge_index, edge_index[:, :7]], dim=1)
    doubled_weight = torch.cat([weight, weight[:7]])
    summed_weight = weight.clone()
    summed_weight[:7] *= 2.0
    out_a, _ = layer(x, doubled, doubled_weight, order=order, state=state)
    out_b, _ = layer(x, edge_index, summed_weight, order=order, state=state)
    torch.testing.assert_close(out_a, out_b, atol=1e-12, rtol=0)


def test_weights_scaled_per_target_give_the_same_means():
    # (1/s_i) sum_j w_ji ... is invariant to w_ji -> c_i w_ji, c_i > 0.
    x, edge_index, weight, order, state = weighted_case(20)
    layer = make_layer(3, 4, 20)
    c = 0.1 + torch.rand(x.size(0), dtype=DT, generator=torch.Generator().manual_seed(1))
    out_a, _ = layer(x, edge_index, weight, order=order, state=state)
    out_b, _ = layer(x, edge_index, weight * c[edge_index[1]], order=order, state=state)
    torch.testing.assert_close(out_a, out_b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("with_state", [False, True])
def test_gradcheck_in_weights_and_inputs(with_state):
    gen = torch.Generator().manual_seed(11)
    n = 9
    edge_index = torch.cat([torch.randint(0, n, (2, 22), generator=gen),
                            torch.tensor([[3], [3]])], dim=1)  # and a self-loop
    order = torch.randperm(n, generator=gen)
    layer = make_layer(3, 2, 5)
    x = torch.randn(n, 3, dtype=DT, generator=gen, requires_grad=True)
    # Away from 0: gradcheck steps both ways and negative weights are refused.
    weight = (0.3 + torch.rand(edge_index.size(1), dtype=DT, generator=gen)).requires_grad_()
    inputs = [weight, x]
    if with_state:
        inputs += [torch.randn(n, 2, dtype=DT, generator=gen, requires_grad=True) for _ in "hm"]

    def fn(w, x, *st):
        _, (h, m) = layer(x, edge_index, w, order=order, state=tuple(st) if st else None)
        return h, m

    assert torch.autograd.gradcheck(fn, tuple(inputs))
    names = [name for name, _ in layer.named_parameters()]

    def fn_params(*weights):
        args = (x.detach(), edge_index, weight.detach())
        state = tuple(t.detach() for t in inputs[2:]) if with_state else None
        out = torch.func.functional_call(layer, dict(zip(names, weights, strict=True)), args,
                                         dict(order=order, state=state))
        return out[1]

    params = tuple(p.detach().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(fn_params, params)


@pytest.mark.parametrize("seed", [4, 5, 12, 13])
def test_gradients_equal_reference_autograd(seed):
    # Zero weights and a node whose weights are all zero included: there the
    # reference's "no neighbour term" branch gives zero gradients, and so must the layer.
    x, edge_index, weight, order, state = weighted_case(seed)
    layer = make_layer(3, 4, seed)
    x.requires_grad_()
    weight.requires_grad_()
    state = tuple(t.requires_grad_() for t in state) if state is not None else None
    params = [p for name, p in layer.named_parameters()
              if state is not None or name not in ("lin_h.weight", "lin_fn.weight")]
    wrt = [weight, x, *(state or ()), *params]
    _, (h, m) = layer(x, edge_index, weight, order=order, state=state)
    g = torch.autograd.grad((h.sin() * 3).sum() + (m * m).sum(), wrt)
    h_ref, m_ref = graph_lstm_weighted_reference(layer, x, edge_index, weight, order, state)
    g_ref = torch.autograd.grad((h_ref.sin() * 3).sum() + (m_ref * m_ref).sum(), wrt)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # A mean over a single positive weight does not depend on it (its gradient
    # is zero up to rounding); one over two or more does.
    positive = (edge_index[0] != edge_index[1]) & (weight > 0)
    if bool((torch.bincount(edge_index[1][positive], minlength=x.size(0)) > 1).any()):
        assert bool((g[0] != 0).any())


def test_batch_equals_graphs_alone():
    gen = torch.Generator().manual_seed(4)
    layer = make_layer(3, 4, 4)
    graphs = []
    for n in (6, 1, 25, 14):
        ei = to_undirected(torch.randint(0, n, (2, 2 * n), generator=gen), num_nodes=n)
        graphs.append(Data(x=torch.randn(n, 3, generator=gen, dtype=DT), edge_index=ei,
                           edge_weight=torch.rand(ei.size(1), generator=gen, dtype=DT),
                           score=torch.rand(n, generator=gen, dtype=DT),
                           h=torch.randn(n, 4, generator=gen, dtype=DT),
                           m=torch.randn(n, 4, generator=gen, dtype=DT)))
    batch = Batch.from_data_list(graphs)
    out, (_, m) = layer(batch.x, batch.edge_index, batch.edge_weight, score=batch.score,
                        state=(batch.h, batch.m))
    for g, lo, hi in zip(graphs, batch.ptr[:-1], batch.ptr[1:], strict=True):
        out_g, (_, m_g) = layer(g.x, g.edge_index, g.edge_weight, score=g.score,
                                state=(g.h, g.m))
        torch.testing.assert_close(out[lo:hi], out_g, atol=1e-12, rtol=0)
        torch.testing.assert_close(m[lo:hi], m_g, atol=1e-12, rtol=0)


def test_float32_weights_with_float64_features_follow_the_features():
    x, edge_index, weight, order, state = weighted_case(10)
    layer = make_layer(3, 4, 10)
    out_a, _ = layer(x, edge_index, weight.float(), order=order, state=state)
    out_b, _ = layer(x, edge_index, weight.float().double(), order=order, state=state)
    assert out_a.dtype == DT
    assert torch.equal(out_a, out_b)


@pytest.mark.parametrize(
    "weight, exc, match",
    [
        ("heavy", TypeError, "'edge_weight' must be a torch.Tensor"),
        (torch.ones(3, dtype=torch.long), TypeError, "'edge_weight' must be a floating"),
        (torch.ones(4), ValueError, r"'edge_weight' must hold one weight per edge, shape \[3\]"),
        (torch.ones(3, 1), ValueError, r"'edge_weight' .* shape \[3\], got \[3, 1\]"),
        (torch.tensor([1.0, float("nan"), 1.0]), ValueError, "'edge_weight' must be finite"),
        (torch.tensor([1.0, float("inf"), 1.0]), ValueError, "'edge_weight' must be finite"),
        (torch.tensor([1.0, -0.5, 1.0]), ValueError, "'edge_weight' must be non-negative"),
    ],
)
def test_bad_weights(weight, exc, match):
    layer = GraphLSTM(3, 5)
    with pytest.raises(exc, match=match):
        layer(torch.randn(4, 3), torch.tensor([[0, 1, 2], [1, 2, 3]]), weight)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("with_state", [False, True])
def test_every_available_device_matches_the_weighted_reference(device, with_state):
    x, edge_index, weight, order, state = weighted_case(3 if with_state else 5, n_max=60)
    state = state if with_state else None
    layer = make_layer(3, 4, 3)
    w_ref = weight.clone().requires_grad_()
    h_ref, m_ref = graph_lstm_weighted_reference(layer, x, edge_index, w_ref, order, state)
    (g_ref,) = torch.autograd.grad(h_ref.sum() + m_ref.square().sum(), [w_ref])
    dev_state = tuple(t.to(device) for t in state) if state is not None else None
    layer = layer.to(device)
    w_dev = weight.to(device).requires_grad_()
    _, (h, m) = layer(x.to(device), edge_index.to(device), w_dev, order=order.to(device),
                      state=dev_state)
    assert h.device.type == torch.device(device).type
    torch.testing.assert_close(h.cpu(), h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m.cpu(), m_ref, atol=1e-10, rtol=0)
    (g,) = torch.autograd.grad(h.sum() + m.square().sum(), [w_dev])
    assert g.device == w_dev.device
    torch.testing.assert_close(g.cpu(), g_ref, atol=1e-10, rtol=0)
