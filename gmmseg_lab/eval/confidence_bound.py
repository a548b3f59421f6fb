"""How confident can the softmax of LayerNorm-ed logits be? A bound that explains GMMSeg's calibration.

GMMSeg's class logits are ``z = gamma * LN(s) + beta``: the C per-class scores ``s`` are normalised to
mean 0 and variance 1 over the classes (``u = LN(s)``: ``sum_c u_c = 0``, ``sum_c u_c^2 <= C``), then
scaled by the learned weight ``gamma`` and shifted by the learned bias ``beta``. However peaked the
scores, the top softmax probability therefore cannot exceed a bound set by C, gamma and beta. With a
common ``gamma`` and ``beta`` the bound is attained with one class at ``u = sqrt(C - 1)`` and all others
at ``-1 / sqrt(C - 1)``::

    p_max = 1 / (1 + (C - 1) * exp(-gamma * C / sqrt(C - 1)))

0.75 at C = 9 and 0.83 at C = 19 with gamma = 1, but above 0.999 at C = 150. A model trained briefly on
few classes keeps gamma near its initial 1, so its softmax cannot express the confidence its accuracy
deserves: it is under-confident by construction. Bayes' posterior ``softmax_c log p(x|c)`` of the
mixtures has no such bound.

For per-class ``gamma`` and ``beta`` (the learned ones) :func:`layernorm_confidence_bound_per_class`
finds the bound numerically: the log of the top probability is concave in ``u`` and the feasible set
is convex, so projected gradient ascent reaches the maximum.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["layernorm_confidence_bound", "layernorm_confidence_bound_per_class"]


def layernorm_confidence_bound(num_classes: int, gamma: float = 1.0) -> float:
    """Largest top-class softmax probability of ``gamma * LN(s) + beta`` with a common ``gamma >= 0``
    and any common ``beta`` (which cancels in the softmax), over all score vectors ``s``.

    Args:
        num_classes: C >= 2.
        gamma: the LayerNorm's weight, the same for every class.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0 (a common weight; see the per-class bound otherwise), got {gamma}")
    c = num_classes
    return 1.0 / (1.0 + (c - 1) * math.exp(-gamma * c / math.sqrt(c - 1)))


def layernorm_confidence_bound_per_class(gamma: Tensor, beta: Tensor | None = None, *, steps: int = 400) -> Tensor:
    """For each class k, the largest softmax probability of class k over ``gamma * u + beta`` with
    ``sum(u) = 0`` and ``||u||^2 <= C`` (every output of a LayerNorm over C scores).

    Args:
        gamma: ``[C]`` learned LayerNorm weight. beta: ``[C]`` learned bias (default zeros).
        steps: projected-gradient iterations (the problem is concave: more steps only refine).

    Returns:
        ``[C]`` float64 bounds; their maximum bounds every pixel's top probability.
    """
    gamma = torch.as_tensor(gamma, dtype=torch.float64).flatten()
    c = gamma.numel()
    if c < 2:
        raise ValueError(f"gamma must have C >= 2 entries, got {c}")
    beta = torch.zeros(c, dtype=torch.float64) if beta is None else torch.as_tensor(beta, dtype=torch.float64).flatten()
    if beta.numel() != c:
        raise ValueError(f"beta must have {c} entries like gamma, got {beta.numel()}")
    if not (torch.isfinite(gamma).all() and torch.isfinite(beta).all()):
        raise ValueError("gamma and beta must be finite")
    radius = math.sqrt(c)
    # One problem per class k (row k: maximise log softmax_k), started at the common-gamma optimum.
    u = torch.full((c, c), -1.0 / math.sqrt(c - 1), dtype=torch.float64)
    u.fill_diagonal_(math.sqrt(c - 1))
    u.requires_grad_(True)
    eye = torch.eye(c, dtype=torch.float64)
    scale = float(gamma.abs().max().clamp_min(1e-6))
    for step in range(steps):
        z = gamma * u + beta
        objective = (z * eye).sum(1) - torch.logsumexp(z, dim=1)  # log softmax_k of row k
        (grad,) = torch.autograd.grad(objective.sum(), u)
        with torch.no_grad():
            lr = 0.5 / (scale * (1.0 + step) ** 0.5)
            u += lr * grad
            u -= u.mean(dim=1, keepdim=True)  # back onto sum(u) = 0 ...
            norm = u.norm(dim=1, keepdim=True)
            u *= torch.where(norm > radius, radius / norm, torch.ones_like(norm))  # ... and into the ball
    with torch.no_grad():
        z = gamma * u + beta
        return torch.softmax(z, dim=1).diagonal().clone()
