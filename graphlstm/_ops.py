r"""The operators of graphlstm: ``torch.ops.graphlstm.*``.

Every compiled kernel is a PyTorch operator (:func:`torch.library.custom_op`)
with a fake implementation, which gives the shapes of its outputs from those of
its inputs, and an autograd formula (:func:`torch.library.register_autograd`),
whose backward is an operator too. ``torch.compile`` (dynamo, AOTAutograd,
inductor) therefore sees each kernel as one opaque call with known output
shapes: it never traces into numba, and a graph of another size changes
symbolic sizes, not the traced program.

==============================================  =====================================
operator                                        what it runs
==============================================  =====================================
``graphlstm::schedule_layout``                  the O(N + E) schedule (CPU)
``graphlstm::recurrence`` (``_backward``)       the Graph LSTM level loop, no
                                                previous state (any device)
``graphlstm::gated_recurrence`` (``_backward``) the level loop with a previous
                                                state, gates inside (CPU)
``graphlstm::typed_recurrence`` (``_backward``) the MD-LSTM / MD-RNN level loop (CPU)
==============================================  =====================================

Engines are implementations of these operators per device type. The
``"cpu"`` implementations run the numba kernels (:mod:`graphlstm._kernels`)
where :mod:`graphlstm.backend` lets them (float32/float64, kernels loaded),
else the PyTorch reference; the default implementation of
``graphlstm::recurrence`` and its backward, used for every other device, is
the PyTorch reference of :mod:`graphlstm.functional`. Another engine (Triton
kernels on CUDA, say) adds its implementation of the same operators with
``torch.ops.graphlstm.recurrence.default``'s ``register_kernel("cuda")`` (here:
:func:`recurrence` ``.register_kernel("cuda")``), taking and returning the
tensors documented on each operator; the fake implementations and the autograd
formulas stay as they are. The engines are interchangeable between a forward
and its backward: both read only the tensors the forward returns.

Offsets (``ptr``, ``visited_ptr``) are int64 tensors on the CPU
(:attr:`graphlstm.schedule.Schedule.offsets`): a traced program then holds no
Python list whose values would be guarded on.
"""

import numpy as np
import torch
from torch import Tensor

from graphlstm import backend
from graphlstm._dispatch import call, register_eager
from graphlstm.functional import recurrence_reference_backward, recurrence_reference_forward

__all__ = [
    "gated_recurrence",
    "recurrence",
    "schedule_layout",
    "typed_recurrence",
]


def _index(t: Tensor) -> np.ndarray:
    """An int64 index tensor as a contiguous NumPy array on the CPU."""
    return t.detach().to("cpu", torch.long).contiguous().numpy()


def _compiled_kernels(floats, indices=()):
    """The numba kernels if the backend lets them run on these tensors (every floating
    tensor of one dtype), else ``None``."""
    floats = [t for t in floats if t is not None]
    if any(t.dtype != floats[0].dtype for t in floats):
        return None
    return backend.kernels_for(*floats, *indices)


# --------------------------------------------------------------------------
# The schedule.
# --------------------------------------------------------------------------

_SCHEDULE_OUTPUTS = 13


@torch.library.custom_op("graphlstm::schedule_layout", mutates_args=(), device_types="cpu")
def schedule_layout(
    src: Tensor, dst: Tensor, order: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
           Tensor, Tensor, Tensor]:
    """Every index tensor of a schedule from validated edges ``src -> dst`` and an
    update order (see :func:`graphlstm._kernels.schedule.schedule_layout`):
    ``(rank, level, perm, pos, ptr, visited_eid, visited_ptr, visited [5, E_v],
    unvisited_eid, unvisited_ptr, unvisited [2, E_u], unvisited_pos [2, E_u],
    in_degree)``. The number of levels and of visited and unvisited edges depend on
    the values: the fake implementation gives them unbacked symbolic sizes."""
    kernels = backend._require_kernels()
    arrays = kernels.schedule_layout(_index(src), _index(dst), _index(order))
    return tuple(torch.from_numpy(a) for a in arrays)


