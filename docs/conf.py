"""Sphinx configuration of the vmap_core documentation.

Built with warnings as errors by ``.ci/docs`` (HTML, then the doctest builder,
which runs every example of the tutorials).  autodoc imports the *installed*
package (``pip install ".[docs]"`` or an editable install): the core is a
compiled extension, so ``src/`` is deliberately not put on ``sys.path``.
"""

from __future__ import annotations

import os
import sys

try:
    import vmap_core
except ImportError as exc:  # pragma: no cover
    sys.exit(f"docs: cannot import vmap_core ({exc}); its core is compiled: "
             "pip install \".[docs]\" (or pip install -e \".[docs]\") first")

project = "vmap_core"
author = "the vmap_core maintainers"
copyright = "the vmap_core maintainers, MIT licence"
release = vmap_core.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# The README's images live here too; they are not pages.
html_static_path: list[str] = []

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# The stub's and the modules' annotations name types from these modules.
autodoc_type_aliases: dict[str, str] = {}
nitpicky = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
}
# CI has no network: intersphinx only when asked (VMAP_DOCS_INTERSPHINX=1).
if not os.environ.get("VMAP_DOCS_INTERSPHINX"):
    intersphinx_mapping = {}

# Every tutorial example runs: `sphinx-build -b doctest`.  Each page sets up
# its own names in a testsetup block; the global setup imports, says whether
# the conformance kit is there (KIT, for :skipif:) and runs from the checkout's
# root, so that paths read as in the shell examples.
doctest_global_setup = f"""
import importlib.util
import os
import vmap_core
KIT = importlib.util.find_spec("hypothesis") is not None and \\
    importlib.util.find_spec("vmap_core.testing") is not None
os.chdir({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
"""
doctest_test_doctest_blocks = "default"

html_theme = "furo"
html_title = f"vmap_core {release}"


# The conformance kit (vmap_core.testing) needs Hypothesis (the testing extra):
# where it is not installed, the kit's reference on testing.md says how to get
# it instead of failing the build.
def _kit_available() -> bool:
    try:
        import vmap_core.testing  # noqa: F401
    except ImportError:
        return False
    return True


def _kit_api(app, docname, source):  # type: ignore[no-untyped-def]
    if docname != "testing" or _kit_available():
        return
    head, rest = source[0].split("<!-- kit-api -->", 1)
    _, tail = rest.split("<!-- /kit-api -->", 1)
    source[0] = (head + "The reference of `vmap_core.testing` appears here when the kit is "
                 "installed (`pip install \".[testing]\"`).\n" + tail)


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("source-read", _kit_api)
