"""Log-densities of diagonal-covariance Gaussians, computed as matrix products.

The naive computation of ``log N(x_n; mu_k, diag sigma_k^2)`` for N points and K Gaussians builds an
``N x K x D`` tensor of differences. Expanding the square,

    sum_d (x_d - mu_d)^2 / s_d^2 = (x^2) . (1/s^2) - 2 x . (mu/s^2) + sum_d mu_d^2/s_d^2,

turns it into one matrix product ``[x^2, x] @ [W1; W2]`` (inner size 2D) plus a per-K bias: peak extra
memory O(N*K) (rows are processed in blocks), and a speed close to a plain matrix product of the same
output size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_finite, check_float_matrix, check_positive

LOG_2PI = math.log(2.0 * math.pi)

#: Rows of ``x`` processed per block when gradients are not needed; bounds the ``[rows, 2D]`` temporary.
DEFAULT_CHUNK_ROWS = 65536


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    # Half precision loses the cancellation-sensitive quadratic; compute in float32 at least.
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


#: Largest ``(max|x| + max|mu|) / min(std)`` scored in float32 (its terms stay below ~1e30).
FLOAT32_REACH = 1e15


def float32_overflow_risk(x: Tensor, means: Tensor, stds: Tensor) -> bool:
    """True when :func:`diag_gaussian_log_prob` must not score these float32 inputs in float32.

    Every term of the expanded quadratic is at most ``((|x| + |mu|) / std)^2``. Past ~3e38 float32
    overflows, and ``-inf`` (quadratic) + ``inf`` (linear) would be NaN: such inputs are scored in
    float64 (and cast back). False when the computation is float64 anyway or an input is empty.
    Costs a min/max pass over ``x`` and ``means`` and one host sync: call it once per batch, not
    once per class.
    """
    if _compute_dtype(x, means, stds) != torch.float32 or not x.numel() or not means.numel():
        return False
    x_lo, x_hi = torch.aminmax(x.detach().float())
    m_lo, m_hi = torch.aminmax(means.detach().float())
    reach = (torch.maximum(-x_lo, x_hi) + torch.maximum(-m_lo, m_hi)) / stds.detach().float().min()
    return not bool(reach <= FLOAT32_REACH)


def diag_gaussian_log_prob(
    x: Tensor,
    means: Tensor,
    stds: Tensor,
    *,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
    validate: bool = True,
    range_check: bool | None = None,
) -> Tensor:
    """Log-density of every point under every diagonal Gaussian.

    Args:
        x: points, ``[N, D]``.
        means: Gaussian means, ``[K, D]``.
        stds: per-dimension standard deviations, ``[K, D]``, strictly positive.
        chunk_rows: rows of ``x`` per block when no gradient is needed (bounds temporaries); ``None``
            processes all rows at once.
        validate: check shapes and finiteness (set ``False`` in hot loops that already checked).
        range_check: with float32 inputs, score in float64 (then cast back) when float32 could
            overflow (:func:`float32_overflow_risk`: a pass over ``x`` and a host sync). ``None``
            (default): the same as ``validate``. Hot loops that skip it check once themselves and
            pass float64 inputs when needed, as :class:`~gmmseg_lab.gmm.GMMClassifier` does.

    Returns:
        ``[N, K]`` tensor ``log N(x_n; means_k, diag(stds_k^2))``, float32 (float64 if any input is
        float64). Never builds an ``N x K x D`` tensor.
    """
    if validate:
        check_float_matrix(means, "means")
        check_float_matrix(stds, "stds", cols=means.shape[1])
        if stds.shape != means.shape:
            raise ValueError(f"stds must have the shape of means {tuple(means.shape)}, got {tuple(stds.shape)}")
        check_float_matrix(x, "x", cols=means.shape[1])
        check_positive(stds, "stds")
    dtype = _compute_dtype(x, means, stds)
    if (validate if range_check is None else range_check) and float32_overflow_risk(x, means, stds):
        # -inf where the density is below float32's range, never NaN.
        return diag_gaussian_log_prob(
            x.double(), means.double(), stds.double(), chunk_rows=chunk_rows, validate=False, range_check=False
        ).float()
    # Autocast would silently run the matmul in half precision; the quadratic needs full precision.
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(dtype)
        means = means.to(device=x.device, dtype=dtype)
        stds = stds.to(device=x.device, dtype=dtype)
        dim = means.shape[1]

        # Centring on the mean of the means gives the same densities with far less cancellation for
        # data far from the origin; for data near it (L2-normalised embeddings) it is a wasted pass.
        centre = means.mean(dim=0, keepdim=True)
        if not bool(centre.abs().max() > stds.min()):
            centre = None
        means_c = means if centre is None else means - centre
        inv_var = stds.pow(-2)  # [K, D]
        log_norm = -stds.log().sum(dim=1) - 0.5 * dim * LOG_2PI  # [K]
        # One [2D, K] weight for [x^2, x]: one matrix product with an inner size of 2D runs faster than
        # two with D (64 is a short inner loop for a GEMM): measured 27 against 39 ms at N = 4096,
        # K = 750 (56 against 74 ms with the backward), for a [rows, 2D] temporary per block.
        weight = torch.cat([-0.5 * inv_var, means_c * inv_var], dim=1).t().contiguous()  # [2D, K]
        bias = log_norm - 0.5 * (means_c.pow(2) * inv_var).sum(dim=1)  # [K]

        def block(rows: Tensor, inplace: bool) -> Tensor:
            if centre is not None:
                rows = rows - centre
            out = torch.addmm(bias, torch.cat([rows * rows, rows], dim=1), weight)
            # The Mahalanobis term is >= 0, so the log-density never exceeds log_norm; rounding in the
            # expansion can overshoot it slightly for points very close to a mean. Clamped in place when
            # no gradient is needed; under autograd the overshoot (relative ~1e-7) is left, as the clamp
            # and its backward would cost two more passes over the [N, K] output in every training step.
            return out.clamp_(max=log_norm) if inplace else out

        needs_grad = torch.is_grad_enabled() and (x.requires_grad or means.requires_grad or stds.requires_grad)
        n = x.shape[0]
        if needs_grad:
            return block(x, inplace=False)
        if chunk_rows is None or n <= chunk_rows:
            return block(x, inplace=True)
        out = torch.empty((n, means.shape[0]), dtype=dtype, device=x.device)
        for start in range(0, n, chunk_rows):
            out[start : start + chunk_rows] = block(x[start : start + chunk_rows], inplace=True)
        return out


def mixture_log_prob(component_log_prob: Tensor, log_weights: Tensor | None = None) -> Tensor:
    """Log-density of a mixture from its components' log-densities.

    Args:
        component_log_prob: ``[..., M]`` log-densities of the M components.
        log_weights: ``[..., M]`` (broadcastable) log mixture weights; ``None`` means uniform ``1/M``.

    Returns:
        ``[...]`` ``log sum_m w_m N_m``.
    """
    num_components = component_log_prob.shape[-1]
    if log_weights is None:
        return torch.logsumexp(component_log_prob, dim=-1) - math.log(num_components)
    check_finite(log_weights.exp(), "log_weights")
    return torch.logsumexp(component_log_prob + log_weights, dim=-1)


#: Points per block of :func:`grouped_diag_gaussian_log_prob`: its ``[rows, M, D]`` temporary stays
#: in cache (about 0.7 MB at M = 5, D = 64 in float32).
GROUPED_CHUNK_ROWS = 512


def grouped_diag_gaussian_log_prob(
    x: Tensor,
    groups: Tensor,
    means: Tensor,
    stds: Tensor,
    *,
    chunk_rows: int = GROUPED_CHUNK_ROWS,
) -> Tensor:
    """Log-density of every point under the M diagonal Gaussians of its own group only.

    ``out[n, m] = log N(x_n; means[groups[n], m], diag(stds[groups[n], m]^2))``: the ``[N, M]`` block
    of :func:`diag_gaussian_log_prob` against all ``G * M`` Gaussians that belongs to each point's
    group, at about ``1/G`` of its cost. Each block of points gathers its groups' parameters, so the
    ``[rows, M, D]`` standardised differences ``(x - mu) / sigma`` are summed directly: no
    expansion of the square, hence no cancellation far from the origin, and no per-group loop.

    Args:
        x: ``[N, D]`` points. groups: ``[N]`` int64 in ``[0, G)``.
        means: ``[G, M, D]``.
        stds: ``[G, M, D]``, strictly positive (shapes are checked, values are not: a hot path whose
            callers hold valid parameters).
        chunk_rows: points per block (bounds the ``[chunk_rows, M, D]`` temporaries).

    Returns:
        ``[N, M]``, float32 (float64 if any input is float64). Scored in the input precision: the
        caller decides on float64 for float32 data beyond float32's reach
        (:func:`float32_overflow_risk`).
    """
    if means.dim() != 3 or stds.shape != means.shape:
        raise ValueError(
            f"means and stds must have one shape [G, M, D], got {tuple(means.shape)} and {tuple(stds.shape)}"
        )
    if x.dim() != 2 or x.shape[1] != means.shape[2] or groups.shape != (x.shape[0],):
        raise ValueError(
            f"x must have shape [N, {means.shape[2]}] and groups [N], got {tuple(x.shape)} and {tuple(groups.shape)}"
        )
    dtype = _compute_dtype(x, means, stds)
    num_groups, num_comp, dim = means.shape
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(dtype)
        stds = stds.to(device=x.device, dtype=dtype)
        inv_std = stds.reciprocal()
        scale = inv_std.reshape(num_groups, num_comp * dim)
        mu = means.to(device=x.device, dtype=dtype).reshape(num_groups, num_comp * dim)
        log_norm = -stds.log().sum(dim=-1) - 0.5 * dim * LOG_2PI  # [G, M]
        # In-place arithmetic on the temporaries unless autograd needs them.
        inplace = not (torch.is_grad_enabled() and (x.requires_grad or means.requires_grad or stds.requires_grad))
        out = x.new_empty((x.shape[0], num_comp))
        for start in range(0, x.shape[0], chunk_rows):
            grp = groups[start : start + chunk_rows]
            rows = x[start : start + chunk_rows].unsqueeze(1)  # [r, 1, D]
            # (x - mu) first, then / sigma: x / sigma - mu / sigma would cancel far from the origin.
            z = rows - mu.index_select(0, grp).view(-1, num_comp, dim)
            z_scale = scale.index_select(0, grp).view(-1, num_comp, dim)
            z = z.mul_(z_scale).square_() if inplace else (z * z_scale).square()
            out[start : start + chunk_rows] = log_norm.index_select(0, grp) - 0.5 * z.sum(dim=-1)
        return out
