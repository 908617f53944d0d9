r"""Grid LSTM (Kalchbrenner, Danihelka & Graves 2015) as a lattice recurrence.

Every node takes one ``(h_d, m_d)`` pair from its predecessor along each
dimension and emits one pair per dimension, which travels on along the
edges of that dimension. :class:`GridLSTMCell` runs on any typed graph in a
given order; :class:`GridLSTM` runs it on dense ``[B, C, *spatial]`` tensors,
stacked and in several directions, by the anti-diagonal wavefront shared with
:class:`~graphlstm.nn.md_lstm.MDLSTM`. Both take the paper's two extensions
(§3.4-3.5): a *priority* dimension, computed after the others from their new
outputs, and *non-LSTM* dimensions, plain feed-forward maps without a memory.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from graphlstm.nn.md_lstm import _LAYER_DOC, _uniform_reset
from graphlstm.nn.wavefront.gates import _NON_LSTM_ACTIVATIONS, GridLSTMKernel
from graphlstm.nn.wavefront.layers import LatticeCell, LatticeLayers, _positive_int

__all__ = ["GridLSTMCell", "GridLSTM"]


def _check_priority(priority, ndim: int) -> int | None:
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
        raise TypeError(f"'priority' must be None or an int, got {type(priority).__name__}")
    if not 0 <= priority < ndim:
        raise ValueError(f"'priority' must be in 0..{ndim - 1} (num_dims={ndim}), got {priority}")
    return int(priority)


def _check_non_lstm(non_lstm, ndim: int) -> tuple[int, ...]:
    if isinstance(non_lstm, (str, bytes, Tensor)) or not isinstance(non_lstm, Iterable):
        raise TypeError(
            "'non_lstm' must be a collection of dimension indices, e.g. (0,) or [0, 2], "
            f"got {type(non_lstm).__name__}"
        )
    dims = list(non_lstm)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"'non_lstm' must hold ints, got {type(d).__name__} ({d!r})")
        if not 0 <= d < ndim:
            raise ValueError(f"'non_lstm' must hold dimensions in 0..{ndim - 1}, got {d}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"'non_lstm' must not repeat a dimension, got {dims}")
    return tuple(sorted(int(d) for d in dims))


def _check_activation(activation) -> str:
    if not isinstance(activation, str):
        raise TypeError(
            f"'non_lstm_activation' must be a str, got {type(activation).__name__}"
        )
    if activation not in _NON_LSTM_ACTIVATIONS:
        raise ValueError(
            f"'non_lstm_activation' must be one of {', '.join(map(repr, _NON_LSTM_ACTIVATIONS))}, "
            f"got {activation!r}"
        )
    return activation


class GridLSTMCell(LatticeCell):
    r"""The Grid LSTM block on a typed graph (docs/design.md, "Grid LSTM").

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

    **Priority dimension** (paper §3.5, ``priority=p``): the dimensions
    :math:`d \ne p` are computed first, as above; dimension :math:`p` then
    reads their new outputs instead of their inputs,

    .. math::
        H'_p = [x_i ; \tilde h_1 ; \dots ; \tilde h_D], \qquad
        \tilde h_d = h'_d \ (d \ne p), \quad \tilde h_p = \hat h_p,

    and :math:`(h'_p, m'_p)` follow from :math:`H'_p` and :math:`\hat m_p`
    by the same formulas (and the same map shapes).

    **Non-LSTM dimensions** (paper §3.4, ``non_lstm``): dimension :math:`d`
    becomes a feed-forward layer, :math:`h'_d = \alpha(V_d H + b_d)` with
    :math:`\alpha` = ``non_lstm_activation``. It has no memory: only
    :math:`h'_d` travels along edges of type :math:`d`, and its memory slot
    :math:`m'_d` is zero (in the returned ``m`` too). A non-LSTM priority
    dimension reads :math:`H'_p`.

    Parameters
    ----------
    in_channels : int
        Input size :math:`F`.
    hidden_channels : int
        Hidden size :math:`H` of every dimension.
    num_dims : int
        Number of dimensions (edge types) :math:`D`.
    tied : bool, default False
        Share one map among the dimensions of each kind (LSTM, non-LSTM).
        Tied non-LSTM dimensions then all emit the same :math:`h'` (bar a
        non-LSTM priority dimension, which reads :math:`H'_p`).
    bias : bool, default True
    priority : int or None, default None
        The prioritised dimension :math:`p` in ``0..D-1``; ``None``: all
        dimensions in parallel. With ``D = 1`` it changes nothing.
    non_lstm : collection of int, default ()
        The non-LSTM dimensions, distinct, in ``0..D-1``.
    non_lstm_activation : {"tanh", "identity", "relu"}, default "tanh"
        :math:`\alpha` of the non-LSTM dimensions.

    Attributes
    ----------
    lin : torch.nn.ModuleList of torch.nn.Linear
        Untied, ``D`` maps: ``lin[d]`` is :math:`F + D H \to 4H` (rows
        ``u, f, o, c``, ``H`` each) for an LSTM dimension and
        :math:`F + D H \to H` (:math:`V_d`) for a non-LSTM one. Tied, one map
        per kind present, the LSTM one (``4H``) first, then the non-LSTM one
        (``H``). Every weight is ``[rows, F + D*H]``, its columns reading
        ``[x ; h_1 ; ... ; h_D]`` (``[x ; h~_1 ; ... ; h~_D]`` for the priority
        dimension), with a bias if ``bias``. Initialised from
        :math:`\mathcal U(-1/\sqrt H, 1/\sqrt H)`.

    Shapes
    ------
    - **input:** ``x [N, F]``, ``edge_index [2, E]``, ``edge_type [E]`` in
      ``0..D-1``, and ``order [N]`` / ``score [N]`` / ``schedule`` as for
      :class:`~graphlstm.nn.md_lstm.MDLSTMCell`.
    - **output:** ``(out [N, D*H], (h [N, D, H], m [N, D, H]))`` where
      ``out = [h'_1; ...; h'_D]`` (``m[:, d] = 0`` for a non-LSTM ``d``).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_dims: int,
        tied: bool = False,
        bias: bool = True,
        priority: int | None = None,
        non_lstm=(),
        non_lstm_activation: str = "tanh",
    ):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.hidden_channels = h = _positive_int(hidden_channels, "hidden_channels")
        self.num_dims = d = _positive_int(num_dims, "num_dims")
        self.tied = bool(tied)
        self.priority = _check_priority(priority, d)
        self.non_lstm = _check_non_lstm(non_lstm, d)
        self.non_lstm_activation = _check_activation(non_lstm_activation)
        self.slots = d
        self.kernel = GridLSTMKernel(
            h, d, self.tied, self.priority, self.non_lstm, self.non_lstm_activation
        )
        self.lin = nn.ModuleList(
            nn.Linear(self.in_channels + d * h, rows, bias=bias) for rows in self.kernel.map_widths
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_reset(self, self.hidden_channels)

    def weights(self) -> tuple[Tensor, Tensor | None]:
        # Gate columns in the kernel's order; a tied priority dimension reads its
        # map a second time, and autograd sums the two gradients.
        lins = [self.lin[i] for i in self.kernel.column_maps]
        w = torch.cat([lin.weight for lin in lins]).t()
        b = None if lins[0].bias is None else torch.cat([lin.bias for lin in lins])
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
        return f"{self.in_channels}, {self.hidden_channels}, num_dims={self.num_dims}" + (
            _options_repr(self)
        )


def _options_repr(module) -> str:
    s = ", tied=True" if module.tied else ""
    if module.priority is not None:
        s += f", priority={module.priority}"
    if module.non_lstm:
        s += f", non_lstm={module.non_lstm}"
        if module.non_lstm_activation != "tanh":
            s += f", non_lstm_activation={module.non_lstm_activation!r}"
    return s


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
        One map per cell shared by its dimensions (one per kind with
        ``non_lstm``).
    dropout : float, default 0
    bias : bool, default True
    priority : int or None, default None
        The prioritised dimension of every cell (see :class:`GridLSTMCell`),
        in ``0..ndim-1``. Dimensions are those of the input: ``0`` is the
        first spatial dimension, whichever way a direction scans it.
    non_lstm : collection of int, default ()
        The non-LSTM dimensions of every cell.
    non_lstm_activation : {"tanh", "identity", "relu"}, default "tanh"

    Attributes
    ----------
    cells : ModuleList of ModuleList of :class:`GridLSTMCell`
        ``cells[l][k]``: layer ``l``, ``k``-th direction; ``lin[d]`` is
        ``C + D*H -> 4H`` (``-> H`` for a non-LSTM ``d``) for ``l = 0`` and
        ``num_directions*D*H + D*H -> 4H`` (``H``) after.

    Shapes
    ------
    - **input:** ``[B, C, *spatial]``; optional ``sizes [B, ndim]``.
    - **output:** ``(output [B, num_directions*D*H, *spatial], (h_n, m_n))``,
      ``h_n, m_n [num_layers*num_directions, B, D*H]`` (index
      ``l*num_directions + k``): the pairs emitted by the last cell of each scan
      (the memory of a non-LSTM dimension is zero).
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
        priority: int | None = None,
        non_lstm=(),
        non_lstm_activation: str = "tanh",
    ):
        ndim_ = _positive_int(ndim, "ndim")
        hidden = _positive_int(hidden_size, "hidden_size")
        # Checked once here, so that a bad option fails before any cell is built.
        priority = _check_priority(priority, ndim_)
        non_lstm = _check_non_lstm(non_lstm, ndim_)
        non_lstm_activation = _check_activation(non_lstm_activation)
        super().__init__(
            input_size, hidden_size, ndim, num_layers, directions, dropout,
            lambda f: GridLSTMCell(
                f, hidden, ndim_, tied=tied, bias=bias, priority=priority,
                non_lstm=non_lstm, non_lstm_activation=non_lstm_activation,
            ),
        )
        self.tied = bool(tied)
        self.priority, self.non_lstm = priority, non_lstm
        self.non_lstm_activation = non_lstm_activation

    def forward(self, input: Tensor, sizes=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, h_n, m_n = self._run(input, sizes)
        return out, (h_n, m_n)

    def extra_repr(self) -> str:
        return super().extra_repr() + _options_repr(self)
