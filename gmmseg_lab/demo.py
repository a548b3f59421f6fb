"""GMMSeg against its softmax twin, end to end: data, training, evaluation, a comparison table.

``run_comparison`` trains every (architecture, head, seed) combination on one data set, evaluates
each, and aggregates mean and standard deviation over seeds. Finished runs are reused (a run whose
``metrics.json`` exists is not trained again; an interrupted training resumes from its last
checkpoint), so a long grid can be stopped and restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from .io_utils import atomic_write_json, source_digest, usable_cpus
from .stats import headline, seed_stats

#: Columns of the comparison table: (label, key path in metrics.json, higher is better).
COLUMNS = tuple((m.label, m.path, m.higher_is_better)
                for m in headline("miou", "ece", "bayes_ece", "ece_ts", "auroc", "ap", "fpr95"))


def metric_value(metrics: dict, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in a ``metrics.json`` dict (e.g. ``("anomaly", "auroc")``), None if absent."""
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


def ensure_dataset(data_dir: Path, preset: str, seed: int = 0) -> Path:
    """Generate the embedded data set at ``data_dir`` unless one made with the same preset is there.

    ``preset``: a data set of the generator (``quick``, ``cpu``) or a training preset, which names
    its data set (``demo`` -> ``cpu``). A set made by another version of the generator
    (``meta.json``'s ``version``) is made again.
    """
    from .catalog import embedded_data
    from .data.scenes import GENERATOR_VERSION, make_dataset

    preset = embedded_data(preset)

    meta = data_dir / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("preset") == preset and info.get("seed") == seed:
            if str(info.get("version")) == GENERATOR_VERSION:
                return data_dir
            print(f"{data_dir}: made by generator version {info.get('version')}, not {GENERATOR_VERSION}; "
                  "making it again", flush=True)
            return make_dataset(data_dir, preset=preset, seed=seed, overwrite=True, progress=True)
        raise FileExistsError(f"{data_dir} holds a data set made with preset {info.get('preset')!r} "
                              f"seed {info.get('seed')}, not {preset!r} seed {seed}; choose another --out")
    return make_dataset(data_dir, preset=preset, seed=seed, progress=True)


#: Written in a run folder before training: what the run is (its settings and a digest of its config).
RUN_RECORD = "run.json"
#: Set by the report runner: the file where :func:`run_one` notes every run a notebook used.
RUNS_USED_ENV = "GMMSEG_LAB_RUNS_USED"
_PACKAGE_DIR = Path(__file__).resolve().parent
#: The parts of the package whose code decides what a training run learns (model, GMM, data loading
#: and sampling, the training loop, the shipped configs); a change in any of them retrains.
TRAIN_CODE = ("gmm", "models", "data", "train.py", "configs")
#: The parts that decide what ``metrics.json`` says about a trained model; a change re-evaluates.
EVAL_CODE = ("eval",)


def code_digest(parts: tuple[str, ...]) -> str:
    """SHA-256 of the package's source files under ``parts`` (see :data:`TRAIN_CODE`, :data:`EVAL_CODE`)."""
    return source_digest(_PACKAGE_DIR, parts)


def config_digest(cfg, data_dir: Path, run_dir: Path) -> str:
    """SHA-256 of a built mmengine config with its data and run folders replaced by placeholders.

    Two runs with the same digest were trained from the same model, schedule, data preset and seed
    settings; a changed preset, variant or default in the shipped configs changes it.
    """
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=repr)
    text = text.replace(str(Path(run_dir).resolve()), "<run_dir>").replace(str(run_dir), "<run_dir>")
    text = text.replace(str(Path(data_dir).resolve()), "<data_dir>").replace(str(data_dir), "<data_dir>")
    return hashlib.sha256(text.encode()).hexdigest()


