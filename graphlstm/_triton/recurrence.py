r"""The Graph LSTM level loop as Triton kernels: forward and a hand-written backward.

The same recurrence as :class:`graphlstm.functional._TorchRecurrence` (see the
module docstring of :mod:`graphlstm.functional` for the math and the
level-sorted layout): for a node :math:`i` of level :math:`l` with visited
in-edges :math:`e = (j \to i)`,

.. math::
    [\bar h_i \,;\, \bar m_i] &= \sum_e s_e \, G_e \odot [h'_j \,;\, m'_j] \\
    z_i &= B_i + W_n \bar h_i \qquad (\text{rows } u, o, 2c) \\
    m'_i &= M_i + \bar m_i + \sigma(z^u_i) \odot (2 \sigma(z^{2c}_i) - 1) \\
    h'_i &= \tanh(\sigma(z^o_i) \odot m'_i)

with :math:`G_e` per visited edge, or per node (then the neighbours are summed
first and weighted once), and an optional scalar :math:`s_e` per visited edge.

Design: one program per graph
-----------------------------
The critical path is the number of levels (some 50-110 on SLIC graphs), and a
level of one graph holds a few dozen rows: a few microseconds of work. Launching
kernels per level (as the PyTorch path does, some ten per level and direction)
makes the layer launch-bound. The graphs of a PyG batch are independent, so
each program here owns whole graphs and loops over their levels itself, like
the time loop inside one program of flash-linear-attention's and xLSTM's
kernels: level ``l + 1`` reads the states that level ``l`` wrote, which in one
program needs only a block barrier (``tl.debug_barrier``), no grid-wide
synchronisation. One launch runs the forward of the whole layer, one the
backward.

Which rows form a program is decided by :func:`row_groups`: node ranges that no
edge crosses (for a PyG ``Batch``, its graphs, and isolated nodes or other
pieces of them), merged into at most ``num_groups`` groups of consecutive
ranges. Each program walks every level and, within a level, its rows in blocks
of ``BLOCK_N``: per block, the gather-sum over the in-edges, one ``tl.dot``
per gate block against ``W_n``, the gates and the new state. A graph too large
for one program (levels of thousands of rows, as on large lattices) takes the
fallback: the same block code launched once per level over all of the level's
rows (:data:`PER_LEVEL_FROM`).

The backward walks the levels in reverse and *pulls*: a node gathers the
gradient of the neighbour sums of its visited out-neighbours (all in later
levels, so already complete), adds its own incoming gradient, and makes its
gate gradients and the gradient of its own neighbour sum. No atomics: the
result does not depend on the order of floating-point additions between
programs. Parameter and edge-weight gradients are whole-graph products after
the loop.

Arithmetic is float32 (inputs of other dtypes are converted; ``tl.dot`` runs
in IEEE float32, not TF32).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from graphlstm.functional import gated_level_inputs

__all__ = ["gated_recurrence", "recurrence", "row_groups", "schedule_row_groups"]

#: Levels with at least this many rows send the layer to the per-level kernels:
#: one program then no longer covers a level in a few blocks, and a grid over
#: the level's rows uses the whole device. (A guess until measured on a GPU.)
PER_LEVEL_FROM = 4096

#: Edges gathered per step of a row's neighbour loop (independent loads in flight).
UNROLL = 2

#: Largest hidden size the kernels take: a block keeps three ``H x H`` blocks of
#: ``W_n`` for its ``tl.dot``s, which must fit in shared memory. Larger layers take
#: the PyTorch path.
MAX_HIDDEN = 128

#: Most programs for the one-program-per-graph kernels.
MAX_GROUPS = 1024


# ----------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------


# Only builtins of triton.language below (tl.full, tl.reduce, not tl.zeros, tl.max):
# the library's own jit functions are compiled or interpreted according to
# TRITON_INTERPRET when triton was first imported (torch_geometric imports it), and
# an interpreted kernel cannot call compiled ones.


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _maximum(a, b):
    return tl.where(a > b, a, b)


@triton.jit
def _forward_block(rows, mask, base_z, base_m, weight, weight_n, scale, state, gates, agg_h,
                   sums, in_ptr, src, H: tl.constexpr, HAS_M: tl.constexpr,
                   PER_NODE: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_H: tl.constexpr, UNROLL: tl.constexpr):
    """One block of rows of one level: neighbour sums, the gates and the new state."""
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    mask2 = mask[:, None] & cmask[None, :]
    r2 = rows[:, None].to(tl.int64)
    e0 = tl.load(in_ptr + rows, mask=mask, other=0)
    deg = tl.load(in_ptr + rows + 1, mask=mask, other=0) - e0
    acc_h = tl.full((BLOCK_N, BLOCK_H), 0.0, tl.float32)
    acc_m = tl.full((BLOCK_N, BLOCK_H), 0.0, tl.float32)
    # UNROLL edges per step: their gathers are independent and overlap in flight.
    for k0 in range(0, tl.reduce(deg, 0, _maximum), UNROLL):
        for dk in tl.static_range(UNROLL):
            k = k0 + dk
            valid = mask & (k < deg)
            valid2 = valid[:, None] & cmask[None, :]
            e = e0 + k
            s2 = tl.load(src + e, mask=valid, other=0)[:, None]
            hs = tl.load(state + s2 * (2 * H) + cols[None, :], mask=valid2, other=0.0)
            ms = tl.load(state + s2 * (2 * H) + H + cols[None, :], mask=valid2, other=0.0)
            if HAS_SCALE:
                sc = tl.load(scale + e, mask=valid, other=0.0)[:, None]
                hs = hs * sc
                ms = ms * sc
            if not PER_NODE:
                e2 = e[:, None]
                hs = hs * tl.load(weight + e2 * (2 * H) + cols[None, :], mask=valid2, other=0.0)
                ms = ms * tl.load(weight + e2 * (2 * H) + H + cols[None, :], mask=valid2,
                                  other=0.0)
            acc_h += hs
            acc_m += ms
    if PER_NODE:
        tl.store(sums + r2 * (2 * H) + cols[None, :], acc_h, mask=mask2)
        tl.store(sums + r2 * (2 * H) + H + cols[None, :], acc_m, mask=mask2)
        acc_h = acc_h * tl.load(weight + r2 * (2 * H) + cols[None, :], mask=mask2, other=0.0)
        acc_m = acc_m * tl.load(weight + r2 * (2 * H) + H + cols[None, :], mask=mask2,
                                other=0.0)
    tl.store(agg_h + r2 * H + cols[None, :], acc_h, mask=mask2)

    # z = B + h_bar @ W_n^T, one H x H block of W_n^T per gate (rows u, o, 2c of W_n).
    wmask = cmask[:, None] & cmask[None, :]
    w_t = weight_n + cols[None, :] * H + cols[:, None]  # [k, j] -> W_n[j, k]
    z_u = tl.load(base_z + r2 * (3 * H) + cols[None, :], mask=mask2, other=0.0)
    z_o = tl.load(base_z + r2 * (3 * H) + H + cols[None, :], mask=mask2, other=0.0)
    z_c = tl.load(base_z + r2 * (3 * H) + 2 * H + cols[None, :], mask=mask2, other=0.0)
    z_u += tl.dot(acc_h, tl.load(w_t, mask=wmask, other=0.0), input_precision="ieee")
    z_o += tl.dot(acc_h, tl.load(w_t + H * H, mask=wmask, other=0.0), input_precision="ieee")
    z_c += tl.dot(acc_h, tl.load(w_t + 2 * H * H, mask=wmask, other=0.0),
                  input_precision="ieee")
    u = _sigmoid(z_u)
    o = _sigmoid(z_o)
    s_c = _sigmoid(z_c)
    tl.store(gates + r2 * (3 * H) + cols[None, :], u, mask=mask2)
    tl.store(gates + r2 * (3 * H) + H + cols[None, :], o, mask=mask2)
    tl.store(gates + r2 * (3 * H) + 2 * H + cols[None, :], s_c, mask=mask2)
    m_new = acc_m + u * (2.0 * s_c - 1.0)
    if HAS_M:
        m_new += tl.load(base_m + r2 * H + cols[None, :], mask=mask2, other=0.0)
    h_new = 2.0 * _sigmoid(2.0 * o * m_new) - 1.0  # tanh(o * m')
    tl.store(state + r2 * (2 * H) + cols[None, :], h_new, mask=mask2)
    tl.store(state + r2 * (2 * H) + H + cols[None, :], m_new, mask=mask2)


@triton.jit
def _backward_block(rows, mask, grad_state, state, gates, weight, weight_n, scale, out_ptr,
                    out_eid, dst, grad_z, grad_m, grad_agg, H: tl.constexpr,
                    PER_NODE: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_H: tl.constexpr, UNROLL: tl.constexpr):
    """One block of rows of one level, in reverse: pull the gradient from the visited
    out-neighbours (later levels, complete), then the gate gradients and the gradient
    of the block's own neighbour sums."""
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    mask2 = mask[:, None] & cmask[None, :]
    r2 = rows[:, None].to(tl.int64)
    gh = tl.load(grad_state + r2 * (2 * H) + cols[None, :], mask=mask2, other=0.0)
    gm = tl.load(grad_state + r2 * (2 * H) + H + cols[None, :], mask=mask2, other=0.0)
    o0 = tl.load(out_ptr + rows, mask=mask, other=0)
    deg = tl.load(out_ptr + rows + 1, mask=mask, other=0) - o0
    for k0 in range(0, tl.reduce(deg, 0, _maximum), UNROLL):
        for dk in tl.static_range(UNROLL):
            k = k0 + dk
            valid = mask & (k < deg)
            valid2 = valid[:, None] & cmask[None, :]
            e = tl.load(out_eid + o0 + k, mask=valid, other=0)
            i2 = tl.load(dst + e, mask=valid, other=0)[:, None]
            t_h = tl.load(grad_agg + i2 * (2 * H) + cols[None, :], mask=valid2, other=0.0)
            t_m = tl.load(grad_agg + i2 * (2 * H) + H + cols[None, :], mask=valid2, other=0.0)
            if PER_NODE:
                w2 = i2
            else:
                w2 = e[:, None]
            t_h = t_h * tl.load(weight + w2 * (2 * H) + cols[None, :], mask=valid2, other=0.0)
            t_m = t_m * tl.load(weight + w2 * (2 * H) + H + cols[None, :], mask=valid2,
                                other=0.0)
            if HAS_SCALE:
                sc = tl.load(scale + e, mask=valid, other=0.0)[:, None]
                t_h = t_h * sc
                t_m = t_m * sc
            gh += t_h
            gm += t_m
    h = tl.load(state + r2 * (2 * H) + cols[None, :], mask=mask2, other=0.0)
    m = tl.load(state + r2 * (2 * H) + H + cols[None, :], mask=mask2, other=0.0)
    u = tl.load(gates + r2 * (3 * H) + cols[None, :], mask=mask2, other=0.0)
    o = tl.load(gates + r2 * (3 * H) + H + cols[None, :], mask=mask2, other=0.0)
    s_c = tl.load(gates + r2 * (3 * H) + 2 * H + cols[None, :], mask=mask2, other=0.0)
    dtanh = 1.0 - h * h
    gm_total = gm + gh * dtanh * o
    gz_u = gm_total * (2.0 * s_c - 1.0) * u * (1.0 - u)
    gz_o = gh * dtanh * m * o * (1.0 - o)
    gz_c = gm_total * 2.0 * u * s_c * (1.0 - s_c)
    tl.store(grad_z + r2 * (3 * H) + cols[None, :], gz_u, mask=mask2)
    tl.store(grad_z + r2 * (3 * H) + H + cols[None, :], gz_o, mask=mask2)
    tl.store(grad_z + r2 * (3 * H) + 2 * H + cols[None, :], gz_c, mask=mask2)
    tl.store(grad_m + r2 * H + cols[None, :], gm_total, mask=mask2)
    # dL/dh_bar = gz @ W_n, one H x H block of W_n per gate.
    wmask = cmask[:, None] & cmask[None, :]
    w = weight_n + cols[:, None] * H + cols[None, :]  # [j, k] -> W_n[j, k]
    g_h = tl.dot(gz_u, tl.load(w, mask=wmask, other=0.0), input_precision="ieee")
    g_h += tl.dot(gz_o, tl.load(w + H * H, mask=wmask, other=0.0), input_precision="ieee")
    g_h += tl.dot(gz_c, tl.load(w + 2 * H * H, mask=wmask, other=0.0), input_precision="ieee")
    tl.store(grad_agg + r2 * (2 * H) + cols[None, :], g_h, mask=mask2)
    tl.store(grad_agg + r2 * (2 * H) + H + cols[None, :], gm_total, mask=mask2)


