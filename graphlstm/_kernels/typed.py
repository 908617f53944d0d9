r"""Compiled level loop of the typed-graph cells (``MDLSTMCell``, ``MDRNNCell``).

The same computation as the PyTorch scan of :mod:`graphlstm.nn.wavefront` on a
:class:`~graphlstm.nn.wavefront.GraphPlan` (the readable reference; see
docs/design.md, "MD-LSTM", for the equations), with no Python or dispatcher
round trip per level. Rows
are the schedule's level-sorted positions; every visited in-edge of a row comes
from an earlier level. For rows ``i`` with visited in-edges ``e = (j -> i)`` of
type ``d_e``:

- forward, level by level: the rows' slot sums ``h_hat[i, d] = sum_{e: d_e = d}
  h'_j`` (and ``c_hat``), then ``U^T [h_hat_1 ; ... ; h_hat_D]`` of the whole
  level as one GEMM (as in the Graph LSTM loop), then per row ``a_i = pre_i +
  U^T h_hat_i`` (``pre = W x + b`` comes from one GEMM of the caller), the gates
  and the new state;
- backward, levels in reverse: the gradient of a row's state is complete once
  every later level has pushed into it; it gives ``dL/da_i``, the level's
  ``dL/dh_hat = dL/da U^T`` in one GEMM, and the pushes to the sources of the
  rows' edges (with ``dL/dc_hat``). ``dL/dU = h_hat^T dL/da`` is one GEMM of the
  caller.

The rows of a large level run on several threads (the ``_parallel`` kernels).

``kind`` selects the cell: :data:`LSTM` (gate rows ``i, f_1..f_D, g, o``),
:data:`STABLE_LSTM` (``i, f, l_1..l_D, g, o``, softmax over ``l``),
:data:`RNN_TANH` and :data:`RNN_RELU` (``H`` rows, no memory).
"""

from __future__ import annotations

from numba import prange

from graphlstm._kernels._jit import jit
from graphlstm._kernels.recurrence import _level_times_weight, const, fast_exp, sigmoid, tanh

__all__ = [
    "LSTM",
    "RNN_RELU",
    "RNN_TANH",
    "STABLE_LSTM",
    "typed_backward",
    "typed_backward_parallel",
    "typed_forward",
    "typed_forward_parallel",
]

LSTM, STABLE_LSTM, RNN_TANH, RNN_RELU = 0, 1, 2, 3


@jit(inline="always")
def _gather_row(i, memory, node_ptr, edges, src, etype, h, c, h_hat, c_hat):
    hidden, width = h.shape[1], h_hat.shape[1]
    for k in range(width):
        h_hat[i, k] = 0
    if memory:
        for k in range(width):
            c_hat[i, k] = 0
    for q in range(node_ptr[i], node_ptr[i + 1]):
        e = edges[q]
        j, off = src[e], etype[e] * hidden
        for k in range(hidden):
            h_hat[i, off + k] += h[j, k]
        if memory:
            for k in range(hidden):
                c_hat[i, off + k] += c[j, k]


