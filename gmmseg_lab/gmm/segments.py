"""Reductions over groups of rows ("segments"), for running a per-class computation on every class at once.

A segment id per row says which group it belongs to (a class, or a component slot); rows of one group
need not be contiguous. Results are deterministic on CPU and CUDA: the mixture must stay bit-identical
on every rank of a distributed run, so sums never go through floating-point atomics.
"""

from __future__ import annotations

import torch
from torch import Tensor


def segment_sum(values: Tensor, segments: Tensor, num_segments: int, dim: int = 0) -> Tensor:
    """Sum of the slices of ``values`` along ``dim`` that share a segment id.

    Args:
        values: ``[..., N, ...]`` with N along ``dim``.
        segments: ``[N]`` int64 ids in ``[0, num_segments)``.

    Returns:
        ``values``' shape with ``num_segments`` along ``dim``; empty segments are 0.
    """
    shape = list(values.shape)
    shape[dim] = num_segments
    out = values.new_zeros(shape)
    if values.device.type == "cpu":
        # CPU index_add_ adds the slices in index order: deterministic.
        return out.index_add_(dim, segments, values)
    # CUDA index_add_ uses atomics (bits depend on scheduling); index_put_ with accumulate sorts the
    # indices first and is deterministic.
    out_t, values_t = out.movedim(dim, 0), values.movedim(dim, 0)
    out_t.index_put_((segments,), values_t, accumulate=True)
    return out


def segment_amax(values: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """Largest entry per segment and column: ``[M, N]`` values -> ``[M, num_segments]`` (``-inf`` if empty)."""
    out = values.new_full((values.shape[0], num_segments), -float("inf"))
    # A maximum does not depend on the order of the entries: the result is exact on any device.
    return out.scatter_reduce_(1, segments.expand(values.shape[0], -1), values, "amax")


def segment_logsumexp(values: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """``log sum exp`` over the entries of each segment, per column: ``[M, N]`` -> ``[M, num_segments]``.

    Shifted by the segment's largest entry as ``torch.logsumexp`` is, so nothing overflows. Entries
    must be finite; an empty segment gives ``-inf``.
    """
    peak = segment_amax(values, segments, num_segments)
    sums = segment_sum((values - peak.index_select(1, segments)).exp(), segments, num_segments, dim=1)
    return sums.log() + peak


def group_rows(segments: Tensor, num_segments: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows grouped by segment, keeping their order within a segment (a stable sort).

    Args:
        segments: ``[N]`` int64 ids in ``[0, num_segments)``.

    Returns:
        ``(order, sorted_ids, rank, counts)``: ``order`` ``[N]`` the row indices grouped by segment
        (``segments[order]`` is ``sorted_ids``), ``rank`` ``[N]`` the position of row ``order[i]``
        among the rows of its segment (0 for the first), ``counts`` ``[num_segments]`` rows per segment.
    """
    sorted_ids, order = torch.sort(segments, stable=True)
    counts = torch.bincount(segments, minlength=num_segments)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(segments.numel(), device=segments.device) - starts[sorted_ids]
    return order, sorted_ids, rank, counts
