"""Sphinx configuration of the lmi-mount documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html``. The model page is
generated from the compiled MOF by the local extension ``_ext/lmi_model_docs``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# The local extension, and the package of this checkout (so the docs describe
# the tree they are built from even when another version is installed).
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent / "provider")]

from lmi_mount import __version__  # noqa: E402

project = "lmi-mount"
author = "The lmi-mount authors"
copyright = "2026, The lmi-mount authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = ["sphinx.ext.graphviz", "lmi_model_docs"]
exclude_patterns = ["_build"]
graphviz_output_format = "svg"

# Manual pages: ``sphinx-build -W -b man -d /tmp/doctrees docs dist/man`` writes the pages
# that setup.cfg installs; tests/model/test_docs.py checks they are up to date.
man_pages = [
    ("man/lmi-mountd", "lmi-mountd", "CIM-XML server for Linux mounts and fstab",
     [author], 8),
    ("man/lmi-mount", "lmi-mount", "lmi-mount's view of the host's mounts, plans, fstab edits",
     [author], 8),
    ("man/lmi-mountd.conf", "lmi-mountd.conf", "configuration of lmi-mountd", [author], 5),
]
man_show_urls = False

html_theme = "alabaster"
html_theme_options = {"description": "Linux mounts through CIM/WBEM", "page_width": "1100px"}
