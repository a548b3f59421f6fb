"""The run store: every trained model of the lab lives in a run folder, trained once and reused.

A run folder (``<work_dir>/runs/<name>``, named by :func:`run_name`) holds the mmengine work dir of
one training (``config.py``, checkpoints, logs), ``metrics.json`` (the evaluator's) and ``run.json``
(what the run is: its settings, a digest of its built config and of the code that trained it).
:func:`run_one` trains (or resumes) and evaluates a run unless an identical one is there:

- another config, or other training code (:data:`TRAIN_CODE`), under the same name: the folder is
  discarded and trained again, so changed code or settings never serve old numbers;
- only other evaluation code (:data:`EVAL_CODE`): the trained model is kept and evaluated again.

:func:`run_many` trains the runs that need it side by side, one process per core. The report runner
asks notebooks which runs they used (:func:`note_run_used`, :func:`runs_unchanged`), so a notebook
page is rebuilt when a run under it changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..catalog import default_backbone, embedded_data, parse_model_spec
from ..data.scenes import GENERATOR_VERSION, make_dataset
from ..eval.evaluate import evaluate
from ..io_utils import atomic_write_json, source_digest, usable_cpus
from ..models import build_config
from ..train import train

__all__ = [
    "EVAL_CODE",
    "RUN_RECORD",
    "RUNS_USED_ENV",
    "TRAIN_CODE",
    "code_digest",
    "config_digest",
    "ensure_dataset",
    "ensure_run",
    "note_run_used",
    "run_dir_of",
    "run_is_current",
    "run_many",
    "run_name",
    "run_one",
    "runs_unchanged",
]


#: Written in a run folder before training: what the run is (its settings and a digest of its config).
RUN_RECORD = "run.json"

#: Set by the report runner: the file where :func:`run_one` notes every run a notebook used.
RUNS_USED_ENV = "GMMSEG_LAB_RUNS_USED"

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The parts of the package whose code decides what a training run learns (the GMM, the model, data
#: loading and sampling, the training loop and its checkpoints, the presets and shipped configs); a
#: change in any of them retrains.
TRAIN_CODE = ("gmm", "models", "data", "train", "checkpoints.py", "catalog.py", "configs")
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


def run_name(
    arch: str, head: str, preset: str, seed: int, variant: str = "default", backbone: str | None = None
) -> str:
    """Folder name of one training run: ``<arch>_<head>_<preset>_s<seed>``, then ``_<backbone>`` when a
    backbone other than the preset's default is asked for, and ``_<variant>`` for a GMM variant."""
    base = f"{arch}_{head}_{preset}_s{seed}"
    if backbone is not None and backbone != default_backbone(arch, preset):
        base += f"_{backbone}"
    return base if variant == "default" or head != "gmm" else f"{base}_{variant}"


def run_dir_of(work_dir: str | Path, arch: str, head: str, preset: str, seed: int, variant: str = "default") -> Path:
    """Where the run of these settings lives (trained by :func:`train_twins` / :func:`train_ablation`);
    ``arch`` may name a backbone as ``arch@backbone``."""
    arch, backbone = parse_model_spec(arch)
    return Path(work_dir) / "runs" / run_name(arch, head, preset, seed, variant, backbone=backbone)


def ensure_dataset(data_dir: Path, preset: str, seed: int = 0) -> Path:
    """Generate the embedded data set at ``data_dir`` unless one made with the same preset is there.

    ``preset``: a data set of the generator (``quick``, ``cpu``) or a training preset, which names
    its data set (``demo`` -> ``cpu``). A set made by another version of the generator
    (``meta.json``'s ``version``) is made again.
    """
    preset = embedded_data(preset)

    meta = data_dir / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("preset") == preset and info.get("seed") == seed:
            if str(info.get("version")) == GENERATOR_VERSION:
                return data_dir
            print(
                f"{data_dir}: made by generator version {info.get('version')}, not {GENERATOR_VERSION}; "
                "making it again",
                flush=True,
            )
            return make_dataset(data_dir, preset=preset, seed=seed, overwrite=True, progress=True)
        raise FileExistsError(
            f"{data_dir} holds a data set made with preset {info.get('preset')!r} "
            f"seed {info.get('seed')}, not {preset!r} seed {seed}; choose another --out"
        )
    return make_dataset(data_dir, preset=preset, seed=seed, progress=True)


