"""GMMSeg against its softmax twin: train both for every architecture and seed, aggregate, tabulate.

:func:`train_twins` trains (or reuses, :mod:`gmmseg_lab.experiments.runs`) GMMSeg and its softmax twin
— the same network, data, schedule and seed, only the classifier differs — for every architecture
(``"segformer"``, or ``"segformer@mit"`` for another backbone) and seed. :func:`aggregate_over_seeds`
summarises their metrics as mean ± sample standard deviation over seeds, :func:`format_table` as a
Markdown table; :func:`run_demo` is ``gmmseg-lab demo``: data, both twins, the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..catalog import HEADS, parse_model_spec
from ..io_utils import atomic_write_json
from ..stats import TABLE_COLUMNS, flatten_metrics, metric_value, seed_stats
from .runs import ensure_dataset, run_dir_of, run_many

__all__ = [
    "aggregate_over_seeds",
    "by_model",
    "format_table",
    "run_comparison",
    "run_demo",
    "train_twins",
    "twin_records",
    "twin_summary",
]


def train_twins(
    work_dir: str | Path,
    data_dir: str | Path,
    archs: Iterable[str],
    seeds: Iterable[int],
    preset: str,
    progress: bool = True,
    jobs: int | None = None,
) -> dict[tuple[str, str, int], dict]:
    """Train (or reuse) GMMSeg and its softmax twin for every architecture and seed.

    ``archs``: architecture names, each optionally ``@backbone`` (``"deeplabv3plus@resnet"``: its own
    backbone from scratch, where the preset's default is the pretrained encoder). Runs that need
    training train side by side, ``jobs`` at a time (:func:`gmmseg_lab.experiments.runs.run_many`).

    Returns:
        ``{(arch spec, head, seed): {"run_dir": Path, "metrics": metrics.json dict}}``.
    """
    seeds = list(seeds)  # looped once per architecture: a generator would be spent after the first
    keys, requests = [], []
    for spec in archs:
        arch, backbone = parse_model_spec(spec)
        for seed in seeds:
            for head in HEADS:
                keys.append((spec, head, seed))
                requests.append(
                    dict(
                        data_dir=Path(data_dir),
                        run_dir=run_dir_of(work_dir, spec, head, preset, seed),
                        arch=arch,
                        head=head,
                        preset=preset,
                        seed=seed,
                        backbone=backbone,
                    )
                )
    metrics = run_many(requests, jobs=jobs, progress=progress)
    return {key: {"run_dir": r["run_dir"], "metrics": m} for key, r, m in zip(keys, requests, metrics)}


def by_model(
    runs: Mapping[tuple[str, str, int], Any],
    archs: Iterable[str],
    seeds: Iterable[int] | int,
    key: str | Callable[[Any], Any] | None = "metrics",
    heads: Iterable[str] = HEADS,
) -> dict[str, Any]:
    """One entry per model, ``"<arch> <head>"``, in the order of ``archs`` then ``heads``: what the
    figures and tables of the notebooks take.

    Args:
        runs: keyed by ``(arch, head, seed)``, as :func:`train_twins` returns (any dict keyed so works,
            e.g. one of anomaly curves per run).
        seeds: a list of seeds (each model gets a list, one item per seed, in that order) or one seed
            (each model gets that seed's item alone).
        key: what of each run: its entry's ``key`` (``"metrics"``, ``"run_dir"``, ...), ``key(entry)``
            for a callable, the entry itself for None.

    ``by_model(runs, ["segformer"], [0, 1])`` is ``{"segformer gmm": [metrics seed 0, metrics seed 1],
    "segformer softmax": [...]}``; a run missing from ``runs`` raises ``KeyError`` naming it.
    """

    def pick(arch: str, head: str, seed: int) -> Any:
        if (arch, head, seed) not in runs:
            raise KeyError(f"no run ({arch!r}, {head!r}, {seed}) in runs (has {sorted(runs)})")
        entry = runs[(arch, head, seed)]
        return entry if key is None else key(entry) if callable(key) else entry[key]

    archs, heads = list(archs), list(heads)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return {f"{arch} {head}": pick(arch, head, seeds) for arch in archs for head in heads}
    seeds = list(seeds)
    return {f"{arch} {head}": [pick(arch, head, seed) for seed in seeds] for arch in archs for head in heads}


def twin_records(runs: dict[tuple[str, str, int], dict]) -> list[dict]:
    """Records for :func:`gmmseg_lab.report.record_runs`, grouped by (arch, head)."""
    return [
        {"group": {"arch": arch, "head": head}, "seed": seed, "metrics": flatten_metrics(r["metrics"])}
        for (arch, head, seed), r in runs.items()
    ]


def twin_summary(runs: dict[tuple[str, str, int], dict]) -> dict:
    """Mean and std over seeds per (arch, head) of :func:`train_twins`' runs (see
    :func:`gmmseg_lab.experiments.compare.aggregate_over_seeds`)."""
    by: dict[str, dict[str, list[dict]]] = {}
    for (arch, head, _seed), r in sorted(runs.items(), key=lambda kv: kv[0][2]):
        by.setdefault(arch, {}).setdefault(head, []).append(r["metrics"])
    return aggregate_over_seeds(by)


def aggregate_over_seeds(metrics: dict[str, dict[str, list[dict]]]) -> dict:
    """``{arch: {head: [metrics.json per seed]}}`` -> ``{arch: {head: {column: {"mean", "std", "n",
    "values"}}}}`` for the :data:`TABLE_COLUMNS` (sample std; a column no seed reports is left out)."""
    aggregate: dict = {}
    for arch, by_head in metrics.items():
        for head, per_seed in by_head.items():
            cols = {}
            for label, path, _ in TABLE_COLUMNS:
                values = [v for v in (metric_value(m, path) for m in per_seed) if v is not None]
                if values:
                    cols[label] = seed_stats(values)
            aggregate.setdefault(arch, {})[head] = cols
    return aggregate


def format_table(summary: dict) -> str:
    """A Markdown table of mean ± std over seeds, one row per (architecture, head)."""
    seeds = summary["seeds"]
    header = "| model | head | " + " | ".join(f"{label} {'↑' if up else '↓'}" for label, _, up in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 2)]
    for arch, by_head in summary["aggregate"].items():
        for head, cols in by_head.items():
            cells = []
            for label, _, _ in TABLE_COLUMNS:
                if label not in cols:
                    cells.append("n/a")
                elif len(seeds) > 1:
                    cells.append(f"{cols[label]['mean']:.3f} ± {cols[label]['std']:.3f}")
                else:
                    cells.append(f"{cols[label]['mean']:.3f}")
            lines.append(f"| {arch} | {head} | " + " | ".join(cells) + " |")
    seeds_text = ", ".join(str(s) for s in seeds)
    lines.append("")
    lines.append(
        f"preset `{summary['preset']}`, seeds {seeds_text}"
        + (" (mean ± sample std over seeds)" if len(seeds) > 1 else " (one seed: no spread)")
        + "; anomaly scores: GMMSeg −max_c log p(x|c), softmax 1 − max p(c|x)."
    )
    return "\n".join(lines)


def run_comparison(
    data_dir: Path,
    work_dir: Path,
    archs: Iterable[str] = ("segformer",),
    seeds: Iterable[int] = (0,),
    preset: str = "quick",
    progress: bool = True,
) -> dict:
    """Train (or reuse) both twins for every architecture and seed, and write ``work_dir/runs/summary.json``.

    Returns:
        ``{"runs": {run name: metrics}, "aggregate": {arch: {head: {column: {"mean", "std", "n",
        "values"}}}}, "seeds": [...], "preset": ..., "data": ...}``.
    """
    archs, seeds = list(archs), list(seeds)
    runs = train_twins(work_dir, data_dir, archs, seeds, preset, progress=progress)
    by: dict[str, dict[str, list[dict]]] = {}
    for (arch, head, _seed), r in runs.items():
        by.setdefault(arch, {}).setdefault(head, []).append(r["metrics"])
    summary = {
        "preset": preset,
        "seeds": seeds,
        "data": str(data_dir),
        "runs": {r["run_dir"].name: r["metrics"] for r in runs.values()},
        "aggregate": aggregate_over_seeds(by),
    }
    atomic_write_json(Path(work_dir) / "runs" / "summary.json", summary)
    return summary


def run_demo(
    out: str | Path = "runs/demo", arch: str = "segformer", preset: str = "demo", seeds: Iterable[int] = (0, 1)
) -> dict:
    """``gmmseg-lab demo``: make the data, train both twins for each seed, evaluate them and print the
    comparison table (``make demo`` builds the demo report instead, with every notebook's views)."""
    out = Path(out)
    data_dir = ensure_dataset(out / "data", preset)
    summary = run_comparison(data_dir, out, archs=[arch], seeds=seeds, preset=preset)
    print()
    print(format_table(summary))
    print(f"\nmetrics of every run: {out / 'runs' / 'summary.json'}")
    if preset == "quick":
        print(
            "The quick preset is a smoke run (tens of iterations from random weights): its numbers show the\n"
            "pipeline works, not how the heads compare. The README's table comes from the cpu preset, 3 seeds."
        )
    return summary
