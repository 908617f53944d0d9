"""How much each superpixel's node input moves a trained model's output at one superpixel.

:func:`node_influence` differentiates the class scores of a
:class:`segmentation.models.segmenter.GraphLSTMSegmenter`, averaged over the pixels of a
target superpixel, with respect to the node input of every superpixel (the
output of ``node_in``, before the Graph LSTM layers). The norm per
superpixel is non-zero exactly on the target's reach through the model's
layers (:func:`graphlstm.reachable` with ``num_layers=graph_layers``): the
picture of :func:`segmentation.visualize.plot_influence` with a checkpoint.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch_geometric.data import Batch

__all__ = ["node_influence"]


def node_influence(model, graph, target: int, score: torch.Tensor | None = None):
    """Jacobian norms of the model's output at ``target`` w.r.t. every node input.

    Parameters
    ----------
    model : segmentation.models.segmenter.GraphLSTMSegmenter
        Evaluated as it is (``eval()`` is the caller's choice), on a copy;
        the superpixel part runs in float32, as in the model.
    graph : segmentation.SuperpixelData
        One image's superpixel graph (e.g. ``Segmenter.transform(image)``).
    target : int
        The target superpixel.
    score : Tensor ``[N]``, optional
        An update order to use instead of the model's own (higher first).

    Returns
    -------
    norms : ndarray of float64, ``[N]``
        ``|| d mean_{p in target} logits[:, p] / d node_input[u] ||_F`` per ``u``.
    schedule : graphlstm.Schedule
        The schedule the model ran.

    Raises
    ------
    ValueError
        If ``target`` is not a node of ``graph`` or ``score`` has the wrong length.
    """
    num = int(graph.num_nodes)
    if isinstance(target, bool) or not isinstance(target, int | np.integer) or not (
            0 <= target < num):
        raise ValueError(f"'target' must be a superpixel in 0..{num - 1}, got {target!r}")
    if score is not None and (not torch.is_tensor(score) or score.numel() != num):
        raise ValueError(f"'score' must be a tensor of {num} values (one per superpixel)")
    model = copy.deepcopy(model)  # node_scores is replaced on the copy only
    batch = Batch.from_data_list([graph])
    captured = {}

    def capture(module, inputs, output):
        # Cut the graph here: the node inputs become the leaves we differentiate by.
        leaf = output.detach().requires_grad_(True)
        captured["nodes"] = leaf
        return leaf

    if score is not None:  # the model asks node_scores for its order
        fixed = score.detach().to(graph.edge_index.device)  # its own dtype: the same ties
        model.node_scores = lambda *args, **kwargs: fixed
    handle = model.node_in.register_forward_hook(capture)
    try:
        with torch.enable_grad():
            out = model.forward_batch(batch)
            pixels = batch.superpixels[0] == target
            scores = out.logits[0][:, pixels].mean(dim=1)
            nodes = captured["nodes"]
            total = torch.zeros_like(nodes)
            for k in range(scores.numel()):
                (grad,) = torch.autograd.grad(scores[k], nodes, retain_graph=True)
                total += grad * grad
    finally:
        handle.remove()
    return total.sum(dim=1).sqrt().detach().cpu().numpy(), out.schedule

