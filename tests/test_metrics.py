"""Streaming metrics against their oracles: mmseg IoUMetric, torchmetrics calibration, scikit-learn."""

import copy
import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from gmmseg_lab.eval import (
    AnomalyScores,
    CalibrationError,
    MetricUndefinedWarning,
    SegmentationIoU,
    softmax_confidence_and_entropy,
)

# ------------------------------------------------------------------------------------------------
# SegmentationIoU


def _segmentation_batches(num_classes=6, shape=(3, 29, 41), batches=3, seed=0):
    """Random (pred, target) pairs: class C-1 never appears, class C-2 only predicted,
    class C-3 only in the target, ~10% of the target is 255."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        target = torch.randint(0, num_classes - 1, shape, generator=g)
        target[target == num_classes - 2] = 0  # class C-2 never in the target
        noise = torch.randint(0, num_classes - 1, shape, generator=g)
        pred = torch.where(torch.rand(shape, generator=g) < 0.6, target, noise)
        pred[pred == num_classes - 3] = 1  # class C-3 never predicted
        target[torch.rand(shape, generator=g) < 0.1] = 255
        out.append((pred.to(torch.int64), target.to(torch.uint8)))
    return out


def test_iou_matches_mmseg_iou_metric():
    from mmseg.evaluation.metrics import IoUMetric

    num_classes = 6
    batches = _segmentation_batches(num_classes)
    ours = SegmentationIoU(num_classes, ignore_index=255)
    oracle = IoUMetric(ignore_index=255, iou_metrics=["mIoU"])
    oracle.dataset_meta = {"classes": [f"c{i}" for i in range(num_classes)]}
    for pred, target in batches:
        ours.update(pred, target)
        samples = [
            {"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": t[None].to(torch.int64)}}
            for p, t in zip(pred, target)
        ]
        oracle.process({}, samples)

    got = ours.compute()
    # Per-class values from mmseg's own formula on its own accumulated areas (unrounded, float32).
    areas = [sum(r[i] for r in oracle.results) for i in range(4)]
    ref = IoUMetric.total_area_to_metrics(*areas, metrics=["mIoU"])
    ref_iou, ref_acc = ref["IoU"].astype(np.float64), ref["Acc"].astype(np.float64)
    np.testing.assert_allclose(got["per_class_iou"], ref_iou, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(got["per_class_acc"], ref_acc, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert math.isnan(got["per_class_iou"][-1]) and got["per_class_iou"][-2] == 0.0
    assert not math.isnan(got["per_class_iou"][-3]) and got["per_class_iou"][-3] == 0.0

    # The summary numbers mmseg reports: percentages rounded to 2 decimals.
    summary = oracle.compute_metrics(oracle.results)
    assert abs(got["miou"] * 100 - summary["mIoU"]) <= 0.005 + 1e-9
    assert abs(got["acc"] * 100 - summary["aAcc"]) <= 0.005 + 1e-9
    assert abs(got["macc"] * 100 - summary["mAcc"]) <= 0.005 + 1e-9
    assert got["miou"] == pytest.approx(np.nanmean(ref_iou), abs=1e-7)


def test_iou_hand_example():
    pred = torch.tensor([[0, 0, 1], [1, 2, 2]])
    target = torch.tensor([[0, 1, 1], [1, 2, 255]], dtype=torch.uint8)
    metric = SegmentationIoU(4)
    metric.update(pred, target)
    out = metric.compute()
    # class 0: I=1, U=2; class 1: I=2, U=3; class 2: I=1, U=1; class 3 absent.
    assert out["per_class_iou"][:3] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert math.isnan(out["per_class_iou"][3])
    assert out["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert out["acc"] == pytest.approx(4 / 5) and out["num_pixels"] == 5
    assert out["macc"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert out["confusion"].tolist() == [[1, 0, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_iou_lists_the_classes_without_target_pixels():
    """compute() names the absent classes (evaluate's notes use them): IoU NaN if never predicted, else 0."""
    metric = SegmentationIoU(5)
    metric.update(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 0, 1]))
    with pytest.warns(MetricUndefinedWarning):
        out = metric.compute()
    assert out["absent_never_predicted"] == [2, 4] and out["absent_predicted"] == [3]
    assert all(math.isnan(out["per_class_iou"][c]) for c in out["absent_never_predicted"])
    assert all(out["per_class_iou"][c] == 0.0 for c in out["absent_predicted"])
    full = SegmentationIoU(2)
    full.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert full.compute()["absent_never_predicted"] == full.compute()["absent_predicted"] == []


def test_iou_merge_state_dict_reset():
    batches = _segmentation_batches(seed=1)
    whole, part_a, part_b = SegmentationIoU(6), SegmentationIoU(6), SegmentationIoU(6)
    for i, (pred, target) in enumerate(batches):
        whole.update(pred, target)
        (part_a if i % 2 else part_b).update(pred, target)
    assert torch.equal(part_a.merge(part_b).confusion, whole.confusion)
    restored = SegmentationIoU(6)
    restored.load_state_dict(whole.state_dict())
    assert restored.compute()["miou"] == whole.compute()["miou"]
    whole.reset()
    assert int(whole.confusion.sum()) == 0
    with pytest.raises(ValueError, match="configuration"):
        part_a.merge(SegmentationIoU(5))


