"""
The MD-LSTM wavefront on a lattice
==================================

On a 2-D lattice in raster order, the same schedule engine finds the
anti-diagonal wavefronts of an MD-LSTM scan: an ``H×W`` grid takes ``H + W - 1``
levels instead of ``H·W`` steps. Each of the four scan directions starts from
its own corner (circled).
"""

from graphlstm import build_schedule, lattice_graph
from segmentation.visualize import plot_lattice_wavefront

# %%
# The graph of a 6×8 lattice scanned in direction 0 (rows top-down, columns
# left to right), and its schedule:
edge_index, edge_type, order = lattice_graph((6, 8), direction=0)
schedule = build_schedule(edge_index, 6 * 8, order=order)
print(schedule.num_levels, "levels for", 6 * 8, "cells")
print(schedule.level.view(6, 8))

# %%
# The four directions, cells coloured by level:
fig = plot_lattice_wavefront((6, 8), directions=(0, 1, 2, 3))
