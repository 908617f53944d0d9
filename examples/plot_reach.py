"""
Reach: how far one layer sees, per order
========================================

For every superpixel of a SLIC graph, :func:`graphlstm.reachable` gives the
superpixels whose input can change its output in one Graph LSTM layer (its
reach). Panel (a): the probability that a superpixel *k* hops away is in
reach; panel (b): the mean reach against the graph size, for all superpixels
and for the least confident quarter. A random order barely reaches beyond
the direct neighbours; a smooth score (a stand-in for a confidence) sends
information far, towards the least confident superpixels.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from segmentation.analysis.reach import reach_statistics
from segmentation.visualize import plot_reach_statistics

rows = reach_statistics(n_segments_list=(100, 400), repeats=1, max_hops=6)
for row in rows:
    print(f"N={row['nodes']:>4} {row['kind']:>13}: mean reach {row['mean_reach']:6.1f}, "
          f"least confident quarter {row['least_confident_reach']:6.1f}")

# %%
# The library writes the plot to a file; shown here at its own resolution.
with tempfile.TemporaryDirectory() as folder:
    path = plot_reach_statistics(rows, Path(folder) / "reach.png")
    picture = plt.imread(path)
fig = plt.figure(figsize=(picture.shape[1] / 100, picture.shape[0] / 100), dpi=100)
fig.figimage(picture)
