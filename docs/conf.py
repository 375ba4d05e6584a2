"""Sphinx configuration: every Markdown page in docs/ is part of the site (index.md's glob toctree).

Build: python -m sphinx -W --keep-going -b html docs docs/_build/html   (tests/test_docs_build.py)
"""

project = "neuralhash"
author = "the neuralhash authors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Links to a page's section, as GitHub renders them: [text](matching.md#hash-list-formats).
myst_heading_anchors = 4
html_theme = "alabaster"
# The pages are read on GitHub too: no Sphinx-only markup beyond index.md's toctree.
