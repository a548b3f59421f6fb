"""Uniform-marginal Sinkhorn-Knopp assignment (the optimal-transport E-step of GMMSeg), for one class
(:func:`normalized_sinkhorn_assign`) or for every class of a batch at once (:func:`segmented_sinkhorn_assign`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_float_matrix
from .segments import segment_logsumexp


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


def _first_argmax(values: Tensor) -> Tensor:
    """``values.argmax(dim=0)`` for ``[M, N]`` with small M: a loop over the M rows is several times
    faster than torch's reduction over a short dimension. Ties go to the first row, as ``argmax``."""
    best, index = values[0], torch.zeros(values.shape[1], dtype=torch.long, device=values.device)
    for row in range(1, values.shape[0]):
        better = values[row] > best
        index = torch.where(better, row, index)
        best = torch.where(better, values[row], best)
    return index


def segmented_sinkhorn_assign(
    log_prob: Tensor, segments: Tensor, num_segments: int, n_iters: int = 3, epsilon: float = 0.05
) -> Tensor:
    """:func:`normalized_sinkhorn_assign` on many groups of rows at once (GMMSeg's E-step, every class).

    Each group (segment) of rows is an independent Sinkhorn problem, the same operations as
    ``normalized_sinkhorn_assign(log_prob[segments == s])`` for every segment ``s`` (only the order
    of the additions over a group's rows differs, a last-bit effect): the scores are the group's
    log-densities divided by their largest magnitude, the marginals are uniform (``n_s / M`` per
    component, 1 per row), ``n_iters`` iterations, then a hard argmax.
    Log-sum-exps over a group's rows are segment reductions, so no group is padded to the size of
    the largest (the classes of a segmentation batch are very imbalanced) and memory stays
    ``O(N * M)``.

    Args:
        log_prob: ``[N, M]`` finite log-densities of each row under the M components of its group.
        segments: ``[N]`` int64 group of each row, in ``[0, num_segments)``; rows of a group need not
            be contiguous.
        num_segments: S, the number of groups (empty groups are allowed).
        n_iters: Sinkhorn iterations, as in :func:`sinkhorn`.
        epsilon: entropic regularisation, as in :func:`sinkhorn`.

    Returns:
        ``[N]`` int64 component index per row.
    """
    check_float_matrix(log_prob, "log_prob")
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    n, m = log_prob.shape
    if segments.shape != (n,) or segments.dtype != torch.long:
        raise ValueError(
            f"segments must be an int64 tensor of shape [{n}] (one per row of log_prob), got "
            f"{segments.dtype} {tuple(segments.shape)}"
        )
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=log_prob.device)
    if int(segments.min()) < 0 or int(segments.max()) >= num_segments:
        raise ValueError(
            f"segments must be in [0, {num_segments}) (num_segments), found "
            f"{int(segments.min())}..{int(segments.max())}"
        )
    dtype = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    # Components along dim 0, rows along dim 1: the reductions over the few components (per row) and
    # the segment reductions over rows (per component) both run over long contiguous rows.
    log_q = log_prob.to(dtype).t().contiguous()  # [M, N]
    counts = torch.bincount(segments, minlength=num_segments)
    scale = log_q.new_zeros(num_segments).scatter_reduce_(0, segments, log_q.abs().amax(dim=0), "amax")
    scale = scale.clamp_min(torch.finfo(dtype).tiny)
    # Same operations, in the same order, as normalized_sinkhorn_assign then sinkhorn.
    log_q = log_q / scale.index_select(0, segments) / epsilon
    log_col_mass = torch.log(counts.double() / m).to(dtype).index_select(0, segments)  # [N]
    for _ in range(n_iters):
        log_q = log_q - segment_logsumexp(log_q, segments, num_segments).index_select(1, segments) + log_col_mass
        peak = log_q.amax(dim=0)
        log_q = log_q - ((log_q - peak).exp().sum(dim=0).log() + peak)
    return _first_argmax(log_q.exp())
