"""Execute one notebook with papermill and export it to HTML; run by the report runner in a subprocess.

A subprocess per notebook gives each one its own thread settings (``OMP_NUM_THREADS`` is inherited by
the kernel) and keeps a crash in one notebook from taking the runner down. The outcome is written to
``outcome.json``; the executed notebook and its HTML are written atomically (temp file, then rename),
also for a failed notebook, whose error cell is then visible in the page.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from ..io_utils import atomic_write_json, atomic_write_text

TEMPLATES = Path(__file__).parent / "templates"


def export_html(ipynb: Path, html: Path) -> None:
    """nbconvert the executed notebook to a self-contained page that needs no network."""
    import nbformat
    from nbconvert import HTMLExporter


    nb = nbformat.read(str(ipynb), as_version=4)
    nb.metadata.pop("widgets", None)  # widget state would pull the widget manager from a CDN
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": ipynb.stem}})
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
        pm.execute_notebook(spec["input"], str(tmp_nb), parameters=spec["parameters"], kernel_name="python3",
                            progress_bar=False, cwd=spec["cwd"], log_output=False,
                            execution_timeout=spec.get("timeout"))
    except pm.PapermillExecutionError as err:
        outcome = {"status": "failed", "error": f"{err.ename}: {err.evalue}", "cell": err.exec_count}
    except Exception as err:  # kernel died, bad notebook, ...: report it, do not crash the runner
        outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc(limit=5)}
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
