r"""The level-by-level inner loop of the Graph LSTM, with a hand-written backward.

Everything that does not depend on the *new* states of other nodes (input and
previous-state projections, forget gates, the contribution of unvisited
neighbours) is computed for all nodes at once by :class:`graphlstm.GraphLSTM`.
What is left is the recurrence over visited neighbours, which this module runs
one level at a time, in the level-sorted node layout of a
:class:`~graphlstm.schedule.Schedule` (level ``l`` is rows ``ptr[l]:ptr[l+1]``,
and every visited neighbour of it lies in rows ``< ptr[l]``).

For a node :math:`i` of level :math:`l`, with visited in-edges :math:`e = (j \to i)`:

.. math::
    [\bar h_i \,;\, \bar m_i] &= \sum_e G_e \odot [h'_j \,;\, m'_j] \\
    z_i &= B_i + W_n \bar h_i \qquad (\text{rows } u, o, 2c) \\
    m'_i &= M_i + \bar m_i + \sigma(z^u_i) \odot (2 \sigma(z^{2c}_i) - 1) \\
    h'_i &= \tanh(\sigma(z^o_i) \odot m'_i)

where :math:`G_e = s_e \, [1/d_i \,;\, \bar g^f_{ij} / d_i]` folds the mean into
the edge weights, and :math:`s_e` is an optional scalar per visited edge (the
caller's ``edge_weight``; 1 without it), differentiable like the rest. When
the weights depend on :math:`i` alone (no previous state:
:math:`\bar g^f_{ij} = g^f_i`), the neighbours are summed first (scaled by
:math:`s_e`) and weighted once per node, and no per-edge tensor exists. Per
level that is one gather, one ``index_add_``, one weighting product, one GEMM
and five elementwise kernels, all writing into preallocated buffers.

Autograd would record every level and, writing into a shared buffer, copy the
whole state gradient once per level. The backward here instead walks the
levels in reverse, propagating only through visited edges (the gradient of a
node is complete once every later level has been processed), and computes all
per-node factors and all parameter gradients in whole-graph operations before
and after the loop. Saved tensors are ``O(N·H)`` (plus ``O(E·H)`` per-edge
weights when there is a previous state), independent of the number of levels.

Two engines run it (:mod:`graphlstm.backend`): compiled kernels
(:mod:`graphlstm._kernels.recurrence`: level after level, the rows' neighbour
sums, the level's ``W_n h_bar`` as one GEMM of PyTorch's MKL, then the rows'
gates, with no Python or dispatcher round trip per level, and a level's rows on
several threads where it is large), used for CPU tensors of
float32/float64; and the PyTorch operations described above, the readable
reference, used otherwise. Both are implementations of the PyTorch operators
of :mod:`graphlstm._ops` (``torch.ops.graphlstm.recurrence`` and its backward),
which :func:`graph_lstm_recurrence` calls: ``torch.compile`` sees one opaque call
per loop, and both engines give the same values and gradients.

:func:`graph_lstm_gated_recurrence` is the same recurrence with a previous
state taken one step further: it starts from the layer's two projections in
node order, and the self and neighbour forget gates
(:math:`\bar g^f_{ij} = \sigma(x^f_i + n^f_j)`) and the unvisited neighbours
are computed inside the loop, so that the compiled engine makes no per-edge
``[E, H]`` tensor and no permuted copy at all (its PyTorch path permutes, builds
them and calls the level loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from graphlstm import backend
from graphlstm._dispatch import call

if TYPE_CHECKING:
    from graphlstm.schedule import Schedule



def recurrence_reference_forward(base_z, base_m, weight, weight_n, edge_scale, ptr: list,
                                 visited_ptr: list, src, dst_local, per_node: bool):
    """The level loop in PyTorch operations: the readable reference, on any device.

    Returns ``(state, gates, agg_h, sums)`` as the operator ``graphlstm::recurrence``
    (:mod:`graphlstm._ops`) does.
    """
    n, hidden = base_z.size(0), weight_n.size(1)
    sizes = [b - a for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
    edge_sizes = [b - a for a, b in zip(visited_ptr[:-1], visited_ptr[1:], strict=True)]
    # [h | m] of every node, rows in level order; level l reads rows < ptr[l].
    state = base_z.new_empty(n, 2 * hidden)
    # sigma of the gate pre-activations [u | o | 2c]: tanh(c) = 2 sigma(2c) - 1, and
    # one sigmoid over 3H columns costs less than a sigmoid plus a tanh.
    gates = base_z.new_empty(n, 3 * hidden)
    # Aggregated visited neighbours [h_bar | M + m_bar]: the m-half starts as M
    # so that the neighbour sum lands where it is needed.
    agg = base_z.new_zeros(n, 2 * hidden)
    if base_m is not None:
        agg[:, hidden:] = base_m
    # Per-node weights: the neighbour sums (scaled per edge), weighted after summing.
    sums = base_z.new_zeros(n, 2 * hidden) if per_node else None
    weight_t = weight_n.t()
    scale = None if edge_scale is None else edge_scale.unsqueeze(1)
    h2 = 2 * hidden
    # Per-level views made by one split per column block, so that the loop
    # below does no Python slicing: it is the whole cost of the layer.
    levels = zip(
        [b > a for a, b in zip(visited_ptr[:-1], visited_ptr[1:], strict=True)],
        base_z.split(sizes),
        gates.split(sizes),
        gates[:, :hidden].split(sizes),
        gates[:, hidden:h2].split(sizes),
        gates[:, h2:].split(sizes),
        state[:, :hidden].split(sizes),
        state[:, hidden:].split(sizes),
        agg.split(sizes),
        agg[:, :hidden].split(sizes),
        agg[:, hidden:].split(sizes),
        sums.split(sizes) if per_node else [None] * len(sizes),
        src.split(edge_sizes),
        dst_local.split(edge_sizes),
        weight.split(sizes if per_node else edge_sizes),
        scale.split(edge_sizes) if scale is not None else [None] * len(sizes),
        strict=True,
    )
    for has_edges, z, g, u, o, s_c, h_new, m_new, ag, ag_h, ag_m, sm, src_l, dst_l, w, sc in (
        levels
    ):
        if has_edges:
            msg = state.index_select(0, src_l)
            if sc is not None:
                msg.mul_(sc)
            if per_node:
                sm.index_add_(0, dst_l, msg)
                ag.addcmul_(w, sm)
            else:
                ag.index_add_(0, dst_l, msg.mul_(w))
            z = torch.addmm(z, ag_h, weight_t)
        torch.sigmoid(z, out=g)
        # m' = M + m_bar + u * (2 s_c - 1), and h' = tanh(o * m'), in place.
        torch.sub(ag_m, u, out=m_new)
        m_new.addcmul_(u, s_c, value=2.0)
        torch.mul(o, m_new, out=h_new).tanh_()
    if sums is None:
        sums = base_z.new_empty(0, 2 * hidden)
    return state, gates, agg[:, :hidden].contiguous(), sums


def recurrence_reference_backward(grad_state, state, gates, sums, weight, weight_n, edge_scale,
                                  ptr: list, visited_ptr: list, src, dst_local, per_node: bool,
                                  need_weight: bool, need_scale: bool):
    """The reverse sweep of :func:`recurrence_reference_forward` in PyTorch operations.

    Returns the gradients ``(of base_z, of base_m, of weight, of edge_scale)`` as the
    operator ``graphlstm::recurrence_backward`` does (the last two empty unless asked).
    """
    hidden = state.size(1) // 2
    h, m = state[:, :hidden], state[:, hidden:]
    u, o, s_c = gates[:, :hidden], gates[:, hidden : 2 * hidden], gates[:, 2 * hidden :]
    c = 2.0 * s_c - 1.0
    scale = None if edge_scale is None else edge_scale.unsqueeze(1)

    # Whole-graph derivative factors: dL/dm'_total = dL/dm' + dL/dh' * k_m and
    # dL/dz = [dL/dm'_total, dL/dh', dL/dm'_total] * k_z (columns u, o, 2c).
    dtanh = 1.0 - h * h
    k_m = dtanh * o
    k_z = torch.cat(
        [c * u * (1.0 - u), dtanh * m * o * (1.0 - o), 2.0 * u * s_c * (1.0 - s_c)], 1
    )

    grad_state = grad_state.to(state.dtype).clone()
    # [dL/dh_bar | dL/dm_bar] of every node; only levels with visited edges fill it
    # in the loop, the rest is recomputed for all nodes at once afterwards.
    grad_agg = state.new_empty(state.shape)
    for level in range(len(ptr) - 2, 0, -1):
        ea, eb = visited_ptr[level], visited_ptr[level + 1]
        if eb == ea:
            continue
        a, b = ptr[level], ptr[level + 1]
        gh, gm = grad_state[a:b, :hidden], grad_state[a:b, hidden:]
        g_agg = grad_agg[a:b]
        gm_total = torch.addcmul(gm, gh, k_m[a:b], out=g_agg[:, hidden:])
        gz = torch.cat([gm_total, gh, gm_total], 1).mul_(k_z[a:b])
        torch.mm(gz, weight_n, out=g_agg[:, :hidden])
        if per_node:
            g_msg = (g_agg * weight[a:b]).index_select(0, dst_local[ea:eb])
        else:
            g_msg = g_agg.index_select(0, dst_local[ea:eb]).mul_(weight[ea:eb])
        if scale is not None:
            g_msg.mul_(scale[ea:eb])
        grad_state.index_add_(0, src[ea:eb], g_msg)

    # Every row of grad_state is now complete: finish all nodes at once.
    gh, gm = grad_state[:, :hidden], grad_state[:, hidden:]
    gm_total = torch.addcmul(gm, gh, k_m)
    gz = torch.cat([gm_total, gh, gm_total], 1).mul_(k_z)
    need_scale = need_scale and scale is not None
    grad_weight = state.new_empty(0, 2 * hidden)
    grad_scale = state.new_empty(0)
    if need_weight or need_scale:
        g_agg = torch.cat([gz @ weight_n, gm_total], 1)
        if per_node and need_weight:
            grad_weight = g_agg * sums  # sums holds every node's (scaled) neighbour sum
        if need_scale or not per_node:
            # Per visited edge: dL/dagg of its target times the state of its source.
            dst = dst_local + _level_starts(ptr, visited_ptr, dst_local.device)
            g_edge = g_agg.index_select(0, dst) * state.index_select(0, src)
            edge_weight = weight.index_select(0, dst) if per_node else weight
            if need_scale:
                grad_scale = (g_edge * edge_weight).sum(1)
            if not per_node and need_weight:
                grad_weight = g_edge if scale is None else g_edge * scale
    return gz, gm_total, grad_weight, grad_scale


def _level_starts(ptr: list, visited_ptr: list, device) -> Tensor:
    """For every visited edge, the first row of its target's level."""
    counts = torch.tensor(visited_ptr, device=device).diff()
    return torch.repeat_interleave(torch.tensor(ptr[:-1], device=device), counts)




