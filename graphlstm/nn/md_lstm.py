r"""MD-LSTM and MD-RNN (Graves, Fernández & Schmidhuber 2007) as lattice recurrences.

Cells (:class:`MDLSTMCell`, :class:`MDRNNCell`) run on any graph whose edges
carry a type (a dimension), in a given update order; on a lattice built by
:func:`graphlstm.lattice_graph` they are the classical multi-dimensional
recurrences. Layers (:class:`MDLSTM`, :class:`MDRNN`) run the same cells on
dense ``[B, C, *spatial]`` tensors, stacked and in several scan directions,
by an anti-diagonal wavefront; with ``ndim=1`` they are ``torch.nn.LSTM`` /
``torch.nn.RNN`` (see :meth:`MDLSTM.from_torch`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphlstm.nn.wavefront.gates import MDLSTMKernel, MDRNNKernel
from graphlstm.nn.wavefront.layers import LatticeCell, LatticeLayers, _positive_int

__all__ = ["MDLSTMCell", "MDRNNCell", "MDLSTM", "MDRNN"]


def _uniform_reset(module: nn.Module, hidden: int) -> None:
    # torch.nn.LSTM / RNN initialisation, so that D = 1 starts where torch does.
    bound = 1.0 / math.sqrt(hidden)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


class _TypedCell(LatticeCell):
    """What MD-LSTM and MD-RNN cells share: ``lin_x`` and one ``lin_h[d]`` per edge type."""

    @property
    def num_edge_types(self) -> int:
        return self.num_dims

    def reset_parameters(self) -> None:
        _uniform_reset(self, self.hidden_channels)

    def weights(self) -> tuple[Tensor, Tensor | None]:
        w = torch.cat([self.lin_x.weight, *(lin.weight for lin in self.lin_h)], dim=1)
        return w.t(), self.lin_x.bias


class MDLSTMCell(_TypedCell):
    r"""The MD-LSTM cell on a typed graph (docs/design.md, "MD-LSTM").

    Every edge :math:`j \to i` carries a type :math:`d(j,i) \in 0..D-1`, its
    dimension. Nodes are updated in the given order; only **visited**
    in-neighbours (predecessors, earlier in the order) count, unvisited edges
    are ignored. With :math:`\hat h_{i,d}, \hat c_{i,d}` the sums of the new
    states of the predecessors of type :math:`d` (zero if there is none):

    .. math::
        a_i &= W x_i + \sum_d U_d \hat h_{i,d} + b
            \qquad \text{rows } i, f_1, \dots, f_D, g, o \\
        c'_i &= \sigma(a^i) \odot \tanh(a^g) + \sum_d \sigma(a^{f_d}) \odot \hat c_{i,d} \\
        h'_i &= \sigma(a^o) \odot \tanh(c'_i)

    On a lattice a node has at most one predecessor per dimension, and this
    is Graves et al.'s MD-LSTM. On a general graph several predecessors of
    one type are **summed** (states and memories), and share the forget gate
    of that type. With :math:`D = 1` it is the ``torch.nn.LSTM`` cell.

    With ``stable=True``, the variant of Voigtlaender et al. (2016) that
    keeps the memory a convex combination of the predecessors':

    .. math::
        a_i &= \dots \qquad \text{rows } i, f, \lambda_1, \dots, \lambda_D, g, o \\
        c'_i &= \sigma(a^f) \odot \sum_d \lambda_d \odot \hat c_{i,d}
            + \sigma(a^i) \odot \tanh(a^g),
        \qquad \lambda = \operatorname{softmax}_d(a^{\lambda_1}, \dots, a^{\lambda_D})

    (per hidden unit; for :math:`D = 2` this is :math:`\lambda, 1-\lambda` with
    :math:`\lambda = \sigma(a^{\lambda_1} - a^{\lambda_2})`). Since
    :math:`|c'| \le \sigma(a^f) \max_d |\hat c_d| + 1`, on a lattice
    :math:`|c'_i| \le 1 + \mathrm{level}(i)` (the coordinate sum in the scan
    frame) and :math:`|c'| \le 1/(1 - \max \sigma(a^f))`, whereas the plain
    sum can grow with the number of lattice paths, exponentially in the
    grid size.

    Parameters
    ----------
    in_channels : int
        Input size :math:`F`.
    hidden_channels : int
        Hidden size :math:`H`.
    num_edge_types : int
        Number of dimensions :math:`D`.
    stable : bool, default False
        Use the stable (softmax-weighted) memory.
    bias : bool, default True
        Give ``lin_x`` a bias.

    Attributes
    ----------
    lin_x : torch.nn.Linear
        :math:`F \to (3+D)H` (``(4+D)H`` if stable), with bias; weight
        ``[(3+D)H, F]``, rows ``i, f_1..f_D, g, o`` (stable: ``i, f,
        l_1..l_D, g, o``), ``H`` rows each.
    lin_h : torch.nn.ModuleList of D torch.nn.Linear
        ``lin_h[d]``: :math:`H \to (3+D)H` (``(4+D)H``), no bias, same row
        order; :math:`U_d`, applied to the type-:math:`d` predecessors.

    All weights and the bias are initialised from
    :math:`\mathcal U(-1/\sqrt H, 1/\sqrt H)`, as in ``torch.nn.LSTM``.

    Shapes
    ------
    - **input:** ``x [N, F]``, ``edge_index [2, E]``, ``edge_type [E]``,
      optional ``order [N]`` (permutation) or ``score [N]`` (higher first) or
      a prebuilt ``schedule`` (:func:`graphlstm.schedule.build_schedule`).
      Without any, nodes are updated in index order (which is the raster
      order of :func:`~graphlstm.lattice_graph` for direction 0 only: pass
      its ``order`` otherwise).
    - **output:** ``(h [N, H], (h [N, H], c [N, H]))``: the new states.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_edge_types: int,
        stable: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.hidden_channels = h = _positive_int(hidden_channels, "hidden_channels")
        self.num_dims = d = _positive_int(num_edge_types, "num_edge_types")
        self.stable = bool(stable)
        self.slots = 1
        self.kernel = MDLSTMKernel(h, d, self.stable)
        gates = self.kernel.num_gates
        self.lin_x = nn.Linear(self.in_channels, gates, bias=bias)
        self.lin_h = nn.ModuleList(nn.Linear(h, gates, bias=False) for _ in range(d))
        self.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor,
        order: Tensor | None = None,
        score: Tensor | None = None,
        schedule=None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = self._graph_forward(x, edge_index, edge_type, order, score, schedule)
        return h, (h, c)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.hidden_channels}, num_edge_types={self.num_dims}"
            + (", stable=True" if self.stable else "")
        )


