r"""Compiled Graph LSTM level loop: the forward and the reverse sweep of the backward.

The same computation as :class:`graphlstm.functional._TorchRecurrence` (the
readable PyTorch reference; see :mod:`graphlstm.functional` for the equations
and the meaning of every argument), without a Python or dispatcher round trip
per level. In the level-sorted layout every visited neighbour of a node lies in
an earlier level, so the nodes of one level are independent (run on several
threads where a level is large) and a level costs only its arithmetic.

Per level, for the nodes ``i`` with visited in-edges ``e = (j -> i)`` (grouped
by target with :func:`node_edges`, in column order so that sums add up in the
reference's order):

- forward: ``[h_bar ; m_bar] = sum_e G_e [h'_j ; m'_j]`` per node (or the
  per-node weighting of the scaled sum), then ``W_n h_bar`` of the whole level
  as one GEMM (:func:`_level_times_weight`: MKL's, through
  :mod:`graphlstm._kernels.blas`, or SIMD dot products), then per node
  ``z = B_i + W_n h_bar``, the gates and the new ``(h', m')``;
- backward, levels in reverse: the gradient of a node's state is complete once
  every later level is done; it gives ``dL/dz``, the level's ``dL/dh_bar =
  W_n^T dL/dz`` in one GEMM, and ``dL/d[h_bar ; m_bar]`` is pushed to the
  sources of the node's edges (and, where asked, to the per-edge weights and
  scalars).

The sigmoid (and ``tanh(x) = 2 sigmoid(2x) - 1``) uses an ``exp`` written in
plain arithmetic (Cody-Waite reduction, a Taylor polynomial, the power of two
built from its bits) so that the loop vectoriser turns a row of gates into
SIMD code (with fused multiply-adds): relative error below 3e-16 in float64 and
2e-7 in float32, where a call into libm per element costs ten times more.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

from graphlstm._kernels._jit import jit
from graphlstm._kernels.blas import rows_times

__all__ = [
    "backward",
    "backward_parallel",
    "check_permutation",
    "forward",
    "forward_parallel",
    "gated_backward",
    "gated_backward_parallel",
    "gated_forward",
    "gated_forward_parallel",
    "group_by_target",
    "node_edges",
]


# --------------------------------------------------------------------------
# Elementwise math that vectorises.
# --------------------------------------------------------------------------


@intrinsic
def _bits(typingctx, x):
    """The bits of a float as an integer of the same width."""
    width = {types.float64: 64, types.float32: 32}.get(x)
    if width is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(width))

    return (types.int64 if width == 64 else types.int32)(x), codegen


@intrinsic
def _from_bits(typingctx, x):
    """The float whose bits are the integer ``x`` (64 or 32 bits)."""
    target = {types.int64: (types.float64, ir.DoubleType()),
              types.int32: (types.float32, ir.FloatType())}.get(x)
    if target is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], target[1])

    return target[0](x), codegen


def const(value, like):  # pragma: no cover - replaced by the overload in compiled code
    """``value`` in the float type of ``like`` (an array or a scalar)."""
    raise NotImplementedError


@overload(const, inline="always")
def _const(value, like):
    dtype = like.dtype if isinstance(like, types.Array) else like
    if dtype == types.float32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


def fast_exp(x):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(fast_exp)
def _fast_exp(x):
    # exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2)/2. Adding 1.5 * 2^52
    # (2^23) rounds x / ln 2 to an integer held in the low bits of the sum; shifting
    # k + bias into the exponent field builds 2^k. The clamp keeps 2^k a normal
    # number and lets NaN through (both comparisons are false).
    if x == types.float64:
        lo, hi, bias, shift_bits = np.float64(-708.0), np.float64(709.0), np.int64(1023), 52
        log2e, round_shift = np.float64(1.4426950408889634), np.float64(6755399441055744.0)
        ln2_hi, ln2_lo = np.float64(6.93147180369123816490e-01), np.float64(
            1.90821492927058770002e-10)
        (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13) = (
            np.float64(1.0 / math.factorial(i)) for i in range(14))

        def impl(x):
            x = hi if x > hi else (lo if x < lo else x)
            y = x * log2e + round_shift
            k = y - round_shift
            r = (x - k * ln2_hi) - k * ln2_lo
            p = c13 * r + c12
            p = p * r + c11
            p = p * r + c10
            p = p * r + c9
            p = p * r + c8
            p = p * r + c7
            p = p * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r + c1
            p = p * r + c0
            return p * _from_bits((_bits(y) + bias) << shift_bits)

        return impl
    if x == types.float32:
        lo, hi, bias = np.float32(-87.0), np.float32(88.0), np.int32(127)
        log2e, round_shift = np.float32(1.44269504), np.float32(12582912.0)
        ln2_hi, ln2_lo = np.float32(0.693359375), np.float32(-2.12194440e-4)
        c0, c1, c2, c3, c4, c5, c6, c7 = (np.float32(1.0 / math.factorial(i)) for i in range(8))

        def impl(x):
            x = hi if x > hi else (lo if x < lo else x)
            y = x * log2e + round_shift
            k = y - round_shift
            r = (x - k * ln2_hi) - k * ln2_lo
            p = c7 * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r + c1
            p = p * r + c0
            return p * _from_bits(np.int32((_bits(y) + bias) << 23))

        return impl
    return None


@jit()
def sigmoid(x):
    one = const(1.0, x)
    return one / (one + fast_exp(-x))


@jit()
def tanh(x):
    # tanh(x) = 2 sigmoid(2x) - 1, as the reference's tanh(c) = 2 sigma(2c) - 1.
    two = const(2.0, x)
    return two * sigmoid(two * x) - const(1.0, x)


# --------------------------------------------------------------------------
# Edges grouped by target.
# --------------------------------------------------------------------------


@jit()
def node_edges(ptr, visited_ptr, src, dst_local):
    """Visited edges grouped by their target row, column order within a target.

    Returns ``(node_ptr [N+1], edges [E_v])``: the edges into row ``i`` are
    ``edges[node_ptr[i]:node_ptr[i+1]]``. Raises ``ValueError`` unless every
    edge of level ``l`` points from a row of an earlier level to a row of level ``l``.
    """
    num_levels = ptr.size - 1
    num_edges = src.size
    if num_levels < 0 or visited_ptr.size != ptr.size or dst_local.size != num_edges:
        raise ValueError("graph_lstm_recurrence: 'visited_ptr' must have the length of 'ptr', "
                         "and 'src' and 'dst_local' one entry per visited edge")
    if ptr[0] != 0 or visited_ptr[0] != 0 or visited_ptr[num_levels] != num_edges:
        raise ValueError("graph_lstm_recurrence: 'ptr' and 'visited_ptr' must start at 0 and "
                         "'visited_ptr' end at the number of visited edges")
    n = ptr[num_levels]
    node_ptr = np.zeros(n + 1, np.int64)
    target = np.empty(num_edges, np.int64)
    for lvl in range(num_levels):
        a, b = ptr[lvl], ptr[lvl + 1]
        ea, eb = visited_ptr[lvl], visited_ptr[lvl + 1]
        if b < a or eb < ea:
            raise ValueError("graph_lstm_recurrence: 'ptr' and 'visited_ptr' must not decrease")
        for e in range(ea, eb):
            d, j = dst_local[e], src[e]
            if d < 0 or d >= b - a:
                raise ValueError("graph_lstm_recurrence: 'dst_local' must index a node of the "
                                 "edge's level")
            if j < 0 or j >= a:
                raise ValueError("graph_lstm_recurrence: 'src' must index a node of an earlier "
                                 "level")
            target[e] = a + d
            node_ptr[a + d + 1] += 1
    for i in range(n):
        node_ptr[i + 1] += node_ptr[i]
    fill = node_ptr[:n].copy()
    edges = np.empty(num_edges, np.int64)
    for e in range(num_edges):
        edges[fill[target[e]]] = e
        fill[target[e]] += 1
    return node_ptr, edges


# --------------------------------------------------------------------------
# Forward.
# --------------------------------------------------------------------------


@jit(fastmath={"reassoc", "contract", "nsz"})
def _dot(a, i, b, j, length):
    """``sum_k a[i, k] * b[j, k]``, in any order of summation: reassociating lets the
    loop run in SIMD lanes. Kept out of the other kernels so that their code (the
    rounding trick of :func:`fast_exp` above all) keeps IEEE semantics."""
    total = const(0.0, a)
    for k in range(length):
        total += a[i, k] * b[j, k]
    return total


# The level products z = W_n h_bar (forward) and dL/dh_bar = W_n^T dL/dz (backward)
# are one GEMM per level through PyTorch's BLAS where it can be called
# (:mod:`graphlstm._kernels.blas`, ``gemm`` is its address), else dot products row
# by row. Their operands are in level order, so that a level is a block of rows:
# the gated loop, whose node tensors stay in the caller's order, keeps ``agg_h``,
# ``gates`` and ``grad_z`` (scratch of the loop) by row ``i`` for that.


@jit(inline="always")
def _level_times_weight(gemm, weight, weight_t, x, out, a, b, transpose):
    """``out[a:b] = x[a:b] @ weight.T`` (``transpose``) or ``x[a:b] @ weight``;
    ``weight_t`` is ``weight.T`` contiguous, for the dot products."""
    if gemm != 0:
        rows_times(gemm, transpose, weight, x, out, a, b)
    elif transpose:
        for i in range(a, b):
            for c in range(out.shape[1]):
                out[i, c] = _dot(weight, c, x, i, x.shape[1])
    else:
        for i in range(a, b):
            for c in range(out.shape[1]):
                out[i, c] = _dot(weight_t, c, x, i, x.shape[1])


@jit(inline="always")
def _gather_node(i, weight, scale, has_scale, per_node, node_ptr, edges, src, state, agg_h, sums):
    """``[h_bar | m_bar]`` of row ``i`` into ``agg_h[i]`` and ``state[i, H:]`` (the new
    memory overwrites it); zeros without edges."""
    # Rows are indexed in two dimensions throughout: a row view would cost a
    # reference count per use.
    hidden = agg_h.shape[1]
    h2 = 2 * hidden
    e0, e1 = node_ptr[i], node_ptr[i + 1]
    if per_node:
        for k in range(h2):
            sums[i, k] = 0
        for q in range(e0, e1):
            e = edges[q]
            j = src[e]
            s = scale[e] if has_scale else const(1.0, scale)
            for k in range(h2):
                sums[i, k] += state[j, k] * s
        for k in range(hidden):
            agg_h[i, k] = weight[i, k] * sums[i, k]
            state[i, hidden + k] = weight[i, hidden + k] * sums[i, hidden + k]
    else:
        for k in range(hidden):
            agg_h[i, k] = 0
            state[i, hidden + k] = 0
        for q in range(e0, e1):
            e = edges[q]
            j = src[e]
            s = scale[e] if has_scale else const(1.0, scale)
            for k in range(hidden):
                agg_h[i, k] += (state[j, k] * s) * weight[e, k]
            for k in range(hidden):
                state[i, hidden + k] += (state[j, hidden + k] * s) * weight[e, hidden + k]


@jit(inline="always")
def _finish_node(i, base_z, base_m, has_m, state, gates):
    """``gates[i]`` holds ``W_n h_bar``: add ``B_i``, activate in place (a loop of its
    own, which vectorises) and write the new ``[h' | m']`` of row ``i``."""
    hidden = state.shape[1] // 2
    h2, h3 = 2 * hidden, 3 * hidden
    for c in range(h3):
        gates[i, c] = sigmoid(base_z[i, c] + gates[i, c])
    two, one = const(2.0, gates), const(1.0, gates)
    for k in range(hidden):
        u, o, s_c = gates[i, k], gates[i, hidden + k], gates[i, h2 + k]
        m = state[i, hidden + k] + u * (two * s_c - one)
        if has_m:
            m += base_m[i, k]
        state[i, hidden + k] = m
        state[i, k] = tanh(o * m)


# Array expressions (``x[:] = 0``) are written as loops on purpose: under
# ``parallel=True`` numba would turn each into a parallel region of its own.
@jit()
def forward(base_z, base_m, has_m, weight, weight_n, weight_nt, scale, has_scale, per_node, ptr,
            node_ptr, edges, src, gemm, state, gates, agg_h, sums):
    """Fill ``state [N, 2H]``, ``gates [N, 3H]`` (the activated ``u, o, sigma(2c)``),
    ``agg_h [N, H]`` and, with ``per_node``, ``sums [N, 2H]``, level by level: the
    rows' neighbour sums, ``W_n h_bar`` of the level (:func:`_level_times_weight`),
    the rows' gates."""
    for lvl in range(ptr.size - 1):
        a, b = ptr[lvl], ptr[lvl + 1]
        for i in range(a, b):
            _gather_node(i, weight, scale, has_scale, per_node, node_ptr, edges, src, state,
                         agg_h, sums)
        _level_times_weight(gemm, weight_n, weight_nt, agg_h, gates, a, b, True)
        for i in range(a, b):
            _finish_node(i, base_z, base_m, has_m, state, gates)


