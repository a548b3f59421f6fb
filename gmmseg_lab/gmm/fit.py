"""Batch EM for one diagonal-covariance Gaussian mixture: classic EM or the uniform-prior Sinkhorn EM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_finite, check_float_matrix, check_positive
from .density import diag_gaussian_log_prob
from .sinkhorn import sinkhorn

E_STEPS = ("em", "sinkhorn")


def em_responsibilities(log_prob: Tensor, log_weights: Tensor) -> Tensor:
    """Classic E-step: posterior over components, ``[N, M]`` rows summing to 1."""
    return torch.softmax(log_prob + log_weights, dim=1)


def e_step_responsibilities(
    log_prob: Tensor,
    log_weights: Tensor,
    e_step: str = "em",
    *,
    sinkhorn_iters: int = 3,
    sinkhorn_epsilon: float = 0.05,
) -> Tensor:
    """The E-step of :func:`fit_gmm`: soft assignment ``[N, M]`` of N points to M components.

    ``"em"``: the posterior with mixture weights (:func:`em_responsibilities`); ``"sinkhorn"``:
    GMMSeg's uniform-prior transport plan, Sinkhorn-Knopp on the log-densities scaled by their
    largest magnitude (the weights are not used). Rows sum to 1 either way.

    Args:
        log_prob: ``[N, M]`` component log-densities. log_weights: ``[M]`` log mixture weights.
    """
    if e_step == "em":
        return em_responsibilities(log_prob, log_weights)
    if e_step != "sinkhorn":
        raise ValueError(f"e_step must be one of {E_STEPS}, got {e_step!r}")
    scale = log_prob.abs().max().clamp_min(torch.finfo(log_prob.dtype).tiny)
    return sinkhorn(log_prob / scale, n_iters=sinkhorn_iters, epsilon=sinkhorn_epsilon)


def weighted_moments(x: Tensor, resp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sufficient statistics of soft-assigned points.

    Args:
        x: ``[N, D]`` points. resp: ``[N, M]`` non-negative weights.

    Returns:
        ``(count[M], sum[M, D], sum_sq[M, D])``: ``sum_n r_nm``, ``sum_n r_nm x_n``, ``sum_n r_nm x_n^2``.
    """
    return resp.sum(dim=0), resp.t() @ x, resp.t() @ (x * x)


def diag_moments_to_params(count: Tensor, total: Tensor, total_sq: Tensor, reg_var: float) -> tuple[Tensor, Tensor]:
    """M-step from sufficient statistics: means and standard deviations of a diagonal mixture.

    ``var = E[x^2] - mean^2 + reg_var`` (the weighted mean squared deviation from the mean), clamped
    at 0 before the regulariser so rounding can never give a negative variance.

    Args:
        count: ``[M]``; total, total_sq: ``[M, D]``.

    Returns:
        ``(means[M, D], stds[M, D])``.
    """
    safe = count.clamp_min(torch.finfo(count.dtype).tiny).unsqueeze(1)
    means = total / safe
    var = (total_sq / safe - means * means).clamp_min(0.0) + reg_var
    return means, var.sqrt()


