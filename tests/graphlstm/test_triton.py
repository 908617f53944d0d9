"""The Triton level loop (graphlstm._triton) against the PyTorch engine and the
sequential per-node references.

Without a GPU the kernels run on CPU tensors through Triton's interpreter
(``TRITON_INTERPRET=1``, set here before triton is imported); it executes every
program one after another in Python, so the graphs are tiny. With CUDA the same
tests run the compiled kernels on the GPU.
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="the Triton engine needs the 'triton' package")
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device, and TRITON_INTERPRET is not 1", allow_module_level=True)

from graphlstm import GraphLSTM, GraphLSTMStack, build_schedule, use_backend  # noqa: E402
from graphlstm._triton import recurrence as tr  # noqa: E402
from graphlstm.functional import graph_lstm_recurrence  # noqa: E402
from graphlstm.reference import (  # noqa: E402
    graph_lstm_reference,
    graph_lstm_weighted_reference,
)

DEVICE = torch.device("cuda" if CUDA else "cpu")
TOL = dict(atol=1e-4, rtol=1e-4)


def random_batch(seed, sizes=(7, 1, 9, 6), hidden=4, features=3):
    """A batch of disjoint random directed graphs (PyG layout: consecutive node
    ranges) with duplicate edges, self-loops, an isolated node (the graph of one node,
    and node 0 of the last graph), weights (some zero) and a random order."""
    gen = torch.Generator().manual_seed(seed)
    edges, start = [], 0
    for size in sizes:
        if size > 1:
            e = torch.randint(start, start + size, (2, 2 * size), generator=gen)
            if size == sizes[-1]:
                e = e.clamp(min=start + 1)  # the first node of the last graph stays isolated
            edges += [e, e[:, :2]]  # duplicates; self-loops come by chance and are forced:
            edges.append(torch.tensor([[start + 1], [start + 1]]))
        start += size
    edge_index = torch.cat(edges, 1)
    n = start
    weight = torch.rand(edge_index.size(1), generator=gen) + 0.1
    weight[::7] = 0.0
    x = torch.randn(n, features, generator=gen)
    order = torch.randperm(n, generator=gen)
    state = tuple(torch.randn(n, hidden, generator=gen) for _ in "hm")
    return x, edge_index, weight, order, state


# ---------------------------------------------------------------------------------
# Grouping rows into programs
# ---------------------------------------------------------------------------------


def segments_by_loop(edge_index, n):
    """First node of the node range that no edge crosses, per node (plain loop)."""
    crossing = [0] * n
    for a, b in edge_index.t().tolist():
        for p in range(min(a, b), max(a, b)):
            crossing[p] += 1
    first, out = 0, []
    for p in range(n):
        if p > 0 and crossing[p - 1] == 0:
            first = p
        out.append(first)
    return torch.tensor(out)


@pytest.mark.parametrize("num_groups", [1, 2, 100])
def test_row_groups_never_split_a_connected_range(num_groups):
    _, edge_index, _, _, _ = random_batch(0)
    n = int(edge_index.max()) + 1
    group = tr.row_groups(edge_index, n, num_groups)
    assert group.shape == (n,) and int(group.min()) >= 0 and int(group.max()) < num_groups
    assert torch.equal(group[edge_index[0]], group[edge_index[1]])
    assert bool((group.diff() >= 0).all())
    first = segments_by_loop(edge_index, n)
    expected = first * num_groups // n  # segments merged in node order, never split
    assert torch.equal(group, expected)
    if num_groups >= n:
        assert group.unique().numel() == first.unique().numel()  # one group per segment


# ---------------------------------------------------------------------------------
# The level loop against the PyTorch engine
# ---------------------------------------------------------------------------------


def level_case(seed, per_node, with_scale, hidden=4):
    x, edge_index, weight, order, _ = random_batch(seed, hidden=hidden)
    n = x.size(0)
    sched = build_schedule(edge_index, n, order=order)
    e_v = sched.visited_src_pos.numel()
    gen = torch.Generator().manual_seed(seed + 100)

    def rand(*shape, positive=False):
        t = torch.rand(*shape, generator=gen) + 0.1 if positive else torch.randn(
            *shape, generator=gen)
        return t.double().requires_grad_()

    tensors = dict(
        base_z=rand(n, 3 * hidden), base_m=None if per_node else rand(n, hidden),
        weight=rand(n if per_node else e_v, 2 * hidden, positive=True),
        weight_n=rand(3 * hidden, hidden), edge_scale=rand(e_v, positive=True)
        if with_scale else None,
    )
    return sched, tensors


@pytest.mark.parametrize("per_node, with_scale, per_level",
                         [(True, False, False), (True, True, True), (False, True, False),
                          (False, False, True)])
def test_level_loop_equals_torch_engine(per_node, with_scale, per_level, monkeypatch):
    sched, t = level_case(1, per_node, with_scale)
    floats = [v for v in t.values() if v is not None]
    index = (sched.ptr, sched.visited_ptr, sched.visited_src_pos, sched.visited_dst_local)
    with use_backend("torch"):
        expected = graph_lstm_recurrence(t["base_z"], t["base_m"], t["weight"], t["weight_n"],
                                         *index, per_node, t["edge_scale"])
    # Three programs: the batch's pieces merged into groups, as on larger batches.
    monkeypatch.setattr(tr, "MAX_GROUPS", 3)
    groups = tr.schedule_row_groups(sched)
    on_device = {k: None if v is None else v.detach().float().to(DEVICE).requires_grad_()
                 for k, v in t.items()}
    got = tr.recurrence(on_device["base_z"], on_device["base_m"], on_device["weight"],
                        on_device["weight_n"], *(i.to(DEVICE) if torch.is_tensor(i) else i
                                                 for i in index),
                        per_node, on_device["edge_scale"], groups.to(DEVICE), per_level)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double().cpu(), expected.detach(), **TOL)
    grad = torch.randn(expected.shape, dtype=torch.float64)
    want = torch.autograd.grad(expected, floats, grad)
    have = torch.autograd.grad(got, [v for v in on_device.values() if v is not None],
                               grad.float().to(DEVICE))
    for w, h in zip(want, have, strict=True):
        torch.testing.assert_close(h.double().cpu(), w, **TOL)


def test_level_loop_without_edges_or_nodes():
    for n in (0, 5):
        sched = build_schedule(torch.zeros(2, 0, dtype=torch.long), n)
        base_z = torch.randn(n, 6, device=DEVICE, requires_grad=True)
        weight = torch.rand(n, 4, device=DEVICE)
        weight_n = torch.randn(6, 2, device=DEVICE)
        got = tr.recurrence(base_z, None, weight, weight_n, sched.ptr, sched.visited_ptr,
                            sched.visited_src_pos.to(DEVICE), sched.visited_dst_local.to(DEVICE),
                            True)
        u, o, s_c = torch.sigmoid(base_z).split(2, 1)
        m = u * (2 * s_c - 1)
        torch.testing.assert_close(got, torch.cat([torch.tanh(o * m), m], 1), **TOL)
        got.sum().backward()
        assert base_z.grad.shape == base_z.shape


# ---------------------------------------------------------------------------------
# The layers, with the Triton loop in place of the engines, against the references
# ---------------------------------------------------------------------------------


@pytest.fixture
def triton_layers():
    """The layers with their level loops on the Triton engine (on the CPU through the
    interpreter, as TRITON_INTERPRET=1 is set above)."""
    with use_backend("triton"):
        yield


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("with_state, weighted", [(False, False), (True, False), (False, True),
                                                  (True, True)])
def test_layer_equals_sequential_reference(triton_layers, with_state, weighted):
    x, edge_index, weight, order, state = random_batch(2)
    torch.manual_seed(0)
    layer = GraphLSTM(3, 4)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(2.0)
    reference = GraphLSTM(3, 4).double()
    reference.load_state_dict(layer.state_dict())
    layer = layer.to(DEVICE)

    xs, ws, hs, ms = leaves(x, weight, *state)
    out, (h, m) = layer(xs.to(DEVICE), edge_index.to(DEVICE),
                        ws.to(DEVICE) if weighted else None, order=order.to(DEVICE),
                        state=(hs.to(DEVICE), ms.to(DEVICE)) if with_state else None)
    xr, wr, hr, mr = leaves(x.double(), weight.double(), *(s.double() for s in state))
    ref_state = (hr, mr) if with_state else None
    if weighted:
        h_ref, m_ref = graph_lstm_weighted_reference(reference, xr, edge_index, wr, order,
                                                     ref_state)
    else:
        h_ref, m_ref = graph_lstm_reference(reference, xr, edge_index, order, ref_state)
    torch.testing.assert_close(h.double().cpu(), h_ref, **TOL)
    torch.testing.assert_close(m.double().cpu(), m_ref, **TOL)

    gen = torch.Generator().manual_seed(3)
    gh, gm = torch.randn(h_ref.shape, generator=gen), torch.randn(m_ref.shape, generator=gen)
    inputs = [xs] + ([ws] if weighted else []) + ([hs, ms] if with_state else [])
    inputs_ref = [xr] + ([wr] if weighted else []) + ([hr, mr] if with_state else [])
    have = torch.autograd.grad([h, m], inputs + list(layer.parameters()),
                               [gh.to(DEVICE), gm.to(DEVICE)], allow_unused=True)
    want = torch.autograd.grad([h_ref, m_ref], inputs_ref + list(reference.parameters()),
                               [gh.double(), gm.double()], allow_unused=True)
    for a, b, p in zip(have, want, inputs_ref + list(reference.parameters()), strict=True):
        a = torch.zeros_like(p) if a is None else a.double().cpu()  # unused: zero gradient
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, **TOL)


def test_stack_equals_composition_of_references(triton_layers):
    x, edge_index, weight, order, _ = random_batch(4, sizes=(6, 8))
    n = x.size(0)
    gen = torch.Generator().manual_seed(5)
    state = tuple(torch.randn(2, n, 4, generator=gen) for _ in "hm")
    torch.manual_seed(1)
    stack = GraphLSTMStack(3, 4, num_layers=2, bidirectional=True)
    reference = GraphLSTMStack(3, 4, num_layers=2, bidirectional=True).double()
    reference.load_state_dict(stack.state_dict())
    stack = stack.to(DEVICE)
    out, (h_n, m_n) = stack(x.to(DEVICE), edge_index.to(DEVICE), weight.to(DEVICE),
                            order=order.to(DEVICE), state=tuple(s.to(DEVICE) for s in state))

    # Layer by layer with the sequential reference: direction 1 runs the reversed
    # order, layer 1 reads both directions' outputs and starts from layer 0's states.
    orders = [order, order.flip(0)]
    states = [(state[0][d].double(), state[1][d].double()) for d in range(2)]
    inputs, h_ref, m_ref = x.double(), [], []
    for index in range(2):
        outs = []
        for d in range(2):
            h, m = graph_lstm_weighted_reference(reference.layers[index][d], inputs,
                                                 edge_index, weight.double(), orders[d],
                                                 states[d])
            states[d] = (h, m)
            outs.append(h)
            h_ref.append(h)
            m_ref.append(m)
        inputs = torch.cat(outs, 1)
    torch.testing.assert_close(out.double().cpu(), inputs, **TOL)
    torch.testing.assert_close(h_n.double().cpu(), torch.stack(h_ref), **TOL)
    torch.testing.assert_close(m_n.double().cpu(), torch.stack(m_ref), **TOL)
    have = torch.autograd.grad(out.sum(), list(stack.parameters()))
    want = torch.autograd.grad(inputs.sum(), list(reference.parameters()), allow_unused=True)
    for a, b in zip(have, want, strict=True):
        b = torch.zeros_like(a, dtype=torch.float64, device="cpu") if b is None else b
        torch.testing.assert_close(a.double().cpu(), b, **TOL)


@pytest.mark.parametrize("per_level", [False, True])
def test_levels_wider_than_one_block_of_rows(triton_layers, per_level, monkeypatch):
    # Two levels of 20 rows in one program (a block holds 16): every node of the
    # first half (updated first) sends to random nodes of the second half and back.
    gen = torch.Generator().manual_seed(6)
    n, half = 40, 20
    src = torch.randint(0, half, (60,), generator=gen)
    dst = torch.randint(half, n, (60,), generator=gen)
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])[:, ::2]], 1)
    x = torch.randn(n, 3, generator=gen)
    state = tuple(torch.randn(n, 4, generator=gen) for _ in "hm")
    assert build_schedule(edge_index, n).level_sizes().tolist() == [half, n - half]
    torch.manual_seed(2)
    layer = GraphLSTM(3, 4)
    reference = GraphLSTM(3, 4).double()
    reference.load_state_dict(layer.state_dict())
    monkeypatch.setattr(tr, "PER_LEVEL_FROM", 1 if per_level else 10**9)
    out, (h, m) = layer.to(DEVICE)(x.to(DEVICE), edge_index.to(DEVICE),
                                   state=tuple(s.to(DEVICE) for s in state))
    h_ref, m_ref = graph_lstm_reference(reference, x.double(), edge_index,
                                        state=tuple(s.double() for s in state))
    torch.testing.assert_close(h.double().cpu(), h_ref, **TOL)
    torch.testing.assert_close(m.double().cpu(), m_ref, **TOL)
    have = torch.autograd.grad(m.sum(), list(layer.parameters()))
    want = torch.autograd.grad(m_ref.sum(), list(reference.parameters()))
    for a, b in zip(have, want, strict=True):
        torch.testing.assert_close(a.double().cpu(), b, **TOL)


def test_layouts_are_made_once_per_schedule_and_again_after_a_change():
    sched, t = level_case(7, per_node=True, with_scale=False)
    sched = sched.to(DEVICE)
    groups = tr.schedule_row_groups(sched)
    assert tr.schedule_row_groups(sched) is groups
    index = (sched.ptr, sched.visited_ptr, sched.visited_src_pos, sched.visited_dst_local)
    plan = tr.make_plan(*index, groups)
    assert tr.make_plan(*index, groups) is plan
    assert tr.make_plan(*index) is not plan  # another grouping, another layout
    src = sched.visited_src_pos.clone()
    other = tr.make_plan(sched.ptr, sched.visited_ptr, src, sched.visited_dst_local, groups)
    assert other is not plan
    src.add_(0)  # modified in place: made again
    assert tr.make_plan(sched.ptr, sched.visited_ptr, src, sched.visited_dst_local,
                        groups) is not other


# ---------------------------------------------------------------------------------
# The engine's place in graphlstm.backend
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_state", [False, True])
def test_triton_backend_runs_the_kernels_forward_and_backward(triton_layers, monkeypatch,
                                                              with_state):
    calls = []
    for name in ("level_loop_forward", "level_loop_backward"):
        original = getattr(tr, name)

        def counted(*args, _original=original, _name=name):
            calls.append((_name, args[-1] is not None))  # (which, row_group given)
            return _original(*args)

        monkeypatch.setattr(tr, name, counted)
    x, edge_index, _, order, state = random_batch(3, sizes=(5, 4))
    layer = GraphLSTM(3, 4).to(DEVICE)
    out, _ = layer(x.to(DEVICE).requires_grad_(), edge_index.to(DEVICE), order=order.to(DEVICE),
                   state=tuple(s.to(DEVICE) for s in state) if with_state else None)
    out.sum().backward()
    assert calls == [("level_loop_forward", True), ("level_loop_backward", True)]


def test_backend_choice():
    from graphlstm import backend

    x = torch.zeros(3, 2)
    with use_backend("auto"):
        assert backend.triton_for(x) is None  # CPU tensors: the compiled kernels' place
    with use_backend("torch"):
        assert backend.triton_for(x) is None
    if not CUDA:
        with use_backend("triton"):
            assert backend.triton_for(x) is tr  # the interpreter
            assert backend.triton_for(x.double()) is None  # float64 keeps the exact path
            monkeypatch = pytest.MonkeyPatch()
            monkeypatch.setenv("TRITON_INTERPRET", "0")
            try:
                assert backend.triton_for(x) is None
            finally:
                monkeypatch.undo()


def test_failures_raise_when_asked_for_and_warn_once_under_auto(monkeypatch):
    from graphlstm import backend

    monkeypatch.setattr(backend._triton, "module", None)
    monkeypatch.setattr(backend._triton, "error", None)
    monkeypatch.setattr(backend._triton, "warned", False)

    def broken():
        raise ImportError("no triton here")

    monkeypatch.setattr(backend._triton, "load", broken)
    with pytest.raises(RuntimeError, match="Triton kernels cannot be loaded"):
        backend.set_backend("triton")
    assert backend.get_backend() != "triton"
    assert not backend.triton_available()
    with use_backend("auto"), pytest.warns(RuntimeWarning, match="Triton kernels"):
        backend.disable_triton_after_failure(RuntimeError("compilation failed"))
    monkeypatch.setattr(backend, "_backend", "triton")
    with pytest.raises(RuntimeError, match="compilation failed"):
        backend.disable_triton_after_failure(RuntimeError("compilation failed"))


@pytest.mark.parametrize("per_node", [True, False])
def test_operator_passes_opcheck_on_the_triton_engine(triton_layers, per_node):
    # Schema, fake implementation, autograd registration and AOTAutograd of
    # torch.ops.graphlstm.recurrence with the Triton kernels behind it, row groups given.
    sched, t = level_case(5, per_node, with_scale=True, hidden=2)
    sched = sched.to(DEVICE)
    floats = [None if v is None else v.detach().float().to(DEVICE).requires_grad_()
              for v in t.values()]
    base_z, base_m, weight, weight_n, edge_scale = floats
    args = (base_z, base_m, weight, weight_n, edge_scale, sched.offsets[0], sched.offsets[1],
            sched.visited_src_pos, sched.visited_dst_local, per_node,
            tr.schedule_row_groups(sched))
    torch.library.opcheck(torch.ops.graphlstm.recurrence.default, args)
