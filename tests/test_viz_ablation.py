"""Ablation views (notebook 05): statistics against the reference variant, figures, widget."""

import math

import numpy as np
import pytest
from scipy.stats import ttest_ind

from gmmseg_lab.viz.ablation import (
    ablation_bars_figure,
    ablation_stats,
    ablation_table,
    ablation_widget,
    compare,
    convergence_figure,
    final_value,
    format_bytes,
    memory_figure,
    metric_values,
    noise_threshold,
)

NAN = float("nan")


def metrics(miou, auroc=0.8, ece=0.1):
    return {"miou": miou, "ece": ece, "anomaly": {"auroc": auroc, "ap": 0.2, "fpr95": 0.5}}


RESULTS = {
    "default": [metrics(0.60), metrics(0.62), metrics(0.61)],
    "em": [metrics(0.55, 0.70), metrics(0.56, 0.72), metrics(0.54, 0.74)],
    "m1": [metrics(0.605), metrics(0.615), metrics(0.62)],
    "stats": [metrics(0.58)],
}
LABELS = {"default": "Sinkhorn (paper)", "em": "standard EM", "m1": "M=1", "stats": "statistics memory"}


def run_curves(balance, mean_step, loglik=(1.0, 2.0, 3.0, 4.0)):
    return {
        "train": {
            "step": [10.0, 20.0, 30.0, 40.0],
            "decode.gmm_balance": list(balance),
            "decode.gmm_mean_step": list(mean_step),
            "decode.gmm_loglik": list(loglik),
        },
        "val": {"step": [40.0], "mIoU": [60.0]},
    }


CURVES = {
    "default": [
        run_curves([0.5, 0.7, 0.8, 0.9], [0.3, NAN, 0.1, NAN]),
        run_curves([0.5, 0.6, 0.9, NAN], [0.5, NAN, 0.3, NAN]),
    ],
    "em": [run_curves([0.5, 0.5, 0.4, 0.3], [0.2, NAN, 0.2, NAN])],
}


def test_noise_rule_and_welch_test_by_hand():
    assert noise_threshold(0.01, 3, 0.02, 4) == pytest.approx(2 * math.sqrt(0.01**2 / 3 + 0.02**2 / 4))
    assert math.isnan(noise_threshold(0.01, 1, 0.02, 4))
    a, ref = np.array([0.55, 0.56, 0.54]), np.array([0.60, 0.62, 0.61])
    result = compare(a, ref)
    assert result["delta"] == pytest.approx(-0.06)
    assert result["noise"] == pytest.approx(2 * math.sqrt(2 * 0.01**2 / 3))
    assert result["within_noise"] is False
    assert result["p_value"] == pytest.approx(ttest_ind(a, ref, equal_var=False).pvalue)
    close = compare(np.array([0.605, 0.615, 0.62]), ref)
    assert close["within_noise"] is True and close["p_value"] > 0.5
    one_seed = compare(np.array([0.58]), ref)
    assert one_seed["within_noise"] is None and math.isnan(one_seed["p_value"])


def test_final_value_takes_the_last_logged_value():
    np.testing.assert_allclose(final_value(CURVES["default"]), [0.9, 0.9])
    np.testing.assert_allclose(final_value(CURVES["em"], "decode.gmm_mean_step"), [0.2])
    assert np.isnan(final_value([{"train": {"step": [1.0]}}])).all()


def test_ablation_stats_and_table_strings():
    stats = ablation_stats(RESULTS, CURVES)
    em = stats[(stats.variant == "em") & (stats.metric == "mIoU")].iloc[0]
    assert em["mean"] == pytest.approx(0.55) and em["std"] == pytest.approx(0.01) and em["n"] == 3
    assert em["within_noise"] is False and em["delta"] == pytest.approx(-0.06)
    balance = stats[(stats.metric == "balance")].set_index("variant")
    assert balance.at["em", "mean"] == pytest.approx(0.3) and balance.at["m1", "n"] == 0
    table = ablation_table(RESULTS, LABELS, CURVES)
    assert table.loc["em", ("mIoU ↑", "mean ± std")] == "0.550 ± 0.010"
    assert table.loc["em", ("mIoU ↑", "Δ vs default")].startswith("−0.060 (p = ")
    assert table.loc["em", ("mIoU ↑", "Δ vs default")].endswith("beyond noise)")
    assert table.loc["m1", ("mIoU ↑", "Δ vs default")].endswith("within noise)")
    assert table.loc["stats", ("mIoU ↑", "mean ± std")] == "0.580"
    assert table.loc["stats", ("mIoU ↑", "Δ vs default")] == "−0.030 (noise unknown: one seed)"
    assert table.loc["default", ("AUROC ↑", "Δ vs default")] == "reference"
    assert table.loc["em", ("FPR95 ↓", "mean ± std")] == "0.500 ± 0.000"
    assert table.loc["default", ("final balance", "mean ± std")] == "0.900 ± 0.000"
    assert table.loc["m1", ("final balance", "mean ± std")] == "n/a"
    assert table.loc["em", ("", "description")] == "standard EM" and table.loc["em", ("", "seeds")] == 3
    narrow = ablation_table(RESULTS, metrics=("mIoU",))
    assert {c[0] for c in narrow.columns} == {"", "mIoU ↑"}


