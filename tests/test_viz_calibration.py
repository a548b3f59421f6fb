"""Notebook 04's calibration views, checked against ECE / MCE computed here from raw samples."""

import re

import numpy as np
import pytest
import torch

from gmmseg_lab.eval.metrics import CalibrationError
from gmmseg_lab.stats import seed_stats
from gmmseg_lab.viz.calibration import (
    aggregate_bins,
    bins_by_model,
    calibration_errors,
    calibration_table,
    calibration_widget,
    confidence_histogram_figure,
    reliability_figure,
)
from gmmseg_lab.viz.common import format_percent as format_mean_std

N_BINS = 10


def _samples(seed, bias, n=3000):
    """Confidences and correctness of a model whose accuracy is its confidence minus ``bias``."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.2, 1.0, n).astype(np.float32)
    conf[:50] = 1.0  # saturated softmax: the degenerate [1, 1] bin
    correct = rng.uniform(size=n) < np.clip(conf - bias, 0, 1)
    return conf, correct


def _bins(conf, correct):
    metric = CalibrationError(n_bins=N_BINS)
    metric.update(torch.from_numpy(conf), torch.from_numpy(correct))
    return metric.compute()


def _numpy_ece_mce(conf, correct):
    """ECE and MCE with torchmetrics' binning, written out independently."""
    edges = np.linspace(0, 1, N_BINS + 1, dtype=np.float32)
    which = np.searchsorted(edges, conf, side="right") - 1
    ece, mce = 0.0, 0.0
    for b in np.unique(which):
        sel = which == b
        gap = abs(correct[sel].mean() - conf[sel].astype(np.float64).mean())
        ece += sel.sum() / len(conf) * gap
        mce = max(mce, gap)
    return ece, mce


@pytest.fixture(scope="module")
def runs():
    """Two models x three seeds: samples, evaluator-style metrics dicts and independent ECE / MCE."""
    out = {}
    for label, bias in (("gmm", 0.15), ("softmax", 0.02)):
        out[label] = []
        for seed in range(3):
            conf, correct = _samples(seed + (10 if label == "gmm" else 0), bias)
            cal = _bins(conf, correct)
            metrics = {"ece": cal["ece"], "mce": cal["mce"], "calibration_bins": cal["bins"]}
            if label == "gmm":
                post = _bins(*_samples(seed + 20, -0.05))
                metrics["bayes_posterior_calibration"] = {"ece": post["ece"], "mce": post["mce"], "bins": post["bins"]}
            out[label].append((metrics, _numpy_ece_mce(conf, correct)))
    return out


def mean_and_std(values):
    """The (mean, std, n) the calibration module's former ``mean_and_std`` returned."""
    stat = seed_stats(values)
    return stat["mean"], stat["std"], stat["n"]


def _metrics(runs):
    return {label: [m for m, _ in rs] for label, rs in runs.items()}


def test_mean_and_std_and_format():
    assert mean_and_std([0.1, None, 0.3]) == pytest.approx((0.2, np.std([0.1, 0.3], ddof=1), 2))
    assert format_mean_std([0.0123, 0.0145]) == f"{1.34:.2f} ± {np.std([1.23, 1.45], ddof=1):.2f}"
    assert format_mean_std([0.5]) == "50.00" and format_mean_std([None]) == "n/a"


def test_ece_from_bins_matches_samples(runs):
    for label, rs in runs.items():
        for metrics, (ece, mce) in rs:
            got_ece, got_mce = calibration_errors(metrics["calibration_bins"])
            assert got_ece == pytest.approx(ece, abs=1e-9) and got_mce == pytest.approx(mce, abs=1e-9)
            assert got_ece == pytest.approx(metrics["ece"], abs=1e-12)


def test_reliability_legend_holds_mean_and_std_of_the_independent_ece(runs):
    logits = bins_by_model(_metrics(runs))
    fig = reliability_figure(logits)
    curves = [t for t in fig.data if t.meta and t.meta.get("role") == "curve"]
    assert [t.meta["model"] for t in curves] == ["gmm", "softmax"]
    for trace in curves:
        eces = [e for _, (e, _) in runs[trace.meta["model"]]]
        mces = [m for _, (_, m) in runs[trace.meta["model"]]]
        expected = (
            f"ECE {100 * np.mean(eces):.2f} ± {100 * np.std(eces, ddof=1):.2f} %, "
            f"MCE {100 * np.mean(mces):.2f} ± {100 * np.std(mces, ddof=1):.2f} %"
        )
        assert expected in trace.name and "(3 seeds)" in trace.name
    # Points: per-bin accuracy averaged over seeds; the saturated bin sits at confidence 1.
    gmm = curves[0]
    accuracy = np.array(
        [[np.nan if a is None else a for a in m["calibration_bins"]["accuracy"]] for m, _ in runs["gmm"]]
    )
    filled = ~np.isnan(accuracy).all(0)  # bins below confidence 0.2 are empty in every seed
    np.testing.assert_allclose(gmm.y, np.nanmean(accuracy[:, filled], axis=0))
    assert gmm.x[-1] == pytest.approx(1.0) and gmm.error_y.visible
    np.testing.assert_allclose(gmm.error_y.array[0], np.nanstd(accuracy[:, 2], ddof=1))
    # Over-confident model (accuracy = confidence - 0.15) lies below the diagonal.
    assert np.all(np.asarray(gmm.y) < np.asarray(gmm.x))
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text and not fig.layout.updatemenus


