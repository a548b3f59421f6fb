"""What an executed notebook hands to the report: its runs' metrics, aggregated over seeds.

A notebook calls :func:`record_runs` with one record per trained run; the report runner collects every
job's ``results.json`` and :func:`aggregate` turns them into ``summary.json``: for each group (the
notebook and the run's settings other than the seed) the mean, sample standard deviation, count and
values over seeds of every metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..io_utils import atomic_write_json
from ..stats import flatten_metrics, format_mean_std, seed_stats

__all__ = ["aggregate", "flatten_metrics", "format_mean_std", "read_results", "record_runs"]


def record_runs(results_path: str | Path | None, records: Iterable[dict], **extra: Any) -> dict | None:
    """Write a notebook's results for the report (a no-op when ``results_path`` is None, e.g. live).

    Args:
        results_path: the ``results_path`` parameter the report runner gave the notebook.
        records: ``{"group": {setting: value}, "seed": int, "metrics": {name: float}}`` per run; the
            group names what is compared (e.g. ``{"arch": "segformer", "head": "gmm"}``).
        **extra: other JSON-serialisable results of the notebook (e.g. toy accuracies).
    """
    records = list(records)
    for i, rec in enumerate(records):
        if not isinstance(rec.get("group"), dict) or not isinstance(rec.get("metrics"), dict):
            raise ValueError(f"records[{i}] needs a 'group' dict and a 'metrics' dict, got keys {sorted(rec)}")
    payload = {"records": records, "extra": extra}
    if results_path is None:
        return None
    atomic_write_json(results_path, payload)
    return payload


def aggregate(results_by_job: dict[str, dict]) -> list[dict]:
    """Group every job's records by (notebook, group) and summarise each metric over seeds.

    Args:
        results_by_job: job name -> ``{"notebook": str, "records": [...], "combination": {...}}`` (the
            grid values of the job, merged into each record's group).

    Returns:
        A list of ``{"notebook", "group", "seeds", "jobs", "metrics": {name: {"mean", "std", "n",
        "values"}}}`` in the order the jobs (by name) recorded them. A run recorded by two jobs of the
        same notebook (same group and seed) counts once.
    """
    groups: dict[str, dict] = {}
    for job, result in sorted(results_by_job.items()):
        for rec in result.get("records", []):
            # A grid job's combination is part of what it compares (two combinations never merge),
            # except a grid over seeds: its jobs' runs are the seeds of one group.
            combination = {k: v for k, v in result.get("combination", {}).items() if k not in ("seed", "seeds")}
            group = {**combination, **rec["group"]}
            key = json.dumps([result["notebook"], group], sort_keys=True)
            entry = groups.setdefault(key, {"notebook": result["notebook"], "group": group, "runs": {}, "jobs": set()})
            entry["runs"][rec.get("seed")] = rec["metrics"]
            entry["jobs"].add(job)
    out = []
    for key in groups:  # first-seen order: the notebooks' own order (e.g. "default" variant first)
        entry = groups[key]
        seeds = sorted(entry["runs"], key=lambda s: (s is None, s))
        names = sorted({m for metrics in entry["runs"].values() for m in metrics})
        metrics = {name: seed_stats([entry["runs"][s].get(name) for s in seeds]) for name in names}
        out.append(
            {
                "notebook": entry["notebook"],
                "group": entry["group"],
                "seeds": seeds,
                "jobs": sorted(entry["jobs"]),
                "metrics": metrics,
            }
        )
    return out


def read_results(path: Path) -> dict | None:
    """A JSON file of a job ({results,status,outcome}.json), or None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
