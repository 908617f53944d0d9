"""The compiled engine against the PyTorch reference path, and the backend switch.

The exactness tests of the layer, the level loop and the schedule run on both
engines through the ``engine`` fixture (test_graph_lstm.py, test_functional.py,
test_schedule.py); this module checks what is specific to the switch: the same
Schedule field by field, the threaded loop, the fallback when the kernels
cannot load, and errors.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_undirected

import graphlstm
from graphlstm import GraphLSTM, backend, build_schedule, use_backend
from graphlstm._kernels import threads as kernel_threads
from graphlstm.functional import graph_lstm_recurrence
from tests.helpers import ROOT as REPO_ROOT
from tests.helpers import gated_case, run_gated

DT = torch.float64
ROOT = str(REPO_ROOT)


def assert_same_schedule(a, b):
    """Every field equal: tensors by torch.equal and dtype, the rest by value and type."""
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype, field.name
            assert torch.equal(x, y), field.name
        else:
            assert type(x) is type(y) and x == y, field.name
            if isinstance(x, list):
                assert all(type(v) is int for v in x), field.name


def both_schedules(*args, **kwargs):
    with use_backend("compiled"):
        compiled = build_schedule(*args, **kwargs)
    with use_backend("torch"):
        reference = build_schedule(*args, **kwargs)
    return compiled, reference


@pytest.mark.parametrize("seed", range(30))
def test_schedule_equals_reference_on_random_graphs(seed):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 300, (1,), generator=gen))
    e = int(torch.randint(0, 5 * n, (1,), generator=gen))
    # Edges among the first 80% of the nodes only: the rest are isolated.
    active = max(1, int(0.8 * n))
    edge_index = torch.randint(0, active, (2, e), generator=gen)  # directed, loops, duplicates
    if seed % 3 == 0:
        edge_index = to_undirected(edge_index, num_nodes=n)
    if seed % 4 == 0 and e > 0:
        edge_index = torch.cat([edge_index, edge_index[:, : e // 2]], dim=1)
    if seed % 5 == 0:
        kwargs = dict(score=torch.randint(0, 4, (n,), generator=gen).double())  # many ties
    elif seed % 5 == 1:
        kwargs = {}
    else:
        kwargs = dict(order=torch.randperm(n, generator=gen))
    assert_same_schedule(*both_schedules(edge_index, n, **kwargs))


def test_schedule_equals_reference_on_a_batch_and_edge_cases():
    gen = torch.Generator().manual_seed(0)
    graphs = [Data(edge_index=torch.randint(0, n, (2, 3 * n), generator=gen), num_nodes=n)
              for n in (7, 1, 40, 13)]
    batch = Batch.from_data_list(graphs)
    score = torch.rand(batch.num_nodes, generator=gen)
    assert_same_schedule(*both_schedules(batch.edge_index, batch.num_nodes, score=score))
    empty = torch.empty(2, 0, dtype=torch.long)
    assert_same_schedule(*both_schedules(empty, 0))
    assert_same_schedule(*both_schedules(empty, 5))                      # isolated nodes only
    assert_same_schedule(*both_schedules(torch.tensor([[0, 1], [0, 1]]), 2))  # self-loops only
    chain = torch.stack([torch.arange(99), torch.arange(1, 100)])
    assert_same_schedule(*both_schedules(chain, 100))                    # 100 levels
    int32 = torch.randint(0, 20, (2, 60), generator=gen, dtype=torch.int32)
    assert_same_schedule(*both_schedules(int32, 20, order=torch.randperm(20).int()))


def test_grid_schedule_equals_reference():
    side = 30
    idx = torch.arange(side * side).view(side, side)
    right = torch.stack([idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)])
    down = torch.stack([idx[:-1].reshape(-1), idx[1:].reshape(-1)])
    grid = to_undirected(torch.cat([right, down], 1))
    order = torch.randperm(side * side, generator=torch.Generator().manual_seed(1))
    assert_same_schedule(*both_schedules(grid, side * side, order=order))


def recurrence_inputs(n=400, hidden=5, seed=0, per_node=False):
    gen = torch.Generator().manual_seed(seed)
    edge_index = to_undirected(torch.randint(0, n, (2, 3 * n), generator=gen), num_nodes=n)
    # A random order on a sparse graph: few levels with many nodes each.
    sched = build_schedule(edge_index, n, order=torch.randperm(n, generator=gen))
    e_v = sched.visited_src_pos.numel()
    tensors = [
        torch.randn(n, 3 * hidden, generator=gen, dtype=DT),
        torch.randn(n, hidden, generator=gen, dtype=DT),
        torch.rand(n if per_node else e_v, 2 * hidden, generator=gen, dtype=DT),
        torch.randn(3 * hidden, hidden, generator=gen, dtype=DT),
        torch.rand(e_v, generator=gen, dtype=DT) * 2,
    ]
    for t in tensors:
        t.requires_grad_(True)
    return sched, tensors


def run_recurrence(sched, tensors, per_node):
    base_z, base_m, weight, weight_n, scale = tensors
    return graph_lstm_recurrence(base_z, base_m, weight, weight_n, sched.ptr, sched.visited_ptr,
                                 sched.visited_src_pos, sched.visited_dst_local, per_node, scale)


def assert_engines_agree(run, inputs, grad_out, names=None):
    """``run()`` on the PyTorch engine, then on the compiled one: the same values and
    the same gradients of every tensor in ``inputs``, float64 to 1e-10."""
    results = []
    for engine in ("torch", "compiled"):
        with use_backend(engine):
            out = run()
            results.append((out, torch.autograd.grad(out, inputs, grad_out)))
    (expected, expected_grads), (got, grads) = results
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    for name, g, e in zip(names or range(len(inputs)), grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=0, msg=str(name))


@pytest.mark.parametrize("per_node", [True, False])
def test_threaded_loop_equals_reference(per_node, monkeypatch):
    """Levels large enough for threads give the same values and gradients."""
    sched, tensors = recurrence_inputs(per_node=per_node)
    assert max(sched.level_sizes().tolist()) >= 40
    grad_out = torch.randn(sched.num_nodes, 10, dtype=DT)
    with use_backend("torch"):
        expected = run_recurrence(sched, tensors, per_node)
        expected_grads = torch.autograd.grad(expected, tensors, grad_out)
    monkeypatch.setattr(kernel_threads, "_PARALLEL_FROM", 4)
    torch.set_num_threads(2)  # conftest restores the thread count
    with use_backend("compiled"):
        got = run_recurrence(sched, tensors, per_node)
        grads = torch.autograd.grad(got, tensors, grad_out)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=0)


def test_threaded_layer_equals_reference(monkeypatch):
    n = 300
    gen = torch.Generator().manual_seed(3)
    edge_index = to_undirected(torch.randint(0, n, (2, 3 * n), generator=gen), num_nodes=n)
    x = torch.randn(n, 4, generator=gen, dtype=DT)
    state = tuple(torch.randn(n, 6, generator=gen, dtype=DT) for _ in "hm")
    order = torch.randperm(n, generator=gen)
    torch.manual_seed(0)
    layer = GraphLSTM(4, 6).to(DT)
    with use_backend("torch"):
        expected = layer(x, edge_index, order=order, state=state)[1]
    monkeypatch.setattr(kernel_threads, "_PARALLEL_FROM", 4)
    torch.set_num_threads(2)
    with use_backend("compiled"):
        got = layer(x, edge_index, order=order, state=state)[1]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=0)


def test_threaded_gated_loop_equals_reference(monkeypatch):
    sched, t = gated_case(0, n=300, hidden=4)
    assert max(sched.level_sizes().tolist()) >= 20
    grad_out = torch.randn(sched.num_nodes, 8, dtype=DT)
    with use_backend("torch"):
        expected = run_gated(sched, t)
        expected_grads = torch.autograd.grad(expected, list(t.values()), grad_out)
    monkeypatch.setattr(kernel_threads, "_PARALLEL_FROM", 4)
    torch.set_num_threads(2)
    with use_backend("compiled"):
        got = run_gated(sched, t)
        grads = torch.autograd.grad(got, list(t.values()), grad_out)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    for name, g, e in zip(t, grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("level_gemm", [True, False])
def test_gated_loop_with_and_without_the_blas_level_product_equals_reference(
        level_gemm, monkeypatch):
    # The level products W_n h_bar (and W_n^T dL/dz) go through MKL's GEMM where torch
    # has MKL, else through the kernels' dot products: both against the PyTorch path.
    kernels = backend._numba.try_load()
    if level_gemm:
        assert (kernels.gemm_address(DT) != 0) == torch.backends.mkl.is_available()
        assert (kernels.gemm_address(torch.float32) != 0) == torch.backends.mkl.is_available()
        assert kernels.gemm_address(torch.float16) == 0
    else:
        monkeypatch.setattr(kernels, "gemm_address", lambda dtype: 0)
    sched, t = gated_case(3, n=200, hidden=5)
    grad_out = torch.randn(sched.num_nodes, 10, dtype=DT)
    assert_engines_agree(lambda: run_gated(sched, t), list(t.values()), grad_out, names=t)


@pytest.mark.parametrize("level_gemm", [True, False])
@pytest.mark.parametrize("per_node", [True, False])
def test_loop_with_and_without_the_blas_level_product_equals_reference(
        per_node, level_gemm, monkeypatch):
    if not level_gemm:
        monkeypatch.setattr(backend._numba.try_load(), "gemm_address", lambda dtype: 0)
    sched, tensors = recurrence_inputs(n=150, per_node=per_node, seed=4)
    grad_out = torch.randn(sched.num_nodes, 10, dtype=DT)
    assert_engines_agree(lambda: run_recurrence(sched, tensors, per_node), tensors, grad_out)


def test_gated_loop_refuses_unvisited_edges_out_of_range():
    sched, t = gated_case(1)
    t = {k: v.detach() for k, v in t.items()}
    bad = sched.unvisited_edge_index_pos.clone()
    bad[0, 0] = sched.num_nodes
    with use_backend("compiled"), pytest.raises(ValueError, match="unvisited_edge_index"):
        run_gated(dataclasses.replace(sched, unvisited_edge_index_pos=bad), t)


def test_gated_loop_refuses_a_perm_that_is_not_a_permutation():
    sched, t = gated_case(2)
    t = {k: v.detach() for k, v in t.items()}
    bad = sched.perm.clone()
    bad[1] = bad[0]
    with use_backend("compiled"), pytest.raises(ValueError, match="permutation"):
        run_gated(dataclasses.replace(sched, perm=bad), t)


def test_float32_compiled_close_to_float64_reference():
    sched, tensors = recurrence_inputs(n=200, per_node=False)
    with use_backend("torch"):
        expected = run_recurrence(sched, tensors, False)
    with use_backend("compiled"):
        got = run_recurrence(sched, [t.detach().float() for t in tensors], False)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_loop_refuses_edges_that_break_the_level_order():
    sched, tensors = recurrence_inputs(n=50)
    base_z, base_m, weight, weight_n, _ = (t.detach() for t in tensors)
    src = sched.visited_src_pos.clone()
    last = sched.num_levels - 1
    first_of_last = sched.ptr[last]
    src[sched.visited_ptr[last]] = first_of_last  # a node of the same level
    with use_backend("compiled"), pytest.raises(ValueError, match="src"):
        graph_lstm_recurrence(base_z, base_m, weight, weight_n, sched.ptr, sched.visited_ptr,
                              src, sched.visited_dst_local)
    dst_local = sched.visited_dst_local.clone()
    dst_local[0] = sched.num_nodes
    with use_backend("compiled"), pytest.raises(ValueError, match="dst_local"):
        graph_lstm_recurrence(base_z, base_m, weight, weight_n, sched.ptr, sched.visited_ptr,
                              sched.visited_src_pos, dst_local)


def test_use_backend_sets_and_restores():
    assert backend.get_backend() == "auto"
    with use_backend("torch"):
        assert backend.get_backend() == "torch"
        with use_backend("compiled"):
            assert backend.get_backend() == "compiled"
        assert backend.get_backend() == "torch"
    assert backend.get_backend() == "auto"
    with pytest.raises(KeyError), use_backend("torch"):
        raise KeyError("inside")
    assert backend.get_backend() == "auto"
    assert graphlstm.use_backend is use_backend


@pytest.mark.parametrize("name", ["numba", "", None, "TORCH"])
def test_unknown_backend_is_refused(name):
    with pytest.raises(ValueError, match="backend"):
        backend.set_backend(name)
    assert backend.get_backend() == "auto"


def test_cpu_float32_and_float64_only():
    cpu64, cpu32 = torch.zeros(2, dtype=DT), torch.zeros(2)
    assert backend.kernels_for(cpu64, cpu32, None, torch.zeros(2, dtype=torch.long)) is not None
    assert backend.kernels_for(torch.zeros(2, dtype=torch.bfloat16)) is None
    assert backend.kernels_for(torch.zeros(2, device="meta")) is None
    with use_backend("torch"):
        assert backend.kernels_for(cpu64) is None


@pytest.fixture
def kernels_fail_to_load(monkeypatch):
    """The state of a process where importing the kernels fails."""

    def fail():
        raise ImportError("No module named 'numba'")

    monkeypatch.setattr(backend._numba, "load", fail)
    monkeypatch.setattr(backend._numba, "module", None)
    monkeypatch.setattr(backend._numba, "error", None)
    monkeypatch.setattr(backend._numba, "warned", False)


def test_missing_kernels_warn_once_and_give_the_same_results(kernels_fail_to_load):
    gen = torch.Generator().manual_seed(5)
    n = 40
    edge_index = torch.randint(0, n, (2, 120), generator=gen)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    torch.manual_seed(0)
    layer = GraphLSTM(3, 4).to(DT)
    with pytest.warns(RuntimeWarning, match="PyTorch path") as record:
        out1 = layer(x, edge_index, score=torch.rand(n, generator=gen))
        out2 = layer(x, edge_index)
        schedule = build_schedule(edge_index, n)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert not backend.compiled_available()
    assert isinstance(backend._numba.error, ImportError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        with use_backend("torch"):
            assert_same_schedule(schedule, build_schedule(edge_index, n))
            assert torch.equal(out2[0], layer(x, edge_index)[0])
        layer(x, edge_index)
    assert out1[0].shape == (n, 4)


def test_explicit_compiled_backend_raises_when_kernels_are_missing(kernels_fail_to_load):
    with pytest.raises(RuntimeError, match="numba"):
        backend.set_backend("compiled")
    assert backend.get_backend() == "auto"


def test_kernels_that_fail_to_compile_fall_back_once(monkeypatch):
    kernels = backend._numba.try_load()
    monkeypatch.setattr(backend._numba, "module", kernels)
    monkeypatch.setattr(backend._numba, "error", None)
    monkeypatch.setattr(backend._numba, "warned", False)

    class BrokenKernels:
        CompileError = kernels.CompileError

        def schedule_layout(self, *args):
            raise kernels.CompileError("no target machine")

    monkeypatch.setattr(backend._numba, "module", BrokenKernels())
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.warns(RuntimeWarning, match="no target machine"):
        compiled = build_schedule(edge_index, 3)
    with use_backend("torch"):
        assert_same_schedule(compiled, build_schedule(edge_index, 3))
    with pytest.raises(RuntimeError, match="kernels"):
        backend.set_backend("compiled")


def _typed_case():
    from graphlstm import lattice_graph

    edge_index, edge_type, order = lattice_graph((3, 4))
    return torch.randn(12, 2, dtype=DT, requires_grad=True), edge_index, edge_type, order


def test_typed_cells_take_the_compiled_loop_and_grid_lstm_the_scan(monkeypatch):
    from graphlstm import GridLSTMCell, MDLSTMCell, MDRNNCell

    kernels = backend._numba.try_load()
    calls = []

    def spy(name, fn):
        def call(*args):
            calls.append(name)
            return fn(*args)
        return call

    for name in ("typed_forward", "typed_backward"):
        monkeypatch.setattr(kernels, name, spy(name, getattr(kernels, name)))
    x, edge_index, edge_type, order = _typed_case()
    torch.manual_seed(0)
    for cell in (MDLSTMCell(2, 3, 2), MDRNNCell(2, 3, 2), GridLSTMCell(2, 3, 2)):
        cell = cell.to(DT)
        outputs = {}
        for engine in ("compiled", "torch"):
            calls.clear()
            with use_backend(engine):
                h = cell(x, edge_index, edge_type, order)[0]
                grad = torch.autograd.grad(h.square().sum(), x)[0]
            compiled = isinstance(cell, (MDLSTMCell, MDRNNCell)) and engine == "compiled"
            assert calls == (["typed_forward", "typed_backward"] if compiled else [])
            outputs[engine] = h, grad
        for a, b in zip(outputs["compiled"], outputs["torch"], strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("threads, level_gemm", [(2, True), (1, False)])
def test_typed_loop_threaded_and_without_blas_equals_the_scan(threads, level_gemm,
                                                              monkeypatch):
    # Levels of a random order on a sparse typed graph are large enough for threads
    # (from 4 rows here); without MKL the level products are the kernels' dot products.
    from graphlstm import MDLSTMCell, MDRNNCell

    if not level_gemm:
        monkeypatch.setattr(backend._numba.try_load(), "gemm_address", lambda dtype: 0)
    monkeypatch.setattr(kernel_threads, "_PARALLEL_FROM", 4)
    torch.set_num_threads(threads)  # conftest restores the thread count
    gen = torch.Generator().manual_seed(16)
    n = 300
    edge_index = torch.randint(0, n, (2, 900), generator=gen)
    edge_type = torch.randint(0, 2, (900,), generator=gen)
    order = torch.randperm(n, generator=gen)
    assert max(build_schedule(edge_index, n, order=order).level_sizes().tolist()) >= 20
    x = torch.randn(n, 3, generator=gen, dtype=DT, requires_grad=True)
    torch.manual_seed(0)
    for cell in (MDLSTMCell(3, 4, 2), MDLSTMCell(3, 4, 2, stable=True), MDRNNCell(3, 4, 2)):
        cell = cell.to(DT)
        results = []
        for engine in ("compiled", "torch"):
            with use_backend(engine):
                h = cell(x, edge_index, edge_type, order)[0]
                grads = torch.autograd.grad((h * h).sum(), [x, *cell.parameters()])
            results.append((h, *grads))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_typed_loop_that_fails_to_compile_falls_back_once(monkeypatch):
    from graphlstm import MDLSTMCell

    kernels = backend._numba.try_load()
    monkeypatch.setattr(backend._numba, "module", kernels)
    monkeypatch.setattr(backend._numba, "error", None)
    monkeypatch.setattr(backend._numba, "warned", False)

    def broken(*args):
        raise kernels.CompileError("no target machine")

    monkeypatch.setattr(kernels, "typed_forward", broken)
    x, edge_index, edge_type, order = _typed_case()
    cell = MDLSTMCell(2, 3, 2).to(DT)
    with pytest.warns(RuntimeWarning, match="no target machine"):
        h = cell(x, edge_index, edge_type, order)[0]
    with use_backend("torch"):
        assert torch.equal(h, cell(x, edge_index, edge_type, order)[0])


def test_environment_variable_selects_the_backend():
    code = "import graphlstm; print(graphlstm.backend.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(GRAPHLSTM_BACKEND="torch"), check=True)
    assert out.stdout.strip() == "torch"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(GRAPHLSTM_BACKEND="fast"))
    assert bad.returncode != 0 and "backend" in bad.stderr


def test_kernels_compile_without_a_cache_where_numba_cannot_write_one():
    """numba refuses ``cache=True`` when no cache directory is writable; the kernels
    are then compiled in the process instead of failing."""
    code = textwrap.dedent("""
        import importlib.util, numba, sys
        real_njit = numba.njit
        def njit(*args, **kwargs):
            if kwargs.get("cache"):
                raise RuntimeError("cannot cache function 'twice': no locator available")
            return real_njit(*args, **kwargs)
        numba.njit = njit
        spec = importlib.util.spec_from_file_location("_jit", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        @module.jit()
        def twice(x):
            return 2 * x
        print(twice(21), type(twice._cache).__name__)
    """)
    path = os.path.join(ROOT, "graphlstm", "_kernels", "_jit.py")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["42", "NullCache"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "GRAPHLSTM_BACKEND"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.mark.parametrize(("dtype", "limit", "exp_bound", "sigmoid_bound"),
                         [(np.float64, 700.0, 3e-16, 3e-16), (np.float32, 85.0, 1e-7, 2e-7)])
def test_kernel_exp_and_sigmoid_within_their_documented_error(dtype, limit, exp_bound,
                                                              sigmoid_bound):
    """The kernels' polynomial exp (compiled with fused multiply-adds, as the loops are)
    against long-double ``numpy.exp``, over the whole range they clamp to."""
    import numba

    from graphlstm._kernels.recurrence import fast_exp, sigmoid

    @numba.njit(fastmath={"contract"})
    def apply(x, exp_out, sigmoid_out):
        for i in range(x.size):
            exp_out[i] = fast_exp(x[i])
            sigmoid_out[i] = sigmoid(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-limit, limit, 100_001), 5 * rng.standard_normal(50_000)])
    x = x.astype(dtype)
    exp_out, sigmoid_out = np.empty_like(x), np.empty_like(x)
    apply(x, exp_out, sigmoid_out)
    exact = np.exp(x.astype(np.longdouble))
    assert np.max(np.abs(exp_out - exact) / exact) < exp_bound
    exact = 1 / (1 + np.exp(-x.astype(np.longdouble)))
    assert np.max(np.abs(sigmoid_out - exact) / exact) < sigmoid_bound
