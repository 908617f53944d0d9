"""Inference: from an image to labels, with the superpixels and the order that produced them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from graphlstm import Schedule
from segmentation.images import check_image
from segmentation.model import GraphLSTMSegmenter
from segmentation.training import load_checkpoint, model_from_checkpoint
from segmentation.transforms import SuperpixelGraph

__all__ = ["Prediction", "Segmenter", "load_segmenter", "overlay"]


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
        image = check_image(image, name="image")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        elif image.shape[2] == 4:
            image = image[..., :3]
        graph = self.transform(image).to(self.device)
        generator = torch.Generator().manual_seed(seed)
        out = self.model(
            graph.image, graph.superpixels, graph.edge_index,
            torch.tensor([graph.num_nodes], device=self.device), graph.pos, generator,
        )
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


def load_segmenter(checkpoint: str | os.PathLike, device="cpu") -> Segmenter:
    """A :class:`Segmenter` from a checkpoint written by :func:`segmentation.training.train`."""
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload)
    return Segmenter(model, payload.get("class_names"), device)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            superpixels: np.ndarray | None = None) -> np.ndarray:
    """The image with the label colours blended in (and superpixel boundaries, if given).

    Returns
    -------
    ndarray ``H×W×3`` uint8
    """
    image = check_image(image, name="image")
    if image.dtype != np.uint8:
        image = np.round(image * 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    if labels.shape != image.shape[:2]:
        raise ValueError(f"'labels' has shape {labels.shape}, the image {image.shape[:2]}")
    colours = np.asarray(palette, dtype=np.float64)[labels]
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colours
    if superpixels is not None:
        from skimage.segmentation import find_boundaries

        blended[find_boundaries(superpixels, mode="inner")] = 255.0
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
