"""Execute one notebook with papermill and export it to HTML; run by the report runner in a subprocess.

A subprocess per notebook gives each one its own thread settings (``OMP_NUM_THREADS`` is inherited by
the kernel) and keeps a crash in one notebook from taking the runner down. The outcome is written to
``outcome.json``; the executed notebook and its HTML are written atomically (temp file, then rename),
also for a failed notebook, whose error cell is then visible in the page.

The page (:func:`export_html`, template ``templates/offline``) reads figures and text first and needs
no network: each code cell's source is folded in a closed ``<details>`` element, a contents block at
the top links to every markdown heading (:func:`table_of_contents`), and no script comes from a CDN
(plotly.js is embedded; formulas are Unicode text, which needs no MathJax).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from html.parser import HTMLParser
from pathlib import Path

from ..io_utils import atomic_write_json, atomic_write_text

TEMPLATES = Path(__file__).parent / "templates"


class _Headings(HTMLParser):
    """The ``<h1>`` ... ``<h6>`` of an HTML fragment: ``[{"level", "id", "text"}]``, without the anchor
    link nbconvert appends to each."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[dict] = []
        self._open: dict | None = None
        self._skip = 0  # inside the heading's anchor link

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456" and self._open is None:
            self._open = {"level": int(tag[1]), "id": attrs.get("id") or "", "text": ""}
        elif self._open is not None and tag == "a" and "anchor-link" in (attrs.get("class") or ""):
            self._skip += 1

    def handle_endtag(self, tag):
        if self._open is not None and tag == "a" and self._skip:
            self._skip -= 1
        elif self._open is not None and tag == f"h{self._open['level']}":
            self._open["text"] = " ".join(self._open["text"].split())
            if self._open["id"] and self._open["text"]:
                self.found.append(self._open)
            self._open = None

    def handle_data(self, data):
        if self._open is not None and not self._skip:
            self._open["text"] += data


def table_of_contents(nb, exporter) -> list[dict]:
    """Every heading of the notebook's markdown cells, in order: ``[{"level", "id", "text"}]``.

    Each cell is rendered by the exporter's own markdown renderer (nbconvert's, with the exporter's
    anchor settings), so every ``id`` is the one the page gives that heading.
    """
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    entries: list[dict] = []
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "#" not in cell.source and "<h" not in cell.source:
            continue
        renderer = IPythonRenderer(
            escape=False, anchor_link_text=exporter.anchor_link_text, exclude_anchor_links=exporter.exclude_anchor_links
        )
        parser = _Headings()
        parser.feed(MarkdownWithMath(renderer=renderer).render(cell.source))
        parser.close()
        entries.extend(parser.found)
    return entries


def export_html(ipynb: Path, html: Path) -> None:
    """nbconvert the executed notebook to a self-contained page that needs no network, with its code
    folded and a table of contents (template ``templates/offline``)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    nb.metadata.pop("widgets", None)  # widget state would pull the widget manager from a CDN
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])
    resources = {"metadata": {"name": ipynb.stem}, "gmmseg_toc": table_of_contents(nb, exporter)}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    atomic_write_text(html, body)


def main(spec_path: str) -> int:
    import papermill as pm

    spec = json.loads(Path(spec_path).read_text())
    out_nb, out_html, outcome_path = Path(spec["output"]), Path(spec["html"]), Path(spec["outcome"])
    tmp_nb = out_nb.with_name(out_nb.name + ".partial")
    tmp_nb.unlink(missing_ok=True)  # left by a killed build: never promote it as this run's output
    start = time.time()
    outcome: dict = {"status": "ok", "error": None}
    try:
        pm.execute_notebook(
            spec["input"],
            str(tmp_nb),
            parameters=spec["parameters"],
            kernel_name="python3",
            progress_bar=False,
            cwd=spec["cwd"],
            log_output=False,
            execution_timeout=spec.get("timeout"),
        )
    except pm.PapermillExecutionError as err:
        outcome = {"status": "failed", "error": f"{err.ename}: {err.evalue}", "cell": err.exec_count}
    except Exception as err:  # kernel died, bad notebook, ...: report it, do not crash the runner
        outcome = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=5),
        }
    if tmp_nb.is_file():
        os.replace(tmp_nb, out_nb)
        try:
            export_html(out_nb, out_html)
        except Exception as err:
            outcome.setdefault("html_error", f"{type(err).__name__}: {err}")
            if outcome["status"] == "ok":
                outcome = {"status": "failed", "error": f"HTML export failed: {type(err).__name__}: {err}"}
    outcome["seconds"] = round(time.time() - start, 1)
    atomic_write_json(outcome_path, outcome)
    return 0 if outcome["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