@jit(parallel=True)
def forward_parallel(base_z, base_m, has_m, weight, weight_n, weight_nt, scale, has_scale,
                     per_node, ptr, node_ptr, edges, src, gemm, parallel_from, state, gates,
                     agg_h, sums):
    """:func:`forward`, the rows of each level of at least ``parallel_from`` rows on
    numba's threads."""
    for lvl in range(ptr.size - 1):
        a, b = ptr[lvl], ptr[lvl + 1]
        if b - a >= parallel_from:
            for i in prange(a, b):
                _gather_node(i, weight, scale, has_scale, per_node, node_ptr, edges, src, state,
                             agg_h, sums)
            _level_times_weight(gemm, weight_n, weight_nt, agg_h, gates, a, b, True)
            for i in prange(a, b):
                _finish_node(i, base_z, base_m, has_m, state, gates)
        else:
            for i in range(a, b):
                _gather_node(i, weight, scale, has_scale, per_node, node_ptr, edges, src, state,
                             agg_h, sums)
            _level_times_weight(gemm, weight_n, weight_nt, agg_h, gates, a, b, True)
            for i in range(a, b):
                _finish_node(i, base_z, base_m, has_m, state, gates)


# --------------------------------------------------------------------------
# Backward.
# --------------------------------------------------------------------------


