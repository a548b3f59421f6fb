"""Training through mmengine's Runner: one function, a tqdm progress hook, checkpoints and resume.

::

    from gmmseg_lab.models import build_config
    from gmmseg_lab.train import train, last_checkpoint

    cfg = build_config("segformer", "gmm", "cpu", data_root=DIR, work_dir="runs/seg_gmm", seed=0)
    work_dir = train(cfg)                       # IterBasedTrainLoop, IoUMetric validation, checkpoints
    train(cfg, resume=True)                     # continue from work_dir/last_checkpoint

The work dir holds ``config.py`` (the full config as run), the checkpoints (``iter_N.pth``,
``last_checkpoint`` naming the newest) and the logs. The GMM state (means, standard deviations, FIFO
memory, counters) is made of buffers, so it is saved in every checkpoint and restored on load/resume.
:func:`gmmseg_lab.models.load_segmentor` turns a work dir back into a model.

Exact resume: :class:`RNGStateHook` (added by :func:`train`) saves the Python / NumPy / torch RNG
states in every checkpoint and restores them on resume, and gives the data loaders their own seeded
generator, so a run killed and resumed ends bit-identical to an uninterrupted one (CPU, data loading in
the main process, ``num_workers=0`` as in the shipped presets). A truncated or corrupt checkpoint is
refused with a :class:`CheckpointError` naming the file (no silent fallback).

Distributed (``torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch``): the
backend follows the device (:func:`choose_dist_backend`: NCCL with CUDA, gloo without), DDP wraps the
model on CPU too, only rank 0 writes checkpoints, logs and ``config.py``, and every rank holds the
same GMM: its update gathers the pixels of all ranks (:func:`gmmseg_lab.gmm.all_gather_rows`), so the
buffers are identical by construction and are not broadcast (the FIFO memory can be hundreds of MB).
:class:`SyncNormStatsHook` averages BatchNorm running statistics across ranks after every iteration
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
import uuid
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .models.inference import quiet_mmengine

__all__ = ["train", "TqdmProgressHook", "RNGStateHook", "SyncNormStatsHook", "DumpGMMStateHook",
           "CheckpointError", "check_checkpoint", "choose_dist_backend", "last_checkpoint",
           "quiet_mmengine", "DUMP_STATE_ENV"]

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


def last_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint named by ``work_dir/last_checkpoint`` (written by CheckpointHook), or None."""
    pointer = Path(work_dir) / "last_checkpoint"
    if not pointer.is_file():
        return None
    path = Path(pointer.read_text().strip())
    return path if path.is_absolute() else Path(work_dir) / path


# ---------------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (truncated, corrupt or missing)."""


def _checkpoint_iter(path: Path) -> int:
    stem = path.stem
    return int(stem.split("_")[-1]) if stem.split("_")[-1].isdigit() else -1


