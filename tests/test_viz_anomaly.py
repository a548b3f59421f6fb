"""Notebook 06's anomaly views, checked against scikit-learn and hand-counted rates."""

import re

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from gmmseg_lab.eval.metrics import AnomalyScores
from gmmseg_lab.viz.anomaly import (
    anomaly_table,
    anomaly_widget,
    curves_figure,
    flag_rates,
    flagged_overlay,
    mask_outline,
    quantile_thresholds,
    score_overlay_figure,
    threshold_figure,
)
from gmmseg_lab.viz.common import decode_png_data_uri as data_uri_to_array

H, W = 20, 24


def _scene(seed, separation=2.0):
    """Images, scores and masks of 3 images: a square anomaly, a void strip, noisy scores."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
    masks = np.zeros((3, H, W), dtype=np.int64)
    masks[:, 5:10, 6:12] = 1
    masks[:, -2:, :] = 255
    scores = rng.normal(size=(3, H, W)) + separation * (masks == 1)
    scores[masks == 255] = np.nan  # void pixels may hold anything, NaN included
    return images, scores.astype(np.float32), masks


@pytest.fixture(scope="module")
def scene():
    return _scene(0)


def _sklearn(scores, masks):
    keep = masks != 255
    y, s = (masks[keep] == 1).astype(int), scores[keep].astype(np.float64)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "fpr95": fpr[np.argmax(tpr >= 0.95)]}


def _streamed(scores, masks, max_points=500):
    metric = AnomalyScores()
    metric.update(torch.from_numpy(scores), torch.from_numpy(masks))
    return metric.compute(), metric.curves(max_points=max_points)


def test_flag_rates_and_thresholds(scene):
    _, scores, masks = scene
    rates = flag_rates(scores, masks, 1.0)
    anomaly, inlier = masks == 1, masks == 0
    assert rates["tpr"] == pytest.approx((scores[anomaly] >= 1.0).mean())
    assert rates["fpr"] == pytest.approx((scores[inlier] >= 1.0).mean())
    assert flag_rates(scores, np.zeros_like(masks), 0.0)["tpr"] is None
    thresholds = quantile_thresholds(scores, masks, num=5, low=0.5, high=0.9)
    np.testing.assert_allclose(thresholds, np.quantile(scores[masks != 255], np.linspace(0.5, 0.9, 5)))
    assert len(quantile_thresholds(np.zeros((4, 4)), np.zeros((4, 4), int), num=7)) == 1  # ties collapse


def test_mask_outline_runs_between_pixel_centres():
    mask = np.zeros((H, W), dtype=np.int64)
    mask[5:10, 6:12] = 1
    x, y = mask_outline(mask)
    xs, ys = [v for v in x if v is not None], [v for v in y if v is not None]
    assert (min(xs), max(xs), min(ys), max(ys)) == (5.5, 11.5, 4.5, 9.5)
    mask[:3, :3] = 1  # touching the border: the contour still closes
    x, _ = mask_outline(mask)
    assert x.count(None) == 2
    assert mask_outline(np.zeros((4, 4))) == ([], [])


def test_score_overlay_heatmap_void_and_threshold_panel(scene):
    images, scores, masks = scene
    fig = score_overlay_figure(images[0], scores[0], masks[0], threshold=1.0, score_range=(-2, 4))
    heat = next(t for t in fig.data if t.meta and t.meta.get("role") == "score")
    z = np.asarray(heat.z, dtype=float)
    assert np.isnan(z[masks[0] == 255]).all() and not np.isnan(z[masks[0] != 255]).any()
    np.testing.assert_allclose(z[masks[0] != 255], scores[0][masks[0] != 255], rtol=1e-6)
    assert (heat.zmin, heat.zmax) == (-2, 4)
    tpr = (scores[0][masks[0] == 1] >= 1.0).mean()
    fpr = (scores[0][masks[0] == 0] >= 1.0).mean()
    assert f"TPR {100 * tpr:.1f} %, FPR {100 * fpr:.1f} %" in fig.layout.annotations[2].text
    flagged = data_uri_to_array([t for t in fig.data if t.type == "image"][-1].source)
    np.testing.assert_array_equal(flagged, flagged_overlay(images[0], scores[0], masks[0], 1.0))
    # Flagged (score >= threshold, not void) pixels are tinted magenta, all others untouched.
    chosen = (scores[0] >= 1.0) & (masks[0] != 255)
    tinted = 0.35 * images[0][chosen].astype(float) + 0.65 * np.array([255.0, 0.0, 255.0])
    np.testing.assert_allclose(flagged[chosen], tinted, atol=1)
    np.testing.assert_array_equal(flagged[~chosen], images[0][~chosen])
    # Without a threshold: two panels; a different score gives a different heatmap.
    two = score_overlay_figure(images[0], scores[1], masks[0])
    assert len(two.layout.annotations) == 2
    assert not np.allclose(np.nan_to_num(np.asarray(two.data[3].z, float)), np.nan_to_num(z))


def test_score_overlay_rejects_bad_inputs(scene):
    images, scores, masks = scene
    with pytest.raises(ValueError, match=re.escape("score must have the image's shape (20, 24), got (20, 23)")):
        score_overlay_figure(images[0], scores[0][:, :-1], masks[0])
    bad = masks[0].copy()
    bad[0, 0] = 7
    expected = "mask must hold only 0 (inlier), 1 (anomaly) or 255 (void), found [7]"
    with pytest.raises(ValueError, match=re.escape(expected)):
        score_overlay_figure(images[0], scores[0], bad)
    with pytest.raises(ValueError, match="image must be a"):
        score_overlay_figure(images[0].astype(float), scores[0], masks[0])
    nan_scored = scores[0].copy()
    nan_scored[0, 0] = np.nan
    with pytest.raises(ValueError, match="score must not be NaN"):
        score_overlay_figure(images[0], nan_scored, masks[0])


def test_large_images_are_subsampled(scene):
    images, scores, masks = scene
    fig = score_overlay_figure(images[0], scores[0], masks[0], max_side=10)
    heat = next(t for t in fig.data if t.meta and t.meta.get("role") == "score")
    assert np.asarray(heat.z).shape == (7, 8) and heat.dx == 3
    assert data_uri_to_array(fig.data[0].source).shape == (7, 8, 3)


def test_curves_legend_matches_sklearn_over_seeds():
    curves, metrics, reference = {"gmm": [], "softmax": []}, {"gmm": [], "softmax": []}, {"gmm": [], "softmax": []}
    for label, separation in (("gmm", 2.0), ("softmax", 0.7)):
        for seed in range(3):
            _, scores, masks = _scene(seed + (10 if label == "gmm" else 0), separation)
            m, c = _streamed(scores, masks)
            metrics[label].append(m)
            curves[label].append(c)
            reference[label].append(_sklearn(scores, masks))
    fig = curves_figure(curves, metrics)
    legend = {t.meta["model"]: t.name for t in fig.data if t.showlegend is not False and t.meta}
    for label in ("gmm", "softmax"):
        # FPR95 may differ from scikit-learn's by the inliers sharing the crossing score bin
        # (AnomalyScores' documented binning): one inlier of ~1300 here, 0.08 %.
        for key, name, tol in (("auroc", "AUROC", 0.02), ("ap", "AP", 0.02), ("fpr95", "FPR95", 0.1)):
            mean, std = re.search(rf" {name} ([\d.]+) ± ([\d.]+) %", legend[label]).groups()
            values = [r[key] for r in reference[label]]
            assert float(mean) == pytest.approx(100 * np.mean(values), abs=tol)
            assert float(std) == pytest.approx(100 * np.std(values, ddof=1), abs=tol)
    markers = [t for t in fig.data if t.meta and t.meta.get("panel") == "fpr95"]
    assert len(markers) == 6
    assert markers[0].x[0] == pytest.approx(reference["gmm"][0]["fpr95"], abs=1e-3) and markers[0].y[0] == 0.95
    roc = [t for t in fig.data if t.meta and t.meta.get("panel") == "roc"]
    np.testing.assert_allclose(roc[0].x, curves["gmm"][0]["fpr"])
    assert fig.layout.xaxis.title.text.startswith("false-positive rate") and fig.layout.xaxis2.title.text


def test_curves_without_metrics_use_the_curve_points():
    _, scores, masks = _scene(3)
    _, curve = _streamed(scores, masks, max_points=100_000)  # every threshold kept: exact
    fig = curves_figure({"gmm": [curve]})
    reference = _sklearn(scores, masks)
    name = next(t.name for t in fig.data if t.meta and t.meta.get("model") == "gmm")
    auroc = float(re.search(r"AUROC ([\d.]+) %", name).group(1))
    assert auroc == pytest.approx(100 * reference["auroc"], abs=0.01) and "(1 seed)" in name
    with pytest.raises(ValueError, match=re.escape("metrics_by_model['gmm'] must have one dict per seed")):
        curves_figure({"gmm": [curve]}, {"gmm": []})
    with pytest.raises(ValueError, match=re.escape("curves_by_model['gmm'][0] must have the keys")):
        curves_figure({"gmm": [{"fpr": [0, 1]}]})


def test_threshold_slider_steps_show_the_flagged_pixels(scene):
    images, scores, masks = scene
    thresholds = [0.0, 1.0, 2.5]
    fig = threshold_figure(images, scores, masks, thresholds)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == 3 and [s.label for s in steps] == ["0", "1", "2.5"]
    for step, threshold in zip(steps, thresholds):
        sources = step.args[0]["source"]
        assert len(sources) == 3 and list(step.args[2]) == [t for t, tr in enumerate(fig.data) if tr.type == "image"]
        for i in (0, 2):
            np.testing.assert_array_equal(
                data_uri_to_array(sources[i]), flagged_overlay(images[i], scores[i], masks[i], threshold)
            )
        rates = flag_rates(scores, masks, threshold)
        assert f"TPR {100 * rates['tpr']:.1f} %" in step.args[1]["title.text"]
        assert f"FPR {100 * rates['fpr']:.1f} %" in step.args[1]["title.text"]
    assert steps[0].args[0]["source"][0] != steps[2].args[0]["source"][0]
    last = steps[-1]
    fig.plotly_update(restyle_data=last.args[0], relayout_data=last.args[1], trace_indexes=last.args[2])
    assert fig.data[0].source == last.args[0]["source"][0]
    with pytest.raises(ValueError, match="scores and masks must have one entry per image"):
        threshold_figure(images, scores[:2], masks, thresholds)
    with pytest.raises(ValueError, match="thresholds"):
        threshold_figure(images, scores, masks, [])


def test_anomaly_table_mean_and_std():
    metrics = {
        "gmm": [{"auroc": 0.9, "ap": 0.3, "fpr95": 0.2}, {"auroc": 0.8, "ap": 0.1, "fpr95": None}],
        "softmax": [{"auroc": 0.7, "ap": 0.05, "fpr95": 0.6}],
    }
    table = anomaly_table(metrics)
    assert list(table["model"]) == ["gmm", "softmax"] and list(table["seeds"]) == [2, 1]
    assert table.iloc[0]["AUROC (%)"] == f"85.00 ± {100 * np.std([0.9, 0.8], ddof=1):.2f}"
    assert table.iloc[0]["FPR95 (%)"] == "20.00"  # the undefined seed is left out
    assert table.iloc[1]["ap_mean"] == pytest.approx(0.05) and table.iloc[1]["ap_std"] == 0.0
    with pytest.raises(ValueError, match=r"pass metrics\['anomaly'\]"):
        anomaly_table({"gmm": [{"miou": 0.5, "anomaly": {}}]})


def test_anomaly_widget_controls_change_the_figure(scene):
    images, scores, masks = scene
    w = anomaly_widget(images, masks, {"gmm": scores, "shifted": scores * 10 + 100}, num_thresholds=9)
    assert set(w.controls) == {"model", "image", "threshold"}

    def heat():
        return np.asarray(next(t for t in w.figure.data if t.meta and t.meta.get("role") == "score").z, float)

    first_threshold = w.controls["threshold"].value
    w.controls["image"].value = 2
    np.testing.assert_allclose(heat()[masks[2] != 255], scores[2][masks[2] != 255], rtol=1e-6)
    flagged_before = [t for t in w.figure.data if t.type == "image"][-1].source
    w.controls["threshold"].value = w.controls["threshold"].options[0][1]
    assert [t for t in w.figure.data if t.type == "image"][-1].source != flagged_before
    w.controls["model"].value = "shifted"
    assert w.controls["threshold"].value > 50 > first_threshold  # thresholds follow the model's scale
    np.testing.assert_allclose(heat()[masks[2] != 255], 10 * scores[2][masks[2] != 255] + 100, rtol=1e-5)
    assert w.figure.layout.title.text.startswith("shifted, image 2")
    with pytest.raises(ValueError, match="scores and masks must have one entry per image"):
        anomaly_widget(images, masks[:1], {"gmm": scores})


def _area_under_steps(x, y, shape):
    """Area under the path plotly draws through (x, y) with line_shape 'hv' or 'vh'."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    height = y[:-1] if shape == "hv" else y[1:]  # 'hv': across at the previous y; 'vh': up first
    return float(np.sum(np.diff(x) * height))