@triton.jit
def _forward_graphs_kernel(rows_by_group, group_ptr, num_levels, base_z, base_m, weight,
                           weight_n, scale, state, gates, agg_h, sums, in_ptr, src,
                           H: tl.constexpr, HAS_M: tl.constexpr, PER_NODE: tl.constexpr,
                           HAS_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_H: tl.constexpr, UNROLL: tl.constexpr):
    """One program per group of graphs, looping over the levels."""
    g = tl.program_id(0).to(tl.int64)
    first = tl.load(group_ptr + g * num_levels)
    last = tl.load(group_ptr + (g + 1) * num_levels)
    levels = tl.where(last > first, num_levels, 0)  # an empty group does nothing
    for level in range(0, levels):
        a = tl.load(group_ptr + g * num_levels + level)
        b = tl.load(group_ptr + g * num_levels + level + 1)
        for start in range(a, b, BLOCK_N):
            idx = start + tl.arange(0, BLOCK_N)
            mask = idx < b
            rows = tl.load(rows_by_group + idx, mask=mask, other=0)
            _forward_block(rows, mask, base_z, base_m, weight, weight_n, scale, state, gates,
                           agg_h, sums, in_ptr, src, H, HAS_M, PER_NODE, HAS_SCALE, BLOCK_N,
                           BLOCK_H, UNROLL)
        # The next level reads the states this one wrote, from other threads.
        tl.debug_barrier()


