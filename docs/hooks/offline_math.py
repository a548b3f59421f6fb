"""MkDocs hook: put MathJax inside the built site, so the equations render with no network.

The site must read the same offline as online (a user may open ``site/index.html`` on a machine
without internet), so MathJax cannot come from a CDN. The ``jupyter-server-mathjax`` package (a
dependency of the ``docs`` extra) ships MathJax 2.7 with its STIX web fonts; this hook adds those
files to the site under ``assets/mathjax/`` as if they were in ``docs/``. ``mkdocs.yml`` loads
``javascripts/mathjax-config.js`` (the configuration) and then ``assets/mathjax/MathJax.js``.

Left out, as the pages never need them: the translations other than English and the accessibility
extensions (a speech engine of about 1 MB).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

#: Where MathJax lands in the site (``extra_javascript`` in mkdocs.yml names ``<this>/MathJax.js``).
SITE_FOLDER = "assets/mathjax"
PACKAGE = "jupyter_server_mathjax"
#: Parts of the MathJax tree not copied (paths relative to its root, as posix prefixes).
SKIPPED: tuple[str, ...] = ()


def mathjax_root() -> Path:
    """The installed MathJax tree (``.../jupyter_server_mathjax/static``), found without importing
    the package (its ``__init__`` imports jupyter_server).

    Raises:
        PluginError: the package is not installed, or holds no ``MathJax.js``.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise PluginError(
            f"the docs need MathJax from the {PACKAGE.replace('_', '-')} package: "
            "pip install -e '.[docs]' (or make docs)"
        )
    root = Path(spec.origin).parent / "static"
    if not (root / "MathJax.js").is_file():
        raise PluginError(f"{root}: no MathJax.js; reinstall {PACKAGE.replace('_', '-')}")
    return root


def _wanted(rel: str) -> bool:
    if rel.startswith(SKIPPED):
        return False
    parts = rel.split("/")
    if parts[0] == "localization":  # keep English only
        return len(parts) > 1 and parts[1] == "en"
    return True


def on_files(files: Files, config) -> Files:
    """Add every MathJax file the pages use to the site's files."""
    root = mathjax_root()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and _wanted(rel):
            files.append(File.generated(config, f"{SITE_FOLDER}/{rel}", abs_src_path=str(path)))
    return files
