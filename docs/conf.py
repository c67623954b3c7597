"""Sphinx configuration for xal-sklearn (built with -W in the test suite)."""

import xal_sklearn

project = "xal-sklearn"
author = "xal-sklearn developers"
copyright = "2026, xal-sklearn developers"
release = xal_sklearn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "results/**"]
autosummary_generate = True

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
intersphinx_mapping = {}  # no network at build time
html_theme = "alabaster"
suppress_warnings = ["myst.header"]
myst_heading_anchors = 2  # results.md links to its own sections
nitpicky = False
