"""GMMSeg against its softmax twin, end to end: data, training, evaluation, a comparison table.

``run_comparison`` trains every (architecture, head, seed) combination on one data set, evaluates
each, and aggregates mean and standard deviation over seeds. Finished runs are reused (a run whose
``metrics.json`` exists is not trained again; an interrupted training resumes from its last
checkpoint), so a long grid can be stopped and restarted.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from .io_utils import atomic_write_json

#: Columns of the comparison table: (label, key path in metrics.json, higher is better).
COLUMNS = (
    ("mIoU", ("miou",), True),
    ("ECE", ("ece",), False),
    ("AUROC", ("anomaly", "auroc"), True),
    ("AP", ("anomaly", "ap"), True),
    ("FPR95", ("anomaly", "fpr95"), False),
)


def _get(metrics: dict, path: tuple[str, ...]) -> float | None:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


def ensure_dataset(data_dir: Path, preset: str, seed: int = 0) -> Path:
    """Generate the embedded data set at ``data_dir`` unless one made with the same preset is there."""
    from .data.scenes import make_dataset

    meta = data_dir / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("preset") == preset and info.get("seed") == seed:
            return data_dir
        raise FileExistsError(f"{data_dir} holds a data set made with preset {info.get('preset')!r} "
                              f"seed {info.get('seed')}, not {preset!r} seed {seed}; choose another --out")
    return make_dataset(data_dir, preset=preset, seed=seed, progress=True)


def run_one(data_dir: Path, run_dir: Path, arch: str, head: str, preset: str, seed: int,
            gmm_cfg: dict | None = None, progress: bool = True, gmm_head: dict | None = None) -> dict:
    """Train (or resume) one model and evaluate it; ``run_dir/metrics.json`` marks it done.

    ``gmm_cfg`` / ``gmm_head`` override the GMM classifier's / the GMM head's settings (see
    :func:`gmmseg_lab.models.build_config`).
    """
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    with _run_lock(run_dir):
        if metrics_file.is_file():  # another process finished it while we waited
            return json.loads(metrics_file.read_text())
        return _train_and_evaluate(data_dir, run_dir, arch, head, preset, seed, gmm_cfg, gmm_head, progress)


@contextmanager
def _run_lock(run_dir: Path):
    """An exclusive lock per run folder, so two notebooks (or processes) never train the same run at once."""
    import fcntl

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train_and_evaluate(data_dir, run_dir, arch, head, preset, seed, gmm_cfg, gmm_head, progress) -> dict:
    from .eval.evaluate import evaluate
    from .models import build_config
    from .train import train

    metrics_file = run_dir / "metrics.json"
    cfg = build_config(arch, head, preset, data_root=data_dir, work_dir=run_dir, seed=seed, gmm_cfg=gmm_cfg,
                       gmm_head=gmm_head)
    train(cfg, resume=True, progress=progress, log_level="WARNING")
    metrics = evaluate(run_dir, data_dir, metrics_file, progress=progress)
    return metrics


def run_comparison(data_dir: Path, out_dir: Path, archs: Iterable[str] = ("segformer",),
                   heads: Iterable[str] = ("gmm", "softmax"), seeds: Iterable[int] = (0,),
                   preset: str = "quick", progress: bool = True) -> dict:
    """Train and evaluate every combination; returns and writes ``out_dir/summary.json``.

    Returns:
        ``{"runs": {name: metrics}, "aggregate": {arch: {head: {column: {"mean", "std", "n",
        "values"}}}}, "seeds": [...], "preset": ...}``.
    """
    archs, heads, seeds = list(archs), list(heads), list(seeds)
    runs: dict[str, dict] = {}
    for arch in archs:
        for seed in seeds:
            for head in heads:
                name = f"{arch}_{head}_{preset}_s{seed}"
                print(f"== {name}", flush=True)
                runs[name] = run_one(data_dir, out_dir / name, arch, head, preset, seed, progress=progress)
    aggregate = aggregate_over_seeds({arch: {head: [runs[f"{arch}_{head}_{preset}_s{s}"] for s in seeds]
                                             for head in heads} for arch in archs})
    summary = {"preset": preset, "seeds": seeds, "data": str(data_dir), "runs": runs, "aggregate": aggregate}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def aggregate_over_seeds(metrics: dict[str, dict[str, list[dict]]]) -> dict:
    """``{arch: {head: [metrics.json per seed]}}`` -> ``{arch: {head: {column: {"mean", "std", "n",
    "values"}}}}`` for the :data:`COLUMNS` (sample std; a column no seed reports is left out)."""
    aggregate: dict = {}
    for arch, by_head in metrics.items():
        for head, per_seed in by_head.items():
            cols = {}
            for label, path, _ in COLUMNS:
                values = [v for v in (_get(m, path) for m in per_seed) if v is not None]
                if values:
                    mean = sum(values) / len(values)
                    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
                    cols[label] = {"mean": mean, "std": std, "n": len(values), "values": values}
            aggregate.setdefault(arch, {})[head] = cols
    return aggregate


def format_table(summary: dict) -> str:
    """A Markdown table of mean ± std over seeds, one row per (architecture, head)."""
    seeds = summary["seeds"]
    header = "| model | head | " + " | ".join(
        f"{label} {'↑' if up else '↓'}" for label, _, up in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for arch, by_head in summary["aggregate"].items():
        for head, cols in by_head.items():
            cells = []
            for label, _, _ in COLUMNS:
                if label not in cols:
                    cells.append("n/a")
                elif len(seeds) > 1:
                    cells.append(f"{cols[label]['mean']:.3f} ± {cols[label]['std']:.3f}")
                else:
                    cells.append(f"{cols[label]['mean']:.3f}")
            lines.append(f"| {arch} | {head} | " + " | ".join(cells) + " |")
    seeds_text = ", ".join(str(s) for s in seeds)
    lines.append("")
    lines.append(f"preset `{summary['preset']}`, seeds {seeds_text}"
                 + (" (mean ± sample std over seeds)" if len(seeds) > 1 else " (one seed: no spread)")
                 + "; anomaly scores: GMMSeg −max_c log p(x|c), softmax 1 − max p(c|x).")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", arch: str = "segformer", preset: str = "quick", seed: int = 0) -> dict:
    """``make demo``: make the data, train both heads, evaluate them and print the comparison table."""
    out = Path(out)
    data_dir = ensure_dataset(out / f"data_{preset}", preset)
    summary = run_comparison(data_dir, out / "runs", archs=[arch], seeds=[seed], preset=preset)
    print()
    print(format_table(summary))
    print(f"\nmetrics of every run: {out / 'runs' / 'summary.json'}")
    if preset == "quick":
        print("The quick preset is a smoke run (tens of iterations from random weights): its numbers show the\n"
              "pipeline works, not how the heads compare. The README's table comes from the cpu preset, 3 seeds.")
    return summary
