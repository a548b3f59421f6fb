"""Every notebook executed by papermill with the quick parameters (the quick report), as CI sees it."""

from __future__ import annotations

import json

import nbformat
import pytest

from gmmseg_lab.report.spec import INJECTED, notebook_parameters
from gmmseg_lab.report.runner import default_notebooks_dir

NOTEBOOKS = ["00_generative_vs_discriminative", "01_train_and_compare", "02_component_assignments",
             "03_embedding_tsne", "04_calibration", "05_em_vs_sinkhorn", "06_open_world_anomaly"]

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
        assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines()), name
        assert all(not c.get("outputs") for c in code), f"{name}: commit notebooks with cleared outputs"
        assert sum(len(c.source.splitlines()) for c in code) < 60, f"{name}: keep the notebook thin"


def test_quick_report_runs_every_notebook_without_error(quick_report):
    summary = quick_report.summary
    status = {name: job["status"] for name, job in summary["jobs"].items()}
    assert status == {name: "ok" for name in NOTEBOOKS} or set(status.values()) <= {"ok", "reused"}, status
    for name in NOTEBOOKS:
        nb = nbformat.read(str(quick_report.out / "notebooks" / f"{name}.ipynb"), as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
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
            m = json.loads((quick_report.out / "work" / "runs" / f"segformer_{g['group']['head']}_quick_s{seed}" /
                            "metrics.json").read_text())
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
