r"""The execution engine of the lattice cells (MD-LSTM, MD-RNN, Grid LSTM).

A lattice cell updates node :math:`i` from its input :math:`x_i` and the
states of its predecessors, one sum per edge type (dimension) :math:`d`:

.. math::
    a_i = W [x_i ; 1 ; \hat h_{i,1} ; \dots ; \hat h_{i,D}], \qquad
    \hat h_{i,d} = \sum_{j \to i \text{ visited, of type } d} h'_j

(the bias is the weight of the constant channel), followed by elementwise
gate work: the *kernel* of each cell. The recurrence runs in **steps**: the
nodes of a step are independent and read only nodes of earlier steps. Two
plans supply the steps:

* :class:`GraphPlan`: the levels of a :class:`~graphlstm.schedule.Schedule`
  on any typed graph (predecessors summed per type by ``index_add_``, so
  several predecessors of one type add up, and a missing one reads zeros);
* :class:`DensePlan`: the anti-diagonals (equal coordinate sum) of a batch
  of D-dimensional grids, for several scan directions at once. Each
  direction scans forwards in its own frame (only the index tables differ),
  and directions and samples are stacked so that a step is **one** ``bmm``
  for all of them, with per-direction weights (two for a Grid LSTM with a
  priority dimension, whose transform reads the step's other outputs).

Both run through one :class:`torch.autograd.Function` with a hand-written,
exact backward (checked by ``gradcheck``). State buffers are step-sorted, so
a step writes a contiguous slice and only the predecessor reads are gathers;
one gather at the end puts the states in output order. When a backward will
run, the forward keeps each step's activated gates (as ``torch.nn.LSTM``
does); the backward sweeps the steps in reverse, pulls the state gradients
that the successors owe, and accumulates the weight gradient step by step.
(Autograd over the step loop would record every step and, writing into a
shared state buffer, copy the whole state gradient once per step.)

On the CPU, the graph scan of the MD-LSTM and MD-RNN cells runs in a compiled
loop instead (:func:`_compiled_graph_scan`, kernels in
:mod:`graphlstm._kernels.typed`; :mod:`graphlstm.backend` chooses): a level of
a few dozen nodes costs its arithmetic (one GEMM and the rows' gates), not a
dozen tensor ops. The scan here
stays the reference the tests compare it with, and runs for the Grid LSTM,
on CUDA and without numba.

A state buffer row holds ``R*H`` numbers per (node, sample): ``R = 1`` for
MD-LSTM / MD-RNN, ``R = D`` for Grid LSTM (one ``(h_d, m_d)`` pair per
dimension). The dense plan adds one boundary row per (direction, sample)
that border cells read: zeros, or the initial state of a 1-D sequence.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from graphlstm import backend
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
    return torch.mul(t, 2).sigmoid_().mul_(2).sub_(1)


# --------------------------------------------------------------------------
# Kernels: the elementwise part of one step, forward and exact backward.
#
# activate(a): apply the gate nonlinearities to the pre-activations
#   a [G, M, gates] in place (everything backward needs besides the states).
# combine(a, cp, h_out, c_out): new states from activated gates and the
#   gathered predecessor memories cp [G, M, D, H] into h_out, c_out [G, M, R*H].
# backward(a, cp, h, c, dh, dc, da, dcp): write d loss / d a into da and
#   d loss / d cp [G, M, D, H] into dcp (None without a memory).
# second: None, or a stage that runs after combine on other inputs (a Grid
#   LSTM priority dimension; see GridLSTMKernel and _Scan).
# --------------------------------------------------------------------------


class MDLSTMKernel:
    """MD-LSTM gates: rows ``i, f_1..f_D, g, o``, or ``i, f, l_1..l_D, g, o`` if stable."""

    has_memory = True
    needs_gates = True
    second = None

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

    def backward(self, a, cp, h, c, dh, dc, da, dcp):
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
            torch.mul(dct, f, out=dcp)
            return
        _sigmoid_bwd(dct * (lam * cp).sum(2), f, grad_input=df)
        dm = (dct * f).unsqueeze(2)
        dl = dm * cp
        torch.mul(lam, dl - (lam * dl).sum(2, keepdim=True), out=dlam)
        torch.mul(dm, lam, out=dcp)


class MDRNNKernel:
    """``h' = tanh(a)`` or ``relu(a)``; no memory, and backward needs only ``h'``."""

    has_memory = False
    needs_gates = False
    second = None

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

    def backward(self, a, cp, h, c, dh, dc, da, dcp):
        if self.nonlinearity == "tanh":
            _tanh_bwd(dh, h, grad_input=da)
        else:
            torch.mul(dh, h > 0, out=da)


_NON_LSTM_ACTIVATIONS = ("tanh", "identity", "relu")


class _GridStage:
    r"""The Grid LSTM transforms of the dimensions ``dims`` from one input, in one GEMM.

    Gate columns: the distinct maps of ``dims`` (``map_of[d]``) one after the
    other, each ``4H`` (rows ``u, f, o, c``) for an LSTM map or ``H`` for a
    non-LSTM one. Runs of consecutive dimensions of one kind are updated
    together: untied, a run reads ``hi - lo`` adjacent maps; tied, it reads one
    map, broadcast over the run (the gates of tied dimensions coincide).
    """

    def __init__(self, dims, lstm, tied, map_of, map_widths, hidden, ndim, activation):
        self.H, self.D, self.tied, self.activation = hidden, ndim, tied, activation
        self.maps = list(dict.fromkeys(map_of[d] for d in dims))
        offset, col = {}, 0
        for i in self.maps:
            offset[i], col = col, col + map_widths[i]
        self.width = col
        self.runs = []  # (is_lstm, lo, hi, c0, c1, number of maps read)
        for d in dims:
            last = self.runs[-1] if self.runs else None
            if last is not None and last[0] == lstm[d] and last[2] == d:
                if not tied:  # the next adjacent map
                    last[4] += map_widths[map_of[d]]
                    last[5] += 1
                last[2] = d + 1
            else:
                c0 = offset[map_of[d]]
                self.runs.append([lstm[d], d, d + 1, c0, c0 + map_widths[map_of[d]], 1])
        self.blocks = list(dict.fromkeys((r[0], r[3], r[4]) for r in self.runs))

    def _gates(self, a: Tensor, c0: int, c1: int, k: int):
        blk = a[..., c0:c1].view(a.size(0), a.size(1), k, -1)
        H = self.H
        return blk[..., :H], blk[..., H : 2 * H], blk[..., 2 * H : 3 * H], blk[..., 3 * H :]

    def activate(self, a):
        H = self.H
        for lstm, c0, c1 in self.blocks:
            if lstm:
                av = a[..., c0:c1].view(a.size(0), a.size(1), -1, 4 * H)
                av[..., : 3 * H].sigmoid_()
                _tanh_(av[..., 3 * H :])
            elif self.activation == "tanh":
                _tanh_(a[..., c0:c1])
            elif self.activation == "relu":
                a[..., c0:c1].clamp_min_(0)

    def combine(self, a, cp, h_out, c_out):
        G, M = a.shape[:2]
        shape = (G, M, self.D, self.H)
        m_all, h_all = c_out.view(shape), h_out.view(shape)
        for lstm, lo, hi, c0, c1, k in self.runs:
            m, h = m_all[:, :, lo:hi], h_all[:, :, lo:hi]
            if not lstm:
                h.copy_(a[..., c0:c1].view(G, M, k, self.H))
                m.zero_()  # only h travels along a non-LSTM dimension
                continue
            u, f, o, g = self._gates(a, c0, c1, k)
            torch.mul(f, cp[:, :, lo:hi], out=m)
            m.addcmul_(u, g)
            torch.mul(o, m, out=h)
            _tanh_(h)

    def backward(self, a, cp, h, c, dh, dc, da, dcp):
        G, M = a.shape[:2]
        shape = (G, M, self.D, self.H)
        h_all, m_all, dh_all, dc_all = h.view(shape), c.view(shape), dh.view(shape), dc.view(shape)
        shared = {}  # a tied map's gradient sums those of every dimension it served
        for lstm, lo, hi, c0, c1, k in self.runs:
            if lstm:
                u, f, o, g = self._gates(a, c0, c1, k)
                dz = torch.ops.aten.tanh_backward(dh_all[:, :, lo:hi], h_all[:, :, lo:hi])
                dm = torch.addcmul(dc_all[:, :, lo:hi], dz, o)
                grads = [dm * g, dm * cp[:, :, lo:hi], dz * m_all[:, :, lo:hi], dm * u]
                torch.mul(dm, f, out=dcp[:, :, lo:hi])
            else:
                grads = [dh_all[:, :, lo:hi]]
                # Its memory slot is a constant zero; no reader, but no garbage either.
                dcp[:, :, lo:hi].zero_()
            if self.tied:
                grads = [t.sum(2, keepdim=True) for t in grads]
                if (c0, c1) in shared:
                    grads = [s.add_(t) for s, t in zip(shared[c0, c1][1], grads, strict=True)]
                shared[c0, c1] = (lstm, grads)
            else:
                self._block_backward(a, da, lstm, c0, c1, k, grads)
        for (c0, c1), (lstm, grads) in shared.items():
            self._block_backward(a, da, lstm, c0, c1, 1, grads)

    def _block_backward(self, a, da, lstm, c0, c1, k, grads):
        if lstm:
            u, f, o, g = self._gates(a, c0, c1, k)
            du, df, do, dg = self._gates(da, c0, c1, k)
            _sigmoid_bwd(grads[0], u, grad_input=du)
            _sigmoid_bwd(grads[1], f, grad_input=df)
            _sigmoid_bwd(grads[2], o, grad_input=do)
            _tanh_bwd(grads[3], g, grad_input=dg)
            return
        # The activated block holds the outputs: the derivative reads them.
        G, M = a.shape[:2]
        y = a[..., c0:c1].view(G, M, k, self.H)
        dy = da[..., c0:c1].view(G, M, k, self.H)
        if self.activation == "tanh":
            _tanh_bwd(grads[0], y, grad_input=dy)
        elif self.activation == "relu":
            torch.mul(grads[0], y > 0, out=dy)
        else:
            dy.copy_(grads[0])


class GridLSTMKernel:
    r"""Grid LSTM: per LSTM dimension rows ``u, f, o, c``, per non-LSTM dimension ``H`` rows.

    ``map_of[d]`` is the map (``lin`` index of the cell) of dimension ``d``:
    ``d`` untied; tied, one map per kind present, the LSTM one first
    (``map_widths``: ``4H`` or ``H``). Without a priority dimension one
    stage computes every dimension. With ``priority = p`` (and ``D > 1``) the
    first stage computes the dimensions ``d != p`` from
    :math:`[x ; h_1 ; \dots ; h_D]`, and :attr:`second` computes ``p`` from
    the same vector with :math:`h_d` replaced by :math:`h'_d` for ``d != p``:
    a second GEMM inside the step, whose columns follow the first stage's
    (:attr:`column_maps`: the maps of the gate columns, in order).
    """

    has_memory = True
    needs_gates = True

    def __init__(
        self,
        hidden: int,
        ndim: int,
        tied: bool,
        priority: int | None = None,
        non_lstm=(),
        activation: str = "tanh",
    ):
        self.H, self.D = hidden, ndim
        lstm = [d not in non_lstm for d in range(ndim)]
        kinds = [k for k in (True, False) if k in lstm] if tied else lstm
        self.map_of = [kinds.index(k) for k in lstm] if tied else list(range(ndim))
        self.map_widths = [4 * hidden if k else hidden for k in kinds]
        # With one dimension there are no other outputs to prioritise over.
        self.priority = priority if ndim > 1 else None
        p = self.priority
        stage = functools.partial(
            _GridStage, lstm=lstm, tied=tied, map_of=self.map_of, map_widths=self.map_widths,
            hidden=hidden, ndim=ndim, activation=activation,
        )
        self.first = stage([d for d in range(ndim) if d != p])
        self.second = None if p is None else stage([p])
        self.column_maps = self.first.maps + ([] if p is None else self.second.maps)
        self.num_gates = self.first.width + (0 if p is None else self.second.width)
        self.activate, self.combine = self.first.activate, self.first.combine
        self.backward = self.first.backward

    def split_weights(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """The gate columns of the two stages, ``[G, C + D*H, .]`` each."""
        g1 = self.first.width
        return W[..., :g1].contiguous(), W[..., g1:].contiguous()

    def priority_inputs(self, hx: Tensor, h_new: Tensor) -> Tensor:
        r""":math:`[x ; \tilde h_1 ; \dots ; \tilde h_D]`: ``hx``, new outputs for ``d != p``."""
        H, p = self.H, self.priority
        c = hx.size(2) - self.D * H
        return torch.cat(
            [hx[..., :c], h_new[..., : p * H], hx[..., c + p * H : c + (p + 1) * H],
             h_new[..., (p + 1) * H :]],
            dim=2,
        )


# --------------------------------------------------------------------------
# Plans: the steps, and which rows each step reads. State buffers are
# [G, rows, R*H] with the rows of a step contiguous (step-sorted order), so a
# step writes a slice; predecessor gathers index them as [G*rows*R, H] (slot
# d of a Grid LSTM node holds its pair for dimension d).
#
# The backward pulls rather than pushes: each step stores the gradients with
# respect to the predecessor states it gathered ([G*m*D, H]), and a step
# collects from its successors' stores what they owe it (index_select, about
# twice as fast as index_add_ on CPU).
# --------------------------------------------------------------------------


class DensePlan:
    r"""Anti-diagonal steps over a batch of padded ``shape`` grids, several directions.

    Direction :math:`k` of sample :math:`b` is scanned in its own frame:
    coordinate :math:`p_d` becomes :math:`s_{b,d} - 1 - p_d` where dimension
    :math:`d` is reversed and :math:`p_d < s_{b,d}` (the sample's own size),
    and stays otherwise. So every direction of every sample starts at its own
    corner, and its padding comes after its valid cells in every dimension,
    where no valid cell reads it. Step :math:`t` holds the frame cells with
    coordinate sum :math:`t`; all their successors lie in step :math:`t+1`,
    so the backward keeps one step's gradient store at a time.

    Buffer rows of direction ``k``: ``j*B + b`` for the ``j``-th cell in step
    order and sample ``b``, then ``B`` boundary rows. Inputs ``xs [G, N*B, C]``
    in the same order come from ``x [B*N, C]`` through :attr:`x_idx`.
    """

    def __init__(self, shape, directions, batch: int, sizes: Tensor | None, slots: int, device):
        D, N, B, G, R = len(shape), math.prod(shape), batch, len(directions), slots
        self.G, self.B, self.D, self.R, self.N = G, B, D, R, N
        self.rows = (N + 1) * B
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
        self.ptr, self.num_steps = ptr, len(ptr) - 1

        bb = torch.arange(B, device=device)
        dd = torch.arange(D, device=device)
        gg = torch.arange(G, device=device).view(G, 1, 1, 1)
        qc = coords[cells]
        # Predecessor state rows (in units of H) of every (g, position, b, d).
        pred = torch.where(qc > 0, pos[(cells[:, None] - strides).clamp_min(0)], N)  # [N, D]
        gidx = (gg * self.rows + pred[:, None, :] * B + bb[:, None]) * R
        self.gidx = _by_step(gidx + (dd if R > 1 else 0), ptr)
        # Successor rows in the next step's store [G, n', B, D], or its final zero row.
        last = torch.tensor(shape, device=device) - 1
        succ = torch.where(qc < last, pos[(cells[:, None] + strides).clamp_max(N - 1)], -1)
        sizes_t = torch.tensor(ptr, device=device).diff()
        step_of = torch.repeat_interleave(torch.arange(self.num_steps, device=device), sizes_t)
        nxt = (step_of + 1).clamp_max(self.num_steps - 1)
        n_next = sizes_t[nxt][:, None, None]  # [N, 1, 1]
        local = (succ - torch.tensor(ptr, device=device)[nxt][:, None])[:, None, :]
        loc = ((gg * n_next + local) * B + bb[:, None]) * D + dd  # [G, N, B, D]
        self.succ = _by_step(torch.where(succ[:, None, :] >= 0, loc, G * n_next * B * D), ptr)

        # Frame maps; `ext` is each sample's own extent (the full shape without sizes).
        flips = torch.tensor(
            [[bool(k >> d & 1) for d in range(D)] for k in directions], device=device
        ).view(G, 1, 1, D)
        ext = sizes if sizes is not None else torch.tensor(shape, device=device)[None]
        p, e = coords[None, None], ext[None, :, None, :]
        q = torch.where(flips & (p < e), e - 1 - p, p)  # [G, Bs, N, D]
        kpos = pos[(q * strides).sum(-1)].expand(G, B, N)  # step position of original cell p
        p_of_k = torch.empty_like(kpos).scatter_(2, kpos, ar.expand_as(kpos))
        self.x_idx = (bb * N + p_of_k.transpose(1, 2)).reshape(-1)  # [G, N(position), B]
        self.x_inv = _inverse(self.x_idx.view(G, N * B), N * B)
        base = torch.arange(G, device=device)[:, None] * self.rows + bb  # [G, B]
        self.out_idx = (base[:, :, None] + kpos * B).reshape(-1)  # [G, B, N(original)]
        self.out_inv = _inverse(self.out_idx.view(1, -1), G * self.rows)
        self.last = (base + pos[((ext - 1) * strides).sum(-1)].expand(B) * B).reshape(-1)
        self.boundary = (base + N * B).reshape(-1)
        self.mask = (coords[None] < ext[:, None]).all(-1) if sizes is not None else None  # [B, N]

    def step_rows(self, t: int) -> tuple[int, int]:
        return self.ptr[t] * self.B, self.ptr[t + 1] * self.B

    def gather(self, flat: Tensor, t: int, m: int) -> Tensor:
        return flat.index_select(0, self.gidx[t])

    def new_store(self, like: Tensor) -> dict:
        return {"like": like}

    def store_slot(self, store: dict, t: int, m: int, H: int) -> Tensor:
        """Where step ``t`` writes the gradients of its ``G*m*D`` gathered rows."""
        buf = store[t] = store["like"].new_empty(self.G * m * self.D + 1, H)
        buf[-1] = 0
        store.pop(t + 2, None)  # a step is only read by the one before it
        return buf[:-1]

    def pull(self, store: dict, t: int, m: int) -> Tensor | None:
        """What the successors of step ``t`` owe its states, ``[G*m*R, H]``."""
        if t + 1 >= self.num_steps:
            return None
        got = store[t + 1].index_select(0, self.succ[t])
        if self.R == 1 and self.D > 1:
            got = got.view(-1, self.D, got.size(1)).sum(1)
        return got

    def first_store(self, store: dict) -> Tensor:
        return store[0][:-1]


@functools.lru_cache(maxsize=8)
def _cached_plan(shape, directions, batch, slots, device) -> DensePlan:
    # Building the index tables of a 64x64 batch costs ~15% of a forward;
    # training sees the same shape again and again. Plans are never mutated.
    return DensePlan(shape, directions, batch, None, slots, device)


def _by_step(table: Tensor, ptr: list) -> list[Tensor]:
    """Per step ``t``, the flattened ``[G, n_t, ...]`` block of a ``[G, N, ...]`` table.

    One reorder and a split into views, instead of a copy per step.
    """
    G, N = table.shape[:2]
    sizes = torch.tensor(ptr, device=table.device).diff()
    step_of = torch.repeat_interleave(torch.arange(sizes.numel(), device=table.device), sizes)
    ar = torch.arange(N, device=table.device)
    key = step_of * (G * N) + torch.arange(G, device=table.device)[:, None] * N + ar
    flat = table.reshape(G * N, -1).index_select(0, key.view(-1).argsort()).view(-1)
    return list(flat.split((sizes * (flat.numel() // N)).tolist()))


def _inverse(idx: Tensor, rows: int) -> Tensor:
    """For ``idx [fold, n]`` picking rows of a ``rows``-row source: where each
    ``(k, row)`` landed, ``[fold * rows]`` (0 for rows never picked)."""
    fold, n = idx.shape
    inv = idx.new_zeros(fold, rows)
    inv.scatter_(1, idx, torch.arange(fold * n, device=idx.device).view(fold, n))
    return inv.view(-1)


class GraphPlan:
    """Levels of a schedule on a typed graph; one direction, one sample (``G = B = 1``).

    Rows are the level-sorted node positions of the schedule. Predecessor
    rows are summed per (node, type) slot, so several visited in-edges of one
    type add up; a type without one reads zeros.
    """

    def __init__(self, schedule, edge_type: Tensor, ndim: int, slots: int):
        self.G, self.B, self.D, self.R = 1, 1, ndim, slots
        self.rows = schedule.num_nodes
        self.num_steps = schedule.num_levels
        self.boundary = None
        ptr, vptr = schedule.ptr, schedule.visited_ptr
        self.ptr = ptr
        t = edge_type[schedule.visited_eid]
        src_pos, dst_pos = schedule.visited_src_pos, schedule.visited_dst_pos
        src = src_pos * slots + (t if slots > 1 else 0)
        dst = dst_pos * ndim + t
        steps = range(self.num_steps)
        self.src = [src[vptr[s] : vptr[s + 1]] for s in steps]
        self.dst = [dst[vptr[s] : vptr[s + 1]] - ptr[s] * ndim for s in steps]
        # The same edges grouped by the level of their source, for the backward pull.
        by_src = torch.argsort(src_pos, stable=True)
        src_level = schedule.level[schedule.perm[src_pos[by_src]]]
        sptr = [0] + torch.bincount(src_level, minlength=self.num_steps).cumsum(0).tolist()
        src, dst = src[by_src], dst[by_src]
        self.pull_src = [dst[sptr[s] : sptr[s + 1]] for s in steps]
        self.pull_dst = [src[sptr[s] : sptr[s + 1]] - ptr[s] * slots for s in steps]

    def step_rows(self, t: int) -> tuple[int, int]:
        return self.ptr[t], self.ptr[t + 1]

    def gather(self, flat: Tensor, t: int, m: int) -> Tensor:
        out = flat.new_zeros(m * self.D, flat.size(1))
        return out.index_add_(0, self.dst[t], flat.index_select(0, self.src[t]))

    def new_store(self, like: Tensor) -> Tensor:
        # Successors may sit in any later level: keep every level's gradients.
        return like.new_empty(self.rows * self.D, like.size(-1))

    def store_slot(self, store: Tensor, t: int, m: int, H: int) -> Tensor:
        return store[self.ptr[t] * self.D : self.ptr[t + 1] * self.D]

    def pull(self, store: Tensor, t: int, m: int) -> Tensor | None:
        if self.pull_src[t].numel() == 0:
            return None
        out = store.new_zeros(m * self.R, store.size(1))
        return out.index_add_(0, self.pull_dst[t], store.index_select(0, self.pull_src[t]))


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
    h, c = torch.ops.graphlstm.typed_recurrence(
        pre, W[c_in:], offsets[0], offsets[1], schedule.visited_src_pos,
        schedule.visited_dst_local, edge_type.index_select(0, schedule.visited_eid), kind,
        num_dims,
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
        x, edge_type, schedule = self._prepare_graph(x, edge_index, edge_type, order, score,
                                                     schedule)
        x1, W = augment(x, [self])
        xs = x1.index_select(0, schedule.perm)
        h = None
        kernels = backend.kernels_for(xs, W, schedule.perm) if xs.dtype == W.dtype else None
        kind = None if kernels is None else _compiled_kind(kernels, self.kernel)
        if kind is not None:
            try:
                h, c = _compiled_graph_scan(kind, self.num_dims, xs, W[0], schedule, edge_type)
            except kernels.CompileError as error:
                backend.disable_after_failure(error)
        if h is None:
            h, c = self._graph_scan(xs, W, schedule, edge_type)
        h = h.index_select(0, schedule.pos)
        c = c.index_select(0, schedule.pos) if self.kernel.has_memory else None
        return h, c

    # Validation and the schedule read values, and the PyTorch scan loops over the
    # schedule's levels in Python: both run outside a torch.compile'd graph (the
    # compiled loop is an operator, which dynamo traces as one call).
    @torch.compiler.disable
    def _prepare_graph(self, x, edge_index, edge_type, order, score, schedule):
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
        return x, edge_type.to(schedule.device), schedule

    @torch.compiler.disable
    def _graph_scan(self, xs, W, schedule, edge_type):
        plan = GraphPlan(schedule, edge_type, self.num_dims, self.slots)
        h, c = scan(self.kernel, plan, xs.unsqueeze(0), W)
        return h[0], (c[0] if self.kernel.has_memory else c)

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
        if sizes is None:
            plan = _cached_plan(spatial, self.directions, B, first.slots, x.device)
        else:
            plan = DensePlan(spatial, self.directions, B, sizes, first.slots, x.device)
        finals_h, finals_c = [], []
        # Between layers the activations stay [B*N, channels], the layout the
        # plan gathers inputs from.
        xr = x.reshape(B, C, N).transpose(1, 2).reshape(B * N, C)
        for layer, row in enumerate(self.cells):
            if layer > 0 and self.dropout > 0 and self.training:
                xr = F.dropout(xr, self.dropout, training=True)
            x1, W = augment(xr, row)
            xs = _RowGather.apply(x1, plan.x_idx, plan.x_inv, G, None).view(G, N * B, -1)
            hl = None if h0 is None else h0[layer * G : (layer + 1) * G]
            cl = None if c0 is None else c0[layer * G : (layer + 1) * G]
            h_buf, c_buf = scan(row[0].kernel, plan, xs, W, hl, cl)
            h_flat = h_buf.view(-1, width)
            finals_h.append(h_flat.index_select(0, plan.last).view(G, B, width))
            if row[0].kernel.has_memory:
                c_last = c_buf.view(-1, width).index_select(0, plan.last)
                finals_c.append(c_last.view(G, B, width))
            states = _RowGather.apply(h_flat, plan.out_idx, plan.out_inv, 1, plan.boundary)
            states = states.view(G, B, N, width)
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
