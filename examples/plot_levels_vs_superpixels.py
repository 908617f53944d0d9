"""
Levels against superpixels
==========================

A sequential pass over ``N`` superpixels takes ``N`` dependent steps; the
level-by-level schedule takes as many steps as there are levels, which grow
far slower than ``N`` (see the design page, "Levels").
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from segmentation.visualize import levels_vs_superpixels, plot_levels_vs_superpixels

results = levels_vs_superpixels(n_segments_list=(50, 100, 200, 400, 800))
for kind, levels in results["levels"].items():
    pairs = ", ".join(f"{n}: {k}" for n, k in zip(results["num_nodes"], levels, strict=True))
    print(f"{kind:>12} (superpixels: levels) {pairs}")

# %%
# The library writes the plot to a file; shown here at its own resolution.
with tempfile.TemporaryDirectory() as folder:
    path = plot_levels_vs_superpixels(Path(folder) / "levels.png", results=results)
    picture = plt.imread(path)
fig = plt.figure(figsize=(picture.shape[1] / 100, picture.shape[0] / 100), dpi=100)
fig.figimage(picture)
