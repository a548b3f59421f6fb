"""Property-based tests of the GMM core (hypothesis): random shapes, scales and label patterns.

Shapes are small (N, C, M, D), magnitudes span 1e-3..1e3 for the data and the standard deviations.
The examples are drawn from a fixed seed (``derandomize``) so a CI run is reproducible; the
hypothesis database is off so nothing is written into the work tree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmmseg_lab.gmm import (
    FIFOMemory,
    GMMClassifier,
    StatsMemory,
    diag_gaussian_log_prob,
    fit_gmm,
    normalized_sinkhorn_assign,
    sinkhorn,
)

PROPERTY = settings(
    max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
EPS64 = torch.finfo(torch.float64).eps

seeds = st.integers(0, 2**31 - 1)
log10_scales = st.floats(-3.0, 3.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Single-threaded torch (see conftest.single_thread_torch)."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# GMMClassifier: the mixture stays finite whatever the batches


LABEL_PATTERNS = ("random", "one class", "with ignored", "all ignored", "first class absent")


def _labels(pattern: str, n: int, c: int, g: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, c, (n,), generator=g)
    if pattern == "one class":
        labels[:] = int(torch.randint(0, c, (1,), generator=g))
    elif pattern == "with ignored":
        labels[torch.rand(n, generator=g) < 0.4] = 255
    elif pattern == "all ignored":
        labels[:] = 255
    elif pattern == "first class absent":
        labels = torch.randint(1, c, (n,), generator=g) if c > 1 else torch.full((n,), 255)
    return labels


@PROPERTY
@given(
    c=st.integers(1, 4),
    m=st.integers(1, 4),
    d=st.integers(1, 6),
    n=st.integers(1, 40),
    log_scale=log10_scales,
    offset=st.sampled_from([0.0, 1.0, 100.0]),
    pattern=st.sampled_from(LABEL_PATTERNS),
    memory=st.sampled_from(["fifo", "stats"]),
    e_step=st.sampled_from(["sinkhorn", "em"]),
    normalize=st.booleans(),
    interval=st.integers(1, 3),
    steps=st.integers(1, 4),
    per_component=st.sampled_from([None, 1, 5]),
    memory_size=st.integers(1, 50),
    correct_only=st.booleans(),
    seed=seeds,
)
def test_mixture_stays_finite_after_updates_and_m_steps(
    c,
    m,
    d,
    n,
    log_scale,
    offset,
    pattern,
    memory,
    e_step,
    normalize,
    interval,
    steps,
    per_component,
    memory_size,
    correct_only,
    seed,
):
    torch.manual_seed(seed)
    kwargs = dict(
        e_step=e_step,
        memory=memory,
        update_interval=interval,
        mean_momentum=0.5,
        memory_size=memory_size,
        samples_per_component=per_component,
        normalize_means=normalize,
    )
    if memory == "stats" and memory_size == 1:  # the default decay 1 - 1/memory_size would be 0
        with pytest.raises(ValueError, match="memory_size must be >= 2 for memory='stats'"):
            GMMClassifier(c, m, d, **kwargs)
        return
    clf = GMMClassifier(c, m, d, **kwargs)
    init = {k: v.clone() for k, v in clf.state_dict().items()}
    g = _gen(seed)
    scale = 10.0**log_scale
    labelled = torch.zeros(c, dtype=torch.bool)
    for _ in range(steps):
        x = scale * (torch.randn(n, d, generator=g) + offset)
        labels = _labels(pattern, n, c, g)
        correct = torch.rand(n, generator=g) < 0.7 if correct_only else None
        info = clf.update(x, labels, correct=correct)
        used = labels != 255 if correct is None else (labels != 255) & correct
        labelled[labels[used]] = True
        assert info["pixels"] == int(used.sum())
    clf.m_step()

    for name, buffer in clf.state_dict().items():
        if buffer.is_floating_point():
            assert torch.isfinite(buffer).all(), f"{name} is not finite"
    assert (clf.stds >= math.sqrt(clf.var_floor) * (1 - 1e-6)).all(), "a standard deviation fell below the floor"
    torch.testing.assert_close(torch.logsumexp(clf.log_weights, dim=1), torch.zeros(c), atol=1e-5, rtol=0)
    if normalize:
        torch.testing.assert_close(clf.means.norm(dim=-1), torch.ones(c, m), atol=1e-5, rtol=0)
    for cls in (~labelled).nonzero().flatten().tolist():  # never fed: exactly at the initialisation
        for name in ("means", "stds", "log_weights"):
            assert torch.equal(getattr(clf, name)[cls], init[name][cls]), f"{name} of unfed class {cls} moved"
    probe = scale * (torch.randn(8, d, generator=g) + offset)
    log_lik = clf.class_log_likelihood(probe)
    assert not torch.isnan(log_lik).any() and not torch.isposinf(log_lik).any()
    assert ((clf.predict(probe) >= 0) & (clf.predict(probe) < c)).all()


# ------------------------------------------------------------------------------------------------
# Sinkhorn: the documented marginals


@PROPERTY
@given(
    n=st.integers(1, 60),
    m=st.integers(1, 8),
    log_scale=st.floats(-3.0, 3.0),
    log_eps=st.floats(-3.0, 3.0),
    n_iters=st.integers(1, 10),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=seeds,
)
def test_sinkhorn_rows_sum_to_one_for_any_scale_and_epsilon(n, m, log_scale, log_eps, n_iters, dtype, seed):
    scores = torch.randn(n, m, generator=_gen(seed), dtype=torch.float64).to(dtype) * 10.0**log_scale
    q = sinkhorn(scores, n_iters=n_iters, epsilon=10.0**log_eps)
    assert q.shape == (n, m) and q.dtype == dtype
    assert torch.isfinite(q).all() and (q >= 0).all() and (q <= 1 + 1e-6).all()
    tol = 1e-12 * m if dtype == torch.float64 else 1e-5 * m
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n, dtype=dtype), atol=tol, rtol=0)


@PROPERTY
@given(n=st.integers(1, 60), m=st.integers(1, 6), eps=st.floats(0.25, 2.0), seed=seeds)
def test_sinkhorn_columns_sum_to_n_over_m_at_convergence(n, m, eps, seed):
    scores = torch.rand(n, m, generator=_gen(seed), dtype=torch.float64)
    q = sinkhorn(scores, n_iters=1000, epsilon=eps)
    torch.testing.assert_close(q.sum(dim=0), torch.full((m,), n / m, dtype=torch.float64), atol=1e-8 * n, rtol=0)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-12, rtol=0)


@PROPERTY
@given(n=st.integers(0, 50), m=st.integers(1, 6), log_scale=st.floats(-30.0, 30.0), k=st.integers(-20, 20), seed=seeds)
def test_normalized_sinkhorn_assign_is_a_valid_scale_free_assignment(n, m, log_scale, k, seed):
    log_prob = -torch.rand(n, m, generator=_gen(seed)) * 10.0**log_scale
    assigned = normalized_sinkhorn_assign(log_prob)
    assert assigned.shape == (n,) and assigned.dtype == torch.int64
    assert ((assigned >= 0) & (assigned < m)).all()
    # It divides by the largest magnitude: scaling by a power of two (exact) changes nothing.
    assert torch.equal(normalized_sinkhorn_assign(log_prob * 2.0**k), assigned)


# ------------------------------------------------------------------------------------------------
# Densities against torch.distributions, in float64


def _oracle(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(means[None], stds[None]).log_prob(x[:, None]).sum(-1)


def _rounding_bound(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` bound on float64 rounding of the expanded quadratic.

    Each term is at most ``((|x - c| + |mu - c| + std) / std)^2`` summed over dimensions, whether or
    not the implementation centres on ``c`` (the mean of the means; it skips centring only when
    ``|c| <= min std``), plus the log-normaliser's ``sum |log std|``.
    """
    centre = means.mean(dim=0)
    reach = ((x - centre).abs()[:, None] + (means - centre).abs()[None] + stds[None]) / stds[None]
    return 64 * EPS64 * ((reach**2).sum(-1) + (stds.log().abs() + 1).sum(-1)[None])


