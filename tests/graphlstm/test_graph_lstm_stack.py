"""GraphLSTMStack (docs/design.md, "Stacks") against a composition of the sequential references."""

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.utils import to_undirected

from graphlstm import GraphLSTM, GraphLSTMStack, build_schedule
from graphlstm.reference import graph_lstm_reference, graph_lstm_weighted_reference

# Every test runs on the compiled kernels and on the PyTorch reference path.
pytestmark = pytest.mark.usefixtures("engine")

DT = torch.float64


def make_stack(f, h, seed=0, **kwargs):
    torch.manual_seed(seed)
    stack = GraphLSTMStack(f, h, **kwargs).to(DT)
    with torch.no_grad():
        for p in stack.parameters():
            p.mul_(2.0)
    return stack


def make_graph(seed, n=14, e=40, f=3, h=4, directions=2):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=gen)
    if seed % 2 == 0:
        edge_index = to_undirected(edge_index, num_nodes=n)
    weight = torch.rand(edge_index.size(1), generator=gen, dtype=DT)
    weight[:3] = 0.0
    x = torch.randn(n, f, generator=gen, dtype=DT)
    order = torch.randperm(n, generator=gen)
    state = tuple(torch.randn(directions, n, h, generator=gen, dtype=DT) for _ in "hm")
    return x, edge_index, weight, order, state


def stack_reference(stack, x, edge_index, weight, order, state, dropout_mask=None):
    """Layer by layer and direction by direction with the sequential references:
    direction 1 runs order.flip(0); layer l > 0 takes the concatenated outputs and,
    per direction, starts from the final state of layer l - 1."""
    dirs = stack.num_directions
    states = [None] * dirs if state is None else [(state[0][d], state[1][d])
                                                  for d in range(dirs)]
    orders = [order, order.flip(0)][:dirs]
    h_n, m_n = [], []
    inputs = x
    for index in range(stack.num_layers):
        if index > 0 and dropout_mask is not None:
            inputs = inputs * dropout_mask
        outs = []
        for d in range(dirs):
            layer = stack.layers[index][d]
            if weight is None:
                h, m = graph_lstm_reference(layer, inputs, edge_index, orders[d], states[d])
            else:
                h, m = graph_lstm_weighted_reference(layer, inputs, edge_index, weight,
                                                     orders[d], states[d])
            states[d] = (h, m)
            outs.append(h)
            h_n.append(h)
            m_n.append(m)
        out = torch.cat(outs, dim=1)
        if stack.residual and out.shape == inputs.shape:
            out = out + inputs
        inputs = out
    return inputs, torch.stack(h_n), torch.stack(m_n)


@pytest.mark.parametrize(
    "seed, num_layers, bidirectional, weighted, with_state, residual",
    [
        (0, 2, True, False, False, False),
        (1, 2, True, True, True, False),
        (2, 3, True, True, False, False),
        (3, 2, False, False, True, False),
        (4, 1, True, True, True, False),
        (5, 3, False, True, True, True),
        (6, 2, True, False, True, True),
    ],
)
def test_equals_composition_of_references(seed, num_layers, bidirectional, weighted,
                                          with_state, residual):
    dirs = 2 if bidirectional else 1
    x, edge_index, weight, order, state = make_graph(seed, directions=dirs)
    stack = make_stack(3, 4, seed, num_layers=num_layers, bidirectional=bidirectional,
                       residual=residual)
    weight = weight if weighted else None
    state = state if with_state else None
    out, (h_n, m_n) = stack(x, edge_index, weight, order=order, state=state)
    assert out.shape == (14, dirs * 4)
    assert h_n.shape == m_n.shape == (num_layers * dirs, 14, 4)
    out_ref, h_ref, m_ref = stack_reference(stack, x, edge_index, weight, order, state)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_n, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m_n, m_ref, atol=1e-10, rtol=0)


def test_residual_on_the_first_layer_when_its_input_has_d_times_h_channels():
    x, edge_index, weight, order, state = make_graph(7, f=8)
    stack = make_stack(8, 4, 7, num_layers=2, bidirectional=True, residual=True)
    out, _ = stack(x, edge_index, weight, order=order, state=state)
    out_ref, _, _ = stack_reference(stack, x, edge_index, weight, order, state)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)
    # ...and the same stack without residual connections differs.
    stack.residual = False
    assert not torch.allclose(stack(x, edge_index, weight, order=order, state=state)[0], out)


