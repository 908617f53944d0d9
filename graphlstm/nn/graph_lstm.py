"""The Graph LSTM layer of Liang et al., "Semantic Object Parsing with Graph LSTM" (ECCV 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear, is_uninitialized_parameter
from torch_geometric.typing import Adj, OptTensor

from graphlstm._adjacency import edges_and_weights, is_sparse_adjacency, rescale_in_weights
from graphlstm._validation import (
    check_edge_index,
    check_edge_weight,
    check_node_features,
    check_tensor,
)
from graphlstm.functional import (
    graph_lstm_gated_recurrence,
    graph_lstm_recurrence,
    triton_row_group,
)
from graphlstm.schedule import Schedule, build_schedule

__all__ = ["GraphLSTM"]


class GraphLSTM(MessagePassing):
    r"""The Graph LSTM layer from `"Semantic Object Parsing with Graph LSTM"
    <https://arxiv.org/abs/1603.07063>`_ (Liang et al., ECCV 2016).

    Every node is updated once, in an update order (a permutation, or per-node
    scores with the highest first). Node :math:`i` sees its input
    :math:`\mathbf{x}_i`, its previous state :math:`(\mathbf{h}_i, \mathbf{m}_i)`
    and its :math:`d_i` in-neighbours :math:`j \in \mathcal{N}(i)`, whose state
    :math:`(\hat{\mathbf{h}}_j, \hat{\mathbf{m}}_j)` is the **new** one if
    :math:`j` was updated before :math:`i` and the **previous** one otherwise:

    .. math::
        \bar{\mathbf{h}}_i &= \frac{1}{d_i} \sum_{j \in \mathcal{N}(i)} \hat{\mathbf{h}}_j \\
        \mathbf{g}^u_i &= \sigma(\mathbf{W}^u \mathbf{x}_i + \mathbf{U}^u \mathbf{h}_i
            + \mathbf{U}^{un} \bar{\mathbf{h}}_i + \mathbf{b}^u) \\
        \bar{\mathbf{g}}^f_{ij} &= \sigma(\mathbf{W}^f \mathbf{x}_i
            + \mathbf{U}^{fn} \mathbf{h}_j + \mathbf{b}^f) \\
        \mathbf{g}^f_i &= \sigma(\mathbf{W}^f \mathbf{x}_i + \mathbf{U}^f \mathbf{h}_i
            + \mathbf{b}^f) \\
        \mathbf{g}^o_i &= \sigma(\mathbf{W}^o \mathbf{x}_i + \mathbf{U}^o \mathbf{h}_i
            + \mathbf{U}^{on} \bar{\mathbf{h}}_i + \mathbf{b}^o) \\
        \mathbf{g}^c_i &= \tanh(\mathbf{W}^c \mathbf{x}_i + \mathbf{U}^c \mathbf{h}_i
            + \mathbf{U}^{cn} \bar{\mathbf{h}}_i + \mathbf{b}^c) \\
        \mathbf{m}'_i &= \frac{1}{d_i} \sum_{j \in \mathcal{N}(i)}
            \bar{\mathbf{g}}^f_{ij} \odot \hat{\mathbf{m}}_j
            + \mathbf{g}^f_i \odot \mathbf{m}_i + \mathbf{g}^u_i \odot \mathbf{g}^c_i \\
        \mathbf{h}'_i &= \tanh(\mathbf{g}^o_i \odot \mathbf{m}'_i)

    where the neighbour forget gate :math:`\bar{\mathbf{g}}^f_{ij}` reads the
    **previous** :math:`\mathbf{h}_j`, and a node without in-neighbours has
    :math:`\bar{\mathbf{h}}_i = 0` and no neighbour memory term.

    **Edge weights** (``edge_weight``, docs/design.md, "Edge weights"): with a non-negative weight
    :math:`w_{ji}` per edge, both means become weighted means with
    :math:`s_i = \sum_{j \in \mathcal{N}(i)} w_{ji}`:

    .. math::
        \bar{\mathbf{h}}_i = \frac{1}{s_i} \sum_{j} w_{ji} \hat{\mathbf{h}}_j,
        \qquad
        \mathbf{m}'_i = \frac{1}{s_i} \sum_{j} w_{ji} \, \bar{\mathbf{g}}^f_{ij}
            \odot \hat{\mathbf{m}}_j
            + \mathbf{g}^f_i \odot \mathbf{m}_i + \mathbf{g}^u_i \odot \mathbf{g}^c_i

    and a node with :math:`s_i = 0` has no neighbour term (as with
    :math:`d_i = 0`; no gradient reaches its in-edges' weights, where the
    weighted mean jumps). All weights 1 give the unweighted layer, a zero
    weight removes its edge. Gradients flow into ``edge_weight``.

    **Explainers**: in PyG's explain mode
    (:func:`torch_geometric.explain.algorithm.utils.set_masks`, used by
    :class:`~torch_geometric.explain.Explainer`), the edge mask (after a
    sigmoid when the explainer asks for one) multiplies the weights of all
    edges, visited or not, so explainers such as
    :class:`~torch_geometric.explain.algorithm.GNNExplainer` get a gradient for
    every edge that matters.

    Edges follow PyG: ``edge_index[0]`` sends to ``edge_index[1]``; an
    undirected graph holds both directions. Self-loops are ignored (a node is
    neither before nor after itself); duplicate edges count with their
    multiplicity in :math:`d_i` and in both sums, like ``aggr="mean"`` (with
    weights: each copy adds its weight). ``edge_index`` may also be any PyG
    ``Adj``: an ``EdgeIndex``, or a sparse adjacency matrix ``[N, N]``
    (``torch.sparse`` COO, CSR or CSC, or a ``torch_sparse.SparseTensor`` when
    that package is installed) read like PyG's convolutions read ``adj_t``:
    entry ``(i, j)`` is the edge ``j -> i``, its value the edge weight.

    The result equals the sequential per-node pass exactly, but is computed
    level by level (see :mod:`graphlstm.schedule`): the cost of the recurrent
    part grows with the number of levels, not of nodes. All node projections
    are whole-graph GEMMs; the neighbours run in the inner loop of
    :mod:`graphlstm.functional`, with a hand-written backward whose memory is
    :math:`O(N \cdot H)`. With a previous state, the forget gates and the
    unvisited neighbours (read in their previous state) are computed inside
    that loop (:func:`~graphlstm.functional.graph_lstm_gated_recurrence`), which
    reads the two projections in node order, so no per-edge ``[E, H]`` tensor
    and no permuted copy is made. Without a previous state,
    every neighbour forget gate of node :math:`i` is
    :math:`\sigma(\mathbf{W}^f \mathbf{x}_i + \mathbf{b}^f)`, so the visited
    neighbours are summed first and weighted once per node: no per-edge tensor
    is made at all.

    Parameters
    ----------
    in_channels : int
        Size ``F`` of each node's input, or ``-1`` to infer it on the first call.
    hidden_channels : int
        Size ``H`` of the hidden state and memory.
    bias : bool, optional
        If ``False``, ``lin_x`` has no bias. (default: ``True``)
    return_state : bool, optional
        If ``False``, :meth:`forward` returns ``out`` alone, a tensor as other PyG
        convolutions return, e.g. for :func:`torch_geometric.nn.to_hetero`, which
        sums the outputs of several relations into one node type.
        (default: ``True``: ``out, (h, m)``)
    **kwargs : optional
        Additional arguments of :class:`torch_geometric.nn.conv.MessagePassing`.
        ``flow="target_to_source"`` reads ``edge_index[1]`` as the sender (for
        an ``edge_index``, an ``EdgeIndex`` and a sparse ``adj_t`` alike: the
        edges are reversed); ``aggr`` must stay ``"add"``.

    Notes
    -----
    TorchScript (``torch.jit.script``) is not supported and raises a clear
    error; ``torch.compile`` is (see docs/compile.md): the schedule is built
    outside the compiled graph and the level loops are PyTorch operators
    (:mod:`graphlstm._ops`).

    Attributes
    ----------
    lin_x : Linear ``F -> 4H``, with bias
        Rows ``[W^u; W^f; W^o; W^c]`` and bias ``[b^u; b^f; b^o; b^c]``.
    lin_h : Linear ``H -> 4H``, no bias
        Rows ``[U^u; U^f; U^o; U^c]`` (the node's own previous state).
    lin_n : Linear ``H -> 3H``, no bias
        Rows ``[U^{un}; U^{on}; U^{cn}]`` (the neighbour mean).
    lin_fn : Linear ``H -> H``, no bias
        ``U^{fn}`` (the neighbour forget gates).

    All weights are ``[out, in]`` as in :class:`torch.nn.Linear`.

    Shapes
    ------
    - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)`
      (or a sparse adjacency :math:`(N, N)`), optional edge weights
      :math:`(E)`, optional order :math:`(N)` (a permutation) *or* score :math:`(N)`,
      optional state ``(h, m)`` each :math:`(N, H)`, optional ``schedule``.
    - **output:** ``out`` :math:`(N, H)` (the new ``h`` of every node) and the
      new state ``(h, m)``, each :math:`(N, H)`, as ``out, (h, m)`` in the
      convention of :class:`torch.nn.LSTM` (``out`` alone with
      ``return_state=False``).
    """

    def __init__(self, in_channels: int, hidden_channels: int, bias: bool = True,
                 return_state: bool = True, **kwargs):
        # The layer takes its own (weighted) means over visited and unvisited
        # neighbours inside the level loop; no other aggregation is offered.
        if kwargs.setdefault("aggr", "add") != "add":
            raise ValueError(f"GraphLSTM aggregates by its own mean; 'aggr' must be 'add', "
                             f"got {kwargs['aggr']!r}")
        super().__init__(**kwargs)
        if not isinstance(return_state, bool):
            raise TypeError(f"'return_state' must be a bool, got {return_state!r}")
        self.return_state = return_state
        if not isinstance(hidden_channels, int) or hidden_channels < 1:
            raise ValueError(f"'hidden_channels' must be a positive int, got {hidden_channels!r}")
        if not isinstance(in_channels, int) or (in_channels < 1 and in_channels != -1):
            raise ValueError(f"'in_channels' must be a positive int or -1, got {in_channels!r}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        h = hidden_channels
        self.lin_x = Linear(in_channels, 4 * h, bias=bias)
        self.lin_h = Linear(h, 4 * h, bias=False)
        self.lin_n = Linear(h, 3 * h, bias=False)
        self.lin_fn = Linear(h, h, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_x.reset_parameters()
        self.lin_h.reset_parameters()
        self.lin_n.reset_parameters()
        self.lin_fn.reset_parameters()

    def schedule(
        self,
        edge_index: Adj,
        num_nodes: int,
        order: Tensor | None = None,
        score: Tensor | None = None,
    ) -> Schedule:
        """The :class:`~graphlstm.schedule.Schedule` this layer would use; pass it
        back as ``schedule=`` to share it across layers and steps. ``edge_index``
        may be any ``Adj`` that :meth:`forward` takes."""
        if is_sparse_adjacency(edge_index):
            edge_index, _ = edges_and_weights(edge_index, None, num_nodes)
        edge_index = self._in_flow(edge_index, num_nodes)
        return build_schedule(edge_index, num_nodes, order=order, score=score)

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_weight: OptTensor = None,
        order: OptTensor = None,
        score: OptTensor = None,
        state: tuple[Tensor, Tensor] | None = None,
        schedule: Schedule | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Update every node once in the given order.

        Parameters
        ----------
        x : Tensor ``[N, F]``
        edge_index : LongTensor ``[2, E]``, ``EdgeIndex``, or sparse ``[N, N]``
            The edges ``edge_index[0] -> edge_index[1]``; or a sparse adjacency
            matrix (``torch.sparse`` COO/CSR/CSC, or ``torch_sparse.SparseTensor``
            when installed) in PyG's transposed ``adj_t`` convention: entry
            ``(i, j)`` is the edge ``j -> i`` and its value the edge weight.
        edge_weight : Tensor ``[E]``, optional
            Non-negative, finite weight of every edge (docs/design.md, "Edge weights"): the means
            over in-neighbours become weighted means. Default: all 1 (the
            unweighted layer). Not with a sparse ``edge_index`` (whose values
            are the weights).
        order : LongTensor ``[N]``, optional
            Permutation: ``order[k]`` is updated ``k``-th.
        score : Tensor ``[N]``, optional
            Per-node scores, higher first, ties by the smaller index
            (for instance the confidence of each superpixel).
        state : tuple of Tensor ``([N, H], [N, H])``, optional
            Previous ``(h, m)``; zeros if omitted.
        schedule : Schedule, optional
            A precomputed schedule of ``edge_index`` and the order (then
            ``order`` and ``score`` must be omitted). Default: the index order
            if neither is given.

        Returns
        -------
        out, (h, m)
            ``out`` is ``h``; all ``[N, H]``. With ``return_state=False``, ``out``
            alone.
        """
        edge_weight, schedule, h0, m0 = self._prepare(x, edge_index, edge_weight, order, score,
                                                      state, schedule)
        hidden = self.hidden_channels
        num_nodes = x.size(0)
        # Gates are computed in the row order u, o, c (contiguous for the inner
        # loop), with the c rows doubled: the loop takes tanh(c) = 2 sigma(2c) - 1.
        # Slicing the small weights is cheaper than slicing [N, 4H] activations.
        wx, bx = self.lin_x.weight, self.lin_x.bias
        rows_u, rows_f = slice(0, hidden), slice(hidden, 2 * hidden)
        rows_o, rows_c = slice(2 * hidden, 3 * hidden), slice(3 * hidden, 4 * hidden)

        def uoc(w: Tensor) -> Tensor:
            return torch.cat([w[rows_u], w[rows_o], 2.0 * w[rows_c]], dim=0)

        perm = schedule.perm
        # The input projection: gates u, o, c and the input part of every forget gate.
        w_all = torch.cat([uoc(wx), wx[rows_f]], dim=0)
        b_all = None if bx is None else torch.cat([uoc(bx), bx[rows_f]])
        weight_n = torch.cat(
            [self.lin_n.weight[: 2 * hidden], 2.0 * self.lin_n.weight[2 * hidden :]], dim=0
        )
        src, dst = schedule.visited_src_pos, schedule.visited_dst_pos
        if edge_weight is None:
            # 1/d_i, or 0 where d_i = 0 (no neighbour term).
            inv_norm = schedule.in_degree.index_select(0, perm).to(x.dtype)
            inv_norm = inv_norm.clamp(min=1.0).reciprocal().unsqueeze(1)
            visited_weight = unvisited_weight = None
        else:
            # Weighted means (docs/design.md, "Edge weights"): 1/s_i with s_i the
            # sum of the weights of
            # i's non-self-loop in-edges, or 0 where s_i = 0 (no neighbour term;
            # then no gradient reaches those weights either: the mean jumps there).
            # The weights were rescaled per node in _prepare: s_i is 0 or at least 1.
            edge_weight = edge_weight.to(x.dtype)
            visited_weight = edge_weight.index_select(0, schedule.visited_eid)
            unvisited_weight = edge_weight.index_select(0, schedule.unvisited_eid)
            total = x.new_zeros(num_nodes).index_add(0, dst, visited_weight)
            total = total.index_add(0, schedule.unvisited_edge_index_pos[1], unvisited_weight)
            positive = total > 0
            inv_norm = torch.where(positive, torch.where(positive, total, 1.0).reciprocal(), 0.0)
            inv_norm = inv_norm.unsqueeze(1)

        if h0 is None:
            # No previous state: no unvisited contribution, no previous memory, and
            # every neighbour forget gate of node i is sigma(W^f x_i + b^f), so the
            # weights [1/s_i ; g^f_i / s_i] of the visited neighbours are per node,
            # and an edge weight w_ji scales the neighbour's state before the sum.
            # The loop reads contiguous rows of the level-sorted layout.
            pre = F.linear(x.index_select(0, perm), w_all, b_all)
            base_z, input_forget = pre[:, : 3 * hidden], pre[:, 3 * hidden :]
            base_m = None
            per_node = True
            weight = torch.cat(
                [inv_norm.expand(-1, hidden), torch.sigmoid(input_forget) * inv_norm], dim=1
            )
            edge_scale = visited_weight
            state = graph_lstm_recurrence(
                base_z,
                base_m,
                weight,
                weight_n,
                schedule.offsets[0],
                schedule.offsets[1],
                src,
                schedule.visited_dst_local,
                per_node,
                edge_scale,
                triton_row_group(schedule, base_z, weight),
            )
            state = state.index_select(0, schedule.pos)
        else:
            # One GEMM for the input (gates u, o, c and the input part of every forget
            # gate) and one for all that the previous h feeds (gates u, o, c, the self
            # forget gate and U^fn h_j of the neighbour forget gates), in node order.
            wh = self.lin_h.weight
            pre = F.linear(x, w_all, b_all)
            from_h = F.linear(h0, torch.cat([uoc(wh), wh[rows_f], self.lin_fn.weight], dim=0))
            # Every in-edge j -> i brings s_e [h_j ; sigma(W^f x_i + b^f + U^fn h_j) m_j]
            # with s_e = w_ji / s_i (1/d_i unweighted): the new state of a visited j,
            # the previous one otherwise. The loop makes the gates and reads the
            # unvisited neighbours itself, without a per-edge [E, H] tensor.
            inv_norm = inv_norm.view(-1)
            visited_scale = inv_norm.index_select(0, dst)
            unvisited_scale = inv_norm.index_select(0, schedule.unvisited_edge_index_pos[1])
            if visited_weight is not None:
                visited_scale = visited_scale * visited_weight
                unvisited_scale = unvisited_scale * unvisited_weight
            state = graph_lstm_gated_recurrence(
                pre, from_h, h0, m0, weight_n, schedule, visited_scale, unvisited_scale
            )
        h, m = state[:, :hidden], state[:, hidden:]
        if not self.return_state:
            return h
        return h, (h, m)

    # Everything that reads values (validation, the schedule, lazy initialisation)
    # runs outside a torch.compile'd graph: dynamo calls this eagerly (a graph break)
    # and traces the arithmetic of forward, where the schedule's tensors are inputs
    # with symbolic sizes. So a batch of another size recompiles once (sizes become
    # dynamic), not once per size.
    @torch.compiler.disable
    def _prepare(self, x, edge_index, edge_weight, order, score, state, schedule):
        """Validated ``(edge_weight, schedule, h0, m0)`` of a forward call."""
        x = check_node_features(x, None, None, "x")
        if self.in_channels != -1 and x.size(1) != self.in_channels:
            raise ValueError(
                f"'x' must have {self.in_channels} channels (in_channels), got {x.size(1)}"
            )
        num_nodes, hidden = x.size(0), self.hidden_channels
        if edge_weight is not None or is_sparse_adjacency(edge_index):
            edge_index, edge_weight = edges_and_weights(edge_index, edge_weight, num_nodes)
        edge_index = self._in_flow(edge_index, num_nodes)
        # Weights rescaled per node so that their means stay finite at any scale;
        # before an explainer's mask too, so that its gradient does not overflow.
        if edge_weight is not None:
            edge_weight = rescale_in_weights(edge_index, edge_weight, num_nodes, x.dtype)
        if self.explain:
            edge_weight = self._explain_edge_weight(edge_index, edge_weight, num_nodes)
            edge_weight = rescale_in_weights(edge_index, edge_weight, num_nodes, x.dtype)
        if schedule is None:
            schedule = build_schedule(edge_index, num_nodes, order=order, score=score)
        else:
            if not isinstance(schedule, Schedule):
                raise TypeError(
                    f"'schedule' must be a graphlstm Schedule, got {type(schedule).__name__}"
                )
            if order is not None or score is not None:
                raise ValueError("give either 'schedule' or 'order'/'score', not both")
            check_tensor(edge_index, "edge_index")
            if edge_index.dim() != 2 or edge_index.size(0) != 2:
                check_edge_index(edge_index, num_nodes)
            schedule.check_graph(num_nodes, edge_index)
        if schedule.device != x.device:
            schedule = schedule.to(x.device)

        h0 = m0 = None
        if state is not None:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError("'state' must be a tuple (h, m) of two [N, H] tensors")
            h0 = check_node_features(state[0], num_nodes, hidden, "state[0] (h)")
            m0 = check_node_features(state[1], num_nodes, hidden, "state[1] (m)")

        if is_uninitialized_parameter(self.lin_x.weight):
            self.lin_x.initialize_parameters(None, x)
            self.in_channels = x.size(1)
        return edge_weight, schedule, h0, m0

    def _in_flow(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """``edge_index`` (validated ``[2, E]``) as sender -> receiver: flipped when
        ``flow="target_to_source"`` (``edge_index[1]`` sends)."""
        if self.flow == "source_to_target":
            return edge_index
        return check_edge_index(edge_index, num_nodes).flip(0)

    def jittable(self, *args, **kwargs):
        """Not supported: see :meth:`__prepare_scriptable__`."""
        self.__prepare_scriptable__()

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first: one clear error instead of a stack trace
        # from deep inside the compiler.
        raise RuntimeError(
            f"{self.__class__.__name__} cannot be compiled with TorchScript (torch.jit.script): "
            "its schedule and level loop are Python and custom operators. Use "
            "torch.compile(model) instead; see docs/compile.md."
        )

    def _explain_edge_weight(
        self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int
    ) -> Tensor:
        """Explain mode: PyG's edge mask multiplies the weights of all edges."""
        edge_mask = self._edge_mask
        if edge_mask is None:
            raise ValueError(
                "GraphLSTM is in explain mode but has no edge mask; set one with "
                "torch_geometric.explain.algorithm.utils.set_masks"
            )
        if self._apply_sigmoid:
            edge_mask = edge_mask.sigmoid()
        num_edges = edge_index.size(1)
        loop_mask = self._loop_mask
        if edge_mask.numel() != num_edges and loop_mask is not None and (
            int(loop_mask.sum()) + num_nodes == num_edges
        ):
            # As PyG's explain_message: the model removed the self-loops of the
            # explained graph and appended one per node; those get weight 1.
            edge_mask = torch.cat([edge_mask[loop_mask], edge_mask.new_ones(num_nodes)])
        if edge_mask.dim() != 1 or edge_mask.numel() != num_edges:
            raise ValueError(
                f"the explainer's edge mask has shape {list(edge_mask.shape)}, but 'edge_index' "
                f"has {num_edges} edges; the mask must hold one entry per edge"
            )
        edge_mask = check_edge_weight(edge_mask, num_edges, "edge mask (explain mode)")
        return edge_mask if edge_weight is None else edge_weight * edge_mask

    def __repr__(self) -> str:
        extra = "" if self.return_state else ", return_state=False"
        return f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}{extra})"
