r"""Structure-evolving Graph LSTM (Liang et al., CVPR 2017, arXiv 1703.03055)."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.typing import OptTensor

from graphlstm._validation import check_edge_index, check_node_features, check_score
from graphlstm.coarsening import (
    _check_batch,
    _check_threshold,
    majority_label,
    merge_targets,
    pool,
    pool_batch,
    pool_edges,
    unpool,
)
from graphlstm.coarsening import evolve as evolve_step
from graphlstm.nn.graph_lstm import GraphLSTM

__all__ = ["EvolvingGraphLSTM", "Hierarchy"]


class Hierarchy(NamedTuple):
    """The graphs an :class:`EvolvingGraphLSTM` ran on, finest first.

    Fields
    ------
    clusters : list of LongTensor
        ``clusters[k]`` ``[N_k]`` maps the nodes of level ``k`` to those of
        level ``k + 1`` (one entry per evolution step).
    assignments : list of LongTensor
        ``assignments[k]`` ``[N]``: the level-``k`` node of every input node
        (``assignments[0]`` is the identity); unpool with ``value[assignments[k]]``.
    edge_indices : list of LongTensor
        The graph of every level (``[2, E_k]``; level 0 is the input's).
    num_nodes : list of int
        ``N_k`` per level.
    merge_probs : list of Tensor
        ``merge_probs[k]`` ``[E_k]``: the merge probability of every edge of
        level ``k`` (differentiable; supervise it with
        :meth:`EvolvingGraphLSTM.merge_loss`).
    accepted : list of BoolTensor
        Per evolution step, whether each graph of the batch accepted its proposal.
    batches : list of LongTensor or None
        The graph of every node of every level (``None`` without ``batch``).
    scores : list of Tensor or None
        The score that ordered each level's layer (``None``: node order).
    """

    clusters: list[Tensor]
    assignments: list[Tensor]
    edge_indices: list[Tensor]
    num_nodes: list[int]
    merge_probs: list[Tensor]
    accepted: list[Tensor]
    batches: list[Tensor | None]
    scores: list[Tensor | None]


class EvolvingGraphLSTM(torch.nn.Module):
    r"""Graph LSTM layers interleaved with structure-evolution steps (Liang et
    al., "Interpretable Structure-Evolving LSTM", CVPR 2017).

    Layer :math:`l` is a :class:`GraphLSTM` that runs on the graph
    :math:`G^{(l)}` of level :math:`l` (:math:`G^{(0)}` is the input graph) in
    that level's confidence order. After every layer but the last, an
    **evolution step** merges nodes of :math:`G^{(l)}` into the nodes of
    :math:`G^{(l+1)}`:

    1. **Compatibility from the gates.** For an edge :math:`j \to i` of
       :math:`G^{(l)}`, the layer's neighbour forget gates in both directions,

       .. math::
           \bar{\mathbf{g}}^f_{ij} = \sigma(\mathbf{W}^f \mathbf{x}_i
               + \mathbf{U}^{fn} \mathbf{h}_j + \mathbf{b}^f), \qquad
           \bar{\mathbf{g}}^f_{ji} = \sigma(\mathbf{W}^f \mathbf{x}_j
               + \mathbf{U}^{fn} \mathbf{h}_i + \mathbf{b}^f)

       (exactly the gates the layer used: its input :math:`\mathbf{x}` and
       the state :math:`\mathbf{h}` it started from, read from the layer's
       public parameters ``lin_x`` rows ``f`` and ``lin_fn``), give the merge
       probability through a linear head on a symmetric feature of the pair,

       .. math::
           p_{ij} = \sigma\big(\mathbf{w}^\top [\bar{\mathbf{g}}^f_{ij} \odot
               \bar{\mathbf{g}}^f_{ji} \,;\, |\bar{\mathbf{g}}^f_{ij} -
               \bar{\mathbf{g}}^f_{ji}|] + b\big) = p_{ji}.

       The paper estimates the compatibility "from the LSTM gate outputs" of
       the two nodes; the symmetric feature is our choice (a merge has no
       direction, and a plain sum of the two gates could not tell equal from
       different nodes).
    2. **Proposal and acceptance** by :func:`graphlstm.coarsening.evolve`
       (Metropolis-Hastings, per graph of a batch; its docstring writes out
       the proposal, the target and the acceptance ratio). Deterministic in
       evaluation mode (``deterministic=None``, the default, follows
       ``self.training``).
    3. **Pooling.** The nodes of :math:`G^{(l+1)}` are the accepted clusters;
       the layer's output and final state :math:`(\mathbf{h}, \mathbf{m})` are
       averaged over each cluster (:func:`graphlstm.coarsening.pool`) and become
       the input and the initial state of layer :math:`l + 1`, so the stack is
       one recurrence as in :class:`GraphLSTMStack`. The coarse edges carry
       the number of level-:math:`l` edges they replace as weights (summed
       input weights, when ``edge_weight`` is given), so a neighbour region
       with a long common boundary counts more in the neighbour means.
    4. **Confidence order** of the new level: ``score_fn(level, inputs,
       assignment)`` when given (e.g. the class confidence of the level's
       nodes from their members' class probabilities, pooled through
       ``assignment``), else the mean of the members' ``score``, else node order.

    The output of the last layer returns to the input nodes through the chain
    of clusters (:attr:`Hierarchy.assignments`). With ``evolve=False`` (or
    ``num_layers=1``) nothing merges and the module computes exactly what a
    :class:`GraphLSTMStack` with the same layers computes.

    Parameters
    ----------
    in_channels : int
        Size ``F`` of each node's input, or ``-1`` to infer it.
    hidden_channels : int
        Size ``H`` of the hidden state and memory.
    num_layers : int, optional
        Number of Graph LSTM layers ``L`` (``L - 1`` evolution steps). (default: ``2``)
    evolve : bool, optional
        If ``False``, no evolution step (one graph for all layers). (default: ``True``)
    dropout : float, optional
        Dropout on the input of every layer but the first (training only).
    residual : bool, optional
        Residual connections as in :class:`GraphLSTMStack` (every layer whose
        input and output sizes agree adds its input to its output), with the
        residual path kept at the input nodes: every input node's output is its
        own stream plus the outputs of the nodes it belongs to on the levels
        after, and a merged node's input is the mean of its members' streams.
        Without evolution this is the stack's residual; with it, a merge adds
        the region's context to each member instead of replacing the members
        by their mean. (default: ``False``)
    bias : bool, optional
        If ``False``, the layers' ``lin_x`` have no bias. (default: ``True``)
    threshold : float, optional
        The proposal threshold of deterministic mode. (default: ``0.5``)
    num_steps : int, optional
        Metropolis-Hastings steps per evolution. (default: ``1``)
    deterministic : bool or None, optional
        ``True``/``False`` force the mode; ``None`` (default) is deterministic
        in evaluation mode and sampled in training mode.
    acceptance : ``"graph"`` or ``"clique"``, optional
        One Metropolis-Hastings test per graph (the paper) or per proposed
        clique (see :func:`graphlstm.coarsening.evolve`). (default: ``"graph"``)
    merge_bias : float, optional
        Initial bias of the merge heads: ``-2`` starts at merge probabilities
        near :math:`\sigma(-2) \approx 0.12`, so that an untrained model
        merges little and behaves like :class:`GraphLSTMStack` until its
        heads have learnt which neighbours belong together. (default: ``-2.0``)

    Attributes
    ----------
    layers : ModuleList of GraphLSTM
        ``layers[l]``, parameters as in :class:`GraphLSTM` (``lin_x`` ``[4H, F]``
        for ``l = 0``, ``[4H, H]`` after).
    merge_heads : ModuleList of Linear
        ``merge_heads[l]`` ``(2H -> 1)``: the merge probability after layer ``l``.

    Inputs: ``x, edge_index, edge_weight, score, score_fn, batch, state, generator``
        - **x** ``[N, F]``, **edge_index** ``[2, E]``, **edge_weight** ``[E]`` optional.
        - **score** ``[N]`` optional: confidence of every node (higher first).
        - **score_fn** optional: ``score_fn(level, inputs, assignment) ->
          [N_level]``, the confidence of every node of a level, from that
          level's input ``[N_level, ·]`` and ``assignment`` ``[N]``, the
          level's node of every input node.
        - **batch** ``[N]`` optional: the graph of every node (never merged
          across graphs; each graph accepts or rejects on its own).
        - **state** ``(h_0, m_0)`` optional, each ``[N, H]``: layer 0's initial state.
        - **generator** optional: the ``torch.Generator`` of the evolution draws.

    Outputs: ``out, (h_n, m_n), hierarchy``
        - **out** ``[N, H]``: the last layer's output, at every input node.
        - **h_n**, **m_n** ``[L, N, H]``: the final state of every layer, at
          every input node (a merged node's state repeated over its members).
        - **hierarchy**: a :class:`Hierarchy`.

    Example
    -------
    >>> import torch
    >>> x = torch.randn(6, 16)
    >>> edge_index = torch.tensor([[0, 1, 1, 2, 3, 4, 4, 5],
    ...                            [1, 0, 2, 1, 4, 3, 5, 4]])
    >>> labels = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> model = EvolvingGraphLSTM(16, 32, num_layers=3)
    >>> out, (h_n, m_n), hierarchy = model(x, edge_index, score=torch.rand(6))
    >>> out.shape, h_n.shape, len(hierarchy.num_nodes)
    (torch.Size([6, 32]), torch.Size([3, 6, 32]), 3)
    >>> loss = out.square().mean() + model.merge_loss(hierarchy, labels)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_layers: int = 2,
        evolve: bool = True,
        dropout: float = 0.0,
        residual: bool = False,
        bias: bool = True,
        threshold: float = 0.5,
        num_steps: int = 1,
        deterministic: bool | None = None,
        acceptance: str = "graph",
        merge_bias: float = -2.0,
    ) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"'num_layers' must be a positive int, got {num_layers!r}")
        for name, flag in (("evolve", evolve), ("residual", residual), ("bias", bias)):
            if not isinstance(flag, bool):
                raise TypeError(f"'{name}' must be a bool, got {flag!r}")
        if deterministic is not None and not isinstance(deterministic, bool):
            raise TypeError(f"'deterministic' must be a bool or None, got {deterministic!r}")
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0.0 <= float(dropout) <= 1.0):
            raise ValueError(f"'dropout' must be a number in [0, 1], got {dropout!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"'num_steps' must be a positive int, got {num_steps!r}")
        if acceptance not in ("graph", "clique"):
            raise ValueError(f"'acceptance' must be 'graph' or 'clique', got {acceptance!r}")
        if acceptance == "clique" and num_steps != 1:
            raise ValueError(f"'num_steps' must be 1 with acceptance='clique', got {num_steps}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.evolve = evolve
        self.dropout = float(dropout)
        self.residual = residual
        self.threshold = _check_threshold(threshold)
        self.num_steps = num_steps
        self.deterministic = deterministic
        self.acceptance = acceptance
        self.merge_bias = float(merge_bias)
        self.layers = torch.nn.ModuleList(
            GraphLSTM(in_channels if layer == 0 else hidden_channels, hidden_channels, bias=bias)
            for layer in range(num_layers)
        )
        self.merge_heads = torch.nn.ModuleList(
            torch.nn.Linear(2 * hidden_channels, 1) for _ in range(num_layers - 1)
        )
        self._init_merge_heads()

    def _init_merge_heads(self) -> None:
        with torch.no_grad():
            for head in self.merge_heads:
                head.bias.fill_(self.merge_bias)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        for head in self.merge_heads:
            head.reset_parameters()
        self._init_merge_heads()

    def merge_probability(self, level: int, x: Tensor, h: Tensor | None,
                          edge_index: Tensor) -> Tensor:
        r"""The merge probability ``[E]`` of every edge of a level after its
        layer ran on input ``x`` from the state ``h`` (``None``: zeros); see
        step 1 of the class docstring."""
        layer = self.layers[level]
        hidden = self.hidden_channels
        rows_f = slice(hidden, 2 * hidden)
        bias = layer.lin_x.bias
        gate_x = F.linear(x, layer.lin_x.weight[rows_f], None if bias is None else bias[rows_f])
        src, dst = edge_index[0], edge_index[1]
        if h is None:
            g_in, g_out = torch.sigmoid(gate_x[dst]), torch.sigmoid(gate_x[src])
        else:
            gate_h = F.linear(h, layer.lin_fn.weight)
            g_in = torch.sigmoid(gate_x[dst] + gate_h[src])  # g^f_{ij}: i = dst reads j = src
            g_out = torch.sigmoid(gate_x[src] + gate_h[dst])  # g^f_{ji}
        feature = torch.cat([g_in * g_out, (g_in - g_out).abs()], dim=1)
        return torch.sigmoid(self.merge_heads[level](feature)).view(-1)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_weight: OptTensor = None,
        score: OptTensor = None,
        score_fn: Callable[[int, Tensor, Tensor], Tensor] | None = None,
        batch: OptTensor = None,
        state: tuple[Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Hierarchy]:
        """Run every level; see the class docstring for the shapes."""
        x = check_node_features(x, None, None, "x")
        num_nodes = x.size(0)
        edge_index = check_edge_index(edge_index, num_nodes)
        batch = _check_batch(batch, num_nodes, edge_index)
        if score is not None:
            score = check_score(score, num_nodes)
        if score_fn is not None and not callable(score_fn):
            raise TypeError(f"'score_fn' must be callable, got {type(score_fn).__name__}")
        if state is not None:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError("'state' must be a tuple (h_0, m_0) of two [N, H] tensors")
            state = (check_node_features(state[0], num_nodes, self.hidden_channels,
                                         "state[0] (h_0)"),
                     check_node_features(state[1], num_nodes, self.hidden_channels,
                                         "state[1] (m_0)"))
        deterministic = (not self.training) if self.deterministic is None else self.deterministic

        identity = torch.arange(num_nodes, device=x.device)
        clusters, assignments, accepted = [], [identity], []
        edge_indices, sizes, merge_probs, batches = [edge_index], [num_nodes], [], [batch]
        h_n, m_n, scores = [], [], []
        stream = None  # the residual path, at the input nodes
        inputs, weight, level_score, level_batch = x, edge_weight, score, batch
        for level, layer in enumerate(self.layers):
            if level > 0 and self.dropout > 0:
                inputs = F.dropout(inputs, self.dropout, self.training)
            order_score = level_score
            if score_fn is not None and (level > 0 or score is None):
                order_score = check_score(score_fn(level, inputs, assignments[-1]),
                                          inputs.size(0), f"score_fn({level}, ...)")
            scores.append(None if order_score is None else order_score.detach())
            previous_h = None if state is None else state[0]
            out, state = layer(inputs, edge_index, weight,
                               score=None if order_score is None else order_score.detach(),
                               state=state)
            h_n.append(unpool(state[0], assignments[-1]))
            m_n.append(unpool(state[1], assignments[-1]))
            if self.residual and inputs.size(1) == out.size(1):
                # The residual path stays at the input nodes: a merged node adds
                # its output to each member's own stream, so a merge never erases
                # what told its members apart.
                if stream is None:
                    stream = unpool(inputs, assignments[-1])
                stream = stream + unpool(out, assignments[-1])
                if len(assignments) == 1:  # nothing merged yet: the level's nodes are the inputs
                    out = stream
            elif self.residual:  # a first layer that changes the size starts the stream
                stream = unpool(out, assignments[-1])
            if level == self.num_layers - 1:
                inputs = out
                break
            if not self.evolve:
                inputs = out
                continue

            prob = self.merge_probability(level, inputs, previous_h, edge_index)
            merge_probs.append(prob)
            step = evolve_step(edge_index, inputs.size(0), prob.detach(), batch=level_batch,
                               generator=generator, deterministic=deterministic,
                               threshold=self.threshold, num_steps=self.num_steps,
                               acceptance=self.acceptance)
            cluster = step.cluster.to(x.device)
            size = int(cluster.max()) + 1 if cluster.numel() else 0
            if weight is None:
                weight = torch.ones(edge_index.size(1), dtype=x.dtype, device=x.device)
            edge_index, weight = pool_edges(edge_index, cluster, weight, size)
            inputs = pool(out, cluster, size) if stream is None else \
                pool(stream, cluster[assignments[-1]], size)
            state = (pool(state[0], cluster, size), pool(state[1], cluster, size))
            if level_score is not None:
                level_score = pool(level_score.to(x.dtype), cluster, size)
            level_batch = pool_batch(level_batch, cluster, size)
            clusters.append(cluster)
            assignments.append(cluster[assignments[-1]])
            accepted.append(step.accepted)
            edge_indices.append(edge_index)
            sizes.append(size)
            batches.append(level_batch)

        hierarchy = Hierarchy(clusters, assignments, edge_indices, sizes, merge_probs,
                              accepted, batches, scores)
        output = unpool(inputs, assignments[-1]) if stream is None else stream
        return output, (torch.stack(h_n), torch.stack(m_n)), hierarchy

    @staticmethod
    def merge_loss(hierarchy: Hierarchy, labels: Tensor, ignore_index: int = -100,
                   balance: bool = False) -> Tensor:
        """Binary cross-entropy of every level's merge probabilities against
        "both ends carry one label" (:func:`graphlstm.coarsening.merge_targets`).

        ``labels`` ``[N]`` holds the label of every input node (``ignore_index``
        for none); a merged node takes the majority label of its members. The
        mean is over all supervised edges of all levels (zero when there are
        none). With ``balance=True`` the edges that should merge and those that
        should not carry equal total weight (each group's edges weighted by
        ``1 / (2 · its share)``), so that a head that cannot tell them apart
        says 1/2 rather than the share of same-label edges (on superpixel
        graphs most edges join one label, and an uninformed head would merge
        everything).
        """
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"'hierarchy' must be the Hierarchy of a forward call, "
                            f"got {type(hierarchy).__name__}")
        # Every level's probabilities enter the graph (times 0 where no edge is
        # supervised), so every merge head gets a gradient, zero or not (DDP).
        zero = sum((prob.sum() * 0.0 for prob in hierarchy.merge_probs),
                   torch.zeros((), device=labels.device))
        probs, targets = [], []
        for level, prob in enumerate(hierarchy.merge_probs):
            if level == 0:
                level_labels = labels
            else:
                level_labels = majority_label(labels, hierarchy.assignments[level],
                                              hierarchy.num_nodes[level], ignore_index)
            target, valid = merge_targets(hierarchy.edge_indices[level],
                                          level_labels.to(prob.device), ignore_index)
            probs.append(prob[valid])
            targets.append(target[valid].to(prob.dtype))
        if not probs or sum(p.numel() for p in probs) == 0:
            return zero
        prob, target = torch.cat(probs), torch.cat(targets)
        weight = None
        if balance:
            share = target.mean()
            if 0 < float(share) < 1:
                weight = torch.where(target > 0.5, 0.5 / share, 0.5 / (1 - share))
        return zero + F.binary_cross_entropy(prob, target, weight=weight)

    def __repr__(self) -> str:
        extra = f", num_layers={self.num_layers}"
        if not self.evolve:
            extra += ", evolve=False"
        if self.dropout:
            extra += f", dropout={self.dropout}"
        if self.residual:
            extra += ", residual=True"
        return f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}{extra})"
