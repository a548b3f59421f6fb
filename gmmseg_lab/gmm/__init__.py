"""The GMM mathematics of GMMSeg, in pure PyTorch (no mmseg import), testable and reusable on its own.

Public API:

- :func:`diag_gaussian_log_prob` ``(x[N, D], means[K, D], stds[K, D]) -> [N, K]``
- :func:`grouped_diag_gaussian_log_prob` ``(x[N, D], groups[N], means[G, M, D], stds[G, M, D]) -> [N, M]``
  (each point under its own group's Gaussians only)
- :func:`sinkhorn` ``(scores[N, M], n_iters=3, epsilon=0.05) -> [N, M]``
- :func:`segmented_sinkhorn_assign` ``(log_prob[N, M], segments[N], num_segments) -> [N]`` (the hard
  Sinkhorn E-step of many classes at once)
- :func:`fit_gmm` ``(x, means_init, stds_init, weights_init=None, n_iters=100, e_step="em",
  reg_var=1e-6) -> (weights[M], means[M, D], stds[M, D])``
- :class:`GMMClassifier`: one mixture per class, online (Sinkhorn) EM, FIFO or streaming memory.
"""

from .classifier import MEMORIES, GMMClassifier
from .density import diag_gaussian_log_prob, float32_overflow_risk, grouped_diag_gaussian_log_prob, mixture_log_prob
from .distributed import all_gather_rows, is_distributed, raise_together
from .fit import E_STEPS, fit_gmm
from .memory import FIFOMemory, StatsMemory, evenly_spaced_keep
from .sinkhorn import normalized_sinkhorn_assign, segmented_sinkhorn_assign, sinkhorn

__all__ = [
    "E_STEPS",
    "MEMORIES",
    "FIFOMemory",
    "GMMClassifier",
    "StatsMemory",
    "all_gather_rows",
    "diag_gaussian_log_prob",
    "evenly_spaced_keep",
    "fit_gmm",
    "float32_overflow_risk",
    "grouped_diag_gaussian_log_prob",
    "is_distributed",
    "mixture_log_prob",
    "normalized_sinkhorn_assign",
    "raise_together",
    "segmented_sinkhorn_assign",
    "sinkhorn",
]
