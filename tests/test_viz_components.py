"""Component views (notebook 02): assignments, posteriors and usage checked against scipy oracles."""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import norm

from gmmseg_lab.experiments.predictions import Predictions
from gmmseg_lab.viz.common import decode_png_data_uri
from gmmseg_lab.viz.components import (
    component_assignment,
    component_balance,
    component_colours,
    component_overlay_figure,
    component_usage,
    component_usage_figure,
    component_widget,
    pixel_posterior,
    pixel_posterior_figure,
)
from gmmseg_lab.viz.style import component_palette

C, M, D, N, H, W, h, w = 3, 2, 4, 2, 8, 8, 4, 4


def oracle_component_log_prob(preds, i):
    """[C, M, h, w] from scipy's normal log-pdf, independent of Predictions.component_log_prob."""
    x = preds.embeddings[i].astype(np.float64)  # [D, h, w]
    out = np.zeros((C, M, h, w))
    for c in range(C):
        for m in range(M):
            out[c, m] = norm.logpdf(x, preds.means[c, m][:, None, None], preds.stds[c, m][:, None, None]).sum(0)
            out[c, m] += preds.log_weights[c, m]
    return out


def make_preds(seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, M, D))
    means /= np.linalg.norm(means, axis=-1, keepdims=True)
    stds = rng.uniform(0.3, 0.8, size=(C, M, D))
    log_weights = np.log(rng.dirichlet(np.ones(M), size=C))
    gt_small = rng.integers(0, C, size=(N, h, w))
    comp = rng.integers(0, M, size=(N, h, w))
    emb = means[gt_small, comp] + 0.3 * rng.normal(size=(N, h, w, D))
    gt_small[0, 0, 0] = 255  # an ignore cell
    preds = Predictions(
        names=[f"img{i}.png" for i in range(N)],
        images=rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8),
        gt=np.repeat(np.repeat(gt_small, 2, 1), 2, 2),
        pred=np.zeros((N, H, W), np.int64),
        probs=np.zeros((N, C, H, W), np.float32),
        anomaly_score=np.zeros((N, H, W), np.float32),
        classes=["road", "car", "sky"],
        palette=np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8),
        head="gmm",
        embeddings=emb.transpose(0, 3, 1, 2).astype(np.float32),
        gt_small=gt_small,
        means=means.astype(np.float32),
        stds=stds.astype(np.float32),
        log_weights=log_weights.astype(np.float32),
    )
    ll = np.stack([logsumexp(oracle_component_log_prob(preds, i), axis=1) for i in range(N)])  # [N, C, h, w]
    ll_image = np.repeat(np.repeat(ll, 2, 2), 2, 3)
    # smooth the image-resolution likelihood a little so it is not a copy of the feature grid
    ll_image = ll_image + 0.01 * rng.normal(size=ll_image.shape)
    preds.class_log_likelihood = ll_image.astype(np.float32)
    preds.pred = ll_image.argmax(1)
    preds.probs = softmax(ll_image, axis=1).astype(np.float32)
    preds.anomaly_score = (-ll_image.max(1)).astype(np.float32)
    return preds


@pytest.fixture(scope="module")
def preds():
    return make_preds()


