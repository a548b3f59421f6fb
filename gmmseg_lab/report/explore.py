"""``gmmseg-lab explore``: notebooks 02, 03 and 06 on a folder of unlabeled photographs, as a report.

The report's definition is built in code (:func:`explore_jobs`): each notebook gets ``checkpoint``
and ``images`` (and the softmax model where it has a view of one), checked against its parameters
cell; :func:`explore_report` checks every input, then runs them with the papermill runner of
``gmmseg-lab report``. The per-pixel work lives in :mod:`gmmseg_lab.experiments.explore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..eval.evaluate import resolve_model
from ..experiments.explore import NO_LABELS_NOTE, list_images
from ..io_utils import atomic_write_json
from .runner import JobState, ReportRunner, default_notebooks_dir
from .spec import INJECTED, Job, ReportPlan, ReportSpecError, _check_parameters, notebook_parameters

__all__ = ["EXPLORE_NOTEBOOKS", "ExploreRunner", "explore_jobs", "explore_report"]

#: Notebooks of the explore report and the views they build on unlabeled images.
EXPLORE_NOTEBOOKS = ("02_component_assignments", "03_embedding_tsne", "06_open_world_anomaly")


def explore_jobs(
    checkpoint: str | Path,
    images: str | Path,
    softmax: str | Path | None = None,
    softmax_config: str | Path | None = None,
    max_images: int = 8,
    notebooks_dir: str | Path | None = None,
):
    """The explore report's definition, built in code: one job per notebook of :data:`EXPLORE_NOTEBOOKS`
    with ``checkpoint`` and ``images`` (and the softmax model where the notebook has a view of it),
    checked against each notebook's parameters cell. Returns ``(plan, notebooks_dir)``."""
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    jobs = []
    for name in EXPLORE_NOTEBOOKS:
        path = notebooks_dir / f"{name}.ipynb"
        if not path.is_file():
            raise ReportSpecError(f"no notebook {path} (the explore report runs {', '.join(EXPLORE_NOTEBOOKS)})")
        defaults = notebook_parameters(path)
        missing = [k for k in (*INJECTED, "checkpoint", "images") if k not in defaults]
        if missing:
            raise ReportSpecError(f"{path}: its parameters cell must define {', '.join(missing)} for explore")
        params: dict[str, Any] = {"checkpoint": str(Path(checkpoint).resolve()), "images": str(Path(images).resolve())}
        if "max_images" in defaults:
            params["max_images"] = int(max_images)
        if softmax is not None and "softmax" in defaults:
            params["softmax"] = str(Path(softmax).resolve())
            if softmax_config is not None and "softmax_config" in defaults:
                params["softmax_config"] = str(Path(softmax_config).resolve())
        params = _check_parameters(f"explore ({name})", params, defaults, name)
        jobs.append(Job(name=name, notebook=name, parameters=params))
    return ReportPlan(preset="quick", data_seed=0, jobs=jobs, definition=Path("<gmmseg-lab explore>")), notebooks_dir


def explore_report(
    checkpoint: str | Path,
    images: str | Path,
    out: str | Path,
    softmax: str | Path | None = None,
    softmax_config: str | Path | None = None,
    max_images: int = 8,
    progress: bool = True,
    timeout: int | None = None,
    notebooks_dir: str | Path | None = None,
) -> tuple[dict, list[str]]:
    """Build notebooks 02, 03 and 06 on a folder of unlabeled photographs into a report at ``out``
    (``index.html``, ``summary.json``, ``html/``, ``notebooks/``), with the papermill runner of
    ``gmmseg-lab report``; returns ``(summary, names of the notebooks that did not succeed)``.

    Every input is checked before any notebook runs: the images are read (:func:`list_images`) and
    the model's config and checkpoint resolved (the softmax model's too).

    Raises:
        FileNotFoundError, ValueError, ConfigError, CheckpointError: a missing or unusable input,
            naming it.
    """
    list_images(images, max_images)  # a folder without images fails here, not in three notebooks
    resolve_model(checkpoint)
    if softmax is not None:
        resolve_model(softmax, softmax_config)
    plan, nb_dir = explore_jobs(checkpoint, images, softmax, softmax_config, max_images, notebooks_dir)
    runner = ExploreRunner(out, plan, nb_dir, progress=progress, timeout=timeout)
    summary = runner.run()
    inputs = {
        "checkpoint": str(checkpoint),
        "images": str(images),
        "softmax": None if softmax is None else str(softmax),
        "softmax_config": None if softmax_config is None else str(softmax_config),
        "notebooks": list(EXPLORE_NOTEBOOKS),
        "note": NO_LABELS_NOTE,
    }
    atomic_write_json(Path(runner.out) / "explore.json", inputs)
    return summary, runner.failed


class ExploreRunner(ReportRunner):
    """A :class:`~gmmseg_lab.report.runner.ReportRunner` whose definition is a plan built in code
    (:func:`explore_jobs`) instead of a preset file; one notebook at a time."""

    def __init__(self, out, plan: ReportPlan, notebooks_dir: Path, progress: bool = True, timeout: int | None = None):
        # ReportRunner.__init__ reads a preset file; what it sets is set here from the plan.
        self.out = Path(out).expanduser().resolve()
        self.notebooks_dir = self.definitions_dir = Path(notebooks_dir)
        self.plan, self.jobs, self.progress, self.timeout = plan, 1, progress, timeout
        self.states = {job.name: JobState(job) for job in plan.jobs}
        self._check_existing_data()
