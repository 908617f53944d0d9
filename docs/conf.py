"""Sphinx configuration of the graphlstm documentation.

Built offline by ``make docs`` (``sphinx-build -W --keep-going docs docs/_build/html``):
no intersphinx inventories are fetched and no remote image is referenced. The
pages are Markdown (MyST); the API reference is generated from the public names
by autosummary; the gallery (``examples/plot_*.py``) is run by sphinx-gallery at
build time, each example in seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The gallery runs on the CPU with one thread: seconds per example, same pictures
# on every machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import graphlstm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apigen import write_api_pages  # noqa: E402

# The API reference pages (docs/api/, not committed) are written from __all__.
write_api_pages(Path(__file__).resolve().parent / "api")

project = "graphlstm"
author = "the graphlstm authors"
copyright = "2026, the graphlstm authors"  # noqa: A001
version = release = graphlstm.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax served from the site itself (_static/mathjax), not from a CDN: the
    # built pages show their equations offline too.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.codeobj.json"]
templates_path = ["_templates"]

# -- MyST (Markdown pages) -----------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
# Headings get anchors, so that pages link to "design.md#edge-weights" as on GitHub.
myst_heading_anchors = 3
# README-style links between the Markdown pages resolve to the built pages.
myst_links_external_new_tab = False
# The per-seed experiment tables (docs/experiment/*.md) are written by
# experiment.py with their headings at level 3.
suppress_warnings = ["myst.header"]

# -- API reference -------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autoclass_content = "class"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
# "Shapes" (as in PyG's layers) is a section of its own.
napoleon_custom_sections = ["Shapes", ("Fields", "params_style")]
# No intersphinx: the build never goes online. References to torch or PyG names
# stay plain text (nitpicky is off).
nitpicky = False

# -- Gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",        # run every example
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "gallery_helpers.ExampleOrder",
    "plot_gallery": "True",
    "matplotlib_animations": False,
    "image_scrapers": ("gallery_helpers.figure_scraper", "matplotlib"),
    "show_memory": False,
    # The timing pages load a table script from a CDN: not written.
    "write_computation_times": False,
    "min_reported_time": 1,
}

# -- HTML ------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "graphlstm"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
    # No icon links or version switcher: nothing fetched at build or load time
    # beyond the site's own files.
    "icon_links": [],
}
html_show_sourcelink = False
# The guide's pages are one level deep: the section sidebar only helps in the API
# reference and the gallery.
html_sidebars = {"*": [], "api/**": ["sidebar-nav-bs"], "auto_examples/**": ["sidebar-nav-bs"]}


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Leave out members whose code is not this project's.

    PyG generates ``propagate`` and friends for every ``MessagePassing``
    subclass, with PyG's own docstrings; they are documented by PyG.
    """
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and callable(obj) and not module.startswith(("graphlstm", "segmentation")):
        return True
    if what == "class" and "_propagate" in module:
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
