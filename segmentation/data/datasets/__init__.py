"""Segmentation datasets: PASCAL VOC style folders, procedural scenes (street
scenes with look-alike classes, and long-range scenes whose context is far away),
and mosaics of real texture photographs."""

from segmentation.data.datasets.long_range import (
    LONG_RANGE_CLASSES,
    LongRangeScenes,
    generate_long_range_scene,
)
from segmentation.data.datasets.mosaics import (
    MOSAIC_CLASSES,
    generate_mosaic,
    write_mosaic_voc,
)
from segmentation.data.datasets.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    generate_scene,
    write_synthetic_voc,
)
from segmentation.data.datasets.voc import VOC_CLASSES, VOCSegmentation, write_voc

__all__ = [
    "LONG_RANGE_CLASSES",
    "LongRangeScenes",
    "MOSAIC_CLASSES",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "SyntheticScenes",
    "VOCSegmentation",
    "generate_long_range_scene",
    "generate_mosaic",
    "generate_scene",
    "write_mosaic_voc",
    "write_synthetic_voc",
    "write_voc",
]
