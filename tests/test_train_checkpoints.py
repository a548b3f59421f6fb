"""Crash-safe checkpoints and the hooks' schedules, without a full training run.

- :class:`AtomicCheckpointHook` writes each checkpoint and ``last_checkpoint`` atomically and removes
  the oldest checkpoint only once the new one is in place; :func:`last_checkpoint` survives an empty or
  garbled pointer.
- :class:`RNGStateHook` gathers the ranks' RNG states, and :class:`SyncNormStatsHook` averages the BN
  statistics, only where a checkpoint is saved or the statistics are used, not at every iteration.
- :func:`train` destroys the process group it created even when training fails.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub

import gmmseg_lab.train.hooks as train_mod
from gmmseg_lab.train import (
    AtomicCheckpointHook,
    AtomicLocalBackend,
    CheckpointError,
    RNGStateHook,
    SyncNormStatsHook,
    last_checkpoint,
    train,
)


def _ckpt(path, step: int = 0):
    torch.save({"meta": {"iter": step}, "state_dict": {"w": torch.full((64,), float(step))}}, path)
    return path


# ---------------------------------------------------------------------- last_checkpoint
@pytest.mark.parametrize(
    "pointer",
    [b"", b"\n  \n", b"\xff\xfe\x00garbage", b"/a/iter_2.pth\n/b/iter_4.pth"],
    ids=["empty", "blank", "binary", "two lines"],
)
def test_an_unusable_pointer_falls_back_to_the_newest_intact_checkpoint(pointer, tmp_path):
    """An empty pointer used to give the work dir itself ('cannot resume from <work_dir>: it does not exist')."""
    for step in (2, 4, 10):
        _ckpt(tmp_path / f"iter_{step}.pth", step)
    (tmp_path / "iter_10.pth").write_bytes((tmp_path / "iter_10.pth").read_bytes()[:100])  # truncated
    (tmp_path / "last_checkpoint").write_bytes(pointer)
    with pytest.warns(RuntimeWarning, match="last_checkpoint is (empty|garbled).*iter_4.pth"):
        assert last_checkpoint(tmp_path) == tmp_path / "iter_4.pth"


def test_pointer_missing_empty_or_valid(tmp_path):
    assert last_checkpoint(tmp_path) is None  # nothing there
    (tmp_path / "last_checkpoint").write_text("")
    assert last_checkpoint(tmp_path) is None  # nothing to fall back to
    # Killed between the first checkpoint and its pointer: the checkpoint is found all the same.
    (tmp_path / "last_checkpoint").unlink()
    _ckpt(tmp_path / "iter_3.pth", 3)
    assert last_checkpoint(tmp_path) == tmp_path / "iter_3.pth"
    # A usable pointer is taken as it is, even to a missing file (check_checkpoint then names it).
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_9.pth"))
    assert last_checkpoint(tmp_path) == tmp_path / "iter_9.pth"
    (tmp_path / "last_checkpoint").write_text("iter_3.pth")
    assert last_checkpoint(tmp_path) == tmp_path / "iter_3.pth"


def test_resume_refuses_a_work_dir_whose_checkpoints_are_all_damaged(quick_dataset, tmp_path):
    from gmmseg_lab.models import build_config

    _ckpt(tmp_path / "iter_2.pth").write_bytes(b"")
    (tmp_path / "iter_4.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "last_checkpoint").write_text("")
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=tmp_path, max_iters=4)
    with pytest.raises(
        CheckpointError,
        match=r"last_checkpoint is empty and none of its checkpoints "
        r"\(iter_4.pth, iter_2.pth\) is intact",
    ):
        train(cfg, resume=True, progress=False)
    assert not (tmp_path / "config.py").exists()  # refused before anything was written


# ---------------------------------------------------------------------- atomic writes
def test_the_atomic_backend_leaves_the_old_file_when_a_write_is_cut_short(tmp_path, monkeypatch):
    path = tmp_path / "iter_1.pth"
    path.write_bytes(b"old")

    def killed(*args, **kwargs):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)
    for put in (lambda b: b.put(b"new" * 1000, path), lambda b: b.put_text("new", path)):
        with pytest.raises(OSError, match="killed"):
            put(AtomicLocalBackend())
        assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]  # no temporary left


class _Runner:
    """What CheckpointHook uses of a Runner; ``save_checkpoint`` saves through the hook's backend as
    mmengine's does, and records what ``last_checkpoint`` named while the new checkpoint was written."""

    def __init__(self, work_dir, fail_at: int | None = None):
        self.work_dir = str(work_dir)
        self.logger = logging.getLogger("test_train_checkpoints")
        self.message_hub = MessageHub.get_instance(f"ckpt_{uuid.uuid4().hex}")
        self.iter, self.epoch, self.max_iters = 0, 0, 100
        self.fail_at = fail_at
        self.during: list = []

    def save_checkpoint(
        self,
        out_dir,
        filename,
        file_client_args=None,
        *,
        save_optimizer=True,
        save_param_scheduler=True,
        meta=None,
        by_epoch=True,
        backend_args=None,
    ):
        from mmengine.runner.checkpoint import save_checkpoint

        previous = last_checkpoint(self.work_dir)
        self.during.append((previous, previous is not None and previous.is_file()))
        if meta["iter"] == self.fail_at:
            raise KeyboardInterrupt("killed while saving")
        save_checkpoint(
            {"meta": meta, "message_hub": self.message_hub.state_dict()},
            os.path.join(out_dir, filename),
            backend_args=backend_args,
        )


