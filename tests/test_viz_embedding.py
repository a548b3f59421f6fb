"""Embedding views (notebook 03): the stratified sample, one joint t-SNE run, the recolourable map."""

import numpy as np
import pytest
from scipy.stats import norm

from gmmseg_lab.experiments.predictions import Predictions
from gmmseg_lab.viz.embedding import COLOUR_BY, sample_pixels, tsne_embedding, tsne_figure, tsne_widget

C, M, D, N, H, W, h, w = 3, 2, 4, 2, 16, 16, 8, 8


def make_preds(seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, M, D))
    means /= np.linalg.norm(means, axis=-1, keepdims=True)
    gt_small = rng.choice(3, p=[0.6, 0.32, 0.08], size=(N, h, w))  # class 2 is rare
    gt_small[:, 0, :] = 255
    comp = rng.integers(0, M, size=(N, h, w))
    emb = means[np.minimum(gt_small, C - 1), comp] + 0.1 * rng.normal(size=(N, h, w, D))
    score = rng.normal(size=(N, H, W)).astype(np.float32)
    return Predictions(
        names=[f"img{i}.png" for i in range(N)],
        images=np.zeros((N, H, W, 3), np.uint8),
        gt=np.repeat(np.repeat(gt_small, 2, 1), 2, 2),
        pred=np.zeros((N, H, W), np.int64),
        probs=np.zeros((N, C, H, W), np.float32),
        anomaly_score=score,
        classes=["road", "car", "sky"],
        palette=np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8),
        head="gmm",
        embeddings=emb.transpose(0, 3, 1, 2).astype(np.float32),
        gt_small=gt_small,
        means=means.astype(np.float32),
        stds=np.full((C, M, D), 0.2, np.float32),
        log_weights=np.full((C, M), np.log(1 / M), np.float32),
    )


@pytest.fixture(scope="module")
def preds():
    return make_preds()


@pytest.fixture(scope="module")
def sample(preds):
    return sample_pixels(preds, n_per_class=20, seed=0)


@pytest.fixture(scope="module")
def tsne(preds, sample):
    return tsne_embedding(sample[0], preds.means, seed=0, perplexity=10)


def test_sample_is_stratified_and_reads_the_right_cells(preds, sample):
    x, info = sample
    available = np.bincount(preds.gt_small[preds.gt_small != 255], minlength=C)
    assert available[2] < 20 <= available[1]
    np.testing.assert_array_equal(np.bincount(info["label"], minlength=C), np.minimum(available, 20))
    np.testing.assert_array_equal(preds.gt_small[info["image"], info["row"], info["col"]], info["label"])
    np.testing.assert_array_equal(x, preds.embeddings[info["image"], :, info["row"], info["col"]])
    np.testing.assert_array_equal(
        info["anomaly_score"], preds.anomaly_score[info["image"], info["row"] * 2, info["col"] * 2]
    )
    assert list(info["name"][:1]) == [preds.names[info["image"][0]]]
    # component: argmax over the labelled class's Gaussians, from scipy's log-pdf
    log_pdf = np.stack([norm.logpdf(x[:, None, :], preds.means[c], preds.stds[c]).sum(-1) for c in range(C)], 1)
    expected = log_pdf[np.arange(len(x)), info["label"]].argmax(-1)
    np.testing.assert_array_equal(info["component"], expected)
    assert len(set(map(tuple, np.stack([info["image"], info["row"], info["col"]], 1)))) == len(x)  # no repeats


def test_sample_depends_on_seed_and_rejects_bad_input(preds, sample):
    again = sample_pixels(preds, n_per_class=20, seed=0)
    other = sample_pixels(preds, n_per_class=20, seed=1)
    np.testing.assert_array_equal(again[0], sample[0])
    assert not np.array_equal(other[1]["row"], sample[1]["row"])
    with pytest.raises(ValueError, match="n_per_class"):
        sample_pixels(preds, n_per_class=0)
    with pytest.raises(ValueError, match="image_indices"):
        sample_pixels(preds, image_indices=[N])


def test_tsne_places_samples_and_means_in_one_run(preds, sample, tsne):
    coords, mean_coords = tsne
    assert coords.shape == (len(sample[0]), 2) and mean_coords.shape == (C, M, 2)
    assert np.isfinite(coords).all() and np.isfinite(mean_coords).all()
    # a sample that is exactly a mean lands where that mean does: they were embedded together
    x = np.concatenate([sample[0], preds.means[1, 0][None]])
    coords2, means2 = tsne_embedding(x, preds.means, seed=0, perplexity=10)
    spread = np.ptp(coords2, axis=0).max()
    assert np.linalg.norm(coords2[-1] - means2[1, 0]) < 0.02 * spread


