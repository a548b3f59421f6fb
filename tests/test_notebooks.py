"""Every notebook executed by papermill with the quick parameters (the quick report), as CI sees it."""

from __future__ import annotations

import json

import nbformat
import pytest

from gmmseg_lab.report.runner import default_notebooks_dir
from gmmseg_lab.report.spec import INJECTED, notebook_parameters

NOTEBOOKS = [
    "00_generative_vs_discriminative",
    "01_train_and_compare",
    "02_component_assignments",
    "03_embedding_tsne",
    "04_calibration",
    "05_em_vs_sinkhorn",
    "06_open_world_anomaly",
]

pytestmark = pytest.mark.slow


def test_the_seven_notebooks_exist_thin_and_parameterised():
    folder = default_notebooks_dir()
    assert sorted(p.stem for p in folder.glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        nb = nbformat.read(str(folder / f"{name}.ipynb"), as_version=4)
        params = notebook_parameters(folder / f"{name}.ipynb")
        assert set(INJECTED) <= set(params), name
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        # thin: logic lives in gmmseg_lab; no cell defines functions or classes, no outputs are committed
        assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines()), (
            name
        )
        assert all(not c.get("outputs") for c in code), f"{name}: commit notebooks with cleared outputs"
        assert sum(1 for c in code for line in c.source.splitlines() if line.strip()) < 60, (
            f"{name}: keep the notebook thin"
        )


def test_quick_report_runs_every_notebook_without_error(quick_report):
    summary = quick_report.summary
    status = {name: job["status"] for name, job in summary["jobs"].items()}
    assert status == {name: "ok" for name in NOTEBOOKS} or set(status.values()) <= {"ok", "reused"}, status
    for name in NOTEBOOKS:
        nb = nbformat.read(str(quick_report.out / "notebooks" / f"{name}.ipynb"), as_version=4)
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, f"{name}: error cell {errors[:1]}"
        # every code cell ran (papermill records an execution count for each)
        assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip()), name
        # plotly figures were emitted both for JupyterLab (mime type) and the static page (html)
        kinds = {k for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) for k in o.get("data", {})}
        assert "application/vnd.plotly.v1+json" in kinds and "text/html" in kinds, (name, kinds)
        assert (quick_report.out / "html" / f"{name}.html").stat().st_size > 100_000


def test_quick_report_summary_aggregates_runs_over_seeds(quick_report):
    summary = json.loads((quick_report.out / "summary.json").read_text())
    groups = {(g["notebook"], json.dumps(g["group"], sort_keys=True)): g for g in summary["groups"]}
    twins = [g for (nb, _), g in groups.items() if nb == "01_train_and_compare"]
    assert {g["group"]["head"] for g in twins} == {"gmm", "softmax"}
    for g in twins:
        assert g["seeds"] == [0, 1]
        miou = g["metrics"]["miou"]
        assert miou["n"] == 2 and 0.0 <= miou["mean"] <= 1.0 and miou["std"] >= 0.0
        # the aggregate is the mean of the runs' own metrics.json
        run_values = []
        for seed in (0, 1):
            m = json.loads(
                (
                    quick_report.out
                    / "work"
                    / "runs"
                    / f"segformer_{g['group']['head']}_quick_s{seed}"
                    / "metrics.json"
                ).read_text()
            )
            run_values.append(m["miou"])
        assert miou["mean"] == pytest.approx(sum(run_values) / 2)
    variants = {g["group"]["variant"] for (nb, _), g in groups.items() if nb == "05_em_vs_sinkhorn"}
    assert variants == {"default", "em", "m1", "momentum0.99", "stats"}
    index = (quick_report.out / "index.html").read_text()
    for name in NOTEBOOKS:
        assert f"html/{name}.html" in index


def test_rerun_reuses_every_notebook(quick_report):
    from gmmseg_lab.report.runner import ReportRunner

    again = ReportRunner(quick_report.out, preset="quick", progress=False)
    summary = again.run()
    assert {job["status"] for job in summary["jobs"].values()} == {"reused"}


def test_every_figure_is_followed_by_what_to_look_for_and_math_is_text():
    """Teaching: each figure or table a cell shows is followed by a markdown cell saying what to look
    for; formulas are Unicode text (no TeX, which the offline pages could not typeset)."""
    for name in NOTEBOOKS:
        nb = nbformat.read(str(default_notebooks_dir() / f"{name}.ipynb"), as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                assert "$" not in cell.source and "\\frac" not in cell.source, f"{name} cell {i}: TeX in markdown"
            elif ".show()" in cell.source:
                after = next((c for c in nb.cells[i + 1 :] if c.cell_type == "markdown"), None)
                assert after is not None and "What to look for" in after.source, (
                    f"{name} cell {i} shows a figure without a 'what to look for' cell after it"
                )
        setup = [c for c in nb.cells if c.cell_type == "code" and "resolve_dirs" in c.source]
        assert not setup, f"{name}: start with gmmseg_lab.experiments.notebook.setup(...)"


def test_notebooks_run_top_to_bottom_with_their_defaults_as_opened_in_jupyterlab(tmp_path):
    """A fresh copy of notebooks/, each notebook executed in its own fresh kernel with NO parameters
    injected (preset "quick", work_dir None -> ../runs/lab-quick, live=True: widgets displayed in a
    headless kernel), in the notebooks' folder, in order (01 trains the runs the others reuse)."""
    import shutil
    import time

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    folder = tmp_path / "notebooks"
    shutil.copytree(default_notebooks_dir(), folder)
    seconds = {}
    for name in NOTEBOOKS:
        path = folder / f"{name}.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
        start = time.monotonic()
        try:
            client.execute()
        except CellExecutionError as err:
            pytest.fail(f"{name}, run with its defaults, failed:\n{str(err)[-3000:]}")
        seconds[name] = round(time.monotonic() - start)
        nbformat.write(nb, str(path))
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), name
        outputs = [o for c in code for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        # live=True: the notebook's ipywidgets view was displayed (and its state kept by the client)
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), name
        assert nb.metadata.get("widgets"), name
    print(f"\nseconds per notebook, run with its defaults: {seconds}")
    runs = tmp_path / "runs" / "lab-quick"
    assert (runs / "data" / "meta.json").is_file()
    assert (runs / "runs" / "segformer_gmm_quick_s0" / "metrics.json").is_file()
    assert (runs / "runs" / "segformer_softmax_quick_s0" / "metrics.json").is_file()
