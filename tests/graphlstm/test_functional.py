"""The level loops of :mod:`graphlstm.functional` on their own: per-edge scalars (edge
weights), and the gated recurrence (previous state, gates inside)."""

import pytest
import torch
from torch_geometric.utils import to_undirected

from graphlstm import GraphLSTM
from graphlstm.functional import graph_lstm_gated_recurrence, graph_lstm_recurrence
from graphlstm.reference import graph_lstm_reference
from graphlstm.schedule import build_schedule
from tests.helpers import gated_case, gated_graph, run_gated

# Every test runs on the compiled kernels and on the PyTorch reference path.
pytestmark = pytest.mark.usefixtures("engine")

DT = torch.float64


def recurrence_case(seed, n=30, hidden=3):
    gen = torch.Generator().manual_seed(seed)
    edge_index = to_undirected(torch.randint(0, n, (2, 2 * n), generator=gen), num_nodes=n)
    sched = build_schedule(edge_index, n, order=torch.randperm(n, generator=gen))
    e_v = sched.visited_src_pos.numel()
    tensors = dict(
        base_z=torch.randn(n, 3 * hidden, generator=gen, dtype=DT),
        base_m=torch.randn(n, hidden, generator=gen, dtype=DT),
        node_weight=torch.rand(n, 2 * hidden, generator=gen, dtype=DT),
        weight_n=torch.randn(3 * hidden, hidden, generator=gen, dtype=DT),
        scale=torch.rand(e_v, generator=gen, dtype=DT) * 2,
    )
    for t in tensors.values():
        t.requires_grad_(True)
    return sched, tensors


def run(sched, t, per_node, scale):
    dst = sched.visited_dst_pos
    weight = t["node_weight"] if per_node else t["node_weight"].index_select(0, dst)
    return graph_lstm_recurrence(
        t["base_z"], t["base_m"], weight, t["weight_n"], sched.ptr, sched.visited_ptr,
        sched.visited_src_pos, sched.visited_dst_local, per_node,
        t["scale"] if scale else None,
    )


@pytest.mark.parametrize("seed", range(4))
def test_edge_scale_equals_weights_scaled_by_the_caller(seed):
    """A scalar per edge is the same as per-edge weights multiplied by it beforehand
    (which autograd differentiates): values and every gradient, in both weight modes."""
    sched, t = recurrence_case(seed)
    dst = sched.visited_dst_pos
    folded = graph_lstm_recurrence(
        t["base_z"], t["base_m"], t["node_weight"].index_select(0, dst) * t["scale"][:, None],
        t["weight_n"], sched.ptr, sched.visited_ptr, sched.visited_src_pos,
        sched.visited_dst_local, False,
    )
    grad_out = torch.randn_like(folded)
    expected = torch.autograd.grad(folded, list(t.values()), grad_out)
    for per_node in (True, False):
        state = run(sched, t, per_node, scale=True)
        torch.testing.assert_close(state, folded, atol=1e-12, rtol=0)
        got = torch.autograd.grad(state, list(t.values()), grad_out)
        for name, g, e in zip(t, got, expected, strict=True):
            torch.testing.assert_close(g, e, atol=1e-12, rtol=0, msg=name)


@pytest.mark.parametrize("per_node", [True, False])
def test_gradcheck_with_edge_scale(per_node):
    sched, t = recurrence_case(5, n=12, hidden=2)

    def fn(base_z, base_m, node_weight, weight_n, scale):
        tensors = dict(base_z=base_z, base_m=base_m, node_weight=node_weight,
                       weight_n=weight_n, scale=scale)
        return run(sched, tensors, per_node, scale=True)

    assert torch.autograd.gradcheck(fn, tuple(t.values()))