def run_one(
    data_dir: Path,
    run_dir: Path,
    arch: str,
    head: str,
    preset: str,
    seed: int,
    gmm_cfg: dict | None = None,
    progress: bool = True,
    gmm_head: dict | None = None,
    *,
    backbone: str | None = None,
    cfg_options: dict | None = None,
) -> dict:
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
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    cfg = build_config(
        arch,
        head,
        preset,
        data_root=data_dir,
        work_dir=run_dir,
        seed=seed,
        gmm_cfg=gmm_cfg,
        gmm_head=gmm_head,
        backbone=backbone,
        cfg_options=cfg_options,
    )
    record = {
        "arch": arch,
        "head": head,
        "preset": preset,
        "seed": seed,
        "backbone": backbone,
        "gmm_cfg": gmm_cfg,
        "gmm_head": gmm_head,
        "cfg_options": cfg_options,
        "config_sha256": config_digest(cfg, data_dir, run_dir),
        "train_code_sha256": code_digest(TRAIN_CODE),
    }
    eval_code = code_digest(EVAL_CODE)
    metrics_file = run_dir / "metrics.json"
    with _run_lock(run_dir):  # two notebooks (or processes) never train the same run at once
        _discard_if_other_config(run_dir, record)
        old = _read_record(run_dir)
        if metrics_file.is_file() and old.get("eval_code_sha256") == eval_code:
            metrics = json.loads(metrics_file.read_text())
        else:
            if not metrics_file.is_file():
                atomic_write_json(run_dir / RUN_RECORD, record)
                train(cfg, resume=True, progress=progress, log_level="WARNING")
            metrics = evaluate(run_dir, data_dir, metrics_file, progress=progress)
            atomic_write_json(run_dir / RUN_RECORD, {**record, "eval_code_sha256": eval_code})
    note_run_used(run_dir)
    return metrics


def ensure_run(
    work_dir: str | Path, data_dir: str | Path, arch: str, head: str, preset: str, seed: int, progress: bool = True
) -> Path:
    """Train (or reuse) one run of :func:`train_twins` and return its folder; ``arch`` may name a
    backbone as ``arch@backbone``."""
    name, backbone = parse_model_spec(arch)
    run_dir = run_dir_of(work_dir, arch, head, preset, seed)
    run_one(Path(data_dir), run_dir, name, head, preset, seed, progress=progress, backbone=backbone)
    return run_dir


def run_is_current(
    data_dir: Path,
    run_dir: Path,
    arch: str,
    head: str,
    preset: str,
    seed: int,
    gmm_cfg: dict | None = None,
    gmm_head: dict | None = None,
    *,
    backbone: str | None = None,
    cfg_options: dict | None = None,
    **_ignored,
) -> bool:
    """Whether :func:`run_one` with these arguments would only read ``run_dir/metrics.json`` (the run is
    trained and evaluated by the current code and config)."""
    if not (Path(run_dir) / "metrics.json").is_file():
        return False
    cfg = build_config(
        arch,
        head,
        preset,
        data_root=data_dir,
        work_dir=run_dir,
        seed=seed,
        gmm_cfg=gmm_cfg,
        gmm_head=gmm_head,
        backbone=backbone,
        cfg_options=cfg_options,
    )
    old = _read_record(Path(run_dir))
    return (
        old.get("config_sha256") == config_digest(cfg, Path(data_dir), Path(run_dir))
        and old.get("train_code_sha256") == code_digest(TRAIN_CODE)
        and old.get("eval_code_sha256") == code_digest(EVAL_CODE)
    )


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
        with (
            futures.ProcessPoolExecutor(
                jobs, mp_context=context, initializer=_init_worker, initargs=(per_worker,)
            ) as pool,
            tqdm(
                total=len(pending),
                desc=f"training {len(pending)} runs, {jobs} at a time",
                unit="run",
                disable=not progress,
            ) as bar,
        ):
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
        why = (
            "another config"
            if old.get("config_sha256") not in (None, record["config_sha256"])
            else "other training code"
            if old
            else "an unknown config (no run record)"
        )
        print(f"{run_dir}: trained from {why}; discarding it and training again", flush=True)
        shutil.rmtree(run_dir)


@contextmanager
def _run_lock(run_dir: Path):
    """An exclusive lock per run folder (held while a run is checked, trained and evaluated)."""
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
    line = json.dumps(
        {"run_dir": str(Path(run_dir).resolve()), "metrics_sha256": _file_sha256(Path(run_dir) / "metrics.json")}
    )
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
