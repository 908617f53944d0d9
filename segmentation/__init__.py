"""Superpixel segmentation with Graph LSTM: images, superpixel graphs, datasets, models,
training and inference.

Subpackages: :mod:`~segmentation.data` (images, superpixels, adjacency, features,
transforms, datasets, loading), :mod:`~segmentation.models` (the segmenter, backbones,
pooling, orders), :mod:`~segmentation.engine` (train, evaluate, checkpoint, metrics,
distributed), :mod:`~segmentation.inference` (predictor, files),
:mod:`~segmentation.analysis` (reach, influence), :mod:`~segmentation.visualize`
(pictures) and :mod:`~segmentation.cli` (the command-line programs). The names below
are the ones most programs need.
"""

from segmentation import _moved
from segmentation.data.adjacency import region_adjacency
from segmentation.data.datasets import SyntheticScenes, VOCSegmentation, write_synthetic_voc
from segmentation.data.features import (
    EDGE_FEATURE_NAMES,
    FEATURE_NAMES,
    edge_features,
    edge_weight_from_features,
    majority_labels,
    superpixel_centroids,
    superpixel_features,
)
from segmentation.data.images import (
    IGNORE_INDEX,
    VOC_PALETTE,
    read_image,
    read_mask,
    write_image,
    write_mask_png,
)
from segmentation.data.loading import RandomFlipScaleCrop, SuperpixelDataset, pad_collate
from segmentation.data.superpixels import relabel_contiguous, slic_superpixels
from segmentation.data.transforms import SuperpixelData, SuperpixelGraph
from segmentation.inference.predictor import Prediction, Segmenter, load_segmenter
from segmentation.models.pooling import PAD_LABEL, pool, soft_unpool, unpool
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

_moved.install()

__all__ = [
    "EDGE_FEATURE_NAMES",
    "FEATURE_NAMES",
    "IGNORE_INDEX",
    "PAD_LABEL",
    "VOC_PALETTE",
    "GraphLSTMSegmenter",
    "ModelConfig",
    "Prediction",
    "RandomFlipScaleCrop",
    "Segmenter",
    "SyntheticScenes",
    "VOCSegmentation",
    "load_segmenter",
    "write_synthetic_voc",
    "SuperpixelData",
    "SuperpixelDataset",
    "SuperpixelGraph",
    "edge_features",
    "edge_weight_from_features",
    "majority_labels",
    "pad_collate",
    "pool",
    "read_image",
    "read_mask",
    "region_adjacency",
    "relabel_contiguous",
    "slic_superpixels",
    "soft_unpool",
    "superpixel_centroids",
    "superpixel_features",
    "unpool",
    "write_image",
    "write_mask_png",
]


def __getattr__(name: str):
    # ``segmentation.model`` etc. without an import statement: the former module names.
    return _moved.module_attribute(name)
