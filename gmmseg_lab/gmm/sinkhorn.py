"""Uniform-marginal Sinkhorn-Knopp assignment (the optimal-transport E-step of GMMSeg)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_float_matrix


def sinkhorn(scores: Tensor, n_iters: int = 3, epsilon: float = 0.05) -> Tensor:
    """Assign N points to M components with uniform marginals, by Sinkhorn-Knopp in the log domain.

    Solves the entropy-regularised transport ``max_Q <Q, scores> + epsilon H(Q)`` with rows of ``Q``
    summing to 1 (each point is fully assigned) and columns to ``N / M`` (every component gets an
    equal share). The last normalisation is over rows, so rows sum to 1 exactly and columns to
    ``N / M`` at convergence. All arithmetic is in log space: no overflow for any ``epsilon``.

    Args:
        scores: ``[N, M]`` affinities of points to components (higher = closer).
        n_iters: Sinkhorn iterations (each normalises columns then rows).
        epsilon: entropic regularisation; smaller is closer to a hard assignment.

    Returns:
        ``[N, M]`` soft assignment ``Q`` (float32, or float64 for float64 input).
    """
    check_float_matrix(scores, "scores")
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    n, m = scores.shape
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    if n == 0 or m == 0:
        return torch.zeros((n, m), dtype=dtype, device=scores.device)
    log_q = scores.to(dtype) / epsilon
    log_col_mass = math.log(n / m)
    for _ in range(n_iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) + log_col_mass
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q.exp()


def normalized_sinkhorn_assign(log_prob: Tensor, n_iters: int = 3, epsilon: float = 0.05) -> Tensor:
    """GMMSeg's hard E-step for one class: Sinkhorn on log-densities scaled by their largest magnitude.

    Args:
        log_prob: ``[N, M]`` component log-densities of N pixels of one class.

    Returns:
        ``[N]`` int64 component index per pixel.
    """
    if log_prob.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=log_prob.device)
    scale = log_prob.abs().max().clamp_min(torch.finfo(log_prob.dtype).tiny)
    return sinkhorn(log_prob / scale, n_iters=n_iters, epsilon=epsilon).argmax(dim=1)
