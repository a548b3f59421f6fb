"""Distributed training under torchrun: 2 gloo processes on CPU end with bit-identical GMMs and weights.

That one ``GMMClassifier.update`` over 2 gloo ranks equals one process on the concatenated batch is
tested in ``test_gmm_classifier.py`` (mp.spawn); here the whole training stack runs under the launcher.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from gmmseg_lab.cli import main
from gmmseg_lab.models import build_config
from gmmseg_lab.train import DUMP_STATE_ENV, choose_dist_backend, last_checkpoint, train

GMM_BUFFERS = (
    "means",
    "stds",
    "log_weights",
    "num_updates",
    "num_m_steps",
    "seen",
    "memory.queue",
    "memory.ptr",
    "memory.count",
)
ITERS = 6


def _torchrun_train(args: list[str], dump_dir, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m gmmseg_lab train ARGS`` (a free port each time)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env[DUMP_STATE_ENV] = str(dump_dir)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "gmmseg_lab",
        "train",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(quick_dataset, tmp_path_factory):
    """SegFormer-GMM, quick preset, 6 iterations on 2 gloo ranks; each rank dumps its final state."""
    root = tmp_path_factory.mktemp("ddp")
    work_dir, dump = root / "run", root / "dump"
    proc = _torchrun_train(
        [
            "--data",
            str(quick_dataset),
            "--arch",
            "segformer",
            "--head",
            "gmm",
            "--preset",
            "quick",
            "--max-iters",
            str(ITERS),
            "--seed",
            "0",
            "--work-dir",
            str(work_dir),
            "--launcher",
            "pytorch",
            "--no-progress",
        ],
        dump,
    )
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    ranks = [torch.load(dump / f"rank{r}.pth", weights_only=False) for r in range(2)]
    return work_dir, ranks, proc


@pytest.mark.slow
def test_two_gloo_ranks_keep_the_gmm_and_the_weights_bit_identical(two_ranks):
    _, (r0, r1), _ = two_ranks
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["world_size"] == r1["world_size"] == 2
    if not torch.cuda.is_available():
        assert r0["backend"] == r1["backend"] == "gloo"
    assert r0["iter"] == r1["iter"] == ITERS
    names = {n.removeprefix("decode_head.gmm.") for n in r0["gmm"]}
    assert set(GMM_BUFFERS) <= names, names
    assert set(r0["gmm"]) == set(r1["gmm"])
    for name, value in r0["gmm"].items():
        assert torch.equal(value, r1["gmm"][name]), f"ranks differ in {name}"
    assert int(r0["gmm"]["decode_head.gmm.num_updates"]) == ITERS
    assert int(r0["gmm"]["decode_head.gmm.num_m_steps"]) == 1  # update_interval 5
    assert int(r0["gmm"]["decode_head.gmm.memory.count"].sum()) > 0
    # Identical after every update, not only at the end.
    assert [i for i, _ in r0["gmm_history"]] == list(range(1, ITERS + 1))
    assert r0["gmm_history"] == r1["gmm_history"]
    # Weights (DDP's all-reduced gradients) and every other buffer (BN statistics, SyncNormStatsHook).
    assert r0["params_sha256"] == r1["params_sha256"]
    assert r0["buffers_sha256"] == r1["buffers_sha256"]


@pytest.mark.slow
def test_only_rank_zero_writes_and_the_checkpoint_is_the_ranks_state(two_ranks):
    work_dir, (r0, _), proc = two_ranks
    assert last_checkpoint(work_dir) == work_dir / f"iter_{ITERS}.pth"
    assert sorted(p.name for p in work_dir.glob("*.pth")) == [f"iter_{ITERS}.pth"]
    logs = list(work_dir.glob("*/*.log"))
    assert len(logs) == 1, logs  # one log file (rank 0's), one scalars file
    assert len(list(work_dir.glob("*/vis_data/scalars.json"))) == 1
    text = logs[0].read_text()
    assert "Distributed training: True" in text and "GPU number: 2" in text
    assert (work_dir / "config.py").is_file()
    assert proc.stdout.count("trained:") == 2  # both ranks ran to the end
    state = torch.load(work_dir / f"iter_{ITERS}.pth", map_location="cpu", weights_only=False)["state_dict"]
    for name, value in r0["gmm"].items():
        assert torch.equal(state[name], value), name
    # config.py is the config as given, not what train() set up for this machine and launcher.
    recorded = Config.fromfile(str(work_dir / "config.py"))
    assert "model_wrapper_cfg" not in recorded and recorded.env_cfg.dist_cfg.backend == "nccl"
    assert "diff_rank_seed" not in recorded.randomness and recorded.resume is False


@pytest.mark.slow
def test_every_rank_draws_its_own_random_numbers(two_ranks):
    """diff_rank_seed under a launcher: augmentations, dropout and loader streams differ per rank
    (the mixtures and weights stay identical: see above)."""
    work_dir, _, _ = two_ranks
    rng = torch.load(work_dir / f"iter_{ITERS}.pth", map_location="cpu", weights_only=False)["rng_state"]
    assert rng["world_size"] == 2
    r0, r1 = rng["ranks"]
    assert not torch.equal(r0["torch"], r1["torch"])
    assert not torch.equal(r0["numpy"]["keys"], r1["numpy"]["keys"])
    assert not torch.equal(r0["train_loader_generator"], r1["train_loader_generator"])


def _head_worker(rank, world, init_file, out_dir, case):
    """A GMM decode head in training mode on 2 gloo ranks; one rank gets a bad batch."""
    import datetime

    import torch.distributed as dist
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from gmmseg_lab.models.gmm_head import gmm_head_class

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20)
    )
    try:
        torch.manual_seed(0)
        head = gmm_head_class("FCNHead")(
            in_channels=8,
            channels=8,
            num_convs=1,
            concat_input=False,
            num_classes=3,
            num_components=2,
            embed_dim=4,
            gmm_cfg=dict(memory_size=20, update_interval=1),
        ).train()
        g = torch.Generator().manual_seed(rank)
        feat = torch.randn(2, 8, 6, 6, generator=g)
        labels = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
        if case == "nan" and rank == 1:
            feat[0, :, 2, 2] = float("nan")
        if case == "labels" and rank == 0:
            labels[1, 0, 0, 0] = 7
        samples = [SegDataSample(gt_sem_seg=PixelData(data=lab)) for lab in labels]
        try:
            head.loss_by_feat(head.forward([feat]), samples)
            outcome = "returned"
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            outcome = f"{type(exc).__name__}: {exc}"
        (Path(out_dir) / f"rank{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "case, bad_rank, own",
    [
        ("nan", 1, "ValueError: x must be finite"),
        ("labels", 0, "ValueError: gt_sem_seg must be in [0, 3) or 255 (ignore), found [7]"),
    ],
)
def test_a_bad_batch_in_the_head_stops_every_rank_together(case, bad_rank, own, tmp_path):
    """Non-finite embeddings (cls_seg) or labels out of range (loss_by_feat) on one rank: in training
    every rank raises, none is left waiting in the GMM update's gathers (gloo: until the timeout)."""
    import torch.multiprocessing as mp

    mp.spawn(_head_worker, args=(2, str(tmp_path / "init"), str(tmp_path), case), nprocs=2, join=True)
    for rank in range(2):
        outcome = (tmp_path / f"rank{rank}.txt").read_text()
        if rank == bad_rank:
            assert outcome.startswith(own), outcome
        else:
            assert outcome.startswith(
                f"ValueError: GMMFCNHead's GMM input is invalid on rank {bad_rank} (rank {bad_rank}: {own}"
            ), outcome


