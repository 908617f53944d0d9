"""Inference: a trained model on images in memory (:mod:`~segmentation.inference.predictor`)
and on image files, in batches, workers and processes (:mod:`~segmentation.inference.files`)."""

from segmentation.inference.files import (
    IMAGE_SUFFIXES,
    OUTPUT_SUFFIXES,
    SUMMARY_COLUMNS,
    ImageFiles,
    LoadedImage,
    list_images,
    output_paths,
    probe_image,
    segment_files,
)
from segmentation.inference.predictor import Prediction, Segmenter, load_segmenter

__all__ = [
    "IMAGE_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "SUMMARY_COLUMNS",
    "ImageFiles",
    "LoadedImage",
    "Prediction",
    "Segmenter",
    "list_images",
    "load_segmenter",
    "output_paths",
    "probe_image",
    "segment_files",
]
