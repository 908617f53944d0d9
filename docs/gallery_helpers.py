"""Gallery helpers: an image scraper for the figures the library returns, and the
examples' order.

The drawing functions of :mod:`segmentation.visualize` return
:class:`matplotlib.figure.Figure` objects on the Agg canvas without touching
``pyplot``, so sphinx-gallery's own matplotlib scraper does not see them. This
scraper saves every such figure that an example holds in a global variable,
once, after the code block that made it.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from sphinx_gallery.scrapers import figure_rst

_SEEN = "_gallery_scraped"


def figure_scraper(block, block_vars, gallery_conf) -> str:
    """Save the library's figures held in the example's globals (runs before the
    matplotlib scraper, which takes pyplot's own figures and closes them)."""
    figures = []
    for value in block_vars["example_globals"].values():
        if not isinstance(value, Figure) or getattr(value, _SEEN, False):
            continue
        setattr(value, _SEEN, True)
        # pyplot's figures have a manager: sphinx-gallery's own scraper takes them.
        if getattr(value.canvas, "manager", None) is None:
            figures.append(value)
    paths = []
    for figure, path in zip(figures, block_vars["image_path_iterator"], strict=False):
        figure.savefig(path, dpi=figure.dpi)
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"]) if paths else ""


# The gallery's reading order: the order and its levels first, then what an order
# lets through, then a model.
ORDER = [
    "plot_update_order.py",
    "plot_order_comparison.py",
    "plot_level_animation.py",
    "plot_lattice_wavefront.py",
    "plot_levels_vs_superpixels.py",
    "plot_reach.py",
    "plot_influence.py",
    "plot_segmentation.py",
    "plot_evolving_hierarchy.py",
]


class ExampleOrder:
    """Sort key of sphinx-gallery's ``within_subsection_order``: :data:`ORDER`, then
    any example not listed, by file name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename: str):
        return (ORDER.index(filename), "") if filename in ORDER else (len(ORDER), filename)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
