"""
Levels, one at a time
=====================

The level-by-level animation of the README (``docs/images/update_levels.gif``)
fills the superpixels of one level per frame: frame *k* shows the superpixels
of levels < *k* filled. Here four of its frames as a still;
:func:`~segmentation.visualize.save_level_animation` writes all of them as a
GIF (or an MP4 where a writer is installed).
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data, transform

from graphlstm import build_schedule
from segmentation import region_adjacency, slic_superpixels
from segmentation.models.orders import score_from_image, smooth_random_field
from segmentation.visualize import level_frames

image = (transform.resize(data.astronaut(), (256, 256)) * 255).astype(np.uint8)
superpixels = slic_superpixels(image, n_segments=300)
edge_index, _ = region_adjacency(superpixels)
num_nodes = int(superpixels.max()) + 1
score = score_from_image(smooth_random_field(image.shape[:2], 0.1, seed=0), superpixels,
                         num_nodes)
schedule = build_schedule(edge_index, num_nodes, score=score)

frames = level_frames(image, superpixels, schedule)   # K + 1 frames, uint8 RGB
print(f"{schedule.num_levels} levels -> {len(frames)} frames of shape {frames[0].shape}")

# %%
# Frames 1/4, 1/2, 3/4 of the way and the last one. To write the animation:
# ``save_level_animation("levels.gif", frames, fps=4)``.
picks = np.linspace(len(frames) // 4, len(frames) - 1, 4).astype(int)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), layout="constrained")
for ax, k in zip(axes, picks, strict=True):
    ax.imshow(frames[k])
    ax.set_title(f"frame {k}", fontsize=10)
    ax.axis("off")
