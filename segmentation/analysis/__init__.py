"""Analysis of what an update order lets a model see: reach statistics and hop
distances (:mod:`~segmentation.analysis.reach`) and gradient influence
(:mod:`~segmentation.analysis.influence`)."""
