"""SegmentMeIfYouCan component metrics (gmmseg_lab.eval.components): a hand example, the adjustment of
sIoU for other ground-truth components, 8-connectivity, void, minimum sizes, properties, and a literal
set-based transcription of the definitions on random maps."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from gmmseg_lab.eval import AnomalyScores, MetricUndefinedWarning
from gmmseg_lab.eval.components import DEFAULT_TAUS, AnomalyComponents, component_statistics

# ------------------------------------------------------------------------------------------------
# The hand example (8 x 10). Mask: "." inlier, "#" anomaly, "v" void. Scores: 0.9 at "*", 0.1 elsewhere.
#
#        mask            flagged (score 0.9)
#    0 ..........v      ..........*   <- flagged, but void: dropped before labelling
#    1 .##.......       .****.....    P1 = rows 1-2, cols 1-4: covers A (cols 1-2) + 4 inlier pixels
#    2 .##.......       .****.....
#    3 ..........       ..........
#    4 ......###.       ......***.    P2 = rows 4-5, cols 6-8: 6 of B's 9 pixels, misses row 6
#    5 ......###.       ......***.
#    6 ......###.       *.........    P3 = (6,0) and (7,1): diagonal neighbours, ONE component
#    7 ..........       .*........         with 8-connectivity; no anomaly under it
#
# Ground truth: A = rows 1-2, cols 1-2 (4 px); B = rows 4-6, cols 6-8 (9 px).
# sIoU(A) = |A ∩ P1| / (|A| + inlier pixels of P1) = 4 / (4 + 4) = 1/2
# sIoU(B) = |B ∩ P2| / (|B| + inlier pixels of P2) = 6 / (9 + 0) = 2/3
#   mean sIoU = (1/2 + 2/3) / 2 = 7/12
# PPV(P1) = 4/8 = 1/2, PPV(P2) = 6/6 = 1, PPV(P3) = 0/2 = 0;  mean PPV = 1/2
# F1(tau) = 2TP / (2TP + FN + FP), TP: sIoU >= tau, FN: sIoU < tau, FP: PPV < tau
#   tau 0.25 .. 0.50 (6 taus): TP = 2 (A: 1/2 >= tau, B), FN = 0, FP = 1 (P3)      -> 4/5
#   tau 0.55 .. 0.65 (3 taus): TP = 1 (B),  FN = 1 (A), FP = 2 (P1: 1/2 < tau, P3) -> 2/5
#   tau 0.70 .. 0.75 (2 taus): TP = 0,      FN = 2,     FP = 2                     -> 0
#   mean F1 = (6 * 4/5 + 3 * 2/5 + 2 * 0) / 11 = 6/11
# (At tau = 0.50 the ties go the benchmark's way: sIoU(A) = 0.5 is a TP, PPV(P1) = 0.5 not an FP.)


def _hand_example():
    mask = np.zeros((8, 10), np.uint8)
    mask[0, 9] = 255
    mask[1:3, 1:3] = 1
    mask[4:7, 6:9] = 1
    score = np.full((8, 10), 0.1, np.float32)
    score[1:3, 1:5] = 0.9
    score[4:6, 6:9] = 0.9
    score[6, 0] = score[7, 1] = 0.9
    score[0, 9] = 0.9
    return torch.from_numpy(score), torch.from_numpy(mask)


def test_hand_example():
    score, mask = _hand_example()
    metric = AnomalyComponents(threshold=0.5)
    metric.update(score, mask)
    result = metric.compute()
    assert result["num_gt_components"] == 2 and result["num_pred_components"] == 3
    assert result["siou"] == pytest.approx(7 / 12)
    assert result["ppv"] == pytest.approx(1 / 2)
    expected = [4 / 5] * 6 + [2 / 5] * 3 + [0.0] * 2
    assert list(result["f1_by_threshold"]) == [f"{t:.2f}" for t in DEFAULT_TAUS]
    assert list(result["f1_by_threshold"].values()) == pytest.approx(expected)
    assert result["mean_f1"] == pytest.approx(6 / 11)
    assert result["counts_by_threshold"]["0.50"] == {"tp": 2, "fn": 0, "fp": 1}
    assert result["counts_by_threshold"]["0.55"] == {"tp": 1, "fn": 1, "fp": 2}
    assert result["threshold"] == pytest.approx(0.5)


def test_hand_example_minimum_sizes():
    score, mask = _hand_example()
    # P3 (2 px) is below min_pred_size=3: only P1 and P2 remain, and no FP below tau 0.55.
    # A (4 px) is below min_gt_size=5: it becomes void, and P1 keeps only its 4 inlier pixels (PPV 0).
    metric = AnomalyComponents(0.5, min_pred_size=3, min_gt_size=5)
    metric.update(score, mask)
    result = metric.compute()
    assert result["num_gt_components"] == 1 and result["num_pred_components"] == 2
    assert result["siou"] == pytest.approx(2 / 3)  # B alone
    assert result["ppv"] == pytest.approx((0 + 1) / 2)  # P1 on inliers only, P2
    # tau <= 0.65: TP 1, FN 0, FP 1 (P1) -> 2/3; tau >= 0.70: TP 0, FN 1, FP 1 -> 0
    assert list(result["f1_by_threshold"].values()) == pytest.approx([2 / 3] * 9 + [0.0] * 2)


def test_siou_is_adjusted_for_the_other_ground_truth_components():
    # A = 3 px, B = 3 px, one inlier pixel between them; the prediction covers all 7 in one bar.
    #   mask  .###.###.     prediction  .*******.
    # sIoU(A) = |A ∩ P| / |(A ∪ P) \ B| = 3 / (7 - 3) = 3/4, B likewise; PPV(P) = 6/7.
    # Without the adjustment sIoU would be the plain IoU 3/7.
    mask = torch.tensor([[0, 1, 1, 1, 0, 1, 1, 1, 0]], dtype=torch.uint8)
    score = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 0]], dtype=torch.float32)
    metric = AnomalyComponents(0.5)
    metric.update(score, mask)
    result = metric.compute()
    assert result["num_gt_components"] == 2 and result["num_pred_components"] == 1
    assert result["siou"] == pytest.approx(3 / 4)
    assert result["ppv"] == pytest.approx(6 / 7)


def test_void_splits_predictions_and_eight_connectivity_joins_diagonals():
    mask = torch.tensor([[1, 255, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.uint8)
    flagged = torch.tensor([[1, 1, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.float32)
    metric = AnomalyComponents(0.5)
    metric.update(flagged, mask)
    # The void pixel between the two anomalies is not predicted, so two predicted components.
    assert metric.compute()["num_pred_components"] == 2
    diagonal = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    metric = AnomalyComponents(0.5)
    metric.update(diagonal, torch.zeros(3, 3, dtype=torch.uint8))
    with pytest.warns(MetricUndefinedWarning, match="siou is None"):  # no anomaly in this image
        result = metric.compute()
    assert result["num_pred_components"] == 1  # 8-connected: one component
    assert result["ppv"] == 0.0 and result["mean_f1"] == 0.0  # a lone false positive


def test_a_void_band_cuts_predictions_unless_they_connect_through_it():
    # One anomalous pixel in a ring of void, 16 inliers around; every pixel flagged.
    #   .....
    #   .vvv.
    #   .v#v.
    #   .vvv.
    #   .....
    mask = torch.zeros(5, 5, dtype=torch.uint8)
    mask[1:4, 1:4] = 255
    mask[2, 2] = 1
    everything = torch.ones(5, 5)
    # The benchmark's rule: the void is dropped first, so the anomaly is a component of its own
    # (sIoU 1, PPV 1) and the 16 inliers another (PPV 0): F1 = 2 / (2 + 0 + 1) at every tau.
    cut = AnomalyComponents(0.5)
    cut.update(everything, mask)
    result = cut.compute()
    assert (result["siou"], result["num_pred_components"]) == (1.0, 2)
    assert list(result["f1_by_threshold"].values()) == pytest.approx([2 / 3] * 11)
    # Through the void: one component of 17 scored pixels, sIoU = 1 / (1 + 16) = PPV: F1 = 0.
    joined = AnomalyComponents(0.5, connect_through_void=True)
    joined.update(everything, mask)
    result = joined.compute()
    assert result["num_pred_components"] == 1 and result["connect_through_void"] is True
    assert result["siou"] == pytest.approx(1 / 17) and result["ppv"] == pytest.approx(1 / 17)
    assert result["mean_f1"] == 0.0


def _random_maps(seed, shape=(24, 30)):
    rng = np.random.default_rng(seed)
    # Blobs: smoothed noise thresholded, so components have a range of sizes and touch each other.
    gt = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0.25
    score = ndimage.gaussian_filter(rng.normal(size=shape), 1.2) + 0.8 * gt
    mask = gt.astype(np.uint8)
    mask[rng.random(shape) < 0.05] = 255
    return score.astype(np.float32), mask


def _reference(score, mask, threshold, min_pred_size=0, min_gt_size=0):
    """The definitions, literally: sets of pixel coordinates per component, benchmark order of steps."""
    structure = np.ones((3, 3))
    valid = mask != 255
    gt_labels, n_gt = ndimage.label((mask == 1) & valid, structure)
    pred_labels, n_pred = ndimage.label((score >= threshold) & valid, structure)
    roi = valid.copy()
    for i in range(1, n_gt + 1):
        if (gt_labels == i).sum() < min_gt_size:
            roi[gt_labels == i] = False

    def pixels(labels, i):
        return {(y, x) for y, x in zip(*np.nonzero((labels == i) & roi))}

    gts = [pixels(gt_labels, i) for i in range(1, n_gt + 1) if (gt_labels == i).sum() >= min_gt_size]
    preds = [pixels(pred_labels, j) for j in range(1, n_pred + 1) if (pred_labels == j).sum() >= min_pred_size]
    preds = [p for p in preds if p]
    all_gt = set().union(*gts) if gts else set()
    siou = []
    for k in gts:
        hits = [p for p in preds if p & k]
        union_of_hits = set().union(*hits) if hits else set()
        others = all_gt - k
        siou.append(len(k & union_of_hits) / len((k | union_of_hits) - others))
    ppv = []
    for p in preds:
        hits = [k for k in gts if p & k]
        covered = set().union(*hits) if hits else set()
        ppv.append(len(p & covered) / len(p))
    return np.array(siou), np.array(ppv)


@pytest.mark.parametrize("seed, sizes", [(0, (0, 0)), (1, (0, 0)), (2, (4, 3)), (3, (6, 8))])
def test_matches_a_literal_transcription_of_the_definitions(seed, sizes):
    score, mask = _random_maps(seed)
    threshold = float(np.quantile(score, 0.7))
    siou, ppv = component_statistics(
        mask == 1, score >= threshold, mask != 255, min_pred_size=sizes[0], min_gt_size=sizes[1]
    )
    ref_siou, ref_ppv = _reference(score, mask, threshold, *sizes)
    assert len(ref_siou) > 2 and len(ref_ppv) > 2
    np.testing.assert_allclose(np.sort(siou), np.sort(ref_siou))
    np.testing.assert_allclose(np.sort(ppv), np.sort(ref_ppv))


def test_perfect_and_empty_predictions():
    _, mask = _random_maps(4)
    gt = torch.from_numpy(mask)
    perfect = torch.from_numpy((mask == 1).astype(np.float32))
    metric = AnomalyComponents(0.5)
    metric.update(perfect, gt)
    result = metric.compute()
    assert result["num_gt_components"] > 2
    assert result["siou"] == 1.0 and result["ppv"] == 1.0 and result["mean_f1"] == 1.0
    assert set(result["f1_by_threshold"].values()) == {1.0}

    metric = AnomalyComponents(0.5)
    metric.update(torch.zeros_like(perfect), gt)
    with pytest.warns(MetricUndefinedWarning, match="ppv is None"):
        result = metric.compute()
    assert result["siou"] == 0.0 and result["ppv"] is None and result["num_pred_components"] == 0
    assert result["mean_f1"] == 0.0 and set(result["f1_by_threshold"].values()) == {0.0}


def test_streaming_batches_merge_and_state():
    maps = [_random_maps(seed) for seed in range(5, 9)]
    threshold = 0.6
    one = AnomalyComponents(threshold)
    for score, mask in maps:
        one.update(torch.from_numpy(score), torch.from_numpy(mask))
    batched = AnomalyComponents(threshold)
    batched.update(torch.from_numpy(np.stack([m[0] for m in maps])), torch.from_numpy(np.stack([m[1] for m in maps])))
    halves = [AnomalyComponents(threshold), AnomalyComponents(threshold)]
    for i, (score, mask) in enumerate(maps):
        halves[i % 2].update(torch.from_numpy(score), torch.from_numpy(mask))
    merged = halves[0].merge(halves[1]).compute()
    assert batched.compute() == one.compute()
    expected = one.compute()
    for key in ("siou", "ppv", "mean_f1"):
        assert merged[key] == pytest.approx(expected[key])
    assert merged["counts_by_threshold"] == expected["counts_by_threshold"]
    # Constant-size state: the same bytes after 1 image or 4.
    fresh = AnomalyComponents(threshold)
    nbytes = fresh.state_nbytes()
    assert one.state_nbytes() == nbytes
    restored = AnomalyComponents(threshold)
    restored.load_state_dict(one.state_dict())
    assert restored.compute() == one.compute()
    one.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        assert one.compute()["num_gt_components"] == 0 and one.compute()["mean_f1"] is None
    with pytest.raises(ValueError, match="configuration"):
        AnomalyComponents(0.5).merge(AnomalyComponents(0.6))


def test_threshold_from_the_pixel_histogram_flags_what_it_says():
    """The best-F1 threshold of AnomalyScores, applied with >=, flags exactly the pixels counted."""
    maps = [_random_maps(seed) for seed in range(10, 13)]
    pixels = AnomalyScores()
    for score, mask in maps:
        pixels.update(torch.from_numpy(score), torch.from_numpy(mask))
    best = pixels.threshold_at_best_f1()
    flagged = tp = positives = 0
    for score, mask in maps:
        keep = mask != 255
        hit = (score >= np.float32(best["threshold"])) & keep
        flagged += int(hit.sum())
        tp += int((hit & (mask == 1)).sum())
        positives += int((mask == 1).sum())
    assert tp / flagged == pytest.approx(best["precision"]) and tp / positives == pytest.approx(best["recall"])
    assert best["f1"] == pytest.approx(2 * tp / (flagged + positives))
    # No other threshold does better (brute force over the distinct scores).
    everything = np.concatenate([s[m != 255] for s, m in maps])
    labels = np.concatenate([m[m != 255] == 1 for s, m in maps])
    for t in np.unique(everything)[::7]:
        hit = everything >= t
        assert 2 * (hit & labels).sum() / (hit.sum() + labels.sum()) <= best["f1"] + 1e-9


def test_validation():
    for bad, match in [(float("nan"), "threshold"), ("0.5", "threshold")]:
        with pytest.raises(ValueError, match=match):
            AnomalyComponents(bad)
    with pytest.raises(ValueError, match="taus"):
        AnomalyComponents(0.5, taus=(0.3, 1.5))
    with pytest.raises(ValueError, match="min_pred_size"):
        AnomalyComponents(0.5, min_pred_size=-1)
    metric = AnomalyComponents(0.5)
    with pytest.raises(ValueError, match="mask must hold only"):
        metric.update(torch.zeros(4, 4), torch.full((4, 4), 7, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"scores must have shape \[H, W\] or \[B, H, W\]"):
        metric.update(torch.zeros(4), torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="mask must have the shape of scores"):
        metric.update(torch.zeros(4, 4), torch.zeros(4, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scores must be a floating-point"):
        metric.update(torch.zeros(4, 4, dtype=torch.int64), torch.zeros(4, 4, dtype=torch.uint8))


def test_taus_are_the_decimals():
    assert DEFAULT_TAUS == (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
    assert all(a < b for a, b in itertools.pairwise(DEFAULT_TAUS))
