"""Reports: papermill-executed notebooks, an index page and aggregated metrics (``gmmseg-lab report``).

Notebooks call :func:`record_runs` to hand their runs' metrics to the report; the runner
(:func:`build_report`) validates the definition, executes the notebooks and writes the report.
"""

from .results import aggregate, flatten_metrics, format_mean_std, record_runs
from .spec import Job, ReportSpecError, load_plan, notebook_parameters

__all__ = [
    "Job",
    "ReportSpecError",
    "aggregate",
    "build_report",
    "flatten_metrics",
    "format_mean_std",
    "load_plan",
    "notebook_parameters",
    "record_runs",
]


def build_report(*args, **kwargs):
    """See :func:`gmmseg_lab.report.runner.build_report` (imported lazily: it pulls in papermill)."""
    from .runner import build_report as _build

    return _build(*args, **kwargs)
