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
import datetime
import hashlib
import inspect
import os
import random
import re
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .io_utils import atomic_open, atomic_write_text
from .models.inference import quiet_mmengine

__all__ = ["train", "TqdmProgressHook", "RNGStateHook", "SyncNormStatsHook", "DumpGMMStateHook",
           "AtomicCheckpointHook", "AtomicLocalBackend", "CheckpointError", "check_checkpoint",
           "choose_dist_backend", "last_checkpoint", "quiet_mmengine", "DUMP_STATE_ENV"]

#: Environment variable: when set to a directory, :func:`train` adds :class:`DumpGMMStateHook` there.
DUMP_STATE_ENV = "GMMSEG_LAB_DUMP_STATE"


@HOOKS.register_module()
class TqdmProgressHook(Hook):
    """A ``tqdm.auto`` progress bar over training iterations (terminal or notebook).

    The bar starts at the resumed iteration, shows the loss (and the GMM component loss) as its
    postfix every ``interval`` iterations, and the latest validation metrics after each validation.

    Args:
        interval: iterations between postfix updates.
        desc: bar label (default: the config's file name).
        keys: log keys shown in the postfix when present (matched by suffix).
    """

    priority = "VERY_LOW"

    def __init__(self, interval: int = 5, desc: str | None = None,
                 keys: tuple[str, ...] = ("loss", "loss_component", "mIoU")):
        self.interval = max(1, int(interval))
        self.desc = desc
        self.keys = tuple(keys)
        self._bar = None
        self._postfix: dict[str, str] = {}

    def before_train(self, runner) -> None:
        from tqdm.auto import tqdm

        if getattr(runner, "rank", 0) != 0:  # one bar per run, not one per rank
            return
        desc = self.desc or Path(runner.cfg.filename or "train").stem
        self._bar = tqdm(total=runner.max_iters, initial=runner.iter, desc=desc, unit="it",
                         dynamic_ncols=True, leave=True)

    def _show(self, values: dict) -> None:
        for key, value in values.items():
            for want in self.keys:
                if key == want or key.endswith("." + want):
                    try:
                        value = value.detach() if hasattr(value, "detach") else value
                        self._postfix[key.split("/")[-1]] = f"{float(value):.4g}"
                    except (TypeError, ValueError):
                        pass
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if outputs and (runner.iter + 1) % self.interval == 0:
            self._show(outputs)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics:
            self._show(metrics)
            if self._bar is not None:
                self._bar.refresh()

    def after_train(self, runner) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _read_pointer(work_dir: Path) -> tuple[Path | None, str | None]:
    """``(checkpoint named by work_dir/last_checkpoint, None)``, or ``(None, what is wrong with the
    pointer)``: ``"missing"``, ``"empty"`` or ``"garbled (...)"``."""
    pointer = work_dir / "last_checkpoint"
    if not pointer.is_file():
        return None, "missing"
    try:
        text = pointer.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"garbled ({type(exc).__name__})"
    if not text:
        return None, "empty"
    if "\n" in text or "\x00" in text:
        return None, "garbled (not a single path)"
    path = Path(text)
    return (path if path.is_absolute() else work_dir / path), None


def _checkpoint_files(work_dir: Path) -> list[Path]:
    """The work dir's ``iter_N.pth`` / ``epoch_N.pth``, newest first."""
    names = re.compile(r"(iter|epoch)_\d+\.pth")
    found = [p for p in work_dir.glob("*.pth") if names.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=_checkpoint_iter, reverse=True)


def last_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``work_dir`` from, or None when it has none.

    Normally the one ``work_dir/last_checkpoint`` names (as named, even when that file is missing or
    damaged: :func:`check_checkpoint` then says so). When the pointer is missing, empty or garbled
    (written by an older, non-atomic writer and cut short, or a run killed between saving its first
    checkpoint and pointing to it), the newest intact ``iter_N.pth`` / ``epoch_N.pth`` of the work dir
    instead (a warning names it when the pointer exists but is unusable); None when there is no intact
    one (:func:`train` refuses to resume, or start afresh over, a work dir whose checkpoints are all
    damaged).
    """
    work_dir = Path(work_dir)
    path, problem = _read_pointer(work_dir)
    if path is not None:
        return path
    for candidate in _checkpoint_files(work_dir):
        try:
            check_checkpoint(candidate)
        except CheckpointError:
            continue
        if problem != "missing":
            warnings.warn(f"{work_dir / 'last_checkpoint'} is {problem}: using the newest intact checkpoint "
                          f"there, {candidate.name}", RuntimeWarning, stacklevel=2)
        return candidate
    return None


# ---------------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from or loaded: missing, empty, truncated, corrupt, not a
    checkpoint at all (a plain tensor, a dict without ``state_dict``), or one whose weights do not
    fit the model built from the config (another architecture, another number of classes)."""


