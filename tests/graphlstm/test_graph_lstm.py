import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_undirected

from graphlstm import GraphLSTM
from graphlstm.reference import graph_lstm_loop, graph_lstm_reference
from graphlstm.schedule import build_schedule

# Every test runs on the compiled kernels and on the PyTorch reference path.
pytestmark = pytest.mark.usefixtures("engine")

DT = torch.float64


def make_layer(f, h, seed=0, bias=True):
    torch.manual_seed(seed)
    layer = GraphLSTM(f, h, bias=bias).to(DT)
    # Larger weights than the default init exercise the nonlinearities harder.
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(2.0)
    return layer


def random_case(seed, n_max=60):
    """A random graph: directed or undirected, isolated nodes, several components,
    self-loops and duplicate edges, a random order and maybe a random state."""
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, n_max, (1,), generator=gen))
    e = int(torch.randint(0, 3 * n, (1,), generator=gen))
    # Keep some nodes out of every edge (isolated) and split the rest in two parts.
    active = max(1, int(0.8 * n))
    half = max(1, active // 2)
    a = torch.randint(0, half, (2, e // 2), generator=gen)
    b = torch.randint(half, max(half + 1, active), (2, e - e // 2), generator=gen)
    edge_index = torch.cat([a, b], dim=1).clamp(max=n - 1)
    if seed % 2 == 0:
        edge_index = to_undirected(edge_index, num_nodes=n)
    if seed % 3 == 0 and edge_index.size(1) > 0:  # duplicates
        edge_index = torch.cat([edge_index, edge_index[:, : edge_index.size(1) // 3]], dim=1)
    order = torch.randperm(n, generator=gen)
    state = None
    if seed % 4 != 1:
        state = (torch.randn(n, 4, generator=gen, dtype=DT),
                 torch.randn(n, 4, generator=gen, dtype=DT))
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    return x, edge_index, order, state


@pytest.mark.parametrize("seed", range(60))
def test_equals_sequential_reference(seed):
    x, edge_index, order, state = random_case(seed)
    layer = make_layer(3, 4, seed, bias=seed % 5 != 0)
    out, (h, m) = layer(x, edge_index, order=order, state=state)
    h_ref, m_ref = graph_lstm_reference(layer, x, edge_index, order, state)
    assert torch.equal(out, h)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m, m_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 500, 2000])
def test_equals_sequential_loop_large(n):
    gen = torch.Generator().manual_seed(n)
    edge_index = to_undirected(torch.randint(0, n, (2, 3 * n), generator=gen), num_nodes=n)
    x = torch.randn(n, 5, generator=gen, dtype=DT)
    state = tuple(torch.randn(n, 8, generator=gen, dtype=DT) for _ in range(2))
    score = torch.randn(n, generator=gen, dtype=DT)
    layer = make_layer(5, 8, n)
    out, (h, m) = layer(x, edge_index, score=score, state=state)
    order = torch.sort(score, descending=True, stable=True).indices
    h_ref, m_ref = graph_lstm_loop(layer, x, edge_index, order, state)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m, m_ref, atol=1e-10, rtol=0)


def test_the_two_references_agree():
    x, edge_index, order, state = random_case(7, n_max=40)
    layer = make_layer(3, 4, 7)
    h1, m1 = graph_lstm_reference(layer, x, edge_index, order, state)
    h2, m2 = graph_lstm_loop(layer, x, edge_index, order, state)
    torch.testing.assert_close(h1, h2, atol=1e-12, rtol=0)
    torch.testing.assert_close(m1, m2, atol=1e-12, rtol=0)


def test_visited_neighbour_is_read_new_and_unvisited_old():
    # Chain 0 - 1 - 2 in order [1, 0, 2]: node 0 reads node 1's new state, and
    # node 1 reads the old states of 0 and 2. Changing node 2's old state must not
    # change node 0 (they are not adjacent) but must change node 1 and hence node 0.
    edge_index = to_undirected(torch.tensor([[0, 1], [1, 2]]))
    order = torch.tensor([1, 0, 2])
    layer = make_layer(2, 3, 1)
    x = torch.randn(3, 2, dtype=DT)
    h0, m0 = torch.randn(3, 3, dtype=DT), torch.randn(3, 3, dtype=DT)
    out_a, _ = layer(x, edge_index, order=order, state=(h0, m0))
    h0b = h0.clone()
    h0b[2] += 1.0
    out_b, _ = layer(x, edge_index, order=order, state=(h0b, m0))
    assert not torch.allclose(out_a[1], out_b[1])  # 1 reads 2's old state
    assert not torch.allclose(out_a[0], out_b[0])  # 0 reads 1's new state
    # ... whereas with 0 first, 0 reads 1's *old* state and is unaffected by node 2.
    order2 = torch.tensor([0, 1, 2])
    out_c, _ = layer(x, edge_index, order=order2, state=(h0, m0))
    out_d, _ = layer(x, edge_index, order=order2, state=(h0b, m0))
    torch.testing.assert_close(out_c[0], out_d[0], atol=0, rtol=0)


@pytest.mark.parametrize("with_state", [False, True])
def test_gradcheck(with_state):
    gen = torch.Generator().manual_seed(11)
    n = 9
    edge_index = torch.randint(0, n, (2, 20), generator=gen)
    order = torch.randperm(n, generator=gen)
    layer = make_layer(3, 2, 5)
    x = torch.randn(n, 3, dtype=DT, generator=gen, requires_grad=True)
    inputs = [x]
    if with_state:
        inputs += [torch.randn(n, 2, dtype=DT, generator=gen, requires_grad=True) for _ in "hm"]
    params = list(layer.parameters())

    def fn(*args):
        state = (args[1], args[2]) if with_state else None
        _, (h, m) = layer(args[0], edge_index, order=order, state=state)
        return h, m

    assert torch.autograd.gradcheck(fn, tuple(inputs))
    # parameters, through a function of the weights
    names = [name for name, _ in layer.named_parameters()]

    def fn_params(*weights):
        out = torch.func.functional_call(layer, dict(zip(names, weights, strict=True)),
                                         (x.detach(), edge_index),
                                         dict(order=order))
        return out[1]

    assert torch.autograd.gradcheck(fn_params, tuple(p.detach().requires_grad_() for p in params))


@pytest.mark.parametrize("with_state", [False, True])
def test_gradients_equal_reference_autograd(with_state):
    # Without a previous state the layer weights neighbours per node, with one per edge.
    x, edge_index, order, state = random_case(12, n_max=50)
    layer = make_layer(3, 4, 12)
    x.requires_grad_()
    state = tuple(t.requires_grad_() for t in state) if with_state else None
    params = [p for name, p in layer.named_parameters()
              if with_state or name not in ("lin_h.weight", "lin_fn.weight")]
    wrt = [x, *(state or ()), *params]
    _, (h, m) = layer(x, edge_index, order=order, state=state)
    g = torch.autograd.grad((h.sin() * 3).sum() + (m * m).sum(), wrt)
    h_ref, m_ref = graph_lstm_reference(layer, x, edge_index, order, state)
    g_ref = torch.autograd.grad((h_ref.sin() * 3).sum() + (m_ref * m_ref).sum(), wrt)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_batch_equals_graphs_alone():
    gen = torch.Generator().manual_seed(4)
    layer = make_layer(3, 4, 4)
    graphs = []
    for n in (6, 1, 25, 14):
        ei = to_undirected(torch.randint(0, n, (2, 2 * n), generator=gen), num_nodes=n)
        graphs.append(Data(x=torch.randn(n, 3, generator=gen, dtype=DT), edge_index=ei,
                           score=torch.rand(n, generator=gen, dtype=DT),
                           h=torch.randn(n, 4, generator=gen, dtype=DT),
                           m=torch.randn(n, 4, generator=gen, dtype=DT)))
    batch = Batch.from_data_list(graphs)
    out, (h, m) = layer(batch.x, batch.edge_index, score=batch.score, state=(batch.h, batch.m))
    for g, lo, hi in zip(graphs, batch.ptr[:-1], batch.ptr[1:], strict=True):
        out_g, (h_g, m_g) = layer(g.x, g.edge_index, score=g.score, state=(g.h, g.m))
        torch.testing.assert_close(out[lo:hi], out_g, atol=1e-12, rtol=0)
        torch.testing.assert_close(m[lo:hi], m_g, atol=1e-12, rtol=0)


def test_relabelling_permutes_output():
    x, edge_index, order, state = random_case(20, n_max=50)
    n = x.size(0)
    layer = make_layer(3, 4, 20)
    out, (_, m) = layer(x, edge_index, order=order, state=state)
    relabel = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # old -> new
    inverse = torch.empty_like(relabel)
    inverse[relabel] = torch.arange(n)
    x2 = x[inverse]
    state2 = tuple(t[inverse] for t in state) if state is not None else None
    out2, (_, m2) = layer(x2, relabel[edge_index], order=relabel[order], state=state2)
    torch.testing.assert_close(out2, out[inverse], atol=1e-12, rtol=0)
    torch.testing.assert_close(m2, m[inverse], atol=1e-12, rtol=0)


def test_precomputed_schedule_and_score_order():
    x, edge_index, _, state = random_case(30)
    layer = make_layer(3, 4, 30)
    score = torch.randn(x.size(0), dtype=DT)
    schedule = build_schedule(edge_index, x.size(0), score=score)
    out_a, _ = layer(x, edge_index, score=score, state=state)
    out_b, _ = layer(x, edge_index, schedule=schedule, state=state)
    out_c, _ = layer(x, edge_index, order=schedule.order, state=state)
    assert torch.equal(out_a, out_b) and torch.equal(out_a, out_c)


def test_float32_close_to_float64():
    x, edge_index, order, state = random_case(8)
    layer = make_layer(3, 4, 8)
    out64, _ = layer(x, edge_index, order=order, state=state)
    layer32 = layer.float()
    state32 = tuple(t.float() for t in state) if state is not None else None
    out32, _ = layer32(x.float(), edge_index, order=order, state=state32)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=0)


def test_lazy_in_channels_repr_and_reset():
    layer = GraphLSTM(-1, 6)
    x = torch.randn(5, 7)
    out, _ = layer(x, torch.tensor([[0, 1], [1, 0]]))
    assert out.shape == (5, 6) and layer.lin_x.weight.shape == (24, 7)
    assert repr(layer) == "GraphLSTM(7, 6)"
    before = [p.clone() for p in layer.parameters()]
    layer.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))


def test_parameter_layout():
    layer = GraphLSTM(5, 3)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "lin_x.weight": (12, 5), "lin_x.bias": (12,), "lin_h.weight": (12, 3),
        "lin_n.weight": (9, 3), "lin_fn.weight": (3, 3),
    }


def test_empty_graph():
    layer = GraphLSTM(3, 4)
    out, (h, m) = layer(torch.randn(0, 3), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 4) and m.shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(x=torch.randn(4)), ValueError, "'x'"),
        (dict(x=torch.ones(4, 3, dtype=torch.long)), TypeError, "'x'"),
        (dict(x=torch.randn(4, 2)), ValueError, "in_channels"),
        (dict(x="nodes"), TypeError, "'x'"),
        (dict(edge_index=torch.tensor([[0, 9], [1, 0]])), ValueError, "edge_index"),
        (dict(edge_index=torch.tensor([[0.0], [1.0]])), TypeError, "edge_index"),
        (dict(order=torch.tensor([0, 1, 1, 2])), ValueError, "order"),
        (dict(score=torch.tensor([0.0, float("nan"), 0.0, 0.0])), ValueError, "score"),
        (dict(state=torch.zeros(4, 5)), TypeError, "state"),
        (dict(state=(torch.zeros(4, 4), torch.zeros(4, 5))), ValueError, r"state\[0\]"),
        (dict(state=(torch.zeros(4, 5), torch.zeros(3, 5))), ValueError, r"state\[1\]"),
        (dict(schedule="levels"), TypeError, "schedule"),
    ],
)
def test_bad_input(kwargs, exc, match):
    layer = GraphLSTM(3, 5)
    args = dict(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        layer(**args)


def test_schedule_of_another_graph_is_rejected():
    layer = GraphLSTM(3, 5)
    schedule = build_schedule(torch.tensor([[0], [1]]), 2)
    with pytest.raises(ValueError, match="schedule"):
        layer(torch.randn(4, 3), torch.tensor([[0, 1, 2], [1, 2, 3]]), schedule=schedule)
    with pytest.raises(ValueError, match="schedule"):
        layer(torch.randn(2, 3), torch.tensor([[0], [1]]), schedule=schedule,
              order=torch.arange(2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_channels"):
        GraphLSTM(3, 0)
    with pytest.raises(ValueError, match="aggr"):
        GraphLSTM(3, 4, aggr="mean")
    with pytest.raises(ValueError, match="in_channels"):
        GraphLSTM(0, 4)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_every_available_device_matches_the_reference(device):
    x, edge_index, order, state = random_case(3, n_max=80)
    layer = make_layer(3, 4, 3)
    h_ref, m_ref = graph_lstm_reference(layer, x, edge_index, order, state)
    dev_state = tuple(t.to(device) for t in state) if state is not None else None
    layer = layer.to(device)
    x = x.to(device).requires_grad_()
    _, (h, m) = layer(x, edge_index.to(device), order=order.to(device), state=dev_state)
    assert h.device.type == torch.device(device).type
    torch.testing.assert_close(h.cpu(), h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m.cpu(), m_ref, atol=1e-10, rtol=0)
    (h.sum() + m.sum()).backward()
    assert x.grad.device == x.device and bool(torch.isfinite(x.grad).all())
