"""Training through mmengine's Runner: one function, a tqdm progress hook, checkpoints and resume.

::

    from gmmseg_lab.models import build_config
    from gmmseg_lab.train import train, last_checkpoint

    cfg = build_config("segformer", "gmm", "cpu", data_root=DIR, work_dir="runs/seg_gmm", seed=0)
    work_dir = train(cfg)                       # IterBasedTrainLoop, IoUMetric validation, checkpoints
    train(cfg, resume=True)                     # continue from work_dir/last_checkpoint

The work dir holds ``config.py`` (the config as given: without what :func:`train` adds to run it,
i.e. resume / ``load_from``, the distributed backend, model wrapper and per-rank seeding), the
checkpoints (``iter_N.pth``, ``last_checkpoint`` naming the newest) and the logs. The GMM state
(means, standard deviations, FIFO memory, counters) is made of buffers, so it is saved in every
checkpoint and restored on load/resume. :func:`gmmseg_lab.models.load_segmentor` turns a work dir
back into a model.

Checkpoints are written atomically (:class:`AtomicCheckpointHook` replaces mmengine's
``CheckpointHook``): each file goes to a temporary sibling renamed into place, ``last_checkpoint``
is replaced the same way once the new checkpoint is complete, and the oldest checkpoint
(``max_keep_ckpts``) is removed only after that; a run killed at any moment leaves a resumable work
dir. :func:`last_checkpoint` treats a missing, empty or garbled pointer as none and falls back to the
newest intact checkpoint.

Exact resume: :class:`RNGStateHook` (added by :func:`train`) saves the Python / NumPy / torch RNG
states in every checkpoint and restores them on resume, and gives the data loaders their own seeded
generator, so a run killed and resumed ends bit-identical to an uninterrupted one (CPU, data loading in
the main process, ``num_workers=0`` as in the shipped presets). A truncated or corrupt checkpoint is
refused with a :class:`CheckpointError` naming the file (no silent fallback to an older one; only an
unusable ``last_checkpoint`` pointer makes :func:`last_checkpoint` look for the newest intact file).

Distributed (``torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch``): the
backend follows the device (:func:`choose_dist_backend`: NCCL with CUDA, gloo without), DDP wraps the
model on CPU too, only rank 0 writes checkpoints, logs and ``config.py``, and every rank holds the
same GMM: its update gathers the pixels of all ranks (:func:`gmmseg_lab.gmm.all_gather_rows`), so the
buffers are identical by construction and are not broadcast (the FIFO memory can be hundreds of MB).
Each rank draws its own random numbers (``randomness.diff_rank_seed`` defaults to True under a
launcher: different augmentations and dropout per rank; the model starts from rank 0's weights,
which mmengine broadcasts). :class:`SyncNormStatsHook` averages BatchNorm running statistics across
ranks whenever they are used or saved: before validation, before each checkpoint and at the end
(plain BN otherwise keeps per-rank statistics; SyncBN is GPU-only). For debugging,
:class:`DumpGMMStateHook` (``GMMSEG_LAB_DUMP_STATE=DIR``) writes each rank's GMM buffers and weight
hashes.
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from pathlib import Path

import torch.distributed as dist
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner

from .. import models  # noqa: F401  (registers GMMSegHead, GMMLabDataset, ClassBalancedSampler, the backbones)
from ..checkpoints import CheckpointError, check_checkpoint, checkpoint_files, last_checkpoint, read_pointer
from ..io_utils import atomic_write_text
from ..models.inference import quiet_mmengine
from ..models.presets import check_gmm_options, gmm_head_configs
from .distributed import choose_dist_backend, prepare_distributed
from .hooks import (
    DUMP_STATE_ENV,
    AtomicCheckpointHook,
    AtomicLocalBackend,
    DumpGMMStateHook,
    InitFromCheckpointHook,
    RNGStateHook,
    SyncNormStatsHook,
    TqdmProgressHook,
)

__all__ = [
    "train",
    "TqdmProgressHook",
    "RNGStateHook",
    "SyncNormStatsHook",
    "DumpGMMStateHook",
    "AtomicCheckpointHook",
    "AtomicLocalBackend",
    "InitFromCheckpointHook",
    "CheckpointError",
    "check_checkpoint",
    "choose_dist_backend",
    "last_checkpoint",
    "quiet_mmengine",
    "DUMP_STATE_ENV",
]


def _check_before_writing(cfg) -> None:
    """What :func:`train` refuses before it writes anything: a work dir that is not a directory, a
    config without a model, GMM options :class:`~gmmseg_lab.gmm.GMMClassifier` would refuse
    (``ValueError`` naming the option; see :func:`gmmseg_lab.models.presets.check_gmm_options`)."""
    work_dir = Path(cfg.work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise FileExistsError(f"work dir {work_dir} exists and is not a directory")
    for parent in work_dir.parents:  # the first existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"work dir {work_dir}: {parent} is a file, not a directory")
            break
    where = Path(cfg.filename).name if cfg.filename else "the config"
    if not isinstance(cfg.get("model"), dict):
        raise ValueError(f"{where}: no 'model' to train")
    for head in gmm_head_configs(cfg):
        check_gmm_options(head.get("gmm_cfg") or {}, what=f"{where}: gmm_cfg")


def _missing_parents(path: Path) -> list[Path]:
    """``path`` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_created(path: Path, created: list[Path]) -> None:
    """Undo ``mkdir(parents=True)`` of ``created`` (from :func:`_missing_parents`) after a refused
    start: ``path`` with what mmengine wrote into it at start (its log folder), then the parents,
    each only while empty. Nothing is removed once a checkpoint or ``config.py`` is there."""
    if path.is_dir() and not any(
        p.suffix == ".pth" or p.name in ("config.py", "last_checkpoint") for p in path.iterdir()
    ):
        shutil.rmtree(path, ignore_errors=True)
    for parent in created[1:]:
        try:
            parent.rmdir()
        except OSError:
            break