def test_static_toggle_switches_between_logits_and_bayes_posterior(runs):
    metrics = _metrics(runs)
    posterior = bins_by_model(metrics, "Bayes posterior")
    assert list(posterior) == ["gmm"]  # the softmax head has no Bayes posterior
    fig = reliability_figure(bins_by_model(metrics), posterior)
    menu = fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == ["probability: class logits", "probability: Bayes posterior"]
    for v, button in enumerate(menu.buttons):
        visible = button.args[0]["visible"]
        assert len(visible) == len(fig.data)
        shown = [t for t, on in zip(fig.data, visible) if on and t.meta]
        assert shown and all(t.meta["view"] == v for t in shown)
    bayes_curve = [t for t in fig.data if t.meta and t.meta.get("view") == 1 and t.meta["role"] == "curve"][0]
    eces = [m["bayes_posterior_calibration"]["ece"] for m in metrics["gmm"]]
    assert format_mean_std(eces) in bayes_curve.name and bayes_curve.visible is False


def test_confidence_histogram_shares(runs):
    logits = bins_by_model(_metrics(runs))
    fig = confidence_histogram_figure(logits, log_y=False)
    bars = list(fig.data)
    assert [b.type for b in bars] == ["bar", "bar"] and fig.layout.yaxis.type == "linear"
    counts = np.array([m["calibration_bins"]["count"] for m, _ in runs["softmax"]], dtype=float)
    shares = 100 * counts / counts.sum(1, keepdims=True)
    np.testing.assert_allclose(bars[1].y, shares.mean(0))
    np.testing.assert_allclose(bars[1].error_y.array, shares.std(0, ddof=1))
    assert len(bars[1].x) == N_BINS + 1 and bars[1].x[-1] == "= 1 (saturated)"
    assert confidence_histogram_figure(logits).layout.yaxis.type == "log"


def test_table(runs):
    table = calibration_table(bins_by_model(_metrics(runs)), bins_by_model(_metrics(runs), "Bayes posterior"))
    assert list(zip(table["model"], table["probability"], table["seeds"])) == [
        ("gmm", "class logits", 3),
        ("softmax", "class logits", 3),
        ("gmm", "Bayes posterior", 3),
    ]
    eces = [e for _, (e, _) in runs["softmax"]]
    row = table.iloc[1]
    assert row["ece_mean"] == pytest.approx(np.mean(eces)) and row["ece_std"] == pytest.approx(np.std(eces, ddof=1))
    assert row["ECE (%)"] == format_mean_std(eces)
    mces = [m for _, (_, m) in runs["gmm"]]
    assert table.iloc[0]["MCE (%)"] == format_mean_std(mces)


def test_invalid_bins_name_the_culprit(runs):
    metrics = _metrics(runs)
    good = metrics["gmm"][0]["calibration_bins"]
    short = dict(good, count=good["count"][:-1])
    with pytest.raises(ValueError, match=re.escape("models['gmm'][1]['count'] has 10 entries")):
        reliability_figure({"gmm": [good, short]})
    other_edges = _bins(*_samples(0, 0.0))["bins"]
    other_edges = dict(other_edges, lower=[v / 2 for v in other_edges["lower"]])
    with pytest.raises(ValueError, match=re.escape("models['gmm'][1] has bin edges different")):
        aggregate_bins([good, other_edges], "models['gmm']")
    with pytest.raises(ValueError, match="calibration_bins"):
        reliability_figure({"gmm": [metrics["gmm"][0]]})  # the whole metrics.json
    with pytest.raises(ValueError, match="posterior_models"):
        reliability_figure({"gmm": [good]}, posterior_models={})
    with pytest.raises(ValueError, match="probability"):
        bins_by_model(metrics, "temperature-scaled")


