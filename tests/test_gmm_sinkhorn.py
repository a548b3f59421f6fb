"""sinkhorn against POT's ot.sinkhorn on the same cost."""

import numpy as np
import ot
import pytest
import torch

from gmmseg_lab.gmm import normalized_sinkhorn_assign, sinkhorn


@pytest.mark.parametrize("n,m,eps", [(50, 5, 0.5), (200, 3, 0.1), (37, 4, 0.05)])
def test_matches_pot(n, m, eps):
    g = torch.Generator().manual_seed(n)
    scores = torch.rand(n, m, generator=g, dtype=torch.float64)
    ours = sinkhorn(scores, n_iters=2000, epsilon=eps)
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    plan = ot.sinkhorn(a, b, -scores.numpy(), reg=eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)
    np.testing.assert_allclose(ours.numpy(), plan * n, atol=1e-7)


def test_marginals():
    scores = torch.randn(300, 5, dtype=torch.float64)
    q = sinkhorn(scores, n_iters=3, epsilon=0.05)
    torch.testing.assert_close(q.sum(1), torch.ones(300, dtype=torch.float64))
    q = sinkhorn(scores, n_iters=500, epsilon=0.5)
    torch.testing.assert_close(q.sum(0), torch.full((5,), 60.0, dtype=torch.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-6, 1e-3, 0.05, 1e3])
def test_no_overflow_for_any_epsilon(eps):
    scores = torch.randn(64, 5) * 100
    q = sinkhorn(scores, n_iters=3, epsilon=eps)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(1), torch.ones(64), rtol=1e-5, atol=1e-5)


def test_degenerate_shapes():
    assert sinkhorn(torch.zeros(0, 5)).shape == (0, 5)
    q = sinkhorn(torch.randn(1, 5))
    torch.testing.assert_close(q.sum(), torch.tensor(1.0))
    q = sinkhorn(torch.zeros(10, 5))  # identical points: uniform
    torch.testing.assert_close(q, torch.full((10, 5), 0.2))


def test_uniform_prior_spreads_points_over_components():
    # Every point's highest log-density is component 0: a plain argmax puts all of them there,
    # the uniform-marginal assignment shares them out over the three components.
    g = torch.Generator().manual_seed(0)
    log_prob = -torch.tensor([10.0, 11.0, 12.0]) - torch.rand(300, 3, generator=g)
    assert torch.all(log_prob.argmax(1) == 0)
    counts = torch.bincount(normalized_sinkhorn_assign(log_prob), minlength=3)
    assert counts.min() > 60, counts


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(n_iters=0), "n_iters"), (dict(epsilon=0.0), "epsilon")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(torch.randn(4, 2), **kwargs)
    with pytest.raises(ValueError, match="scores must be finite"):
        sinkhorn(torch.tensor([[0.0, float("nan")]]))
