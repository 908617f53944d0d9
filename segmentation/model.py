"""A Graph LSTM segmentation network in the spirit of Liang et al. (ECCV 2016).

::

    image ──backbone──> pixel features F ──1x1──> confidence logits ──softmax──┐
                          │                                                     │ mean per
                          │ mean per superpixel                                 │ superpixel
                          v                                                     v
                     node inputs ──Graph LSTM──(+)──Graph LSTM──(+)──>   node confidence
                                     one graph, one order (most confident first)
                          node states ──unpool──> pixels ──concat F──1x1──> final logits

The confidence head is a per-pixel classifier; averaged over a superpixel, its
class probabilities give the node's label (argmax) and confidence (the
probability of that label), and the nodes are updated most confident first.
Both Graph LSTM layers share the superpixel graph and the schedule, pass their
state on, and have residual connections (a :class:`graphlstm.GraphLSTMStack`
with ``residual=True``, at ``graph_lstm``). ``graph_layers=0`` gives the same
pipeline without the Graph LSTM: the baseline that shows what context adds.
The first layer starts from a zero state, so its ``lin_h`` and ``lin_fn``
receive no gradient (pass ``find_unused_parameters=True`` to DDP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphlstm import GraphLSTMStack, Schedule, build_schedule
from segmentation.orders import ORDER_KINDS, random_score, raster_score
from segmentation.pooling import pool, unpool

__all__ = ["ModelConfig", "GraphLSTMSegmenter", "SegmenterOutput", "segmentation_loss"]

BACKBONES = ("small", "resnet18", "resnet34", "resnet50")


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
    order : {"confidence", "random", "raster"}
        Update order of the superpixels.
    n_segments, compactness : int, float
        SLIC parameters of the superpixel graphs this model was trained with.
    backbone : {"small", "resnet18", "resnet34", "resnet50"}
        ``small`` is trained from scratch; the ResNets need torchvision and a
        local weights file (``backbone_weights``), never downloaded.
    backbone_weights : str, optional
        Path of a torchvision state dict for the ResNet backbones.
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
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels", "width", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"'{name}' must be a positive int, got {value!r}")
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


def _conv_block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A small CNN trained from scratch, deliberately local: three 3x3 convolutions
    at full resolution see 7x7 pixels, so what lies further away reaches a pixel
    only through the superpixel graph. (For real photographs, a pretrained
    torchvision backbone is the better start.)"""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_block(in_channels, width), _conv_block(width, width), _conv_block(width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class TorchvisionBackbone(nn.Module):
    """A torchvision ResNet (up to ``layer2``, stride 8) from a local weights file."""

    def __init__(self, name: str, weights_path: str | None, width: int, in_channels: int):
        super().__init__()
        try:
            import torchvision
        except ImportError as err:
            raise ValueError(
                f"backbone {name!r} needs torchvision, which is not installed; "
                f"use backbone='small'"
            ) from err
        if in_channels != 3:
            raise ValueError(f"backbone {name!r} takes 3 input channels, got {in_channels}")
        net = getattr(torchvision.models, name)(weights=None)
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1,
                                  net.layer2)
        out = net.layer2[-1].conv1.in_channels
        self.proj = _conv_block(out, width)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.proj(self.body(x))
        return F.interpolate(feats, size=x.shape[-2:], mode="bilinear", align_corners=False)


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
        if config.backbone == "small":
            self.backbone = SmallBackbone(config.in_channels, c)
        else:
            self.backbone = TorchvisionBackbone(config.backbone, config.backbone_weights, c,
                                                config.in_channels)
        self.confidence_head = nn.Conv2d(c, k, 1)
        self.node_in = nn.Linear(c, config.hidden)
        self.graph_lstm = None
        if config.graph_layers > 0:
            self.graph_lstm = GraphLSTMStack(config.hidden, config.hidden,
                                             num_layers=config.graph_layers, residual=True)
        self.register_load_state_dict_pre_hook(_rename_graph_layers)
        self.classifier = nn.Sequential(
            nn.Conv2d(c + config.hidden, c, 1), nn.ReLU(inplace=True), nn.Conv2d(c, k, 1)
        )

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
        if order == "confidence":
            probs = pool(confidence_logits.detach().softmax(dim=1), superpixels, num_nodes)
            return probs.max(dim=1).values
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
        feats = self.backbone((image - 0.5) / 0.25)
        confidence_logits = self.confidence_head(feats)
        score = self.node_scores(confidence_logits, superpixels, num_nodes, pos, generator)
        schedule = build_schedule(edge_index, int(num_nodes.sum()), score=score)

        nodes = self.node_in(pool(feats, superpixels, num_nodes))
        if self.graph_lstm is not None:
            nodes, _ = self.graph_lstm(nodes, edge_index, schedule=schedule)
        node_pixels = unpool(nodes, superpixels, num_nodes)
        logits = self.classifier(torch.cat([feats, node_pixels], dim=1))
        return SegmenterOutput(logits, confidence_logits, score, schedule)

    def forward_batch(self, batch, generator: torch.Generator | None = None) -> SegmenterOutput:
        """Run on a PyG ``Batch`` of :class:`segmentation.SuperpixelData`."""
        return self(batch.image, batch.superpixels, batch.edge_index, batch.ptr.diff(),
                    batch.pos, generator)


def _rename_graph_layers(module, state_dict, prefix, *args) -> None:
    # Checkpoints from before GraphLSTMStack held layer l at graph_layers.l.
    old = prefix + "graph_layers."
    for key in [k for k in state_dict if k.startswith(old)]:
        layer, _, rest = key[len(old):].partition(".")
        state_dict[f"{prefix}graph_lstm.layers.{layer}.0.{rest}"] = state_dict.pop(key)


def segmentation_loss(output: SegmenterOutput, mask: Tensor, ignore_index: int = 255) -> Tensor:
    """Per-pixel cross-entropy of the final scores plus that of the confidence head."""
    mask = mask.long()
    final = F.cross_entropy(output.logits, mask, ignore_index=ignore_index)
    confidence = F.cross_entropy(output.confidence_logits, mask, ignore_index=ignore_index)
    return final + confidence