class MDRNNCell(_TypedCell):
    r"""The MD-RNN cell on a typed graph (docs/design.md, "MD-RNN").

    .. math::
        h'_i = \phi\Big(W x_i + \sum_d U_d \hat h_{i,d} + b\Big)

    with :math:`\hat h_{i,d}` the sum of the new states of the visited
    in-neighbours of type :math:`d` (zero if none) and :math:`\phi` = ``tanh``
    (or ``relu``). With :math:`D = 1` it is the ``torch.nn.RNN`` cell.

    Parameters
    ----------
    in_channels, hidden_channels, num_edge_types : int
        :math:`F`, :math:`H`, :math:`D`.
    nonlinearity : {"tanh", "relu"}, default "tanh"
    bias : bool, default True

    Attributes
    ----------
    lin_x : torch.nn.Linear
        :math:`F \to H`, with bias (weight ``[H, F]``).
    lin_h : torch.nn.ModuleList of D torch.nn.Linear
        ``lin_h[d]``: :math:`H \to H`, no bias (weight ``[H, H]``), :math:`U_d`.

    Shapes
    ------
    - **input:** as :class:`MDLSTMCell`.
    - **output:** ``(h [N, H], h [N, H])``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_edge_types: int,
        nonlinearity: str = "tanh",
        bias: bool = True,
    ):
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"'nonlinearity' must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.hidden_channels = h = _positive_int(hidden_channels, "hidden_channels")
        self.num_dims = d = _positive_int(num_edge_types, "num_edge_types")
        self.nonlinearity = nonlinearity
        self.slots = 1
        self.kernel = MDRNNKernel(h, d, nonlinearity)
        self.lin_x = nn.Linear(self.in_channels, h, bias=bias)
        self.lin_h = nn.ModuleList(nn.Linear(h, h, bias=False) for _ in range(d))
        self.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor,
        order: Tensor | None = None,
        score: Tensor | None = None,
        schedule=None,
    ) -> tuple[Tensor, Tensor]:
        h, _ = self._graph_forward(x, edge_index, edge_type, order, score, schedule)
        return h, h

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.hidden_channels}, num_edge_types={self.num_dims}"
        return s + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")


_LAYER_DOC = r"""

    Input ``[B, C, *spatial]`` (channels first, as convolutions; for
    ``ndim=1`` that is ``[B, C, T]``, the transpose of a ``batch_first``
    ``torch.nn`` input). Each requested scan **direction** ``k`` (bit ``d``
    set = dimension ``d`` scanned backwards; docs/design.md, "Lattices and
    directions") runs its own cell; their
    outputs are concatenated in the order of :attr:`directions`, and each
    layer feeds the concatenation to the next, with dropout in between while
    training (as ``torch.nn.LSTM``).

    The layers run an anti-diagonal wavefront: all cells with one coordinate
    sum (in each direction's frame) are updated together, one batched GEMM
    for all directions and samples per step, ``sum(n_d - 1) + 1`` sequential
    steps (``H + W - 1`` for an image). It gives the numbers of the graph path
    (the cells on :func:`~graphlstm.lattice_graph` in raster order). With
    autograd on, the activated gates of every cell and direction are kept for
    the backward (as ``torch.nn.LSTM`` keeps its gates); under ``no_grad``
    only the states are stored.

    **Batches of different sizes.** Pad every sample at the *end* of each
    dimension (bottom/right) to a common shape and pass ``sizes``
    (``[B, ndim]`` ints, each sample's own extent). Every direction then scans
    each sample from that sample's own starting corner (a dimension scanned
    backwards starts at ``sizes[b, d] - 1``, not at the padded end), so padding
    never reaches a valid cell, and the outputs equal running each sample
    alone; outputs at padded positions are zero, and the final states are
    those of each sample's own last cell. For ``ndim=1`` this is exactly
    ``torch.nn.utils.rnn.pack_padded_sequence``.
"""


def _check_hx(hx, name, layers, batch, hidden, ndim, like: Tensor) -> Tensor:
    if ndim != 1:
        raise ValueError(
            f"'{name}' (initial states) is only defined for ndim=1; a {ndim}-D lattice "
            f"starts from zero states at its borders"
        )
    if not isinstance(hx, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(hx).__name__}")
    if hx.shape != (layers, batch, hidden):
        raise ValueError(
            f"'{name}' must have shape [num_layers*num_directions, batch, hidden_size] = "
            f"{[layers, batch, hidden]}, got {list(hx.shape)}"
        )
    return hx.to(like.dtype).contiguous()


class MDLSTM(LatticeLayers):
    r"""Multi-dimensional LSTM over dense ``[B, C, *spatial]`` tensors.

    Applies :class:`MDLSTMCell` with ``num_edge_types = ndim`` on the lattice
    of the spatial dimensions, in each requested direction: for every cell
    :math:`p` (in the scan frame, :math:`p - e_d` its predecessor along
    dimension :math:`d`, zero state outside the grid)

    .. math::
        a_p &= W x_p + \sum_d U_d h_{p - e_d} + b \\
        c_p &= \sigma(a^i) \odot \tanh(a^g) + \sum_d \sigma(a^{f_d}) \odot c_{p-e_d} \\
        h_p &= \sigma(a^o) \odot \tanh(c_p)

    (or the stable memory of :class:`MDLSTMCell` with ``stable=True``).
    With ``ndim=1`` this is ``torch.nn.LSTM`` (see :meth:`from_torch`).
    """ + _LAYER_DOC + r"""
    Parameters
    ----------
    input_size : int
        Input channels ``C``.
    hidden_size : int
        Hidden size ``H`` per direction.
    ndim : int
        Number of spatial dimensions ``D``.
    num_layers : int, default 1
    directions : int, "all" or list of int, default 1
        An int ``n`` runs directions ``0..n-1`` (``ndim=1``, ``2``:
        bidirectional), ``"all"`` the ``2**ndim`` directions, a list those given.
    stable : bool, default False
        Use the stable memory (Voigtlaender et al. 2016).
    dropout : float, default 0
        Dropout on the outputs of every layer but the last, while training.
    bias : bool, default True

    Attributes
    ----------
    cells : ModuleList of ModuleList of :class:`MDLSTMCell`
        ``cells[l][k]``: layer ``l``, ``k``-th direction of :attr:`directions`;
        its ``lin_x`` is ``C -> (3+D)H`` for ``l = 0`` and
        ``num_directions*H -> (3+D)H`` after, ``lin_h[d]`` ``H -> (3+D)H``.
    directions : tuple of int

    Shapes
    ------
    - **input:** ``[B, C, *spatial]``, ``len(spatial) == ndim``; optional
      ``hx = (h_0, c_0)``, each ``[num_layers*num_directions, B, H]``
      (``ndim=1`` only; zeros otherwise), optional ``sizes [B, ndim]``.
    - **output:** ``(output, (h_n, c_n))``: ``output [B, num_directions*H, *spatial]``;
      ``h_n, c_n [num_layers*num_directions, B, H]``, index ``l*num_directions + k``,
      the states at the last cell of each scan (the far corner of its frame;
      for ``ndim=1`` the last step, ``t = 0`` for the backward direction).
      Like ``torch.nn.LSTM``, ``h_n`` is not batch-first whatever the layout.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        ndim: int,
        num_layers: int = 1,
        directions=1,
        stable: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        ndim_ = _positive_int(ndim, "ndim")
        hidden = _positive_int(hidden_size, "hidden_size")
        super().__init__(
            input_size, hidden_size, ndim, num_layers, directions, dropout,
            lambda f: MDLSTMCell(f, hidden, ndim_, stable=stable, bias=bias),
        )
        self.stable = bool(stable)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, sizes=None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h0 = c0 = None
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("'hx' must be a tuple (h_0, c_0)")
            layers = self.num_layers * self.num_directions
            h0, c0 = (
                _check_hx(t, n, layers, input.size(0), self.hidden_size, self.ndim, input)
                for t, n in zip(hx, ("h_0", "c_0"), strict=True)
            )
        out, h_n, c_n = self._run(input, sizes, h0, c0)
        return out, (h_n, c_n)

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> MDLSTM:
        """A 1-D :class:`MDLSTM` with the weights of a ``torch.nn.LSTM``.

        Any ``num_layers``, bidirectional or not, with or without bias; the
        cell of layer ``l``, direction ``k`` gets ``lin_x.weight =
        weight_ih_l{l}``, ``lin_x.bias = bias_ih_l{l} + bias_hh_l{l}``,
        ``lin_h[0].weight = weight_hh_l{l}`` (``_reverse`` for ``k = 1``).
        Copies, on the module's device and dtype. ``batch_first`` does not
        matter: the result takes ``[B, C, T]`` (``x.transpose(1, 2)`` of a
        batch-first input, ``x.permute(1, 2, 0)`` of a sequence-first one) and
        returns ``[B, num_directions*H, T]``. ``proj_size > 0`` is not supported.
        """
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"'module' must be a torch.nn.LSTM, got {type(module).__name__}")
        if module.proj_size:
            raise ValueError("'module' with proj_size > 0 has no MD-LSTM equivalent")
        layer = cls(
            module.input_size, module.hidden_size, 1, module.num_layers,
            2 if module.bidirectional else 1, dropout=module.dropout, bias=module.bias,
        )
        _copy_torch_rnn(layer, module)
        return layer


class MDRNN(LatticeLayers):
    r"""Multi-dimensional (Elman) RNN over dense ``[B, C, *spatial]`` tensors.

    Applies :class:`MDRNNCell` with ``num_edge_types = ndim`` in each
    requested direction:
    :math:`h_p = \phi(W x_p + \sum_d U_d h_{p - e_d} + b)`. With ``ndim=1``
    this is ``torch.nn.RNN`` (see :meth:`from_torch`).
    """ + _LAYER_DOC + r"""
    Parameters
    ----------
    input_size, hidden_size, ndim, num_layers, directions, dropout, bias
        As :class:`MDLSTM`.
    nonlinearity : {"tanh", "relu"}, default "tanh"

    Attributes
    ----------
    cells : ModuleList of ModuleList of :class:`MDRNNCell`
        ``cells[l][k]``; ``lin_x`` ``C -> H`` (``num_directions*H -> H`` after
        the first layer), ``lin_h[d]`` ``H -> H``.

    Shapes
    ------
    - **input:** ``[B, C, *spatial]``; optional ``hx = h_0``
      ``[num_layers*num_directions, B, H]`` (``ndim=1`` only); optional ``sizes``.
    - **output:** ``(output [B, num_directions*H, *spatial],
      h_n [num_layers*num_directions, B, H])``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        ndim: int,
        num_layers: int = 1,
        directions=1,
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        bias: bool = True,
    ):
        ndim_ = _positive_int(ndim, "ndim")
        hidden = _positive_int(hidden_size, "hidden_size")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"'nonlinearity' must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(
            input_size, hidden_size, ndim, num_layers, directions, dropout,
            lambda f: MDRNNCell(f, hidden, ndim_, nonlinearity=nonlinearity, bias=bias),
        )
        self.nonlinearity = nonlinearity

    def forward(
        self, input: Tensor, hx: Tensor | None = None, sizes=None
    ) -> tuple[Tensor, Tensor]:
        h0 = None
        if hx is not None:
            layers = self.num_layers * self.num_directions
            h0 = _check_hx(hx, "hx", layers, input.size(0), self.hidden_size, self.ndim, input)
        out, h_n, _ = self._run(input, sizes, h0, None)
        return out, h_n

    @classmethod
    def from_torch(cls, module: nn.RNN) -> MDRNN:
        """A 1-D :class:`MDRNN` with the weights of a ``torch.nn.RNN``.

        As :meth:`MDLSTM.from_torch`; ``nonlinearity`` is copied too.
        """
        if not isinstance(module, nn.RNN):
            raise TypeError(f"'module' must be a torch.nn.RNN, got {type(module).__name__}")
        layer = cls(
            module.input_size, module.hidden_size, 1, module.num_layers,
            2 if module.bidirectional else 1, nonlinearity=module.nonlinearity,
            dropout=module.dropout, bias=module.bias,
        )
        _copy_torch_rnn(layer, module)
        return layer


def _copy_torch_rnn(layer: LatticeLayers, module: nn.RNNBase) -> None:
    ref = next(module.parameters())
    layer.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for l, row in enumerate(layer.cells):
            for k, cell in enumerate(row):
                sfx = f"_l{l}" + ("_reverse" if k == 1 else "")
                cell.lin_x.weight.copy_(getattr(module, "weight_ih" + sfx))
                cell.lin_h[0].weight.copy_(getattr(module, "weight_hh" + sfx))
                if module.bias:
                    cell.lin_x.bias.copy_(
                        getattr(module, "bias_ih" + sfx) + getattr(module, "bias_hh" + sfx)
                    )
