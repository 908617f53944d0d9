"""The segmentation network with a structure-evolving Graph LSTM (Liang et al., CVPR 2017).

::

    image ──backbone──> pixel features ──1x1──> confidence logits ──softmax──┐ mean per
                          │ mean per superpixel                              │ superpixel
                          v                                                  v
                     node inputs ──Graph LSTM── evolve ──Graph LSTM── ... node class probabilities
                                   level 0      merge     level 1          (pooled per level:
                                   superpixels  cliques   merged regions    each level's order)
                          level-L states ──unpool through the hierarchy──> pixels ──> logits

The same pipeline as :class:`segmentation.models.segmenter.GraphLSTMSegmenter`, with a
:class:`graphlstm.EvolvingGraphLSTM` (``graph_layers`` layers, residual) in
place of the stack: after every layer but the last, neighbouring regions merge
(merge probabilities from the layer's forget gates, Metropolis-Hastings
acceptance, sampled in training and deterministic in evaluation), and the next
layer runs on the merged regions in the order of their confidence, recomputed
per level from the class probabilities of their superpixels.

Training adds the **merge loss** to the per-pixel losses: the binary
cross-entropy of every merge probability against "both regions carry one
label" (a superpixel's label is the majority label of its pixels, a merged
region's the majority of its superpixels), class-balanced (most neighbouring
superpixels share a label; unbalanced, a head that knows nothing yet would
say "merge" everywhere and evaluation would merge whole images), weighted by
``merge_weight`` (:func:`evolving_loss`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphlstm import EvolvingGraphLSTM, Schedule, build_schedule
from graphlstm.coarsening import majority_label
from graphlstm.nn.evolving_graph_lstm import Hierarchy
from segmentation.models.pooling import pool
from segmentation.models.segmenter import (
    GraphLSTMSegmenter,
    ModelConfig,
    segmentation_loss,
)

__all__ = [
    "EvolvingSegmenter",
    "EvolvingSegmenterOutput",
    "MergeCounts",
    "evolving_cue_in_reach",
    "evolving_loss",
    "hierarchy_reach",
    "merge_counts",
    "model_loss",
    "superpixel_labels",
]


class EvolvingSegmenterOutput(NamedTuple):
    logits: Tensor  # [B, K, H, W] final per-pixel scores
    confidence_logits: Tensor  # [B, K, H, W] per-pixel confidence head
    node_score: Tensor  # [N] score that ordered the superpixels (level 0)
    schedule: Schedule  # level 0's schedule
    hierarchy: Hierarchy  # the merged regions of every level
    superpixels: Tensor  # [B, H, W] (for the merge loss and the pictures)
    num_nodes: Tensor  # [B]
    merge_weight: float  # the model's config.merge_weight


class EvolvingSegmenter(GraphLSTMSegmenter):
    """Superpixel segmentation with a structure-evolving Graph LSTM (module docstring).

    Takes the inputs of :class:`GraphLSTMSegmenter` (plus an optional
    ``generator`` for the evolution draws) and returns an
    :class:`EvolvingSegmenterOutput`.

    Parameters
    ----------
    config : ModelConfig
        As for :class:`GraphLSTMSegmenter`; ``graph_layers`` must be at least 1.
    acceptance : ``"graph"`` or ``"clique"``, optional
        One Metropolis-Hastings test per image or per proposed region
        (:func:`graphlstm.coarsening.evolve`); default ``config.acceptance``.
    threshold : float
        The proposal threshold of evaluation (deterministic) mode.
    """

    def __init__(self, config: ModelConfig, acceptance: str | None = None,
                 threshold: float = 0.5):
        if config.graph_layers < 1:
            raise ValueError(f"the evolving model needs graph_layers >= 1, "
                             f"got {config.graph_layers}")
        super().__init__(config)
        acceptance = config.acceptance if acceptance is None else acceptance
        self.graph_lstm = EvolvingGraphLSTM(config.hidden, config.hidden,
                                            num_layers=config.graph_layers, residual=True,
                                            acceptance=acceptance, threshold=threshold)
        # Layer 0 starts from a zero state (its lin_h and lin_fn only multiply
        # zeros, also in the merge head's gates): frozen, so that every trainable
        # parameter gets a gradient (DDP).
        first = self.graph_lstm.layers[0]
        first.lin_h.weight.requires_grad_(False)
        first.lin_fn.weight.requires_grad_(False)

    def forward(
        self,
        image: Tensor,
        superpixels: Tensor,
        edge_index: Tensor,
        num_nodes: Tensor,
        pos: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> EvolvingSegmenterOutput:
        self._check_inputs(image, superpixels)
        feats = self.backbone(image)
        confidence_logits = self.confidence_head(feats)
        with torch.autocast(image.device.type, enabled=False):
            precise = torch.promote_types(feats.dtype, torch.float32)
            precise_feats = feats.to(precise)
            total = int(num_nodes.sum())
            score = self._finite_scores(confidence_logits.to(precise), superpixels, num_nodes,
                                        pos, generator)
            schedule = build_schedule(edge_index, total, score=score)
            batch = torch.repeat_interleave(torch.arange(num_nodes.numel(),
                                                         device=num_nodes.device), num_nodes)
            score_fn = self._level_score_fn(confidence_logits.to(precise), superpixels,
                                            num_nodes, score)
            nodes = self.node_in(pool(precise_feats, superpixels, num_nodes))
            nodes, _, hierarchy = self.graph_lstm(nodes, edge_index, score=score,
                                                  score_fn=score_fn, batch=batch.to(nodes.device),
                                                  generator=generator)
        logits = self._pixel_logits(feats, nodes, superpixels, num_nodes)
        return EvolvingSegmenterOutput(logits, confidence_logits, score, schedule, hierarchy,
                                       superpixels, num_nodes, float(self.config.merge_weight))

    def _level_score_fn(self, confidence_logits, superpixels, num_nodes, score):
        """Each merged level's order: by the confidence of its regions' mean class
        probabilities (``confidence`` orders); the pooled level-0 score otherwise."""
        order = self.config.order
        if order in ("confidence", "reverse-confidence"):
            probs = pool(confidence_logits.detach().softmax(dim=1), superpixels, num_nodes)
            sign = 1.0 if order == "confidence" else -1.0

            def score_fn(level, inputs, assignment):
                if level == 0:
                    return score
                size = inputs.size(0)
                region = torch.zeros(size, probs.size(1), dtype=probs.dtype, device=probs.device)
                region = region.index_add(0, assignment, probs)
                region = region / torch.bincount(assignment, minlength=size).unsqueeze(1)
                return sign * region.max(dim=1).values
        else:
            def score_fn(level, inputs, assignment):
                if level == 0:
                    return score
                size = inputs.size(0)
                summed = score.new_zeros(size).index_add(0, assignment, score)
                return summed / torch.bincount(assignment, minlength=size)
        return score_fn


def superpixel_labels(mask: Tensor, superpixels: Tensor, num_nodes: Tensor, num_classes: int,
                      ignore_index: int = 255) -> Tensor:
    """The majority label of every superpixel's pixels ``[N]`` (``ignore_index`` pixels
    do not vote; a superpixel without a voter gets ``ignore_index``)."""
    mask = mask.long()
    valid = (mask != ignore_index) & (mask >= 0) & (mask < num_classes)
    votes = F.one_hot(torch.where(valid, mask, 0), num_classes).permute(0, 3, 1, 2)
    votes = votes * valid.unsqueeze(1)
    share = pool(votes.to(torch.float32), superpixels, num_nodes)
    best_share, best = share.max(dim=1)
    return torch.where(best_share > 0, best, torch.full_like(best, ignore_index))


def evolving_loss(output: EvolvingSegmenterOutput, mask: Tensor, ignore_index: int = 255,
                  reduction: str = "mean", merge_weight: float = 1.0) -> Tensor:
    """:func:`segmentation.models.segmenter.segmentation_loss` plus ``merge_weight`` times the
    mean merge loss (:meth:`graphlstm.EvolvingGraphLSTM.merge_loss`).

    With ``reduction="sum"`` the merge term is scaled by the number of valid
    pixels, so that dividing the sum by that number (as the training step
    does) gives ``merge_weight`` times the mean merge loss.
    """
    loss = segmentation_loss(output, mask, ignore_index, reduction)
    if merge_weight == 0 or not output.hierarchy.merge_probs:
        return loss
    labels = superpixel_labels(mask, output.superpixels, output.num_nodes,
                               output.logits.size(1), ignore_index)
    merge = EvolvingGraphLSTM.merge_loss(output.hierarchy, labels, ignore_index, balance=True)
    if reduction == "sum":
        merge = merge * (mask != ignore_index).sum()
    return loss + merge_weight * merge.to(loss.dtype)


def model_loss(output, mask: Tensor, ignore_index: int = 255, reduction: str = "mean",
               merge_weight: float | None = None) -> Tensor:
    """The training loss of either network: :func:`evolving_loss` for the output of
    an :class:`EvolvingSegmenter` (``merge_weight`` default: the model's
    ``config.merge_weight``, carried by the output), else
    :func:`segmentation.models.segmenter.segmentation_loss`."""
    if isinstance(output, EvolvingSegmenterOutput):
        weight = output.merge_weight if merge_weight is None else merge_weight
        return evolving_loss(output, mask, ignore_index, reduction, weight)
    return segmentation_loss(output, mask, ignore_index, reduction)


class MergeCounts(NamedTuple):
    """What the evolution steps merged, counted against the labels (:func:`merge_counts`).

    Counts, so that the counts of several batches add up (``a + b`` does not:
    use :meth:`add`).
    """

    superpixels: int  # input nodes
    regions: int  # nodes of the last level
    in_region_of_other_label: int  # labelled superpixels whose region's majority label differs
    per_class: Tensor  # [K] labelled superpixels of each class
    merged_per_class: Tensor  # [K] of those, the ones in a region of more than one superpixel

    def add(self, other: MergeCounts) -> MergeCounts:
        """The counts of both."""
        return MergeCounts(self.superpixels + other.superpixels, self.regions + other.regions,
                           self.in_region_of_other_label + other.in_region_of_other_label,
                           self.per_class + other.per_class,
                           self.merged_per_class + other.merged_per_class)


def merge_counts(hierarchy: Hierarchy, labels: Tensor, num_classes: int,
                 ignore_index: int = 255) -> MergeCounts:
    """Count what the evolution steps merged: regions on the last level, labelled
    superpixels per class and how many of them were merged, and how many ended
    in a region whose majority label is another.

    Parameters
    ----------
    hierarchy : Hierarchy
        Of a forward call (one image or a batch: regions never span two images).
    labels : LongTensor, shape (N,)
        The label of every input node (:func:`superpixel_labels`), ``ignore_index`` for none.
    num_classes : int
        Number of classes ``K``.
    ignore_index : int
        The label of an unlabelled superpixel.
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"'hierarchy' must be the Hierarchy of a forward call, "
                        f"got {type(hierarchy).__name__}")
    region = hierarchy.assignments[-1]
    size = hierarchy.num_nodes[-1]
    if not isinstance(labels, Tensor) or labels.shape != region.shape:
        raise ValueError(f"'labels' must be a tensor of one label per input node, shape "
                         f"[{region.numel()}], got {getattr(labels, 'shape', type(labels))}")
    labels = labels.to(region.device).long()
    valid = labels != ignore_index
    if bool(((labels[valid] < 0) | (labels[valid] >= num_classes)).any()):
        raise ValueError(f"'labels' must lie in 0..{num_classes - 1} (or be {ignore_index})")
    majority = majority_label(labels, region, size, ignore_index)[region]
    merged = torch.bincount(region, minlength=size)[region] > 1
    return MergeCounts(
        superpixels=region.numel(),
        regions=size,
        in_region_of_other_label=int((valid & (majority != labels)).sum()),
        per_class=torch.bincount(labels[valid], minlength=num_classes).cpu(),
        merged_per_class=torch.bincount(labels[valid & merged], minlength=num_classes).cpu(),
    )