@jit(fastmath={"reassoc", "contract", "nsz"})
def _scale_grad(grad_agg_h, grad_m, i, state, j, weight, w, hidden):
    """``sum_k dL/dagg[i, k] * state[j, k] * weight[w, k]`` over both halves, in any
    order of summation (see :func:`_dot`)."""
    total = const(0.0, state)
    for k in range(hidden):
        total += grad_agg_h[i, k] * state[j, k] * weight[w, k]
        total += grad_m[i, k] * state[j, hidden + k] * weight[w, hidden + k]
    return total


@jit(inline="always")
def _backward_node(i, grad_state, state, gates, grad_z, grad_m):
    """dL/dz and dL/dm of row ``i`` (complete once every later level is done)."""
    hidden = grad_m.shape[1]
    h2 = 2 * hidden
    one, two = const(1.0, grad_z), const(2.0, grad_z)
    for k in range(hidden):
        h, m = state[i, k], state[i, hidden + k]
        u, o, s_c = gates[i, k], gates[i, hidden + k], gates[i, h2 + k]
        gh = grad_state[i, k]
        dtanh = one - h * h
        gmt = grad_state[i, hidden + k] + gh * dtanh * o
        grad_m[i, k] = gmt
        grad_z[i, k] = gmt * (two * s_c - one) * u * (one - u)
        grad_z[i, hidden + k] = gh * dtanh * m * o * (one - o)
        grad_z[i, h2 + k] = gmt * two * u * s_c * (one - s_c)