def test_layout_of_outputs_and_final_states():
    x, edge_index, weight, order, state = make_graph(8)
    stack = make_stack(3, 4, 8, num_layers=3, bidirectional=True)
    out, (h_n, m_n) = stack(x, edge_index, weight, order=order, state=state)
    # The last layer's forward and reversed outputs, in that order, are h_n[l*D + d].
    assert torch.equal(out[:, :4], h_n[2 * 2 + 0]) and torch.equal(out[:, 4:], h_n[2 * 2 + 1])
    # Direction 1 of layer 0 is a GraphLSTM on the reversed order from state[.][1].
    layer = stack.layers[0][1]
    assert isinstance(layer, GraphLSTM)
    h, (_, m) = layer(x, edge_index, weight, order=order.flip(0),
                      state=(state[0][1], state[1][1]))
    assert torch.equal(h, h_n[1]) and torch.equal(m, m_n[1])


def test_gradients_equal_reference_autograd():
    x, edge_index, weight, order, state = make_graph(9, n=10, e=24)
    stack = make_stack(3, 4, 9, num_layers=2, bidirectional=True)
    x.requires_grad_()
    weight.requires_grad_()
    state = tuple(t.requires_grad_() for t in state)
    wrt = [x, weight, *state, *stack.parameters()]
    out, (h_n, m_n) = stack(x, edge_index, weight, order=order, state=state)
    g = torch.autograd.grad(out.sin().sum() + (m_n * m_n).sum(), wrt)
    out_r, _, m_r = stack_reference(stack, x, edge_index, weight, order, state)
    g_ref = torch.autograd.grad(out_r.sin().sum() + (m_r * m_r).sum(), wrt)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_gradcheck():
    gen = torch.Generator().manual_seed(3)
    n = 5
    edge_index = torch.randint(0, n, (2, 10), generator=gen)
    stack = make_stack(2, 2, 3, num_layers=2, bidirectional=True)
    schedules = stack.schedules(edge_index, n, order=torch.randperm(n, generator=gen))
    x = torch.randn(n, 2, dtype=DT, generator=gen, requires_grad=True)
    weight = (0.3 + torch.rand(10, dtype=DT, generator=gen)).requires_grad_()
    h0 = torch.randn(2, n, 2, dtype=DT, generator=gen, requires_grad=True)
    m0 = torch.randn(2, n, 2, dtype=DT, generator=gen, requires_grad=True)

    def fn(x, weight, h0, m0):
        out, (h_n, m_n) = stack(x, edge_index, weight, state=(h0, m0), schedule=schedules)
        return out, m_n

    assert torch.autograd.gradcheck(fn, (x, weight, h0, m0), fast_mode=True)


def test_order_score_and_schedules_agree():
    x, edge_index, weight, _, state = make_graph(10)
    stack = make_stack(3, 4, 10, num_layers=2, bidirectional=True)
    score = torch.randn(14, dtype=DT)
    order = torch.sort(score, descending=True, stable=True).indices
    schedules = stack.schedules(edge_index, 14, score=score)
    assert torch.equal(schedules[1].order, order.flip(0))
    outs = [
        stack(x, edge_index, weight, score=score, state=state)[0],
        stack(x, edge_index, weight, order=order, state=state)[0],
        stack(x, edge_index, weight, schedule=schedules, state=state)[0],
        stack(x, edge_index, weight, schedule=schedules[0], state=state)[0],
    ]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_dropout_between_layers_in_training_only():
    x, edge_index, weight, order, state = make_graph(11)
    stack = make_stack(3, 4, 11, num_layers=2, bidirectional=True, dropout=1.0)
    plain = make_stack(3, 4, 11, num_layers=2, bidirectional=True)
    # p = 1 zeroes the input of layer 1 (and nothing else) in training.
    out, _ = stack.train()(x, edge_index, weight, order=order, state=state)
    out_ref, _, _ = stack_reference(plain, x, edge_index, weight, order, state,
                                    dropout_mask=torch.zeros(8, dtype=DT))
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)
    out_eval, _ = stack.eval()(x, edge_index, weight, order=order, state=state)
    assert torch.equal(out_eval, plain(x, edge_index, weight, order=order, state=state)[0])