def check_checkpoint(path: str | Path) -> Path:
    """Check that ``path`` is a complete, readable checkpoint before resuming from it; returns it.

    mmengine checkpoints are zip archives (``torch.save``): a truncated file has no central directory
    and a damaged one fails its CRCs, both found without unpickling. Anything else must load with
    ``torch.load``. Raises :class:`CheckpointError` naming the file and the work dir's other
    checkpoints (resume from one with ``train(cfg, resume=PATH)`` / ``--resume-from PATH``).
    """
    path = Path(path)
    problem = None
    if not path.is_file():
        problem = "it does not exist"
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
    else:
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot resume from it"
            problem = f"it is truncated or corrupt (torch.load failed: {type(exc).__name__}: {exc})"
    if problem is None:
        return path
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
      first resumed iteration (``before_train_epoch``, after every other hook has set up);
    - gives every data loader its own generator seeded from the run's seed: a ``DataLoader`` otherwise
      draws its worker base seed from the global torch RNG each time an iterator is created, and the
      resumed run creates its train iterator (and the uninterrupted one its validation iterators) at
      other points of the stream.

    Exactness needs the augmentations drawn in the main process (``num_workers=0``, the shipped
    presets): workers re-seed from ``worker_init_fn`` when their iterator is created, so with workers
    the augmentations after a resume differ (a warning says so). Restored only when resuming (the
    loaded checkpoint's iteration is the runner's), not for ``load_from`` weights.
    """

    priority = "LOW"  # after NORMAL hooks, before CheckpointHook (VERY_LOW) saves

    def __init__(self) -> None:
        self._gathered: list | None = None
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
        for loader in self._loaders(runner):
            if loader.generator is None:
                loader.generator = torch.Generator().manual_seed(int(runner.seed))

    # -- saving
    def _state(self, runner) -> dict:
        state = _rng_state()
        loader = getattr(getattr(runner, "_train_loop", None), "dataloader", None)
        if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is not None:
            state["train_loader_generator"] = loader.generator.get_state()
        return state

    def _gather(self, runner) -> None:
        # CheckpointHook saves on rank 0 only: collect every rank's state first (a few tens of kB).
        if _world()[1] > 1:
            states: list = [None] * _world()[1]
            dist.all_gather_object(states, self._state(runner))
            self._gathered = states

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        self._gather(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        world = _world()[1]
        ranks = self._gathered if world > 1 and self._gathered is not None else [self._state(runner)]
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
    """Average BatchNorm running statistics over the ranks after every training iteration.

    With plain BN (the quick / cpu presets; SyncBN runs on GPUs only) each rank's running mean and
    variance follow its own batches, and since buffers are not broadcast the ranks would validate and
    save different models. The running statistics are linear in the batch statistics, so the average
    is the running statistic of the per-rank batch statistics' mean; all-reduce gives every rank the
    same result. SyncBN layers are already global and skipped. A no-op outside a process group.
    """

    priority = "NORMAL"  # before CheckpointHook (VERY_LOW) and before validation

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if _world()[1] < 2:
            return
        from mmengine.dist import all_reduce_params
        from torch.nn.modules.batchnorm import SyncBatchNorm, _NormBase

        stats = [t for m in _unwrap(runner.model).modules()
                 if isinstance(m, _NormBase) and not isinstance(m, SyncBatchNorm) and m.track_running_stats
                 for t in (m.running_mean, m.running_var) if t is not None]
        if stats:
            all_reduce_params(stats, op="mean")


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


def train(cfg_or_path, *, resume: bool | str | Path = False, progress: bool = True,
          work_dir: str | Path | None = None, log_level: str | None = None) -> Path:
    """Train a config with mmengine's Runner; returns the work dir.

    Args:
        cfg_or_path: an ``mmengine.Config`` (see :func:`gmmseg_lab.models.build_config`) or a config
            file path.
        resume: ``True``: continue from the work dir's ``last_checkpoint`` (model, GMM buffers,
            optimizer, LR schedule, iteration, data order and RNG states, so the run ends as an
            uninterrupted one would); starts afresh when there is none. A checkpoint path: continue
            from that one. A truncated or corrupt checkpoint raises :class:`CheckpointError` naming it
            (see :func:`check_checkpoint`).
        progress: show a tqdm progress bar (``tqdm.auto``; rank 0 only).
        work_dir: override ``cfg.work_dir``.
        log_level: override the config's ``log_level`` (e.g. ``"WARNING"`` for a quiet console).

    With ``cfg.launcher`` set (``--launcher pytorch`` under torchrun) the run is distributed: see the
    module docstring. :class:`RNGStateHook` and :class:`SyncNormStatsHook` are always registered (the
    latter is a no-op in one process); :class:`DumpGMMStateHook` when ``GMMSEG_LAB_DUMP_STATE`` is set.
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
    resume_from = None
    if isinstance(resume, (str, Path)):
        resume_from = Path(resume).expanduser().absolute()
    elif resume:
        resume_from = last_checkpoint(cfg.work_dir)  # None: nothing to resume, start afresh
    if resume_from is not None:
        check_checkpoint(resume_from)
        cfg.resume = True
        cfg.load_from = str(resume_from)  # mmengine resumes from load_from when resume=True
    else:
        cfg.resume = False
    hooks = [h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "TqdmProgressHook"]
    if progress:
        hooks.append(dict(type="TqdmProgressHook"))
    cfg.custom_hooks = hooks
    created_group = _prepare_distributed(cfg) if cfg.get("launcher", "none") != "none" else False

    out = Path(cfg.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner.from_cfg(cfg)
    if runner.rank == 0:  # one writer per file
        cfg.dump(str(out / "config.py"))
    registered = {type(h).__name__ for h in runner.hooks}
    extra = [RNGStateHook(), SyncNormStatsHook()]
    if os.environ.get(DUMP_STATE_ENV):
        extra.append(DumpGMMStateHook(os.environ[DUMP_STATE_ENV]))
    for hook in extra:
        if type(hook).__name__ not in registered:
            runner.register_hook(hook)
    runner.train()
    if created_group:
        dist.destroy_process_group()
    return out
