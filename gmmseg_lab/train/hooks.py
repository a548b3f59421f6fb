"""The Runner hooks of a gmmseg-lab training run (registered in mmengine's ``HOOKS``).

- :class:`TqdmProgressHook`: a ``tqdm.auto`` bar over iterations (terminal or notebook).
- :class:`AtomicCheckpointHook` (with :class:`AtomicLocalBackend`): mmengine's ``CheckpointHook``
  with crash-safe files; :func:`gmmseg_lab.train.train` uses it in place of ``CheckpointHook``.
- :class:`RNGStateHook`: exact resume: Python / NumPy / torch RNG states in every checkpoint, and the
  data loaders' own seeded generator.
- :class:`SyncNormStatsHook`: BatchNorm running statistics averaged over the ranks wherever they are
  used or saved.
- :class:`DumpGMMStateHook`: debugging (``GMMSEG_LAB_DUMP_STATE=DIR``): each rank's GMM buffers and
  weight hashes.
- :class:`InitFromCheckpointHook`: ``--init-from``: before the first iteration, start the model from
  another checkpoint (:func:`gmmseg_lab.models.transfer.transfer_weights`).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from ..gmm import GMMClassifier
from ..io_utils import atomic_open, atomic_write_text
from ..models.transfer import transfer_weights

__all__ = [
    "ATOMIC_BACKEND",
    "DUMP_STATE_ENV",
    "AtomicCheckpointHook",
    "AtomicLocalBackend",
    "DumpGMMStateHook",
    "InitFromCheckpointHook",
    "RNGStateHook",
    "SyncNormStatsHook",
    "TqdmProgressHook",
    "unwrap_model",
    "rank_and_world",
]

#: Environment variable: when set to a directory, :func:`gmmseg_lab.train.train` adds
#: :class:`DumpGMMStateHook` there.
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

    def __init__(
        self, interval: int = 5, desc: str | None = None, keys: tuple[str, ...] = ("loss", "loss_component", "mIoU")
    ):
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
        self._bar = tqdm(
            total=runner.max_iters, initial=runner.iter, desc=desc, unit="it", dynamic_ncols=True, leave=True
        )

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
        if (
            self.file_client_args is None
            and not (self.backend_args or {}).get("backend")
            and type(self.file_backend) is LocalBackend
        ):
            self.backend_args = {**(self.backend_args or {}), "backend": ATOMIC_BACKEND}
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
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
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
                    hook.save_last and hook.is_last_train_iter(runner)
                ):
                    return True
            elif stage == "epoch" and hook.by_epoch:
                if hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_epoch(runner)
                ):
                    return True
            elif stage == "val" and hook.save_best:
                return True
        except AttributeError:  # a checkpoint hook unlike mmengine's: assume it may save
            return True
    return False


# ---------------------------------------------------------------------- exact resume
def _rng_state() -> dict:
    """This process's Python, NumPy and torch (CPU and current CUDA device) RNG states, as plain
    Python values and tensors (loadable with ``torch.load(weights_only=True)``)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def unwrap_model(model):
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model


def rank_and_world() -> tuple[int, int]:
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
            if isinstance(loop, BaseLoop) and isinstance(
                getattr(loop, "dataloader", None), torch.utils.data.DataLoader
            ):
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
        world = rank_and_world()[1]
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
        if rank_and_world()[1] == 1:
            ranks = [self._state(runner)]
        elif self._gathered is not None and self._gathered[0] == self._when(runner):
            ranks = self._gathered[1]
        else:  # saved outside CheckpointHook's schedule: the other ranks' states are unknown here
            runner.logger.warning(
                "RNGStateHook: this checkpoint is saved where no CheckpointHook saves, so the"
                " ranks' RNG states were not gathered: it holds none, and a run resumed from"
                " it restarts the random streams from the seed"
            )
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
        rank, world = rank_and_world()
        if saved is None:
            runner.logger.warning(
                "the resumed checkpoint holds no RNG state (written before RNGStateHook):"
                " the random streams restart from the seed, so this run will not match"
                " an uninterrupted one exactly"
            )
            return
        if saved["world_size"] != world:
            runner.logger.warning(
                f"the checkpoint's RNG states are for {saved['world_size']} rank(s), this run"
                f" has {world}: the random streams restart from the seed"
            )
            return
        state = saved["ranks"][rank]
        _set_rng_state(state)
        loader = getattr(getattr(runner, "_train_loop", None), "dataloader", None)
        if (
            "train_loader_generator" in state
            and isinstance(loader, torch.utils.data.DataLoader)
            and loader.generator is not None
        ):
            loader.generator.set_state(state["train_loader_generator"].cpu())
        if isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers > 0:
            runner.logger.warning(
                "resumed with num_workers > 0: the data-loading workers re-seed when they"
                " start, so random augmentations after the resume differ from an"
                " uninterrupted run (use num_workers=0 for a bit-exact resume)"
            )


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
        if not self._dirty or rank_and_world()[1] < 2:
            return
        self._dirty = False
        from mmengine.dist import all_reduce_params
        from torch.nn.modules.batchnorm import SyncBatchNorm, _NormBase

        stats = [
            t
            for m in unwrap_model(runner.model).modules()
            if isinstance(m, _NormBase) and not isinstance(m, SyncBatchNorm) and m.track_running_stats
            for t in (m.running_mean, m.running_var)
            if t is not None
        ]
        if stats:
            all_reduce_params(stats, op="mean")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if rank_and_world()[1] < 2:
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
        out = {}
        for prefix, module in model.named_modules():
            if isinstance(module, GMMClassifier):
                for name, buf in module.named_buffers(prefix=prefix):
                    out[name] = buf.detach().cpu().clone()
        return out

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and (runner.iter + 1) % self.interval == 0:
            gmm = self._gmm_buffers(unwrap_model(runner.model))
            self.history.append((runner.iter + 1, _tensor_digest(sorted(gmm.items()))))

    def after_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        gmm = self._gmm_buffers(model)
        rank, world = rank_and_world()
        others = [(n, b) for n, b in model.named_buffers() if n not in gmm]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            dict(
                rank=rank,
                world_size=world,
                backend=dist.get_backend() if world > 1 else None,
                iter=runner.iter,
                gmm=gmm,
                params_sha256=_tensor_digest(model.named_parameters()),
                buffers_sha256=_tensor_digest(others),
                gmm_history=list(self.history),
            ),
            self.out_dir / f"rank{rank}.pth",
        )


@HOOKS.register_module()
class InitFromCheckpointHook(Hook):
    """Before the first training iteration, start the model from ``checkpoint`` (:func:`transfer_weights`).

    Runs after mmengine's weight initialisation (so the rest keeps its init, e.g. the pretrained
    encoder of a layer the checkpoint lacks) and only at iteration 0: a resumed run keeps its own
    weights. The report is written to the run's log and ``work_dir/init_from.txt``.
    """

    priority = "VERY_HIGH"

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = str(checkpoint)

    def before_train(self, runner) -> None:
        if runner.iter > 0:  # resumed: the run's own checkpoint was loaded
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        report = transfer_weights(model, self.checkpoint, logger=runner.logger)
        if getattr(runner, "rank", 0) == 0:
            print(report.summary(), flush=True)  # also when the console log level hides INFO
            atomic_write_text(Path(runner.work_dir) / "init_from.txt", report.summary(max_keys=10**6) + "\n")