@jit(inline="always")
def _backward_edges(i, state, weight, scale, has_scale, per_node, node_ptr, edges, src, grad_m,
                    grad_agg_h, grad_edge_weight, need_edge_weight, grad_scale, need_scale):
    """Row ``i``, whose ``grad_agg_h[i]`` (dL/dh_bar) the level product filled: zero it
    without edges, else the per-edge gradients where asked."""
    hidden = grad_m.shape[1]
    e0, e1 = node_ptr[i], node_ptr[i + 1]
    if e1 == e0:
        for k in range(hidden):
            grad_agg_h[i, k] = 0
        return
    if need_edge_weight or need_scale:
        for q in range(e0, e1):
            e = edges[q]
            j = src[e]
            s = scale[e] if has_scale else const(1.0, scale)
            if need_edge_weight:
                for k in range(hidden):
                    grad_edge_weight[e, k] = grad_agg_h[i, k] * state[j, k] * s
                    grad_edge_weight[e, hidden + k] = grad_m[i, k] * state[j, hidden + k] * s
            if need_scale:
                grad_scale[e] = _scale_grad(grad_agg_h, grad_m, i, state, j, weight,
                                            i if per_node else e, hidden)


@jit(inline="always")
def _push_to_sources(i, grad_state, weight, scale, has_scale, per_node, node_ptr, edges, src,
                     grad_m, grad_agg_h):
    hidden = grad_m.shape[1]
    for q in range(node_ptr[i], node_ptr[i + 1]):
        e = edges[q]
        j = src[e]
        w = i if per_node else e
        s = scale[e] if has_scale else const(1.0, scale)
        for k in range(hidden):
            grad_state[j, k] += (grad_agg_h[i, k] * weight[w, k]) * s
        for k in range(hidden):
            grad_state[j, hidden + k] += (grad_m[i, k] * weight[w, hidden + k]) * s


@jit()
def backward(grad_state, state, gates, weight, weight_n, weight_nt, scale, has_scale, per_node,
             ptr, node_ptr, edges, src, gemm, grad_z, grad_m, grad_agg_h, grad_edge_weight,
             need_edge_weight, grad_scale, need_scale):
    """Sweep the levels in reverse, completing ``grad_state`` (modified in place) and
    filling ``grad_z [N, 3H]`` (dL/d base_z), ``grad_m [N, H]`` (dL/d base_m),
    ``grad_agg_h [N, H]`` (dL/dh_bar, zero for rows without visited edges) and,
    where asked, ``grad_edge_weight [E_v, 2H]`` (dL/dG of per-edge weights) and
    ``grad_scale [E_v]``."""
    for lvl in range(ptr.size - 2, -1, -1):
        a, b = ptr[lvl], ptr[lvl + 1]
        for i in range(b - 1, a - 1, -1):
            _backward_node(i, grad_state, state, gates, grad_z, grad_m)
        _level_times_weight(gemm, weight_n, weight_nt, grad_z, grad_agg_h, a, b, False)
        for i in range(b - 1, a - 1, -1):
            _backward_edges(i, state, weight, scale, has_scale, per_node, node_ptr, edges, src,
                            grad_m, grad_agg_h, grad_edge_weight, need_edge_weight, grad_scale,
                            need_scale)
            _push_to_sources(i, grad_state, weight, scale, has_scale, per_node, node_ptr, edges,
                             src, grad_m, grad_agg_h)