def test_sparse_adjacency_equals_edge_index_and_weights():
    x, edge_index, weight, order, state = make_graph(12)
    stack = make_stack(3, 4, 12, num_layers=2, bidirectional=True)
    adj_t = T.ToSparseTensor()(Data(edge_index=edge_index, edge_weight=weight,
                                    num_nodes=14)).adj_t
    out, (h_n, _) = stack(x, adj_t, order=order, state=state)
    out_ref, (h_ref, _) = stack(x, edge_index, weight, order=order, state=state)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n, h_ref, atol=1e-12, rtol=0)


def test_explain_mode_masks_every_layer_and_direction():
    x, edge_index, weight, order, state = make_graph(13)
    stack = make_stack(3, 4, 13, num_layers=2, bidirectional=True)
    mask = torch.randn(edge_index.size(1), dtype=DT)
    set_masks(stack, mask, edge_index, apply_sigmoid=True)
    out, _ = stack(x, edge_index, weight, order=order, state=state)
    clear_masks(stack)
    out_ref, _ = stack(x, edge_index, weight * mask.sigmoid(), order=order, state=state)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=0)


def test_lazy_input_size_and_repr():
    stack = GraphLSTMStack(-1, 5, num_layers=2, bidirectional=True)
    out, (h_n, _) = stack(torch.randn(4, 7), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert out.shape == (4, 10) and h_n.shape == (4, 4, 5)
    assert stack.layers[0][1].lin_x.weight.shape == (20, 7)
    assert stack.layers[1][0].lin_x.weight.shape == (20, 10)
    assert repr(GraphLSTMStack(3, 4, num_layers=2, bidirectional=True, dropout=0.1)) == (
        "GraphLSTMStack(3, 4, num_layers=2, bidirectional=True, dropout=0.1)"
    )


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="num_layers=1"):
        GraphLSTMStack(3, 4, dropout=0.5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(num_layers=0), ValueError, "num_layers"),
        (dict(num_layers=True), ValueError, "num_layers"),
        (dict(bidirectional=1), TypeError, "bidirectional"),
        (dict(residual="yes"), TypeError, "residual"),
        (dict(dropout=1.5), ValueError, "dropout"),
        (dict(dropout="0.1"), ValueError, "dropout"),
        (dict(hidden_channels=0), ValueError, "hidden_channels"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(in_channels=3, hidden_channels=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        GraphLSTMStack(**args)


def test_bad_forward_arguments():
    x, edge_index, weight, order, state = make_graph(14)
    stack = make_stack(3, 4, 14, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"state\[0\] \(h_0\).*\[2, 14, 4\]"):
        stack(x, edge_index, state=(state[0][:1], state[1]))
    with pytest.raises(ValueError, match=r"state\[1\] \(m_0\)"):
        stack(x, edge_index, state=(state[0], state[1][:, :3]))
    with pytest.raises(TypeError, match="'state'"):
        stack(x, edge_index, state=state[0])
    forward = build_schedule(edge_index, 14, order=order)
    with pytest.raises(ValueError, match=r"schedule\[1\]"):
        stack(x, edge_index, schedule=(forward, forward))
    with pytest.raises(TypeError, match="'schedule'"):
        stack(x, edge_index, schedule=(forward,))
    with pytest.raises(ValueError, match="not both"):
        stack(x, edge_index, order=order, schedule=forward)
    with pytest.raises(ValueError, match="'edge_weight'"):
        stack(x, edge_index, -weight)
    with pytest.raises(ValueError, match="schedule"):
        stack(x, edge_index[:, :5], schedule=forward)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_every_available_device_matches_the_composition(device):
    x, edge_index, weight, order, state = make_graph(15)
    stack = make_stack(3, 4, 15, num_layers=2, bidirectional=True)
    out_ref, h_ref, m_ref = stack_reference(stack, x, edge_index, weight, order, state)
    stack = stack.to(device)
    out, (h_n, m_n) = stack(x.to(device), edge_index.to(device), weight.to(device),
                            order=order.to(device), state=tuple(t.to(device) for t in state))
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.cpu(), out_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_n.cpu(), h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m_n.cpu(), m_ref, atol=1e-10, rtol=0)