def test_pr_curve_steps_enclose_the_average_precision():
    _, scores, masks = _scene(4, separation=1.0)
    metrics, curve = _streamed(scores, masks, max_points=100_000)
    fig = curves_figure({"gmm": [curve]}, {"gmm": [metrics]})
    pr = next(t for t in fig.data if t.meta and t.meta.get("panel") == "pr")
    assert pr.line.shape == "vh"
    assert _area_under_steps(pr.x, pr.y, pr.line.shape) == pytest.approx(metrics["ap"], abs=1e-9)
    assert metrics["ap"] == pytest.approx(_sklearn(scores, masks)["ap"], abs=0.01)
    # 'hv' would draw the previous precision over each recall step: a different area
    assert abs(_area_under_steps(pr.x, pr.y, "hv") - metrics["ap"]) > 1e-3


def test_curve_metrics_work_without_np_trapezoid(monkeypatch):
    """numpy 1.x (allowed by pyproject) has np.trapz but no np.trapezoid."""
    import importlib.util

    import gmmseg_lab.viz.anomaly as anomaly

    used = []

    def trapz(y, x):
        used.append(True)
        return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))

    monkeypatch.delattr(np, "trapezoid", raising=False)
    monkeypatch.setattr(np, "trapz", trapz, raising=False)
    spec = importlib.util.spec_from_file_location("gmmseg_lab.viz._anomaly_numpy1", anomaly.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, scores, masks = _scene(3)
    _, curve = _streamed(scores, masks, max_points=100_000)
    assert module._curve_metrics(curve)["auroc"] == pytest.approx(_sklearn(scores, masks)["auroc"], abs=1e-3)
    assert used


def test_metrics_check_is_shared_by_curves_and_table(scene):
    _, scores, masks = scene
    _, curve = _streamed(scores, masks)
    whole = {"miou": 0.5, "anomaly": {"auroc": 0.9, "ap": 0.3, "fpr95": 0.2}}
    for build in (lambda: curves_figure({"gmm": [curve]}, {"gmm": [whole]}), lambda: anomaly_table({"gmm": [whole]})):
        with pytest.raises(ValueError, match=re.escape("metrics_by_model['gmm'][0] must have auroc, ap and fpr95")):
            build()
        with pytest.raises(ValueError, match=r"pass metrics\['anomaly'\]"):
            build()


def test_anomaly_widget_thresholds_are_the_quantile_thresholds(scene):
    images, scores, masks = scene
    w = anomaly_widget(images, masks, {"gmm": scores}, num_thresholds=9)
    values = [v for _, v in w.controls["threshold"].options]
    np.testing.assert_allclose(values, quantile_thresholds(scores, masks, num=9, low=0.5, high=0.999))
    assert w.controls["threshold"].options[0][0].endswith("(top 50.0 % of pixels)")


def test_anomaly_widget_redraws_once_per_change_and_ranges_once_per_model(scene, monkeypatch):
    import gmmseg_lab.viz.anomaly as anomaly

    images, scores, masks = scene
    renders, percentiles = [], []
    draw, percentile = anomaly.score_overlay_figure, np.percentile
    monkeypatch.setattr(
        anomaly, "score_overlay_figure", lambda *a, **k: renders.append(k["threshold"]) or draw(*a, **k)
    )
    monkeypatch.setattr(np, "percentile", lambda *a, **k: percentiles.append(1) or percentile(*a, **k))
    w = anomaly_widget(images, masks, {"gmm": scores, "shifted": scores * 10 + 100}, num_thresholds=9)
    assert len(renders) == 1
    w.controls["model"].value = "shifted"  # thresholds follow the model: still one redraw
    assert len(renders) == 2 and renders[-1] == w.controls["threshold"].value > 50
    w.controls["image"].value = 1
    w.controls["threshold"].value = w.controls["threshold"].options[0][1]
    w.controls["model"].value = "gmm"
    w.controls["image"].value = 2
    assert len(renders) == 6
    assert len(percentiles) == 2  # one colour range per model, not per redraw
