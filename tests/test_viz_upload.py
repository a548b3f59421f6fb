"""Views of unlabeled pictures and the upload control (gmmseg_lab.viz.explore): build, drive, check the figures."""

import datetime
import io

import numpy as np
import pytest
from PIL import Image

from gmmseg_lab.experiments.predictions import Predictions
from gmmseg_lab.viz.common import decode_png_data_uri
from gmmseg_lab.viz.explore import (
    SCORE_NAMES,
    anomaly_maps_figure,
    decode_upload,
    segmentation_figure,
    upload_widget,
)

C, M, D = 3, 2, 4
CLASSES = ["road", "car", "sky"]
PALETTE = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8)


def fake_predictions(name: str, rgb: np.ndarray, head: str = "gmm") -> Predictions:
    """Predictions a model could give on ``rgb``: class from the brightness, scores from the red channel
    (so a test can tell which picture and which score a figure shows)."""
    height, width = rgb.shape[:2]
    h, w = height // 4, width // 4
    grey = rgb.mean(-1)
    pred = np.minimum((grey / 86).astype(np.int64), C - 1)
    red = rgb[..., 0].astype(np.float32)
    maps = {"max_softmax": red / 255, "max_logit": -red, "energy": red + 1.0}
    if head == "gmm":
        maps.update(neg_max_log_likelihood=2 * red, neg_logsumexp_log_likelihood=2 * red - 1)
    rng = np.random.default_rng(0)
    means = rng.normal(size=(C, M, D)).astype(np.float32)
    preds = Predictions(
        names=[name],
        images=rgb[None],
        gt=np.full((1, height, width), 255, np.int64),
        pred=pred[None],
        probs=np.full((1, C, height, width), 1 / C, np.float32),
        anomaly_score=maps["neg_max_log_likelihood" if head == "gmm" else "max_softmax"][None],
        classes=CLASSES,
        palette=PALETTE,
        head=head,
        split="images",
        labeled=False,
        score_maps={k: v[None].astype(np.float32) for k, v in maps.items()},
    )
    if head == "gmm":
        preds.embeddings = rng.normal(size=(1, D, h, w)).astype(np.float32)
        preds.gt_small = np.full((1, h, w), 255, np.int64)
        preds.class_log_likelihood = rng.normal(size=(1, C, height, width)).astype(np.float32)
        preds.means, preds.stds = means, np.full((C, M, D), 0.5, np.float32)
        preds.log_weights = np.full((C, M), np.log(1 / M), np.float32)
    else:
        preds.features = rng.normal(size=(1, 8, h, w)).astype(np.float32)
    return preds


class FakeScorer:
    """What upload_widget needs of an ImageScorer: ``head`` and ``predict``; counts its calls."""

    def __init__(self, head: str):
        self.head = head
        self.calls: list[tuple[str, np.ndarray, int]] = []

    def predict(self, images, max_images=None, max_side=384):
        ((name, rgb),) = images.items()
        self.calls.append((name, rgb, max_side))
        return fake_predictions(name, rgb, self.head)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def upload_value(name: str, data: bytes) -> tuple:
    """ipywidgets 8's FileUpload.value for one file."""
    return (
        {
            "name": name,
            "type": "image/png",
            "size": len(data),
            "content": memoryview(data),
            "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
        },
    )