def test_zero_scale_removes_the_edge():
    sched, t = recurrence_case(3)
    with torch.no_grad():
        t["scale"][::2] = 0.0
    keep = t["scale"].detach() != 0
    # The same schedule with the zero-scale edges cut out of the visited lists.
    counts = torch.tensor(sched.visited_ptr).diff()
    level_of_edge = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    kept_counts = torch.bincount(level_of_edge[keep], minlength=counts.numel())
    kept_ptr = [0] + kept_counts.cumsum(0).tolist()
    dst = sched.visited_dst_pos
    with torch.no_grad():
        full = run(sched, t, True, scale=True)
        cut = graph_lstm_recurrence(
            t["base_z"], t["base_m"], t["node_weight"], t["weight_n"], sched.ptr, kept_ptr,
            sched.visited_src_pos[keep], sched.visited_dst_local[keep], True,
            t["scale"][keep],
        )
        cut_edge = graph_lstm_recurrence(
            t["base_z"], t["base_m"], t["node_weight"].index_select(0, dst[keep]),
            t["weight_n"], sched.ptr, kept_ptr, sched.visited_src_pos[keep],
            sched.visited_dst_local[keep], False, t["scale"][keep],
        )
    torch.testing.assert_close(full, cut, atol=1e-12, rtol=0)
    torch.testing.assert_close(full, cut_edge, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------
# graph_lstm_gated_recurrence: the recurrence with a previous state, gates inside.
# --------------------------------------------------------------------------


def gated_sequential(edge_index, order, sched, t):
    """The gated recurrence literally: nodes one after the other in ``order``, one edge
    (column of ``edge_index``) at a time, from the projections in node order, with
    autograd. An in-edge is visited when its source comes earlier in ``order``
    (decided here, not taken from the schedule; self-loops are dropped). From the
    schedule only the documented pairing of the scales with edge columns
    (``visited_scale[k]`` belongs to column ``visited_eid[k]``, likewise unvisited)."""
    hidden = t["h"].size(1)
    h3, h4 = 3 * hidden, 4 * hidden
    order = order.tolist()
    rank = {v: k for k, v in enumerate(order)}
    columns = list(enumerate(zip(*edge_index.tolist(), strict=True)))
    scale_of = dict(zip(sched.visited_eid.tolist(), t["visited_scale"], strict=True))
    unvisited = dict(zip(sched.unvisited_eid.tolist(), t["unvisited_scale"], strict=True))
    assert not set(scale_of) & set(unvisited)
    scale_of.update(unvisited)
    assert sorted(scale_of) == [e for e, (j, i) in columns if j != i]  # each edge once
    new_h, new_m = {}, {}
    for i in order:
        h_bar = t["h"].new_zeros(hidden)
        m_bar = t["h"].new_zeros(hidden)
        input_forget = t["pre"][i, h3:]
        for e, (j, dst) in columns:
            if dst != i or j == i:
                continue
            h_j, m_j = (new_h[j], new_m[j]) if rank[j] < rank[i] else (t["h"][j], t["m"][j])
            gate = torch.sigmoid(input_forget + t["from_h"][j, h4:])
            h_bar = h_bar + scale_of[e] * h_j
            m_bar = m_bar + scale_of[e] * gate * m_j
        z = t["pre"][i, :h3] + t["from_h"][i, :h3] + t["weight_n"] @ h_bar
        u, o = torch.sigmoid(z[:hidden]), torch.sigmoid(z[hidden:2 * hidden])
        c = torch.tanh(z[2 * hidden:] / 2)  # the third block holds 2c
        f = torch.sigmoid(input_forget + t["from_h"][i, h3:h4])
        m = f * t["m"][i] + m_bar + u * c
        new_m[i] = m
        new_h[i] = torch.tanh(o * m)
    nodes = range(len(order))
    return torch.cat([torch.stack([new_h[v] for v in nodes]),
                      torch.stack([new_m[v] for v in nodes])], 1)


@pytest.mark.parametrize("seed", range(4))
def test_gated_recurrence_equals_the_sequential_definition(seed):
    sched, t = gated_case(seed)
    edge_index, order, _ = gated_graph(seed)
    got = run_gated(sched, t)
    expected = gated_sequential(edge_index, order, sched, t)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    grad_out = torch.randn_like(got)
    grads = torch.autograd.grad(got, list(t.values()), grad_out)
    expected_grads = torch.autograd.grad(expected, list(t.values()), grad_out)
    for name, g, e in zip(t, grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=0, msg=name)


def test_gated_recurrence_gradcheck():
    sched, t = gated_case(7, n=12, hidden=2)
    names = list(t)

    def fn(*values):
        return run_gated(sched, dict(zip(names, values, strict=True)))

    assert torch.autograd.gradcheck(fn, tuple(t.values()))


def gated_layer(layer, x, edge_index, order, state):
    """GraphLSTM.forward with a previous state written on graph_lstm_gated_recurrence
    (unweighted: every scale 1/d_i): the two projections and the loop."""
    hidden = layer.hidden_channels
    sched = build_schedule(edge_index, x.size(0), order=order)
    rows = [slice(k * hidden, (k + 1) * hidden) for k in range(4)]  # u, f, o, c

    def uoc(w):
        return torch.cat([w[rows[0]], w[rows[2]], 2.0 * w[rows[3]]], 0)

    wx, bx, wh = layer.lin_x.weight, layer.lin_x.bias, layer.lin_h.weight
    pre = torch.nn.functional.linear(x, torch.cat([uoc(wx), wx[rows[1]]]),
                                     torch.cat([uoc(bx), bx[rows[1]]]))
    from_h = torch.nn.functional.linear(state[0], torch.cat([uoc(wh), wh[rows[1]],
                                                             layer.lin_fn.weight]))
    inv_deg = sched.in_degree.to(x.dtype).clamp(min=1.0).reciprocal()
    wn = layer.lin_n.weight
    out = graph_lstm_gated_recurrence(
        pre, from_h, state[0], state[1], torch.cat([wn[:2 * hidden], 2.0 * wn[2 * hidden:]]),
        sched, inv_deg.index_select(0, sched.visited_dst),
        inv_deg.index_select(0, sched.unvisited_edge_index[1]),
    )
    return out[:, :hidden], out[:, hidden:]


@pytest.mark.parametrize("seed", range(3))
def test_gated_recurrence_gives_the_layer_with_a_state(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 40
    edge_index = torch.randint(0, n - 4, (2, 100), generator=gen)
    if seed % 2:
        edge_index = to_undirected(edge_index, num_nodes=n)
    torch.manual_seed(seed)
    layer = GraphLSTM(3, 4).to(DT)
    x = torch.randn(n, 3, generator=gen, dtype=DT, requires_grad=True)
    state = tuple(torch.randn(n, 4, generator=gen, dtype=DT, requires_grad=True) for _ in "hm")
    order = torch.randperm(n, generator=gen)
    h, m = gated_layer(layer, x, edge_index, order, state)
    h_ref, m_ref = graph_lstm_reference(layer, x, edge_index, order, state)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m, m_ref, atol=1e-10, rtol=0)
    wrt = [x, *state, *layer.parameters()]
    grads = torch.autograd.grad((h.sin() * 3).sum() + (m * m).sum(), wrt)
    expected = torch.autograd.grad((h_ref.sin() * 3).sum() + (m_ref * m_ref).sum(), wrt)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=0)
