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
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .models.inference import quiet_mmengine

__all__ = ["train", "TqdmProgressHook", "last_checkpoint", "quiet_mmengine"]


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


def train(cfg_or_path, *, resume: bool = False, progress: bool = True, work_dir: str | Path | None = None,
          log_level: str | None = None) -> Path:
    """Train a config with mmengine's Runner; returns the work dir.

    Args:
        cfg_or_path: an ``mmengine.Config`` (see :func:`gmmseg_lab.models.build_config`) or a config
            file path.
        resume: continue from the work dir's ``last_checkpoint`` (model, GMM buffers, optimizer,
            LR schedule, iteration and data order); starts afresh when there is none.
        progress: show a tqdm progress bar (``tqdm.auto``).
        work_dir: override ``cfg.work_dir``.
        log_level: override the config's ``log_level`` (e.g. ``"WARNING"`` for a quiet console).
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
    cfg.resume = bool(resume)
    if resume:
        cfg.load_from = None  # the Runner then picks work_dir/last_checkpoint
    hooks = [h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "TqdmProgressHook"]
    if progress:
        hooks.append(dict(type="TqdmProgressHook"))
    cfg.custom_hooks = hooks

    out = Path(cfg.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(out / "config.py"))
    runner = Runner.from_cfg(cfg)
    runner.train()
    return out