def hierarchy_reach(hierarchy: Hierarchy) -> Tensor:
    r"""Which input nodes can change each input node's output: BoolTensor ``[N, N]``.

    The reach of :mod:`graphlstm.reach` carried through the levels: level
    :math:`l` runs one layer on its own graph in its own order (reach
    :math:`R_l`) from the state that level :math:`l-1` passed on (one hop more
    in every direction, :math:`S_l`), and its inputs are the means of the
    level-:math:`(l-1)` outputs of its members (membership :math:`C_l`), so
    :math:`M_0 = R_0` and :math:`M_l = R_l S_l C_l M_{l-1}` (boolean
    products); an input node's row is the row of its last-level node. Without
    merging this is :func:`graphlstm.reachable` with ``num_layers=L``.
    Dense: meant for one image at a time.
    """
    from graphlstm import reachable

    reach = None
    for level, (edge_index, size) in enumerate(zip(hierarchy.edge_indices, hierarchy.num_nodes,
                                                   strict=True)):
        level_reach = reachable(edge_index, size, torch.arange(size, device=edge_index.device),
                                score=hierarchy.scores[level]).float()
        if reach is None:
            reach = level_reach
            continue
        step = torch.eye(size, device=edge_index.device)
        step[edge_index[1], edge_index[0]] = 1.0  # a reads its in-neighbour j (j -> a)
        members = torch.zeros(size, reach.size(0), device=edge_index.device)
        cluster = hierarchy.clusters[level - 1]
        members[cluster, torch.arange(cluster.numel(), device=cluster.device)] = 1.0
        reach = ((level_reach @ step).clamp(max=1.0) @ members).clamp(max=1.0) @ reach
        reach = reach.clamp(max=1.0)
    return reach[hierarchy.assignments[-1]] > 0


def evolving_cue_in_reach(model: EvolvingSegmenter, graphs, cue_labels, target_labels) -> float:
    """:func:`segmentation.analysis.reach.cue_in_reach` for the evolving model: the share
    of target superpixels whose reach through the model's own hierarchy (in
    evaluation mode) holds a cue superpixel."""
    from torch_geometric.data import Batch

    from segmentation.analysis.reach import share_of_targets_reaching_cues

    def reach_of(graph, targets: Tensor) -> Tensor:
        with torch.no_grad():
            out = model.forward_batch(Batch.from_data_list([graph]))
        return hierarchy_reach(out.hierarchy).cpu()[targets]

    model.eval()
    return share_of_targets_reaching_cues(graphs, reach_of, cue_labels, target_labels)
