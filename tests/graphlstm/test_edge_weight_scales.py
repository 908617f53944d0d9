"""Weighted means at every representable scale of the edge weights (SPEC §3.1a).

A weighted mean is unchanged when every weight is multiplied by the same
positive number. So the layer given ``scale * w`` must return what the
weighted reference returns for ``w`` (small integers, computed in float64),
for every scale from the smallest subnormal up to the largest finite weights,
in float32 and float64, on both engines. Gradients in ``x``, the state and the
parameters are then those of ``w`` as well; the gradient in the weights is that
of ``w`` divided by ``scale`` wherever that quotient is representable (below it
the true value overflows, and it may be infinite, but never NaN).
"""

import copy

import pytest
import torch
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

from graphlstm import GraphLSTM, GraphLSTMStack
from graphlstm.reference import graph_lstm_weighted_reference

pytestmark = pytest.mark.usefixtures("engine")

DT = torch.float64
# Base weights are at most 3, so ``3 * scale`` must stay finite.
TOP = {torch.float32: 1e38, torch.float64: 5e307}
SCALES = {
    torch.float32: [2.0**-149, 1e-44, 1e-40, 1e-39, 2.9e-39, 1e-38, 1e-20, 1.0, 1e20, 1e37,
                    TOP[torch.float32]],
    torch.float64: [2.0**-1074, 1e-320, 1e-310, 1e-300, 1e-39, 1.0, 1e38, 1e300,
                    TOP[torch.float64]],
}
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}
CASES = [(dtype, scale) for dtype in SCALES for scale in SCALES[dtype]]


def case_ids(case):
    dtype, scale = case
    return f"{str(dtype).split('.')[-1]}-{scale:.3g}"