@jit(parallel=True)
def backward_parallel(grad_state, state, gates, weight, weight_n, weight_nt, scale, has_scale,
                      per_node, ptr, node_ptr, edges, src, gemm, parallel_from, grad_z, grad_m,
                      grad_agg_h, grad_edge_weight, need_edge_weight, grad_scale, need_scale):
    """:func:`backward`, level by level in reverse. The rows of a level are
    independent and, where the level has at least ``parallel_from`` rows, run on
    numba's threads; only their pushes to earlier rows may collide, so those follow
    one row at a time."""
    for lvl in range(ptr.size - 2, -1, -1):
        a, b = ptr[lvl], ptr[lvl + 1]
        if b - a >= parallel_from:
            for i in prange(a, b):
                _backward_node(i, grad_state, state, gates, grad_z, grad_m)
            _level_times_weight(gemm, weight_n, weight_nt, grad_z, grad_agg_h, a, b, False)
            for i in prange(a, b):
                _backward_edges(i, state, weight, scale, has_scale, per_node, node_ptr, edges,
                                src, grad_m, grad_agg_h, grad_edge_weight, need_edge_weight,
                                grad_scale, need_scale)
            for i in range(a, b):
                _push_to_sources(i, grad_state, weight, scale, has_scale, per_node, node_ptr,
                                 edges, src, grad_m, grad_agg_h)
        else:
            for i in range(b - 1, a - 1, -1):
                _backward_node(i, grad_state, state, gates, grad_z, grad_m)
            _level_times_weight(gemm, weight_n, weight_nt, grad_z, grad_agg_h, a, b, False)
            for i in range(b - 1, a - 1, -1):
                _backward_edges(i, state, weight, scale, has_scale, per_node, node_ptr, edges,
                                src, grad_m, grad_agg_h, grad_edge_weight, need_edge_weight,
                                grad_scale, need_scale)
                _push_to_sources(i, grad_state, weight, scale, has_scale, per_node, node_ptr,
                                 edges, src, grad_m, grad_agg_h)


# --------------------------------------------------------------------------
# The gated loop: neighbour forget gates and unvisited neighbours inside.
# --------------------------------------------------------------------------


@jit()
def group_by_target(src, dst, n):
    """Edges ``src -> dst`` (rows in ``[0, n)``) grouped by target, column order within:
    ``(target_ptr [n+1], edges)``. Raises ``ValueError`` for a row out of range."""
    num_edges = dst.size
    if src.size != num_edges:
        raise ValueError("graph_lstm_gated_recurrence: 'unvisited_edge_index' must have two "
                         "rows of equal length")
    target_ptr = np.zeros(n + 1, np.int64)
    for e in range(num_edges):
        if dst[e] < 0 or dst[e] >= n or src[e] < 0 or src[e] >= n:
            raise ValueError("graph_lstm_gated_recurrence: 'unvisited_edge_index' must index "
                             "rows of the node tensors")
        target_ptr[dst[e] + 1] += 1
    for i in range(n):
        target_ptr[i + 1] += target_ptr[i]
    fill = target_ptr[:n].copy()
    edges = np.empty(num_edges, np.int64)
    for e in range(num_edges):
        edges[fill[dst[e]]] = e
        fill[dst[e]] += 1
    return target_ptr, edges


@jit()
def check_permutation(perm, n):
    """Raise ``ValueError`` unless ``perm`` holds every row of ``[0, n)`` once."""
    if perm.size != n:
        raise ValueError("graph_lstm_gated_recurrence: the schedule's 'perm' must have one "
                         "entry per node")
    seen = np.zeros(n, np.bool_)
    for i in range(n):
        v = perm[i]
        if v < 0 or v >= n or seen[v]:
            raise ValueError("graph_lstm_gated_recurrence: the schedule's 'perm' must be a "
                             "permutation of the nodes")
        seen[v] = True


# Node tensors of the gated loop are in the caller's node order, rows read and
# written at ``v = perm[i]`` while ``i`` walks the level-sorted positions: the
# projections need no permuted copies, and the new state comes out in place.
# The edge lists hold positions; their sources are ``perm[src[e]]``.


