"""Pictures and animations of the update order of a Graph LSTM.

A :class:`graphlstm.Schedule` assigns every superpixel a *rank* (when the
sequential pass updates it) and a *level* (which parallel step updates it:
superpixels of one level are non-adjacent and run together; docs/design.md, "Levels"). This
package turns both into images, one module per subject:

- :mod:`~segmentation.visualize.colors`: :func:`colorize` maps values to RGB
  with a perceptual colormap; :func:`overlay` blends colours over an image and
  marks the superpixel boundaries.
- :mod:`~segmentation.visualize.order`: :func:`rank_image`, :func:`level_image`
  (per-node values painted onto the pixels of a superpixel label map);
  :func:`plot_update_order`, one figure with the rank, the level and the
  confidence (or score) of every superpixel; :func:`plot_order_comparison`,
  rank and level for several orders of the same superpixels.
- :mod:`~segmentation.visualize.animation`: :func:`level_frames` and
  :func:`save_level_animation`, an animation that fills the superpixels level
  by level (GIF, or MP4 where a writer exists).
- :mod:`~segmentation.visualize.lattice`: :func:`lattice_levels`,
  :func:`lattice_wavefront_frames` and :func:`plot_lattice_wavefront`, the same
  engine on a 2-D lattice, where the levels of an MD-LSTM scan are its
  anti-diagonal wavefronts.
- :mod:`~segmentation.visualize.influence`: :func:`plot_influence`, for one
  target superpixel and each order, the superpixels that can influence it
  (its reach), shaded by hop distance or by a model's Jacobian norm.
- :mod:`~segmentation.visualize.explorer`: :func:`order_explorer` and
  :func:`lattice_explorer`, one self-contained interactive HTML page
  (:class:`OrderExplorer`) to click superpixels and see their reach in
  every order, play the levels, and switch orders.
- :mod:`~segmentation.visualize.plots`: :func:`levels_vs_superpixels` and
  :func:`plot_levels_vs_superpixels`, how the number of levels (the critical
  path) grows with the number of superpixels; :func:`plot_reach_statistics`,
  how far one layer lets information travel in each order.

Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas:
nothing is shown and no global ``pyplot`` state is touched. Every file is
written atomically (a temporary file renamed over the destination).

Frame layout
------------
Every animation frame is a ``uint8`` array of shape ``(S + H, W, 3)``: a
counter strip of ``S`` rows on top (``S = 0`` with ``counter=False``) that
reads ``"level k / K"``, and the picture in the bottom ``H`` rows. Frame ``k``
for ``k = 0..K`` (``K`` = number of levels) shows exactly the nodes of the
levels ``< k`` filled: frame 0 has nothing filled, frame ``K`` everything, so
there are ``K + 1`` frames and no title frames.
"""

from segmentation.visualize._common import save_figure
from segmentation.visualize.animation import (
    level_frames,
    mp4_writer_available,
    save_level_animation,
)
from segmentation.visualize.colors import colorize, overlay
from segmentation.visualize.explorer import OrderExplorer, lattice_explorer, order_explorer
from segmentation.visualize.influence import (
    hop_distance,
    influence_picture,
    plot_influence,
    target_superpixel,
)
from segmentation.visualize.lattice import (
    lattice_levels,
    lattice_wavefront_frames,
    plot_lattice_wavefront,
)
from segmentation.visualize.order import (
    level_image,
    plot_order_comparison,
    plot_update_order,
    rank_image,
)
from segmentation.visualize.plots import (
    DEFAULT_N_SEGMENTS,
    LEVEL_ORDER_KINDS,
    levels_vs_superpixels,
    plot_levels_vs_superpixels,
    plot_reach_statistics,
)

__all__ = [
    "DEFAULT_N_SEGMENTS",
    "LEVEL_ORDER_KINDS",
    "OrderExplorer",
    "colorize",
    "hop_distance",
    "influence_picture",
    "lattice_explorer",
    "lattice_levels",
    "lattice_wavefront_frames",
    "level_frames",
    "level_image",
    "levels_vs_superpixels",
    "mp4_writer_available",
    "order_explorer",
    "overlay",
    "plot_lattice_wavefront",
    "plot_levels_vs_superpixels",
    "plot_influence",
    "plot_order_comparison",
    "plot_reach_statistics",
    "plot_update_order",
    "rank_image",
    "save_figure",
    "save_level_animation",
    "target_superpixel",
]
