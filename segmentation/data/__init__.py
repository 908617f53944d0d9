"""Data: images, superpixels, region adjacency graphs, features, the graph transform,
datasets, and the loading of training data (lazy datasets, padded batches, augmentation).

Modules: :mod:`~segmentation.data.images` (reading and writing),
:mod:`~segmentation.data.superpixels` (SLIC),
:mod:`~segmentation.data.adjacency` (region adjacency graphs),
:mod:`~segmentation.data.features` (node and edge features),
:mod:`~segmentation.data.transforms` (:class:`SuperpixelGraph`),
:mod:`~segmentation.data.datasets` (VOC folders, procedural scenes),
:mod:`~segmentation.data.loading` (:class:`SuperpixelDataset`, :func:`pad_collate`).
"""

from segmentation.data.loading import (
    RandomFlipScaleCrop,
    SuperpixelDataset,
    group_by_size,
    load_training_data,
    pad_collate,
    resize_pair,
)
from segmentation.data.transforms import SuperpixelData, SuperpixelGraph

__all__ = [
    "RandomFlipScaleCrop",
    "SuperpixelData",
    "SuperpixelDataset",
    "SuperpixelGraph",
    "group_by_size",
    "load_training_data",
    "pad_collate",
    "resize_pair",
]