@triton.jit
def _backward_graphs_kernel(rows_by_group, group_ptr, num_levels, grad_state, state, gates,
                            weight, weight_n, scale, out_ptr, out_eid, dst, grad_z, grad_m,
                            grad_agg, H: tl.constexpr, PER_NODE: tl.constexpr,
                            HAS_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_H: tl.constexpr, UNROLL: tl.constexpr):
    """One program per group of graphs, looping over the levels in reverse."""
    g = tl.program_id(0).to(tl.int64)
    first = tl.load(group_ptr + g * num_levels)
    last = tl.load(group_ptr + (g + 1) * num_levels)
    levels = tl.where(last > first, num_levels, 0)
    for step in range(0, levels):
        level = num_levels - 1 - step
        a = tl.load(group_ptr + g * num_levels + level)
        b = tl.load(group_ptr + g * num_levels + level + 1)
        for start in range(a, b, BLOCK_N):
            idx = start + tl.arange(0, BLOCK_N)
            mask = idx < b
            rows = tl.load(rows_by_group + idx, mask=mask, other=0)
            _backward_block(rows, mask, grad_state, state, gates, weight, weight_n, scale,
                            out_ptr, out_eid, dst, grad_z, grad_m, grad_agg, H, PER_NODE,
                            HAS_SCALE, BLOCK_N, BLOCK_H, UNROLL)
        tl.debug_barrier()