def run_one(data_dir: Path, run_dir: Path, arch: str, head: str, preset: str, seed: int,
            gmm_cfg: dict | None = None, progress: bool = True, gmm_head: dict | None = None, *,
            backbone: str | None = None, cfg_options: dict | None = None) -> dict:
    """Train (or resume) one model and evaluate it; ``run_dir/metrics.json`` marks it done.

    ``backbone``, ``gmm_cfg``, ``gmm_head`` and ``cfg_options`` are passed to
    :func:`gmmseg_lab.models.build_config`. A finished run is reused only while its config and the
    code that trained it are the same (``run_dir/run.json`` holds a digest of each: the config, and
    the package's training code :data:`TRAIN_CODE`); otherwise it is discarded and trained again, so
    changed code or settings never serve old numbers under the same name. When only the evaluation
    code (:data:`EVAL_CODE`) changed, the trained model is kept and evaluated again.

    Returns:
        the run's ``metrics.json`` as a dict.
    """
    from .models import build_config

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    cfg = build_config(arch, head, preset, data_root=data_dir, work_dir=run_dir, seed=seed, gmm_cfg=gmm_cfg,
                       gmm_head=gmm_head, backbone=backbone, cfg_options=cfg_options)
    record = {"arch": arch, "head": head, "preset": preset, "seed": seed, "backbone": backbone,
              "gmm_cfg": gmm_cfg, "gmm_head": gmm_head, "cfg_options": cfg_options,
              "config_sha256": config_digest(cfg, data_dir, run_dir), "train_code_sha256": code_digest(TRAIN_CODE)}
    eval_code = code_digest(EVAL_CODE)
    metrics_file = run_dir / "metrics.json"
    with _run_lock(run_dir):  # two notebooks (or processes) never train the same run at once
        _discard_if_other_config(run_dir, record)
        old = _read_record(run_dir)
        if metrics_file.is_file() and old.get("eval_code_sha256") == eval_code:
            metrics = json.loads(metrics_file.read_text())
        else:
            from .eval.evaluate import evaluate
            from .train import train

            if not metrics_file.is_file():
                atomic_write_json(run_dir / RUN_RECORD, record)
                train(cfg, resume=True, progress=progress, log_level="WARNING")
            metrics = evaluate(run_dir, data_dir, metrics_file, progress=progress)
            atomic_write_json(run_dir / RUN_RECORD, {**record, "eval_code_sha256": eval_code})
    note_run_used(run_dir)
    return metrics


def run_is_current(data_dir: Path, run_dir: Path, arch: str, head: str, preset: str, seed: int,
                   gmm_cfg: dict | None = None, gmm_head: dict | None = None, *, backbone: str | None = None,
                   cfg_options: dict | None = None, **_ignored) -> bool:
    """Whether :func:`run_one` with these arguments would only read ``run_dir/metrics.json`` (the run is
    trained and evaluated by the current code and config)."""
    from .models import build_config

    if not (Path(run_dir) / "metrics.json").is_file():
        return False
    cfg = build_config(arch, head, preset, data_root=data_dir, work_dir=run_dir, seed=seed, gmm_cfg=gmm_cfg,
                       gmm_head=gmm_head, backbone=backbone, cfg_options=cfg_options)
    old = _read_record(Path(run_dir))
    return (old.get("config_sha256") == config_digest(cfg, Path(data_dir), Path(run_dir))
            and old.get("train_code_sha256") == code_digest(TRAIN_CODE)
            and old.get("eval_code_sha256") == code_digest(EVAL_CODE))


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch is imported in this process
    import torch

    torch.set_num_threads(threads)


def _run_one_quietly(kwargs: dict) -> dict:
    return run_one(**{**kwargs, "progress": False})


def run_many(requests: list[dict], jobs: int | None = None, progress: bool = True) -> list[dict]:
    """:func:`run_one` for every request (a dict of its keyword arguments), the runs that need training
    side by side in ``jobs`` worker processes; returns the metrics in the order of ``requests``.

    On a CPU, small models train faster as one process per core with one thread each than as one
    process with every thread (thread scaling is poor for them). ``jobs``: default the cores this
    process may run on (``os.sched_getaffinity``), capped by the number of runs to train; the
    workers share this process's torch threads (at least one each). A report runner that gave this
    notebook one thread of two cores thus still trains two runs at once: notebooks that train are the
    long ones, and the others mostly wait for them. With one job (or nothing to train) everything runs
    here, with progress bars. Each run holds its own folder lock, so two callers never train the same
    run at once.
    """
    import torch
    from tqdm.auto import tqdm

    threads = max(1, torch.get_num_threads())
    pending = [i for i, r in enumerate(requests) if not run_is_current(**r)]
    jobs = min(len(pending), usable_cpus() if jobs is None else max(1, int(jobs)))
    results: list[dict | None] = [None] * len(requests)
    if jobs > 1:
        import concurrent.futures as futures
        import multiprocessing

        per_worker = max(1, threads // jobs)
        context = multiprocessing.get_context("spawn")  # no fork of a notebook kernel's threads
        with futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                         initargs=(per_worker,)) as pool, \
                tqdm(total=len(pending), desc=f"training {len(pending)} runs, {jobs} at a time", unit="run",
                     disable=not progress) as bar:
            todo = {pool.submit(_run_one_quietly, requests[i]): i for i in pending}
            for done in futures.as_completed(todo):
                i = todo[done]
                results[i] = done.result()
                bar.set_postfix_str(Path(requests[i]["run_dir"]).name, refresh=False)
                bar.update(1)
    for i, request in enumerate(requests):  # the finished ones (a worker noted its runs as used)
        if results[i] is None:
            results[i] = run_one(**{**request, "progress": progress})
    return results  # type: ignore[return-value]