@schedule_layout.register_fake
def _(src, dst, order):
    ctx = torch.library.get_ctx()
    n = order.size(0)
    offsets = ctx.new_dynamic_size(min=1)  # K + 1
    visited, unvisited = ctx.new_dynamic_size(), ctx.new_dynamic_size()

    def new(*shape):
        return order.new_empty(shape, dtype=torch.long)

    return (new(n), new(n), new(n), new(n), new(offsets), new(visited), new(offsets),
            new(5, visited), new(unvisited), new(offsets), new(2, unvisited),
            new(2, unvisited), new(n))


# --------------------------------------------------------------------------
# The Graph LSTM level loop (no previous state, or weights given per edge).
# --------------------------------------------------------------------------


def _recurrence_reference(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr,
                          src, dst_local, per_node):
    """The PyTorch reference of ``graphlstm::recurrence`` (the level bounds as lists)."""
    return recurrence_reference_forward(base_z, base_m, weight, weight_n, edge_scale,
                                        ptr.tolist(), visited_ptr.tolist(), src, dst_local,
                                        per_node)


def _recurrence_backward_reference(grad_state, state, gates, sums, weight, weight_n,
                                   edge_scale, ptr, visited_ptr, src, dst_local, per_node,
                                   need_weight, need_scale):
    """The PyTorch reference of ``graphlstm::recurrence_backward``."""
    return recurrence_reference_backward(grad_state, state, gates, sums, weight, weight_n,
                                         edge_scale, ptr.tolist(), visited_ptr.tolist(), src,
                                         dst_local, per_node, need_weight, need_scale)