@PROPERTY
@given(
    n=st.integers(1, 30),
    k=st.integers(1, 6),
    d=st.integers(1, 8),
    log_x=log10_scales,
    log_std=log10_scales,
    offset=st.sampled_from([0.0, 3.0, 1000.0]),
    chunk=st.sampled_from([None, 1, 7]),
    seed=seeds,
)
def test_diag_gaussian_log_prob_matches_the_normal_oracle_in_float64(n, k, d, log_x, log_std, offset, chunk, seed):
    g = _gen(seed)
    scale, std_scale = 10.0**log_x, 10.0**log_std
    means = scale * (torch.randn(k, d, generator=g, dtype=torch.float64) + offset)
    x = torch.cat(
        [
            means[torch.randint(0, k, (n // 2,), generator=g)]
            + std_scale * torch.randn(n // 2, d, generator=g, dtype=torch.float64),  # near a mean
            scale * (torch.randn(n - n // 2, d, generator=g, dtype=torch.float64) + offset),
        ]
    )
    stds = std_scale * (torch.rand(k, d, generator=g, dtype=torch.float64) + 0.1)
    got = diag_gaussian_log_prob(x, means, stds, chunk_rows=chunk)
    assert got.shape == (n, k) and got.dtype == torch.float64
    error = (got - _oracle(x, means, stds)).abs()
    bound = _rounding_bound(x, means, stds)
    assert (error <= bound).all(), f"max error {error.max():.3g}, error/bound {(error / bound).max():.3g}"


@PROPERTY
@given(
    c=st.integers(1, 4),
    m=st.integers(1, 4),
    d=st.integers(1, 6),
    n=st.integers(1, 30),
    log_x=st.floats(-2.0, 2.0),
    log_std=st.floats(-2.0, 2.0),
    normalize=st.booleans(),
    seed=seeds,
)
def test_class_log_likelihood_is_the_logsumexp_of_weighted_components(c, m, d, n, log_x, log_std, normalize, seed):
    g = _gen(seed)
    clf = GMMClassifier(c, m, d, e_step="em", normalize_means=normalize).double()
    clf.means.copy_(torch.randn(c, m, d, generator=g, dtype=torch.float64) * 10.0**log_x)
    clf.stds.copy_((torch.rand(c, m, d, generator=g, dtype=torch.float64) + 0.1) * 10.0**log_std)
    clf.log_weights.copy_(torch.log_softmax(3 * torch.randn(c, m, generator=g, dtype=torch.float64), dim=1))
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 10.0**log_x

    comp = clf.component_log_prob(x)
    assert comp.shape == (n, c, m) and comp.dtype == torch.float64
    means = F.normalize(clf.means, dim=-1) if normalize else clf.means
    flat_means, flat_stds = means.reshape(c * m, d), clf.stds.reshape(c * m, d)
    oracle = _oracle(x, flat_means, flat_stds).view(n, c, m)
    bound = _rounding_bound(x, flat_means, flat_stds).view(n, c, m)
    assert ((comp - oracle).abs() <= bound).all()

    cll = clf.class_log_likelihood(x)
    torch.testing.assert_close(cll, torch.logsumexp(comp + clf.log_weights, dim=-1), rtol=0, atol=0)
    mixture = torch.stack(
        [
            torch.distributions.MixtureSameFamily(
                torch.distributions.Categorical(logits=clf.log_weights[k]),
                torch.distributions.Independent(torch.distributions.Normal(means[k], clf.stds[k]), 1),
            ).log_prob(x)
            for k in range(c)
        ],
        dim=1,
    )
    assert ((cll - mixture).abs() <= bound.amax(-1) + 1e-12 * mixture.abs()).all()
    assert torch.equal(clf.predict(x), cll.argmax(dim=1))
    assert torch.equal(clf.anomaly_score(x), -cll.amax(dim=1))


# ------------------------------------------------------------------------------------------------
# Batch EM and the memories


@PROPERTY
@given(
    m=st.integers(1, 4),
    d=st.integers(1, 5),
    extra=st.integers(0, 40),
    log_scale=log10_scales,
    n_iters=st.integers(0, 6),
    e_step=st.sampled_from(["em", "sinkhorn"]),
    seed=seeds,
)
def test_fit_gmm_stays_finite_with_weights_summing_to_one(m, d, extra, log_scale, n_iters, e_step, seed):
    g = _gen(seed)
    scale = 10.0**log_scale
    x = torch.randn(m + extra, d, generator=g, dtype=torch.float64) * scale
    means0 = x[torch.randperm(len(x), generator=g)[:m]].clone()
    weights, means, stds = fit_gmm(
        x, means0, torch.full((m, d), scale, dtype=torch.float64), n_iters=n_iters, e_step=e_step
    )
    for name, value in (("weights", weights), ("means", means), ("stds", stds)):
        assert torch.isfinite(value).all(), f"{name} not finite"
    assert (stds > 0).all() and (weights >= 0).all()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)


@PROPERTY
@given(capacity=st.integers(1, 12), sizes=st.lists(st.integers(0, 20), min_size=1, max_size=8), seed=seeds)
def test_fifo_memory_holds_exactly_the_newest_samples(capacity, sizes, seed):
    g = _gen(seed)
    memory = FIFOMemory(num_slots=2, capacity=capacity, dim=2)
    pushed = []
    for size in sizes:
        samples = torch.randn(size, 2, generator=g)
        memory.push(1, samples)
        pushed += samples.tolist()
    newest = sorted(map(tuple, pushed[-capacity:])) if pushed else []
    assert sorted(map(tuple, memory.valid(1).tolist())) == newest
    assert int(memory.count[1]) == min(len(pushed), capacity) and int(memory.count[0]) == 0
    count, total, total_sq = memory.moments(torch.tensor([0, 1]))
    expected = np.asarray(newest, dtype=np.float64).reshape(-1, 2)
    assert count.tolist() == [0.0, float(len(expected))]
    np.testing.assert_allclose(total[1].numpy(), expected.sum(0), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(total_sq[1].numpy(), (expected**2).sum(0), rtol=1e-6, atol=1e-5)


@PROPERTY
@given(decay=st.floats(0.5, 1.0), sizes=st.lists(st.integers(0, 10), min_size=1, max_size=6), seed=seeds)
def test_stats_memory_weights_each_sample_by_decay_to_the_number_after_it(decay, sizes, seed):
    """A sample's weight is ``decay ** (samples pushed in later calls)``: one call's samples arrive together."""
    g = _gen(seed)
    memory = StatsMemory(num_slots=1, dim=3, decay=decay)
    pushed = []
    for size in sizes:
        samples = torch.randn(size, 3, generator=g, dtype=torch.float64)
        memory.push(0, samples)
        pushed.append(samples)
    x = torch.cat(pushed)
    later = [sum(sizes[j + 1 :]) for j, size in enumerate(sizes) for _ in range(size)]
    weights = torch.tensor([decay**k for k in later], dtype=torch.float64)
    count, total, total_sq = memory.moments(torch.tensor([0]))
    torch.testing.assert_close(count[0], weights.sum(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(total[0], (weights[:, None] * x).sum(0), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(total_sq[0], (weights[:, None] * x * x).sum(0), rtol=1e-9, atol=1e-9)
