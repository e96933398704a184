"""Sphinx configuration of the gumbax documentation.

Build the site with ``python -m sphinx -W --keep-going docs docs/_build/html`` from the
repository root, and run every example in it with ``python -m sphinx -b doctest docs
docs/_build/doctest``. Sphinx is the generator because the docstrings are written for
it (Google style, read by napoleon) and its doctest builder runs the examples of the
pages and of the docstrings alike; MyST lets the pages be Markdown.
"""

import pathlib
import sys

DOCS = pathlib.Path(__file__).parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # gumbax and experiments from this checkout
sys.path.insert(0, str(DOCS / "_ext"))

project = "gumbax"
author = "the gumbax authors"
copyright = "the gumbax authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "myst_parser",
    "config_reference",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# The results pages and the variance study's table are Markdown pages of the repository
# that the site links to on GitHub-style relative paths; they are not site pages.
# variance_vae_categorical/table.md is a generated table without a title, linked from the
# results pages, not a page of its own.
exclude_patterns = ["_build", "_generated", "variance_vae_categorical"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_custom_sections = [("References", "notes_style")]

# The pages' examples are `{testcode}` blocks, run by `sphinx-build -b doctest`; the
# blocks of one page share one namespace, in order. The docstrings' `>>>` examples run
# too, in the group "default" of the page that shows them (the API reference); each
# defines its own inputs, with only the names of `doctest_global_setup` given.
doctest_test_doctest_blocks = "default"
doctest_global_setup = """
import jax
import jax.numpy as jnp
import gumbax
"""

html_theme = "furo"
html_title = "gumbax"
