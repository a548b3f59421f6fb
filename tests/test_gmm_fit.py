"""fit_gmm(e_step="em") against scikit-learn's GaussianMixture from the same start."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from gmmseg_lab.gmm import fit_gmm


def _blobs(seed=0, n=600, d=4, m=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(m, d))
    scales = rng.uniform(0.3, 1.5, size=(m, d))
    labels = rng.integers(0, m, size=n)
    x = centres[labels] + rng.normal(size=(n, d)) * scales[labels]
    return torch.from_numpy(x)


@pytest.mark.parametrize("n_iters", [1, 5, 50])
def test_em_matches_sklearn(n_iters):
    x = _blobs()
    g = torch.Generator().manual_seed(1)
    means0 = x[torch.randperm(len(x), generator=g)[:3]].clone()
    stds0 = torch.ones(3, 4, dtype=torch.float64)
    weights0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    weights, means, stds = fit_gmm(x, means0, stds0, weights0, n_iters=n_iters, e_step="em", reg_var=1e-6)

    gm = GaussianMixture(
        n_components=3,
        covariance_type="diag",
        max_iter=n_iters,
        tol=0,
        reg_covar=1e-6,
        weights_init=weights0.numpy(),
        means_init=means0.numpy(),
        precisions_init=(1 / stds0**2).numpy(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x.numpy())
    np.testing.assert_allclose(weights.numpy(), gm.weights_, atol=1e-4)
    np.testing.assert_allclose(means.numpy(), gm.means_, atol=1e-4)
    np.testing.assert_allclose(stds.numpy(), np.sqrt(gm.covariances_), atol=1e-4)


def test_sinkhorn_em_recovers_balanced_clusters_and_is_deterministic():
    x = _blobs(seed=2, n=900).float()
    means0 = x[:3].clone()  # a poor start: three points that may share a cluster
    stds0 = torch.ones(3, 4)
    out1 = fit_gmm(x, means0, stds0, n_iters=30, e_step="sinkhorn")
    out2 = fit_gmm(x, means0, stds0, n_iters=30, e_step="sinkhorn")
    for a, b in zip(out1, out2):
        assert torch.equal(a, b)
    weights, means, stds = out1
    torch.testing.assert_close(weights, torch.full((3,), 1 / 3))
    assert torch.isfinite(means).all() and torch.isfinite(stds).all() and (stds > 0).all()


def test_empty_component_stays_finite():
    x = torch.randn(100, 2, dtype=torch.float64)
    means0 = torch.tensor([[0.0, 0.0], [1e3, 1e3]], dtype=torch.float64)  # second gets no mass
    weights, means, stds = fit_gmm(x, means0, torch.ones(2, 2, dtype=torch.float64), n_iters=10)
    assert torch.isfinite(weights).all() and torch.isfinite(means).all() and torch.isfinite(stds).all()
    torch.testing.assert_close(means[1], means0[1])


def test_identical_points():
    x = torch.ones(50, 3)
    weights, means, stds = fit_gmm(x, torch.randn(2, 3), torch.ones(2, 3), n_iters=5, reg_var=1e-6)
    assert torch.isfinite(stds).all() and (stds > 0).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(e_step="kmeans"), "e_step must be one of"),
        (dict(n_iters=-1), "n_iters"),
        (dict(weights_init=torch.tensor([0.9, 0.9])), "weights_init must be non-negative and sum to 1"),
        (dict(weights_init=torch.tensor([1.0])), r"weights_init must have shape \[2\]"),
        (dict(stds_init=torch.zeros(2, 3)), "stds_init must be strictly positive"),
        (dict(means_init=torch.zeros(2, 4)), "means_init must have 3 columns"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(x=torch.randn(10, 3), means_init=torch.zeros(2, 3), stds_init=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_gmm(**args)
