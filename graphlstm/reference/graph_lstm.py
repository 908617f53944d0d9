"""Sequential Graph LSTM references: one node at a time, literally as
docs/design.md says ("The sequential pass", "The Graph LSTM cell").

These exist to check :class:`graphlstm.GraphLSTM` and to measure it; the layer
never calls them. They read the layer's parameters only through the documented
parameter layout (rows ``u, f, o, c`` of ``lin_x`` and ``lin_h``, rows
``u, o, c`` of ``lin_n``, and ``lin_fn``), so they also check that layout.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["graph_lstm_reference", "graph_lstm_loop", "graph_lstm_weighted_reference"]


def _weights(layer):
    hidden = layer.hidden_channels
    wx, bx = layer.lin_x.weight, layer.lin_x.bias
    if bx is None:
        bx = wx.new_zeros(4 * hidden)
    wh, wn, wfn = layer.lin_h.weight, layer.lin_n.weight, layer.lin_fn.weight
    rows = {k: slice(i * hidden, (i + 1) * hidden) for i, k in enumerate("ufoc")}
    n_rows = {k: slice(i * hidden, (i + 1) * hidden) for i, k in enumerate("uoc")}
    return hidden, wx, bx, wh, wn, wfn, rows, n_rows


def _defaults(x: Tensor, hidden: int, order, state) -> tuple[Tensor, Tensor, Tensor]:
    """Index order and zero state where the caller gave none."""
    n = x.size(0)
    order = torch.arange(n) if order is None else order
    if state is None:
        return order, x.new_zeros(n, hidden), x.new_zeros(n, hidden)
    return order, state[0], state[1]


def _in_neighbours(edge_index: Tensor, num_nodes: int) -> list[list[int]]:
    neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for j, i in edge_index.t().tolist():
        if i != j:  # a self-loop carries no neighbour
            neighbours[i].append(j)
    return neighbours


def graph_lstm_reference(
    layer,
    x: Tensor,
    edge_index: Tensor,
    order: Tensor | None = None,
    state: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The Graph LSTM as a plain loop over nodes, differentiable by autograd.

    Node by node in ``order``; each neighbour is read in its new state if it
    was visited before, else in its previous state; no state is written in
    place, so autograd can differentiate it.

    Returns
    -------
    h, m : Tensor ``[N, H]``
    """
    hidden, wx, bx, wh, wn, wfn, r, rn = _weights(layer)
    n = x.size(0)
    order, h_old, m_old = _defaults(x, hidden, order, state)
    neighbours = _in_neighbours(edge_index.cpu(), n)
    h_new: dict[int, Tensor] = {}
    m_new: dict[int, Tensor] = {}

    def lin(w, rows, v):
        return w[rows] @ v

    for i in order.tolist():
        xi, hi, mi = x[i], h_old[i], m_old[i]
        nb = neighbours[i]
        d = len(nb)
        h_hat = [h_new[j] if j in h_new else h_old[j] for j in nb]
        m_hat = [m_new[j] if j in m_new else m_old[j] for j in nb]
        h_bar = torch.stack(h_hat).sum(0) / d if d else x.new_zeros(hidden)

        g_u = torch.sigmoid(lin(wx, r["u"], xi) + lin(wh, r["u"], hi) + lin(wn, rn["u"], h_bar)
                            + bx[r["u"]])
        g_o = torch.sigmoid(lin(wx, r["o"], xi) + lin(wh, r["o"], hi) + lin(wn, rn["o"], h_bar)
                            + bx[r["o"]])
        g_c = torch.tanh(lin(wx, r["c"], xi) + lin(wh, r["c"], hi) + lin(wn, rn["c"], h_bar)
                         + bx[r["c"]])
        g_f_self = torch.sigmoid(lin(wx, r["f"], xi) + lin(wh, r["f"], hi) + bx[r["f"]])
        m = g_f_self * mi + g_u * g_c
        if d:
            # The neighbour forget gate reads j's *previous* hidden state.
            gates = [
                torch.sigmoid(lin(wx, r["f"], xi) + wfn @ h_old[j] + bx[r["f"]]) for j in nb
            ]
            m = m + sum(g * mj for g, mj in zip(gates, m_hat, strict=True)) / d
        h_new[i] = torch.tanh(g_o * m)
        m_new[i] = m

    if n == 0:
        return x.new_zeros(0, hidden), x.new_zeros(0, hidden)
    return (
        torch.stack([h_new[i] for i in range(n)]),
        torch.stack([m_new[i] for i in range(n)]),
    )