def _offsets(ptr) -> Tensor:
    """Level offsets as an int64 tensor on the CPU (a list is converted)."""
    if isinstance(ptr, Tensor):
        return ptr
    return torch.tensor(ptr, dtype=torch.long)


def graph_lstm_recurrence(
    base_z: Tensor,
    base_m: Tensor | None,
    weight: Tensor,
    weight_n: Tensor,
    ptr: list | Tensor,
    visited_ptr: list | Tensor,
    src: Tensor,
    dst_local: Tensor,
    per_node: bool = False,
    edge_scale: Tensor | None = None,
    row_group: Tensor | None = None,
) -> Tensor:
    """Run the Graph LSTM recurrence over visited edges, level by level.

    All node tensors are in the level-sorted layout of a schedule.

    Parameters
    ----------
    base_z : Tensor ``[N, 3H]``
        Pre-activations of the gates ``u, o`` and *twice* that of ``c``, without the
        visited-neighbour term (the recurrence takes ``tanh(c) = 2 sigma(2c) - 1``).
    base_m : Tensor ``[N, H]`` or None
        Memory without the visited-neighbour and input terms (``None``: zeros).
    weight : Tensor ``[E_v, 2H]``, or ``[N, 2H]`` with ``per_node=True``
        Per visited edge ``j -> i``, the weights ``[1/d_i ; g^f_ij / d_i]`` of
        ``[h'_j ; m'_j]``; or, when they depend on the target ``i`` alone (as
        with no previous state, where ``g^f_ij = g^f_i``), per node: then the
        neighbours are summed first and weighted once per node, and no
        per-edge tensor is ever made.
    weight_n : Tensor ``[3H, H]``
        Weight of the neighbour projection ``lin_n``, rows ``u, o, 2c``.
    ptr, visited_ptr : list of int, or int64 Tensor on the CPU
        Level offsets of the nodes and of the visited edges
        (:attr:`Schedule.ptr <graphlstm.schedule.Schedule>`, or the rows of
        :attr:`Schedule.offsets <graphlstm.schedule.Schedule.offsets>`, which a
        compiled model should pass).
    src : LongTensor ``[E_v]``
        Level-sorted position of the source of each visited edge.
    dst_local : LongTensor ``[E_v]``
        Position of its target relative to the first node of the target's level.
    per_node : bool
        Whether ``weight`` is per node (``[N, 2H]``) rather than per edge.
    edge_scale : Tensor ``[E_v]``, optional
        A scalar per visited edge that multiplies its weights (edge weights
        ``w_ji / s_i`` of a weighted layer; docs/design.md, "Edge weights"). With ``per_node=True``
        the neighbours are then summed with these scalars and still weighted once
        per node. Differentiable.
    row_group : LongTensor ``[N]``, optional
        Rows that no visited edge joins (:func:`triton_row_group`): the Triton
        engine runs each group in a program of its own (one program for all
        without it); the other engines ignore it.

    Returns
    -------
    state : Tensor ``[N, 2H]``
        ``[h' | m']``, the new hidden state and memory of every node
        (level-sorted layout).
    """
    # The operator (graphlstm._ops) runs the compiled kernels where the backend lets
    # them, else the PyTorch reference; torch.compile sees one opaque call.
    return call(
        torch.ops.graphlstm.recurrence, base_z, base_m, weight, weight_n, edge_scale,
        _offsets(ptr), _offsets(visited_ptr), src, dst_local, bool(per_node), row_group,
    )[0]