def test_checkpoint_hook_replaces_files_atomically_and_prunes_after_saving(tmp_path):
    runner = _Runner(tmp_path, fail_at=3)
    (tmp_path / ".iter_7.pth.abc123.tmp").write_bytes(b"left by a killed run")
    (tmp_path / ".last_checkpoint.xyz.tmp").write_text("left by a killed run")
    hook = AtomicCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    hook.before_train(runner)
    assert type(hook.file_backend) is AtomicLocalBackend
    assert not list(tmp_path.glob(".*.tmp"))  # the killed run's temporaries are gone

    for it in range(2):
        runner.iter = it
        hook.after_train_iter(runner, it)
    # While iter_2.pth was written, the pointer named iter_1.pth and it was still there (mmengine's
    # CheckpointHook removes it first: a kill then leaves no checkpoint).
    assert runner.during == [(None, False), (tmp_path / "iter_1.pth", True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_2.pth", "last_checkpoint"]
    assert last_checkpoint(tmp_path) == tmp_path / "iter_2.pth"

    runner.iter = 2
    with pytest.raises(KeyboardInterrupt):  # "killed" while saving iter_3.pth
        hook.after_train_iter(runner, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_2.pth", "last_checkpoint"]
    assert last_checkpoint(tmp_path) == tmp_path / "iter_2.pth"
    assert torch.load(tmp_path / "iter_2.pth", weights_only=False)["message_hub"]["runtime_info"]["keep_ckpt_ids"] == [
        2
    ]


# ---------------------------------------------------------------------- schedules of the collectives
def _fake_world(monkeypatch, runner):
    """Pretend to be rank 0 of 2; record the iterations where each collective runs."""
    import mmengine.dist

    calls = {"gather": [], "sync": []}
    monkeypatch.setattr(train_mod, "rank_and_world", lambda: (0, 2))

    def all_gather_object(out, obj):
        calls["gather"].append(runner.iter)
        out[:] = [obj, obj]

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    monkeypatch.setattr(mmengine.dist, "all_reduce_params", lambda params, op: calls["sync"].append(runner.iter))
    return calls


def test_rng_states_are_gathered_only_where_a_checkpoint_is_saved(monkeypatch, caplog):
    runner = SimpleNamespace(
        iter=0,
        epoch=0,
        max_iters=12,
        model=torch.nn.BatchNorm1d(3),
        hooks=[CheckpointHook(interval=5, by_epoch=False)],
        logger=logging.getLogger("test_train_checkpoints"),
    )
    calls = _fake_world(monkeypatch, runner)
    rng, norm = RNGStateHook(), SyncNormStatsHook()
    checkpoints = {}
    for it in range(12):
        runner.iter = it
        rng.after_train_iter(runner, it)
        norm.after_train_iter(runner, it)
        if it in (4, 10, 11):  # 4 and 11 are CheckpointHook's saves; 10 is not
            checkpoints[it] = {}
            rng.before_save_checkpoint(runner, checkpoints[it])
        if it == 7:  # validation: the running statistics are used
            norm.before_val_epoch(runner)
            rng.after_val_epoch(runner, {"mIoU": 1.0})  # no save_best: nothing to gather
    norm.before_val_epoch(runner)  # the final validation and the end: already in sync
    norm.after_train(runner)
    assert calls["gather"] == [4, 9, 11]  # every 5 iterations and the last (was: every iteration)
    assert calls["sync"] == [4, 7, 9, 11]  # checkpoints and validation (was: every iteration)
    assert checkpoints[4]["rng_state"]["world_size"] == 2 and len(checkpoints[4]["rng_state"]["ranks"]) == 2
    assert checkpoints[11]["rng_state"]["world_size"] == 2
    assert "rng_state" not in checkpoints[10]  # not gathered there: no stale states saved
    assert "restarts the random streams" in caplog.text

    # Best checkpoints are saved after validation: the states are gathered there too.
    runner.hooks = [CheckpointHook(interval=5, by_epoch=False, save_best="mIoU", rule="greater")]
    runner.iter = 12
    rng.after_val_epoch(runner, {"mIoU": 1.0})
    assert calls["gather"][-1] == 12
    best = {}
    rng.before_save_checkpoint(runner, best)
    assert best["rng_state"]["world_size"] == 2


def test_norm_stats_are_synced_at_the_end_of_an_epoch_and_of_training(monkeypatch):
    runner = SimpleNamespace(
        iter=0,
        epoch=0,
        max_iters=3,
        model=torch.nn.BatchNorm1d(3),
        hooks=[],
        logger=logging.getLogger("test_train_checkpoints"),
    )
    calls = _fake_world(monkeypatch, runner)
    norm = SyncNormStatsHook()
    norm.after_train_iter(runner, 0)
    norm.after_train_epoch(runner)
    runner.iter = 1
    norm.after_train_iter(runner, 1)
    norm.after_train(runner)
    norm.after_train(runner)
    assert calls["sync"] == [0, 1]


# ---------------------------------------------------------------------- the process group
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_train_destroys_its_process_group_when_training_fails(quick_dataset, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("with CUDA mmengine creates the process group, not train()")
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    from gmmseg_lab.models import build_config

    env = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=tmp_path / "w", max_iters=1)
    cfg.launcher = "pytorch"
    cfg.model.type = "NoSuchSegmentor"  # fails in Runner.from_cfg, after the group was created
    try:
        with pytest.raises(KeyError, match="NoSuchSegmentor"):
            train(cfg, progress=False, log_level="WARNING")
        assert not dist.is_initialized(), "train() left its process group behind"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
