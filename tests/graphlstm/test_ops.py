"""The operators torch.ops.graphlstm.* pass torch.library.opcheck: schema, fake
(meta) implementation, autograd registration and AOTAutograd, on both engines."""

import pytest
import torch

import graphlstm  # noqa: F401  (registers the operators)
from graphlstm import build_schedule, lattice_graph, use_backend
from tests.helpers import gated_recurrence_op_args, recurrence_op_args

DT = torch.float64


@pytest.mark.parametrize("engine", ["compiled", "torch"])
@pytest.mark.parametrize("per_node, with_m, with_scale",
                         [(True, False, True), (False, True, False), (False, True, True)])
def test_recurrence_opcheck(engine, per_node, with_m, with_scale):
    args = recurrence_op_args(per_node, with_m, with_scale)
    with use_backend(engine):
        torch.library.opcheck(torch.ops.graphlstm.recurrence.default, args)


def test_gated_recurrence_opcheck():
    torch.library.opcheck(torch.ops.graphlstm.gated_recurrence.default,
                          gated_recurrence_op_args())


@pytest.mark.parametrize("kind", [0, 1, 2])  # LSTM, STABLE_LSTM, RNN_TANH
def test_typed_recurrence_opcheck(kind):
    edge_index, edge_type, order = lattice_graph((3, 4))
    sched = build_schedule(edge_index, 12, order=order)
    gen = torch.Generator().manual_seed(1)
    hidden, dims = 2, 2
    gates = {0: (3 + dims) * hidden, 1: (4 + dims) * hidden, 2: hidden}[kind]
    pre = torch.randn(12, gates, generator=gen, dtype=DT, requires_grad=True)
    u = (torch.randn(dims * hidden, gates, generator=gen, dtype=DT) * 0.5).requires_grad_()
    args = (pre, u, sched.offsets[0], sched.offsets[1], sched.visited_src_pos,
            sched.visited_dst_local, edge_type[sched.visited_eid], kind, dims)
    torch.library.opcheck(torch.ops.graphlstm.typed_recurrence.default, args)


def test_schedule_layout_opcheck():
    gen = torch.Generator().manual_seed(2)
    edge_index = torch.randint(0, 30, (2, 80), generator=gen)
    args = (edge_index[0], edge_index[1], torch.randperm(30, generator=gen))
    torch.library.opcheck(torch.ops.graphlstm.schedule_layout.default, args)