def triton_row_group(schedule: Schedule, *tensors) -> Tensor | None:
    """The groups of rows of ``schedule`` that the Triton engine may run in programs of
    their own (its graphs), if the backend runs the Triton kernels on ``tensors``;
    else ``None``."""
    kernels = backend.triton_for(*tensors)
    return None if kernels is None else kernels.schedule_row_groups(schedule)


def gated_level_inputs(pre, from_h, h, m, weight_n, schedule,
                       unvisited_scale) -> tuple[Tensor, Tensor, Tensor]:
    """What the level loop of :func:`graph_lstm_gated_recurrence` needs, in
    whole-graph operations: ``(base_z [N, 3H], base_m [N, H], weight [E_v, 2H])``
    in the level-sorted layout. The projections are permuted and split, the
    unvisited neighbours enter ``base_z`` and ``base_m`` in one scatter, and the
    visited edges get the per-edge weights ``[1 ; g^f_ij]`` (their forget gates)."""
    n, hidden = pre.size(0), weight_n.size(1)
    h3, h4 = 3 * hidden, 4 * hidden
    src = schedule.visited_src_pos
    pre, from_h, h, m = (t.index_select(0, schedule.perm) for t in (pre, from_h, h, m))
    input_forget, neighbour_forget = pre[:, h3:], from_h[:, h4:]
    base_z = pre[:, :h3] + from_h[:, :h3]
    base_m = torch.sigmoid(input_forget + from_h[:, h3:h4]) * m
    unv_src, unv_dst = schedule.unvisited_edge_index_pos
    gate = torch.sigmoid(input_forget.index_select(0, unv_dst)
                         + neighbour_forget.index_select(0, unv_src))
    message = torch.cat([h.index_select(0, unv_src), gate * m.index_select(0, unv_src)], 1)
    agg = base_z.new_zeros(n, 2 * hidden).index_add(
        0, unv_dst, message * unvisited_scale.unsqueeze(1)
    )
    base_z = base_z + agg[:, :hidden] @ weight_n.t()
    base_m = base_m + agg[:, hidden:]
    dst = schedule.visited_dst_pos
    gate = torch.sigmoid(input_forget.index_select(0, dst) + neighbour_forget.index_select(0, src))
    return base_z, base_m, torch.cat([torch.ones_like(gate), gate], 1)


