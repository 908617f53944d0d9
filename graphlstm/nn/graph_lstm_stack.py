"""Stacked and bidirectional Graph LSTM, in the manner of :class:`torch.nn.LSTM`
(docs/design.md, "Stacks")."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor

from graphlstm._adjacency import edges_and_weights, is_sparse_adjacency, rescale_in_weights
from graphlstm._validation import check_node_features, check_tensor
from graphlstm.nn.graph_lstm import GraphLSTM
from graphlstm.schedule import Schedule, build_schedule

__all__ = ["GraphLSTMStack"]


class GraphLSTMStack(torch.nn.Module):
    r"""A stack of :class:`GraphLSTM` layers, optionally bidirectional, shaped
    like :class:`torch.nn.LSTM` (docs/design.md, "Stacks").

    Every layer updates every node once in the update order (see
    :class:`GraphLSTM`); with ``bidirectional=True`` a second direction, with
    its own parameters, runs the **reversed** order (``order.flip(0)``: the
    last node first). Layer :math:`l > 0` takes as input the output of layer
    :math:`l - 1`, both directions concatenated (forward first), with dropout
    in between when asked. Following Liang et al., the layers are steps of
    one recurrence: in each direction, layer :math:`l > 0` starts from the
    final :math:`(\mathbf{h}, \mathbf{m})` of layer :math:`l - 1` of that
    direction, and the caller's ``state`` starts layer 0. Both directions'
    schedules are built once per call and shared by all layers.

    Parameters
    ----------
    in_channels : int
        Size ``F`` of each node's input, or ``-1`` to infer it on the first call.
    hidden_channels : int
        Size ``H`` of the hidden state and memory.
    num_layers : int, optional
        Number of stacked layers ``L``. (default: ``1``)
    bidirectional : bool, optional
        If ``True``, add the reversed direction (``D = 2``). (default: ``False``)
    dropout : float, optional
        Dropout probability on the input of every layer but the first, during
        training only (as :class:`torch.nn.LSTM`). (default: ``0.0``)
    residual : bool, optional
        If ``True``, every layer whose input has ``D·H`` channels adds that
        input to its output (residual connections, as Liang et al.): all
        layers after the first, and the first when ``F = D·H``. The next
        layer then takes the sum. (default: ``False``)
    bias : bool, optional
        If ``False``, the layers' ``lin_x`` have no bias. (default: ``True``)

    Attributes
    ----------
    layers : ModuleList of ModuleList of GraphLSTM
        ``layers[l][d]`` is layer ``l`` of direction ``d`` (0 forward, 1
        reversed), with the parameters of :class:`GraphLSTM`: ``lin_x`` is
        ``[4H, F]`` for ``l = 0`` and ``[4H, D·H]`` otherwise (rows
        ``u, f, o, c``); ``lin_h`` ``[4H, H]``; ``lin_n`` ``[3H, H]``;
        ``lin_fn`` ``[H, H]``.

    Inputs: ``x, edge_index, edge_weight, order | score | schedule, state``
        - **x** ``[N, F]``: node features.
        - **edge_index** ``[2, E]`` (or an ``EdgeIndex``, or a sparse
          adjacency ``[N, N]`` read as PyG's ``adj_t``, see :class:`GraphLSTM`).
        - **edge_weight** ``[E]``, optional: non-negative edge weights (docs/design.md,
          "Edge weights").
        - **order** ``[N]`` (a permutation) or **score** ``[N]`` (higher
          first), optional: the forward order; default the index order.
        - **schedule**, optional instead of ``order``/``score``: a
          :class:`~graphlstm.schedule.Schedule` of the forward order, or the
          tuple of one per direction from :meth:`schedules`.
        - **state** ``(h_0, m_0)``, optional: each ``[D, N, H]``, the initial
          state of layer 0 of every direction; zeros if omitted.

    Outputs: ``out, (h_n, m_n)``
        - **out** ``[N, D·H]``: the last layer's output (directions
          concatenated, forward first; plus its input when ``residual``).
        - **h_n**, **m_n** ``[L·D, N, H]``: the final state of every layer
          and direction, at index ``l·D + d`` (as in :class:`torch.nn.LSTM`).

    Example
    -------
    >>> import torch
    >>> x = torch.randn(5, 16)
    >>> edge_index = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    >>> confidence = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2])
    >>> stack = GraphLSTMStack(16, 32, num_layers=2, bidirectional=True)
    >>> out, (h_n, m_n) = stack(x, edge_index, score=confidence)
    >>> tuple(out.shape), tuple(h_n.shape)   # [N, 2 * 32], [2 layers * 2 directions, N, 32]
    ((5, 64), (4, 5, 32))
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"'num_layers' must be a positive int, got {num_layers!r}")
        for name, flag in (("bidirectional", bidirectional), ("residual", residual),
                           ("bias", bias)):
            if not isinstance(flag, bool):
                raise TypeError(f"'{name}' must be a bool, got {flag!r}")
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0.0 <= float(dropout) <= 1.0):
            raise ValueError(f"'dropout' must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers, but num_layers=1: it does nothing",
                stacklevel=2,
            )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.residual = residual
        width = self.num_directions * hidden_channels
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList(
                GraphLSTM(in_channels if layer == 0 else width, hidden_channels, bias=bias)
                for _ in range(self.num_directions)
            )
            for layer in range(num_layers)
        )

    def reset_parameters(self) -> None:
        for directions in self.layers:
            for layer in directions:
                layer.reset_parameters()

    def schedules(
        self,
        edge_index: Adj,
        num_nodes: int,
        order: OptTensor = None,
        score: OptTensor = None,
    ) -> tuple[Schedule, ...]:
        """One :class:`~graphlstm.schedule.Schedule` per direction (the forward
        order, then its reverse); pass them back as ``schedule=`` to share them
        across calls."""
        if is_sparse_adjacency(edge_index):
            edge_index, _ = edges_and_weights(edge_index, None, num_nodes)
        forward = build_schedule(edge_index, num_nodes, order=order, score=score)
        if not self.bidirectional:
            return (forward,)
        return forward, build_schedule(edge_index, num_nodes, order=forward.order.flip(0))

    # Validation and schedules read values: outside a torch.compile'd graph (see
    # GraphLSTM._prepare), once for all layers.
    @torch.compiler.disable
    def _prepare(self, x, edge_index, edge_weight, order, score, schedule):
        x = check_node_features(x, None, None, "x")
        num_nodes = x.size(0)
        if edge_weight is not None or is_sparse_adjacency(edge_index):
            edge_index, edge_weight = edges_and_weights(edge_index, edge_weight, num_nodes)
        if edge_weight is not None:
            # Once for all layers (each rescales again, by 1 now): the layers'
            # gradients in the weights add up before the one division by the
            # per-node scale, which overflows only where the true gradient does.
            receivers = self.layers[0][0]._in_flow(edge_index, num_nodes)
            edge_weight = rescale_in_weights(receivers, edge_weight, num_nodes, x.dtype)
        schedules = self._direction_schedules(edge_index, num_nodes, order, score, schedule)
        return edge_index, edge_weight, schedules

    def _direction_schedules(self, edge_index, num_nodes, order, score, schedule):
        if schedule is None:
            return self.schedules(edge_index, num_nodes, order=order, score=score)
        if order is not None or score is not None:
            raise ValueError("give either 'schedule' or 'order'/'score', not both")
        if isinstance(schedule, Schedule):
            schedule.check_graph(num_nodes, check_tensor(edge_index, "edge_index"))
            if not self.bidirectional:
                return (schedule,)
            order = schedule.order.to(edge_index.device)
            return schedule, build_schedule(edge_index, num_nodes, order=order.flip(0))
        if (not isinstance(schedule, Sequence) or len(schedule) != self.num_directions
                or not all(isinstance(s, Schedule) for s in schedule)):
            raise TypeError(
                f"'schedule' must be a Schedule or a sequence of {self.num_directions} "
                f"Schedules (one per direction, from schedules()), got {schedule!r}"
            )
        if self.bidirectional and not torch.equal(
            schedule[1].order.cpu(), schedule[0].order.cpu().flip(0)
        ):
            raise ValueError(
                "'schedule[1]' must run the reverse of the order of 'schedule[0]' "
                "(use schedules())"
            )
        return tuple(schedule)

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_weight: OptTensor = None,
        order: OptTensor = None,
        score: OptTensor = None,
        state: tuple[Tensor, Tensor] | None = None,
        schedule: Schedule | Sequence[Schedule] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run every layer and direction; see the class docstring for the shapes."""
        edge_index, edge_weight, schedules = self._prepare(x, edge_index, edge_weight, order,
                                                           score, schedule)
        num_nodes, hidden, dirs = x.size(0), self.hidden_channels, self.num_directions

        if state is not None:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"'state' must be a tuple (h_0, m_0) of two [{dirs}, N, H] "
                                "tensors")
            for name, tensor in zip(("state[0] (h_0)", "state[1] (m_0)"), state, strict=True):
                if not isinstance(tensor, Tensor) or tuple(tensor.shape) != (
                    dirs, num_nodes, hidden
                ):
                    shape = list(tensor.shape) if isinstance(tensor, Tensor) else tensor
                    raise ValueError(
                        f"'{name}' must have shape [num_directions, N, H] = "
                        f"{[dirs, num_nodes, hidden]}, got {shape}"
                    )
            states = [(state[0][d], state[1][d]) for d in range(dirs)]
        else:
            states = [None] * dirs

        h_n, m_n = [], []
        inputs = x
        for index, directions in enumerate(self.layers):
            if index > 0 and self.dropout > 0:
                inputs = F.dropout(inputs, self.dropout, self.training)
            outs = []
            for d, layer in enumerate(directions):
                out, states[d] = layer(inputs, edge_index, edge_weight, state=states[d],
                                       schedule=schedules[d])
                outs.append(out)
                h_n.append(states[d][0])
                m_n.append(states[d][1])
            out = outs[0] if dirs == 1 else torch.cat(outs, dim=1)
            if self.residual and inputs.size(1) == out.size(1):
                out = out + inputs
            inputs = out
        return inputs, (torch.stack(h_n), torch.stack(m_n))

    def __repr__(self) -> str:
        extra = f", num_layers={self.num_layers}"
        if self.bidirectional:
            extra += ", bidirectional=True"
        if self.dropout:
            extra += f", dropout={self.dropout}"
        if self.residual:
            extra += ", residual=True"
        return f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}{extra})"
