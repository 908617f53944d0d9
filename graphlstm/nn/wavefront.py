r"""The execution engine of the lattice cells (MD-LSTM, MD-RNN, Grid LSTM).

A lattice cell updates node :math:`i` from its input :math:`x_i` and the
states of its predecessors, one sum per edge type (dimension) :math:`d`:

.. math::
    a_i = W [x_i ; \hat h_{i,1} ; \dots ; \hat h_{i,D}] + b, \qquad
    \hat h_{i,d} = \sum_{j \to i \text{ visited, of type } d} h'_j

followed by elementwise gate work (the *kernel* of each cell). The recurrence
runs in **steps**: the nodes of a step are independent and read only nodes
of earlier steps. Two plans supply the steps:

* :class:`GraphPlan`: the levels of a :class:`~graphlstm.schedule.Schedule`
  on any typed graph (predecessors summed per type by ``index_add_``, so
  several predecessors of one type add up, and a missing one reads zeros);
* :class:`DensePlan`: the anti-diagonals (equal coordinate sum) of a batch
  of D-dimensional grids, for several scan directions at once. Each
  direction scans forwards in its own frame (only the index tables differ),
  and directions and samples are stacked so that a step is **one**
  ``baddbmm`` for all of them, with per-direction weights.

Both run through one :class:`torch.autograd.Function` with a hand-written,
exact backward (checked by ``gradcheck``). Per step the forward gathers the
predecessor states, multiplies ``[x ; h_1 ; ... ; h_D]`` by the stacked
weights in one GEMM, and writes the new states into a buffer laid out as the
output (so nothing is reordered at the end). Nothing per step is kept: the
backward recomputes each step's gates from the saved states (one GEMM) while
it sweeps the steps in reverse, which keeps the memory at the states
themselves, and accumulates the weight gradient step by step. Autograd over
the step loop would record every step and, writing into a shared state
buffer, copy the whole state gradient once per step.

A state buffer row holds ``R*H`` numbers per (node, sample): ``R = 1`` for
MD-LSTM / MD-RNN, ``R = D`` for Grid LSTM (one ``(h_d, m_d)`` pair per
dimension). The dense plan adds one boundary row per (direction, sample)
that border cells read: zeros, or the initial state of a 1-D sequence.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from graphlstm._validation import check_edge_index, check_node_features, check_tensor
from graphlstm.lattice import c_strides, resolve_directions
from graphlstm.schedule import build_schedule

_sigmoid_bwd = torch.ops.aten.sigmoid_backward.grad_input
_tanh_bwd = torch.ops.aten.tanh_backward.grad_input


def _tanh_(t: Tensor) -> Tensor:
    # tanh(x) = 2 sigmoid(2x) - 1: torch's CPU tanh is several times slower than
    # its sigmoid, and this is exact to a few ulp of 1 (1e-16 in float64).
    return t.mul_(2).sigmoid_().mul_(2).sub_(1)


def _tanh(t: Tensor) -> Tensor:
    return _tanh_(t.mul(1))


# --------------------------------------------------------------------------
# Kernels: the elementwise part of one step, forward and exact backward.
#
# activate(a): apply the gate nonlinearities to the pre-activations
#   a [G, M, gates] in place (everything backward needs besides the states).
# combine(a, cp, h_out, c_out): new states from activated gates and the
#   gathered predecessor memories cp [G, M, D, H] into h_out, c_out [G, M, R*H].
# backward(a, cp, h, c, dh, dc, da): write d loss / d a into da and return
#   d loss / d cp [G, M, D, H] (None without a memory).
# --------------------------------------------------------------------------


class MDLSTMKernel:
    """MD-LSTM gates: rows ``i, f_1..f_D, g, o``, or ``i, f, l_1..l_D, g, o`` if stable."""

    has_memory = True
    needs_gates = True

    def __init__(self, hidden: int, ndim: int, stable: bool):
        self.H, self.D, self.stable = hidden, ndim, stable
        self.num_gates = (4 + ndim if stable else 3 + ndim) * hidden

    def _split(self, a: Tensor):
        H, D = self.H, self.D
        G, M = a.shape[:2]
        if self.stable:
            i, f = a[..., :H], a[..., H : 2 * H]
            lam = a[..., 2 * H : (2 + D) * H].view(G, M, D, H)
            g, o = a[..., (2 + D) * H : (3 + D) * H], a[..., (3 + D) * H :]
            return i, f, lam, g, o
        i, f = a[..., :H], a[..., H : (1 + D) * H].view(G, M, D, H)
        g, o = a[..., (1 + D) * H : (2 + D) * H], a[..., (2 + D) * H :]
        return i, f, None, g, o

    def activate(self, a):
        i, f, lam, g, o = self._split(a)
        if self.stable:
            a[..., : 2 * self.H].sigmoid_()
            lam.copy_(torch.softmax(lam, dim=2))
        else:
            a[..., : (1 + self.D) * self.H].sigmoid_()
        _tanh_(g)
        o.sigmoid_()

    def combine(self, a, cp, h_out, c_out):
        i, f, lam, g, o = self._split(a)
        torch.mul(i, g, out=c_out)
        if self.stable:
            c_out.addcmul_(f, (lam * cp).sum(2))
        else:
            for d in range(self.D):
                c_out.addcmul_(f[:, :, d], cp[:, :, d])
        torch.mul(o, _tanh(c_out), out=h_out)

    def backward(self, a, cp, h, c, dh, dc, da):
        i, f, lam, g, o = self._split(a)
        di, df, dlam, dg, do = self._split(da)
        tc = _tanh(c)
        _sigmoid_bwd(dh * tc, o, grad_input=do)
        dct = torch.ops.aten.tanh_backward(dh * o, tc).add_(dc)
        _sigmoid_bwd(dct * g, i, grad_input=di)
        _tanh_bwd(dct * i, g, grad_input=dg)
        if not self.stable:
            dct = dct.unsqueeze(2)
            _sigmoid_bwd(dct * cp, f, grad_input=df)
            return dct * f
        _sigmoid_bwd(dct * (lam * cp).sum(2), f, grad_input=df)
        dm = (dct * f).unsqueeze(2)
        dl = dm * cp
        torch.mul(lam, dl - (lam * dl).sum(2, keepdim=True), out=dlam)
        return dm * lam


class MDRNNKernel:
    """``h' = tanh(a)`` or ``relu(a)``; no memory, and backward needs only ``h'``."""

    has_memory = False
    needs_gates = False

    def __init__(self, hidden: int, ndim: int, nonlinearity: str):
        self.H, self.D, self.nonlinearity = hidden, ndim, nonlinearity
        self.num_gates = hidden

    def activate(self, a):
        if self.nonlinearity == "tanh":
            _tanh_(a)
        else:
            a.clamp_min_(0)

    def combine(self, a, cp, h_out, c_out):
        h_out.copy_(a)

    def backward(self, a, cp, h, c, dh, dc, da):
        if self.nonlinearity == "tanh":
            _tanh_bwd(dh, h, grad_input=da)
        else:
            torch.mul(dh, h > 0, out=da)
        return None


class GridLSTMKernel:
    """Grid LSTM: per dimension ``d`` rows ``u, f, o, c``; ``maps`` = 1 (tied) or D."""

    has_memory = True
    needs_gates = True

    def __init__(self, hidden: int, ndim: int, tied: bool):
        self.H, self.D, self.maps = hidden, ndim, 1 if tied else ndim
        self.num_gates = self.maps * 4 * hidden

    def _split(self, a: Tensor):
        H = self.H
        av = a.view(a.size(0), a.size(1), self.maps, 4 * H)
        return av[..., :H], av[..., H : 2 * H], av[..., 2 * H : 3 * H], av[..., 3 * H :]

    def activate(self, a):
        av = a.view(a.size(0), a.size(1), self.maps, 4 * self.H)
        av[..., : 3 * self.H].sigmoid_()
        _tanh_(av[..., 3 * self.H :])

    def combine(self, a, cp, h_out, c_out):
        G, M = a.shape[:2]
        u, f, o, g = self._split(a)
        m = c_out.view(G, M, self.D, self.H)
        h = h_out.view(G, M, self.D, self.H)
        torch.mul(f, cp, out=m)
        m.addcmul_(u, g)
        torch.mul(o, m, out=h)
        _tanh_(h)

    def backward(self, a, cp, h, c, dh, dc, da):
        G, M = a.shape[:2]
        shape = (G, M, self.D, self.H)
        u, f, o, g = self._split(a)
        du, df, do, dg = self._split(da)
        m = c.view(shape)
        dz = torch.ops.aten.tanh_backward(dh.view(shape), h.view(shape))
        dm = torch.addcmul(dc.view(shape), dz, o)
        grads = [dm * g, dm * cp, dz * m, dm * u]
        if self.maps == 1:
            # A tied map produced the gates of every dimension: its gradient sums them.
            grads = [t.sum(2, keepdim=True) for t in grads]
        _sigmoid_bwd(grads[0], u, grad_input=du)
        _sigmoid_bwd(grads[1], f, grad_input=df)
        _sigmoid_bwd(grads[2], o, grad_input=do)
        _tanh_bwd(grads[3], g, grad_input=dg)
        return dm * f


# --------------------------------------------------------------------------
# Plans: which rows each step writes, which input rows and predecessor state
# rows it reads. Buffers are [rows, R*H]; predecessor gathers index them as
# [rows*R, H] (slot d of a Grid LSTM node is its pair for dimension d).
# --------------------------------------------------------------------------


class DensePlan:
    r"""Anti-diagonal steps over a batch of padded ``shape`` grids, several directions.

    Direction :math:`k` of sample :math:`b` is scanned in its own frame:
    coordinate :math:`p_d` becomes :math:`s_{b,d} - 1 - p_d` where dimension
    :math:`d` is reversed and :math:`p_d < s_{b,d}` (the sample's own size),
    and stays otherwise. So every direction of every sample starts at its own
    corner, and its padding comes after its valid cells in every dimension,
    where no valid cell reads it. Step :math:`t` holds the frame cells with
    coordinate sum :math:`t`; within a step, rows are ordered
    ``(direction, cell, sample)`` to match the batched GEMM.

    Buffer rows: ``(k*B + b)*(N + 1) + p`` for direction ``k``, sample ``b``,
    original cell ``p`` (row-major), ``p = N`` the boundary. Input rows:
    ``b*N + p`` of ``x`` laid out ``[B*N, C]``.
    """

    def __init__(self, shape, directions, batch: int, sizes: Tensor | None, slots: int, device):
        D, N, B, G, R = len(shape), math.prod(shape), batch, len(directions), slots
        self.G, self.D, self.R = G, D, R
        self.num_rows = G * B * (N + 1)
        strides = torch.tensor(c_strides(shape), device=device)
        ar = torch.arange(N, device=device)
        coords = torch.stack(  # [N, D]
            [ar // s % n for s, n in zip(strides.tolist(), shape, strict=True)], 1
        )
        step = coords.sum(1)
        cells = torch.sort(step, stable=True).indices  # frame cell at each step position
        pos = torch.empty_like(cells)
        pos[cells] = ar
        ptr = [0] + torch.bincount(step, minlength=sum(shape) - D + 1).cumsum(0).tolist()
        self.num_steps = len(ptr) - 1

        # Frame maps; `ext` is each sample's own extent (the full shape without sizes).
        flips = torch.tensor(
            [[bool(k >> d & 1) for d in range(D)] for k in directions], device=device
        ).view(G, 1, 1, D)
        ext = sizes if sizes is not None else torch.tensor(shape, device=device)[None]
        p, e = coords[None, None], ext[None, :, None, :]
        q = torch.where(flips & (p < e), e - 1 - p, p)  # [G, Bs, N, D]
        kpos = pos[(q * strides).sum(-1)]  # step position of every original cell
        p_of_k = torch.empty_like(kpos).scatter_(2, kpos, ar.expand_as(kpos))
        p_of_k = p_of_k.expand(G, B, N).transpose(1, 2)  # [G, N(position), B]

        bb = torch.arange(B, device=device)
        base = (torch.arange(G, device=device)[:, None] * B + bb) * (N + 1)  # [G, B]
        rows = base[:, None, :] + p_of_k  # [G, N, B]
        xrows = bb * N + p_of_k
        # Predecessor along d of step position k: the frame cell one step back.
        qc = coords[cells]
        pred = torch.where(qc > 0, pos[(cells[:, None] - strides).clamp_min(0)], N)  # [N, D]
        p_pad = torch.cat([p_of_k, torch.full_like(p_of_k[:, :1], N)], 1)  # [G, N+1, B]
        pred_p = p_pad[:, pred.view(-1)].view(G, N, D, B).transpose(2, 3)  # [G, N, B, D]
        slot = torch.arange(D, device=device) if R > 1 else 0
        gidx = (base[:, None, :, None] + pred_p) * R + slot  # [G, N, B, D]

        def per_step(t: Tensor) -> list[Tensor]:
            return [t[:, ptr[s] : ptr[s + 1]].reshape(-1) for s in range(self.num_steps)]

        self.rows, self.xrows, self.gidx = per_step(rows), per_step(xrows), per_step(gidx)
        self.boundary = (base + N).view(-1)
        last = p_of_k.gather(1, pos[((ext - 1) * strides).sum(-1)].expand(G, 1, B))  # [G, 1, B]
        self.last = (base + last[:, 0]).view(-1)
        self.mask = (coords[None] < ext[:, None]).all(-1) if sizes is not None else None  # [B, N]

    def gather(self, flat: Tensor, s: int, m: int) -> Tensor:
        return flat.index_select(0, self.gidx[s])

    def scatter_add(self, flat: Tensor, s: int, values: Tensor) -> None:
        flat.index_add_(0, self.gidx[s], values)


class GraphPlan:
    """Levels of a schedule on a typed graph; one direction, one sample (``G = B = 1``).

    Buffer and input rows are node ids. Predecessor rows are summed per
    (node, type) slot, so several visited in-edges of one type add up; a type
    without one reads zeros.
    """

    def __init__(self, schedule, edge_type: Tensor, ndim: int, slots: int):
        self.G, self.D, self.R = 1, ndim, slots
        self.num_rows = schedule.num_nodes
        self.num_steps = schedule.num_levels
        self.boundary = None
        ptr, vptr = schedule.ptr, schedule.visited_ptr
        self.rows = [schedule.perm[ptr[s] : ptr[s + 1]] for s in range(self.num_steps)]
        self.xrows = self.rows
        t = edge_type[schedule.visited_eid]
        src = schedule.perm[schedule.visited_src_pos] * slots + (t if slots > 1 else 0)
        dst = schedule.visited_dst_pos * ndim + t
        self.src = [src[vptr[s] : vptr[s + 1]] for s in range(self.num_steps)]
        self.dst = [dst[vptr[s] : vptr[s + 1]] - ptr[s] * ndim for s in range(self.num_steps)]

    def gather(self, flat: Tensor, s: int, m: int) -> Tensor:
        out = flat.new_zeros(m * self.D, flat.size(1))
        return out.index_add_(0, self.dst[s], flat.index_select(0, self.src[s]))

    def scatter_add(self, flat: Tensor, s: int, values: Tensor) -> None:
        flat.index_add_(0, self.src[s], values.index_select(0, self.dst[s]))


# --------------------------------------------------------------------------
# The recurrence.
# --------------------------------------------------------------------------


class _Scan(torch.autograd.Function):
    """``h_buf, c_buf = scan(x [rows_x, C], W [G, C + D*H, gates], b [G, gates], h0, c0)``."""

    @staticmethod
    def forward(ctx, kernel, plan, x, W, b, h0, c0):
        G, R, D, H = plan.G, plan.R, plan.D, kernel.H
        C = x.size(1)
        h_buf = x.new_empty(plan.num_rows, R * H)
        c_buf = torch.empty_like(h_buf) if kernel.has_memory else x.new_empty(0)
        if plan.boundary is not None:
            h_buf[plan.boundary] = h0
            if kernel.has_memory:
                c_buf[plan.boundary] = c0
        h_flat, c_flat = h_buf.view(-1, H), c_buf.view(-1, H)
        bias = b.unsqueeze(1)
        for s in range(plan.num_steps):
            rows = plan.rows[s]
            m = rows.numel() // G
            a = torch.baddbmm(bias, _inputs(plan, s, m, x, h_flat, D * H), W)
            kernel.activate(a)
            cp = plan.gather(c_flat, s, m).view(G, m, D, H) if kernel.has_memory else None
            h_new = a.new_empty(G, m, R * H)
            c_new = torch.empty_like(h_new) if kernel.has_memory else None
            kernel.combine(a, cp, h_new, c_new)
            h_buf.index_copy_(0, rows, h_new.view(-1, R * H))
            if kernel.has_memory:
                c_buf.index_copy_(0, rows, c_new.view(-1, R * H))
        ctx.kernel, ctx.plan = kernel, plan
        ctx.save_for_backward(x, W, b, h_buf, c_buf)
        if not kernel.has_memory:
            ctx.mark_non_differentiable(c_buf)
        ctx.C = C
        return h_buf, c_buf

    @staticmethod
    @once_differentiable
    def backward(ctx, gh, gc):
        kernel, plan = ctx.kernel, ctx.plan
        x, W, b, h_buf, c_buf = ctx.saved_tensors
        G, R, D, H, C = plan.G, plan.R, plan.D, kernel.H, ctx.C
        mem = kernel.has_memory
        dh_buf = torch.zeros_like(h_buf) if gh is None else gh.contiguous().clone()
        dc_buf = torch.zeros_like(c_buf) if gc is None or not mem else gc.contiguous().clone()
        h_flat, c_flat = h_buf.view(-1, H), c_buf.view(-1, H)
        dh_flat, dc_flat = dh_buf.view(-1, H), dc_buf.view(-1, H)
        dx = torch.zeros_like(x)
        dW = torch.zeros_like(W)
        db = torch.zeros_like(b)
        bias, Wt = b.unsqueeze(1), W.transpose(1, 2)
        for s in range(plan.num_steps - 1, -1, -1):
            rows = plan.rows[s]
            m = rows.numel() // G
            hx = _inputs(plan, s, m, x, h_flat, D * H)
            a = None
            if kernel.needs_gates:
                a = torch.baddbmm(bias, hx, W)
                kernel.activate(a)
            cp = plan.gather(c_flat, s, m).view(G, m, D, H) if mem else None
            h = h_buf.index_select(0, rows).view(G, m, R * H)
            c = c_buf.index_select(0, rows).view(G, m, R * H) if mem else None
            dh = dh_buf.index_select(0, rows).view(G, m, R * H)
            dc = dc_buf.index_select(0, rows).view(G, m, R * H) if mem else None
            da = W.new_empty(G, m, W.size(2))
            dcp = kernel.backward(a, cp, h, c, dh, dc, da)
            dhx = torch.bmm(da, Wt)
            dx.index_add_(0, plan.xrows[s], dhx[..., :C].reshape(-1, C))
            plan.scatter_add(dh_flat, s, dhx[..., C:].reshape(-1, H))
            if mem:
                plan.scatter_add(dc_flat, s, dcp.reshape(-1, H))
            dW.baddbmm_(hx.transpose(1, 2), da)
            db.add_(da.sum(1))
        dh0 = dc0 = None
        if plan.boundary is not None:
            dh0 = dh_buf[plan.boundary]
            dc0 = dc_buf[plan.boundary] if mem else None
        return None, None, dx, dW, db, dh0, dc0


def _inputs(plan, s: int, m: int, x: Tensor, h_flat: Tensor, dh: int) -> Tensor:
    """``[x ; h_1 ; ... ; h_D]`` of step ``s``, ``[G, m, C + D*H]``."""
    G = plan.G
    xs = x.index_select(0, plan.xrows[s]).view(G, m, x.size(1))
    return torch.cat([xs, plan.gather(h_flat, s, m).view(G, m, dh)], dim=2)


def scan(kernel, plan, x: Tensor, W: Tensor, b: Tensor | None, h0=None, c0=None):
    """Run the recurrence: ``(h_buf, c_buf)``, ``[plan.num_rows, R*H]`` (``c_buf`` empty for RNN).

    ``x [rows, C]`` holds the inputs (rows as the plan indexes them), ``W``
    ``[G, C + D*H, gates]`` the stacked input and recurrent weights, ``b``
    ``[G, gates]`` the bias (``None``: zero); ``h0, c0 [G*B, R*H]`` the
    boundary states of a dense plan (``None``: zero).
    """
    nb = 0 if plan.boundary is None else plan.boundary.numel()
    width = plan.R * kernel.H
    if b is None:
        b = W.new_zeros(W.size(0), W.size(2))
    if h0 is None:
        h0 = W.new_zeros(nb, width)
    if c0 is None:
        c0 = W.new_zeros(nb, width) if kernel.has_memory else W.new_empty(0)
    return _Scan.apply(kernel, plan, x, W, b, h0, c0)


# --------------------------------------------------------------------------
# Shared module machinery: the graph path of a cell, and the dense layers.
# --------------------------------------------------------------------------


def _check_edge_type(edge_type, num_edges: int, ndim: int) -> Tensor:
    check_tensor(edge_type, "edge_type")
    if edge_type.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"'edge_type' must have dtype torch.long, got {edge_type.dtype}")
    if edge_type.dim() != 1 or edge_type.numel() != num_edges:
        raise ValueError(
            f"'edge_type' must have shape [num_edges] = [{num_edges}], got {list(edge_type.shape)}"
        )
    if num_edges > 0:
        lo, hi = int(edge_type.min()), int(edge_type.max())
        if lo < 0 or hi >= ndim:
            raise ValueError(
                f"'edge_type' must hold dimensions in 0..{ndim - 1} (num_edge_types={ndim}), "
                f"got values in [{lo}, {hi}]"
            )
    return edge_type.long()


class LatticeCell(nn.Module):
    """Base of the lattice cells: the graph forward through a schedule.

    Subclasses set ``kernel``, ``slots`` (``R``: state rows per node),
    ``in_channels``, ``hidden_channels``, ``num_dims`` and implement
    :meth:`weights`.
    """

    kernel: object
    slots: int
    in_channels: int
    hidden_channels: int
    num_dims: int

    def weights(self) -> tuple[Tensor, Tensor | None]:
        """``W [F + D*H, gates]``, applied to ``[x ; h_1 ; ... ; h_D]``, and the bias (or None)."""
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        return self.slots * self.hidden_channels

    def _graph_forward(self, x, edge_index, edge_type, order, score, schedule):
        x = check_node_features(x, None, self.in_channels, "x")
        n = x.size(0)
        edge_index = check_edge_index(edge_index, n)
        edge_type = _check_edge_type(edge_type, edge_index.size(1), self.num_dims)
        if schedule is None:
            schedule = build_schedule(edge_index, n, order=order, score=score)
        else:
            if order is not None or score is not None:
                raise ValueError("give 'schedule' or 'order'/'score', not both")
            schedule.check_graph(n, edge_index)
        plan = GraphPlan(schedule, edge_type.to(schedule.device), self.num_dims, self.slots)
        W, b = self.weights()
        h, c = scan(self.kernel, plan, x, W.unsqueeze(0), None if b is None else b.unsqueeze(0))
        return h, (c if c.numel() else None)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, num_dims={self.num_dims}"

    def __repr__(self) -> str:
        # One line, as PyG convolutions: the parameter layout is in the docstring.
        return f"{self.__class__.__name__}({self.extra_repr()})"


def _check_sizes(sizes, batch: int, spatial: tuple[int, ...], device) -> Tensor:
    if not isinstance(sizes, Tensor):
        try:
            sizes = torch.as_tensor(sizes)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"'sizes' must be an integer tensor [batch, ndim], got {sizes!r}"
            ) from err
    if sizes.is_floating_point() or sizes.is_complex() or sizes.dtype == torch.bool:
        raise TypeError(f"'sizes' must be an integer tensor, got dtype {sizes.dtype}")
    if len(spatial) == 1 and sizes.dim() == 1:
        sizes = sizes[:, None]
    if sizes.dim() != 2 or sizes.shape != (batch, len(spatial)):
        raise ValueError(
            f"'sizes' must have shape [batch, ndim] = [{batch}, {len(spatial)}], "
            f"got {list(sizes.shape)}"
        )
    sizes = sizes.to(device=device, dtype=torch.long)
    hi = torch.tensor(spatial, device=device)
    if bool((sizes < 1).any()) or bool((sizes > hi).any()):
        raise ValueError(
            f"'sizes' must lie in 1..{list(spatial)} (at most the padded input size), "
            f"got {sizes.tolist()}"
        )
    return sizes


class LatticeLayers(nn.Module):
    """Stacked, multi-directional dense lattice layers over ``[B, C, *spatial]``.

    ``cells[l][k]`` is the cell of layer ``l`` and the ``k``-th entry of
    :attr:`directions`. Subclasses build the cells and shape the returned states.
    """

    def __init__(self, input_size, hidden_size, ndim, num_layers, directions, dropout, make_cell):
        super().__init__()
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.ndim = _positive_int(ndim, "ndim")
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.directions = resolve_directions(directions, self.ndim)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"'dropout' must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"'dropout' must be in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        cells = []
        in_size = self.input_size
        for _ in range(self.num_layers):
            row = nn.ModuleList(make_cell(in_size) for _ in self.directions)
            cells.append(row)
            in_size = len(self.directions) * row[0].out_channels
        self.cells = nn.ModuleList(cells)

    def reset_parameters(self) -> None:
        for row in self.cells:
            for cell in row:
                cell.reset_parameters()

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    def _check_input(self, x) -> tuple[int, ...]:
        check_tensor(x, "input")
        if not x.is_floating_point():
            raise TypeError(f"'input' must be a floating point tensor, got dtype {x.dtype}")
        if x.dim() != self.ndim + 2:
            raise ValueError(
                f"'input' must have shape [batch, channels, *spatial] with ndim={self.ndim} "
                f"spatial dimension(s), i.e. {self.ndim + 2} dims, got {list(x.shape)}"
            )
        if x.size(1) != self.input_size:
            raise ValueError(
                f"'input' must have input_size={self.input_size} channels (dim 1), "
                f"got {x.size(1)} in shape {list(x.shape)}"
            )
        if x.numel() == 0:
            raise ValueError(f"'input' must not be empty, got shape {list(x.shape)}")
        return tuple(x.shape[2:])

    def _run(self, x: Tensor, sizes=None, h0: Tensor | None = None, c0: Tensor | None = None):
        """Output ``[B, G*R*H, *spatial]`` and final states ``[num_layers*G, B, R*H]``."""
        spatial = self._check_input(x)
        B, C = x.shape[:2]
        if sizes is not None:
            sizes = _check_sizes(sizes, B, spatial, x.device)
        first = self.cells[0][0]
        width, G = first.out_channels, self.num_directions
        N = math.prod(spatial)
        plan = DensePlan(spatial, self.directions, B, sizes, first.slots, x.device)
        finals_h, finals_c = [], []
        # Between layers the activations stay [B*N, channels], the layout the
        # plan reads inputs from.
        xr = x.reshape(B, C, N).transpose(1, 2).reshape(B * N, C)
        for layer, row in enumerate(self.cells):
            if layer > 0 and self.dropout > 0 and self.training:
                xr = F.dropout(xr, self.dropout, training=True)
            ws = [cell.weights() for cell in row]
            W = torch.stack([w for w, _ in ws])
            b = torch.stack([b for _, b in ws]) if ws[0][1] is not None else None
            hl = None if h0 is None else h0[layer * G : (layer + 1) * G].reshape(G * B, width)
            cl = None if c0 is None else c0[layer * G : (layer + 1) * G].reshape(G * B, width)
            h_buf, c_buf = scan(row[0].kernel, plan, xr, W, b, hl, cl)
            finals_h.append(h_buf.index_select(0, plan.last).view(G, B, width))
            if c_buf.numel():
                finals_c.append(c_buf.index_select(0, plan.last).view(G, B, width))
            states = h_buf.view(G, B, N + 1, width)[:, :, :N]
            if layer + 1 < self.num_layers:
                xr = states.permute(1, 2, 0, 3).reshape(B * N, G * width)
        out = states.permute(1, 0, 3, 2).reshape(B, G * width, *spatial)
        if plan.mask is not None:
            out = out * plan.mask.view(B, 1, *spatial).to(out.dtype)
        h_n = torch.cat(finals_h)
        c_n = torch.cat(finals_c) if finals_c else None
        return out, h_n, c_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, ndim={self.ndim}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        s += f", directions={list(self.directions)}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"'{name}' must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"'{name}' must be positive, got {value}")
    return int(value)
