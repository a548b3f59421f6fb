"""Training / comparison views (notebook 01): seed bands, the metrics table, predictions figures."""

import math

import numpy as np
import pytest

from gmmseg_lab.experiments.predictions import Predictions
from gmmseg_lab.viz.common import decode_png_data_uri
from gmmseg_lab.viz.style import colourise
from gmmseg_lab.viz.training import (
    learning_curves_figure,
    metrics_table,
    per_class_iou_figure,
    pixel_accuracy,
    predictions_figure,
    predictions_widget,
    seed_band,
    style_metrics_table,
)

NAN = float("nan")


def curves(loss, mean_step=None, miou=(50.0, 60.0), steps=(10.0, 20.0, 30.0)):
    train = {"step": list(steps), "loss": list(loss)}
    if mean_step is not None:
        train["decode.gmm_mean_step"] = list(mean_step)
    return {"train": train, "val": {"step": [15.0, 30.0], "mIoU": list(miou)}}


def test_seed_band_minmax_and_std_by_hand():
    runs = [curves([3.0, 2.0, 1.0]), curves([5.0, 2.0, 3.0]), curves([4.0, 5.0, 2.0])]
    band = seed_band(runs, "loss")
    np.testing.assert_array_equal(band["step"], [10, 20, 30])
    np.testing.assert_allclose(band["mean"], [4.0, 3.0, 2.0])
    np.testing.assert_allclose(band["low"], [3.0, 2.0, 1.0])
    np.testing.assert_allclose(band["high"], [5.0, 5.0, 3.0])
    std = seed_band(runs, "loss", band="std")
    np.testing.assert_allclose(std["high"] - std["mean"], [1.0, math.sqrt(3.0), 1.0])
    with pytest.raises(ValueError, match="band"):
        seed_band(runs, "loss", band="iqr")


def test_seed_band_skips_nan_rows_and_joins_steps():
    # gmm_mean_step is logged on M-step rows only, and the seeds need not share their M-step rows
    runs = [curves([1, 1, 1], mean_step=[0.4, NAN, 0.2]), curves([1, 1, 1], mean_step=[NAN, 0.3, 0.1])]
    band = seed_band(runs, "decode.gmm_mean_step")
    np.testing.assert_array_equal(band["step"], [10, 20, 30])
    np.testing.assert_allclose(band["mean"], [0.4, 0.3, 0.15])
    np.testing.assert_array_equal(band["count"], [1, 1, 2])
    assert len(seed_band(runs, "decode.gmm_loglik")["step"]) == 0


def test_learning_curves_figure_lines_bands_and_missing_key_note():
    by_model = {
        "GMMSeg": [curves([3, 2, 1], miou=(50, 60)), curves([5, 2, 3], miou=(60, 62))],
        "softmax": [curves([1, 1, 1])],
    }
    fig = learning_curves_figure(by_model, keys=("loss", "decode.gmm_loglik"))
    lines = [t for t in fig.data if t.fill is None]
    assert [t.name for t in lines] == ["GMMSeg (2 seeds)", "softmax (1 seed)", "GMMSeg (2 seeds)", "softmax (1 seed)"]
    np.testing.assert_allclose(lines[0].y, [4.0, 2.0, 2.0])
    np.testing.assert_allclose(lines[2].y, [55.0, 61.0])  # the validation mIoU panel
    assert sum(t.showlegend is not False for t in fig.data) == 2  # one legend entry per model
    notes = [a.text for a in fig.layout.annotations]
    assert "'decode.gmm_loglik' was not logged by these runs" in notes
    changed = learning_curves_figure({"GMMSeg": [curves([3, 2, 9]), curves([5, 2, 3])]})
    np.testing.assert_allclose(changed.data[1].y, [4.0, 2.0, 6.0])


@pytest.mark.parametrize("bad", [{}, {"GMMSeg": curves([1, 2, 3])}, {"GMMSeg": []}])
def test_learning_curves_figure_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="curves_by_model"):
        learning_curves_figure(bad)


AGGREGATE = {
    "segformer": {
        "gmm": {
            "mIoU": {"mean": 0.5528, "std": 0.0043, "n": 3, "values": []},
            "ECE": {"mean": 0.258, "std": 0.0038, "n": 3, "values": []},
        },
        "softmax": {
            "mIoU": {"mean": 0.5856, "std": 0.0020, "n": 3, "values": []},
            "ECE": {"mean": 0.0069, "std": 0.0008, "n": 3, "values": []},
        },
    },
    "deeplabv3plus": {
        "gmm": {"mIoU": {"mean": 0.6226, "std": 0.0101, "n": 1, "values": []}},
        "softmax": {"mIoU": {"mean": 0.5758, "std": 0.0160, "n": 1, "values": []}},
    },
}