def _checkpoint_iter(path: Path) -> int:
    stem = path.stem
    return int(stem.split("_")[-1]) if stem.split("_")[-1].isdigit() else -1


#: Name under which :class:`AtomicLocalBackend` is registered with mmengine's file backends.
ATOMIC_BACKEND = "gmmseg_atomic_local"


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, but ``put`` / ``put_text`` write a temporary sibling and rename
    it into place (:func:`gmmseg_lab.io_utils.atomic_open`): a reader, or a run killed mid-write, sees
    the old file or the new one, never a truncated one. Everything else is :class:`LocalBackend`'s."""

    def put(self, obj: bytes, filepath) -> None:
        with atomic_open(filepath, "wb") as fh:
            fh.write(obj)

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        with atomic_open(filepath, "wb") as fh:
            fh.write(obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe files; :func:`train` uses it in place of
    ``CheckpointHook`` (same arguments, same schedule).

    mmengine removes the oldest checkpoint (``max_keep_ckpts``) *before* saving the new one, writes the
    file in place and then ``last_checkpoint`` with a plain ``open('w')``: a run killed in between
    loses a checkpoint, leaves a truncated one, or leaves an empty pointer. Here, for a local
    ``out_dir`` (other storage backends are left as configured):

    1. the checkpoint is written through :class:`AtomicLocalBackend` (``backend_args``), so it appears
       complete or not at all (also best checkpoints);
    2. ``last_checkpoint`` is replaced atomically once the checkpoint is in place;
    3. only then is the checkpoint that fell out of ``max_keep_ckpts`` removed.

    The bookkeeping (``keep_ckpt_ids`` and ``last_ckpt`` in the message hub, saved in the checkpoint)
    is mmengine's, in that order. Temporary files left by a killed run are removed at the start.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if (self.file_client_args is None and not (self.backend_args or {}).get("backend")
                and type(self.file_backend) is LocalBackend):
            self.backend_args = {**(self.backend_args or {}), "backend": ATOMIC_BACKEND}
            from mmengine.fileio import get_file_backend

            self.file_backend = get_file_backend(self.out_dir, backend_args=self.backend_args)
        if is_main_process():  # temporaries of a run killed mid-write (atomic_open's names)
            for folder, pattern in ((self.out_dir, ".*.pth.*.tmp"), (runner.work_dir, ".last_checkpoint.*.tmp")):
                if isinstance(self.file_backend, LocalBackend) and Path(folder).is_dir():
                    for stale in Path(folder).glob(pattern):
                        stale.unlink(missing_ok=True)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        expired = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(Path(runner.work_dir) / "last_checkpoint", str(self.last_ckpt))
        if expired is not None and expired != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(expired))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)


def _saves_checkpoint(runner, stage: str) -> bool:
    """Whether a ``CheckpointHook`` of ``runner`` saves a checkpoint at this point of the loop: stage
    ``"iter"`` (``after_train_iter``), ``"epoch"`` (``after_train_epoch``) or ``"val"``
    (``after_val_epoch``: best checkpoints). The same on every rank (iteration counters only)."""
    for hook in getattr(runner, "hooks", ()):
        if not isinstance(hook, CheckpointHook):
            continue
        try:
            if stage == "iter" and not hook.by_epoch:
                if hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                        hook.save_last and hook.is_last_train_iter(runner)):
                    return True
            elif stage == "epoch" and hook.by_epoch:
                if hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                        hook.save_last and hook.is_last_train_epoch(runner)):
                    return True
            elif stage == "val" and hook.save_best:
                return True
        except AttributeError:  # a checkpoint hook unlike mmengine's: assume it may save
            return True
    return False


