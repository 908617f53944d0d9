"""The level loop of :mod:`graphlstm.functional` on its own: per-edge scalars (edge weights)."""

import pytest
import torch
from torch_geometric.utils import to_undirected

from graphlstm.functional import graph_lstm_recurrence
from graphlstm.schedule import build_schedule

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