def test_metrics_table_strings_and_better_head():
    table, better = metrics_table(AGGREGATE)
    assert table.loc[("segformer", "gmm"), "mIoU ↑"] == "0.553 ± 0.004"
    assert table.loc[("segformer", "softmax"), "ECE ↓"] == "0.007 ± 0.001"
    assert table.loc[("deeplabv3plus", "gmm"), "mIoU ↑"] == "0.623"  # one seed: no spread shown
    assert table.loc[("deeplabv3plus", "gmm"), "ECE ↓"] == "n/a"
    assert table.loc[("segformer", "gmm"), "seeds"] == "3"
    assert better.loc[("segformer", "softmax"), "mIoU ↑"] and not better.loc[("segformer", "gmm"), "mIoU ↑"]
    assert better.loc[("segformer", "softmax"), "ECE ↓"]  # lower is better
    assert better.loc[("deeplabv3plus", "gmm"), "mIoU ↑"]
    assert not better["ECE ↓"].loc["deeplabv3plus"].any()  # nobody to compare with
    same, _ = metrics_table({"aggregate": AGGREGATE})  # the whole summary.json is accepted
    assert same.equals(table)
    html = style_metrics_table(table, better).to_html()
    assert html.count("font-weight: bold") >= 1 and "0.586 ± 0.002" in html


@pytest.mark.parametrize("bad", [{}, {"segformer": [1, 2]}])
def test_metrics_table_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="summary_aggregate"):
        metrics_table(bad)


def test_per_class_iou_figure_means_and_error_bars():
    runs = [{"per_class_iou": {"road": 0.9, "car": 0.5}}, {"per_class_iou": {"road": 0.8, "car": 0.7}}]
    fig = per_class_iou_figure({"GMMSeg": runs, "softmax": {"per_class_iou": {"road": 0.95, "car": 0.1}}})
    assert list(fig.data[0].x) == ["road", "car"]
    np.testing.assert_allclose(fig.data[0].y, [0.85, 0.6])
    np.testing.assert_allclose(fig.data[0].error_y.array, [np.std([0.9, 0.8], ddof=1), np.std([0.5, 0.7], ddof=1)])
    assert fig.data[1].error_y.visible is False and fig.data[1].name == "softmax (1 seed)"
    with pytest.raises(ValueError, match="per_class_iou"):
        per_class_iou_figure({"x": [{"miou": 0.5}]})


def make_preds(seed, n=3, size=6, classes=3):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, classes, size=(n, size, size))
    gt[:, 0, 0] = 255
    noise = rng.integers(0, classes, (n, size, size))
    pred = np.where(rng.random((n, size, size)) < 0.7, np.clip(gt, 0, classes - 1), noise)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Predictions(
        names=[f"v{i}.png" for i in range(n)],
        images=images,
        gt=gt,
        pred=pred,
        probs=np.zeros((n, classes, size, size), np.float32),
        anomaly_score=np.zeros((n, size, size), np.float32),
        classes=["road", "car", "sky"],
        palette=np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8),
        head="softmax",
    )


def test_predictions_figure_panels_dropdown_and_legend():
    a, b = make_preds(0), make_preds(1)
    b.names, b.images, b.gt = a.names, a.images, a.gt
    fig = predictions_figure({"GMMSeg": a, "softmax": b}, max_images=2)
    images = [t for t in fig.data if t.type == "image"]
    assert len(images) == 2 * 4  # 2 images x (image, GT, 2 models)
    np.testing.assert_array_equal(decode_png_data_uri(images[0].source), a.images[0])
    np.testing.assert_array_equal(decode_png_data_uri(images[1].source), colourise(a.gt[0], a.palette))
    np.testing.assert_array_equal(decode_png_data_uri(images[7].source), colourise(b.pred[1], a.palette))
    menu = fig.layout.updatemenus[0]
    assert [btn.label for btn in menu.buttons] == ["image: v0.png (#0)", "image: v1.png (#1)"]
    restyle, relayout = menu.buttons[1].args
    visible = list(restyle["visible"])
    assert visible[:8] == [False] * 4 + [True] * 4 and all(visible[8:])
    assert relayout["annotations[3].text"] == f"softmax: pixel acc {pixel_accuracy(b.pred[1], a.gt[1]):.3f}"
    legend = [t.name for t in fig.data if t.type == "scatter"]
    assert legend == ["road", "car", "sky", "ignore (GT 255)"]


