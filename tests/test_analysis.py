"""What the notebooks look at: predictions of a trained run (cached), its logs, the lab's helpers."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from gmmseg_lab.cli import main
from gmmseg_lab.experiments.predictions import collect_predictions, learning_curves


@pytest.fixture(scope="module")
def tiny_run(quick_dataset, tmp_path_factory, single_thread_torch):
    work = tmp_path_factory.mktemp("analysis") / "gmm"
    assert (
        main(
            [
                "train",
                "--data",
                str(quick_dataset),
                "--arch",
                "segformer",
                "--head",
                "gmm",
                "--preset",
                "quick",
                "--work-dir",
                str(work),
                "--max-iters",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
    return work


def test_predictions_shapes_cache_and_mixture_consistency(tiny_run, quick_dataset):
    preds = collect_predictions(tiny_run, quick_dataset, "val", max_images=3)
    n, h, w = preds.gt.shape
    c = len(preds.classes)
    assert (n, h, w) == (3, 64, 64) and preds.images.shape == (3, 64, 64, 3) and preds.images.dtype == np.uint8
    assert preds.probs.shape == (3, c, 64, 64) and np.allclose(preds.probs.sum(1), 1, atol=1e-5)
    assert preds.is_gmm and preds.embeddings.shape[:2] == (3, 64) and preds.gt_small.shape[0] == 3
    # the numpy component densities equal the classifier's own log p(x|c) on the same embeddings
    from gmmseg_lab.gmm import GMMClassifier

    comp = preds.component_log_prob(0)  # [C, M, h, w]
    m = preds.num_components
    clf = GMMClassifier(c, m, preds.embeddings.shape[1], normalize_means=False)
    clf.means.copy_(torch.from_numpy(preds.means).double())
    clf.stds.copy_(torch.from_numpy(preds.stds).double())
    clf.log_weights.copy_(torch.from_numpy(preds.log_weights).double())
    x = torch.from_numpy(preds.embeddings[0]).double().flatten(1).t()
    expected = clf.class_log_likelihood(x).t().reshape(c, *comp.shape[2:]).numpy()
    got = np.logaddexp.reduce(comp, axis=1)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-3)
    # the anomaly score is -max_c log p(x|c)
    assert np.allclose(preds.anomaly_score, -preds.class_log_likelihood.max(1), atol=1e-4)

    start = time.perf_counter()
    again = collect_predictions(tiny_run, quick_dataset, "val", max_images=3)
    assert time.perf_counter() - start < 5.0  # from the cache, no model
    assert np.array_equal(again.embeddings, preds.embeddings) and again.names == preds.names
    # a damaged cache is recomputed, not trusted
    cache = next((tiny_run / "analysis").glob("predictions_val_3.npz"))
    cache.write_bytes(b"not a zip")
    recomputed = collect_predictions(tiny_run, quick_dataset, "val", max_images=3)
    assert np.allclose(recomputed.probs, preds.probs)
    # ... also when cut short (zipfile.BadZipFile, not a ValueError)
    whole = cache.read_bytes()
    cache.write_bytes(whole[: len(whole) // 2])
    assert np.allclose(collect_predictions(tiny_run, quick_dataset, "val", max_images=3).probs, preds.probs)
    assert cache.read_bytes() != whole[: len(whole) // 2]  # rewritten whole


def test_weighted_component_density_matches_torch_distributions(tiny_run, quick_dataset):
    preds = collect_predictions(tiny_run, quick_dataset, "val", max_images=1)
    comp = preds.component_log_prob(0)  # [C, M, h, w]
    row, col = 1, 2
    x = torch.from_numpy(preds.embeddings[0][:, row, col]).double()
    for c, m in [(0, 0), (1, preds.num_components - 1)]:
        normal = torch.distributions.Normal(
            torch.from_numpy(preds.means[c, m]).double(), torch.from_numpy(preds.stds[c, m]).double()
        )
        expected = normal.log_prob(x).sum() + float(preds.log_weights[c, m])
        assert comp[c, m, row, col] == pytest.approx(float(expected), rel=1e-9, abs=1e-9)


def test_predictions_cache_is_recomputed_when_the_inference_code_changes(tiny_run, quick_dataset, monkeypatch):
    import gmmseg_lab.experiments.predictions as analysis

    collect_predictions(tiny_run, quick_dataset, "val", max_images=2)
    cache = tiny_run / "analysis" / "predictions_val_2.npz"
    before = cache.stat().st_mtime_ns
    time.sleep(0.01)
    collect_predictions(tiny_run, quick_dataset, "val", max_images=2)
    assert cache.stat().st_mtime_ns == before  # same code: reused
    monkeypatch.setattr(analysis, "_inference_code_digest", lambda: "changed code")
    collect_predictions(tiny_run, quick_dataset, "val", max_images=2)
    assert cache.stat().st_mtime_ns != before  # other code: recomputed


def test_anomaly_split_and_bad_arguments(tiny_run, quick_dataset):
    preds = collect_predictions(tiny_run, quick_dataset, "anomaly", max_images=2)
    assert set(np.unique(preds.gt)) <= {0, 1, 255} and (preds.gt == 1).any()
    with pytest.raises(ValueError, match="split"):
        collect_predictions(tiny_run, quick_dataset, "test")
    with pytest.raises(ValueError, match="max_images"):
        collect_predictions(tiny_run, quick_dataset, "val", max_images=0)
    with pytest.raises(FileNotFoundError, match="last_checkpoint"):
        collect_predictions(quick_dataset, quick_dataset, "val")


def test_learning_curves_read_the_logged_scalars(tiny_run):
    curves = learning_curves(tiny_run)
    steps = curves["train"]["step"]
    assert steps == sorted(steps) and steps[-1] == 10
    for key in ("loss", "decode.gmm_loglik", "decode.gmm_balance"):
        assert len(curves["train"][key]) == len(steps) and np.isfinite(curves["train"][key]).all()
    assert "mIoU" in curves["val"]


def test_toy_far_confidence_softmax_stays_sure_gmm_does_not():
    from gmmseg_lab.data.toy import make_toy_data
    from gmmseg_lab.experiments.toy import fit_softmax_classifier, fit_toy_classifier, toy_far_confidence

    data = make_toy_data(seed=0)
    gmm, _ = fit_toy_classifier(data, seed=0)
    softmax_model, _ = fit_softmax_classifier(data, seed=0)
    far = toy_far_confidence(data, gmm, softmax_model)
    assert far["softmax_confidence"] > 0.9 and far["gmm_confidence"] < 0.05


def test_memory_bytes_follow_the_config(tiny_run):
    from gmmseg_lab.experiments.ablation import memory_bytes

    nbytes = memory_bytes(tiny_run)
    from mmengine.config import Config

    head = Config.fromfile(str(tiny_run / "config.py")).model.decode_head
    m, d = head.get("num_components", 5), head.get("embed_dim", 64)  # the head's defaults when the config is minimal
    size = head.gmm_cfg.memory_size
    # FIFO: one [size, D] float queue per component of every class, plus its counters
    num_classes = head["num_classes"] if "num_classes" in head else head.head.num_classes
    assert num_classes == 9
    assert nbytes >= num_classes * m * size * d * 4
