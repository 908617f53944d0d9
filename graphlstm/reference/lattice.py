r"""Naive references for the lattice cells, straight from the formulas of docs/design.md
("Typed lattices").

One Python step per cell (dense grids) or per node (graphs), no batching of
cells, no schedule: slow, and meant only for tests and benchmarks of
:mod:`graphlstm.nn.md_lstm` and :mod:`graphlstm.nn.grid_lstm`. They read the
cells' parameters by their documented names and split the gate rows themselves, so
a wrong row layout in the fast paths shows up as a mismatch. Differentiable.

Dense grids: ``x [B, C, *spatial]``; direction ``k`` scans dimension ``d``
backwards when bit ``d`` is set; the predecessor along ``d`` is the
neighbour one step back in the scan, zero state outside the grid.
Graphs: the sequential pass (docs/design.md, "The sequential pass"), node
after node in ``order``; a node reads the new states of its visited
in-neighbours, summed per edge type.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "md_lstm_step",
    "md_rnn_step",
    "grid_lstm_step",
    "lattice_scan_reference",
    "graph_scan_reference",
]


def md_lstm_step(cell, x: Tensor, hs: list, cs: list) -> tuple[Tensor, Tensor]:
    """One MD-LSTM update: ``x [B, F]``, ``hs``/``cs`` one ``[B, H]`` per dimension."""
    D = cell.num_dims
    a = F.linear(x, cell.lin_x.weight, cell.lin_x.bias)
    for d in range(D):
        a = a + F.linear(hs[d], cell.lin_h[d].weight)
    if cell.stable:
        i, f, *lam, g, o = a.chunk(4 + D, dim=-1)
        lam = torch.softmax(torch.stack(lam), dim=0)
        mem = sum(lam[d] * cs[d] for d in range(D))
        c = torch.sigmoid(i) * torch.tanh(g) + torch.sigmoid(f) * mem
    else:
        i, *f, g, o = a.chunk(3 + D, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(g)
        for d in range(D):
            c = c + torch.sigmoid(f[d]) * cs[d]
    return torch.sigmoid(o) * torch.tanh(c), c


def md_rnn_step(cell, x: Tensor, hs: list, cs=None) -> tuple[Tensor, None]:
    """One MD-RNN update."""
    a = F.linear(x, cell.lin_x.weight, cell.lin_x.bias)
    for d in range(cell.num_dims):
        a = a + F.linear(hs[d], cell.lin_h[d].weight)
    return (torch.tanh(a) if cell.nonlinearity == "tanh" else torch.relu(a)), None


def grid_lstm_step(cell, x: Tensor, hs: list, ms: list) -> tuple[list, list]:
    """One Grid LSTM update: one ``(h_d, m_d)`` in and out per dimension.

    Paper §3.4-3.5: a non-LSTM dimension ``d`` is ``h'_d = act(V_d H)`` with
    a zero memory; the priority dimension ``p`` transforms
    ``[x ; h'_1 ; ... ; h_p ; ... ; h'_D]`` after all the others.
    """
    D = cell.num_dims
    non_lstm = set(getattr(cell, "non_lstm", ()))
    priority = getattr(cell, "priority", None)
    act = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda t: t}[
        getattr(cell, "non_lstm_activation", "tanh")
    ]
    # Documented naming: lin[d] untied; tied, the LSTM map first, then the non-LSTM one.
    has_lstm = len(non_lstm) < D

    def transform(d: int, hcat: Tensor) -> tuple[Tensor, Tensor]:
        if not cell.tied:
            lin = cell.lin[d]
        else:
            lin = cell.lin[1 if d in non_lstm and has_lstm else 0]
        a = F.linear(hcat, lin.weight, lin.bias)
        if d in non_lstm:
            return act(a), torch.zeros_like(ms[d])
        u, f, o, c = a.chunk(4, dim=-1)
        m = torch.sigmoid(f) * ms[d] + torch.sigmoid(u) * torch.tanh(c)
        return torch.tanh(torch.sigmoid(o) * m), m

    hcat = torch.cat([x, *hs], dim=-1)
    h_new, m_new = [None] * D, [None] * D
    for d in range(D):
        if d != priority:
            h_new[d], m_new[d] = transform(d, hcat)
    if priority is not None:
        prime = [hs[d] if d == priority else h_new[d] for d in range(D)]
        h_new[priority], m_new[priority] = transform(priority, torch.cat([x, *prime], dim=-1))
    return h_new, m_new


def _step_fn(cell):
    name = type(cell).__name__
    return {"MDLSTMCell": md_lstm_step, "MDRNNCell": md_rnn_step, "GridLSTMCell": grid_lstm_step}[
        name
    ]


def lattice_scan_reference(cell, x: Tensor, direction: int = 0):
    """Scan a dense grid cell by cell.

    Returns ``(h, c)``, each ``[B, R*H, *spatial]`` (``R = D`` for Grid LSTM,
    whose node output is ``[h_1; ...; h_D]``; ``c`` is ``None`` for MD-RNN).
    """
    step = _step_fn(cell)
    grid = type(cell).__name__ == "GridLSTMCell"
    B, spatial = x.size(0), tuple(x.shape[2:])
    D, H = len(spatial), cell.hidden_channels
    back = [bool(direction >> d & 1) for d in range(D)]
    zero = x.new_zeros(B, H)
    ranges = [range(n - 1, -1, -1) if back[d] else range(n) for d, n in enumerate(spatial)]
    hs, cs = {}, {}
    for p in itertools.product(*ranges):
        hp, cp = [], []
        for d in range(D):
            q = list(p)
            q[d] += 1 if back[d] else -1
            q = tuple(q)
            if 0 <= q[d] < spatial[d]:
                hp.append(hs[q][d] if grid else hs[q])
                cp.append((cs[q][d] if grid else cs[q]) if cs.get(q) is not None else None)
            else:
                hp.append(zero)
                cp.append(zero)
        hs[p], cs[p] = step(cell, x[(slice(None), slice(None), *p)], hp, cp)

    def stack(states):
        cells = [states[p] for p in itertools.product(*map(range, spatial))]
        if grid:
            cells = [torch.cat(s, dim=-1) for s in cells]
        return torch.stack(cells, dim=-1).view(B, -1, *spatial)

    c = None if type(cell).__name__ == "MDRNNCell" else stack(cs)
    return stack(hs), c


def graph_scan_reference(cell, x: Tensor, edge_index: Tensor, edge_type: Tensor, order: Tensor):
    """The sequential pass on a typed graph: node after node in ``order``.

    Returns ``(h, c)``, each ``[N, R*H]`` (``c`` is ``None`` for MD-RNN).
    Self-loops and unvisited in-edges are ignored; several visited in-edges
    of one type are summed.
    """
    step = _step_fn(cell)
    grid = type(cell).__name__ == "GridLSTMCell"
    N, D, H = x.size(0), cell.num_dims, cell.hidden_channels
    rank = torch.empty_like(order)
    rank[order] = torch.arange(N)
    src, dst, typ = edge_index[0].tolist(), edge_index[1].tolist(), edge_type.tolist()
    rank = rank.tolist()
    zero = x.new_zeros(1, H)
    hs, cs = [None] * N, [None] * N
    for i in order.tolist():
        hp, cp = [zero] * D, [zero] * D
        for j, t_i, d in zip(src, dst, typ, strict=True):
            if t_i != i or j == i or rank[j] > rank[i]:
                continue
            hp[d] = hp[d] + (hs[j][d] if grid else hs[j])
            if cs[j] is not None:
                cp[d] = cp[d] + (cs[j][d] if grid else cs[j])
        hs[i], cs[i] = step(cell, x[i : i + 1], hp, cp)

    def stack(states):
        return torch.cat([torch.cat(s, -1) if grid else s for s in states])

    c = None if type(cell).__name__ == "MDRNNCell" else stack(cs)
    return stack(hs), c