def _read_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _discard_if_other_config(run_dir: Path, record: dict) -> None:
    """Delete a run folder trained from another config or other training code (or of unknown origin:
    without a run record, e.g. from before records existed or cut short before writing one)."""
    if not run_dir.exists():
        return
    old = _read_record(run_dir)
    same = all(old.get(key) == record[key] for key in ("config_sha256", "train_code_sha256"))
    if not same and any(run_dir.iterdir()):
        why = "another config" if old.get("config_sha256") not in (None, record["config_sha256"]) else \
            "other training code" if old else "an unknown config (no run record)"
        print(f"{run_dir}: trained from {why}; discarding it and training again", flush=True)
        shutil.rmtree(run_dir)


@contextmanager
def _run_lock(run_dir: Path):
    """An exclusive lock per run folder (held while a run is checked, trained and evaluated)."""
    import fcntl

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def note_run_used(run_dir: Path) -> None:
    """Append ``run_dir`` and its metrics' digest to the file named by :data:`RUNS_USED_ENV`, if set.

    The report runner reuses a notebook only while every run it used is still there, unchanged.
    """
    target = os.environ.get(RUNS_USED_ENV)
    if not target:
        return
    line = json.dumps({"run_dir": str(Path(run_dir).resolve()),
                       "metrics_sha256": _file_sha256(Path(run_dir) / "metrics.json")})
    with open(target, "a", encoding="utf-8") as fh:  # one short line per run: appended whole
        fh.write(line + "\n")


def runs_unchanged(used_file: Path) -> bool:
    """True when every run listed in ``used_file`` (see :func:`note_run_used`) still has the same
    ``metrics.json`` (no file: nothing was used)."""
    if not used_file.is_file():
        return True
    for line in used_file.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            metrics = Path(entry["run_dir"]) / "metrics.json"
            if not metrics.is_file() or _file_sha256(metrics) != entry["metrics_sha256"]:
                return False
        except (ValueError, KeyError, TypeError, OSError):
            return False
    return True


def run_comparison(data_dir: Path, out_dir: Path, archs: Iterable[str] = ("segformer",),
                   heads: Iterable[str] = ("gmm", "softmax"), seeds: Iterable[int] = (0,),
                   preset: str = "quick", progress: bool = True) -> dict:
    """Train and evaluate every combination; returns and writes ``out_dir/summary.json``.

    Returns:
        ``{"runs": {name: metrics}, "aggregate": {arch: {head: {column: {"mean", "std", "n",
        "values"}}}}, "seeds": [...], "preset": ...}``.
    """
    from .ablation import run_name  # ablation builds on this module

    archs, heads, seeds = list(archs), list(heads), list(seeds)
    runs: dict[str, dict] = {}
    for arch in archs:
        for seed in seeds:
            for head in heads:
                name = run_name(arch, head, preset, seed)
                print(f"== {name}", flush=True)
                runs[name] = run_one(data_dir, out_dir / name, arch, head, preset, seed, progress=progress)
    aggregate = aggregate_over_seeds({arch: {head: [runs[run_name(arch, head, preset, s)] for s in seeds]
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
                values = [v for v in (metric_value(m, path) for m in per_seed) if v is not None]
                if values:
                    cols[label] = seed_stats(values)
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
