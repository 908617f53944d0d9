"""A Graph LSTM segmentation network in the spirit of Liang et al. (ECCV 2016).

::

    image ──backbone──> pixel features F ──1x1──> confidence logits ──softmax──┐
                          │                                                     │ mean per
                          │ mean per superpixel                                 │ superpixel
                          v                                                     v
                     node inputs ──Graph LSTM──(+)──Graph LSTM──(+)──>   node confidence
                                     one graph, one order (most confident first)
                          node states ──unpool──> pixels ──concat F──1x1──> final logits
                                        (or soft_unpool: pixels near a superpixel's edge
                                         also read the nodes next to it)

The confidence head is a per-pixel classifier; averaged over a superpixel, its
class probabilities give the node's label (argmax) and confidence (the
probability of that label), and the nodes are updated most confident first.
Both Graph LSTM layers share the superpixel graph and the schedule, pass their
state on, and have residual connections (a :class:`graphlstm.GraphLSTMStack`
with ``residual=True``, at ``graph_lstm``). ``graph_layers=0`` gives the same
pipeline without the Graph LSTM: the baseline that shows what context adds.
The first layer starts from a zero state, so its ``lin_h`` and ``lin_fn`` only
ever multiply zeros: they are frozen (``requires_grad=False``), which leaves no
trainable parameter without a gradient (DDP needs no ``find_unused_parameters``).

Backbones (:mod:`segmentation.models.backbones`): ``small`` (trained from scratch) or a
dilated ResNet-18/34/50 (output stride 8) that loads torchvision's ImageNet
weights. Under ``torch.autocast`` the backbone and the heads run in low
precision, while the superpixel part (pooling, the confidence score and
schedule, the Graph LSTM recurrence, unpooling) runs in float32.

The classifier's first 1x1 convolution acts on ``[F ; unpool(nodes)]``; being
linear per pixel, its node half is applied to the nodes before unpooling
(``unpool(W_n nodes) = W_n unpool(nodes)``), so the hidden-size map of every
pixel and the concatenation are never made: the same logits (to rounding) with
less memory and arithmetic at full resolution.

With ``unpool="soft"`` the node half comes back to the pixels through
:func:`segmentation.models.pooling.soft_unpool` instead: every pixel mixes its
own node with the nodes of the superpixels a short step away, weighted by a
learnt match of its pixel features (query, ``unpool_query``) with their states
(key, ``unpool_key``). Inside a superpixel this is the plain unpooling; at a
superpixel that straddles two regions, each side can take the state of the
region it belongs to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphlstm import GraphLSTMStack, Schedule, build_schedule
from segmentation._checks import check_int
from segmentation.models.backbones import RESNETS, build_backbone
from segmentation.models.orders import ORDER_KINDS, random_score, raster_score
from segmentation.models.pooling import pool, soft_unpool, unpool

__all__ = [
    "BACKBONES",
    "UNPOOLS",
    "GraphLSTMSegmenter",
    "ModelConfig",
    "NonFiniteScores",
    "SegmenterOutput",
    "batch_inputs",
    "build_segmenter",
    "segmentation_loss",
]

#: The backbones of :class:`ModelConfig` (and of ``train.py --backbone``).
BACKBONES = ("small", *RESNETS)
GRAPH_MODELS = ("stack", "evolving")
ACCEPTANCES = ("graph", "clique")
#: The ways node states return to the pixels (:attr:`ModelConfig.unpool`, ``train.py --unpool``).
UNPOOLS = ("hard", "soft")
#: Size of the queries and keys of ``unpool="soft"``.
UNPOOL_KEY_CHANNELS = 16


class NonFiniteScores(RuntimeError):
    """The confidence scores that order the superpixels are not finite (NaN weights
    or overflowing activations): there is no update order to follow."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`GraphLSTMSegmenter` (saved in checkpoints).

    Parameters
    ----------
    num_classes : int
        Number of classes (label 255 is ignored).
    in_channels : int
        Image channels.
    width : int
        Channels of the pixel features.
    hidden : int
        Hidden size of the Graph LSTM layers.
    graph_layers : int
        Number of Graph LSTM layers (0 = no graph context: the baseline).
    order : {"confidence", "reverse-confidence", "random", "raster"}
        Update order of the superpixels (``reverse-confidence``: least
        confident first).
    n_segments, compactness : int, float
        SLIC parameters of the superpixel graphs this model was trained with.
    backbone : {"small", "resnet18", "resnet34", "resnet50"}
        ``small`` is trained from scratch; the ResNets are dilated to output
        stride 8 and start from random weights unless ImageNet weights are
        loaded (:meth:`segmentation.models.backbones.ResNetBackbone.load_pretrained`,
        ``train.py --backbone-weights``), which happens once, before training.
    graph_model : {"stack", "evolving"}
        ``stack``: the Graph LSTM layers share the superpixel graph;
        ``evolving``: regions merge between layers
        (:class:`segmentation.models.evolving.EvolvingSegmenter`).
    merge_weight : float
        Weight of the merge loss (``evolving`` only).
    acceptance : {"clique", "graph"}
        What one Metropolis-Hastings test decides on (``evolving`` only):
        every proposed region on its own (default), or the whole image, which
        on graphs of a hundred superpixels or more rejects nearly every
        proposal in evaluation (see ``docs/evolving.md``).
    unpool : {"hard", "soft"}
        How the node states come back to the pixels: every pixel takes its
        superpixel's state (``hard``), or a learnt mix of the states of its
        superpixel and the superpixels next to it
        (:func:`segmentation.models.pooling.soft_unpool`).
    """

    num_classes: int
    in_channels: int = 3
    width: int = 32
    hidden: int = 64
    graph_layers: int = 2
    order: str = "confidence"
    n_segments: int = 150
    compactness: float = 10.0
    backbone: str = "small"
    graph_model: str = "stack"
    merge_weight: float = 1.0
    acceptance: str = "clique"
    unpool: str = "hard"

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels", "width", "hidden"):
            check_int(getattr(self, name), f"'{name}'")
        if self.num_classes < 2:
            raise ValueError(f"'num_classes' must be at least 2, got {self.num_classes}")
        if not isinstance(self.graph_layers, int) or self.graph_layers < 0:
            raise ValueError(
                f"'graph_layers' must be a non-negative int, got {self.graph_layers!r}"
            )
        if self.order not in ORDER_KINDS:
            raise ValueError(
                f"'order' must be one of {', '.join(ORDER_KINDS)}, got {self.order!r}"
            )
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"'backbone' must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        if self.graph_model not in GRAPH_MODELS:
            raise ValueError(f"'graph_model' must be one of {', '.join(GRAPH_MODELS)}, "
                             f"got {self.graph_model!r}")
        if self.graph_model == "evolving" and self.graph_layers < 1:
            raise ValueError("'graph_model' evolving needs graph_layers >= 1")
        if (isinstance(self.merge_weight, bool) or not isinstance(self.merge_weight, (int, float))
                or not self.merge_weight >= 0 or self.merge_weight == float("inf")):
            raise ValueError(f"'merge_weight' must be a finite number >= 0, "
                             f"got {self.merge_weight!r}")
        if self.acceptance not in ACCEPTANCES:
            raise ValueError(f"'acceptance' must be one of {', '.join(ACCEPTANCES)}, "
                             f"got {self.acceptance!r}")
        if self.unpool not in UNPOOLS:
            raise ValueError(f"'unpool' must be one of {', '.join(UNPOOLS)}, "
                             f"got {self.unpool!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model config has unknown keys: {', '.join(unknown)}")
        return cls(**values)


class SegmenterOutput(NamedTuple):
    logits: Tensor  # [B, K, H, W] final per-pixel scores
    confidence_logits: Tensor  # [B, K, H, W] per-pixel confidence head
    node_score: Tensor  # [N] score that ordered the nodes (higher first)
    schedule: Schedule


class GraphLSTMSegmenter(nn.Module):
    """Superpixel Graph LSTM segmentation network (see the module docstring).

    Parameters
    ----------
    config : ModelConfig

    Shapes
    ------
    - **image** ``[B, C, H, W]`` float in ``[0, 1]``;
    - **superpixels** ``[B, H, W]`` int64, per-image labels ``0..N_b-1``;
    - **edge_index** ``[2, E]`` of the batched graph (PyG ``Batch`` offsets);
    - **num_nodes** ``[B]`` nodes per image (``batch.ptr.diff()``);
    - **pos** ``[N, 2]`` centroids (needed for ``order="raster"``);
    - output :class:`SegmenterOutput` with ``logits`` ``[B, K, H, W]``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, k = config.width, config.num_classes
        self.backbone = build_backbone(config.backbone, c, config.in_channels)
        self.confidence_head = nn.Conv2d(c, k, 1)
        self.node_in = nn.Linear(c, config.hidden)
        self.graph_lstm = None
        if config.graph_layers > 0:
            self.graph_lstm = GraphLSTMStack(config.hidden, config.hidden,
                                             num_layers=config.graph_layers, residual=True)
        self.classifier = nn.Sequential(
            nn.Conv2d(c + config.hidden, c, 1), nn.ReLU(inplace=True), nn.Conv2d(c, k, 1)
        )
        self.unpool_query = self.unpool_key = None
        if config.unpool == "soft":
            self.unpool_query = nn.Conv2d(c, UNPOOL_KEY_CHANNELS, 1)
            self.unpool_key = nn.Linear(config.hidden, UNPOOL_KEY_CHANNELS)
        if self.graph_lstm is not None:
            # Layer 0 starts from a zero state: its state projections only multiply
            # zeros and can never learn. Frozen, they leave no trainable parameter
            # without a gradient (what DDP requires).
            for first in self.graph_lstm.layers[0]:
                first.lin_h.weight.requires_grad_(False)
                first.lin_fn.weight.requires_grad_(False)

    def node_scores(
        self,
        confidence_logits: Tensor,
        superpixels: Tensor,
        num_nodes: Tensor,
        pos: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The per-node score that orders the update (higher first)."""
        order = self.config.order
        total = int(num_nodes.sum())
        if order in ("confidence", "reverse-confidence"):
            probs = pool(confidence_logits.detach().softmax(dim=1), superpixels, num_nodes)
            confidence = probs.max(dim=1).values
            return confidence if order == "confidence" else -confidence
        if order == "random":
            return random_score(total, generator).to(confidence_logits.device)
        if pos is None:
            raise ValueError("order='raster' needs 'pos', the superpixel centroids")
        return raster_score(pos, superpixels.size(-1)).to(confidence_logits.device)

    def forward(
        self,
        image: Tensor,
        superpixels: Tensor,
        edge_index: Tensor,
        num_nodes: Tensor,
        pos: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SegmenterOutput:
        self._check_inputs(image, superpixels)
        feats = self.backbone(image)
        confidence_logits = self.confidence_head(feats)
        # The superpixel part runs in float32 also under autocast: the recurrence
        # carries its memory through every level, and the order must not depend on
        # low-precision ties of the confidence.
        with torch.autocast(image.device.type, enabled=False):
            # At least float32: a float64 model stays float64.
            precise = torch.promote_types(feats.dtype, torch.float32)
            precise_feats = feats.to(precise)
            score = self._finite_scores(confidence_logits.to(precise), superpixels, num_nodes,
                                        pos, generator)
            schedule = build_schedule(edge_index, int(num_nodes.sum()), score=score)

            nodes = self.node_in(pool(precise_feats, superpixels, num_nodes))
            if self.graph_lstm is not None:
                nodes, _ = self.graph_lstm(nodes, edge_index, schedule=schedule)
        logits = self._pixel_logits(feats, nodes, superpixels, num_nodes)
        return SegmenterOutput(logits, confidence_logits, score, schedule)

    # The steps of forward that the structure-evolving model shares.

    def _check_inputs(self, image: Tensor, superpixels: Tensor) -> None:
        if image.dim() != 4 or image.size(1) != self.config.in_channels:
            raise ValueError(
                f"'image' must have shape [B, {self.config.in_channels}, H, W], "
                f"got {list(image.shape)}"
            )
        if superpixels.dim() != 3 or superpixels.shape[0] != image.shape[0] or (
            superpixels.shape[-2:] != image.shape[-2:]
        ):
            raise ValueError(
                f"'superpixels' must have shape [B, H, W] = {[image.size(0), *image.shape[-2:]]}, "
                f"got {list(superpixels.shape)}"
            )

    def _finite_scores(self, confidence_logits: Tensor, superpixels: Tensor, num_nodes: Tensor,
                       pos: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """:meth:`node_scores`, or :class:`NonFiniteScores` where one is not finite."""
        score = self.node_scores(confidence_logits, superpixels, num_nodes, pos, generator)
        if not bool(torch.isfinite(score).all()):
            raise NonFiniteScores(
                "the confidence scores are not finite: the backbone's activations "
                "overflowed (float16 autocast overflows above 65504: check the backbone "
                "weights, or train without --amp) or the weights hold NaN"
            )
        return score

    def _pixel_logits(self, feats: Tensor, nodes: Tensor, superpixels: Tensor,
                      num_nodes: Tensor) -> Tensor:
        """The classifier on the pixel features and their superpixels' final node states."""
        fuse = self.classifier[0]
        width = feats.size(1)
        # The node half of the fusing 1x1 convolution, applied per node (see the
        # module docstring) and in the nodes' precision; its pixel half and the
        # bias follow on the pixels.
        with torch.autocast(feats.device.type, enabled=False):
            node_part = F.linear(nodes, fuse.weight[:, width:, 0, 0])
            if self.unpool_query is None:
                node_pixels = unpool(node_part, superpixels, num_nodes)
            else:
                queries = self.unpool_query(feats.to(nodes.dtype))
                node_pixels = soft_unpool(node_part, self.unpool_key(nodes), queries,
                                          superpixels, num_nodes)
        hidden = F.conv2d(feats, fuse.weight[:, :width], fuse.bias) + node_pixels.to(feats.dtype)
        return self.classifier[2](self.classifier[1](hidden))

    def forward_batch(self, batch, generator: torch.Generator | None = None) -> SegmenterOutput:
        """Run on a PyG ``Batch`` of :class:`segmentation.SuperpixelData`."""
        return self(*batch_inputs(batch), generator)


def batch_inputs(batch) -> tuple:
    """The arguments of :meth:`GraphLSTMSegmenter.forward` from a PyG ``Batch`` of
    :class:`segmentation.SuperpixelData`: ``image, superpixels, edge_index, num_nodes,
    pos`` (for a wrapped model, e.g. ``DistributedDataParallel``: ``net(*batch_inputs(b))``)."""
    return batch.image, batch.superpixels, batch.edge_index, batch.ptr.diff(), batch.pos


def build_segmenter(config: ModelConfig) -> nn.Module:
    """The network a config describes: :class:`GraphLSTMSegmenter`, or
    :class:`segmentation.models.evolving.EvolvingSegmenter` for ``graph_model="evolving"``."""
    if config.graph_model == "evolving":
        from segmentation.models.evolving import EvolvingSegmenter

        return EvolvingSegmenter(config)
    return GraphLSTMSegmenter(config)


def segmentation_loss(output: SegmenterOutput, mask: Tensor, ignore_index: int = 255,
                      reduction: str = "mean") -> Tensor:
    """Per-pixel cross-entropy of the final scores plus that of the confidence head.

    ``reduction="mean"`` averages each term over the pixels whose label is not
    ``ignore_index``; ``"sum"`` adds them up (for a normaliser of your own, e.g.
    the number of valid pixels of a batch split across processes).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"'reduction' must be 'mean' or 'sum', got {reduction!r}")
    mask = mask.long()
    final = F.cross_entropy(output.logits, mask, ignore_index=ignore_index, reduction=reduction)
    confidence = F.cross_entropy(output.confidence_logits, mask, ignore_index=ignore_index,
                                 reduction=reduction)
    return final + confidence
