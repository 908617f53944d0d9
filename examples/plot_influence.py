"""
Influence: the reach of one superpixel
======================================

In one Graph LSTM layer from a zero state, a superpixel's output depends on
the input of another exactly when a path of strictly increasing rank joins
them (see the design page, "Reach"). Here one superpixel with one of the lowest
smooth scores, and what four orders let into its output, shaded by hop
distance. The smooth score lets many superpixels in, its reverse only the
target itself, a random order a few neighbours.
"""

import numpy as np
import torch
from skimage import data, transform

from graphlstm import build_schedule, reachable
from segmentation import region_adjacency, slic_superpixels, superpixel_centroids
from segmentation.models.orders import (
    random_score,
    raster_score,
    score_from_image,
    smooth_random_field,
)
from segmentation.visualize import plot_influence

image = (transform.resize(data.astronaut(), (256, 256)) * 255).astype(np.uint8)
superpixels = slic_superpixels(image, n_segments=300)
edge_index, _ = region_adjacency(superpixels)
num_nodes = int(superpixels.max()) + 1
smooth = score_from_image(smooth_random_field(image.shape[:2], 0.1, seed=0), superpixels,
                          num_nodes)
scores = {
    "smooth score": smooth,
    "reverse smooth score": -smooth,
    "random": random_score(num_nodes, torch.Generator().manual_seed(0)),
    "raster": raster_score(superpixel_centroids(superpixels), image.shape[1]),
}
schedules = {name: build_schedule(edge_index, num_nodes, score=s) for name, s in scores.items()}

# %%
# The target: among the least confident tenth, the one whose reach under the
# smooth score is largest.
reach = reachable(edge_index, num_nodes, torch.arange(num_nodes), score=smooth)
candidates = torch.argsort(smooth)[: num_nodes // 10]
target = int(candidates[reach[candidates].sum(1).argmax()])
for name, s in scores.items():
    size = int(reachable(edge_index, num_nodes, [target], score=s).sum())
    print(f"{name:>20}: {size} superpixels in reach")

fig = plot_influence(image, superpixels, edge_index, target, schedules)
