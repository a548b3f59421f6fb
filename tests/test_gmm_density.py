"""diag_gaussian_log_prob against torch.distributions and scikit-learn's diagonal GaussianMixture."""

import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from gmmseg_lab.gmm import diag_gaussian_log_prob, mixture_log_prob


def _random_params(n, k, d, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype) * scale
    means = torch.randn(k, d, generator=g, dtype=dtype) * scale
    stds = (torch.rand(k, d, generator=g, dtype=dtype) + 0.2) * scale
    return x, means, stds


def _oracle(x, means, stds):
    normal = torch.distributions.Normal(means[None], stds[None])
    return normal.log_prob(x[:, None]).sum(-1)


@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (257, 7, 3), (1000, 95, 64)])
def test_matches_torch_distributions_float64(n, k, d):
    x, means, stds = _random_params(n, k, d, seed=n + k + d)
    got = diag_gaussian_log_prob(x, means, stds)
    assert got.shape == (n, k) and got.dtype == torch.float64
    torch.testing.assert_close(got, _oracle(x, means, stds), rtol=1e-10, atol=1e-8)


def test_matches_torch_distributions_float32():
    x, means, stds = _random_params(4096, 95, 64, seed=1, dtype=torch.float32)
    got = diag_gaussian_log_prob(x, means, stds)
    ref = _oracle(x.double(), means.double(), stds.double())
    assert got.dtype == torch.float32
    # float32 has ~7 significant digits on values of magnitude ~1e2..1e3
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_far_from_origin_and_tiny_scales(scale):
    x, means, stds = _random_params(300, 10, 16, seed=3, scale=scale)
    offset = 1e3 * scale  # data far from the origin: the centred expansion keeps precision
    got = diag_gaussian_log_prob(x + offset, means + offset, stds)
    torch.testing.assert_close(got, _oracle(x + offset, means + offset, stds), rtol=1e-9, atol=1e-6)


def test_matches_sklearn_diag_scoring():
    x, means, stds = _random_params(500, 4, 5, seed=4)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    gm = GaussianMixture(n_components=4, covariance_type="diag")
    gm.weights_ = weights.numpy()
    gm.means_ = means.numpy()
    gm.covariances_ = (stds**2).numpy()
    gm.precisions_cholesky_ = (1.0 / stds).numpy()
    ours = mixture_log_prob(diag_gaussian_log_prob(x, means, stds), weights.log())
    np.testing.assert_allclose(ours.numpy(), gm.score_samples(x.numpy()), rtol=1e-10, atol=1e-9)
    resp = torch.softmax(diag_gaussian_log_prob(x, means, stds) + weights.log(), dim=1)
    np.testing.assert_allclose(resp.numpy(), gm.predict_proba(x.numpy()), atol=1e-10)


def test_uniform_mixture_log_prob():
    comp = torch.randn(10, 5, dtype=torch.float64)
    torch.testing.assert_close(mixture_log_prob(comp), torch.logsumexp(comp, 1) - math.log(5))


def test_chunked_equals_unchunked():
    x, means, stds = _random_params(1001, 13, 8, seed=5, dtype=torch.float32)
    full = diag_gaussian_log_prob(x, means, stds, chunk_rows=None)
    chunked = diag_gaussian_log_prob(x, means, stds, chunk_rows=100)
    # Different block sizes may pick different matmul kernels: equal up to float32 rounding.
    torch.testing.assert_close(full, chunked, rtol=1e-6, atol=1e-5)


def test_gradient_matches_oracle():
    x, means, stds = _random_params(64, 6, 4, seed=6)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    weights = torch.randn(64, 6, dtype=torch.float64)
    (diag_gaussian_log_prob(x1, means, stds) * weights).sum().backward()
    (_oracle(x2, means, stds) * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-9)


def test_half_precision_inputs_are_computed_in_float32():
    x, means, stds = _random_params(128, 5, 8, seed=7, dtype=torch.float32)
    got = diag_gaussian_log_prob(x.half(), means.half(), stds.half())
    assert got.dtype == torch.float32
    ref = _oracle(x.half().double(), means.half().double(), stds.half().double())
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)


def test_never_exceeds_the_normaliser():
    means = torch.randn(3, 64)
    stds = torch.full((3, 64), 1e-3)
    got = diag_gaussian_log_prob(means.clone(), means, stds)
    log_norm = -stds.log().sum(1) - 0.5 * 64 * math.log(2 * math.pi)
    assert torch.all(got <= log_norm)


@pytest.mark.parametrize(
    "x,means,stds,match",
    [
        (torch.randn(4, 3), torch.randn(2, 4), torch.ones(2, 4), "x must have 4 columns"),
        (torch.randn(4), torch.randn(2, 4), torch.ones(2, 4), "x must have shape"),
        (torch.randint(0, 3, (4, 4)), torch.randn(2, 4), torch.ones(2, 4), "x must be a floating-point"),
        (torch.full((4, 4), float("nan")), torch.randn(2, 4), torch.ones(2, 4), "x must be finite"),
        (torch.randn(4, 4), torch.randn(2, 4), torch.zeros(2, 4), "stds must be strictly positive"),
        (torch.randn(4, 4), torch.randn(2, 4), torch.ones(3, 4), "stds must have the shape of means"),
        (torch.randn(4, 4), torch.tensor([[float("inf")] * 4]), torch.ones(1, 4), "means must be finite"),
    ],
)
def test_bad_input_names_the_argument(x, means, stds, match):
    with pytest.raises(ValueError, match=match):
        diag_gaussian_log_prob(x, means, stds)


def test_the_float32_range_check_runs_only_when_asked(monkeypatch):
    """``validate=False`` (hot loops that checked once) does no min/max pass and no host sync."""
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, means, stds = _random_params(50, 4, 3, dtype=torch.float32)
    diag_gaussian_log_prob(x, means, stds, validate=False)
    assert calls == []
    diag_gaussian_log_prob(x, means, stds)
    assert len(calls) == 2
    calls.clear()
    diag_gaussian_log_prob(x, means, stds, validate=False, range_check=True)
    assert len(calls) == 2


def test_float32_near_its_limit_is_scored_in_float64_when_checked():
    x = torch.tensor([[3e38, -3e38]])
    means, stds = torch.zeros(2, 2), torch.ones(2, 2)
    got = diag_gaussian_log_prob(x, means, stds)
    assert got.dtype == torch.float32 and not torch.isnan(got).any() and torch.isneginf(got).all()