def test_backend_follows_the_device_unless_the_config_says_otherwise():
    assert choose_dist_backend(None, cuda_available=False) == "gloo"
    assert choose_dist_backend("auto", cuda_available=False) == "gloo"
    assert choose_dist_backend("nccl", cuda_available=False) == "gloo"  # the shipped default, no GPU
    assert choose_dist_backend(None, cuda_available=True) == "nccl"
    assert choose_dist_backend("nccl", cuda_available=True) == "nccl"
    assert choose_dist_backend("gloo", cuda_available=True) == "gloo"  # the user's explicit choice
    assert choose_dist_backend("mpi", cuda_available=False) == "mpi"
    assert choose_dist_backend("cpu:gloo,cuda:nccl", cuda_available=True) == "cpu:gloo,cuda:nccl"


def test_pytorch_launcher_outside_torchrun_is_a_clear_error(quick_dataset, tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine mmengine's own init_dist reports the missing environment")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=tmp_path / "w", max_iters=1)
    cfg.launcher = "pytorch"
    with pytest.raises(ValueError, match="torchrun.*RANK|RANK.*torchrun"):
        train(cfg, progress=False)
    assert not (tmp_path / "w").exists()  # refused before anything was written
    assert (
        main(
            [
                "train",
                "--data",
                str(quick_dataset),
                "--work-dir",
                str(tmp_path / "w"),
                "--max-iters",
                "1",
                "--launcher",
                "pytorch",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "torchrun" in capsys.readouterr().err