@triton.jit
def _forward_level_kernel(start, end, base_z, base_m, weight, weight_n, scale, state, gates,
                          agg_h, sums, in_ptr, src, H: tl.constexpr, HAS_M: tl.constexpr,
                          PER_NODE: tl.constexpr, HAS_SCALE: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, UNROLL: tl.constexpr):
    """The fallback: one level, one block of its rows per program."""
    rows = start + tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    _forward_block(rows, rows < end, base_z, base_m, weight, weight_n, scale, state, gates,
                   agg_h, sums, in_ptr, src, H, HAS_M, PER_NODE, HAS_SCALE, BLOCK_N, BLOCK_H,
                   UNROLL)


@triton.jit
def _backward_level_kernel(start, end, grad_state, state, gates, weight, weight_n, scale,
                           out_ptr, out_eid, dst, grad_z, grad_m, grad_agg, H: tl.constexpr,
                           PER_NODE: tl.constexpr, HAS_SCALE: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, UNROLL: tl.constexpr):
    rows = start + tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    _backward_block(rows, rows < end, grad_state, state, gates, weight, weight_n, scale,
                    out_ptr, out_eid, dst, grad_z, grad_m, grad_agg, H, PER_NODE, HAS_SCALE,
                    BLOCK_N, BLOCK_H, UNROLL)


# ----------------------------------------------------------------------------------
# Layout: which program runs which rows, and the edges by target and by source
# ----------------------------------------------------------------------------------


def row_groups(edge_index: Tensor, num_nodes: int, num_groups: int) -> Tensor:
    """Group the nodes into at most ``num_groups`` independent groups, on the device.

    A node range that no edge crosses (one graph of a PyG ``Batch``, an isolated
    node, ...) is a segment; segments are merged, in node order, into groups of
    about ``num_nodes / num_groups`` nodes (a segment is never split). No edge joins
    two groups, so each can run in its own program.

    Parameters
    ----------
    edge_index : LongTensor ``[2, E]``
    num_nodes : int
    num_groups : int

    Returns
    -------
    group : LongTensor ``[num_nodes]``, values in ``[0, num_groups)``, non-decreasing.
    """
    device = edge_index.device
    if num_nodes == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    lo = torch.minimum(edge_index[0], edge_index[1]).long()
    hi = torch.maximum(edge_index[0], edge_index[1]).long()
    ones = torch.ones_like(lo)
    # open_edges[p]: edges with one end <= p < the other, i.e. crossing p | p + 1.
    cover = torch.zeros(num_nodes + 1, dtype=torch.long, device=device)
    cover.index_add_(0, lo, ones).index_add_(0, hi, -ones)
    open_edges = cover.cumsum(0)[: num_nodes - 1]
    index = torch.arange(num_nodes, device=device)
    starts = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    starts[0] = True
    starts[1:] = open_edges == 0
    first = torch.where(starts, index, 0).cummax(0).values  # first node of each node's segment
    return first * num_groups // num_nodes


