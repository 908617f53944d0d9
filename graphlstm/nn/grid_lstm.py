r"""Grid LSTM (Kalchbrenner, Danihelka & Graves 2015) as a lattice recurrence.

Every node takes one ``(h_d, m_d)`` pair from its predecessor along each
dimension and emits one pair per dimension, which travels on along the
edges of that dimension. :class:`GridLSTMCell` runs on any typed graph in a
given order; :class:`GridLSTM` runs it on dense ``[B, C, *spatial]`` tensors,
stacked and in several directions, by the anti-diagonal wavefront shared with
:class:`~graphlstm.nn.md_lstm.MDLSTM`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphlstm.nn.md_lstm import _LAYER_DOC, _uniform_reset
from graphlstm.nn.wavefront import GridLSTMKernel, LatticeCell, LatticeLayers, _positive_int

__all__ = ["GridLSTMCell", "GridLSTM"]


class GridLSTMCell(LatticeCell):
    r"""The Grid LSTM block on a typed graph (SPEC §3.3).

    Node :math:`i` gathers, for every dimension :math:`d`, the pair
    :math:`(\hat h_d, \hat m_d)` that its visited in-neighbours of type
    :math:`d` emitted *for dimension* :math:`d` (zeros if none; summed if
    several, on a general graph), and emits one pair per dimension:

    .. math::
        H &= [x_i ; \hat h_1 ; \dots ; \hat h_D] \\
        g^u_d, g^f_d, g^o_d &= \sigma(W_d^{u,f,o} H + b_d^{u,f,o}), \qquad
        g^c_d = \tanh(W_d^c H + b_d^c) \\
        m'_d &= g^f_d \odot \hat m_d + g^u_d \odot g^c_d, \qquad
        h'_d = \tanh(g^o_d \odot m'_d)

    The pair :math:`(h'_d, m'_d)` travels along the edges of type :math:`d`.
    With ``tied=True`` one map :math:`W` serves every dimension (the gates are
    then shared, the memories are not). The node output is
    :math:`[h'_1 ; \dots ; h'_D]`.

    Parameters
    ----------
    in_channels : int
        Input size :math:`F`.
    hidden_channels : int
        Hidden size :math:`H` of every dimension.
    num_dims : int
        Number of dimensions (edge types) :math:`D`.
    tied : bool, default False
        Share one map among the dimensions.
    bias : bool, default True

    Attributes
    ----------
    lin : torch.nn.ModuleList of torch.nn.Linear
        ``D`` maps (one if ``tied``), each :math:`F + D H \to 4H` with bias:
        weight ``[4H, F + D*H]`` whose columns read ``[x ; h_1 ; ... ; h_D]``
        and whose rows are ``u, f, o, c`` (``H`` each). Initialised from
        :math:`\mathcal U(-1/\sqrt H, 1/\sqrt H)`.

    Shapes
    ------
    - **input:** ``x [N, F]``, ``edge_index [2, E]``, ``edge_type [E]`` in
      ``0..D-1``, and ``order [N]`` / ``score [N]`` / ``schedule`` as for
      :class:`~graphlstm.nn.md_lstm.MDLSTMCell`.
    - **output:** ``(out [N, D*H], (h [N, D, H], m [N, D, H]))`` where
      ``out = [h'_1; ...; h'_D]``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_dims: int,
        tied: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.hidden_channels = h = _positive_int(hidden_channels, "hidden_channels")
        self.num_dims = d = _positive_int(num_dims, "num_dims")
        self.tied = bool(tied)
        self.slots = d
        self.kernel = GridLSTMKernel(h, d, self.tied)
        self.lin = nn.ModuleList(
            nn.Linear(self.in_channels + d * h, 4 * h, bias=bias)
            for _ in range(1 if self.tied else d)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_reset(self, self.hidden_channels)

    def weights(self) -> tuple[Tensor, Tensor | None]:
        w = torch.cat([lin.weight for lin in self.lin]).t()
        b = None if self.lin[0].bias is None else torch.cat([lin.bias for lin in self.lin])
        return w, b

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor,
        order: Tensor | None = None,
        score: Tensor | None = None,
        schedule=None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, m = self._graph_forward(x, edge_index, edge_type, order, score, schedule)
        shape = (h.size(0), self.num_dims, self.hidden_channels)
        return h, (h.view(shape), m.view(shape))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.hidden_channels}, num_dims={self.num_dims}"
            + (", tied=True" if self.tied else "")
        )


class GridLSTM(LatticeLayers):
    r"""Grid LSTM over dense ``[B, C, *spatial]`` tensors.

    Applies :class:`GridLSTMCell` with ``num_dims = ndim`` on the lattice of
    the spatial dimensions, in each requested direction: cell :math:`p` reads
    :math:`(h_d, m_d)` from :math:`p - e_d` (its predecessor along dimension
    :math:`d` in the scan frame; zeros outside the grid) and outputs
    :math:`[h'_1 ; \dots ; h'_D]` (``D*H`` channels per direction).
    """ + _LAYER_DOC + r"""
    Parameters
    ----------
    input_size : int
        Input channels ``C``.
    hidden_size : int
        Hidden size ``H`` of every dimension.
    ndim : int
        Number of spatial dimensions ``D``.
    num_layers : int, default 1
    directions : int, "all" or list of int, default 1
        As :class:`~graphlstm.nn.md_lstm.MDLSTM`.
    tied : bool, default False
        One map per cell shared by its dimensions.
    dropout : float, default 0
    bias : bool, default True

    Attributes
    ----------
    cells : ModuleList of ModuleList of :class:`GridLSTMCell`
        ``cells[l][k]``: layer ``l``, ``k``-th direction; ``lin[d]`` is
        ``C + D*H -> 4H`` for ``l = 0`` and ``num_directions*D*H + D*H -> 4H``
        after.

    Shapes
    ------
    - **input:** ``[B, C, *spatial]``; optional ``sizes [B, ndim]``.
    - **output:** ``(output [B, num_directions*D*H, *spatial], (h_n, m_n))``,
      ``h_n, m_n [num_layers*num_directions, B, D*H]`` (index
      ``l*num_directions + k``): the pairs emitted by the last cell of each scan.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        ndim: int,
        num_layers: int = 1,
        directions=1,
        tied: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        ndim_ = _positive_int(ndim, "ndim")
        hidden = _positive_int(hidden_size, "hidden_size")
        super().__init__(
            input_size, hidden_size, ndim, num_layers, directions, dropout,
            lambda f: GridLSTMCell(f, hidden, ndim_, tied=tied, bias=bias),
        )
        self.tied = bool(tied)

    def forward(self, input: Tensor, sizes=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, h_n, m_n = self._run(input, sizes)
        return out, (h_n, m_n)
