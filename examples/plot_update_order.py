"""
The update order of superpixels: rank and level
===============================================

A Graph LSTM layer updates every superpixel once, in an update order. Every
superpixel gets a **rank** (when the sequential pass updates it) and a
**level**: superpixels of one level are never adjacent, so a whole level is
updated at once (see the design page, "Levels"). Here a smooth random score
stands in for a trained model's confidence; higher scores go first.
"""

import numpy as np
from skimage import data, transform

from graphlstm import build_schedule
from segmentation import region_adjacency, slic_superpixels
from segmentation.models.orders import score_from_image, smooth_random_field
from segmentation.visualize import plot_update_order

image = (transform.resize(data.astronaut(), (256, 256)) * 255).astype(np.uint8)
superpixels = slic_superpixels(image, n_segments=300)
edge_index, _ = region_adjacency(superpixels)
num_nodes = int(superpixels.max()) + 1

# %%
# A score per pixel, averaged over each superpixel, gives the order.
score_map = smooth_random_field(image.shape[:2], 0.1, seed=0)
score = score_from_image(score_map, superpixels, num_nodes)
schedule = build_schedule(edge_index, num_nodes, score=score)
print(f"{num_nodes} superpixels updated in {schedule.num_levels} parallel levels")

# %%
# Panel (a) colours every superpixel by its rank, (b) by its level, (c) shows
# the score.
fig = plot_update_order(image, superpixels, schedule, confidence=score_map,
                        confidence_label="smooth score (higher = earlier)")