def test_iou_validation_and_empty():
    metric = SegmentationIoU(3)
    with pytest.raises(ValueError, match="target must have the shape of pred"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="pred must be an integer tensor"):
        metric.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pred must hold class indices in \[0, 3\)"):
        metric.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target must hold class indices"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationIoU(3, ignore_index=1)
    # a prediction outside the class range where the target is ignored is not scored
    metric.update(torch.tensor([0, 200]), torch.tensor([0, 255]))
    assert metric.compute()["num_pixels"] == 1
    metric.reset()
    with pytest.warns(MetricUndefinedWarning):
        out = metric.compute()
    assert out["miou"] is None and out["acc"] is None


# ------------------------------------------------------------------------------------------------
# CalibrationError


def _calibration_data(n=6000, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (n,), generator=g)
    logits = torch.randn(n, num_classes, generator=g)
    logits[torch.arange(n), target] += 2.0 * torch.rand(n, generator=g)
    # sharpness from very soft to saturated: float32 softmax gives exactly 1.0 on some rows
    logits *= torch.exp(torch.empty(n, 1).uniform_(-2.0, 4.5, generator=g))
    probs = torch.softmax(logits, dim=1)
    target[torch.rand(n, generator=g) < 0.05] = 255
    return probs, target


def test_calibration_matches_torchmetrics():
    from torchmetrics.classification import MulticlassCalibrationError
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    probs, target = _calibration_data()
    assert int((probs.max(dim=1).values == 1.0).sum()) > 50  # the [1, 1] bin is exercised
    ours = CalibrationError(n_bins=15)
    for chunk_p, chunk_t in zip(probs.split(1700), target.split(1700)):
        ours.update_from_probs(chunk_p, chunk_t, ignore_index=255)
    got = ours.compute()
    keep = target != 255
    conf, predicted = probs[keep].max(dim=1)
    for norm, key in (("l1", "ece"), ("max", "mce")):
        oracle = MulticlassCalibrationError(num_classes=5, n_bins=15, norm=norm, ignore_index=255)
        ref = float(oracle(probs, target))
        # torchmetrics sums ~6000 confidences per bin in float32 (error ~1e-6); we sum in float64
        assert got[key] == pytest.approx(ref, abs=2e-6), (key, got[key], ref)
        # torchmetrics' own binning and formula, fed float64: identical
        correct64 = (predicted == target[keep]).double()
        ref64 = float(_ce_compute(conf.double(), correct64, torch.linspace(0, 1, 16).double(), norm))
        assert got[key] == pytest.approx(ref64, abs=1e-12), (key, got[key], ref64)
    assert got["num_samples"] == int(keep.sum())

    # the explicit confidence/correct API gives the same state
    direct = CalibrationError(n_bins=15)
    direct.update(conf, predicted == target[keep])
    for name in ("count", "correct_count"):
        assert torch.equal(getattr(direct, name), getattr(ours, name))
    torch.testing.assert_close(direct.confidence_sum, ours.confidence_sum, rtol=1e-12, atol=1e-9)


