"""Segmentation datasets: PASCAL VOC style folders and procedural scenes."""

from segmentation.datasets.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    generate_scene,
    write_synthetic_voc,
)
from segmentation.datasets.voc import VOC_CLASSES, VOCSegmentation, write_voc

__all__ = [
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "SyntheticScenes",
    "VOCSegmentation",
    "generate_scene",
    "write_synthetic_voc",
    "write_voc",
]
