"""Notebook 00's figures: softmax against GMM on 2-D toy data, density contours, EM iterations."""

import numpy as np
import pytest
import torch

from gmmseg_lab.data.toy import make_toy_data
from gmmseg_lab.experiments.toy import fit_iterations, fit_softmax_classifier, fit_toy_classifier
from gmmseg_lab.gmm import fit_gmm
from gmmseg_lab.gmm.open_set import gmm_open_set_confidence
from gmmseg_lab.viz.toy import (
    TOY_PALETTE,
    decision_regions_figure,
    density_contours_figure,
    ellipse_xy,
    grid_points,
    iterations_figure,
    snapshot_figure,
    toy_widget,
)


@pytest.fixture(scope="module")
def toy(single_thread_torch):
    data = make_toy_data(n_per_mode=60, seed=0)
    gmm, history = fit_toy_classifier(data, num_components=3, steps=40, seed=0)
    assert history[-1] > 0.95
    mlp, mlp_history = fit_softmax_classifier(data, hidden=32, steps=150, seed=0)
    return data, gmm, mlp, mlp_history


def _traces(fig, **meta):
    return [t for t in fig.data if t.meta and all(t.meta.get(k) == v for k, v in meta.items())]


def test_softmax_classifier_is_deterministic_and_leaves_global_rng_alone(toy):
    data, _, _, history = toy
    assert history[-1] > 0.9
    state = torch.get_rng_state()
    first, _ = fit_softmax_classifier(data, hidden=16, steps=20, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    x = torch.tensor([[0.3, -1.2], [5.0, 5.0]])
    with torch.no_grad():  # also trains when called under no_grad
        again, _ = fit_softmax_classifier(data, hidden=16, steps=20, seed=0)
        other, _ = fit_softmax_classifier(data, hidden=16, steps=20, seed=1)
        torch.testing.assert_close(first(x), again(x), rtol=0, atol=0)
        assert not torch.allclose(other(x), first(x))
    # A linear softmax cannot separate interleaved modes on a circle.
    linear, linear_history = fit_softmax_classifier(data, hidden=0, steps=100, seed=0)
    assert isinstance(linear, torch.nn.Linear) and linear_history[-1] < 0.6
    with pytest.raises(ValueError, match="hidden"):
        fit_softmax_classifier(data, hidden=-1)


def test_open_set_confidence_is_posterior_near_data_and_vanishes_far_away():
    ll = torch.tensor([[-1.0, -3.0, -2.0], [-50.0, -52.0, -60.0], [-2.0, -2.0, -2.0]], dtype=torch.float64)
    background = -10.0
    conf, pred = gmm_open_set_confidence(ll, background)
    expected = np.exp(ll.numpy().max(1)) / (np.exp(ll.numpy()).sum(1) + np.exp(background))
    np.testing.assert_allclose(conf.numpy(), expected, rtol=1e-12)
    assert pred.tolist() == [0, 0, 0]
    posterior = torch.softmax(ll[0], 0).max()
    assert abs(float(conf[0]) - float(posterior)) < 1e-3  # background negligible on the data
    assert float(conf[1]) < 1e-15  # far below the background level


def test_grid_points_layout_and_extent_errors():
    xs, ys, points = grid_points((-1, 1, 0, 4), 3)
    np.testing.assert_allclose(xs, [-1, 0, 1])
    np.testing.assert_allclose(points[3 * 1 + 2], [xs[2], ys[1]])  # row i, column j -> (xs[j], ys[i])
    with pytest.raises(ValueError, match="extent"):
        grid_points((1, -1, 0, 4), 3)
    with pytest.raises(ValueError, match="resolution"):
        grid_points((-1, 1, 0, 4), 1)


def test_decision_regions_softmax_stays_confident_where_gmm_fades(toy):
    data, gmm, mlp, _ = toy
    fig = decision_regions_figure(data, gmm, mlp, extent=(-12, 12, -12, 12), resolution=41)
    soft, gen = [t for t in fig.data if t.type == "heatmap"]
    z_soft, z_gen = np.asarray(soft.z), np.asarray(gen.z)
    assert z_soft.shape == z_gen.shape == (41, 41)
    conf_soft, conf_gen = z_soft - np.floor(z_soft), z_gen - np.floor(z_gen)
    corner = (0, 0)  # (-12, -12): far from every point
    assert conf_soft[corner] > 0.9 and conf_gen[corner] < 0.01
    # On a mode centre the GMM is confident and predicts the mode's class.
    centre = data.centres[1, 0].numpy()
    j = int(np.argmin(np.abs(np.asarray(gen.x) - centre[0])))
    i = int(np.argmin(np.abs(np.asarray(gen.y) - centre[1])))
    assert int(np.floor(z_gen[i, j])) == 1 and conf_gen[i, j] > 0.5
    custom = np.asarray(gen.customdata)
    np.testing.assert_allclose(custom[..., 0], np.floor(z_gen))  # hover shows the same class
    assert np.all(custom[..., 2] < 0) and custom[corner + (2,)] < custom[i, j, 2]
    points = [t for t in fig.data if t.type == "scatter" and t.legendgroup == "class 0"]
    assert len(points) == 2 and len(points[0].x) == int((data.labels == 0).sum())
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text and fig.layout.title.text
    # Another extent gives another grid.
    narrow = decision_regions_figure(data, gmm, mlp, extent=(-4, 4, -4, 4), resolution=41)
    assert np.asarray(narrow.data[0].x)[0] == -4 and np.asarray(soft.x)[0] == -12


def test_figures_reject_data_that_is_not_2d(toy):
    _, gmm, mlp, _ = toy
    data3 = make_toy_data(n_per_mode=5, dim=3, seed=0)
    with pytest.raises(ValueError, match=r"data\.x must be \[N, 2\]"):
        decision_regions_figure(data3, gmm, mlp)
    with pytest.raises(ValueError, match="enclosed"):
        density_contours_figure(make_toy_data(n_per_mode=20, seed=0), gmm, enclosed=(1.5,))


def test_density_contours_levels_enclose_the_stated_share(toy):
    data, gmm, _, _ = toy
    fig = density_contours_figure(data, gmm, resolution=120)
    with torch.no_grad():
        train_ll = gmm.class_log_likelihood(data.x).double().numpy()
    labels = data.labels.numpy()
    for c in range(3):
        contours = _traces(fig, **{"class": c, "role": "contour"})
        assert [t.meta["enclosed"] for t in contours] == [0.5, 0.9]
        for trace in contours:
            own = train_ll[labels == c, c]
            expected = np.quantile(own, 1 - trace.meta["enclosed"])
            assert trace.meta["level"] == pytest.approx(expected)
            assert np.mean(own >= trace.meta["level"]) == pytest.approx(trace.meta["enclosed"], abs=0.01)
            # The drawn line lies on that level set (up to the grid's interpolation).
            pts = np.array([(x, y) for x, y in zip(trace.x, trace.y) if x is not None][::7], dtype=np.float32)
            with torch.no_grad():
                on_line = gmm.class_log_likelihood(torch.from_numpy(pts))[:, c].numpy()
            assert np.abs(on_line - trace.meta["level"]).max() < 0.25
        means = _traces(fig, **{"class": c, "role": "means"})[0]
        np.testing.assert_allclose(means.x, gmm.means[c, :, 0].numpy(), rtol=1e-6)
        assert len(set(means.marker.color)) == gmm.num_components  # one shade per component


def test_ellipse_is_one_sigma_and_axis_aligned():
    x, y = ellipse_xy([1.0, -2.0], [0.5, 2.0], num_points=9)
    np.testing.assert_allclose(((x - 1.0) / 0.5) ** 2 + ((y + 2.0) / 2.0) ** 2, 1.0)
    assert (x[0], y[0]) == pytest.approx((x[-1], y[-1]))
    with pytest.raises(ValueError, match="shape"):
        ellipse_xy([0, 0, 0], [1, 1, 1])


def test_fit_iterations_equals_one_fit_gmm_call_and_em_never_decreases(toy):
    data = toy[0]
    em = fit_iterations(data, class_index=1, num_components=3, e_step="em", n_iters=8, seed=3)
    sk = fit_iterations(data, class_index=1, num_components=3, e_step="sinkhorn", n_iters=8, seed=3)
    assert em.means.shape == (9, 3, 2) and em.responsibilities.shape == (9, len(em.x), 3)
    np.testing.assert_array_equal(em.means[0], sk.means[0])  # shared start
    assert not np.array_equal(em.means[0], fit_iterations(data, 1, 3, "em", 0, seed=4).means[0])
    x = data.x[data.labels == 1].double()
    weights, means, stds = fit_gmm(
        x, torch.from_numpy(em.means[0]), torch.from_numpy(em.stds[0]), n_iters=8, e_step="em"
    )
    np.testing.assert_allclose(em.means[-1], means.numpy(), atol=1e-10)
    np.testing.assert_allclose(em.weights[-1], weights.numpy(), atol=1e-10)
    assert np.all(np.diff(em.log_likelihood) > -1e-9)  # EM's monotone likelihood
    np.testing.assert_allclose(em.responsibilities.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(em.masses.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(sk.weights, 1 / 3)  # Sinkhorn EM keeps uniform weights
    with pytest.raises(ValueError, match="class_index"):
        fit_iterations(data, class_index=3)
    with pytest.raises(ValueError, match="e_step"):
        fit_iterations(data, e_step="kmeans")


def test_iterations_figure_slider_moves_means_and_title(toy):
    data = toy[0]
    em = fit_iterations(data, 0, 3, "em", n_iters=6, seed=0)
    sk = fit_iterations(data, 0, 3, "sinkhorn", n_iters=6, seed=0)
    fig = iterations_figure(em, sk)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == 7 and all(s.method == "update" for s in steps)
    means = [i for i, t in enumerate(fig.data) if t.meta and t.meta.get("role") == "means"]
    assert len(means) == 2
    np.testing.assert_allclose(fig.data[means[0]].x, em.means[0, :, 0])
    # Apply the last step as plotly.js would; plotly.py validates every attribute on the way.
    last = steps[-1]
    fig.plotly_update(restyle_data=last.args[0], relayout_data=last.args[1], trace_indexes=last.args[2])
    np.testing.assert_allclose(fig.data[means[0]].x, em.means[-1, :, 0], atol=1e-3)
    np.testing.assert_allclose(fig.data[means[1]].y, sk.means[-1, :, 1], atol=1e-3)
    assert f"{em.log_likelihood[-1]:.3f}" in fig.layout.title.text and "iteration 6 of 6" in fig.layout.title.text
    points = fig.data[next(i for i, t in enumerate(fig.data) if t.meta and t.meta.get("role") == "points")]
    colours = np.asarray(points.marker.color)
    assert len(set(colours)) > 1  # coloured by responsibility
    ll = [t for t in fig.data if t.meta and t.meta.get("role") == "log-likelihood"]
    np.testing.assert_allclose(ll[1].y, sk.log_likelihood)
    other = fit_iterations(data, 0, 2, "sinkhorn", n_iters=6, seed=0)
    with pytest.raises(ValueError, match="snapshots_sinkhorn"):
        iterations_figure(em, other)
    with pytest.raises(ValueError, match="snapshots_em"):
        iterations_figure(sk, sk)


def test_snapshot_figure_checks_iteration(toy):
    snap = fit_iterations(toy[0], 2, 2, "em", n_iters=3, seed=0)
    fig = snapshot_figure(snap, 3)
    assert "iteration 3 of 3" in fig.layout.title.text
    with pytest.raises(ValueError, match="iteration"):
        snapshot_figure(snap, 4)


def test_toy_widget_controls_redraw(toy):
    data = toy[0]
    w = toy_widget(data, fit_iterations, n_iters=5, seed=0)
    assert set(w.controls) == {"class_index", "e_step", "num_components", "iteration"}

    def means_x():
        return np.asarray(next(t for t in w.figure.data if t.meta and t.meta.get("role") == "means").x)

    start = means_x()
    w.controls["iteration"].value = 5
    assert not np.allclose(means_x(), start) and "iteration 5 of 5" in w.figure.layout.title.text
    np.testing.assert_allclose(means_x(), w.snapshots.means[5, :, 0])
    w.controls["e_step"].value = "sinkhorn"
    assert w.snapshots.e_step == "sinkhorn" and "Sinkhorn" in w.figure.layout.annotations[0].text
    w.controls["num_components"].value = 2
    assert len([t for t in w.figure.data if t.meta and t.meta.get("role") == "ellipse"]) == 2
    w.controls["class_index"].value = 2
    points = next(t for t in w.figure.data if t.meta and t.meta.get("role") == "points")
    np.testing.assert_allclose(points.x, data.x[data.labels == 2, 0].numpy(), rtol=1e-6)
    assert "application/vnd.plotly.v1+json" in w.output.outputs[0]["data"]
    assert TOY_PALETTE.shape[1] == 3
