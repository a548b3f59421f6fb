"""Input validation shared by the GMM core: every error names the argument and what was expected."""

from __future__ import annotations

import torch
from torch import Tensor


def check_float_matrix(value: object, name: str, *, cols: int | None = None, allow_empty: bool = True) -> Tensor:
    """Check that ``value`` is a finite floating-point tensor of shape ``[N, cols]``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D] (2 dims), got shape {tuple(value.shape)}")
    if cols is not None and value.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns (shape [N, {cols}]), got shape {tuple(value.shape)}")
    if not allow_empty and value.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    check_finite(value, name)
    return value


def check_finite(value: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``value`` holds NaN or infinite entries."""
    # Fast path (one vectorised reduction instead of four passes): a NaN or an inf makes any sum that
    # contains it NaN or inf, so a finite sum proves every entry finite. A non-finite sum may also be
    # the overflow of finite entries: only then is every entry tested.
    if value.numel() and not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
        nonfinite = ~torch.isfinite(value)
        bad = int(nonfinite.sum())
        where = ""
        if value.dim() == 2:
            rows = nonfinite.any(dim=1).nonzero().flatten().tolist()
            shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
            where = f" in {len(rows)} of {value.shape[0]} rows (rows {shown})"
        raise ValueError(f"{name} must be finite, found {bad} NaN or infinite value(s){where}")


def check_positive(value: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``value`` is strictly positive."""
    if value.numel() and not bool((value > 0).all()):
        raise ValueError(f"{name} must be strictly positive everywhere, found min {float(value.min()):.3g}")
