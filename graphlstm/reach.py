r"""Reach: which inputs an update order lets into a node's output.

In one Graph LSTM layer from a zero state (docs/design.md, "Reach"), node :math:`v`
reads the *new* state of its visited in-neighbours (updated before it) and
the zero state of the others. So :math:`v`'s output depends on :math:`x_u`
exactly when :math:`u = v` or a path :math:`u \to \dots \to v` along edges
(``edge_index[0]`` sends to ``edge_index[1]``) has strictly increasing ranks:

.. math::
    R(v) = \{v\} \cup \bigcup_{j \to v,\ \mathrm{rank}(j) < \mathrm{rank}(v)} R(j).

This set is the **reach** of :math:`v`. The order decides its size and its
direction: a smooth confidence order sends information down the confidence
slope, from confident nodes to uncertain ones, over many hops; a random order
lets a node see little beyond its direct predecessors. Self-loops carry
nothing (a node is neither before nor after itself) and duplicate edges do
not change a reach. (An edge whose weight is zero carries nothing either; the
reach treats every given edge as one that carries.)

**With a previous state** ``state=(h, m)``: the reach with respect to ``x``
is unchanged (the previous states are inputs, not functions of ``x``). The
output of :math:`v` now also depends on the previous states of
:math:`S(R(v))`, where :math:`S(A) = A \cup \{j : j \to a,\ a \in A\}` adds
every in-neighbour: a node :math:`a` of the reach reads the previous
:math:`(h_j, m_j)` of its unvisited in-neighbours :math:`j` (any rank after
:math:`a`) and the previous :math:`h_j` of its visited ones in their forget
gates, besides its own previous state. So the order no longer bounds what a
node sees of the previous states: one hop in every direction always comes in.

**With more layers** (a stack whose layer :math:`l > 0` starts from the final
state of layer :math:`l - 1`: :class:`graphlstm.nn.GraphLSTMStack`,
docs/design.md, "Stacks", and so :class:`segmentation.models.GraphLSTMSegmenter`), the reaches
compose:
the output of :math:`v` after :math:`L` layers depends on :math:`x_u` for
:math:`u \in (R \circ S)^{L-1} R(v)`, with :math:`R(A) = \bigcup_{a \in A}
R(a)`. Every extra layer adds one hop in any direction and then another
increasing-rank path. Without the state passed on (every layer from zero),
:math:`R \circ R = R` (increasing paths concatenate), so a second layer in
the same order would reach nothing new; a residual input ``x + out`` changes
nothing either, for :math:`R(v)` already contains :math:`v`. One
bidirectional layer reaches :math:`R(v) \cup R'(v)`, :math:`R'` being the
reach of the reversed order.

:func:`reachable` computes reaches level by level on the schedule of the
order (:func:`graphlstm.build_schedule`): the nodes of one level are not
adjacent, so a whole level is done at once, from the last level to the first,
with one gather and one scatter-or over its out-edges. The work is
:math:`O(E \cdot T)` for :math:`T` targets and the loop runs over levels, not
nodes. :func:`graphlstm.reference.reach_reference` is the plain per-target
search it is tested against.
"""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import Tensor

from graphlstm._validation import check_tensor
from graphlstm.schedule import Schedule, build_schedule

__all__ = ["reachable"]