def graph(seed=0, n=9):
    """A directed graph with several in-edges per node, duplicates, a self-loop, one
    node whose in-weights are all zero and one isolated node; integer weights 0..3."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n - 1, (2, 4 * n), generator=gen)
    edge_index = torch.cat([edge_index, edge_index[:, :5], torch.tensor([[2], [2]])], dim=1)
    weight = torch.randint(0, 4, (edge_index.size(1),), generator=gen).to(DT)
    weight[edge_index[1] == 0] = 0.0
    weight[edge_index[1] == 1] = torch.randint(1, 4, (1,), generator=gen).to(DT)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    order = torch.randperm(n, generator=gen)
    state = (torch.randn(n, 4, generator=gen, dtype=DT), torch.randn(n, 4, generator=gen,
                                                                       dtype=DT))
    probes = (torch.randn(n, 4, generator=gen, dtype=DT), torch.randn(n, 4, generator=gen,
                                                                        dtype=DT))
    return x, edge_index, weight, order, state, probes


def make_layer(seed=0):
    torch.manual_seed(seed)
    layer = GraphLSTM(3, 4).to(DT)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(2.0)
    return layer


def leaf(t, dtype=DT):
    return t.detach().to(dtype).requires_grad_()


def loss_of(h, m, probes):
    return (h * probes[0].to(h.dtype)).sum() + (m * probes[1].to(m.dtype)).sum()


def assert_weight_grad(grad, expected, scale, tol):
    """``grad`` (at ``scale * w``) equals ``expected / scale`` (the gradient at ``w``)
    where that is representable; elsewhere it may overflow, but is never NaN."""
    assert not grad.isnan().any()
    expected = expected.to(grad.dtype)
    representable = expected.abs() < torch.finfo(grad.dtype).max / 8 * scale
    assert representable.any()
    torch.testing.assert_close(grad[representable] * scale, expected[representable],
                               atol=tol * 10, rtol=tol)


@pytest.fixture(scope="module", params=[False, True], ids=["no-state", "state"])
def reference(request):
    """Outputs and gradients of the float64 weighted reference at the base weights."""
    with_state = request.param
    x, edge_index, weight, order, state, probes = graph()
    layer = make_layer()
    x_r, w_r = leaf(x), leaf(weight)
    state_r = (leaf(state[0]), leaf(state[1])) if with_state else None
    h, m = graph_lstm_weighted_reference(layer, x_r, edge_index, w_r, order, state_r)
    loss_of(h, m, probes).backward()
    grads = dict(x=x_r.grad, weight=w_r.grad)
    if with_state:
        grads["h0"], grads["m0"] = state_r[0].grad, state_r[1].grad
    grads.update({name: p.grad for name, p in layer.named_parameters()})
    return dict(layer=layer, x=x, edge_index=edge_index, weight=weight, order=order,
                state=state if with_state else None, probes=probes, h=h.detach(),
                m=m.detach(), grads=grads)


@pytest.mark.parametrize("case", CASES, ids=case_ids)
def test_scaled_weights_give_the_reference_of_the_unit_weights(reference, case):
    dtype, scale = case
    tol = TOL[dtype]
    ref = reference
    layer = copy.deepcopy(ref["layer"]).to(dtype)
    layer.zero_grad(set_to_none=True)
    x = leaf(ref["x"], dtype)
    weight = (ref["weight"].to(dtype) * scale).requires_grad_()
    assert torch.isfinite(weight).all() and (weight[ref["weight"] > 0] > 0).all()
    state = None
    if ref["state"] is not None:
        state = (leaf(ref["state"][0], dtype), leaf(ref["state"][1], dtype))
    out, (h, m) = layer(x, ref["edge_index"], weight, order=ref["order"], state=state)
    assert torch.isfinite(h).all() and torch.isfinite(m).all()
    torch.testing.assert_close(h, ref["h"].to(dtype), atol=tol, rtol=0)
    torch.testing.assert_close(m, ref["m"].to(dtype), atol=tol, rtol=0)

    loss_of(h, m, ref["probes"]).backward()
    grads = ref["grads"]
    checked = [("x", x.grad)] + [(name, p.grad) for name, p in layer.named_parameters()]
    if state is not None:
        checked += [("h0", state[0].grad), ("m0", state[1].grad)]
    for name, grad in checked:
        expected = grads[name]
        if grad is None or expected is None:  # a weight the input does not reach
            assert grad is None or not grad.any(), name
            assert expected is None or not expected.any(), name
            continue
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, expected.to(dtype), atol=tol * 10, rtol=tol,
                                   msg=lambda text, name=name: f"{name}: {text}")
    assert_weight_grad(weight.grad, grads["weight"], scale, tol)


def test_the_reported_tiny_weights_are_those_rescaled_to_one():
    torch.manual_seed(0)
    layer = GraphLSTM(4, 3)
    x = torch.randn(4, 4)
    edge_index = torch.tensor([[0, 1, 2, 3, 0], [1, 2, 3, 0, 2]])
    tiny = torch.full((5,), 1e-39, requires_grad=True)
    out, _ = layer(x, edge_index, edge_weight=tiny)
    out.sum().backward()
    expected, _ = layer(x, edge_index, edge_weight=torch.ones(5))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert not tiny.grad.isnan().any()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in layer.parameters())


def stack_reference(stack, x, edge_index, weight, order, state):
    """Layer by layer and direction by direction (direction 1 runs the reversed
    order, layer l > 0 reads the concatenated outputs and starts from the final
    state of layer l - 1) with the weighted reference."""
    orders = [order, order.flip(0)]
    states = [(state[0][d], state[1][d]) for d in range(2)]
    inputs = x
    for index in range(stack.num_layers):
        outs = []
        for d in range(2):
            h, m = graph_lstm_weighted_reference(stack.layers[index][d], inputs, edge_index,
                                                 weight, orders[d], states[d])
            states[d] = (h, m)
            outs.append(h)
        inputs = torch.cat(outs, dim=1)
    return inputs


@pytest.mark.parametrize("case", [(torch.float32, 2.0**-149), (torch.float32, 1e-39),
                                  (torch.float32, 1e38), (torch.float64, 2.0**-1074),
                                  (torch.float64, 5e307)], ids=case_ids)
def test_stack_at_extreme_scales(case):
    dtype, scale = case
    tol = TOL[dtype]
    x, edge_index, weight, order, _, _ = graph(seed=1)
    gen = torch.Generator().manual_seed(1)
    state = tuple(torch.randn(2, x.size(0), 4, generator=gen, dtype=DT) for _ in "hm")
    probe = torch.randn(x.size(0), 8, generator=gen, dtype=DT)
    torch.manual_seed(1)
    stack = GraphLSTMStack(3, 4, num_layers=2, bidirectional=True).to(DT)
    x_r, weight_r = leaf(x), leaf(weight)
    out_ref = stack_reference(stack, x_r, edge_index, weight_r, order, state)
    (out_ref * probe).sum().backward()

    stack = stack.to(dtype)
    stack.zero_grad(set_to_none=True)
    x_s = leaf(x, dtype)
    scaled = (weight.to(dtype) * scale).requires_grad_()
    out, _ = stack(x_s, edge_index, scaled, order=order,
                   state=tuple(s.to(dtype) for s in state))
    torch.testing.assert_close(out, out_ref.detach().to(dtype), atol=tol, rtol=0)
    (out * probe.to(dtype)).sum().backward()
    assert torch.isfinite(x_s.grad).all()
    torch.testing.assert_close(x_s.grad, x_r.grad.to(dtype), atol=tol * 10, rtol=tol)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in stack.parameters())
    assert_weight_grad(scaled.grad, weight_r.grad, scale, tol)


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e-44), (torch.float64, 1e-320)])
def test_explainer_mask_gradient_stays_finite_under_tiny_weights(dtype, scale):
    """In explain mode the mask multiplies the caller's weights; its gradient is
    that of unit-scale weights, whatever their scale."""
    x, edge_index, weight, order, state, probes = graph(seed=2)
    layer = make_layer(2).to(dtype)
    grads = []
    for factor in (1.0, scale):
        mask = torch.randn(edge_index.size(1), generator=torch.Generator().manual_seed(2),
                           dtype=dtype).requires_grad_()
        set_masks(layer, mask, edge_index, apply_sigmoid=True)
        out, (h, m) = layer(x.to(dtype), edge_index, weight.to(dtype) * factor, order=order,
                            state=tuple(s.to(dtype) for s in state))
        clear_masks(layer)
        loss_of(h, m, probes).backward()
        assert torch.isfinite(mask.grad).all()
        grads.append(mask.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=TOL[dtype] * 10, rtol=TOL[dtype])


def test_rescaling_follows_the_flow():
    """With ``flow="target_to_source"`` the receivers are ``edge_index[0]``: the
    weights are rescaled over those, as the flipped graph's are."""
    x, edge_index, weight, order, state, _ = graph(seed=3)
    layer = make_layer(3)
    flipped = copy.deepcopy(layer)
    flipped.flow = "target_to_source"
    tiny = weight * 1e-310
    h, m = flipped(x, edge_index, tiny, order=order, state=state)[1]
    h_ref, m_ref = graph_lstm_weighted_reference(layer, x, edge_index.flip(0), weight, order,
                                                 state)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(m, m_ref, atol=1e-10, rtol=0)
