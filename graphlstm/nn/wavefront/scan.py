"""The lattice recurrence over a plan's steps, with its hand-written backward, and the
compiled loop of the typed-graph cells (see :mod:`graphlstm.nn.wavefront`)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from graphlstm._dispatch import call
from graphlstm.nn.wavefront.gates import MDLSTMKernel, MDRNNKernel

# --------------------------------------------------------------------------
# The recurrence.
# --------------------------------------------------------------------------


class _Scan(torch.autograd.Function):
    """``h, c = scan(xs [G, M_total, C], W [G, C + D*H, gates], h0, c0)``.

    ``h, c``: ``[G, rows, R*H]`` state buffers in the plan's row order
    (``c`` is empty without a memory); ``h0, c0 [G, B, R*H]`` fill the
    boundary rows of a dense plan.
    """

    @staticmethod
    def forward(ctx, kernel, plan, keep_gates, xs, W, h0, c0):
        G, R, D, H = plan.G, plan.R, plan.D, kernel.H
        mem = kernel.has_memory
        h_buf = xs.new_empty(G, plan.rows, R * H)
        c_buf = torch.empty_like(h_buf) if mem else xs.new_empty(0)
        if plan.boundary is not None:
            nb = h0.size(1)
            h_buf[:, plan.rows - nb :] = h0
            if mem:
                c_buf[:, plan.rows - nb :] = c0
        h_flat, c_flat = h_buf.view(-1, H), c_buf.view(-1, H)
        # The activated gates of every step, kept for the backward (as torch.nn.LSTM
        # keeps its gates) only when one will run.
        ctx.gates = [] if keep_gates and kernel.needs_gates else None
        second = kernel.second
        W1, W2 = (W, None) if second is None else kernel.split_weights(W)
        for t in range(plan.num_steps):
            r0, r1 = plan.step_rows(t)
            m = r1 - r0
            hx = _inputs(plan, t, m, xs[:, r0:r1], h_flat, D * H)
            a = torch.bmm(hx, W1)
            kernel.activate(a)
            cp = plan.gather(c_flat, t, m).view(G, m, D, H) if mem else None
            h_out, c_out = h_buf[:, r0:r1], c_buf[:, r0:r1] if mem else None
            kernel.combine(a, cp, h_out, c_out)
            if second is not None:
                a = (a, torch.bmm(kernel.priority_inputs(hx, h_out), W2))
                second.activate(a[1])
                second.combine(a[1], cp, h_out, c_out)
            if ctx.gates is not None:
                ctx.gates.append(a)
        ctx.kernel, ctx.plan = kernel, plan
        ctx.save_for_backward(xs, W, h_buf, c_buf)
        if not mem:
            ctx.mark_non_differentiable(c_buf)
        return h_buf, c_buf

    @staticmethod
    @once_differentiable
    def backward(ctx, gh, gc):
        kernel, plan = ctx.kernel, ctx.plan
        xs, W, h_buf, c_buf = ctx.saved_tensors
        G, R, D, H = plan.G, plan.R, plan.D, kernel.H
        C = xs.size(2)
        mem = kernel.has_memory
        h_flat, c_flat = h_buf.view(-1, H), c_buf.view(-1, H)
        dxs = torch.empty_like(xs)
        second = kernel.second
        W1, W2 = (W, None) if second is None else kernel.split_weights(W)
        dW = torch.zeros_like(W1)
        wt_x, wt_h = W1[:, :C].transpose(1, 2), W1[:, C:].transpose(1, 2)
        if second is not None:
            dW2, wt2 = torch.zeros_like(W2), W2.transpose(1, 2)
            p = kernel.priority
        store_h, store_c = plan.new_store(h_flat), plan.new_store(h_flat)
        for t in range(plan.num_steps - 1, -1, -1):
            r0, r1 = plan.step_rows(t)
            m = r1 - r0
            hx = _inputs(plan, t, m, xs[:, r0:r1], h_flat, D * H)
            a = ctx.gates[t] if kernel.needs_gates else None
            dh = _grad(gh, r0, r1, plan.pull(store_h, t, m), G, m, R * H, W)
            cp = dc = dcp = None
            if mem:
                cp = plan.gather(c_flat, t, m).view(G, m, D, H)
                dc = _grad(gc, r0, r1, plan.pull(store_c, t, m), G, m, R * H, W)
                dcp = plan.store_slot(store_c, t, m, H).view(G, m, D, H)
            c = c_buf[:, r0:r1] if mem else None
            h_step = h_buf[:, r0:r1]
            if second is not None:
                # The priority transform read [x ; h'_d (d != p) ; h_p]: its input
                # gradient goes to the first stage's outputs, x, and the predecessor.
                a, a2 = a
                da2 = W.new_empty(G, m, W2.size(2))
                second.backward(a2, cp, h_step, c, dh, dc, da2, dcp)
                dW2.baddbmm_(kernel.priority_inputs(hx, h_step).transpose(1, 2), da2)
                dhx2 = torch.bmm(da2, wt2)
                dh = dh + dhx2[..., C:]  # its slot p is not read by the first stage
            da = W.new_empty(G, m, W1.size(2))
            kernel.backward(a, cp, h_step, c, dh, dc, da, dcp)
            slot = plan.store_slot(store_h, t, m, H).view(G, m, D * H)
            torch.bmm(da, wt_h, out=slot)
            torch.bmm(da, wt_x, out=dxs[:, r0:r1])
            dW.baddbmm_(hx.transpose(1, 2), da)
            if second is not None:
                slot[..., p * H : (p + 1) * H] += dhx2[..., C + p * H : C + (p + 1) * H]
                dxs[:, r0:r1] += dhx2[..., :C]
        if second is not None:
            dW = torch.cat([dW, dW2], dim=2)
        dh0 = dc0 = None
        if plan.boundary is not None and ctx.needs_input_grad[5]:
            # Initial states are only accepted for 1-D scans, where the first
            # step alone reads the boundary.
            dh0 = plan.first_store(store_h).view(G, -1, H)
            dc0 = plan.first_store(store_c).view(G, -1, H) if mem else None
        return None, None, None, dxs, dW, dh0, dc0


def _compiled_kind(kernels, kernel) -> int | None:
    """The compiled loop's cell kind for ``kernel``, or ``None`` where there is none
    (Grid LSTM: its stages stay on the PyTorch scan)."""
    if isinstance(kernel, MDLSTMKernel):
        return kernels.STABLE_LSTM if kernel.stable else kernels.LSTM
    if isinstance(kernel, MDRNNKernel):
        return kernels.RNN_TANH if kernel.nonlinearity == "tanh" else kernels.RNN_RELU
    return None


def _compiled_graph_scan(kind: int, num_dims: int, xs: Tensor, W: Tensor, schedule,
                         edge_type: Tensor) -> tuple[Tensor, Tensor]:
    """The :class:`GraphPlan` scan of an MD-LSTM / MD-RNN cell in the compiled loop
    (the operator ``graphlstm::typed_recurrence`` of :mod:`graphlstm._ops`, kernels in
    :mod:`graphlstm._kernels.typed`): ``(h, c)`` in level-sorted rows (``c`` empty
    without a memory).

    The input part ``[x ; 1] W_x`` of every row is one GEMM (autograd differentiates
    it); only the recurrent part ``U [D*H, G]`` runs row by row, with the backward of
    :func:`graphlstm._kernels.typed.typed_backward` and ``dL/dU = h_hat^T dL/da``.
    Levels of many rows run on torch's threads, as in the Graph LSTM loop.
    """
    c_in = xs.size(1)
    pre = xs @ W[:c_in]
    offsets = schedule.offsets
    h, c = call(
        torch.ops.graphlstm.typed_recurrence, pre, W[c_in:], offsets[0], offsets[1],
        schedule.visited_src_pos, schedule.visited_dst_local,
        edge_type.index_select(0, schedule.visited_eid), kind, num_dims,
    )[:2]
    return h, c


def _inputs(plan, t: int, m: int, xs: Tensor, h_flat: Tensor, dh: int) -> Tensor:
    """``[x ; h_1 ; ... ; h_D]`` of the ``m`` rows of step ``t``, ``[G, m, C + D*H]``."""
    return torch.cat([xs, plan.gather(h_flat, t, m).view(plan.G, m, dh)], dim=2)


def _grad(g_out, r0, r1, pulled, G, m, width, like):
    """Gradient of a step's states: from the outputs plus what successors owe."""
    if g_out is None:
        return like.new_zeros(G, m, width) if pulled is None else pulled.view(G, m, width)
    own = g_out[:, r0:r1]
    return own if pulled is None else own + pulled.view(G, m, width)


