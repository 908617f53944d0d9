"""Superpixel segmentation with Graph LSTM: images, superpixel graphs, datasets."""

from segmentation.data import RandomFlipScaleCrop, SuperpixelDataset, pad_collate
from segmentation.datasets import SyntheticScenes, VOCSegmentation, write_synthetic_voc
from segmentation.features import (
    EDGE_FEATURE_NAMES,
    FEATURE_NAMES,
    edge_features,
    edge_weight_from_features,
    majority_labels,
    superpixel_centroids,
    superpixel_features,
)
from segmentation.images import (
    IGNORE_INDEX,
    VOC_PALETTE,
    read_image,
    read_mask,
    write_image,
    write_mask_png,
)
from segmentation.model import GraphLSTMSegmenter, ModelConfig
from segmentation.pipeline import Prediction, Segmenter, load_segmenter
from segmentation.pooling import PAD_LABEL, pool, unpool
from segmentation.rag import region_adjacency
from segmentation.superpixels import relabel_contiguous, slic_superpixels
from segmentation.transforms import SuperpixelData, SuperpixelGraph

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
    "superpixel_centroids",
    "superpixel_features",
    "unpool",
    "write_image",
    "write_mask_png",
]