@torch.library.custom_op("graphlstm::recurrence", mutates_args=())
def recurrence(
    base_z: Tensor,
    base_m: Tensor | None,
    weight: Tensor,
    weight_n: Tensor,
    edge_scale: Tensor | None,
    ptr: Tensor,
    visited_ptr: Tensor,
    src: Tensor,
    dst_local: Tensor,
    per_node: bool,
    row_group: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The level loop of :func:`graphlstm.functional.graph_lstm_recurrence`.

    Returns ``(state [N, 2H], gates [N, 3H], agg_h [N, H], sums [N or 0, 2H])``:
    the new ``[h' | m']``, the activated gates ``u, o, sigma(2c)``, the visited
    neighbours' mean ``h_bar``, and with ``per_node`` their (scaled) sums
    ``[N, 2H]`` (else ``[0, 2H]``); the last three are what the backward reads.
    ``row_group`` (optional, ``[N]``) tells which rows no edge joins
    (:func:`graphlstm._triton.recurrence.schedule_row_groups`): the Triton engine
    runs each group in a program of its own; the other engines ignore it.
    Default implementation (every device): the PyTorch reference.
    """
    return _recurrence_reference(base_z, base_m, weight, weight_n, edge_scale, ptr,
                                 visited_ptr, src, dst_local, per_node)


@recurrence.register_kernel("cpu")
def _(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src, dst_local, per_node,
      row_group=None):
    state = _recurrence_triton(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr,
                               src, dst_local, per_node, row_group)
    if state is not None:  # an explicit "triton" backend under TRITON_INTERPRET=1
        return state
    kernels = _compiled_kernels((base_z, base_m, weight, weight_n, edge_scale), (src, dst_local))
    if kernels is not None:
        try:
            return _recurrence_numba(kernels, base_z, base_m, weight, weight_n, edge_scale, ptr,
                                     visited_ptr, src, dst_local, per_node)
        except kernels.CompileError as error:
            backend.disable_after_failure(error)
    return _recurrence_reference(base_z, base_m, weight, weight_n, edge_scale, ptr,
                                 visited_ptr, src, dst_local, per_node)


def _recurrence_numba(kernels, base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr,
                      src, dst_local, per_node):
    n, hidden = base_z.size(0), weight_n.size(1)
    ptr = _index(ptr)
    src = _index(src)
    node_ptr, edges = kernels.node_edges(ptr, _index(visited_ptr), src, _index(dst_local))
    base_z, weight = base_z.detach().contiguous(), weight.detach().contiguous()
    has_m, has_scale = base_m is not None, edge_scale is not None
    base_m = base_m.detach().contiguous() if has_m else base_z.new_empty(0, hidden)
    scale = edge_scale.detach().contiguous() if has_scale else base_z.new_empty(0)
    state = base_z.new_empty(n, 2 * hidden)
    gates = base_z.new_empty(n, 3 * hidden)
    agg_h = base_z.new_empty(n, hidden)
    sums = base_z.new_empty(n if per_node else 0, 2 * hidden)
    weight_n = weight_n.detach().contiguous()
    args = (base_z.numpy(), base_m.numpy(), has_m, weight.numpy(), weight_n.numpy(),
            weight_n.t().contiguous().numpy(), scale.numpy(), has_scale, bool(per_node),
            ptr, node_ptr, edges, src, kernels.gemm_address(base_z.dtype))
    outputs = (state.numpy(), gates.numpy(), agg_h.numpy(), sums.numpy())
    kernels.run_level_kernel("forward", ptr, args, outputs)
    return state, gates, agg_h, sums


@recurrence.register_kernel("cuda")
def _(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src, dst_local, per_node,
      row_group=None):
    state = _recurrence_triton(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr,
                               src, dst_local, per_node, row_group)
    if state is not None:
        return state
    return _recurrence_reference(base_z, base_m, weight, weight_n, edge_scale, ptr,
                                 visited_ptr, src, dst_local, per_node)


def _recurrence_triton(*args):
    """``graphlstm::recurrence`` in Triton kernels if the backend lets them run on
    these tensors (:func:`graphlstm.backend.triton_for`), else ``None``."""
    kernels = backend.triton_for(*args[:5], args[7], args[8])
    if kernels is None or args[3].size(1) > kernels.MAX_HIDDEN:
        return None
    try:
        return kernels.level_loop_forward(*args)
    except Exception as error:  # triton failing to compile or launch
        backend.disable_triton_after_failure(error)
    return None


@recurrence.register_fake
def _(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src, dst_local, per_node,
      row_group=None):
    n, hidden = base_z.size(0), weight_n.size(1)
    return (base_z.new_empty(n, 2 * hidden), base_z.new_empty(n, 3 * hidden),
            base_z.new_empty(n, hidden), base_z.new_empty(n if per_node else 0, 2 * hidden))


@torch.library.custom_op("graphlstm::recurrence_backward", mutates_args=())
def recurrence_backward(
    grad_state: Tensor,
    state: Tensor,
    gates: Tensor,
    sums: Tensor,
    weight: Tensor,
    weight_n: Tensor,
    edge_scale: Tensor | None,
    ptr: Tensor,
    visited_ptr: Tensor,
    src: Tensor,
    dst_local: Tensor,
    per_node: bool,
    need_weight: bool,
    need_scale: bool,
    row_group: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The reverse sweep of ``graphlstm::recurrence``: ``(grad_z [N, 3H] (of base_z),
    grad_m [N, H] (of base_m), grad_weight (of weight; [0, 2H] unless need_weight),
    grad_scale [E_v] (of edge_scale; [0] unless need_scale))``. Default implementation:
    the PyTorch reference."""
    return _recurrence_backward_reference(grad_state, state, gates, sums, weight, weight_n,
                                          edge_scale, ptr, visited_ptr, src, dst_local,
                                          per_node, need_weight, need_scale)


@recurrence_backward.register_kernel("cpu")
def _(grad_state, state, gates, sums, weight, weight_n, edge_scale, ptr, visited_ptr, src,
      dst_local, per_node, need_weight, need_scale, row_group=None):
    grads = _recurrence_backward_triton(grad_state, state, gates, sums, weight, weight_n,
                                        edge_scale, ptr, visited_ptr, src, dst_local, per_node,
                                        need_weight, need_scale, row_group)
    if grads is not None:
        return grads
    kernels = _compiled_kernels((grad_state, state, gates, sums, weight, weight_n, edge_scale),
                                (src, dst_local))
    if kernels is not None:
        try:
            return _recurrence_backward_numba(kernels, grad_state, state, gates, sums, weight,
                                              weight_n, edge_scale, ptr, visited_ptr, src,
                                              dst_local, per_node, need_weight, need_scale)
        except kernels.CompileError as error:
            backend.disable_after_failure(error)
    return _recurrence_backward_reference(grad_state, state, gates, sums, weight, weight_n,
                                          edge_scale, ptr, visited_ptr, src, dst_local,
                                          per_node, need_weight, need_scale)


def _recurrence_backward_numba(kernels, grad_state, state, gates, sums, weight, weight_n,
                               edge_scale, ptr, visited_ptr, src, dst_local, per_node,
                               need_weight, need_scale):
    n, hidden = state.size(0), state.size(1) // 2
    ptr, src = _index(ptr), _index(src)
    node_ptr, edges = kernels.node_edges(ptr, _index(visited_ptr), src, _index(dst_local))
    num_edges = src.size
    has_scale = edge_scale is not None
    need_scale = need_scale and has_scale
    need_edge_weight = need_weight and not per_node
    scale = edge_scale.detach().contiguous() if has_scale else state.new_empty(0)
    # The kernel completes the state gradient in place.
    grad_state = grad_state.detach().to(state.dtype).contiguous().clone()
    state, gates, weight = (t.detach().contiguous() for t in (state, gates, weight))
    grad_z = state.new_empty(n, 3 * hidden)
    grad_m = state.new_empty(n, hidden)
    grad_agg_h = state.new_empty(n, hidden)
    grad_edge_weight = state.new_empty(num_edges if need_edge_weight else 0, 2 * hidden)
    grad_scale = state.new_empty(num_edges if need_scale else 0)
    weight_n = weight_n.detach().contiguous()
    args = (grad_state.numpy(), state.numpy(), gates.numpy(), weight.numpy(), weight_n.numpy(),
            weight_n.t().contiguous().numpy(), scale.numpy(), has_scale, bool(per_node), ptr,
            node_ptr, edges, src, kernels.gemm_address(state.dtype))
    outputs = (grad_z.numpy(), grad_m.numpy(), grad_agg_h.numpy(), grad_edge_weight.numpy(),
               need_edge_weight, grad_scale.numpy(), need_scale)
    kernels.run_level_kernel("backward", ptr, args, outputs)
    if not need_weight:
        grad_weight = state.new_empty(0, 2 * hidden)
    elif per_node:
        grad_weight = torch.cat([grad_agg_h, grad_m], 1).mul_(sums)
    else:
        grad_weight = grad_edge_weight
    return grad_z, grad_m, grad_weight, grad_scale


@recurrence_backward.register_kernel("cuda")
def _(grad_state, state, gates, sums, weight, weight_n, edge_scale, ptr, visited_ptr, src,
      dst_local, per_node, need_weight, need_scale, row_group=None):
    grads = _recurrence_backward_triton(grad_state, state, gates, sums, weight, weight_n,
                                        edge_scale, ptr, visited_ptr, src, dst_local, per_node,
                                        need_weight, need_scale, row_group)
    if grads is not None:
        return grads
    return _recurrence_backward_reference(grad_state, state, gates, sums, weight, weight_n,
                                          edge_scale, ptr, visited_ptr, src, dst_local,
                                          per_node, need_weight, need_scale)


def _recurrence_backward_triton(*args):
    """``graphlstm::recurrence_backward`` in Triton kernels, or ``None`` (see
    :func:`_recurrence_triton`)."""
    kernels = backend.triton_for(*args[:7], args[9], args[10])
    if kernels is None or args[5].size(1) > kernels.MAX_HIDDEN:
        return None
    try:
        return kernels.level_loop_backward(*args)
    except Exception as error:
        backend.disable_triton_after_failure(error)
    return None


@recurrence_backward.register_fake
def _(grad_state, state, gates, sums, weight, weight_n, edge_scale, ptr, visited_ptr, src,
      dst_local, per_node, need_weight, need_scale, row_group=None):
    n, hidden = state.size(0), state.size(1) // 2
    grad_weight = weight.new_empty(weight.shape) if need_weight else state.new_empty(0, 2 * hidden)
    grad_scale = state.new_empty(src.size(0) if need_scale and edge_scale is not None else 0)
    return state.new_empty(n, 3 * hidden), state.new_empty(n, hidden), grad_weight, grad_scale


def _recurrence_setup_context(ctx, inputs, output):
    (base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src, dst_local, per_node,
     row_group) = inputs
    state, gates, agg_h, sums = output
    ctx.save_for_backward(state, gates, agg_h, sums, weight, weight_n, edge_scale, ptr,
                          visited_ptr, src, dst_local, row_group)
    ctx.per_node, ctx.has_m = per_node, base_m is not None
    # Only the state carries a gradient; the rest is kept for the backward.
    ctx.mark_non_differentiable(gates, agg_h, sums)
    ctx.set_materialize_grads(False)


def _recurrence_backward(ctx, grad_state, *_):
    (state, gates, agg_h, sums, weight, weight_n, edge_scale, ptr, visited_ptr, src,
     dst_local, row_group) = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if grad_state is None:
        grad_state = torch.zeros_like(state)
    need_scale = edge_scale is not None and needs[4]
    grad_z, grad_m, grad_weight, grad_scale = call(
        torch.ops.graphlstm.recurrence_backward,
        grad_state, state, gates, sums, weight, weight_n, edge_scale, ptr, visited_ptr, src,
        dst_local, ctx.per_node, needs[2], need_scale, row_group)
    grad_weight_n = grad_z.t() @ agg_h if needs[3] else None
    return (grad_z, grad_m if ctx.has_m else None, grad_weight if needs[2] else None,
            grad_weight_n, grad_scale if need_scale else None, None, None, None, None, None,
            None)


recurrence.register_autograd(_recurrence_backward, setup_context=_recurrence_setup_context)


# --------------------------------------------------------------------------
# The gated level loop (a previous state): CPU kernels only; other devices and
# the "torch" backend compose the reference from PyTorch operations and
# graphlstm::recurrence (graphlstm.functional._gated_recurrence_torch).
# --------------------------------------------------------------------------


@torch.library.custom_op("graphlstm::gated_recurrence", mutates_args=(), device_types="cpu")
def gated_recurrence(
    pre: Tensor,
    from_h: Tensor,
    h: Tensor,
    m: Tensor,
    weight_n: Tensor,
    visited_scale: Tensor,
    unvisited_scale: Tensor,
    perm: Tensor,
    ptr: Tensor,
    visited_ptr: Tensor,
    src: Tensor,
    dst_local: Tensor,
    unvisited_edge_index: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The loop of :func:`graphlstm.functional.graph_lstm_gated_recurrence`:
    ``(state [N, 2H] (node order), gates [N, 3H], agg_h [N, H] (level order))``."""
    kernels = backend._require_kernels()
    n, hidden = pre.size(0), weight_n.size(1)
    ptr, perm, src = _index(ptr), _index(perm), _index(src)
    kernels.check_permutation(perm, n)
    node_ptr, edges = kernels.node_edges(ptr, _index(visited_ptr), src, _index(dst_local))
    unv_src = _index(unvisited_edge_index[0])
    unv_ptr, unv_edges = kernels.group_by_target(unv_src, _index(unvisited_edge_index[1]), n)
    pre, from_h, h, m, weight_n, visited_scale, unvisited_scale = (
        t.detach().contiguous()
        for t in (pre, from_h, h, m, weight_n, visited_scale, unvisited_scale))
    state = pre.new_empty(n, 2 * hidden)
    gates = pre.new_empty(n, 3 * hidden)
    agg_h = pre.new_empty(n, hidden)
    args = (pre.numpy(), from_h.numpy(), h.numpy(), m.numpy(), weight_n.numpy(),
            weight_n.t().contiguous().numpy(), perm, ptr, node_ptr, edges, src,
            visited_scale.numpy(), unv_ptr, unv_edges, unv_src, unvisited_scale.numpy(),
            kernels.gemm_address(pre.dtype))
    outputs = (state.numpy(), gates.numpy(), agg_h.numpy())
    kernels.run_level_kernel("gated_forward", ptr, args, outputs)
    return state, gates, agg_h


@gated_recurrence.register_fake
def _(pre, from_h, h, m, weight_n, visited_scale, unvisited_scale, perm, ptr, visited_ptr, src,
      dst_local, unvisited_edge_index):
    n, hidden = pre.size(0), weight_n.size(1)
    return (pre.new_empty(n, 2 * hidden), pre.new_empty(n, 3 * hidden),
            pre.new_empty(n, hidden))


@torch.library.custom_op("graphlstm::gated_recurrence_backward", mutates_args=(),
                         device_types="cpu")
def gated_recurrence_backward(
    grad_state: Tensor,
    state: Tensor,
    gates: Tensor,
    pre: Tensor,
    from_h: Tensor,
    h: Tensor,
    m: Tensor,
    weight_n: Tensor,
    visited_scale: Tensor,
    unvisited_scale: Tensor,
    perm: Tensor,
    ptr: Tensor,
    visited_ptr: Tensor,
    src: Tensor,
    dst_local: Tensor,
    unvisited_edge_index: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The reverse sweep of ``graphlstm::gated_recurrence``: the gradients of ``pre,
    from_h, h, m``, ``grad_z [N, 3H]`` (level order; ``dL/dW_n = grad_z^T agg_h``),
    and those of ``visited_scale, unvisited_scale``."""
    kernels = backend._require_kernels()
    n, hidden = state.size(0), state.size(1) // 2
    ptr, perm, src = _index(ptr), _index(perm), _index(src)
    node_ptr, edges = kernels.node_edges(ptr, _index(visited_ptr), src, _index(dst_local))
    unv_src = _index(unvisited_edge_index[0])
    unv_ptr, unv_edges = kernels.group_by_target(unv_src, _index(unvisited_edge_index[1]), n)
    grad_state = grad_state.detach().to(state.dtype).contiguous().clone()
    state, gates, pre, from_h, h, m, weight_n, visited_scale, unvisited_scale = (
        t.detach().contiguous() for t in (state, gates, pre, from_h, h, m, weight_n, visited_scale,
                                 unvisited_scale))
    grad_pre = state.new_empty(pre.shape)
    grad_from_h = state.new_zeros(from_h.shape)
    grad_h = state.new_zeros(n, hidden)
    grad_m = state.new_zeros(n, hidden)
    grad_mt = state.new_empty(n, hidden)
    grad_z = state.new_empty(n, 3 * hidden)
    grad_agg_h = state.new_empty(n, hidden)
    grad_visited_scale = state.new_empty(visited_scale.numel())
    grad_unvisited_scale = state.new_empty(unvisited_scale.numel())
    args = (grad_state.numpy(), state.numpy(), gates.numpy(), pre.numpy(), from_h.numpy(),
            h.numpy(), m.numpy(), weight_n.numpy(), weight_n.t().contiguous().numpy(), perm,
            ptr, node_ptr, edges, src, visited_scale.numpy(), unv_ptr, unv_edges, unv_src,
            unvisited_scale.numpy(), kernels.gemm_address(state.dtype))
    outputs = (grad_pre.numpy(), grad_from_h.numpy(), grad_h.numpy(), grad_m.numpy(),
               grad_mt.numpy(), grad_z.numpy(), grad_agg_h.numpy(), grad_visited_scale.numpy(),
               grad_unvisited_scale.numpy())
    kernels.run_level_kernel("gated_backward", ptr, args, outputs)
    return grad_pre, grad_from_h, grad_h, grad_m, grad_z, grad_visited_scale, grad_unvisited_scale


@gated_recurrence_backward.register_fake
def _(grad_state, state, gates, pre, from_h, h, m, weight_n, visited_scale, unvisited_scale,
      perm, ptr, visited_ptr, src, dst_local, unvisited_edge_index):
    n, hidden = state.size(0), state.size(1) // 2
    return (pre.new_empty(pre.shape), from_h.new_empty(from_h.shape), h.new_empty(n, hidden),
            m.new_empty(n, hidden), state.new_empty(n, 3 * hidden),
            visited_scale.new_empty(visited_scale.shape),
            unvisited_scale.new_empty(unvisited_scale.shape))


def _gated_setup_context(ctx, inputs, output):
    (pre, from_h, h, m, weight_n, visited_scale, unvisited_scale, perm, ptr, visited_ptr, src,
     dst_local, unvisited_edge_index) = inputs
    state, gates, agg_h = output
    # The projections are kept whole (their forget columns are read again): views
    # would hold the same memory, and copies would cost the forward what it saved.
    ctx.save_for_backward(state, gates, agg_h, pre, from_h, h, m, weight_n, visited_scale,
                          unvisited_scale, perm, ptr, visited_ptr, src, dst_local,
                          unvisited_edge_index)
    ctx.mark_non_differentiable(gates, agg_h)
    ctx.set_materialize_grads(False)


def _gated_backward(ctx, grad_state, *_):
    (state, gates, agg_h, pre, from_h, h, m, weight_n, visited_scale, unvisited_scale, perm,
     ptr, visited_ptr, src, dst_local, unvisited_edge_index) = ctx.saved_tensors
    if grad_state is None:
        grad_state = torch.zeros_like(state)
    grad_pre, grad_from_h, grad_h, grad_m, grad_z, grad_visited, grad_unvisited = (
        call(torch.ops.graphlstm.gated_recurrence_backward,
             grad_state, state, gates, pre, from_h, h, m, weight_n,
             visited_scale, unvisited_scale, perm, ptr, visited_ptr, src,
             dst_local, unvisited_edge_index))
    grad_weight_n = grad_z.t() @ agg_h if ctx.needs_input_grad[4] else None  # both level order
    return (grad_pre, grad_from_h, grad_h, grad_m, grad_weight_n, grad_visited, grad_unvisited,
            None, None, None, None, None, None)


gated_recurrence.register_autograd(_gated_backward, setup_context=_gated_setup_context)


# --------------------------------------------------------------------------
# The level loop of the typed-graph cells (MD-LSTM, MD-RNN): CPU kernels only;
# elsewhere the cells run the PyTorch scan of graphlstm.nn.wavefront.
# --------------------------------------------------------------------------


@torch.library.custom_op("graphlstm::typed_recurrence", mutates_args=(), device_types="cpu")
def typed_recurrence(
    pre: Tensor,
    u: Tensor,
    ptr: Tensor,
    visited_ptr: Tensor,
    src: Tensor,
    dst_local: Tensor,
    etype: Tensor,
    kind: int,
    num_dims: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The loop of :func:`graphlstm._kernels.typed.typed_forward` on the level-sorted
    rows: ``pre [N, G]`` (``W x + b``), ``U [D*H, G]``, the visited edges and their
    types. Returns ``(h [N, H], c, gates, h_hat [N, D*H], c_hat)``; ``c, gates,
    c_hat`` have 0 rows without a memory (``kind`` an RNN)."""
    kernels = backend._require_kernels()
    n, width = pre.size(0), u.size(0)
    hidden = width // num_dims
    memory = kind in (kernels.LSTM, kernels.STABLE_LSTM)
    ptr, src, etype = _index(ptr), _index(src), _index(etype)
    node_ptr, edges = kernels.node_edges(ptr, _index(visited_ptr), src, _index(dst_local))
    pre, u = pre.detach().contiguous(), u.detach().contiguous()
    h = pre.new_empty(n, hidden)
    h_hat = pre.new_empty(n, width)
    rows = n if memory else 0
    c = pre.new_empty(rows, hidden)
    gates = pre.new_empty(rows, pre.size(1))
    c_hat = pre.new_empty(rows, width)
    args = (kind, num_dims, pre.numpy(), u.numpy(), u.t().contiguous().numpy(), ptr, node_ptr,
            edges, src, etype, kernels.gemm_address(pre.dtype))
    outputs = (h.numpy(), c.numpy(), gates.numpy(), h_hat.numpy(), c_hat.numpy())
    kernels.run_level_kernel("typed_forward", ptr, args, outputs)
    return h, c, gates, h_hat, c_hat


def _typed_has_memory(kind: int) -> bool:
    return kind in (0, 1)  # graphlstm._kernels.typed.LSTM, STABLE_LSTM


@typed_recurrence.register_fake
def _(pre, u, ptr, visited_ptr, src, dst_local, etype, kind, num_dims):
    n, width = pre.size(0), u.size(0)
    rows = n if _typed_has_memory(kind) else 0
    return (pre.new_empty(n, width // num_dims), pre.new_empty(rows, width // num_dims),
            pre.new_empty(rows, pre.size(1)), pre.new_empty(n, width), pre.new_empty(rows, width))


@torch.library.custom_op("graphlstm::typed_recurrence_backward", mutates_args=(),
                         device_types="cpu")
def typed_recurrence_backward(
    grad_h: Tensor,
    grad_c: Tensor,
    u: Tensor,
    h: Tensor,
    c: Tensor,
    gates: Tensor,
    c_hat: Tensor,
    ptr: Tensor,
    visited_ptr: Tensor,
    src: Tensor,
    dst_local: Tensor,
    etype: Tensor,
    kind: int,
    num_dims: int,
) -> Tensor:
    """The reverse sweep of ``graphlstm::typed_recurrence``: ``dL/dpre [N, G]``
    (``dL/dU = h_hat^T dL/dpre``)."""
    kernels = backend._require_kernels()
    ptr, src, etype = _index(ptr), _index(src), _index(etype)
    node_ptr, edges = kernels.node_edges(ptr, _index(visited_ptr), src, _index(dst_local))
    u, h, c, gates, c_hat = (t.detach().contiguous() for t in (u, h, c, gates, c_hat))
    # The kernel completes the state gradients in place.
    grad_h = grad_h.detach().to(h.dtype).contiguous().clone()
    grad_c = grad_c.detach().to(h.dtype).contiguous().clone()
    grad_a = h.new_empty(h.size(0), u.size(1))
    grad_h_hat = h.new_empty(h.size(0), u.size(0))
    grad_c_hat = h.new_empty(c_hat.shape)
    args = (kind, num_dims, u.numpy(), u.t().contiguous().numpy(), ptr, node_ptr, edges, src,
            etype, kernels.gemm_address(u.dtype))
    outputs = (h.numpy(), c.numpy(), gates.numpy(), c_hat.numpy(), grad_h.numpy(),
               grad_c.numpy(), grad_a.numpy(), grad_h_hat.numpy(), grad_c_hat.numpy())
    kernels.run_level_kernel("typed_backward", ptr, args, outputs)
    return grad_a


@typed_recurrence_backward.register_fake
def _(grad_h, grad_c, u, h, c, gates, c_hat, ptr, visited_ptr, src, dst_local, etype, kind,
      num_dims):
    return h.new_empty(h.size(0), u.size(1))


def _typed_setup_context(ctx, inputs, output):
    pre, u, ptr, visited_ptr, src, dst_local, etype, kind, num_dims = inputs
    h, c, gates, h_hat, c_hat = output
    ctx.save_for_backward(u, h, c, gates, h_hat, c_hat, ptr, visited_ptr, src, dst_local, etype)
    ctx.kind, ctx.num_dims = kind, num_dims
    ctx.mark_non_differentiable(gates, h_hat, c_hat)
    ctx.set_materialize_grads(False)


def _typed_backward(ctx, grad_h, grad_c, *_):
    u, h, c, gates, h_hat, c_hat, ptr, visited_ptr, src, dst_local, etype = ctx.saved_tensors
    if grad_h is None:
        grad_h = torch.zeros_like(h)
    if grad_c is None:
        grad_c = torch.zeros_like(c)
    grad_a = call(torch.ops.graphlstm.typed_recurrence_backward, grad_h, grad_c, u, h, c, gates,
                  c_hat, ptr, visited_ptr, src, dst_local, etype, ctx.kind, ctx.num_dims)
    grad_u = h_hat.t() @ grad_a if ctx.needs_input_grad[1] else None
    return grad_a, grad_u, None, None, None, None, None, None, None


typed_recurrence.register_autograd(_typed_backward, setup_context=_typed_setup_context)

# In eager mode on the CPU, graphlstm._dispatch.call runs these without the dispatcher.
register_eager(schedule_layout, recurrence, recurrence_backward, gated_recurrence,
               gated_recurrence_backward, typed_recurrence, typed_recurrence_backward)