@pytest.mark.parametrize(
    "kwargs, name", [(dict(perplexity=500), "perplexity"), (dict(means=np.zeros((C, M, D + 1))), "means")]
)
def test_tsne_rejects_bad_input(preds, sample, kwargs, name):
    args = dict(x=sample[0], means=preds.means, perplexity=10) | kwargs
    with pytest.raises(ValueError, match=name):
        tsne_embedding(**args)


def test_tsne_figure_groups_menu_means_and_hover(preds, sample, tsne):
    (_, info), (coords, mean_coords) = sample, tsne
    fig = tsne_figure(coords, info, mean_coords, preds.classes, preds.palette, colour_by="component")
    menu = fig.layout.updatemenus[0]
    assert [b.args[0]["visible"] for b in menu.buttons][0][:3] == [True, True, True]
    assert len(menu.buttons) == len(COLOUR_BY) and menu.active == 1
    n_traces = len(fig.data)
    assert n_traces == 3 * 2 + 2  # per class for class and component colouring, one anomaly trace, the means
    visible_now = [bool(t.visible) for t in fig.data]
    assert visible_now == list(menu.buttons[1].args[0]["visible"]) and visible_now[-1]
    means = fig.data[-1]
    assert list(means.text[:2]) == ["road 0", "road 1"]
    np.testing.assert_allclose(means.x, mean_coords[..., 0].ravel())
    anomaly = fig.data[menu.buttons[2].args[0]["visible"].index(True)]
    np.testing.assert_allclose(anomaly.marker.color, info["anomaly_score"])
    road = fig.data[0]
    assert road.customdata[0][0] == info["name"][info["label"] == 0][0] and "cell (row" in road.hovertemplate
    recoloured = tsne_figure(
        coords,
        info | {"component": 1 - info["component"]},
        mean_coords,
        preds.classes,
        preds.palette,
        colour_by="component",
    )
    assert list(recoloured.data[3].marker.color) != list(fig.data[3].marker.color)


def test_tsne_figure_rejects_bad_input(preds, sample, tsne):
    (_, info), (coords, mean_coords) = sample, tsne
    with pytest.raises(ValueError, match="colour_by"):
        tsne_figure(coords, info, mean_coords, preds.classes, preds.palette, colour_by="score")
    with pytest.raises(ValueError, match="coords"):
        tsne_figure(coords[:, :1], info, mean_coords, preds.classes, preds.palette)
    with pytest.raises(ValueError, match="mean_coords"):
        tsne_figure(coords, info, mean_coords[:2], preds.classes, preds.palette)
    with pytest.raises(ValueError, match="info"):
        tsne_figure(coords[:-1], info, mean_coords, preds.classes, preds.palette)


def test_tsne_widget_recolours_and_recomputes(preds):
    box = tsne_widget(preds, n_per_class=12, perplexity=8)
    first = box.figure
    box.controls["colour_by"].value = "anomaly"
    assert box.figure is not first
    assert [bool(t.visible) for t in box.figure.data] != [bool(t.visible) for t in first.data]
    box.controls["perplexity"].value = 4
    assert "perplexity 4" in box.figure.layout.title.text
    assert not np.allclose(box.figure.data[-1].x, first.data[-1].x)  # a new t-SNE run moved the means


def test_sample_names_the_bayes_class_and_hover_says_so(preds, sample, tsne):
    x, info = sample
    assert "pred" not in info  # not preds.pred: the mixture's own class on the embedding grid
    log_pdf = np.stack([norm.logpdf(x[:, None, :], preds.means[c], preds.stds[c]).sum(-1) for c in range(C)], 1)
    log_lik = np.log(np.exp(log_pdf + preds.log_weights[None]).sum(-1))  # [n, C] log p(x|c)
    np.testing.assert_array_equal(info["bayes_class"], log_lik.argmax(1))
    fig = tsne_figure(tsne[0], info, tsne[1], preds.classes, preds.palette)
    assert "Bayes class" in fig.data[0].hovertemplate and "predicted" not in fig.data[0].hovertemplate