def _gated_recurrence_torch(pre, from_h, h, m, weight_n, schedule, visited_scale,
                            unvisited_scale, row_group=None) -> Tensor:
    """:func:`graph_lstm_gated_recurrence` in PyTorch operations (the reference):
    :func:`gated_level_inputs`, the visited neighbours through
    :func:`graph_lstm_recurrence` with the scales, and the state permuted back.
    Traceable: no Python value depends on the graph, so a compiled model runs it too."""
    base_z, base_m, weight = gated_level_inputs(pre, from_h, h, m, weight_n, schedule,
                                                unvisited_scale)
    offsets = schedule.offsets
    state = graph_lstm_recurrence(base_z, base_m, weight, weight_n, offsets[0], offsets[1],
                                  schedule.visited_src_pos, schedule.visited_dst_local, False,
                                  visited_scale, row_group)
    return state.index_select(0, schedule.pos)


def graph_lstm_gated_recurrence(
    pre: Tensor,
    from_h: Tensor,
    h: Tensor,
    m: Tensor,
    weight_n: Tensor,
    schedule: Schedule,
    visited_scale: Tensor,
    unvisited_scale: Tensor,
) -> Tensor:
    r"""The Graph LSTM recurrence with a previous state, from the two projections.

    What :class:`graphlstm.GraphLSTM` computes when a previous state ``(h, m)``
    is given, after its two GEMMs: for node :math:`i`, with
    :math:`B_i = B^x_i + B^h_i` (gate pre-activations ``u, o, 2c`` of the input
    and of the previous state), :math:`x^f_i, h^f_i` (the input's and the previous
    state's parts of the forget gate) and :math:`n^f_j` (the previous state's part
    of a neighbour forget gate), each in-edge :math:`e = (j \to i)` with scale
    :math:`s_e` (:math:`1/d_i`, or :math:`w_{ji}/s_i` with edge weights) brings

    .. math::
        s_e \, [\hat h_j \,;\, \sigma(x^f_i + n^f_j) \odot \hat m_j]

    where :math:`\hat h_j, \hat m_j` is :math:`j`'s new state if :math:`j` is
    visited (an earlier level of ``schedule``) and its previous state ``h, m``
    otherwise; the messages are summed into :math:`[\bar h_i ; \bar m_i]`, and

    .. math::
        z_i &= B_i + W_n \bar h_i \\
        m'_i &= \sigma(x^f_i + h^f_i) \odot m_i + \bar m_i
               + \sigma(z^u_i) \odot (2\sigma(z^{2c}_i) - 1) \\
        h'_i &= \tanh(\sigma(z^o_i) \odot m'_i)

    The compiled engine walks the nodes in level order and reads and writes their
    rows where they are (no permuted copies), makes every gate where it is used
    (no ``[E, H]`` tensor, no GEMM for the unvisited part) and keeps ``O(N·H)``
    for the backward. The PyTorch engine permutes to the level-sorted layout and
    runs :func:`graph_lstm_recurrence`'s level loop with per-edge weights
    :math:`[1 ; \sigma(x^f_i + n^f_j)]`.

    Parameters
    ----------
    pre : Tensor ``[N, 4H]``
        The input projection, columns ``[B^x (u, o, 2c) | x^f]``.
    from_h : Tensor ``[N, 5H]``
        The previous state's projection, columns ``[B^h (u, o, 2c) | h^f | n^f]``.
    h, m : Tensor ``[N, H]``
        The previous state.
    weight_n : Tensor ``[3H, H]``
        ``lin_n`` with rows ``u, o, 2c``.
    schedule : Schedule
        The schedule of the graph and the update order
        (:func:`graphlstm.build_schedule`), on the device of the tensors.
    visited_scale : Tensor ``[E_v]``
        :math:`s_e` of each visited edge (``schedule.visited_eid`` order).
    unvisited_scale : Tensor ``[E_u]``
        :math:`s_e` of each unvisited edge (``schedule.unvisited_eid`` order).

    Returns
    -------
    state : Tensor ``[N, 2H]``
        ``[h' | m']``, rows in the node order of the inputs. Every floating input
        is differentiable.
    """
    floats = (pre, from_h, h, m, weight_n, visited_scale, unvisited_scale)
    unvisited = schedule.unvisited_edge_index_pos
    row_group = triton_row_group(schedule, *floats, schedule.perm)
    if row_group is not None:
        # The Triton engine: the gates and the unvisited neighbours in whole-graph
        # operations, the level loop in one launch each way (graphlstm._triton).
        return _gated_recurrence_torch(pre, from_h, h, m, weight_n, schedule, visited_scale,
                                       unvisited_scale, row_group)
    kernels = None
    if all(t.dtype == pre.dtype for t in floats):
        kernels = backend.kernels_for(*floats, schedule.perm, schedule.visited_src_pos,
                                      schedule.visited_dst_local, unvisited)
    if kernels is not None:
        try:
            return call(
                torch.ops.graphlstm.gated_recurrence, *floats, schedule.perm,
                schedule.offsets[0], schedule.offsets[1], schedule.visited_src_pos,
                schedule.visited_dst_local, unvisited,
            )[0]
        except kernels.CompileError as error:
            backend.disable_after_failure(error)
    return _gated_recurrence_torch(pre, from_h, h, m, weight_n, schedule, visited_scale,
                                   unvisited_scale)