# Layouts are made once per schedule: both layers of a model and every backward
# share one schedule, and making a layout takes some fifteen small launches.
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 16


def _cached(name: str, tensors: tuple, extra, make):
    """``make()``, or its value from an earlier call with the very same ``tensors``
    (the same objects, not modified in place since) and ``extra``."""
    key = (name, tuple(id(t) for t in tensors), extra)
    versions = tuple(t._version for t in tensors)
    entry = _CACHE.get(key)
    if entry is not None:
        refs, seen_versions, value = entry
        if seen_versions == versions and all(r() is t for r, t in zip(refs, tensors,
                                                                        strict=True)):
            _CACHE.move_to_end(key)
            return value
    value = make()
    _CACHE[key] = (tuple(weakref.ref(t) for t in tensors), versions, value)
    _CACHE.move_to_end(key)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def schedule_row_groups(schedule) -> Tensor:
    """:func:`row_groups` of a schedule's graph into :func:`default_num_groups` groups,
    for the rows of its level-sorted layout: the ``row_group`` the kernels take (made
    once per schedule)."""
    tensors = (schedule.perm, schedule.visited_src, schedule.visited_dst,
               schedule.unvisited_edge_index)
    return _cached("groups", tensors, MAX_GROUPS, lambda: _schedule_row_groups(schedule))


def _schedule_row_groups(schedule) -> Tensor:
    edges = torch.cat([torch.stack([schedule.visited_src, schedule.visited_dst]),
                       schedule.unvisited_edge_index], 1)
    n = schedule.perm.size(0)
    return row_groups(edges, n, default_num_groups(n)).index_select(0, schedule.perm)


def default_num_groups(num_nodes: int) -> int:
    """Programs for :func:`row_groups`: enough for the graphs of a batch, and never
    more than :data:`MAX_GROUPS` (an empty group's program does nothing)."""
    # sym_min/sym_max: no guard on the number of nodes under torch.compile.
    return torch.sym_max(1, torch.sym_min(num_nodes, MAX_GROUPS))


@dataclass
class _Plan:
    """The index tensors the kernels read (all on the device of the data)."""

    num_nodes: int
    num_edges: int  # visited edges
    ptr: list
    in_ptr: Tensor  # [N + 1] visited in-edges of row r: in_ptr[r]:in_ptr[r + 1]
    src: Tensor  # [E_v] row of the source of each visited edge (edges sorted by target)
    dst: Tensor  # [E_v] row of its target
    out_ptr: Tensor  # [N + 1] visited out-edges of row r: out_eid[out_ptr[r]:out_ptr[r + 1]]
    out_eid: Tensor  # [E_v]
    per_level: bool  # the fallback: one launch per level
    rows_by_group: Tensor | None  # [N] rows sorted by (group, level)
    group_ptr: Tensor | None  # [G * K + 1] offsets of (group, level) into rows_by_group
    num_groups: int


def _csr(index: Tensor, n: int) -> Tensor:
    """Offsets ``[n + 1]`` of the values ``0..n-1`` of ``index`` sorted (``index_add_``
    rather than ``bincount``, which reads its maximum back to the host)."""
    counts = torch.zeros(n + 1, dtype=torch.long, device=index.device)
    counts.index_add_(0, index + 1, torch.ones_like(index))
    return counts.cumsum(0)


def _nonempty(t: Tensor) -> Tensor:
    """``t``, or a one-element stand-in: kernels never read it where it is empty."""
    return t if t.numel() else t.new_zeros(1)