def scan(kernel, plan, xs: Tensor, W: Tensor, h0=None, c0=None):
    """Run the recurrence: state buffers ``(h, c)`` ``[G, rows, R*H]`` (``c`` empty for RNN).

    ``xs [G, M_total, C]`` holds the inputs in the plan's row order, ``W``
    ``[G, C + D*H, gates]`` the stacked input and recurrent weights (a bias
    is a constant input channel, see :func:`augment`); ``h0, c0 [G, B, R*H]``
    the boundary states of a dense plan (``None``: zero; only 1-D scans may
    pass states that need a gradient).
    """
    nb = 0 if plan.boundary is None else plan.B
    width = plan.R * kernel.H
    if h0 is None:
        h0 = W.new_zeros(plan.G, nb, width)
    if c0 is None:
        c0 = W.new_zeros(plan.G, nb, width) if kernel.has_memory else W.new_empty(0)
    backward_ahead = torch.is_grad_enabled() and any(
        t.requires_grad for t in (xs, W, h0, c0)
    )
    return _Scan.apply(kernel, plan, backward_ahead, xs, W, h0, c0)


def augment(x: Tensor, cells) -> tuple[Tensor, Tensor]:
    """Inputs ``[x ; 1]`` and the stacked weights ``[G, F + 1 + D*H, gates]`` of ``cells``.

    The bias rides in the GEMM as the weight of a constant channel: no
    broadcast copy per step, and its gradient falls out of the weight gradient.
    """
    x1 = torch.cat([x, x.new_ones(x.size(0), 1)], dim=1)
    stacked = []
    for cell in cells:
        w, b = cell.weights()
        f = cell.in_channels
        b = w.new_zeros(1, w.size(1)) if b is None else b.unsqueeze(0)
        stacked.append(torch.cat([w[:f], b, w[f:]]))
    return x1, torch.stack(stacked)


class _RowGather(torch.autograd.Function):
    """``src.index_select(0, idx)`` whose backward is a gather too (no ``index_add_``).

    ``idx`` picks every row of ``src`` exactly ``fold`` times (once per
    direction), or, with ``fold = 1``, every row but ``skip`` once; ``inv``
    ``[fold * rows]`` is where each pick landed.
    """

    @staticmethod
    def forward(ctx, src, idx, inv, fold, skip):
        ctx.save_for_backward(inv)
        ctx.fold, ctx.skip, ctx.rows = fold, skip, src.size(0)
        return src.index_select(0, idx)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (inv,) = ctx.saved_tensors
        out = grad.index_select(0, inv).view(ctx.fold, ctx.rows, grad.size(1))
        out = out.sum(0) if ctx.fold > 1 else out[0]
        if ctx.skip is not None:
            out.index_fill_(0, ctx.skip, 0)
        return out, None, None, None, None
