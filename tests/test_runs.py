"""Trained runs are reused only while their config is the same (gmmseg_lab.demo.run_one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gmmseg_lab.eval.evaluate as evaluate_module
import gmmseg_lab.train as train_module
from gmmseg_lab.demo import RUN_RECORD, RUNS_USED_ENV, run_one, runs_unchanged
from gmmseg_lab.lab import train_twins


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

    monkeypatch.setattr(train_module, "train", train)
    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)
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


def test_a_run_from_before_run_records_is_adopted(fake_training, tmp_path):
    data, run = tmp_path / "data", tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"miou": 0.7}')
    assert run_one(data, run, "segformer", "softmax", "quick", 1, progress=False) == {"miou": 0.7}
    assert not fake_training and json.loads((run / RUN_RECORD).read_text())["adopted"] is True


def test_the_runs_a_notebook_used_are_noted_for_the_report(fake_training, tmp_path, monkeypatch):
    used = tmp_path / "runs_used.jsonl"
    monkeypatch.setenv(RUNS_USED_ENV, str(used))
    runs = train_twins(tmp_path / "work", tmp_path / "data", ["segformer"], (s for s in (0, 1)), "quick",
                       progress=False)
    assert len(runs) == 4  # both seeds of a generator, both heads
    lines = [json.loads(line) for line in used.read_text().splitlines()]
    assert {line["run_dir"] for line in lines} == {str(r["run_dir"].resolve()) for r in runs.values()}
    assert runs_unchanged(used)
    (runs[("segformer", "gmm", 1)]["run_dir"] / "metrics.json").write_text('{"miou": 0.9}')
    assert not runs_unchanged(used)