def make_plan(ptr, visited_ptr, src: Tensor, dst_local: Tensor,
              row_group: Tensor | None = None, per_level: bool | None = None) -> _Plan:
    """The kernels' view of a level-sorted layout (see :func:`recurrence`); ``ptr`` and
    ``visited_ptr`` are lists or int64 CPU tensors. Made once per layout (the same
    tensor objects, unmodified), so the layers sharing a schedule share it."""
    # The offsets by value (the layer passes fresh views of the schedule's CPU tensor).
    ptr = ptr.tolist() if isinstance(ptr, Tensor) else list(ptr)
    visited_ptr = visited_ptr.tolist() if isinstance(visited_ptr, Tensor) else list(visited_ptr)
    tensors = (src, dst_local) if row_group is None else (src, dst_local, row_group)
    extra = (tuple(ptr), tuple(visited_ptr), per_level, PER_LEVEL_FROM, MAX_GROUPS)
    return _cached("plan", tensors, extra,
                   lambda: _make_plan(ptr, visited_ptr, src, dst_local, row_group, per_level))


def _make_plan(ptr, visited_ptr, src: Tensor, dst_local: Tensor, row_group: Tensor | None,
               per_level: bool | None) -> _Plan:
    device = src.device
    ptr = ptr.tolist() if isinstance(ptr, Tensor) else list(ptr)
    visited_ptr = visited_ptr.tolist() if isinstance(visited_ptr, Tensor) else visited_ptr
    n, num_levels = ptr[-1], len(ptr) - 1
    sizes = torch.tensor(ptr, dtype=torch.long, device=device).diff()
    src = src.long()
    counts = torch.tensor(visited_ptr, dtype=torch.long, device=device).diff()
    level_start = torch.tensor(ptr[:-1], dtype=torch.long, device=device)
    # output_size: known here, so that CUDA needs no read-back of the counts.
    dst = dst_local.long() + torch.repeat_interleave(level_start, counts,
                                                     output_size=src.numel())
    out_eid = torch.sort(src, stable=True).indices
    if per_level is None:
        largest = max((b - a for a, b in zip(ptr[:-1], ptr[1:], strict=True)), default=0)
        per_level = largest >= PER_LEVEL_FROM
    rows_by_group = group_ptr = None
    num_groups = 1 if row_group is None else default_num_groups(n)
    if not per_level:
        if row_group is None:
            row_group = torch.zeros(n, dtype=torch.long, device=device)
        level = torch.repeat_interleave(torch.arange(num_levels, device=device), sizes,
                                        output_size=n)
        key = row_group.long() * num_levels + level
        rows_by_group = torch.sort(key, stable=True).indices
        group_ptr = _csr(key, num_groups * num_levels)
    return _Plan(n, src.numel(), ptr, _csr(dst, n), _nonempty(src), _nonempty(dst),
                 _csr(src, n), _nonempty(out_eid), per_level, rows_by_group, group_ptr,
                 num_groups)


def _block_sizes(hidden: int) -> tuple[int, int]:
    # tl.dot wants every block dimension >= 16.
    return 16, max(16, triton.next_power_of_2(hidden))


def _forward(plan: _Plan, base_z, base_m, weight, weight_n, scale, per_node: bool):
    n, hidden = plan.num_nodes, weight_n.size(1)
    state = base_z.new_empty(n, 2 * hidden)
    gates = base_z.new_empty(n, 3 * hidden)
    agg_h = base_z.new_empty(n, hidden)
    sums = base_z.new_empty(n if per_node else 1, 2 * hidden)
    if n == 0:
        return state, gates, agg_h, sums
    dummy = base_z.new_zeros(1)
    block_n, block_h = _block_sizes(hidden)
    tensors = (base_z, dummy if base_m is None else base_m, _nonempty(weight), weight_n,
               dummy if scale is None else _nonempty(scale), state, gates, agg_h, sums,
               plan.in_ptr, plan.src)
    meta = dict(H=hidden, HAS_M=base_m is not None, PER_NODE=per_node,
                HAS_SCALE=scale is not None, BLOCK_N=block_n, BLOCK_H=block_h, UNROLL=UNROLL)
    if plan.per_level:
        for a, b in zip(plan.ptr[:-1], plan.ptr[1:], strict=True):
            _forward_level_kernel[(triton.cdiv(b - a, block_n),)](a, b, *tensors, **meta)
    else:
        _forward_graphs_kernel[(plan.num_groups,)](
            plan.rows_by_group, plan.group_ptr, len(plan.ptr) - 1, *tensors, **meta)
    return state, gates, agg_h, sums