@jit(inline="always")
def _lstm_row(i, stable, num_dims, gates, h, c, c_hat):
    """Activate the pre-activations ``gates[i]`` in place and write ``h[i]``, ``c[i]``.

    Every loop runs over the units ``k`` of one gate block and writes one block, so
    that it vectorises (two blocks of one row at a distance known only at run time
    would keep a loop scalar); ``c[i]`` and ``h[i]`` hold the softmax's running
    maximum, sum and mixture until they are written."""
    hidden = h.shape[1]
    first = 2 if stable else 1  # the row block of f_1 (plain) or l_1 (stable)
    l0 = first * hidden
    g0, o0 = (first + num_dims) * hidden, (first + num_dims + 1) * hidden
    for k in range(hidden):
        gates[i, k] = sigmoid(gates[i, k])
    for k in range(hidden):
        gates[i, g0 + k] = tanh(gates[i, g0 + k])
    for k in range(hidden):
        gates[i, o0 + k] = sigmoid(gates[i, o0 + k])
    if stable:
        # lambda = softmax_d(l_d): exp of the differences to the largest.
        for k in range(hidden):
            c[i, k] = gates[i, l0 + k]
        for d in range(1, num_dims):
            for k in range(hidden):
                c[i, k] = max(c[i, k], gates[i, l0 + d * hidden + k])
        for k in range(hidden):
            h[i, k] = 0
        for d in range(num_dims):
            for k in range(hidden):
                e = fast_exp(gates[i, l0 + d * hidden + k] - c[i, k])
                gates[i, l0 + d * hidden + k] = e
                h[i, k] += e
        for k in range(hidden):
            c[i, k] = 0
        for d in range(num_dims):
            for k in range(hidden):
                lam = gates[i, l0 + d * hidden + k] / h[i, k]
                gates[i, l0 + d * hidden + k] = lam
                c[i, k] += lam * c_hat[i, d * hidden + k]
        for k in range(hidden):
            gates[i, hidden + k] = sigmoid(gates[i, hidden + k])
        for k in range(hidden):
            c[i, k] = gates[i, hidden + k] * c[i, k] + gates[i, k] * gates[i, g0 + k]
    else:
        for k in range(hidden):
            c[i, k] = gates[i, k] * gates[i, g0 + k]
        for d in range(num_dims):
            r = (1 + d) * hidden
            for k in range(hidden):
                gates[i, r + k] = sigmoid(gates[i, r + k])
            for k in range(hidden):
                c[i, k] += gates[i, r + k] * c_hat[i, d * hidden + k]
    for k in range(hidden):
        h[i, k] = gates[i, o0 + k] * tanh(c[i, k])


@jit(inline="always")
def _typed_row(i, kind, num_dims, pre, node_ptr, h, c, gates, c_hat):
    """Row ``i``: ``gates[i]`` (``h[i]`` without a memory) holds ``U^T h_hat_i``; add
    ``pre[i]``, activate, and write the new state."""
    if kind == LSTM or kind == STABLE_LSTM:
        for g in range(pre.shape[1]):
            gates[i, g] += pre[i, g]
        _lstm_row(i, kind == STABLE_LSTM, num_dims, gates, h, c, c_hat)
        return
    zero = const(0.0, h)
    for k in range(pre.shape[1]):
        a = pre[i, k] + h[i, k]
        if kind == RNN_TANH:
            h[i, k] = tanh(a)
        else:
            h[i, k] = zero if a < zero else a


@jit()
def typed_forward(kind, num_dims, pre, u, u_t, ptr, node_ptr, edges, src, etype, gemm, h, c,
                  gates, h_hat, c_hat):
    """Fill ``h [N, H]`` (and ``c``, ``gates [N, G]`` activated, ``c_hat``) and ``h_hat
    [N, D*H]`` level by level; ``u [D*H, G]`` is ``U`` and ``u_t`` its transpose.

    ``pre [N, G]`` is ``W x + b`` of every row; ``edges[node_ptr[i]:node_ptr[i+1]]`` are
    the visited in-edges of row ``i`` (:func:`~graphlstm._kernels.recurrence.node_edges`),
    ``src[e]`` their source rows and ``etype[e]`` their types; ``gemm`` is the address
    of the BLAS GEMM or 0 (:mod:`graphlstm._kernels.blas`). Without a memory (RNN
    kinds) ``c``, ``gates`` and ``c_hat`` are not touched."""
    memory = kind == LSTM or kind == STABLE_LSTM
    for lvl in range(ptr.size - 1):
        a, b = ptr[lvl], ptr[lvl + 1]
        for i in range(a, b):
            _gather_row(i, memory, node_ptr, edges, src, etype, h, c, h_hat, c_hat)
        _level_times_weight(gemm, u, u_t, h_hat, gates if memory else h, a, b, False)
        for i in range(a, b):
            _typed_row(i, kind, num_dims, pre, node_ptr, h, c, gates, c_hat)