def train(
    cfg_or_path,
    *,
    resume: bool | str | Path = False,
    progress: bool = True,
    work_dir: str | Path | None = None,
    log_level: str | None = None,
) -> Path:
    """Train a config with mmengine's Runner; returns the work dir.

    Args:
        cfg_or_path: an ``mmengine.Config`` (see :func:`gmmseg_lab.models.build_config`) or a config
            file path.
        resume: ``True``: continue from the work dir's ``last_checkpoint`` (model, GMM buffers,
            optimizer, LR schedule, iteration, data order and RNG states, so the run ends as an
            uninterrupted one would); when that pointer is missing, empty or garbled, from the newest
            intact checkpoint (:func:`last_checkpoint`); starts afresh when the work dir has no
            checkpoint, and raises :class:`CheckpointError` when all of them are damaged. A
            checkpoint path: continue from that one. A truncated or corrupt checkpoint raises
            :class:`CheckpointError` naming it (see :func:`check_checkpoint`).
        progress: show a tqdm progress bar (``tqdm.auto``; rank 0 only).
        work_dir: override ``cfg.work_dir``.
        log_level: override the config's ``log_level`` (e.g. ``"WARNING"`` for a quiet console).

    With ``cfg.launcher`` set (``--launcher pytorch`` under torchrun) the run is distributed: see the
    module docstring; ``randomness.diff_rank_seed`` defaults to True then (set it False in the config
    to give every rank the same random streams), and a process group this function creates is
    destroyed when it returns or raises. :class:`RNGStateHook` and :class:`SyncNormStatsHook` are
    always registered (the latter is a no-op in one process); :class:`DumpGMMStateHook` when
    ``GMMSEG_LAB_DUMP_STATE`` is set. mmengine's ``CheckpointHook`` becomes
    :class:`AtomicCheckpointHook`.

    ``work_dir/config.py`` records the config as given (with ``work_dir``, ``log_level``,
    ``experiment_name`` and the progress hook as run), not the edits made here to run it: resume /
    ``load_from``, the process group's backend and model wrapper, ``diff_rank_seed``, the checkpoint
    hook's class. It is written atomically, by rank 0.
    """
    cfg = cfg_or_path if isinstance(cfg_or_path, Config) else Config.fromfile(str(cfg_or_path))
    cfg = copy.deepcopy(cfg)
    if work_dir is not None:
        cfg.work_dir = str(Path(work_dir).expanduser().absolute())
    if not cfg.get("work_dir"):
        cfg.work_dir = str(Path("work_dirs") / Path(cfg.filename or "run").stem)
    if log_level is not None:
        cfg.log_level = log_level
    if not cfg.get("experiment_name"):
        # Unique per call: mmengine keeps one logger / visualizer / message hub per experiment name,
        # and two runs of one config in the same second would otherwise share (and mix) them.
        cfg.experiment_name = f"{Path(cfg.filename or 'run').stem}_{uuid.uuid4().hex[:6]}"
    _check_before_writing(cfg)
    hooks = [h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "TqdmProgressHook"]
    if progress:
        hooks.append(dict(type="TqdmProgressHook"))
    cfg.custom_hooks = hooks
    as_given = copy.deepcopy(cfg)  # for config.py: before the edits below, which only serve this run

    resume_from = None
    if isinstance(resume, (str, Path)):
        resume_from = Path(resume).expanduser().absolute()
    elif resume:
        resume_from = last_checkpoint(cfg.work_dir)  # None: no intact checkpoint there
        damaged = checkpoint_files(Path(cfg.work_dir)) if resume_from is None else []
        if damaged:  # never start afresh over them
            raise CheckpointError(
                f"cannot resume {cfg.work_dir}: its last_checkpoint is "
                f"{read_pointer(Path(cfg.work_dir))[1]} and none of its checkpoints "
                f"({', '.join(p.name for p in damaged)}) is intact; start afresh in a new work dir "
                "(or remove them)"
            )
    if resume_from is not None:
        check_checkpoint(resume_from)
        cfg.resume = True
        cfg.load_from = str(resume_from)  # mmengine resumes from load_from when resume=True
    else:
        cfg.resume = False
    default_hooks = dict(cfg.get("default_hooks") or {})
    checkpoint_hook = default_hooks.get("checkpoint", dict(type="CheckpointHook", interval=1))  # mmengine's default
    if isinstance(checkpoint_hook, dict) and checkpoint_hook.get("type") in ("CheckpointHook", CheckpointHook):
        default_hooks["checkpoint"] = {**checkpoint_hook, "type": "AtomicCheckpointHook"}
        cfg.default_hooks = default_hooks
    distributed = cfg.get("launcher", "none") != "none"
    if distributed:
        # Own random streams per rank (augmentations, dropout); mmengine broadcasts rank 0's weights.
        randomness = dict(cfg.get("randomness") or {})
        randomness.setdefault("diff_rank_seed", True)
        cfg.randomness = randomness
    created_group = prepare_distributed(cfg) if distributed else False
    try:
        out = Path(cfg.work_dir)
        created = _missing_parents(out)  # removed again if mmengine refuses the config
        out.mkdir(parents=True, exist_ok=True)
        try:
            runner = Runner.from_cfg(cfg)  # builds the model: a config it refuses leaves no work dir behind
        except BaseException:
            if created and is_main_process():
                _remove_created(out, created)
            raise
        if runner.rank == 0:  # one writer per file
            atomic_write_text(out / "config.py", as_given.pretty_text)
        registered = {type(h).__name__ for h in runner.hooks}
        extra = [RNGStateHook(), SyncNormStatsHook()]
        if os.environ.get(DUMP_STATE_ENV):
            extra.append(DumpGMMStateHook(os.environ[DUMP_STATE_ENV]))
        for hook in extra:
            if type(hook).__name__ not in registered:
                runner.register_hook(hook)
        runner.train()
    finally:
        if created_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return out