@jit(inline="always")
def _gated_gather(i, pre, from_h, h_prev, m_prev, perm, node_ptr, edges, src, scale, unv_ptr,
                  unv_edges, unv_src, unv_scale, state, agg_h):
    """Row ``i`` (node ``v = perm[i]``): ``agg_h[i] = sum_e s_e h_j`` and, into
    ``state[v, H:]``, ``sum_e s_e sigma(xf_v + fn_j) m_j``."""
    hidden = agg_h.shape[1]
    h3, h4 = 3 * hidden, 4 * hidden
    v = perm[i]
    for k in range(hidden):
        agg_h[i, k] = 0
        state[v, hidden + k] = 0
    # Unvisited neighbours in their previous state, visited ones in their new state.
    for q in range(unv_ptr[i], unv_ptr[i + 1]):
        e = unv_edges[q]
        j = perm[unv_src[e]]
        s = unv_scale[e]
        for k in range(hidden):
            agg_h[i, k] += s * h_prev[j, k]
        for k in range(hidden):
            g = sigmoid(pre[v, h3 + k] + from_h[j, h4 + k])
            state[v, hidden + k] += s * g * m_prev[j, k]
    for q in range(node_ptr[i], node_ptr[i + 1]):
        e = edges[q]
        j = perm[src[e]]
        s = scale[e]
        for k in range(hidden):
            agg_h[i, k] += s * state[j, k]
        for k in range(hidden):
            g = sigmoid(pre[v, h3 + k] + from_h[j, h4 + k])
            state[v, hidden + k] += s * g * state[j, hidden + k]


@jit(inline="always")
def _gated_finish(i, pre, from_h, m_prev, perm, state, gates):
    """Row ``i``: ``gates[i]`` holds ``W_n h_bar``; add ``B^x + B^h``, activate in place,
    and write the new ``[h' | m']`` of ``v = perm[i]``."""
    hidden = m_prev.shape[1]
    h2, h3 = 2 * hidden, 3 * hidden
    v = perm[i]
    for c in range(h3):
        gates[i, c] = sigmoid((pre[v, c] + from_h[v, c]) + gates[i, c])
    two, one = const(2.0, gates), const(1.0, gates)
    for k in range(hidden):
        u, o, s_c = gates[i, k], gates[i, hidden + k], gates[i, h2 + k]
        f = sigmoid(pre[v, h3 + k] + from_h[v, h3 + k])
        m = f * m_prev[v, k] + state[v, hidden + k] + u * (two * s_c - one)
        state[v, hidden + k] = m
        state[v, k] = tanh(o * m)


@jit()
def gated_forward(pre, from_h, h_prev, m_prev, weight_n, weight_nt, perm, ptr, node_ptr, edges,
                  src, scale, unv_ptr, unv_edges, unv_src, unv_scale, gemm, state, gates, agg_h):
    """The gated loop (:func:`graphlstm.functional.graph_lstm_gated_recurrence`) level by
    level: fills ``state [N, 2H]`` (node order) and ``gates [N, 3H]``, ``agg_h [N, H]``
    (level order)."""
    for lvl in range(ptr.size - 1):
        a, b = ptr[lvl], ptr[lvl + 1]
        for i in range(a, b):
            _gated_gather(i, pre, from_h, h_prev, m_prev, perm, node_ptr, edges, src, scale,
                          unv_ptr, unv_edges, unv_src, unv_scale, state, agg_h)
        _level_times_weight(gemm, weight_n, weight_nt, agg_h, gates, a, b, True)
        for i in range(a, b):
            _gated_finish(i, pre, from_h, m_prev, perm, state, gates)


@jit(parallel=True)
def gated_forward_parallel(pre, from_h, h_prev, m_prev, weight_n, weight_nt, perm, ptr, node_ptr,
                           edges, src, scale, unv_ptr, unv_edges, unv_src, unv_scale, gemm,
                           parallel_from, state, gates, agg_h):
    """:func:`gated_forward`, the rows of each level of at least ``parallel_from`` rows on
    numba's threads."""
    for lvl in range(ptr.size - 1):
        a, b = ptr[lvl], ptr[lvl + 1]
        if b - a >= parallel_from:
            for i in prange(a, b):
                _gated_gather(i, pre, from_h, h_prev, m_prev, perm, node_ptr, edges, src, scale,
                              unv_ptr, unv_edges, unv_src, unv_scale, state, agg_h)
            _level_times_weight(gemm, weight_n, weight_nt, agg_h, gates, a, b, True)
            for i in prange(a, b):
                _gated_finish(i, pre, from_h, m_prev, perm, state, gates)
        else:
            for i in range(a, b):
                _gated_gather(i, pre, from_h, h_prev, m_prev, perm, node_ptr, edges, src, scale,
                              unv_ptr, unv_edges, unv_src, unv_scale, state, agg_h)
            _level_times_weight(gemm, weight_n, weight_nt, agg_h, gates, a, b, True)
            for i in range(a, b):
                _gated_finish(i, pre, from_h, m_prev, perm, state, gates)