@jit(parallel=True)
def typed_forward_parallel(kind, num_dims, pre, u, u_t, ptr, node_ptr, edges, src, etype, gemm,
                           parallel_from, h, c, gates, h_hat, c_hat):
    """:func:`typed_forward`, the rows of each level of at least ``parallel_from`` rows
    on numba's threads."""
    memory = kind == LSTM or kind == STABLE_LSTM
    for lvl in range(ptr.size - 1):
        a, b = ptr[lvl], ptr[lvl + 1]
        if b - a >= parallel_from:
            for i in prange(a, b):
                _gather_row(i, memory, node_ptr, edges, src, etype, h, c, h_hat, c_hat)
            _level_times_weight(gemm, u, u_t, h_hat, gates if memory else h, a, b, False)
            for i in prange(a, b):
                _typed_row(i, kind, num_dims, pre, node_ptr, h, c, gates, c_hat)
        else:
            for i in range(a, b):
                _gather_row(i, memory, node_ptr, edges, src, etype, h, c, h_hat, c_hat)
            _level_times_weight(gemm, u, u_t, h_hat, gates if memory else h, a, b, False)
            for i in range(a, b):
                _typed_row(i, kind, num_dims, pre, node_ptr, h, c, gates, c_hat)


@jit(inline="always")
def _lstm_row_backward(i, stable, num_dims, gates, c, c_hat, grad_h, grad_c, grad_a, grad_c_hat):
    """``dL/da_i`` and ``dL/dc_hat_i`` of an MD-LSTM row, one gate block per loop as in
    :func:`_lstm_row`. The row's state gradients are complete and read only here, so
    ``grad_c[i]`` is overwritten with ``dL/dc'`` (then ``dL/d(f mix)``) and
    ``grad_h[i]`` serves as scratch for the softmax's sums."""
    hidden = c.shape[1]
    one = const(1.0, c)
    first = 2 if stable else 1
    l0 = first * hidden
    g0, o0 = (first + num_dims) * hidden, (first + num_dims + 1) * hidden
    for k in range(hidden):
        tc = tanh(c[i, k])
        og, gh = gates[i, o0 + k], grad_h[i, k]
        grad_a[i, o0 + k] = gh * tc * og * (one - og)
        grad_c[i, k] = gh * og * (one - tc * tc) + grad_c[i, k]
    for k in range(hidden):
        ig = gates[i, k]
        grad_a[i, k] = grad_c[i, k] * gates[i, g0 + k] * ig * (one - ig)
    for k in range(hidden):
        gg = gates[i, g0 + k]
        grad_a[i, g0 + k] = grad_c[i, k] * gates[i, k] * (one - gg * gg)
    if stable:
        for k in range(hidden):
            grad_h[i, k] = 0  # mix = sum_d lambda_d c_hat_d
        for d in range(num_dims):
            for k in range(hidden):
                grad_h[i, k] += gates[i, l0 + d * hidden + k] * c_hat[i, d * hidden + k]
        for k in range(hidden):
            fg = gates[i, hidden + k]
            grad_a[i, hidden + k] = grad_c[i, k] * grad_h[i, k] * fg * (one - fg)
        for k in range(hidden):
            grad_c[i, k] = grad_c[i, k] * gates[i, hidden + k]  # dm = dL/dc' f
        # softmax: dL/dl_d = lambda_d (dL/dlambda_d - sum_d' lambda_d' dL/dlambda_d').
        for k in range(hidden):
            grad_h[i, k] = 0
        for d in range(num_dims):
            for k in range(hidden):
                grad_h[i, k] += gates[i, l0 + d * hidden + k] * (
                    grad_c[i, k] * c_hat[i, d * hidden + k])
        for d in range(num_dims):
            for k in range(hidden):
                lam = gates[i, l0 + d * hidden + k]
                grad_a[i, l0 + d * hidden + k] = lam * (
                    grad_c[i, k] * c_hat[i, d * hidden + k] - grad_h[i, k])
                grad_c_hat[i, d * hidden + k] = grad_c[i, k] * lam
    else:
        for d in range(num_dims):
            r = (1 + d) * hidden
            for k in range(hidden):
                fg = gates[i, r + k]
                grad_a[i, r + k] = grad_c[i, k] * c_hat[i, d * hidden + k] * fg * (one - fg)
                grad_c_hat[i, d * hidden + k] = grad_c[i, k] * fg