def reachable(
    edge_index: Tensor,
    num_nodes: int | None,
    targets,
    order: Tensor | None = None,
    score: Tensor | None = None,
    *,
    num_layers: int = 1,
) -> Tensor:
    r"""The nodes whose input can change each target's output (see the module docstring).

    Parameters
    ----------
    edge_index : LongTensor ``[2, E]``
        Edges ``edge_index[0] -> edge_index[1]`` (PyG convention); self-loops
        and duplicates are allowed (self-loops carry nothing).
    num_nodes : int or None
        Number of nodes ``N`` (``None``: ``max(edge_index) + 1``).
    targets : int, sequence of int, or LongTensor ``[T]``
        The target nodes; repeats are allowed (one row each).
    order : LongTensor ``[N]``, optional
        The update order as a permutation, as in :func:`graphlstm.build_schedule`.
    score : Tensor ``[N]``, optional
        The update order as scores, higher first, ties by the smaller index.
        At most one of ``order`` and ``score``; with neither, index order.
    num_layers : int, optional
        Reach of a stack of this many layers in the same order, each starting
        from the previous layer's final state: :math:`(R \circ S)^{L-1} R`.
        (default: ``1``, one layer from a zero state)

    Returns
    -------
    BoolTensor ``[T, N]``
        Row ``i`` marks the nodes ``u`` whose input ``x_u`` can change the
        output of ``targets[i]``; every target marks itself. On the device of
        ``edge_index``; a transposed (column-major) view, so call
        ``.contiguous()`` before ``.view()``.

    Raises
    ------
    TypeError, ValueError
        For a malformed ``edge_index``, ``order``, ``score`` or ``targets``
        (not integers, or outside ``[0, N)``), both ``order`` and ``score``,
        or ``num_layers`` not a positive int.

    Examples
    --------
    >>> path = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])      # 0 - 1 - 2
    >>> reachable(path, 3, [2]).int()                         # index order: 0 -> 1 -> 2
    tensor([[1, 1, 1]], dtype=torch.int32)
    >>> reachable(path, 3, [2], order=torch.tensor([2, 1, 0])).int()
    tensor([[0, 0, 1]], dtype=torch.int32)
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral):
        raise TypeError(f"'num_layers' must be a positive int, got {num_layers!r}")
    if num_layers < 1:
        raise ValueError(f"'num_layers' must be a positive int, got {num_layers}")
    schedule = build_schedule(edge_index, num_nodes, order=order, score=score)
    n = schedule.num_nodes
    device = edge_index.device
    targets = _check_targets(targets, n)
    cpu = torch.device("cpu")
    # reaches[u, i]: whether x_u reaches targets[i]. Node-major, so that a level's
    # rows are gathered and scattered whole.
    # uint8 0/1 rather than bool: the or is a maximum, fastest on bytes.
    reaches = torch.zeros(n, targets.numel(), dtype=torch.uint8)
    reaches[targets, torch.arange(targets.numel())] = 1
    if n == 0 or targets.numel() == 0:
        return reaches.view(torch.bool).t().to(device)
    schedule = schedule.to(cpu)
    by_level = _visited_edges_by_source_level(schedule)
    _ancestors_(reaches, *by_level)
    if num_layers > 1:
        ei = edge_index.to(cpu).long()
        not_loop = ei[0] != ei[1]
        src, dst = ei[0, not_loop], ei[1, not_loop]
        for _ in range(num_layers - 1):
            # S: a node reads the previous state of every in-neighbour j -> a.
            _or_rows_(reaches, src, reaches.index_select(0, dst))
            _ancestors_(reaches, *by_level)
    # A transposed view of the node-major result: a transposing copy would cost
    # more than the whole computation.
    return reaches.view(torch.bool).t().to(device)


def _check_targets(targets, num_nodes: int) -> Tensor:
    if isinstance(targets, bool):
        raise TypeError(
            f"'targets' must be node indices (int, list or LongTensor), got {targets!r}"
        )
    if isinstance(targets, numbers.Integral):
        targets = torch.tensor([int(targets)])
    elif not isinstance(targets, Tensor):
        try:
            targets = torch.as_tensor(list(targets))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"'targets' must be node indices (int, list or LongTensor), "
                f"got {type(targets).__name__}"
            ) from None
        if targets.numel() == 0:
            targets = targets.long()
    check_tensor(targets, "targets")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"'targets' must hold integer node indices, got dtype {targets.dtype}")
    if targets.dim() == 0:
        targets = targets.view(1)
    if targets.dim() != 1:
        raise ValueError(f"'targets' must be 1-D, got shape {list(targets.shape)}")
    targets = targets.long().cpu()
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_nodes):
        raise ValueError(
            f"'targets' holds node indices in [{int(targets.min())}, {int(targets.max())}], "
            f"outside [0, {num_nodes}) for num_nodes={num_nodes}"
        )
    return targets


def _visited_edges_by_source_level(schedule: Schedule) -> tuple[Tensor, Tensor, list[int]]:
    """Visited edges ``j -> i`` grouped by the level of ``j``, last level first."""
    src, dst = schedule.visited_src, schedule.visited_dst
    src_level = schedule.level[src]
    perm = torch.argsort(-src_level, stable=True)
    src, dst = src[perm], dst[perm]
    counts = torch.bincount(schedule.num_levels - 1 - src_level, minlength=schedule.num_levels)
    return src, dst, [0] + counts.cumsum(0).tolist()


def _ancestors_(reaches: Tensor, src: Tensor, dst: Tensor, ptr: list[int]) -> None:
    """``reaches[u] |= reaches[i]`` along every visited edge ``u -> i``, in place.

    Processed from the last level to the first: the head ``i`` of a visited
    edge lies in a later level than its tail ``u``, so ``reaches[i]`` is
    final when level ``level(u)`` reads it.
    """
    for k in range(len(ptr) - 1):
        lo, hi = ptr[k], ptr[k + 1]
        if lo == hi:
            continue
        _or_rows_(reaches, src[lo:hi], reaches.index_select(0, dst[lo:hi]))


def _or_rows_(reaches: Tensor, index: Tensor, rows: Tensor) -> None:
    """``reaches[index[e]] |= rows[e]`` for every ``e``, repeated indices included.

    On 0/1 ``uint8`` rows the maximum is the logical or; ``index_reduce_`` is
    several times faster than ``scatter_reduce_`` with an expanded index.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        reaches.index_reduce_(0, index, rows, "amax")
