"""The documentation site: it builds with ``mkdocs build --strict``, every page is reachable, it reads
offline, and the API page documents the GMM core.

The site is built once per module into a temporary folder (about ten seconds; mkdocstrings reads the
code statically, nothing is imported). ``--strict`` with ``validation`` set to ``warn`` in mkdocs.yml
turns every broken link, unknown anchor, page missing from the nav and docstring-rendering problem
into a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]', or make setup)")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"
#: Objects the API page must document, as the anchors mkdocstrings gives them.
API_OBJECTS = (
    "gmmseg_lab.gmm.classifier.GMMClassifier",
    "gmmseg_lab.gmm.density.diag_gaussian_log_prob",
    "gmmseg_lab.gmm.sinkhorn.sinkhorn",
)
#: TeX macros whose glyphs need MathJax's TeX fonts, which the bundled MathJax does not ship (it has
#: the STIX web fonts only): a page using them would fetch missing files and log errors.
UNSHIPPED_FONT_MACROS = ("\\mathcal", "\\mathbb", "\\mathscr", "\\mathfrak")


def _config() -> dict:
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def _nav_pages(nav) -> list[str]:
    """Every page path of an mkdocs ``nav`` (nested sections flattened, external links left out)."""
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += _nav_pages(value)
        elif isinstance(value, str) and not re.match(r"^[a-z]+://", value):
            pages.append(value)
    return pages


def _doc_pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(CONFIG), "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_the_site_builds_strictly(site):
    assert (site / "index.html").is_file()


def test_every_page_is_in_the_nav_and_every_nav_page_was_built(site):
    nav = _nav_pages(_config()["nav"])
    assert len(nav) == len(set(nav)), f"pages listed twice in the nav: {sorted({p for p in nav if nav.count(p) > 1})}"
    pages = _doc_pages()
    assert sorted(set(pages) - set(nav)) == [], "pages in docs/ that the nav of mkdocs.yml does not list"
    assert sorted(set(nav) - set(pages)) == [], "nav entries with no page in docs/"
    for page in nav:
        built = site / (page[: -len(".md")] + ".html")  # use_directory_urls: false
        assert built.is_file(), f"{page} was not built to {built.relative_to(site)}"


class _AssetURLs(HTMLParser):
    """The ``src`` of every ``<script>`` and the ``href`` of every ``<link>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(("script", attrs["src"]))
        elif tag == "link" and attrs.get("href"):
            self.urls.append(("link", attrs["href"]))


def test_pages_load_nothing_from_the_network(site):
    """No script or stylesheet (fonts, MathJax, polyfills) from a CDN: the site must read offline."""
    remote = []
    for page in sorted(site.rglob("*.html")):
        parser = _AssetURLs()
        parser.feed(page.read_text(encoding="utf-8"))
        remote += [
            f"{page.relative_to(site)}: <{tag}> {url}"
            for tag, url in parser.urls
            if re.match(r"^(https?:)?//", url.strip(), flags=re.IGNORECASE)
        ]
    assert remote == [], "pages that load assets from the network:\n" + "\n".join(remote)
    assert _config()["theme"].get("font") is False, (
        "theme.font must be false (Material's default fonts come from Google)"
    )


def test_mathjax_and_the_offline_search_ship_with_the_site(site):
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()
    assert (site / "assets" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert list((site / "assets" / "mathjax" / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").glob("*.woff"))
    method = (site / "method.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in method, "the method page's equations are not marked for MathJax"
    assert 'src="assets/mathjax/MathJax.js"' in method
    # Material's offline plugin: the search index as a script, read from file: pages.
    assert (site / "search" / "search_index.js").is_file()


def test_equations_use_only_macros_the_bundled_fonts_cover():
    found = [
        f"{page}: {macro}"
        for page in _doc_pages()
        for macro in UNSHIPPED_FONT_MACROS
        if macro in (DOCS / page).read_text(encoding="utf-8")
    ]
    assert found == [], "macros whose TeX fonts are not bundled (use plain letters or Unicode, e.g. ℝ):\n" + "\n".join(
        found
    )


def test_the_api_page_documents_the_gmm_core(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    missing = [name for name in API_OBJECTS if f'id="{name}"' not in api]
    assert missing == [], f"api.html documents no {missing}"
    # Every public submodule of gmmseg_lab.gmm has its section (a new module needs a ::: line in docs/api.md).
    modules = sorted(
        f"gmmseg_lab.gmm.{p.stem}" for p in (ROOT / "gmmseg_lab" / "gmm").glob("*.py") if not p.stem.startswith("_")
    )
    undocumented = [m for m in modules if f'id="{m}"' not in api]
    assert undocumented == [], f"submodules of gmmseg_lab.gmm missing from docs/api.md: {undocumented}"
