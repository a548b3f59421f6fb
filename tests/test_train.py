"""Training through mmengine's Runner: checkpoints carry the GMM state, resume continues, progress bar."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from gmmseg_lab.models import ARCHS, build_config, build_dataloader, decode_head_of, load_segmentor, predict_batch
from gmmseg_lab.train import TqdmProgressHook, last_checkpoint, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Every test here runs with single-threaded torch (see conftest.single_thread_torch)."""


GMM_BUFFERS = (
    "gmm.means",
    "gmm.stds",
    "gmm.log_weights",
    "gmm.num_updates",
    "gmm.num_m_steps",
    "gmm.seen",
    "gmm.memory.queue",
    "gmm.memory.ptr",
    "gmm.memory.count",
)


def scalars(work_dir):
    """Every line of mmengine's scalars.json log of a work dir, in order."""
    rows = []
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


@pytest.fixture(scope="module")
def trained(quick_dataset, tmp_path_factory):
    """SegFormer-GMM on the quick data: 10 iterations, checkpoints every 5, with the progress bar."""
    work_dir = tmp_path_factory.mktemp("train") / "segformer_gmm"
    cfg = build_config(
        "segformer",
        "gmm",
        "quick",
        data_root=quick_dataset,
        work_dir=work_dir,
        seed=0,
        max_iters=10,
        cfg_options={"default_hooks.checkpoint.interval": 5, "default_hooks.logger.interval": 1},
    )
    out = train(cfg, progress=True)
    return cfg, out


@pytest.mark.slow
def test_train_writes_config_checkpoints_and_validates(trained):
    cfg, work_dir = trained
    assert work_dir == Path(cfg.work_dir)
    assert (work_dir / "config.py").is_file()
    assert (work_dir / "iter_5.pth").is_file() and (work_dir / "iter_10.pth").is_file()
    assert last_checkpoint(work_dir) == work_dir / "iter_10.pth"
    # Checkpoints and the pointer were written atomically: the crash-safe hook ran, no temporaries left.
    log = next(work_dir.glob("*/*.log")).read_text()
    assert "AtomicCheckpointHook" in log and not re.search(r"(?<!Atomic)CheckpointHook", log)
    assert not list(work_dir.glob(".*.tmp"))
    assert Config.fromfile(str(work_dir / "config.py")).default_hooks.checkpoint.type == "CheckpointHook"
    rows = scalars(work_dir)
    train_rows = [r for r in rows if "decode.loss_component" in r]
    assert len(train_rows) == 10 and all(r["decode.gmm_pixels"] > 0 for r in train_rows)
    assert train_rows[-1]["decode.gmm_num_m_steps"] == 2  # M-step every 5 updates
    assert any("mIoU" in r for r in rows)  # IoUMetric validation at the end


@pytest.mark.slow
def test_checkpoint_restores_gmm_buffers_and_predictions_bit_identically(trained, quick_dataset):
    cfg, work_dir = trained
    state = torch.load(last_checkpoint(work_dir), map_location="cpu", weights_only=False)["state_dict"]
    model_a, cfg_a = load_segmentor(work_dir, device="cpu")  # config.py + last_checkpoint
    model_b, _ = load_segmentor(cfg, checkpoint=work_dir / "iter_10.pth", device="cpu")
    head_state = decode_head_of(model_a).state_dict()
    for name in GMM_BUFFERS:
        assert torch.equal(head_state[name], state[f"decode_head.{name}"]), name
    assert int(head_state["gmm.num_updates"]) == 10 and int(head_state["gmm.memory.count"].sum()) > 0
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key
    batch = next(iter(build_dataloader(cfg_a, "val")))
    for ra, rb in zip(predict_batch(model_a, batch), predict_batch(model_b, batch)):
        assert torch.equal(ra["seg_logits"], rb["seg_logits"])
        assert torch.equal(ra["class_log_likelihood"], rb["class_log_likelihood"])


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained, tmp_path):
    cfg, work_dir = trained

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(work_dir, resumed_dir)
    (resumed_dir / "last_checkpoint").write_text(str(resumed_dir / "iter_10.pth"))
    cfg = build_config(
        "segformer",
        "gmm",
        "quick",
        data_root=cfg.train_dataloader.dataset.data_root,
        work_dir=resumed_dir,
        seed=0,
        max_iters=15,
        cfg_options={"default_hooks.checkpoint.interval": 5},
    )
    train(cfg, resume=True, progress=False)
    assert last_checkpoint(resumed_dir) == resumed_dir / "iter_15.pth"
    # config.py is the config as given: what train() set to resume this run is not recorded in it.
    recorded = Config.fromfile(str(resumed_dir / "config.py"))
    assert recorded.resume is False and recorded.load_from is None
    assert recorded.train_cfg.max_iters == 15
    ckpt = torch.load(resumed_dir / "iter_15.pth", map_location="cpu", weights_only=False)
    assert ckpt["meta"]["iter"] == 15
    # 10 updates before the checkpoint + 5 after: the GMM state was restored, not restarted
    assert int(ckpt["state_dict"]["decode_head.gmm.num_updates"]) == 15
    assert int(ckpt["state_dict"]["decode_head.gmm.num_m_steps"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "segformer"])
def test_every_arch_trains_and_validates_end_to_end(arch, quick_dataset, tmp_path):
    cfg = build_config(arch, "gmm", "quick", data_root=quick_dataset, work_dir=tmp_path / arch, seed=0, max_iters=5)
    work_dir = train(cfg, progress=False)
    assert last_checkpoint(work_dir) == work_dir / "iter_5.pth"
    rows = scalars(work_dir)
    assert any("mIoU" in r for r in rows)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)


def test_progress_hook_counts_iterations_and_shows_metrics():
    class FakeCfg:
        filename = "x_quick_gmm.py"

    class FakeRunner:
        cfg = FakeCfg()
        max_iters = 6
        iter = 2  # as after a resume

    hook = TqdmProgressHook(interval=1)
    runner = FakeRunner()
    hook.before_train(runner)
    assert hook._bar.n == 2 and hook._bar.total == 6
    for i in range(4):
        runner.iter = 2 + i
        hook.after_train_iter(
            runner,
            i,
            outputs={"loss": torch.tensor(1.5, requires_grad=True), "decode.loss_component": torch.tensor(0.1)},
        )
    hook.after_val_epoch(runner, metrics={"mIoU": 42.0})
    assert hook._bar.n == 6
    assert hook._postfix["loss"] == "1.5" and hook._postfix["mIoU"] == "42"
    hook.after_train(runner)
    assert hook._bar is None
