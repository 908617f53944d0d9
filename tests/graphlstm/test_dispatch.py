"""graphlstm._dispatch.call: in eager mode on the CPU the operators' implementations
and autograd formulas run without the dispatcher, with the operators' values and
gradients; under torch.compile the operators themselves are in the graph."""

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import graphlstm  # noqa: F401  (registers the operators)
from graphlstm import build_schedule, lattice_graph, use_backend
from graphlstm._dispatch import call
from tests.helpers import gated_recurrence_op_args, recurrence_op_args

DT = torch.float64
OPS = torch.ops.graphlstm


def _recurrence_case(per_node, with_m, with_scale):
    args = recurrence_op_args(per_node, with_m, with_scale)
    return OPS.recurrence, args, 1  # the state is the differentiable output


def _gated_case():
    return OPS.gated_recurrence, gated_recurrence_op_args(), 1


def _typed_case(kind):
    edge_index, edge_type, order = lattice_graph((3, 4))
    sched = build_schedule(edge_index, 12, order=order)
    gen = torch.Generator().manual_seed(1)
    hidden, dims = 2, 2
    gates = {0: (3 + dims) * hidden, 1: (4 + dims) * hidden, 2: hidden}[kind]
    pre = torch.randn(12, gates, generator=gen, dtype=DT, requires_grad=True)
    u = (torch.randn(dims * hidden, gates, generator=gen, dtype=DT) * 0.5).requires_grad_()
    args = (pre, u, sched.offsets[0], sched.offsets[1], sched.visited_src_pos,
            sched.visited_dst_local, edge_type[sched.visited_eid], kind, dims)
    return OPS.typed_recurrence, args, 2 if kind != 2 else 1  # h and c; an RNN has no c


CASES = {
    "recurrence-per-node-scaled": lambda: _recurrence_case(True, False, True),
    "recurrence-per-edge": lambda: _recurrence_case(False, True, False),
    "recurrence-per-edge-scaled": lambda: _recurrence_case(False, True, True),
    "gated_recurrence": _gated_case,
    "typed_recurrence-lstm": lambda: _typed_case(0),
    "typed_recurrence-stable-lstm": lambda: _typed_case(1),
    "typed_recurrence-rnn": lambda: _typed_case(2),
}


def _values_and_gradients(fn, args, differentiable):
    """The outputs of ``fn(*args)`` and the gradients of every floating input that
    requires one, of a random weighting of the differentiable outputs."""
    outputs = fn(*args)
    gen = torch.Generator().manual_seed(7)
    loss = sum((out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
               for out in outputs[:differentiable])
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)
    return [out.detach() for out in outputs], list(grads)


def _operator_events(fn):
    """Names of the graphlstm operators the dispatcher ran while ``fn()`` ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events() if event.name.startswith("graphlstm::")}


# Only graphlstm::recurrence has a PyTorch implementation inside the operator; the
# other operators run the compiled kernels alone.
ENGINE_CASES = [(case, "compiled") for case in CASES] + [
    (case, "torch") for case in CASES if case.startswith("recurrence")]


@pytest.mark.parametrize(("case", "engine"), ENGINE_CASES)
def test_eager_call_equals_the_operator(case, engine):
    op, args, differentiable = CASES[case]()
    with use_backend(engine):
        direct = []
        events = _operator_events(
            lambda: direct.append(_values_and_gradients(lambda *a: call(op, *a), args,
                                                        differentiable)))
        expected = _values_and_gradients(op, args, differentiable)
        with torch.no_grad():
            without_grad = call(op, *args)
    # The dispatcher ran nothing, forward or backward: the eager path was taken.
    assert events == set()
    (values, grads), (expected_values, expected_grads) = direct[0], expected
    for got, want in zip(values + grads, expected_values + expected_grads, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    for got, want in zip(without_grad, expected_values, strict=True):
        assert not got.requires_grad and torch.equal(got, want)


def test_eager_call_of_the_schedule_equals_the_operator():
    gen = torch.Generator().manual_seed(2)
    edge_index = torch.randint(0, 30, (2, 80), generator=gen)
    args = (edge_index[0], edge_index[1], torch.randperm(30, generator=gen))
    direct = []
    assert _operator_events(lambda: direct.append(call(OPS.schedule_layout, *args))) == set()
    expected = OPS.schedule_layout(*args)
    assert len(direct[0]) == len(expected) == 13
    for got, want in zip(direct[0], expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_other_tensors_and_modes_go_through_the_operator():
    op, args, differentiable = CASES["recurrence-per-edge"]()
    # Under a dispatch mode (fake tensors, make_fx, a FLOP counter) the operator runs.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):
        events = _operator_events(lambda: _values_and_gradients(
            lambda *a: call(op, *a), args, differentiable))
    assert {"graphlstm::recurrence", "graphlstm::recurrence_backward"} <= events
    # So it does for a tensor subclass.

    class Marked(torch.Tensor):
        pass

    marked = (args[0].detach().as_subclass(Marked).requires_grad_(), *args[1:])
    events = _operator_events(lambda: call(op, *marked))
    assert "graphlstm::recurrence" in events


def _recording_backend():
    """A torch.compile backend that keeps the forward and backward graphs AOTAutograd
    makes, and runs them as they are."""
    graphs = {"forward": [], "backward": []}

    def recorder(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    return aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward")), graphs


def _graph_operators(graph_modules):
    return {str(node.target) for gm in graph_modules for node in gm.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("graphlstm.")}


@pytest.mark.parametrize("case", ["recurrence-per-edge-scaled", "gated_recurrence",
                                  "typed_recurrence-lstm"])
def test_compiled_graph_calls_the_operator(case):
    op, args, differentiable = CASES[case]()
    name = str(op).rsplit(".", 1)[-1]
    backend, graphs = _recording_backend()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(lambda *a: call(op, *a), backend=backend, fullgraph=True)
        got = _values_and_gradients(compiled, args, differentiable)
    finally:
        torch._dynamo.reset()
    assert _graph_operators(graphs["forward"]) == {f"graphlstm.{name}.default"}
    assert _graph_operators(graphs["backward"]) == {f"graphlstm.{name}_backward.default"}
    expected = _values_and_gradients(lambda *a: call(op, *a), args, differentiable)
    for a, b in zip(got[0] + got[1], expected[0] + expected[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
