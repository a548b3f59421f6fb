"""An open-set reading of a GMM classifier: a "none of these" class of constant density.

Near the training data Bayes' posterior of the mixtures is the plain ``max_c p(c|x)``; far from it
every class density falls, and with a background class of constant density the confidence falls
with them, where a softmax stays confident (notebook 00 draws both).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .classifier import GMMClassifier

__all__ = ["background_log_density", "gmm_open_set_confidence"]


def gmm_open_set_confidence(
    class_log_likelihood: torch.Tensor, background_log_density: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes' posterior of the predicted class with a "none of these" class of constant density.

    ``conf(x) = p(x|c*) / (sum_c p(x|c) + b)`` with ``b = exp(background_log_density)``, computed
    as a softmax over ``[log p(x|1), ..., log p(x|C), log b]`` (equal priors). Near the data the
    background is negligible and this is the plain posterior ``max_c p(c|x)``; where every class
    density falls below ``b`` it falls to 0, at the rate the densities fall.

    Args:
        class_log_likelihood: ``[N, C]`` ``log p(x|c)``.
        background_log_density: ``log b``.

    Returns:
        ``(confidence [N] float64, predicted [N] int64)``.
    """
    ll = class_log_likelihood.double()
    background = torch.full((ll.shape[0], 1), float(background_log_density), dtype=torch.float64)
    log_post = ll - torch.logsumexp(torch.cat([ll, background], dim=1), dim=1, keepdim=True)
    confidence, predicted = log_post.max(dim=1)
    return confidence.exp(), predicted


def background_log_density(gmm: GMMClassifier, x: Tensor, quantile: float = 0.01) -> float:
    """The ``quantile`` of ``max_c log p(x_n|c)`` over the training points ``x`` ``[N, D]``.

    As the background density of :func:`gmm_open_set_confidence`, it puts the confidence at about
    one half on the level set that leaves out the ``quantile`` least typical training points.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    with torch.no_grad():
        best = gmm.class_log_likelihood(x.float()).amax(dim=1).double()
    return float(torch.quantile(best, quantile))
