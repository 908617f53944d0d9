"""Inference: from an image to labels, with the superpixels and the order that produced them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from graphlstm import Schedule
from segmentation.data.images import check_image
from segmentation.data.loading import group_by_size, pad_collate
from segmentation.data.transforms import SuperpixelGraph
from segmentation.engine.checkpoint import load_checkpoint, model_from_checkpoint
from segmentation.models.segmenter import GraphLSTMSegmenter

__all__ = ["GraphPrediction", "Prediction", "Segmenter", "load_segmenter"]

#: Where a batched forward pass leaves two class probabilities of a pixel closer
#: than this, the image is segmented again alone (see Segmenter.predict_graphs).
TIE_TOLERANCE = 1e-5


@dataclass
class Prediction:
    """What :meth:`Segmenter.predict` returns for one image.

    Attributes
    ----------
    labels : ndarray ``H×W`` uint8
        Predicted class per pixel.
    probabilities : ndarray ``K×H×W`` float32
        Final class probabilities.
    confidence : ndarray ``H×W`` float32
        Per-pixel confidence of the confidence head (probability of its argmax).
    superpixels : ndarray ``H×W`` int64
        Superpixel labels ``0..N-1``.
    edge_index : LongTensor ``[2, E]``
        Region adjacency graph.
    pos : Tensor ``[N, 2]``
        Superpixel centroids (x, y).
    node_score : Tensor ``[N]``
        The score that ordered the update (higher first).
    schedule : Schedule
        Order, ranks and levels of the update.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    confidence: np.ndarray
    superpixels: np.ndarray
    edge_index: Tensor
    pos: Tensor
    node_score: Tensor
    schedule: Schedule


class GraphPrediction(NamedTuple):
    """What :meth:`Segmenter.predict_graphs` returns for every graph."""

    labels: np.ndarray  # H×W uint8
    probabilities: Tensor  # [K, H, W] float32, on the CPU
    levels: int  # levels of the update schedule of this image
    recomputed_alone: bool  # segmented again alone: the batch left a near tie


class Segmenter:
    """A trained model with its superpixel settings, ready to segment images.

    Parameters
    ----------
    model : GraphLSTMSegmenter
    class_names : list of str, optional
    device : str or torch.device
    """

    def __init__(self, model: GraphLSTMSegmenter, class_names=None, device="cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        k = model.config.num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(k)]
        self.transform = SuperpixelGraph(
            n_segments=model.config.n_segments, compactness=model.config.compactness,
            add_features=False,
        )

    @torch.no_grad()
    def predict(self, image: np.ndarray, seed: int = 0) -> Prediction:
        """Segment one ``H×W×3`` (or grayscale ``H×W``) uint8 or float image."""
        # Checked here, once: check_image returns H×W or H×W×3 (one channel squeezed,
        # alpha dropped), so the transform's own input checks are skipped below.
        image = check_image(image, name="image")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        graph = self.transform._data(self.transform._graph(image), image, None)
        graph = graph.to(self.device)
        generator = torch.Generator().manual_seed(seed)
        out = self.model.forward_batch(pad_collate([graph]), generator)
        probs = out.logits.softmax(1)[0]
        confidence = out.confidence_logits.softmax(1)[0].max(0).values
        return Prediction(
            labels=probs.argmax(0).to(torch.uint8).cpu().numpy(),
            probabilities=probs.float().cpu().numpy(),
            confidence=confidence.float().cpu().numpy(),
            superpixels=graph.superpixels[0].cpu().numpy(),
            edge_index=graph.edge_index.cpu(),
            pos=graph.pos.cpu(),
            node_score=out.node_score.cpu(),
            schedule=out.schedule.to("cpu"),
        )


    @torch.no_grad()
    def predict_graphs(self, graphs: Sequence, seed: int = 0) -> list[GraphPrediction]:
        """Segment superpixel graphs in batches, with the labels :meth:`predict` gives each.

        Graphs of one image size share a forward pass, unpadded (padding would
        change the backbone's features at the border). The backbone and the
        pixel classifier then compute every image exactly as alone, but the
        Graph LSTM multiplies matrices over the nodes of all images of the
        batch, and BLAS rounds a product of a different number of rows
        differently (a probability moved by up to 4e-7 in our measurements on
        the CPU): a pixel whose two best classes are that close could change
        label. So an image of a batch where some pixel's two best probabilities
        are within ``TIE_TOLERANCE`` (1e-5) of each other is segmented again
        alone; the labels do not depend on the batch. (The probabilities of the
        other images agree with those of ``predict`` to float32 rounding.) On
        CUDA, cuDNN may pick other convolution algorithms (TF32 by default) for
        another batch size, which can move probabilities further: there one
        batch composition gives one result. With ``order="random"`` every image
        runs alone, with the random stream of ``seed``, as in :meth:`predict`.

        Parameters
        ----------
        graphs : sequence of SuperpixelData
            From :attr:`transform` (``image``, ``superpixels``, ``edge_index``,
            ``pos``).
        seed : int, optional
            Seed of ``order="random"``.

        Returns
        -------
        list of GraphPrediction
            In the order of ``graphs``.
        """
        if len(graphs) == 0:
            return []
        position = {id(graph): i for i, graph in enumerate(graphs)}
        if self.model.config.order == "random":
            groups = [[graph] for graph in graphs]
        else:
            groups = group_by_size(graphs)
        results: list[GraphPrediction | None] = [None] * len(graphs)
        for group in groups:
            probabilities, levels = self._forward(group, seed)
            doubtful = torch.zeros(len(group), dtype=torch.bool)
            if len(group) > 1:
                top2 = probabilities.topk(2, dim=1).values
                doubtful = ((top2[:, 0] - top2[:, 1]) < TIE_TOLERANCE).flatten(1).any(1).cpu()
            for b, graph in enumerate(group):
                if doubtful[b]:
                    alone, alone_levels = self._forward([graph], seed)
                    probs, level = alone[0], alone_levels[0]
                else:
                    probs, level = probabilities[b], levels[b]
                height, width = graph.superpixels.shape[-2:]
                probs = probs[:, :height, :width].float().cpu()
                results[position[id(graph)]] = GraphPrediction(
                    probs.argmax(0).to(torch.uint8).numpy(), probs, level, bool(doubtful[b]))
        return results

    def _forward(self, graphs: Sequence, seed: int) -> tuple[Tensor, list[int]]:
        """Softmax probabilities ``[B, K, H, W]`` of a batch and its levels per image."""
        batch = pad_collate(list(graphs)).to(self.device)
        generator = torch.Generator().manual_seed(seed)
        out = self.model.forward_batch(batch, generator)
        level = out.schedule.level
        levels = [int(level[batch.ptr[b]:batch.ptr[b + 1]].max()) + 1
                  for b in range(len(graphs))]
        return out.logits.softmax(1), levels


def load_segmenter(checkpoint: str | os.PathLike, device="cpu") -> Segmenter:
    """A :class:`Segmenter` from a checkpoint written by
    :func:`segmentation.engine.train.train`."""
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload)
    return Segmenter(model, payload.get("class_names"), device)


def __getattr__(name: str):
    if name == "overlay":
        import warnings

        from segmentation.inference.files import overlay_labels

        warnings.warn("segmentation.inference.predictor.overlay is now "
                      "segmentation.inference.files.overlay_labels (segmentation.visualize."
                      "overlay draws per-superpixel colours)", DeprecationWarning, stacklevel=2)
        return overlay_labels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