def test_predictions_figure_follows_its_input_and_rejects_mismatch():
    a = make_preds(0)
    first = predictions_figure({"m": a}, image_indices=[1])
    a.pred[1] = (a.pred[1] + 1) % 3
    second = predictions_figure({"m": a}, image_indices=[1])
    assert first.data[2].source != second.data[2].source and not second.layout.updatemenus
    with pytest.raises(ValueError, match="image_indices"):
        predictions_figure({"m": a}, image_indices=[3])
    with pytest.raises(ValueError, match="preds_by_model"):
        predictions_figure({"m": a, "other": make_preds(1, n=2)})


def test_pixel_accuracy_ignores_void():
    gt = np.array([[0, 1], [255, 1]])
    assert pixel_accuracy(np.array([[0, 0], [1, 1]]), gt) == pytest.approx(2 / 3)
    assert math.isnan(pixel_accuracy(gt, np.full((2, 2), 255)))


def test_predictions_widget_slider_and_toggles():
    a, b = make_preds(0), make_preds(1)
    b.names, b.images, b.gt = a.names, a.images, a.gt
    box = predictions_widget({"GMMSeg": a, "softmax": b})
    assert set(box.controls) == {"image", "model:GMMSeg", "model:softmax"}
    first = box.figure
    box.controls["image"].value = 2
    assert box.figure is not first and "v2.png" in box.figure.layout.title.text
    shown = box.children[1].outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert "v2.png" in shown["layout"]["title"]["text"]  # the Output shows the new figure
    box.controls["model:softmax"].value = False
    assert sum(t.type == "image" for t in box.figure.data) == 3
    box.controls["model:GMMSeg"].value = False
    assert sum(t.type == "image" for t in box.figure.data) == 2 and "no model" in box.figure.layout.title.text


def test_band_hover_names_the_band_kind():
    runs = [curves([3.0, 2.0, 1.0]), curves([5.0, 2.0, 3.0])]
    minmax = learning_curves_figure({"GMMSeg": runs}).data[1].hovertemplate
    std = learning_curves_figure({"GMMSeg": runs}, band="std").data[1].hovertemplate
    assert "min – max" in minmax and "± sample std" not in minmax
    assert "mean ± sample std" in std and "min – max" not in std


def test_a_model_keeps_its_colour_across_notebooks():
    from gmmseg_lab.viz.ablation import ablation_bars_figure
    from gmmseg_lab.viz.anomaly import curves_figure
    from gmmseg_lab.viz.calibration import reliability_figure
    from gmmseg_lab.viz.style import model_colours

    expected = model_colours(["gmm", "softmax"])["softmax"]
    lines = learning_curves_figure({"gmm": [curves([1, 2, 3])], "softmax": [curves([1, 2, 3])]}).data
    assert lines[3].line.color == expected  # 01: learning curves (band, line per model)
    bars = per_class_iou_figure({"gmm": {"per_class_iou": {"road": 0.5}}, "softmax": {"per_class_iou": {"road": 0.4}}})
    assert bars.data[1].marker.color == expected
    bins = {"lower": [0.0, 0.5], "upper": [0.5, 1.0], "count": [1, 1], "confidence": [0.4, 0.9], "accuracy": [0.5, 1.0]}
    reliability = reliability_figure({"gmm": [bins], "softmax": [bins]})  # 04
    assert [t.line.color for t in reliability.data if t.meta and t.meta.get("role") == "curve"][1] == expected
    curve = {"fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1], "precision": [1, 0.6, 0.5], "recall": [0, 0.9, 1]}
    roc = [
        t for t in curves_figure({"gmm": [curve], "softmax": [curve]}).data if t.meta and t.meta.get("panel") == "roc"
    ]
    assert roc[1].line.color == expected  # 06
    results = {"gmm": [{"miou": 0.5}], "softmax": [{"miou": 0.4}]}
    ablation = ablation_bars_figure(results, metrics=("mIoU",), reference="gmm")
    assert [t for t in ablation.data if t.type == "bar"][1].marker.color == expected  # 05
