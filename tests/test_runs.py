"""Trained runs are reused only while their config and code are the same (gmmseg_lab.experiments.runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gmmseg_lab.experiments.runs as runs_module
from gmmseg_lab.experiments.compare import train_twins
from gmmseg_lab.experiments.runs import RUN_RECORD, RUNS_USED_ENV, run_one, runs_unchanged


@pytest.fixture()
def fake_training(monkeypatch):
    """Replace training and evaluation by stand-ins that record their calls and write a checkpoint."""
    calls = []

    def train(cfg, resume, progress, log_level):
        calls.append(cfg.work_dir)
        Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)

    def evaluate(run_dir, data_dir, metrics_file, progress):
        metrics = {"miou": 0.1 * len(calls)}
        metrics_file.write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(runs_module, "train", train)
    monkeypatch.setattr(runs_module, "evaluate", evaluate)
    return calls


def test_a_finished_run_is_reused_and_one_from_another_config_retrained(fake_training, tmp_path):
    data, run = tmp_path / "data", tmp_path / "runs" / "r"
    first = run_one(data, run, "segformer", "gmm", "quick", 0, progress=False)
    assert len(fake_training) == 1 and json.loads((run / RUN_RECORD).read_text())["seed"] == 0
    assert run_one(data, run, "segformer", "gmm", "quick", 0, progress=False) == first
    assert len(fake_training) == 1  # reused
    (run / "leftover.pth").write_text("old weights")
    other = run_one(data, run, "segformer", "gmm", "quick", 0, gmm_cfg={"e_step": "em"}, progress=False)
    assert len(fake_training) == 2 and other != first  # another config under the same name: retrained
    assert not (run / "leftover.pth").exists()
    assert json.loads((run / RUN_RECORD).read_text())["gmm_cfg"] == {"e_step": "em"}


def test_a_run_without_a_run_record_is_trained_again(fake_training, tmp_path):
    """A folder without run.json (from before records existed, or of unknown origin) may hold numbers
    from other code: it is not adopted any more but trained again."""
    data, run = tmp_path / "data", tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"miou": 0.7}')
    assert run_one(data, run, "segformer", "softmax", "quick", 1, progress=False) == {"miou": 0.1}
    assert len(fake_training) == 1 and "adopted" not in json.loads((run / RUN_RECORD).read_text())


def test_changed_training_code_retrains_and_changed_evaluation_code_only_reevaluates(
    fake_training, tmp_path, monkeypatch
):
    demo = runs_module

    data, run = tmp_path / "data", tmp_path / "runs" / "r"
    digests = {demo.TRAIN_CODE: "train-v1", demo.EVAL_CODE: "eval-v1"}
    monkeypatch.setattr(demo, "code_digest", lambda parts: digests[parts])
    evaluations = []
    real_evaluate = runs_module.evaluate
    monkeypatch.setattr(runs_module, "evaluate", lambda *a, **k: evaluations.append(1) or real_evaluate(*a, **k))
    run_one(data, run, "segformer", "gmm", "quick", 0, progress=False)
    run_one(data, run, "segformer", "gmm", "quick", 0, progress=False)
    assert (len(fake_training), len(evaluations)) == (1, 1)  # unchanged: reused
    digests[demo.EVAL_CODE] = "eval-v2"
    run_one(data, run, "segformer", "gmm", "quick", 0, progress=False)
    assert (len(fake_training), len(evaluations)) == (1, 2)  # re-evaluated, not retrained
    assert json.loads((run / RUN_RECORD).read_text())["eval_code_sha256"] == "eval-v2"
    digests[demo.TRAIN_CODE] = "train-v2"
    run_one(data, run, "segformer", "gmm", "quick", 0, progress=False)
    assert (len(fake_training), len(evaluations)) == (2, 3)  # the training code changed: retrained
    assert json.loads((run / RUN_RECORD).read_text())["train_code_sha256"] == "train-v2"


def test_the_runs_a_notebook_used_are_noted_for_the_report(fake_training, tmp_path, monkeypatch):
    used = tmp_path / "runs_used.jsonl"
    monkeypatch.setenv(RUNS_USED_ENV, str(used))
    runs = train_twins(
        tmp_path / "work", tmp_path / "data", ["segformer"], (s for s in (0, 1)), "quick", progress=False, jobs=1
    )  # in this process: the stand-ins do not reach workers
    assert len(runs) == 4  # both seeds of a generator, both heads
    lines = [json.loads(line) for line in used.read_text().splitlines()]
    assert {line["run_dir"] for line in lines} == {str(r["run_dir"].resolve()) for r in runs.values()}
    assert runs_unchanged(used)
    (runs[("segformer", "gmm", 1)]["run_dir"] / "metrics.json").write_text('{"miou": 0.9}')
    assert not runs_unchanged(used)


@pytest.mark.slow
def test_runs_trained_side_by_side_equal_runs_trained_one_after_the_other(quick_dataset, tmp_path):
    """run_many trains pending runs in worker processes (one thread each): same metrics as here."""
    import torch

    from gmmseg_lab.experiments.runs import run_many, run_one

    requests = [
        dict(
            data_dir=quick_dataset,
            run_dir=tmp_path / "par" / f"r{seed}",
            arch="segformer",
            head="gmm",
            preset="quick",
            seed=seed,
        )
        for seed in (0, 1)
    ]
    parallel = run_many(requests, jobs=2, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        serial = [run_one(**{**r, "run_dir": tmp_path / "ser" / r["run_dir"].name}, progress=False) for r in requests]
    finally:
        torch.set_num_threads(threads)
    for p, s in zip(parallel, serial):
        assert p["miou"] == pytest.approx(s["miou"], abs=1e-6) and p["ece"] == pytest.approx(s["ece"], abs=1e-6)
    assert parallel[0]["miou"] != parallel[1]["miou"]  # two seeds, two models
    again = run_many(requests, jobs=2, progress=False)  # finished: read back, nothing trained
    assert again == parallel