def test_component_assignment_matches_scipy_oracle_at_both_resolutions(preds):
    for i in range(N):
        oracle = oracle_component_log_prob(preds, i)
        feature_class = logsumexp(oracle, axis=1).argmax(0)
        expected_small = np.take_along_axis(oracle.argmax(1), feature_class[None], 0)[0]
        np.testing.assert_array_equal(component_assignment(preds, i, resolution="feature"), expected_small)
        # image resolution: the class is preds.pred, the component comes from the cell row // 2, col // 2
        got = component_assignment(preds, i)
        assert got.shape == (H, W)
        for r in range(H):
            for c in range(W):
                assert got[r, c] == oracle[preds.pred[i, r, c], :, r // 2, c // 2].argmax()


def test_component_assignment_uses_preds_pred_and_class_index(preds):
    other = make_preds()
    other.pred = (preds.pred + 1) % C  # another predicted class changes which components are compared
    oracle = oracle_component_log_prob(preds, 0)
    got = component_assignment(other, 0)
    expected = np.array([[oracle[other.pred[0, r, c], :, r // 2, c // 2].argmax() for c in range(W)] for r in range(H)])
    np.testing.assert_array_equal(got, expected)
    fixed = component_assignment(preds, 0, class_index=2, resolution="feature")
    np.testing.assert_array_equal(fixed, oracle[2].argmax(0))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(index=5), "index"),
        (dict(index=0, class_index=3), "class_index"),
        (dict(index=0, resolution="full"), "resolution"),
    ],
)
def test_component_assignment_rejects_bad_input(preds, kwargs, name):
    with pytest.raises(ValueError, match=name):
        component_assignment(preds, **kwargs)


def test_softmax_head_is_refused(preds):
    softmax_preds = make_preds()
    softmax_preds.head, softmax_preds.embeddings = "softmax", None
    with pytest.raises(ValueError, match="GMM head"):
        component_assignment(softmax_preds, 0)
    with pytest.raises(ValueError, match="GMM head"):
        component_overlay_figure(softmax_preds)


def test_pixel_posterior_is_bayes_and_responsibilities(preds):
    post = pixel_posterior(preds, 1, 5, 2)
    ll = preds.class_log_likelihood[1, :, 5, 2].astype(np.float64)
    np.testing.assert_allclose(post["class_posterior"], np.exp(ll - logsumexp(ll)), rtol=1e-10)
    assert post["class_posterior"].sum() == pytest.approx(1.0)
    assert post["class_index"] == ll.argmax()
    oracle = oracle_component_log_prob(preds, 1)[post["class_index"], :, 2, 1]
    np.testing.assert_allclose(post["component_posterior"], softmax(oracle), rtol=1e-6)
    assert post["component_posterior"].sum() == pytest.approx(1.0)
    assert (post["feature_row"], post["feature_col"]) == (2, 1)
    chosen = pixel_posterior(preds, 1, 5, 2, class_index=(post["class_index"] + 1) % C)
    assert chosen["class_index"] != post["class_index"]
    assert not np.allclose(chosen["component_posterior"], post["component_posterior"])


@pytest.mark.parametrize("args, name", [((0, H, 0), "row"), ((0, 0, -1), "col"), ((2, 0, 0), "index")])
def test_pixel_posterior_rejects_out_of_range(preds, args, name):
    with pytest.raises(ValueError, match=name):
        pixel_posterior(preds, *args)


def test_component_colours_masks_other_classes(preds):
    shades = component_palette(preds.palette, M)
    rgba = component_colours(preds, 0, class_index=1, dim_others=0.5)
    comp = component_assignment(preds, 0, class_index=1)
    mine = preds.pred[0] == 1
    assert mine.any() and (~mine).any()
    np.testing.assert_array_equal(rgba[mine, :3], shades[1, comp[mine]])
    assert (rgba[mine, 3] == 255).all() and (rgba[~mine, 3] == 128).all() and (rgba[~mine, :3] == 255).all()
    every = component_colours(preds, 0)
    np.testing.assert_array_equal(every[..., :3], shades[preds.pred[0], component_assignment(preds, 0)])


def test_overlay_figure_menus_compose_and_carry_the_overlays(preds):
    fig = component_overlay_figure(preds, index=1, class_index=None, opacity=0.6, pixel=(3, 4))
    image_menu, class_menu, opacity_menu = fig.layout.updatemenus
    assert len(image_menu.buttons) == N and image_menu.active == 1
    assert len(class_menu.buttons) == C + 1 and class_menu.buttons[2].label == "class: car"
    assert [b.args[0]["opacity"] for b in opacity_menu.buttons] == [0.3, 0.6, 0.9] and opacity_menu.active == 1
    # the class menu swaps only the overlays' images, so it composes with the image menu
    sources, trace_ids = class_menu.buttons[2].args
    assert list(trace_ids) == [N, N + 1]
    np.testing.assert_array_equal(decode_png_data_uri(sources["source"][0]), component_colours(preds, 0, class_index=1))
    visible = image_menu.buttons[0].args[0]["visible"]
    assert list(visible) == [True, False] * 3 and list(image_menu.buttons[0].args[1]) == list(range(3 * N))
    assert fig.data[N + 1].opacity == 0.6 and fig.data[N + 1].visible and not fig.data[N].visible
    hover = fig.data[2 * N + 1]
    assert hover.type == "heatmap" and hover.opacity == 0 and np.asarray(hover.customdata).shape == (h, w, 5)
    assert "responsibility" in hover.hovertemplate and set(np.asarray(hover.text).ravel()) <= set(preds.classes)
    # hover sample at pixel (1, 1) of image 1: class posterior of the predicted class there
    row = np.asarray(hover.customdata)[0, 0]
    assert (row[0], row[1]) == (1, 1)
    assert row[3] == pytest.approx(pixel_posterior(preds, 1, 1, 1)["class_posterior"].max())
    assert any(t.name == "pixel (3, 4)" for t in fig.data)


def test_overlay_figure_changes_with_class_and_rejects_bad_input(preds):
    every = component_overlay_figure(preds, 0, None)
    car = component_overlay_figure(preds, 0, 1)
    assert every.data[N].source != car.data[N].source
    assert car.layout.updatemenus[1].active == 2
    for kwargs, name in [
        (dict(index=2), "index"),
        (dict(class_index=-1), "class_index"),
        (dict(opacity=1.5), "opacity"),
        (dict(pixel=(0, W)), "pixel"),
    ]:
        with pytest.raises(ValueError, match=name):
            component_overlay_figure(preds, **kwargs)


def test_component_usage_counts_gt_pixels_by_own_class_component(preds):
    usage = component_usage(preds)
    expected = np.zeros((C, M), np.int64)
    for i in range(N):
        oracle = oracle_component_log_prob(preds, i)
        for r in range(h):
            for c in range(w):
                label = preds.gt_small[i, r, c]
                if label != 255:
                    expected[label, oracle[label, :, r, c].argmax()] += 1
    np.testing.assert_array_equal(usage, expected)
    assert usage.sum() == N * h * w - 1  # the one ignore cell is left out


def test_component_balance_by_hand():
    balance = component_balance(np.array([[10, 10], [5, 0], [0, 0], [3, 1]]))
    p = np.array([0.75, 0.25])
    np.testing.assert_allclose(balance[[0, 1, 3]], [1.0, 0.0, -(p * np.log(p)).sum() / np.log(2)])
    assert np.isnan(balance[2]) and str(balance[1]) == "0.0"
    np.testing.assert_array_equal(component_balance(np.array([[4], [0]])), [1.0, np.nan])
    with pytest.raises(ValueError, match="usage"):
        component_balance(np.ones(3))


def test_usage_figure_shares_and_balance_text(preds):
    usage = np.array([[6, 2], [0, 0], [1, 1]])
    fig = component_usage_figure(usage, preds.classes, preds.palette)
    np.testing.assert_allclose(fig.data[0].x, [0.75, 0.0, 0.5])
    np.testing.assert_allclose(fig.data[1].x, [0.25, 0.0, 0.5])
    assert list(fig.data[-1].text) == [f"{component_balance(usage)[0]:.2f}  (8 px)", "no pixels", "1.00  (2 px)"]
    with pytest.raises(ValueError, match="usage"):
        component_usage_figure(usage[:2], preds.classes, preds.palette)


def test_pixel_posterior_figure_bars(preds):
    post = pixel_posterior(preds, 0, 2, 6)
    fig = pixel_posterior_figure(post, preds.classes, preds.palette, "img0.png")
    np.testing.assert_allclose(fig.data[0].y, post["class_posterior"])
    np.testing.assert_allclose(fig.data[1].y, post["component_posterior"])
    assert "row 2, col 6" in fig.layout.title.text
    with pytest.raises(ValueError, match="classes"):
        pixel_posterior_figure(post, preds.classes[:2], preds.palette)


def test_component_widget_redraws_on_control_changes(preds):
    box = component_widget(preds)
    assert set(box.controls) == {"image", "class", "opacity", "row", "col"}
    assert not box.figure.layout.updatemenus  # the widget's controls replace the static menus
    overlay = box.figure
    box.controls["class"].value = 1
    assert box.figure is not overlay and box.figure.data[1].source != overlay.data[1].source
    assert box.posterior_figure.layout.annotations[1].text.endswith("class = car)")
    before = box.posterior_figure
    box.controls["row"].value = 1
    assert "row 1," in box.posterior_figure.layout.title.text and box.posterior_figure is not before
    box.controls["opacity"].value = 0.25
    assert box.figure.data[1].opacity == 0.25
    overlay_out, posterior_out = box.children[1:]
    assert overlay_out.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"][1]["opacity"] == 0.25
    assert "row 1," in posterior_out.outputs[0]["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"]


def test_pixel_posterior_examines_the_predicted_class_by_default(preds):
    other = make_preds()
    other.pred = (preds.pred + 1) % C  # the head's prediction need not be the Bayes class
    post = pixel_posterior(other, 1, 5, 2)
    ll = other.class_log_likelihood[1, :, 5, 2]
    assert post["class_index"] == post["predicted_class"] == other.pred[1, 5, 2]
    assert post["bayes_class"] == ll.argmax() != post["class_index"]
    oracle = oracle_component_log_prob(other, 1)[post["class_index"], :, 2, 1]
    np.testing.assert_allclose(post["component_posterior"], softmax(oracle), rtol=1e-6)
    fig = pixel_posterior_figure(post, other.classes, other.palette)
    assert "predicted class" in fig.layout.xaxis.title.text
    # the overlay's hover layer names the same class at that pixel
    hover = component_overlay_figure(other, 1, hover_stride=1).data[2 * N + 1]
    assert np.asarray(hover.text)[5, 2] == other.classes[post["class_index"]]
    assert "predicted class" in hover.hovertemplate and "Bayes p(class | x)" in hover.hovertemplate


def test_hover_posterior_is_sliced_before_the_softmax(preds):
    from gmmseg_lab.viz.components import class_posterior

    rows, cols = np.array([1, 5]), np.array([0, 3, 7])
    full = class_posterior(preds, 0)
    np.testing.assert_allclose(class_posterior(preds, 0, rows, cols), full[:, rows][:, :, cols], rtol=1e-12)


def test_live_overlay_encodes_only_the_shown_overlay(preds, monkeypatch):
    import gmmseg_lab.viz.components as components

    encoded = []
    encode = components.png_data_uri
    monkeypatch.setattr(components, "png_data_uri", lambda image: encoded.append(image.shape) or encode(image))
    live = component_overlay_figure(preds, 1, 2, image_indices=[1], menus=False)
    assert encoded == [(H, W, 4), (H, W, 3)]  # the class-2 overlay and the photo, nothing else
    np.testing.assert_array_equal(decode_png_data_uri(live.data[1].source), component_colours(preds, 1, class_index=2))
    encoded.clear()
    component_overlay_figure(preds, 1, 2)  # static: every image x (all classes + each class) for the menus
    assert len(encoded) == N * (C + 1) + N