def test_calibration_widget_controls_change_the_figure(runs):
    metrics = _metrics(runs)
    w = calibration_widget(bins_by_model(metrics), bins_by_model(metrics, "Bayes posterior"))
    assert set(w.controls) == {"models", "probability", "view"}
    names = [t.name for t in w.figure.data if t.meta and t.meta.get("role") == "curve"]
    assert len(names) == 2
    w.controls["models"].value = ("softmax",)
    assert [t.meta["model"] for t in w.figure.data if t.meta and t.meta.get("role") == "curve"] == ["softmax"]
    w.controls["models"].value = ("gmm", "softmax")
    w.controls["probability"].value = "Bayes posterior"
    curves = [t for t in w.figure.data if t.meta and t.meta.get("role") == "curve"]
    posterior_eces = [m["bayes_posterior_calibration"]["ece"] for m in metrics["gmm"]]
    assert len(curves) == 1 and format_mean_std(posterior_eces) in curves[0].name
    w.controls["view"].value = "confidence histogram"
    assert [t.type for t in w.figure.data] == ["bar"]
    w.controls["models"].value = ("softmax",)
    assert "select another model" in w.figure.layout.title.text
    assert "application/vnd.plotly.v1+json" in w.output.outputs[0]["data"]


def test_titles_name_the_probability_shown(runs):
    metrics = _metrics(runs)
    posterior = bins_by_model(metrics, "Bayes posterior")
    assert "Bayes" in reliability_figure(posterior, probability="Bayes posterior").layout.title.text
    assert "class logits" in reliability_figure(bins_by_model(metrics)).layout.title.text
    hist = confidence_histogram_figure(posterior, probability="Bayes posterior")
    assert hist.layout.title.text == "Pixels per confidence bin (Bayes posterior)"
    with pytest.raises(ValueError, match="posterior_models"):
        reliability_figure(posterior, posterior, probability="Bayes posterior")
    with pytest.raises(ValueError, match="probability"):
        confidence_histogram_figure(posterior, probability="temperature-scaled")
    # The live view's Bayes posterior was titled as the class logits' softmax.
    w = calibration_widget(bins_by_model(metrics), posterior)
    w.controls["probability"].value = "Bayes posterior"
    assert "Bayes" in w.figure.layout.title.text and "class logits" not in w.figure.layout.title.text
    w.controls["view"].value = "confidence histogram"
    assert w.figure.layout.title.text.endswith("(Bayes posterior)")


def test_bins_by_model_warns_about_seeds_without_bins(runs):
    metrics = _metrics(runs)
    mixed = {"gmm": [metrics["gmm"][0], metrics["softmax"][0], metrics["gmm"][2]]}  # seed 1 lacks the posterior
    with pytest.warns(UserWarning, match=r"'gmm' has no Bayes posterior bins in seeds \[1\]"):
        posterior = bins_by_model(mixed, "Bayes posterior")
    assert len(posterior["gmm"]) == 2


def test_aggregate_bins_checks_upper_edges_too(runs):
    good = _metrics(runs)["gmm"][0]["calibration_bins"]
    shifted = dict(good, upper=[v / 2 for v in good["upper"]])
    with pytest.raises(ValueError, match=re.escape("has bin edges different from models['gmm'][0] ('upper'")):
        aggregate_bins([good, shifted], "models['gmm']")


def test_layernorm_bound_figure_places_each_model_at_its_learned_gamma():
    import numpy as np

    from gmmseg_lab.eval.confidence_bound import layernorm_confidence_bound

    bins = {
        "lower": [0, 0.5, 1],
        "upper": [0.5, 1, 1],
        "count": [10, 30, 0],
        "confidence": [0.4, 0.7, None],
        "accuracy": [0.5, 0.9, None],
    }
    models = {
        "seg gmm": [
            dict(gamma=np.full(9, 1.5), beta=np.zeros(9), bins=bins, acc=0.9),
            dict(gamma=np.full(9, 0.5), beta=np.zeros(9), bins=bins, acc=0.8),
        ]
    }
    from gmmseg_lab.viz import calibration as vcal

    fig = vcal.layernorm_bound_figure(models, 9)
    line, bound, conf, acc = fig.data
    assert np.allclose(line.y, [layernorm_confidence_bound(9, g) for g in line.x])
    assert list(bound.x) == [1.5, 0.5]
    assert np.allclose(bound.y, [layernorm_confidence_bound(9, 1.5), layernorm_confidence_bound(9, 0.5)], atol=1e-5)
    assert list(conf.y) == [0.625, 0.625] and list(acc.y) == [0.9, 0.8]  # (10*0.4 + 30*0.7) / 40
    with pytest.raises(ValueError, match="non-empty dict"):
        vcal.layernorm_bound_figure({}, 9)