def test_calibration_bins_and_layouts():
    probs, target = _calibration_data(n=2000, seed=1)
    flat = CalibrationError(n_bins=10)
    flat.update_from_probs(probs, target)
    # [B, C, H, W] probabilities with [B, H, W] targets, in half precision
    image = CalibrationError(n_bins=10)
    probs_bchw = probs.reshape(4, 25, 20, 5).permute(0, 3, 1, 2).to(torch.bfloat16)
    image.update_from_probs(probs_bchw, target.reshape(4, 25, 20))
    out, out_image = flat.compute(), image.compute()
    assert out_image["num_samples"] == out["num_samples"]
    assert out_image["ece"] == pytest.approx(out["ece"], abs=2e-2)  # bf16 moves a few confidences

    bins = out["bins"]
    assert all(len(v) == 11 for v in bins.values())
    assert bins["lower"][-1] == bins["upper"][-1] == 1.0 and bins["lower"][0] == 0.0
    assert sum(bins["count"]) == out["num_samples"]
    for count, conf, acc in zip(bins["count"], bins["confidence"], bins["accuracy"]):
        assert (conf is None) == (acc is None) == (count == 0)
    ece = sum(c * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"]) if c)
    assert out["ece"] == pytest.approx(ece / out["num_samples"])

    # empty bins are reported as None, and excluded from the MCE
    sparse = CalibrationError(n_bins=4)
    sparse.update(torch.tensor([0.9, 0.95, 1.0], dtype=torch.float16), torch.tensor([True, False, True]))
    result = sparse.compute()
    assert result["bins"]["count"] == [0, 0, 0, 2, 1]
    assert result["bins"]["confidence"][:3] == [None, None, None]
    assert result["mce"] == pytest.approx(abs(0.5 - (0.9 + 0.95) / 2), abs=1e-3)


def test_calibration_validation_and_merge():
    metric = CalibrationError()
    with pytest.raises(ValueError, match="correct must be a bool tensor"):
        metric.update(torch.rand(4), torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="confidence must hold probabilities"):
        metric.update(torch.tensor([0.5, 1.5]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="confidence must not contain NaN"):
        metric.update(torch.tensor([0.5, math.nan]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="correct must have the shape of confidence"):
        metric.update(torch.rand(4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="probs must hold probabilities"):
        metric.update_from_probs(torch.randn(4, 3) * 5, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="probs must have shape"):
        metric.update_from_probs(torch.rand(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="target must hold class indices"):
        metric.update_from_probs(torch.full((2, 3), 1 / 3), torch.tensor([0, 4]))
    with pytest.warns(MetricUndefinedWarning):
        assert metric.compute()["ece"] is None

    probs, target = _calibration_data(n=1000, seed=2)
    a, b, whole = CalibrationError(), CalibrationError(), CalibrationError()
    a.update_from_probs(probs[:400], target[:400])
    b.update_from_probs(probs[400:], target[400:])
    whole.update_from_probs(probs, target)
    assert a.merge(b).compute()["ece"] == pytest.approx(whole.compute()["ece"], abs=1e-12)


# ------------------------------------------------------------------------------------------------
# AnomalyScores


def _anomaly_data(kind, n=60_000, seed=0):
    """float32 scores and a 0/1 label array (5-15% anomalies) of several difficult kinds."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < rng.uniform(0.05, 0.15)).astype(np.int64)
    if kind == "gaussian":
        scores = rng.normal(size=n) + 1.3 * labels
    elif kind == "heavy_ties":
        scores = rng.integers(0, 8, n) + 2 * labels
    elif kind == "magnitudes":  # sign * 10^[-35, 35], in float32 range, anomalies bigger
        exponent = rng.uniform(-35, 35, n) + 8 * labels
        scores = np.where(rng.random(n) < 0.3, -1.0, 1.0) * 10.0 ** np.clip(exponent, -35, 35)
    elif kind == "negative_loglik":  # -max_c log p(x|c): all negative inliers, a few huge
        scores = -500.0 + 60.0 * rng.normal(size=n) + 90.0 * labels
        scores[rng.random(n) < 0.01] = 3000.0 * rng.random()
    elif kind == "tiny":  # tiny normals around zero, both signs, with exact zeros and some denormals
        scores = rng.normal(size=n) * 1e-30 + 1e-30 * labels
        scores[rng.random(n) < 0.05] = 0.0
        scores[rng.random(n) < 0.02] = rng.normal() * 1e-40
    else:
        raise AssertionError(kind)
    return scores.astype(np.float32), labels


def _sklearn_metrics(labels, scores):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(labels, scores),
        "ap": average_precision_score(labels, scores),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


ANOMALY_KINDS = ["gaussian", "heavy_ties", "magnitudes", "negative_loglik", "tiny"]


@pytest.mark.parametrize("seed,kind", list(enumerate(ANOMALY_KINDS)))
def test_anomaly_matches_sklearn(seed, kind):
    scores, labels = _anomaly_data(kind, seed=seed)
    metric = AnomalyScores()
    for s, y in zip(np.array_split(scores, 4), np.array_split(labels, 4)):
        metric.update(torch.from_numpy(s), torch.from_numpy(y))
    got = metric.compute()
    assert got["num_pos"] == int(labels.sum()) and got["num_neg"] == int((1 - labels).sum())

    # 1) exact on the scores rounded to their bin (the binning is the only approximation)
    binned = metric.bin_lower_edges(metric.score_to_bin(torch.from_numpy(scores))).double().numpy()
    exact = _sklearn_metrics(labels, binned)
    for key in exact:
        assert got[key] == pytest.approx(exact[key], abs=1e-12), key

    # 2) close to the raw scores: relative bin width 2^-11 mis-orders few pairs
    ref = _sklearn_metrics(labels, scores.astype(np.float64))
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-3), (key, got[key], ref[key])
    assert abs(got["auroc"] - ref["auroc"]) <= metric.auroc_binning_error_bound() + 1e-12


def test_anomaly_integer_ties_are_exact_and_dtypes():
    scores, labels = _anomaly_data("heavy_ties", n=20_000, seed=3)
    ref = _sklearn_metrics(labels, scores.astype(np.float64))
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        metric = AnomalyScores(key_bits=16)
        metric.update(torch.from_numpy(scores).to(dtype), torch.from_numpy(labels).bool())
        got = metric.compute()
        for key in ref:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), (dtype, key)


def test_anomaly_void_pixels_and_merge():
    scores, labels = _anomaly_data("gaussian", n=30_000, seed=4)
    mask = labels.copy()
    void = np.random.default_rng(5).random(labels.size) < 0.2
    mask[void] = 255
    scores_with_nan = scores.copy()
    scores_with_nan[void & (np.arange(labels.size) % 7 == 0)] = np.nan  # NaN on void pixels is fine
    whole, part_a, part_b = AnomalyScores(), AnomalyScores(), AnomalyScores()
    whole.update(
        torch.from_numpy(scores_with_nan).reshape(100, 300), torch.from_numpy(mask.astype(np.uint8)).reshape(100, 300)
    )
    half = labels.size // 2
    part_a.update(torch.from_numpy(scores[:half]), torch.from_numpy(mask[:half]))
    part_b.update(torch.from_numpy(scores[half:]), torch.from_numpy(mask[half:]))
    state = part_a.state_dict()
    state["histogram"] += part_b.state_dict()["histogram"]  # states sum elementwise
    summed = AnomalyScores()
    summed.load_state_dict(state)
    assert torch.equal(part_a.merge(part_b).histogram, whole.histogram)
    assert summed.compute() == whole.compute()
    ref = _sklearn_metrics(labels[~void], scores[~void].astype(np.float64))
    assert whole.compute()["auroc"] == pytest.approx(ref["auroc"], abs=1e-3)


def test_anomaly_state_memory_is_constant():
    metric = AnomalyScores(key_bits=18)
    g = torch.Generator().manual_seed(0)
    metric.update(torch.randn(1000, generator=g), torch.randint(0, 2, (1000,), generator=g))
    nbytes, shape = metric.state_nbytes(), metric.histogram.shape
    for _ in range(20):
        metric.update(torch.randn(5000, generator=g) * 1e6, torch.randint(0, 2, (5000,), generator=g))
    assert metric.state_nbytes() == nbytes == 2 * 2**18 * 8 and metric.histogram.shape == shape
    out = metric.compute()
    assert out["num_pos"] + out["num_neg"] == 101_000


def test_anomaly_order_key_is_monotone():
    metric = AnomalyScores()
    special = torch.tensor(
        [-math.inf, -3.4e38, -1e10, -1.0, -1e-30, -1e-40, -0.0, 0.0]
        + [1e-45, 1e-40, 1e-30, 1.0, 1e10, 3.4e38, math.inf]
    )
    rng = np.random.default_rng(6)
    random = rng.standard_cauchy(20_000) * 10.0 ** rng.uniform(-30, 30, 20_000)
    random = torch.from_numpy(random.astype(np.float32))
    for values in (special, random):
        values = torch.sort(values).values
        bins = metric.score_to_bin(values)
        assert bool((bins[1:] >= bins[:-1]).all())
        edges = metric.bin_lower_edges(bins)
        assert bool((edges <= values).all())
        assert torch.equal(metric.score_to_bin(edges), bins)  # the edge lies in its own bin
    assert metric.score_to_bin(torch.tensor([-0.0])).item() == metric.score_to_bin(torch.tensor([0.0])).item()
    # relative width of a bin for normal numbers
    x = torch.tensor([1.0, 1.0 + 2**-11, 1000.0, 1000.0 * (1 + 2**-10)])
    b = metric.score_to_bin(x)
    assert b[1] == b[0] + 1 and b[3] > b[2]


def test_anomaly_curves():
    scores, labels = _anomaly_data("gaussian", n=50_000, seed=7)
    metric = AnomalyScores()
    metric.update(torch.from_numpy(scores), torch.from_numpy(labels))
    curves = metric.curves(max_points=300)
    lengths = {len(v) for v in curves.values()}
    assert len(lengths) == 1 and lengths.pop() <= 300
    assert curves["fpr"][0] == curves["tpr"][0] == 0.0 and curves["fpr"][-1] == curves["tpr"][-1] == 1.0
    assert np.all(np.diff(curves["fpr"]) >= 0) and np.all(np.diff(curves["tpr"]) >= 0)
    assert np.all(np.diff(curves["thresholds"]) < 0) and curves["thresholds"][0] == np.inf
    np.testing.assert_array_equal(curves["recall"], curves["tpr"])
    assert np.trapezoid(curves["tpr"], curves["fpr"]) == pytest.approx(metric.compute()["auroc"], abs=2e-3)
    # a few thresholds: every point is kept
    small = AnomalyScores()
    small.update(torch.tensor([0.1, 0.2, 0.2, 0.9]), torch.tensor([0, 1, 0, 1]))
    c = small.curves()
    np.testing.assert_allclose(c["tpr"], [0, 0.5, 1, 1])
    np.testing.assert_allclose(c["fpr"], [0, 0, 0.5, 1])
    np.testing.assert_allclose(c["precision"], [1, 1, 2 / 3, 0.5])


def test_anomaly_undefined_and_validation():
    only_inliers = AnomalyScores()
    only_inliers.update(torch.randn(100), torch.zeros(100, dtype=torch.long))
    with pytest.warns(MetricUndefinedWarning, match="no anomalous"):
        out = only_inliers.compute()
    assert out["auroc"] is None and out["ap"] is None and out["fpr95"] is None and out["num_neg"] == 100
    with pytest.raises(ValueError, match="num_pos=0"):
        only_inliers.curves()

    only_anomalies = AnomalyScores()
    only_anomalies.update(torch.randn(10), torch.ones(10, dtype=torch.long))
    with pytest.warns(MetricUndefinedWarning, match="no inlier"):
        out = only_anomalies.compute()
    assert out["auroc"] is None and out["fpr95"] is None and out["ap"] == 1.0

    metric = AnomalyScores()
    with pytest.raises(ValueError, match="scores must not contain NaN"):
        metric.update(torch.tensor([0.1, math.nan]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"mask must hold only 0 \(inlier\), 1 \(anomaly\) or 255"):
        metric.update(torch.tensor([0.1, 0.2]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="mask must have the shape of scores"):
        metric.update(torch.rand(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="scores must be a floating-point tensor"):
        metric.update(torch.ones(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must be an integer or bool tensor"):
        metric.update(torch.rand(3), torch.zeros(3))
    with pytest.raises(ValueError, match="key_bits"):
        AnomalyScores(key_bits=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # infinite scores are legal, and metrics stay defined
        metric.update(torch.tensor([-math.inf, 0.0, math.inf]), torch.tensor([0, 0, 1]))
        assert metric.compute()["auroc"] == 1.0


# ------------------------------------------------------------------------------------------------
# softmax_confidence_and_entropy


def test_softmax_confidence_and_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g, dtype=torch.float64) * 3
    max_prob, entropy = softmax_confidence_and_entropy(logits)
    probs = torch.softmax(logits, dim=1)
    torch.testing.assert_close(max_prob, probs.max(dim=1).values)
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(dim=1))

    # stable for huge and -inf logits, uniform rows give log C
    extreme = torch.tensor([[1e4, -1e4, 0.0], [-math.inf, 5.0, 5.0], [2.0, 2.0, 2.0]], dtype=torch.float16)
    max_prob, entropy = softmax_confidence_and_entropy(extreme)
    assert max_prob.dtype == torch.float32 and torch.isfinite(entropy).all()
    torch.testing.assert_close(max_prob, torch.tensor([1.0, 0.5, 1 / 3]))
    torch.testing.assert_close(entropy, torch.tensor([0.0, math.log(2), math.log(3)]))

    # class dimension 1 of [B, C, H, W]
    image = torch.randn(2, 4, 3, 5, generator=g)
    max_prob, entropy = softmax_confidence_and_entropy(image, dim=1)
    assert max_prob.shape == entropy.shape == (2, 3, 5)
    ref_max, ref_ent = softmax_confidence_and_entropy(image.permute(0, 2, 3, 1).reshape(-1, 4))
    torch.testing.assert_close(max_prob.reshape(-1), ref_max)
    torch.testing.assert_close(entropy.reshape(-1), ref_ent)

    with pytest.raises(ValueError, match="logits must not contain NaN"):
        softmax_confidence_and_entropy(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="logits must be a floating-point tensor"):
        softmax_confidence_and_entropy(torch.ones(2, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# Anomaly scores from logits and log-likelihoods; pixel thresholds of AnomalyScores


def test_logit_and_log_likelihood_anomaly_scores():
    from gmmseg_lab.eval.metrics import log_likelihood_anomaly_scores, logit_anomaly_scores

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 11, 13, generator=g) * 2  # [C, H, W]
    scores = logit_anomaly_scores(logits, dim=0)
    assert set(scores) == {"max_softmax", "entropy", "max_logit", "energy"}
    assert all(v.shape == (11, 13) and v.dtype == torch.float32 for v in scores.values())
    probs = torch.softmax(logits.double(), dim=0)
    torch.testing.assert_close(scores["max_softmax"].double(), 1 - probs.amax(dim=0), atol=1e-6, rtol=0)
    torch.testing.assert_close(scores["entropy"].double(), -(probs * probs.log()).sum(dim=0), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores["max_logit"], -logits.max(dim=0).values)
    torch.testing.assert_close(scores["energy"], -torch.log(torch.exp(logits).sum(dim=0)))
    # energy is -logsumexp: stable where exp overflows, and shifts with the logits (softmax does not)
    huge = torch.tensor([[1000.0, 1000.0]], dtype=torch.float64)
    assert logit_anomaly_scores(huge)["energy"].item() == pytest.approx(-1000.0 - math.log(2))
    shifted = logit_anomaly_scores(logits + 5.0, dim=0)
    torch.testing.assert_close(shifted["max_softmax"], scores["max_softmax"])
    torch.testing.assert_close(shifted["max_logit"], scores["max_logit"] - 5.0)

    log_likelihood = -torch.rand(4, 9, generator=g, dtype=torch.float64) * 300  # [N, C], log-densities
    density = log_likelihood_anomaly_scores(log_likelihood)
    assert density["neg_max_log_likelihood"].dtype == torch.float64
    torch.testing.assert_close(density["neg_max_log_likelihood"], -log_likelihood.max(dim=1).values)
    top = log_likelihood.max(dim=1, keepdim=True).values
    reference = -(top[:, 0] + (log_likelihood - top).exp().sum(dim=1).log())
    torch.testing.assert_close(density["neg_logsumexp_log_likelihood"], reference)
    # the log marginal is at least the largest class term: -lse <= -max
    assert bool((density["neg_logsumexp_log_likelihood"] <= density["neg_max_log_likelihood"]).all())
    with pytest.raises(ValueError, match="log_likelihood must not contain NaN"):
        log_likelihood_anomaly_scores(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="logits must not contain \\+inf"):
        logit_anomaly_scores(torch.tensor([[0.0, math.inf]]))


def test_max_logit_and_energy_through_the_histogram_match_sklearn():
    """The same update path evaluate uses: synthetic [C, H, W] logits, the scores, AnomalyScores."""
    from gmmseg_lab.eval.metrics import logit_anomaly_scores

    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(40, 50, generator=g) < 0.1).to(torch.uint8)
    logits = torch.randn(5, 40, 50, generator=g) * 2
    logits[0] += 6.0 * (1 - mask.float())  # inliers have a confident class; anomalies do not
    mask[torch.rand(40, 50, generator=g) < 0.05] = 255
    scores = logit_anomaly_scores(logits, dim=0)
    keep = (mask != 255).numpy()
    labels = (mask.numpy() == 1)[keep]
    direct = {"max_logit": -logits.amax(dim=0), "energy": -torch.logsumexp(logits, dim=0)}
    for name, reference in direct.items():
        metric = AnomalyScores()
        metric.update(scores[name], mask)
        result = metric.compute()
        assert result["auroc"] == pytest.approx(roc_auc_score(labels, reference.numpy()[keep]), abs=1e-4)
        assert result["ap"] == pytest.approx(average_precision_score(labels, reference.numpy()[keep]), abs=1e-3)
        assert result["auroc"] > 0.8  # the scores do separate them


def test_pixel_thresholds_at_best_f1_and_at_tpr():
    g = torch.Generator().manual_seed(3)
    # integer scores: exact ties, so the histogram is exact and the brute force is easy
    scores = torch.randint(0, 50, (4000,), generator=g).float()
    mask = (torch.rand(4000, generator=g) < scores / 80).to(torch.uint8)
    metric = AnomalyScores()
    metric.update(scores, mask)
    best = metric.threshold_at_best_f1()
    positives = int((mask == 1).sum())
    f1 = {}
    for t in torch.unique(scores).tolist():
        flagged = scores >= t
        tp = int((flagged & (mask == 1)).sum())
        f1[t] = 2 * tp / (int(flagged.sum()) + positives)
    top = max(f1.values())
    assert best["f1"] == pytest.approx(top)
    assert best["threshold"] == max(t for t, v in f1.items() if v == top)  # the highest among ties
    flagged = scores >= best["threshold"]
    assert best["precision"] == pytest.approx(int((flagged & (mask == 1)).sum()) / int(flagged.sum()))

    at = metric.threshold_at_tpr(0.95)
    tpr = {t: int(((scores >= t) & (mask == 1)).sum()) / positives for t in f1}
    assert at["threshold"] == max(t for t, v in tpr.items() if v >= 0.95)
    assert at["tpr"] >= 0.95 and at["fpr"] == pytest.approx(metric.compute()["fpr95"])

    empty = AnomalyScores()
    empty.update(torch.rand(5), torch.zeros(5, dtype=torch.uint8))
    with pytest.warns(MetricUndefinedWarning, match="no anomalous"):
        assert empty.threshold_at_best_f1() is None
    with pytest.raises(ValueError, match="tpr"):
        metric.threshold_at_tpr(0.0)


# ------------------------------------------------------------------------------------------------
# Devices and torch.distributed


def test_all_reduce_single_rank_gloo(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        metrics = [SegmentationIoU(3), CalibrationError(), AnomalyScores(key_bits=12)]
        metrics[0].update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
        metrics[1].update(torch.tensor([0.3, 0.9]), torch.tensor([True, False]))
        metrics[2].update(torch.tensor([0.3, 0.9]), torch.tensor([0, 1]))
        for metric in metrics:
            before = metric.state_dict()
            metric.all_reduce_()
            for name, value in metric.state_dict().items():
                assert torch.equal(value, before[name])
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_state_follows_cuda_inputs():
    scores, labels = _anomaly_data("gaussian", n=20_000, seed=8)
    probs, target = _calibration_data(n=2000, seed=8)
    pairs = _segmentation_batches(seed=8)
    results = {}
    for device in ("cpu", "cuda"):
        anomaly, calibration, iou = AnomalyScores(), CalibrationError(), SegmentationIoU(6)
        anomaly.update(torch.from_numpy(scores).to(device), torch.from_numpy(labels).to(device))
        calibration.update_from_probs(probs.to(device), target.to(device))
        for pred, tgt in pairs:
            iou.update(pred.to(device), tgt.to(device))
        assert anomaly.device.type == calibration.device.type == iou.device.type == device
        results[device] = (anomaly.compute(), calibration.compute()["ece"], iou.compute()["miou"])
    cpu, cuda = results["cpu"], results["cuda"]
    assert cpu[0].keys() == cuda[0].keys() and cpu[2] == cuda[2]
    for key in cpu[0]:
        assert cpu[0][key] == pytest.approx(cuda[0][key], abs=1e-12), key  # reduction order may differ
    assert cpu[1] == pytest.approx(cuda[1], abs=1e-12)


# ------------------------------------------------------------------------------------------------
# The torchmetrics.Metric machinery: states, merge, pickling, DDP sync, constant memory


def _all_metrics():
    """One of each lab metric, freshly built (small AnomalyScores histograms keep the tests quick)."""
    from gmmseg_lab.eval import AnomalyComponents, ScaledCalibration

    return {
        "iou": SegmentationIoU(6),
        "calibration": CalibrationError(n_bins=10),
        "anomaly": AnomalyScores(key_bits=14),
        "components": AnomalyComponents(0.5),
        "scaled": ScaledCalibration(2.0, n_bins=10),
    }


def _feed(name, metric, part, parts=2, seed=11):
    """Update ``metric`` on shard ``part`` of ``parts`` of a fixed data set (``part=None``: all of it)."""
    g = torch.Generator().manual_seed(seed)
    n = 6000
    pred, target = torch.randint(0, 6, (n,), generator=g), torch.randint(0, 6, (n,), generator=g)
    target[torch.rand(n, generator=g) < 0.1] = 255
    logits = torch.randn(n, 4, generator=g) * 3
    labels = torch.randint(0, 4, (n,), generator=g)
    scores = torch.randn(n, generator=g)
    mask = (torch.rand(n, generator=g) < 0.1 + 0.2 * (scores > 1)).to(torch.uint8)
    mask[torch.rand(n, generator=g) < 0.05] = 255
    shards = range(parts) if part is None else [part]
    for i in shards:
        sl = slice(i * n // parts, (i + 1) * n // parts)
        if name == "iou":
            metric.update(pred[sl], target[sl])
        elif name == "calibration":
            metric.update_from_probs(torch.softmax(logits[sl], dim=1), labels[sl])
        elif name == "anomaly":
            metric.update(scores[sl], mask[sl])
        elif name == "components":
            metric.update(scores[sl].reshape(-1, 10, 10), mask[sl].reshape(-1, 10, 10))
        else:
            metric.update(logits[sl], labels[sl])


def _assert_same_result(got, expected, exact=True, where=""):
    """Equal dicts of metric results; NaN equals NaN; floats to 1e-12 unless ``exact``."""
    assert type(got) is type(expected), where
    if isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            _assert_same_result(got[key], expected[key], exact, f"{where}.{key}")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected), where
    elif isinstance(expected, np.ndarray):
        np.testing.assert_allclose(got, expected, rtol=0, atol=0 if exact else 1e-12, err_msg=where)
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            _assert_same_result(a, b, exact, f"{where}[{i}]")
    elif isinstance(expected, float) and not exact:
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12, nan_ok=True), where
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), where
    else:
        assert got == expected, where


def _quiet_compute(metric):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        return metric.compute()


def test_metrics_are_torchmetrics_metrics_with_summed_persistent_states():
    from torchmetrics import Metric
    from torchmetrics.utilities.data import dim_zero_sum

    for name, metric in _all_metrics().items():
        assert isinstance(metric, Metric), name
        assert metric.is_differentiable is False and metric.full_state_update is False, name
        assert metric.dist_sync_on_step is False, name
        assert metric._reductions and all(fx is dim_zero_sum for fx in metric._reductions.values()), name
        assert all(metric._persistent.values()), name  # state_dict() carries every state
        own_keys = {k for k in metric.state_dict() if "." not in k}
        assert own_keys == set(metric._defaults), name
    metrics = _all_metrics()
    assert metrics["iou"].higher_is_better is True and metrics["calibration"].higher_is_better is False
    assert metrics["anomaly"].higher_is_better is None  # AUROC up, FPR95 down
    assert set(metrics["scaled"].state_dict()) >= {"before.count", "after.confidence_sum", "nll_sum_before"}
    with pytest.raises(ValueError, match="dist_sync_on_step"):
        SegmentationIoU(3, dist_sync_on_step=True)


@pytest.mark.parametrize("name", ["iou", "calibration", "anomaly", "components", "scaled"])
def test_merged_halves_equal_the_whole(name):
    whole, half_a, half_b, via_merge_state = (_all_metrics()[name] for _ in range(4))
    _feed(name, whole, None)
    _feed(name, half_a, 0)
    _feed(name, half_b, 1)
    _feed(name, via_merge_state, 0)
    assert half_a.merge(half_b) is half_a
    for key, value in whole.state_dict().items():
        merged = half_a.state_dict()[key]
        if value.is_floating_point():  # float64 sums, added in another order
            torch.testing.assert_close(merged, value, rtol=1e-12, atol=1e-9)
        else:
            assert torch.equal(merged, value), (name, key)
    _assert_same_result(_quiet_compute(half_a), _quiet_compute(whole), exact=False, where=name)
    if name != "scaled":  # torchmetrics' own merge_state (the children of ScaledCalibration need merge)
        other = _all_metrics()[name]
        _feed(name, other, 1)
        via_merge_state.merge_state(other)
        _assert_same_result(_quiet_compute(via_merge_state), _quiet_compute(whole), exact=False, where=name)


def test_compute_is_live_and_warns_only_metric_undefined():
    """No torchmetrics cache (compute follows every update, merge and load) and no torchmetrics
    'compute before update' warning: an empty state gives None with a MetricUndefinedWarning."""
    for name, metric in _all_metrics().items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metric.compute()
        assert caught and all(w.category is MetricUndefinedWarning for w in caught), (name, caught)
        if name != "scaled":  # (ScaledCalibration's warnings come from its children's compute)
            assert all(w.filename == __file__ for w in caught), name  # the warning points at the caller
    iou = SegmentationIoU(3)
    with pytest.warns(MetricUndefinedWarning):
        assert iou.compute()["miou"] is None
    iou.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert iou.compute()["num_pixels"] == 3 and iou.compute()["miou"] == 1.0
    iou.update(torch.tensor([0]), torch.tensor([1]))
    assert iou.compute()["num_pixels"] == 4
    other = SegmentationIoU(3)
    other.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 2]))
    assert iou.merge(other).compute()["num_pixels"] == 8
    iou.load_state_dict(other.state_dict())
    assert iou.compute()["num_pixels"] == 4
    result = iou.compute()
    result["per_class_iou"].append("mutated")  # a caller's edit does not leak into the next compute
    assert len(iou.compute()["per_class_iou"]) == 3
    one_class = SegmentationIoU(1, ignore_index=None)
    one_class.update(torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert one_class.compute()["confusion"].shape == (1, 1)  # not squeezed to a scalar


def test_state_dict_round_trip_pickle_and_deepcopy(tmp_path):
    for name, metric in _all_metrics().items():
        _feed(name, metric, 0)
        expected = _quiet_compute(metric)
        path = tmp_path / f"{name}.pt"
        torch.save(metric.state_dict(), path)
        restored = _all_metrics()[name]
        restored.load_state_dict(torch.load(path))
        _assert_same_result(_quiet_compute(restored), expected, where=name)
        for copy_ in (pickle.loads(pickle.dumps(metric)), copy.deepcopy(metric)):
            _assert_same_result(_quiet_compute(copy_), expected, where=name)
            _feed(name, copy_, 1)  # a copy keeps working, and on its own state
            moved = [k for k, v in copy_.state_dict().items() if not torch.equal(v, metric.state_dict()[k])]
            assert moved, name
            _assert_same_result(_quiet_compute(metric), expected, where=name)
    # load_state_dict copies (no aliasing), casts, and checks keys and shapes, naming the entry
    iou = SegmentationIoU(3)
    state = {"confusion": torch.ones(3, 3, dtype=torch.int32)}
    iou.load_state_dict(state)
    state["confusion"] += 1
    assert iou.confusion.dtype == torch.int64 and int(iou.confusion.sum()) == 9
    with pytest.raises(ValueError, match=r"state\['confusion'\] must have shape \(3, 3\)"):
        iou.load_state_dict({"confusion": torch.zeros(2, 2, dtype=torch.int64)})
    with pytest.raises(ValueError, match="state must have the keys"):
        iou.load_state_dict({"histogram": torch.zeros(3, 3, dtype=torch.int64)})


def test_state_memory_is_constant_for_every_metric():
    for name, metric in _all_metrics().items():
        nbytes = metric.state_nbytes()
        assert nbytes == sum(v.numel() * v.element_size() for v in metric.state_dict().values()), name
        for _ in range(3):
            _feed(name, metric, None)
        assert metric.state_nbytes() == nbytes, name
        assert {k: v.shape for k, v in metric.state_dict().items()} == {
            k: v.shape for k, v in _all_metrics()[name].state_dict().items()
        }, name
    assert AnomalyScores().state_nbytes() == 2 * 2**20 * 8  # the default: 16 MiB, whatever the data


def _ddp_metrics_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricUndefinedWarning)
            for name, metric in _all_metrics().items():
                _feed(name, metric, rank, parts=world)
                local = {k: v.clone() for k, v in metric.state_dict().items()}
                out[name] = metric.compute()  # torchmetrics' sync: the sum over the ranks
                # the local state is back afterwards, and a second compute() gives the same
                assert all(torch.equal(v, local[k]) for k, v in metric.state_dict().items()), name
                _assert_same_result(metric.compute(), out[name], where=name)
                if name == "anomaly":
                    out["anomaly_best_f1"] = metric.threshold_at_best_f1()
                    out["anomaly_fpr90"] = metric.fpr_at_tpr(0.9)
                    out["anomaly_curves"] = metric.curves(max_points=50)
                summed = copy.deepcopy(metric).all_reduce_()  # summed in place, for good
                out[f"{name}_all_reduced"] = summed.compute()  # ... and not summed again
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_compute_the_result_of_one_process_on_everything(tmp_path):
    """Each rank updates on its shard; compute() (torchmetrics' sync, dist_reduce_fx="sum") equals one
    process updated on the concatenation, for every metric and every query of AnomalyScores."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    mp.spawn(_ddp_metrics_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    expected = {}
    for name, metric in _all_metrics().items():
        _feed(name, metric, None)
        expected[name] = expected[f"{name}_all_reduced"] = _quiet_compute(metric)
        if name == "anomaly":
            expected["anomaly_best_f1"] = metric.threshold_at_best_f1()
            expected["anomaly_fpr90"] = metric.fpr_at_tpr(0.9)
            expected["anomaly_curves"] = metric.curves(max_points=50)
    for rank, got in enumerate(ranks):
        assert got.keys() == expected.keys()
        for key in expected:
            # integer states (confusion, histogram, counts) sum exactly; float64 sums up to rounding
            exact = key.split("_")[0] in ("iou", "anomaly")
            _assert_same_result(got[key], expected[key], exact=exact, where=f"rank{rank}.{key}")