def picture(seed: int, shape=(24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def image_sources(fig) -> list[np.ndarray]:
    return [decode_png_data_uri(t.source) for t in fig.data if t.type == "image" and t.source]


def test_segmentation_figure_blends_each_models_classes_over_the_image():
    rgb = picture(0)
    preds = {"gmm": fake_predictions("a.png", rgb), "softmax": fake_predictions("a.png", rgb, "softmax")}
    fig = segmentation_figure(preds, opacity=1.0)
    shown = image_sources(fig)
    assert len(shown) == 3
    np.testing.assert_array_equal(shown[0], rgb)
    np.testing.assert_array_equal(shown[1], PALETTE[preds["gmm"].pred[0]])  # opacity 1: the class colours
    assert "no labels" in fig.layout.title.text and "ground truth" not in str(fig.layout.annotations)
    assert [t.name for t in fig.data if t.type == "scatter"] == CLASSES  # the legend names the classes
    with pytest.raises(ValueError, match="opacity"):
        segmentation_figure(preds, opacity=1.5)
    with pytest.raises(ValueError, match="other images"):
        segmentation_figure({"a": preds["gmm"], "b": fake_predictions("b.png", picture(1))})


def test_anomaly_maps_figure_shows_every_score_in_order():
    preds = fake_predictions("a.png", picture(0))
    fig = anomaly_maps_figure(preds, max_side=64)
    shown = [t.meta["score"] for t in fig.data if t.type == "heatmap"]
    assert shown == [k for k in SCORE_NAMES if k in preds.score_maps]
    np.testing.assert_allclose(fig.data[0].z, preds.score_maps["neg_max_log_likelihood"][0])
    with pytest.raises(ValueError, match="scores must name"):
        anomaly_maps_figure(preds, scores=["nope"])
    with pytest.raises(ValueError, match="index"):
        anomaly_maps_figure(preds, index=3)


def test_decode_upload_reads_both_ipywidgets_formats_and_names_a_bad_file():
    rgb = picture(2)
    data = png_bytes(rgb)
    name, decoded, digest = decode_upload(upload_value("cat.png", data))
    assert name == "cat.png" and len(digest) == 64
    np.testing.assert_array_equal(decoded, rgb)
    np.testing.assert_array_equal(decode_upload({"cat.png": {"metadata": {}, "content": data}})[1], rgb)
    assert decode_upload(()) is None
    with pytest.raises(ValueError, match="notes.txt"):
        decode_upload(upload_value("notes.txt", b"not an image"))


def test_upload_widget_scores_a_dropped_picture_once_and_redraws():
    gmm, softmax = FakeScorer("gmm"), FakeScorer("softmax")
    box = upload_widget({"GMMSeg": gmm, "softmax": softmax}, max_side=200)
    assert box.predictions is None and box.error is None
    assert "drop a picture" in box.figure.layout.title.text and not gmm.calls

    rgb = picture(3)
    box.controls["upload"].value = upload_value("street.png", png_bytes(rgb))
    assert len(gmm.calls) == 1 and len(softmax.calls) == 1  # three figures, one prediction per model
    name, given, max_side = gmm.calls[0]
    assert name == "street.png" and max_side == 200
    np.testing.assert_array_equal(given, rgb)
    assert set(box.predictions) == {"GMMSeg", "softmax"}
    # segmentation: the picture, then each model's classes
    shown = image_sources(box.figure)
    np.testing.assert_array_equal(shown[0], rgb)
    assert len(shown) == 3 and "street.png" in box.figure.layout.title.text
    # components of the GMM model: the photo and its component overlay
    assert "component" in box.components_figure.layout.title.text
    assert len(image_sources(box.components_figure)) == 2
    # anomaly map: the GMM's first score, no ground-truth outline
    heat = [t for t in box.anomaly_figure.data if t.type == "heatmap"][0]
    np.testing.assert_allclose(heat.z, 2 * rgb[..., 0].astype(np.float64))
    assert not [t for t in box.anomaly_figure.data if (t.meta or {}).get("role") == "outline"]
    assert "no labels" in box.anomaly_figure.layout.title.text

    box.controls["score"].value = "energy"
    heat = [t for t in box.anomaly_figure.data if t.type == "heatmap"][0]
    np.testing.assert_allclose(heat.z, rgb[..., 0].astype(np.float64) + 1.0)
    assert len(gmm.calls) == 1  # the same picture is not scored again

    box.controls["score"].value = "neg_max_log_likelihood"
    box.controls["model"].value = "softmax"  # no density score: the menu follows the model
    options = [v for _, v in box.controls["score"].options]
    assert "neg_max_log_likelihood" not in options and box.controls["score"].value == options[0]
    heat = [t for t in box.anomaly_figure.data if t.type == "heatmap"][0]
    np.testing.assert_allclose(heat.z, preds_score(rgb, options[0]))
    assert box.anomaly_figure.layout.title.text.startswith("softmax:")

    before = box.figure
    box.controls["opacity"].value = 0.2
    assert box.figure is not before

    other = picture(4)
    box.controls["upload"].value = upload_value("other.png", png_bytes(other))
    assert len(gmm.calls) == 2
    np.testing.assert_array_equal(image_sources(box.figure)[0], other)

    box.controls["upload"].value = upload_value("notes.txt", b"no picture here")
    assert box.error is not None and "notes.txt" in box.error and box.predictions is None
    assert "could not be scored" in box.figure.layout.title.text
    assert "notes.txt" in str(box.figure.layout.annotations[0].text)


def preds_score(rgb, name):
    return fake_predictions("x.png", rgb, "softmax").score_maps[name][0].astype(np.float64)


def test_upload_widget_without_a_gmm_model_says_so_and_rejects_bad_scorers():
    box = upload_widget(FakeScorer("softmax"))
    box.controls["upload"].value = upload_value("a.png", png_bytes(picture(5)))
    assert "no GMM model" in box.components_figure.layout.title.text
    assert list(box.controls["model"].options) == ["softmax"]
    with pytest.raises(ValueError, match="scorer"):
        upload_widget({})
    with pytest.raises(ValueError, match="scorer"):
        upload_widget({"x": object()})
