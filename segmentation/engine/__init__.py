"""Engine: training, evaluation, checkpoints, metrics and several processes.

Modules (in the manner of torchvision's segmentation references):
:mod:`~segmentation.engine.train` (``TrainConfig``, ``train``),
:mod:`~segmentation.engine.evaluate` (``evaluate``, ``evaluate_checkpoint``),
:mod:`~segmentation.engine.checkpoint` (the one reader and writer of checkpoints,
for training and inference alike), :mod:`~segmentation.engine.metrics` (confusion
matrix, IoU), :mod:`~segmentation.engine.distributed` (torchrun process groups).

The package exports no functions: ``segmentation.engine.train`` and
``segmentation.engine.evaluate`` name the modules, not their functions.
"""