def fit_gmm(
    x: Tensor,
    means_init: Tensor,
    stds_init: Tensor,
    weights_init: Tensor | None = None,
    n_iters: int = 100,
    e_step: str = "em",
    reg_var: float = 1e-6,
    *,
    sinkhorn_iters: int = 3,
    sinkhorn_epsilon: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit one diagonal-covariance Gaussian mixture by batch EM.

    ``e_step="em"`` is classic EM, the same iteration as scikit-learn's
    ``GaussianMixture(covariance_type="diag")``: soft responsibilities with mixture weights, then
    weights ``N_m / N``, weighted means, and variances = weighted mean squared deviation + ``reg_var``.
    ``e_step="sinkhorn"`` replaces the E-step by GMMSeg's uniform-prior optimal-transport assignment
    (Sinkhorn on log-densities scaled by their largest magnitude); the weights stay uniform.

    A component that receives no mass keeps its previous mean and standard deviation, so the result
    is always finite. Deterministic for a given input.

    Args:
        x: ``[N, D]`` data. means_init, stds_init: ``[M, D]``. weights_init: ``[M]`` (default uniform).
        n_iters: EM iterations (no early stopping: the result after exactly ``n_iters`` steps).

    Returns:
        ``(weights[M], means[M, D], stds[M, D])`` in float32, or float64 if ``x`` is float64.
    """
    check_float_matrix(x, "x", allow_empty=False)
    check_float_matrix(means_init, "means_init", cols=x.shape[1], allow_empty=False)
    check_float_matrix(stds_init, "stds_init", cols=x.shape[1])
    if stds_init.shape != means_init.shape:
        raise ValueError(f"stds_init must have shape {tuple(means_init.shape)}, got {tuple(stds_init.shape)}")
    check_positive(stds_init, "stds_init")
    if e_step not in E_STEPS:
        raise ValueError(f"e_step must be one of {E_STEPS}, got {e_step!r}")
    if n_iters < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")
    if not reg_var >= 0:
        raise ValueError(f"reg_var must be >= 0, got {reg_var}")
    num_components = means_init.shape[0]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    means = means_init.to(x.device, dtype).clone()
    stds = stds_init.to(x.device, dtype).clone()
    if weights_init is None:
        weights = torch.full((num_components,), 1.0 / num_components, dtype=dtype, device=x.device)
    else:
        if weights_init.shape != (num_components,):
            raise ValueError(f"weights_init must have shape [{num_components}], got {tuple(weights_init.shape)}")
        check_finite(weights_init, "weights_init")
        if bool((weights_init < 0).any()) or abs(float(weights_init.sum()) - 1.0) > 1e-4:
            raise ValueError("weights_init must be non-negative and sum to 1")
        weights = weights_init.to(x.device, dtype).clone()

    # scikit-learn adds this to every component's mass: a component with no points stays finite.
    mass_eps = 10 * torch.finfo(dtype).eps
    for _ in range(n_iters):
        # The means and stds change every iteration: keep the float32 overflow check (cheap next to
        # the E- and M-steps of a batch fit).
        log_prob = diag_gaussian_log_prob(x, means, stds, validate=False, range_check=True)
        resp = e_step_responsibilities(
            log_prob,
            weights.clamp_min(torch.finfo(dtype).tiny).log(),
            e_step,
            sinkhorn_iters=sinkhorn_iters,
            sinkhorn_epsilon=sinkhorn_epsilon,
        )
        count, total, total_sq = weighted_moments(x, resp)
        count = count + mass_eps
        new_means, new_stds = diag_moments_to_params(count, total, total_sq, reg_var)
        alive = (count > 2 * mass_eps).unsqueeze(1)
        means = torch.where(alive, new_means, means)
        stds = torch.where(alive, new_stds, stds)
        if e_step == "em":
            weights = count / count.sum()
    return weights, means, stds


@dataclass
class FitSnapshots:
    """One class's mixture after each batch-EM iteration (index 0 is the shared random start).

    Attributes:
        x: ``[N, D]`` float64 points of the class.
        class_index, e_step, seed: what was fitted, and how.
        means, stds: ``[T + 1, M, D]``. weights: ``[T + 1, M]`` mixture weights.
        responsibilities: ``[T + 1, N, M]`` the E-step's soft assignment under snapshot ``t``'s
            parameters (posterior for EM, Sinkhorn transport plan for Sinkhorn EM): what the
            M-step of iteration ``t + 1`` uses.
        log_likelihood: ``[T + 1]`` mean ``log p(x)`` of the class's points under snapshot ``t``
            (nats per point).
        masses: ``[T + 1, M]`` each component's share of the points, ``responsibilities.mean(1)``.
    """

    x: np.ndarray
    class_index: int
    e_step: str
    seed: int
    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray
    responsibilities: np.ndarray
    log_likelihood: np.ndarray
    masses: np.ndarray

    @property
    def num_iterations(self) -> int:
        """``T``: EM iterations after the start."""
        return len(self.means) - 1

    @property
    def num_components(self) -> int:
        return self.means.shape[1]
