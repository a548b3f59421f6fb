"""Low-dimensional multimodal toy data: the smallest GMMSeg example (numpy + torch tensors).

Each class is a union of well-separated Gaussian blobs ("modes") interleaved with the other classes'
modes, the case where one Gaussian per class, or a linear softmax, is the wrong model. Fitting
classifiers to it is :mod:`gmmseg_lab.experiments.toy`; drawing them, :mod:`gmmseg_lab.viz.toy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ToyData", "make_toy_data"]


@dataclass
class ToyData:
    """Points ``x [N, D]``, class ``labels [N]``, generating ``modes [N]`` and mode ``centres [C, K, D]``."""

    x: torch.Tensor
    labels: torch.Tensor
    modes: torch.Tensor
    centres: torch.Tensor


def make_toy_data(
    num_classes: int = 3,
    modes_per_class: int = 3,
    n_per_mode: int = 200,
    dim: int = 2,
    spread: float = 0.35,
    seed: int = 0,
) -> ToyData:
    """Classes whose modes sit on interleaved points of a circle of radius 3 (for ``dim=2``).

    Returns float32 tensors; deterministic for a seed.
    """
    if num_classes < 1 or modes_per_class < 1 or n_per_mode < 1 or dim < 2:
        raise ValueError("num_classes, modes_per_class and n_per_mode must be >= 1 and dim >= 2")
    rng = np.random.default_rng(seed)
    total_modes = num_classes * modes_per_class
    angles = 2 * np.pi * np.arange(total_modes) / total_modes
    ring = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    centres = np.zeros((total_modes, dim))
    centres[:, :2] = ring
    if dim > 2:
        centres[:, 2:] = rng.normal(scale=1.0, size=(total_modes, dim - 2))
    # Mode j belongs to class j % C: neighbouring modes on the circle belong to different classes.
    mode_class = np.arange(total_modes) % num_classes
    mode_index = np.arange(total_modes) // num_classes
    which = np.repeat(np.arange(total_modes), n_per_mode)
    x = centres[which] + rng.normal(scale=spread, size=(len(which), dim))
    order = rng.permutation(len(which))
    by_class = np.zeros((num_classes, modes_per_class, dim))
    by_class[mode_class, mode_index] = centres
    return ToyData(
        x=torch.tensor(x[order], dtype=torch.float32),
        labels=torch.tensor(mode_class[which][order], dtype=torch.long),
        modes=torch.tensor(mode_index[which][order], dtype=torch.long),
        centres=torch.tensor(by_class, dtype=torch.float32),
    )