@jit(inline="always")
def _gated_backward_row(i, grad_state, state, gates, pre, from_h, m_prev, perm, grad_pre,
                        grad_from_h, grad_m_prev, grad_mt, grad_z):
    """Row ``i`` (node ``v = perm[i]``): dL/dz into both projections and ``grad_z[i]``,
    dL/dm' (complete) into ``grad_mt``, and the self forget gate's share."""
    hidden = grad_mt.shape[1]
    h2, h3 = 2 * hidden, 3 * hidden
    one, two = const(1.0, grad_mt), const(2.0, grad_mt)
    v = perm[i]
    for k in range(hidden):
        h, m = state[v, k], state[v, hidden + k]
        u, o, s_c = gates[i, k], gates[i, hidden + k], gates[i, h2 + k]
        gh = grad_state[v, k]
        dtanh = one - h * h
        gmt = grad_state[v, hidden + k] + gh * dtanh * o
        grad_mt[v, k] = gmt
        g_u = gmt * (two * s_c - one) * u * (one - u)
        g_o = gh * dtanh * m * o * (one - o)
        g_c = gmt * two * u * s_c * (one - s_c)
        grad_pre[v, k] = g_u
        grad_pre[v, hidden + k] = g_o
        grad_pre[v, h2 + k] = g_c
        grad_from_h[v, k] = g_u
        grad_from_h[v, hidden + k] = g_o
        grad_from_h[v, h2 + k] = g_c
        grad_z[i, k] = g_u
        grad_z[i, hidden + k] = g_o
        grad_z[i, h2 + k] = g_c
        # m' = sigma(xf_v + hf_v) m_v + ...: the self forget gate.
        f = sigmoid(pre[v, h3 + k] + from_h[v, h3 + k])
        grad_m_prev[v, k] += gmt * f
        d_f = gmt * m_prev[v, k] * f * (one - f)
        grad_pre[v, h3 + k] = d_f
        grad_from_h[v, h3 + k] = d_f


@jit(fastmath={"reassoc", "contract", "nsz"})
def _edge_h_backward(j, s, h_src, h_col, grad_agg_h, i, grad_h_src):
    """Push ``s dL/dh_bar_i`` into ``grad_h_src[j, h_col:]``; return ``sum_k dL/dh_bar_i[k]
    h_j[k]``, the h-part of dL/ds."""
    hidden = grad_agg_h.shape[1]
    total = const(0.0, grad_agg_h)
    for k in range(hidden):
        grad_h_src[j, h_col + k] += s * grad_agg_h[i, k]
        total += grad_agg_h[i, k] * h_src[j, h_col + k]
    return total


@jit(fastmath={"reassoc", "contract", "nsz"})
def _edge_m_terms(v, j, s, m_src, m_col, pre, from_h, grad_mt, buf):
    """The neighbour forget gate of ``j -> v``: ``buf[0] = s g dL/dm'_v`` (for m_j),
    ``buf[1] = s dL/dm'_v m_j g (1 - g)`` (for xf_v and fn_j); return the m-part of dL/ds."""
    hidden = grad_mt.shape[1]
    h3, h4 = 3 * hidden, 4 * hidden
    one = const(1.0, grad_mt)
    total = const(0.0, grad_mt)
    for k in range(hidden):
        g = sigmoid(pre[v, h3 + k] + from_h[j, h4 + k])
        g_m, m_j = grad_mt[v, k], m_src[j, m_col + k]
        buf[0, k] = s * g * g_m
        buf[1, k] = s * g_m * m_j * g * (one - g)
        total += g_m * g * m_j
    return total


@jit(inline="always")
def _edge_m_backward(v, j, s, m_src, m_col, pre, from_h, grad_mt, grad_m_src, grad_pre,
                     grad_from_h, buf):
    """Push dL/dm_j into ``grad_m_src[j, m_col:]`` and dL/dxf_v, dL/dfn_j into the
    projections' gradients; return the m-part of dL/ds. Two loops: one writing three
    arrays while reading four would need more overlap checks than the loop vectoriser
    makes, and would run one element at a time."""
    hidden = grad_mt.shape[1]
    h3, h4 = 3 * hidden, 4 * hidden
    total = _edge_m_terms(v, j, s, m_src, m_col, pre, from_h, grad_mt, buf)
    for k in range(hidden):
        grad_m_src[j, m_col + k] += buf[0, k]
        grad_pre[v, h3 + k] += buf[1, k]
        grad_from_h[j, h4 + k] += buf[1, k]
    return total