def _backward(plan: _Plan, grad_state, state, gates, weight, weight_n, scale, per_node: bool):
    n, hidden = plan.num_nodes, weight_n.size(1)
    grad_z = state.new_empty(n, 3 * hidden)
    grad_m = state.new_empty(n, hidden)
    grad_agg = state.new_empty(n, 2 * hidden)
    if n == 0:
        return grad_z, grad_m, grad_agg
    block_n, block_h = _block_sizes(hidden)
    tensors = (grad_state, state, gates, _nonempty(weight), weight_n,
               state.new_zeros(1) if scale is None else _nonempty(scale), plan.out_ptr,
               plan.out_eid, plan.dst, grad_z, grad_m, grad_agg)
    meta = dict(H=hidden, PER_NODE=per_node, HAS_SCALE=scale is not None, BLOCK_N=block_n,
                BLOCK_H=block_h, UNROLL=UNROLL)
    if plan.per_level:
        for a, b in zip(plan.ptr[-2::-1], plan.ptr[:0:-1], strict=True):
            _backward_level_kernel[(triton.cdiv(b - a, block_n),)](a, b, *tensors, **meta)
    else:
        _backward_graphs_kernel[(plan.num_groups,)](
            plan.rows_by_group, plan.group_ptr, len(plan.ptr) - 1, *tensors, **meta)
    return grad_z, grad_m, grad_agg


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def level_loop_forward(base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src,
                       dst_local, per_node: bool, row_group: Tensor | None = None,
                       per_level: bool | None = None):
    """The forward of the operator ``graphlstm::recurrence`` (:mod:`graphlstm._ops`) in
    Triton kernels: ``(state [N, 2H], gates [N, 3H], agg_h [N, H], sums [N or 0, 2H])``
    in the dtype of ``base_z``, computed in float32.

    ``row_group`` (:func:`schedule_row_groups` with :func:`default_num_groups` groups)
    lets the graphs of a batch run in programs of their own; without it one program
    runs everything. ``ptr`` and ``visited_ptr`` are lists or int64 CPU tensors.
    ``per_level`` forces (or forbids) the per-level kernels.
    """
    plan = make_plan(ptr, visited_ptr, src, dst_local, row_group, per_level)
    base_z32, base_m, weight, weight_n, scale = map(
        _f32, (base_z, base_m, weight, weight_n, edge_scale))
    state, gates, agg_h, sums = _forward(plan, base_z32, base_m, weight, weight_n, scale,
                                         per_node)
    if not per_node:
        sums = sums[:0]
    return tuple(t.to(base_z.dtype) for t in (state, gates, agg_h, sums))


def level_loop_backward(grad_state, state, gates, sums, weight, weight_n, edge_scale, ptr,
                        visited_ptr, src, dst_local, per_node: bool, need_weight: bool,
                        need_scale: bool, row_group: Tensor | None = None,
                        per_level: bool | None = None):
    """The operator ``graphlstm::recurrence_backward`` in Triton kernels:
    ``(grad_z [N, 3H], grad_m [N, H], grad_weight (shape of weight, [0, 2H] unless
    need_weight), grad_scale ([E_v], [0] unless need_scale))``, in the dtype of
    ``state``."""
    hidden = state.size(1) // 2
    plan = make_plan(ptr, visited_ptr, src, dst_local, row_group, per_level)
    grad_state, state32, gates, sums, weight, weight_n, scale = map(
        _f32, (grad_state, state, gates, sums, weight, weight_n, edge_scale))
    grad_z, grad_m, grad_agg = _backward(plan, grad_state, state32, gates, weight, weight_n,
                                         scale, per_node)
    grad_weight = grad_agg.new_empty(0, 2 * hidden)
    grad_scale = grad_agg.new_empty(0)
    need_scale = need_scale and scale is not None
    if need_weight and per_node:
        grad_weight = grad_agg * sums  # every row's (scaled) neighbour sum
    if need_scale or (need_weight and not per_node):
        # Per visited edge: dL/d(neighbour sum) of its target times its source's state.
        src, dst = plan.src[: plan.num_edges], plan.dst[: plan.num_edges]
        g_edge = grad_agg.index_select(0, dst) * state32.index_select(0, src)
        if need_scale:
            edge_weight = weight.index_select(0, dst) if per_node else weight
            grad_scale = (g_edge * edge_weight).sum(1)
        if need_weight and not per_node:
            grad_weight = g_edge if scale is None else g_edge * scale.unsqueeze(1)
    return tuple(t.to(state.dtype) for t in (grad_z, grad_m, grad_weight, grad_scale))


