"""Killed and resumed: a run SIGKILLed after a checkpoint and resumed ends bit-identical to an
uninterrupted one (weights, GMM buffers, optimizer, metrics); a corrupt last checkpoint is refused
with an error naming it."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gmmseg_lab.cli import main
from gmmseg_lab.eval.evaluate import evaluate
from gmmseg_lab.models import build_config
from gmmseg_lab.train import DUMP_STATE_ENV, CheckpointError, last_checkpoint, train

# Two torch processes with several threads each on a 2-core machine slow down 50-180x.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
ENV.pop(DUMP_STATE_ENV, None)  # no debugging dumps


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Every in-process run here uses single-threaded torch (see conftest.single_thread_torch)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gmmseg_lab", "train", *args, "--no-progress"]


def _run(cmd: list[str], timeout: float = 120) -> None:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"


def _kill_after_first_checkpoint(cmd: list[str], work_dir: Path, timeout: float = 120) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``last_checkpoint`` names ``iter_10.pth``."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while last_checkpoint(work_dir) is None:
            if proc.poll() is not None:
                pytest.fail(
                    f"the run ended ({proc.returncode}) before writing a checkpoint:\n{proc.stderr.read()[-4000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint after {timeout} s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way (exit {proc.returncode})"
    assert last_checkpoint(work_dir) == work_dir / "iter_10.pth"
    assert not (work_dir / "iter_20.pth").exists(), "the run finished before it was killed"


def _assert_tensors_equal(a, b, where: str) -> int:
    """Recursively torch.equal every tensor of two nested containers; returns how many."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
        return 1
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ"
        return sum(_assert_tensors_equal(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        return sum(_assert_tensors_equal(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    return 0


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run(quick_dataset, tmp_path):
    """quick preset, 20 iterations, checkpoint every 10: kill right after iter_10.pth, resume, compare.

    The interrupted run is the CLI's preset command (``--max-iters 20``, then ``--resume``). The
    uninterrupted one (same network, data, seed and schedule, from a config file) also validates at
    iteration 10, right after the checkpoint, which the killed run never reaches: neither resuming nor
    validating may perturb the random streams (augmentation, dropout, drop-path)."""
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    preset = _cli(
        "--data",
        str(quick_dataset),
        "--arch",
        "segformer",
        "--head",
        "gmm",
        "--preset",
        "quick",
        "--max-iters",
        "20",
        "--seed",
        "3",
        "--work-dir",
        str(interrupted),
    )
    cfg = build_config(
        "segformer",
        "gmm",
        "quick",
        data_root=quick_dataset,
        seed=3,
        max_iters=20,
        cfg_options={"train_cfg.val_interval": 10},
    )
    assert cfg.default_hooks.checkpoint.interval == 10
    config = tmp_path / "val_every_10.py"
    cfg.dump(str(config))

    # The uninterrupted run in the background (2 cores: one each).
    reference = subprocess.Popen(
        _cli(str(config), "--work-dir", str(straight)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _kill_after_first_checkpoint(preset, interrupted)
        _run(preset + ["--resume"])
        _, err = reference.communicate(timeout=240)
        assert reference.returncode == 0, f"the uninterrupted run failed:\n{err[-4000:]}"
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.communicate()
    assert any(
        "mIoU" in line and '"step": 10' in line
        for line in next(straight.glob("*/vis_data/scalars.json")).read_text().splitlines()
    )

    a = torch.load(straight / "iter_20.pth", map_location="cpu", weights_only=False)
    b = torch.load(interrupted / "iter_20.pth", map_location="cpu", weights_only=False)
    assert a["meta"]["iter"] == b["meta"]["iter"] == 20
    state = a["state_dict"]
    assert int(state["decode_head.gmm.num_updates"]) == 20 and int(state["decode_head.gmm.memory.count"].sum()) > 0
    assert _assert_tensors_equal(state, b["state_dict"], "state_dict") == len(state)
    assert _assert_tensors_equal(a["optimizer"], b["optimizer"], "optimizer") > 0
    assert a["param_schedulers"] == b["param_schedulers"]

    evaluate(straight, quick_dataset, tmp_path / "straight.json", progress=False)
    evaluate(interrupted, quick_dataset, tmp_path / "interrupted.json", progress=False)
    ja = json.loads((tmp_path / "straight.json").read_text())
    jb = json.loads((tmp_path / "interrupted.json").read_text())
    for j, work_dir in ((ja, straight), (jb, interrupted)):  # where the model came from differs, nothing else
        assert j.pop("checkpoint") == str(work_dir / "iter_20.pth") and j.pop("model") == str(work_dir)
    assert ja == jb and "miou" in ja and "anomaly" in ja


# ---------------------------------------------------------------------- a corrupt last checkpoint
@pytest.fixture(scope="module")
def four_iters(quick_dataset, tmp_path_factory):
    """SegFormer-GMM, 4 iterations, checkpoints iter_2.pth and iter_4.pth."""
    work_dir = tmp_path_factory.mktemp("resume") / "run"
    cfg = build_config(
        "segformer",
        "gmm",
        "quick",
        data_root=quick_dataset,
        work_dir=work_dir,
        seed=0,
        max_iters=4,
        cfg_options={"default_hooks.checkpoint.interval": 2},
    )
    train(cfg, progress=False, log_level="WARNING")
    assert last_checkpoint(work_dir) == work_dir / "iter_4.pth" and (work_dir / "iter_2.pth").is_file()
    return cfg, work_dir


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit_flip":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF  # inside a tensor record: only the zip CRC can tell
        path.write_bytes(bytes(flipped))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 100)
    elif how == "missing":
        path.unlink()
    else:  # pragma: no cover
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "bit_flip", "empty", "garbage", "missing"])
def test_resume_from_a_corrupt_last_checkpoint_names_it(how, four_iters, tmp_path):
    cfg, work_dir = four_iters
    copy = tmp_path / "run"
    shutil.copytree(work_dir, copy)
    bad = copy / "iter_4.pth"
    (copy / "last_checkpoint").write_text(str(bad))
    _damage(bad, how)
    with pytest.raises(CheckpointError) as info:
        train(cfg, resume=True, work_dir=copy, progress=False, log_level="WARNING")
    message = str(info.value)
    assert str(bad) in message, message
    assert "iter_2.pth" in message and "--resume-from" in message, message  # what to do instead
    left = {"iter_2.pth"} | ({"iter_4.pth"} if how != "missing" else set())
    assert {p.name for p in copy.glob("*.pth")} == left  # nothing trained, nothing removed


def test_cli_refuses_a_truncated_checkpoint_and_resumes_from_an_older_one(four_iters, tmp_path, capsys):
    cfg, work_dir = four_iters
    copy = tmp_path / "run"
    shutil.copytree(work_dir, copy)
    (copy / "last_checkpoint").write_text(str(copy / "iter_4.pth"))
    _damage(copy / "iter_4.pth", "truncated")
    config = tmp_path / "four.py"
    cfg.dump(str(config))

    assert (
        main(["train", str(config), "--work-dir", str(copy), "--resume", "--no-progress"]) == 1
    )  # a damaged checkpoint is a data error
    err = capsys.readouterr().err
    assert "gmmseg-lab train: error: cannot resume from" in err and str(copy / "iter_4.pth") in err

    # The explicit way out: resume from the older, intact checkpoint; iterations 3-4 run again.
    assert (
        main(
            ["train", str(config), "--work-dir", str(copy), "--resume-from", str(copy / "iter_2.pth"), "--no-progress"]
        )
        == 0
    )
    redone = torch.load(copy / "iter_4.pth", map_location="cpu", weights_only=False)
    original = torch.load(work_dir / "iter_4.pth", map_location="cpu", weights_only=False)
    assert redone["meta"]["iter"] == 4 and int(redone["state_dict"]["decode_head.gmm.num_updates"]) == 4
    # ... and, the RNG states being restored too, they redo them exactly.
    state = redone["state_dict"]
    assert _assert_tensors_equal(original["state_dict"], state, "state_dict") == len(state)


def test_checkpoints_carry_the_rng_states_as_plain_values(four_iters):
    """RNGStateHook's entry: every rank's states, plain values and tensors (``weights_only`` loads them)."""
    _, work_dir = four_iters
    ckpt = torch.load(work_dir / "iter_2.pth", map_location="cpu", weights_only=False)
    buffer = io.BytesIO()
    torch.save(ckpt["rng_state"], buffer)
    buffer.seek(0)
    rng = torch.load(buffer, weights_only=True)
    assert rng["world_size"] == 1 and len(rng["ranks"]) == 1
    state = rng["ranks"][0]
    assert {"python", "numpy", "torch", "train_loader_generator"} <= set(state)
    assert state["torch"].dtype == torch.uint8 and state["numpy"]["keys"].shape == (624,)
    # Two checkpoints of one run hold different states (the streams advanced between them).
    later = torch.load(work_dir / "iter_4.pth", map_location="cpu", weights_only=False)["rng_state"]["ranks"][0]
    assert not torch.equal(state["torch"], later["torch"])