def _content_problem(obj, for_resume: bool) -> str | None:
    """What keeps a loaded checkpoint object from being used, or None. An mmengine checkpoint is a
    dict with ``state_dict`` (and ``meta``, which resuming needs); to load weights, a bare state
    dict (``torch.save(model.state_dict())``: a non-empty dict of tensors) is accepted too."""
    if not isinstance(obj, dict):
        return f"it is not a checkpoint (it holds a {type(obj).__module__}.{type(obj).__qualname__}, not a dict)"
    if "state_dict" in obj:
        if not isinstance(obj["state_dict"], dict):
            return f"its 'state_dict' is a {type(obj['state_dict']).__name__}, not a dict of tensors"
        if for_resume and not isinstance(obj.get("meta"), dict):
            return ("it has no 'meta' (iteration, seed...), so it was not saved by a training run; it can be "
                    "loaded as weights but not resumed from")
        return None
    if not for_resume and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None  # a bare state dict
    keys = ", ".join(repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
    return f"it is not a checkpoint (a dict without 'state_dict'; its keys: {keys or 'none'})"


def check_checkpoint(path: str | Path, *, for_resume: bool = True) -> Path:
    """Check that ``path`` is a complete, readable checkpoint before resuming from it; returns it.

    mmengine checkpoints are zip archives (``torch.save``): a truncated file has no central directory
    and a damaged one fails its CRCs, both found without unpickling. Anything else must load with
    ``torch.load``. Either way the object must be a checkpoint: a dict with ``state_dict`` (and
    ``meta`` to resume from it; with ``for_resume=False``, checking a file to load weights from, a
    bare state dict is accepted too). Raises :class:`CheckpointError` naming the file and, to
    resume, the work dir's other checkpoints (resume from one with ``train(cfg, resume=PATH)`` /
    ``--resume-from PATH``).
    """
    path = Path(path)
    problem = None
    if not path.exists():
        problem = "it does not exist"
    elif path.is_dir():
        problem = "it is a directory, not a checkpoint file"
    elif not path.is_file():
        problem = "it is not a regular file"
    elif path.stat().st_size == 0:
        problem = "it is empty (0 bytes)"
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                problem = f"it is corrupt (CRC check failed for its member {bad!r})"
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            problem = f"it is corrupt ({type(exc).__name__}: {exc})"
        if problem is None:
            try:  # memory-mapped: the pickle is read, the tensors' bytes are not
                problem = _content_problem(torch.load(path, map_location="cpu", weights_only=False, mmap=True),
                                           for_resume)
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot use it"
                problem = f"it is a zip archive but not a torch checkpoint (torch.load failed: {type(exc).__name__}: {exc})"
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot resume from it"
            problem = f"it is truncated, corrupt or not a torch checkpoint (torch.load failed: {type(exc).__name__}: {exc})"
        else:
            problem = _content_problem(obj, for_resume)
    if problem is None:
        return path
    if not for_resume:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")
    others = sorted((p for p in path.parent.glob("*.pth") if p.resolve() != path.resolve()),
                    key=_checkpoint_iter)
    hint = (f"other checkpoints there: {', '.join(p.name for p in others)}; resume from one with "
            "train(cfg, resume=PATH) or `gmmseg-lab train ... --resume-from PATH`"
            if others else "no other checkpoint there; start afresh in a new work dir")
    raise CheckpointError(f"cannot resume from {path}: {problem}; {hint}")


# ---------------------------------------------------------------------- exact resume
def _rng_state() -> dict:
    """This process's Python, NumPy and torch (CPU and current CUDA device) RNG states, as plain
    Python values and tensors (loadable with ``torch.load(weights_only=True)``)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def _unwrap(model):
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed run continue the random streams of the run that wrote the checkpoint.

    mmengine's resume restores the model (and with it the GMM buffers), optimizer, LR schedule and
    iteration and fast-forwards the sampler, but re-seeds the RNGs as at the start of a run: random
    augmentations (NumPy), dropout / drop-path (torch) then differ from an uninterrupted run. This hook

    - saves every rank's Python / NumPy / torch (and CUDA) RNG state and the train loader's generator
      in each checkpoint (``checkpoint["rng_state"]``), and restores them on resume, just before the
      first resumed iteration (``before_train_epoch``, after every other hook has set up). Checkpoints
      are written by rank 0 only, so in a process group the ranks' states are gathered first, only at
      the points where a ``CheckpointHook`` saves (its interval, the last iteration or epoch, and
      after validation for best checkpoints), not at every iteration;
    - gives every data loader its own generator seeded from the run's seed (``runner.seed``, which
      includes the rank under ``randomness.diff_rank_seed``, the default under a launcher): a
      ``DataLoader`` otherwise draws its worker base seed from the global torch RNG each time an
      iterator is created, and the resumed run creates its train iterator (and the uninterrupted one
      its validation iterators) at other points of the stream.

    Exactness needs the augmentations drawn in the main process (``num_workers=0``, the shipped
    presets): workers re-seed from ``worker_init_fn`` when their iterator is created, so with workers
    the augmentations after a resume differ (a warning says so). Restored only when resuming (the
    loaded checkpoint's iteration is the runner's), not for ``load_from`` weights.
    """

    priority = "LOW"  # after NORMAL hooks, before CheckpointHook (VERY_LOW) saves

    def __init__(self) -> None:
        self._gathered: tuple[tuple[int, int], list] | None = None  # ((iter, epoch), every rank's state)
        self._pending: dict | None = None

    # -- generators
    @staticmethod
    def _loaders(runner) -> list:
        from mmengine.runner import BaseLoop

        loaders = []
        for name in ("_train_loop", "_val_loop", "_test_loop"):
            loop = getattr(runner, name, None)
            if isinstance(loop, BaseLoop) and isinstance(getattr(loop, "dataloader", None),
                                                         torch.utils.data.DataLoader):
                loaders.append(loop.dataloader)
        return loaders

    def before_train(self, runner) -> None:
        # mmengine's runner.seed is the configured seed plus the rank under diff_rank_seed: each rank
        # then has its own loader streams; without it every rank shares them (as the user asked).
        seed = int(runner.seed)
        for loader in self._loaders(runner):
            if loader.generator is None:
                loader.generator = torch.Generator().manual_seed(seed)

    # -- saving
    def _state(self, runner) -> dict:
        state = _rng_state()
        loader = getattr(getattr(runner, "_train_loop", None), "dataloader", None)
        if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is not None:
            state["train_loader_generator"] = loader.generator.get_state()
        return state

    @staticmethod
    def _when(runner) -> tuple[int, int]:
        return int(runner.iter), int(runner.epoch)

    def _gather(self, runner) -> None:
        # CheckpointHook saves on rank 0 only: collect every rank's state first (a few tens of kB).
        # A collective: every rank decides the same way (_saves_checkpoint reads the counters only).
        world = _world()[1]
        if world > 1:
            states: list = [None] * world
            dist.all_gather_object(states, self._state(runner))
            self._gathered = (self._when(runner), states)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if _saves_checkpoint(runner, "iter"):
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        if _saves_checkpoint(runner, "epoch"):
            self._gather(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if _saves_checkpoint(runner, "val"):
            self._gather(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if _world()[1] == 1:
            ranks = [self._state(runner)]
        elif self._gathered is not None and self._gathered[0] == self._when(runner):
            ranks = self._gathered[1]
        else:  # saved outside CheckpointHook's schedule: the other ranks' states are unknown here
            runner.logger.warning("RNGStateHook: this checkpoint is saved where no CheckpointHook saves, so the"
                                  " ranks' RNG states were not gathered: it holds none, and a run resumed from"
                                  " it restarts the random streams from the seed")
            return
        checkpoint["rng_state"] = {"world_size": len(ranks), "ranks": ranks}

    # -- restoring
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("rng_state")
        meta_iter = (checkpoint.get("meta") or {}).get("iter")
        self._pending = dict(saved=saved, iter=meta_iter) if meta_iter is not None else None

    def before_train_epoch(self, runner) -> None:
        pending, self._pending = self._pending, None
        if pending is None or runner.iter != pending["iter"] or runner.iter == 0:
            return  # not a resume (fresh run, or load_from weights only)
        saved = pending["saved"]
        rank, world = _world()
        if saved is None:
            runner.logger.warning("the resumed checkpoint holds no RNG state (written before RNGStateHook):"
                                  " the random streams restart from the seed, so this run will not match"
                                  " an uninterrupted one exactly")
            return
        if saved["world_size"] != world:
            runner.logger.warning(f"the checkpoint's RNG states are for {saved['world_size']} rank(s), this run"
                                  f" has {world}: the random streams restart from the seed")
            return
        state = saved["ranks"][rank]
        _set_rng_state(state)
        loader = getattr(getattr(runner, "_train_loop", None), "dataloader", None)
        if "train_loader_generator" in state and isinstance(loader, torch.utils.data.DataLoader) \
                and loader.generator is not None:
            loader.generator.set_state(state["train_loader_generator"].cpu())
        if isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers > 0:
            runner.logger.warning("resumed with num_workers > 0: the data-loading workers re-seed when they"
                                  " start, so random augmentations after the resume differ from an"
                                  " uninterrupted run (use num_workers=0 for a bit-exact resume)")


# ---------------------------------------------------------------------- distributed
def choose_dist_backend(requested: str | None = None, cuda_available: bool | None = None) -> str:
    """The ``torch.distributed`` backend for this machine.

    ``None`` or ``"auto"``: ``"nccl"`` with CUDA, ``"gloo"`` without. ``"nccl"`` without CUDA (the
    shipped configs' default; NCCL cannot run without GPUs) becomes ``"gloo"``. Any other explicit
    choice (``"gloo"`` on GPUs, ``"mpi"``, ``"cpu:gloo,cuda:nccl"``) is the user's and is kept.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else bool(cuda_available)
    if requested in (None, "", "auto"):
        return "nccl" if cuda else "gloo"
    if requested == "nccl" and not cuda:
        return "gloo"
    return requested


def _ddp_buffer_kwargs() -> dict:
    """Buffers are kept identical by construction, never broadcast at each forward: the GMM update
    gathers every rank's pixels, and a per-forward broadcast would copy the whole FIFO memory. Where
    torch has ``forward_sync_buffers`` they are still synced once when DDP wraps the model."""
    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return dict(forward_sync_buffers=False)
    return dict(broadcast_buffers=False)


_DDP_TYPES = ("MMDistributedDataParallel", "DistributedDataParallel")


def _prepare_distributed(cfg) -> bool:
    """Backend by device, DDP on CPU, and the process group on CPU (mmengine's ``init_dist`` calls
    ``torch.cuda.set_device``). Returns True when this function initialised the process group."""
    cuda = torch.cuda.is_available()
    launcher = cfg.get("launcher", "none")
    env_cfg = dict(cfg.get("env_cfg") or {})
    dist_cfg = dict(env_cfg.get("dist_cfg") or {})
    dist_cfg["backend"] = choose_dist_backend(dist_cfg.get("backend"), cuda)
    env_cfg["dist_cfg"] = dist_cfg
    cfg.env_cfg = env_cfg

    wrapper = cfg.get("model_wrapper_cfg")
    if wrapper is None:
        wrapper = dict(type="MMDistributedDataParallel",
                       find_unused_parameters=cfg.get("find_unused_parameters", False), **_ddp_buffer_kwargs())
    wrapper = dict(wrapper)
    if not cuda and wrapper.get("type", "MMDistributedDataParallel") in _DDP_TYPES:
        wrapper.setdefault("device_ids", None)  # CPU modules take no device_ids (mmengine passes LOCAL_RANK)
    cfg.model_wrapper_cfg = wrapper

    if cuda or (dist.is_available() and dist.is_initialized()):
        return False
    if launcher != "pytorch":
        raise ValueError(f"launcher {launcher!r} needs CUDA (mmengine selects a CUDA device); on CPU run "
                         "`torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch`")
    missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"--launcher pytorch needs the environment torchrun sets ({', '.join(missing)} not set): "
                         "run `torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch`")
    kwargs = {k: v for k, v in dist_cfg.items() if k != "backend"}
    if isinstance(kwargs.get("timeout"), (int, float)):
        kwargs["timeout"] = datetime.timedelta(seconds=kwargs["timeout"])
    dist.init_process_group(backend=dist_cfg["backend"], **kwargs)
    return True


@HOOKS.register_module()
class SyncNormStatsHook(Hook):
    """Average BatchNorm running statistics over the ranks wherever they are used or saved.

    With plain BN (the quick / cpu presets; SyncBN runs on GPUs only) each rank's running mean and
    variance follow its own batches, and since buffers are not broadcast the ranks would validate and
    save different models. Training never reads the running statistics (train-mode BN normalises
    with the batch's; frozen BN does not update them), and they are linear in the batch statistics
    (``r <- (1 - m) r + m b``, with the same ``m`` on every rank), so averaging the ranks' statistics
    once equals averaging them after every iteration. They are therefore all-reduced only before
    they are used or saved: after an iteration that ends with a checkpoint (before CheckpointHook),
    at the end of each training epoch, before validation and at the end of training. All-reduce gives
    every rank the same result. SyncBN layers are already global and skipped. A no-op outside a
    process group.
    """

    priority = "NORMAL"  # before CheckpointHook (VERY_LOW) and before validation

    def __init__(self) -> None:
        self._dirty = False  # trained since the last sync (the same on every rank)

    def _sync(self, runner) -> None:
        if not self._dirty or _world()[1] < 2:
            return
        self._dirty = False
        from mmengine.dist import all_reduce_params
        from torch.nn.modules.batchnorm import SyncBatchNorm, _NormBase

        stats = [t for m in _unwrap(runner.model).modules()
                 if isinstance(m, _NormBase) and not isinstance(m, SyncBatchNorm) and m.track_running_stats
                 for t in (m.running_mean, m.running_var) if t is not None]
        if stats:
            all_reduce_params(stats, op="mean")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if _world()[1] < 2:
            return
        self._dirty = True
        if _saves_checkpoint(runner, "iter"):
            self._sync(runner)

    def after_train_epoch(self, runner) -> None:
        self._sync(runner)

    def before_val_epoch(self, runner) -> None:
        self._sync(runner)

    def after_train(self, runner) -> None:
        self._sync(runner)


def _tensor_digest(named) -> str:
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@HOOKS.register_module()
class DumpGMMStateHook(Hook):
    """Debugging: write each rank's GMM state and weight hashes to ``out_dir/rank{R}.pth``.

    Enable it with ``GMMSEG_LAB_DUMP_STATE=DIR`` (read by :func:`train`, works with the CLI and under
    torchrun) or ``custom_hooks=[dict(type='DumpGMMStateHook', out_dir=DIR)]``. The file holds
    ``rank``, ``world_size``, ``backend``, ``iter``, ``gmm`` (every buffer of every GMM classifier:
    means, stds, log_weights, counters, memory), ``params_sha256`` (all parameters),
    ``buffers_sha256`` (all other buffers) and ``gmm_history``: ``(iteration, sha256 of the GMM
    buffers)`` every ``interval`` iterations (0: none), to find the first update where ranks differ.
    """

    priority = "VERY_LOW"

    def __init__(self, out_dir: str, interval: int = 1) -> None:
        self.out_dir = Path(out_dir)
        self.interval = int(interval)
        self.history: list[tuple[int, str]] = []

    @staticmethod
    def _gmm_buffers(model) -> dict:
        from .gmm import GMMClassifier

        out = {}
        for prefix, module in model.named_modules():
            if isinstance(module, GMMClassifier):
                for name, buf in module.named_buffers(prefix=prefix):
                    out[name] = buf.detach().cpu().clone()
        return out

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and (runner.iter + 1) % self.interval == 0:
            gmm = self._gmm_buffers(_unwrap(runner.model))
            self.history.append((runner.iter + 1, _tensor_digest(sorted(gmm.items()))))

    def after_train(self, runner) -> None:
        model = _unwrap(runner.model)
        gmm = self._gmm_buffers(model)
        rank, world = _world()
        others = [(n, b) for n, b in model.named_buffers() if n not in gmm]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(dict(rank=rank, world_size=world, backend=dist.get_backend() if world > 1 else None,
                        iter=runner.iter, gmm=gmm, params_sha256=_tensor_digest(model.named_parameters()),
                        buffers_sha256=_tensor_digest(others), gmm_history=list(self.history)),
                   self.out_dir / f"rank{rank}.pth")


def _check_before_writing(cfg) -> None:
    """What :func:`train` refuses before it writes anything: a work dir that is not a directory, a
    config without a model, GMM options :class:`~gmmseg_lab.gmm.GMMClassifier` would refuse
    (``ValueError`` naming the option; see :func:`gmmseg_lab.models.presets.check_gmm_options`)."""
    from .models.presets import check_gmm_options, gmm_head_configs

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
    import shutil

    if path.is_dir() and not any(p.suffix == ".pth" or p.name in ("config.py", "last_checkpoint")
                                 for p in path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)
    for parent in created[1:]:
        try:
            parent.rmdir()
        except OSError:
            break


def train(cfg_or_path, *, resume: bool | str | Path = False, progress: bool = True,
          work_dir: str | Path | None = None, log_level: str | None = None) -> Path:
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
    from mmengine.runner import Runner

    from . import models  # noqa: F401  (registers GMMSegHead, GMMLabDataset)

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
        damaged = _checkpoint_files(Path(cfg.work_dir)) if resume_from is None else []
        if damaged:  # never start afresh over them
            raise CheckpointError(f"cannot resume {cfg.work_dir}: its last_checkpoint is "
                                  f"{_read_pointer(Path(cfg.work_dir))[1]} and none of its checkpoints "
                                  f"({', '.join(p.name for p in damaged)}) is intact; start afresh in a new work dir "
                                  "(or remove them)")
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
    created_group = _prepare_distributed(cfg) if distributed else False
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