@pytest.mark.parametrize("kwargs, name", [(dict(reference="paper"), "reference"), (dict(metrics=("IoU",)), "metrics")])
def test_ablation_table_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ablation_table(RESULTS, **kwargs)
    with pytest.raises(ValueError, match="results"):
        ablation_table({"default": metrics(0.6)})


def test_metric_values_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        metric_values(RESULTS, "IoU")


def test_bars_figure_means_whiskers_seeds_and_reference_line():
    fig = ablation_bars_figure(RESULTS, LABELS, metrics=("mIoU", "AUROC"))
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 * len(RESULTS)
    np.testing.assert_allclose([b.y[0] for b in bars[:4]], [0.61, 0.55, 0.6133333, 0.58], rtol=1e-6)
    np.testing.assert_allclose([b.error_y.array[0] for b in bars[:2]], [0.01, 0.01])
    dots = [t for t in fig.data if t.type == "scatter"]
    np.testing.assert_allclose(dots[1].y, [0.55, 0.56, 0.54])
    assert bars[0].name == "default: Sinkhorn (paper)" and bars[0].showlegend and not bars[4].showlegend
    assert fig.layout.shapes[0].y0 == pytest.approx(0.61)  # the reference's mean
    assert list(fig.layout.xaxis.ticktext)[3] == "stats<br>(1 seed)"
    fewer = ablation_bars_figure(RESULTS, metrics=("mIoU",), variants=["default", "em"])
    assert sum(t.type == "bar" for t in fewer.data) == 2
    with pytest.raises(ValueError, match="variants"):
        ablation_bars_figure(RESULTS, variants=["sinkhorn"])


def test_convergence_figure_is_nan_aware_and_notes_missing_keys():
    fig = convergence_figure(
        CURVES, keys=("decode.gmm_mean_step", "decode.gmm_balance", "decode.gmm_entropy"), labels=LABELS
    )
    lines = [t for t in fig.data if t.fill is None]
    step = lines[0]  # default, gmm_mean_step: only the M-step rows
    np.testing.assert_array_equal(step.x, [10.0, 30.0])
    np.testing.assert_allclose(step.y, [0.4, 0.2])
    balance = lines[2]
    np.testing.assert_allclose(balance.y, [0.5, 0.65, 0.85, 0.9])
    assert "'decode.gmm_entropy' was not logged by these runs" in [a.text for a in fig.layout.annotations]
    assert lines[0].name == "default: Sinkhorn (paper) (2 seeds)"
    with pytest.raises(ValueError, match="curves"):
        convergence_figure({})


def test_memory_figure_units_and_log_axis():
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(512) == "512 B"
    fig = memory_figure({"default": 9 * 5 * 32000 * 64 * 4, "stats": [46440, 46440]}, LABELS)
    assert list(fig.data[0].text) == ["351.6 MiB", "45.4 KiB"] and fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="bytes_by_variant"):
        memory_figure({"default": 0})


def test_ablation_widget_metric_and_variant_controls():
    box = ablation_widget(RESULTS, LABELS, CURVES)
    assert set(box.controls) == {"metric", "variant:default", "variant:em", "variant:m1", "variant:stats"}
    assert "balance" in box.controls["metric"].options
    first = box.figure
    box.controls["metric"].value = "AUROC"
    assert box.figure is not first and box.figure.data[2].y[0] == pytest.approx(0.72)
    box.controls["variant:em"].value = False
    assert [t.name for t in box.figure.data if t.type == "bar"] == [
        "default: Sinkhorn (paper)",
        "m1: M=1",
        "stats: statistics memory",
    ]
    for name in ("variant:default", "variant:m1", "variant:stats"):
        box.controls[name].value = False
    assert box.figure.layout.annotations[0].text == "select at least one variant"


def test_runs_without_the_metric_are_counted_honestly():
    # seed 2 of "em" has no anomaly pixels: AUROC undefined (None) for it
    results = {"default": RESULTS["default"], "em": [metrics(0.55, 0.70), metrics(0.56, None), metrics(0.54, 0.74)]}
    results["em"][1]["anomaly"]["auroc"] = None
    fig = ablation_bars_figure(results, metrics=("AUROC",))
    assert list(fig.layout.xaxis.ticktext) == ["default<br>(3 seeds)", "em<br>(2 of 3 seeds)"]
    dots = [t for t in fig.data if t.type == "scatter"]
    np.testing.assert_allclose(dots[1].y, [0.70, 0.74])
    assert list(dots[1].customdata) == [1, 3] and "run %{customdata} of 3" in dots[1].hovertemplate
    bar = [t for t in fig.data if t.type == "bar"][1]
    assert "2 of 3 seeds" in bar.hovertemplate and f"Δ vs default {0.72 - 0.8:+.4f}" in bar.hovertemplate
    table = ablation_table(results, metrics=("AUROC",))
    assert table.loc["em", ("AUROC ↑", "mean ± std")] == f"0.720 ± {np.std([0.70, 0.74], ddof=1):.3f} (2 of 3 seeds)"
    assert table.loc["em", ("", "seeds")] == 3


def test_metrics_are_the_comparison_tables_columns():
    from gmmseg_lab.stats import TABLE_COLUMNS as COLUMNS
    from gmmseg_lab.viz.ablation import METRICS

    assert METRICS == COLUMNS
    assert list(ablation_widget(RESULTS).controls["metric"].options) == [label for label, _, _ in COLUMNS]