@jit(inline="always")
def _gated_backward_edges(i, state, pre, from_h, h_prev, m_prev, perm, node_ptr, edges, src,
                          scale, unv_ptr, unv_edges, unv_src, unv_scale, grad_state, grad_mt,
                          grad_agg_h, grad_pre, grad_from_h, grad_h_prev, grad_m_prev,
                          grad_scale, grad_unv_scale, buf):
    """The edges into row ``i`` (node ``v``), each ``j -> v`` with scale ``s``: push
    dL/d[h_j ; m_j] to the source (its new state's gradient for a visited ``j``, the
    previous state's otherwise), dL/dxf_v and dL/dfn_j, and dL/ds. The h and m halves
    are separate loops: a visited source's two halves share one array, and a loop
    writing both would not vectorise."""
    hidden = grad_mt.shape[1]
    v = perm[i]
    for q in range(node_ptr[i], node_ptr[i + 1]):
        e = edges[q]
        j, s = perm[src[e]], scale[e]
        grad_scale[e] = _edge_h_backward(j, s, state, 0, grad_agg_h, i, grad_state) + \
            _edge_m_backward(v, j, s, state, hidden, pre, from_h, grad_mt, grad_state, grad_pre,
                             grad_from_h, buf)
    for q in range(unv_ptr[i], unv_ptr[i + 1]):
        e = unv_edges[q]
        j, s = perm[unv_src[e]], unv_scale[e]
        grad_unv_scale[e] = _edge_h_backward(j, s, h_prev, 0, grad_agg_h, i, grad_h_prev) + \
            _edge_m_backward(v, j, s, m_prev, 0, pre, from_h, grad_mt, grad_m_prev, grad_pre,
                             grad_from_h, buf)


@jit()
def gated_backward(grad_state, state, gates, pre, from_h, h_prev, m_prev, weight_n, weight_nt,
                   perm, ptr, node_ptr, edges, src, scale, unv_ptr, unv_edges, unv_src, unv_scale,
                   gemm, grad_pre, grad_from_h, grad_h_prev, grad_m_prev, grad_mt, grad_z,
                   grad_agg_h, grad_scale, grad_unv_scale):
    """Sweep the levels in reverse, completing ``grad_state`` (in place), and fill the
    gradients of both projections (``grad_from_h``, ``grad_h_prev`` and ``grad_m_prev``
    zeroed by the caller) and of both edge scales; ``grad_mt`` is dL/dm' (node order),
    ``grad_z`` dL/dz and ``grad_agg_h`` dL/dh_bar (level order)."""
    buf = np.empty((2, grad_mt.shape[1]), grad_mt.dtype)
    for lvl in range(ptr.size - 2, -1, -1):
        a, b = ptr[lvl], ptr[lvl + 1]
        for i in range(b - 1, a - 1, -1):
            _gated_backward_row(i, grad_state, state, gates, pre, from_h, m_prev, perm,
                                grad_pre, grad_from_h, grad_m_prev, grad_mt, grad_z)
        _level_times_weight(gemm, weight_n, weight_nt, grad_z, grad_agg_h, a, b, False)
        for i in range(b - 1, a - 1, -1):
            _gated_backward_edges(i, state, pre, from_h, h_prev, m_prev, perm, node_ptr, edges,
                                  src, scale, unv_ptr, unv_edges, unv_src, unv_scale, grad_state,
                                  grad_mt, grad_agg_h, grad_pre, grad_from_h, grad_h_prev,
                                  grad_m_prev, grad_scale, grad_unv_scale, buf)


@jit(parallel=True)
def gated_backward_parallel(grad_state, state, gates, pre, from_h, h_prev, m_prev, weight_n,
                            weight_nt, perm, ptr, node_ptr, edges, src, scale, unv_ptr,
                            unv_edges, unv_src, unv_scale, gemm, parallel_from, grad_pre,
                            grad_from_h, grad_h_prev, grad_m_prev, grad_mt, grad_z, grad_agg_h,
                            grad_scale, grad_unv_scale):
    """:func:`gated_backward`, the rows of a level of at least ``parallel_from`` rows on
    numba's threads, then their edges (whose pushes to other rows may collide) one row
    at a time."""
    buf = np.empty((2, grad_mt.shape[1]), grad_mt.dtype)
    for lvl in range(ptr.size - 2, -1, -1):
        a, b = ptr[lvl], ptr[lvl + 1]
        if b - a >= parallel_from:
            for i in prange(a, b):
                _gated_backward_row(i, grad_state, state, gates, pre, from_h, m_prev, perm,
                                    grad_pre, grad_from_h, grad_m_prev, grad_mt, grad_z)
        else:
            for i in range(b - 1, a - 1, -1):
                _gated_backward_row(i, grad_state, state, gates, pre, from_h, m_prev, perm,
                                    grad_pre, grad_from_h, grad_m_prev, grad_mt, grad_z)
        _level_times_weight(gemm, weight_n, weight_nt, grad_z, grad_agg_h, a, b, False)
        for i in range(b - 1, a - 1, -1):
            _gated_backward_edges(i, state, pre, from_h, h_prev, m_prev, perm, node_ptr, edges,
                                  src, scale, unv_ptr, unv_edges, unv_src, unv_scale, grad_state,
                                  grad_mt, grad_agg_h, grad_pre, grad_from_h, grad_h_prev,
                                  grad_m_prev, grad_scale, grad_unv_scale, buf)
