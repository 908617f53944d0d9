"""The elementwise step of each lattice cell (MD-LSTM, MD-RNN, Grid LSTM): gate
nonlinearities, new states, and their exact backward (see :mod:`graphlstm.nn.wavefront`)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

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