@jit(inline="always")
def _typed_row_backward(i, kind, num_dims, h, c, gates, c_hat, grad_h, grad_c, grad_a,
                        grad_c_hat):
    """``dL/da_i`` (and ``dL/dc_hat_i``) from the complete gradient of row ``i``'s state."""
    if kind == LSTM or kind == STABLE_LSTM:
        _lstm_row_backward(i, kind == STABLE_LSTM, num_dims, gates, c, c_hat, grad_h, grad_c,
                           grad_a, grad_c_hat)
        return
    zero, one = const(0.0, h), const(1.0, h)
    for k in range(grad_a.shape[1]):
        if kind == RNN_TANH:
            grad_a[i, k] = grad_h[i, k] * (one - h[i, k] * h[i, k])
        else:
            grad_a[i, k] = grad_h[i, k] if h[i, k] > zero else zero


@jit(inline="always")
def _push_row(i, memory, node_ptr, edges, src, etype, grad_h, grad_c, grad_h_hat, grad_c_hat):
    hidden = grad_h.shape[1]
    for q in range(node_ptr[i], node_ptr[i + 1]):
        e = edges[q]
        j, off = src[e], etype[e] * hidden
        for k in range(hidden):
            grad_h[j, k] += grad_h_hat[i, off + k]
        if memory:
            for k in range(hidden):
                grad_c[j, k] += grad_c_hat[i, off + k]


@jit()
def typed_backward(kind, num_dims, u, u_t, ptr, node_ptr, edges, src, etype, gemm, h, c, gates,
                   c_hat, grad_h, grad_c, grad_a, grad_h_hat, grad_c_hat):
    """Sweep the levels in reverse: complete ``grad_h`` and ``grad_c`` (in place; they
    hold the gradients of the outputs on entry) and fill ``grad_a [N, G]``, the
    gradient of the pre-activations (that of ``pre``). ``grad_h_hat`` and
    ``grad_c_hat`` ``[N, D*H]`` are scratch."""
    memory = kind == LSTM or kind == STABLE_LSTM
    for lvl in range(ptr.size - 2, -1, -1):
        a, b = ptr[lvl], ptr[lvl + 1]
        for i in range(b - 1, a - 1, -1):
            _typed_row_backward(i, kind, num_dims, h, c, gates, c_hat, grad_h, grad_c, grad_a,
                                grad_c_hat)
        _level_times_weight(gemm, u, u_t, grad_a, grad_h_hat, a, b, True)
        for i in range(b - 1, a - 1, -1):
            _push_row(i, memory, node_ptr, edges, src, etype, grad_h, grad_c, grad_h_hat,
                      grad_c_hat)


@jit(parallel=True)
def typed_backward_parallel(kind, num_dims, u, u_t, ptr, node_ptr, edges, src, etype, gemm,
                            parallel_from, h, c, gates, c_hat, grad_h, grad_c, grad_a,
                            grad_h_hat, grad_c_hat):
    """:func:`typed_backward`, the rows of a level of at least ``parallel_from`` rows on
    numba's threads, then their pushes (which may collide) one row at a time."""
    memory = kind == LSTM or kind == STABLE_LSTM
    for lvl in range(ptr.size - 2, -1, -1):
        a, b = ptr[lvl], ptr[lvl + 1]
        if b - a >= parallel_from:
            for i in prange(a, b):
                _typed_row_backward(i, kind, num_dims, h, c, gates, c_hat, grad_h, grad_c,
                                    grad_a, grad_c_hat)
        else:
            for i in range(b - 1, a - 1, -1):
                _typed_row_backward(i, kind, num_dims, h, c, gates, c_hat, grad_h, grad_c,
                                    grad_a, grad_c_hat)
        _level_times_weight(gemm, u, u_t, grad_a, grad_h_hat, a, b, True)
        for i in range(b - 1, a - 1, -1):
            _push_row(i, memory, node_ptr, edges, src, etype, grad_h, grad_c, grad_h_hat,
                      grad_c_hat)