@torch.no_grad()
def graph_lstm_loop(
    layer,
    x: Tensor,
    edge_index: Tensor,
    order: Tensor | None = None,
    state: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The per-node loop a practitioner would write: the benchmark's baseline.

    One state buffer updated in place (so a neighbour already updated is read
    new and any other is read old, for free), the input projection of all nodes
    in one GEMM, and per node one small batched projection of its neighbours.
    No autograd.
    """
    hidden = layer.hidden_channels
    n = x.size(0)
    order, h_old, m_old = _defaults(x, hidden, order, state)
    h, m = h_old.clone(), m_old.clone()
    neighbours = [torch.tensor(nb, dtype=torch.long, device=x.device)
                  for nb in _in_neighbours(edge_index.cpu(), n)]
    input_part = layer.lin_x(x)  # rows u, f, o, c
    input_forget = input_part[:, hidden : 2 * hidden]
    pre = input_part + layer.lin_h(h_old)
    fn_old = layer.lin_fn(h_old)
    wn = layer.lin_n.weight
    for i in order.tolist():
        nb = neighbours[i]
        z = pre[i]
        if nb.numel():
            h_bar = h.index_select(0, nb).mean(0)
            zn = wn @ h_bar
            gates = torch.sigmoid(input_forget[i] + fn_old.index_select(0, nb))
            m_nb = (gates * m.index_select(0, nb)).mean(0)
        else:
            zn = z.new_zeros(3 * hidden)
            m_nb = 0.0
        g_u = torch.sigmoid(z[:hidden] + zn[:hidden])
        g_f = torch.sigmoid(z[hidden : 2 * hidden])
        g_o = torch.sigmoid(z[2 * hidden : 3 * hidden] + zn[hidden : 2 * hidden])
        g_c = torch.tanh(z[3 * hidden :] + zn[2 * hidden :])
        m_i = m_nb + g_f * m_old[i] + g_u * g_c
        m[i] = m_i
        h[i] = torch.tanh(g_o * m_i)
    return h, m


def graph_lstm_weighted_reference(
    layer,
    x: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    order: Tensor | None = None,
    state: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The weighted Graph LSTM (docs/design.md, "Edge weights") as a plain loop over nodes.

    Node by node in ``order``, over the list of its in-edges ``j -> i`` (self-loops
    dropped, duplicates kept): ``s_i`` is the sum of their weights; if it is
    positive, ``h_bar = sum_j w_ji h_hat_j / s_i`` and the neighbour memory term is
    ``sum_j w_ji g^f_ij m_hat_j / s_i``, otherwise both are zero. No state is
    written in place, so autograd differentiates it, also in ``edge_weight``.

    Returns
    -------
    h, m : Tensor ``[N, H]``
    """
    hidden, wx, bx, wh, wn, wfn, r, rn = _weights(layer)
    n = x.size(0)
    order, h_old, m_old = _defaults(x, hidden, order, state)
    in_edges: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for e, (j, i) in enumerate(edge_index.t().tolist()):
        if i != j:
            in_edges[i].append((j, e))
    h_new: dict[int, Tensor] = {}
    m_new: dict[int, Tensor] = {}

    def pre(gate: str, i: int, h_bar: Tensor | None = None) -> Tensor:
        z = wx[r[gate]] @ x[i] + wh[r[gate]] @ h_old[i] + bx[r[gate]]
        return z if h_bar is None else z + wn[rn[gate]] @ h_bar

    for i in order.tolist():
        edges = in_edges[i]
        s = sum((edge_weight[e] for _, e in edges), x.new_zeros(()))
        if edges and s > 0:
            h_bar = sum(edge_weight[e] * (h_new[j] if j in h_new else h_old[j])
                        for j, e in edges) / s
            neighbour_memory = sum(
                edge_weight[e]
                * torch.sigmoid(wx[r["f"]] @ x[i] + wfn @ h_old[j] + bx[r["f"]])
                * (m_new[j] if j in m_new else m_old[j])
                for j, e in edges
            ) / s
        else:
            h_bar = x.new_zeros(hidden)
            neighbour_memory = x.new_zeros(hidden)
        g_u = torch.sigmoid(pre("u", i, h_bar))
        g_o = torch.sigmoid(pre("o", i, h_bar))
        g_c = torch.tanh(pre("c", i, h_bar))
        g_f = torch.sigmoid(pre("f", i))
        m = neighbour_memory + g_f * m_old[i] + g_u * g_c
        h_new[i] = torch.tanh(g_o * m)
        m_new[i] = m

    if n == 0:
        return x.new_zeros(0, hidden), x.new_zeros(0, hidden)
    return (
        torch.stack([h_new[i] for i in range(n)]),
        torch.stack([m_new[i] for i in range(n)]),
    )