class _TritonRecurrence(torch.autograd.Function):
    """:func:`level_loop_forward` and :func:`level_loop_backward` as an autograd
    function of their own (the kernels without the operator registration)."""

    @staticmethod
    def forward(ctx, base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src,
                dst_local, per_node, row_group, per_level):
        state, gates, agg_h, sums = level_loop_forward(
            base_z, base_m, weight, weight_n, edge_scale, ptr, visited_ptr, src, dst_local,
            per_node, row_group, per_level)
        ctx.save_for_backward(state, gates, agg_h, sums, weight, weight_n, edge_scale, src,
                              dst_local, row_group)
        ctx.ptr, ctx.visited_ptr, ctx.per_node, ctx.per_level = (ptr, visited_ptr, per_node,
                                                                  per_level)
        ctx.dtypes = [None if t is None else t.dtype
                      for t in (base_z, base_m, weight, weight_n, edge_scale)]
        return state

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_state):
        state, gates, agg_h, sums, weight, weight_n, edge_scale, src, dst_local, row_group = (
            ctx.saved_tensors)
        need = ctx.needs_input_grad
        grad_z, grad_m, grad_weight, grad_scale = level_loop_backward(
            grad_state, state, gates, sums, weight, weight_n, edge_scale, ctx.ptr,
            ctx.visited_ptr, src, dst_local, ctx.per_node, need[2], need[4], row_group,
            ctx.per_level)
        grads = (grad_z, grad_m if need[1] else None, grad_weight if need[2] else None,
                 grad_z.t() @ agg_h.to(grad_z.dtype) if need[3] else None,
                 grad_scale if need[4] else None)
        grads = tuple(None if g is None else g.to(dt)
                      for g, dt in zip(grads, ctx.dtypes, strict=True))
        return (*grads, None, None, None, None, None, None, None)


def recurrence(
    base_z: Tensor,
    base_m: Tensor | None,
    weight: Tensor,
    weight_n: Tensor,
    ptr: list,
    visited_ptr: list,
    src: Tensor,
    dst_local: Tensor,
    per_node: bool = False,
    edge_scale: Tensor | None = None,
    row_group: Tensor | None = None,
    per_level: bool | None = None,
    schedule=None,
) -> Tensor:
    """:func:`graphlstm.functional.graph_lstm_recurrence` in Triton kernels.

    Takes the same arguments (see there), plus:

    Parameters
    ----------
    row_group : LongTensor ``[N]``, optional
        Group of every row of the level-sorted layout (:func:`schedule_row_groups`),
        values below :func:`default_num_groups`; each group runs in its own program,
        so no edge may join two groups. Default: one program for everything.
    per_level : bool, optional
        Force (``True``) or forbid (``False``) the per-level kernels; default:
        per level when some level has :data:`PER_LEVEL_FROM` rows or more.
    schedule : Schedule, optional
        The schedule the layout comes from: without ``row_group``, its graphs
        (:func:`schedule_row_groups`) form the groups.

    Returns
    -------
    state : Tensor ``[N, 2H]`` float32, ``[h' | m']`` in the level-sorted layout.
    """
    if edge_scale is not None and edge_scale.numel() != src.numel():
        raise ValueError(f"'edge_scale' must hold one entry per visited edge ({src.numel()}), "
                         f"got {edge_scale.numel()}")
    if row_group is None and schedule is not None:
        row_group = schedule_row_groups(schedule)
    return _TritonRecurrence.apply(base_z, base_m, weight, weight_n, edge_scale, ptr,
                                   visited_ptr, src, dst_local, per_node, row_group, per_level)


def gated_recurrence(pre: Tensor, from_h: Tensor, h: Tensor, m: Tensor, weight_n: Tensor,
                     schedule, visited_scale: Tensor, unvisited_scale: Tensor,
                     per_level: bool | None = None) -> Tensor:
    """:func:`graphlstm.functional.graph_lstm_gated_recurrence` with the level loop in
    Triton kernels: the projections permuted to the level-sorted layout, the unvisited
    neighbours in one scatter and the visited edges' forget gates in whole-graph
    operations (a fixed number of launches, whatever the number of levels), then
    :func:`recurrence` with per-edge weights ``[1 ; g^f_ij]`` and the scales, one
    program per group of graphs. Returns ``[h' | m']`` in node order, float32."""
    base_z, base_m, weight = gated_level_inputs(
        pre.float(), from_h.float(), h.float(), m.float(), weight_n.float(), schedule,
        unvisited_scale.float())
    state = recurrence(base_z, base_m, weight, weight_n, schedule.ptr, schedule.visited_ptr,
                       schedule.visited_src_pos, schedule.visited_dst_local, False,
                       visited_scale, schedule_row_groups(schedule), per_level)
    return state.index_select(0, schedule.pos)
