"""
Three update orders of the same superpixels
===========================================

The order decides how many parallel levels a Graph LSTM layer needs. A smooth
score (a stand-in for a model's confidence) gives coherent wavefronts; a
random order few but scattered levels; a raster order (top row first) the
most levels.
"""

import numpy as np
import torch
from skimage import data, transform

from graphlstm import build_schedule
from segmentation import region_adjacency, slic_superpixels, superpixel_centroids
from segmentation.models.orders import (
    random_score,
    raster_score,
    score_from_image,
    smooth_random_field,
)
from segmentation.visualize import plot_order_comparison

image = (transform.resize(data.astronaut(), (256, 256)) * 255).astype(np.uint8)
superpixels = slic_superpixels(image, n_segments=300)
edge_index, _ = region_adjacency(superpixels)
num_nodes = int(superpixels.max()) + 1

scores = {
    "smooth score": score_from_image(smooth_random_field(image.shape[:2], 0.1, seed=0),
                                     superpixels, num_nodes),
    "random": random_score(num_nodes, torch.Generator().manual_seed(0)),
    "raster": raster_score(superpixel_centroids(superpixels), image.shape[1]),
}
schedules = {name: build_schedule(edge_index, num_nodes, score=score)
             for name, score in scores.items()}
for name, schedule in schedules.items():
    print(f"{name:>12}: {schedule.num_levels} levels for {num_nodes} superpixels")

# %%
# Top row: the rank of every superpixel; bottom row: its level.
fig = plot_order_comparison(image, superpixels, schedules)
