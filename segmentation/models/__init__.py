"""Models: the segmentation network around the Graph LSTM, its backbones, the pooling
of pixels into superpixels and back, and the update orders of the superpixels.

Modules: :mod:`~segmentation.models.segmenter` (:class:`GraphLSTMSegmenter`),
:mod:`~segmentation.models.evolving` (the structure-evolving network),
:mod:`~segmentation.models.backbones` (a small CNN and dilated ResNets),
:mod:`~segmentation.models.pooling` (:func:`pool`, :func:`unpool`),
:mod:`~segmentation.models.orders` (scores that set the update order).
"""

from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

__all__ = ["GraphLSTMSegmenter", "ModelConfig"]
