"""Temperature scaling (Guo et al., 2017) with constant memory: fit ``T`` on held-out pixels, score on others.

A classifier's logits ``z`` (``[N, C]``) become ``softmax(z / T)``: one scalar ``T > 0`` that changes
the confidence but never the argmax, so mIoU is untouched while ECE and NLL can only be judged after
it. It matters for GMMSeg twice over (see the method notes): the LayerNorm over the class scores
bounds the top softmax probability of the class logits (about 0.75 at C = 9 with gamma = 1), so a
short schedule gives an under-confident softmax that a ``T < 1`` repairs; Bayes' posterior
``softmax_c log p(x|c)`` has no such bound but its scale is that of log-densities, often far from
calibrated. Comparing calibration *after* temperature scaling asks whether the ranking of the
confidences is good, not only their scale.

Pieces (pure torch/numpy):

- :func:`temperature_split`: which images fit ``T`` and which are scored;
- :class:`LogitReservoir`: a bounded uniform sample of the fitting pixels (logits and labels);
- :func:`fit_temperature`: the ``T`` minimising the mean NLL of ``softmax(z / T)`` (golden-section
  search on ``log T``; the NLL is convex in ``1 / T``, hence unimodal in ``log T``);
- :func:`nll`: that mean NLL;
- :class:`ScaledCalibration`: streaming ECE / MCE / NLL before and after scaling on the scored
  pixels (the same pixels on both sides, so the comparison is like with like).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .metrics import CalibrationError, StreamingMetric, _as_tensor, _check_floating, _check_integer

__all__ = ["DEFAULT_CAPACITY", "LogitReservoir", "ScaledCalibration", "fit_temperature", "nll", "temperature_split"]

#: Default number of held-out pixels kept to fit ``T``: 200k pixels are a few MB for tens of classes
#: (``capacity * (C + 3) * 4`` bytes), and the fitted ``T`` varies by well under 1% between samples.
DEFAULT_CAPACITY = 200_000
#: Default search interval of ``T``; wide, because Bayes' posterior logits are log-densities whose
#: differences can be hundreds of nats.
DEFAULT_BOUNDS = (1e-3, 1e4)


def temperature_split(num_images: int) -> tuple[list[int], list[int]]:
    """The images (positions in the split's sorted order) that fit ``T`` and those scored.

    Every other image: positions 0, 2, 4, ... fit, positions 1, 3, 5, ... are scored. Deterministic,
    independent of the seed, and interleaved so that both halves see the whole split (a split
    sorted by scene or city gives each half of every kind).

    Returns:
        ``(fit, score)``: lists of ints; ``score`` is empty when ``num_images < 2``.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative int, got {num_images!r}")
    if num_images < 2:
        return list(range(num_images)), []
    return list(range(0, num_images, 2)), list(range(1, num_images, 2))


def _checked_logits_target(logits: Any, target: Any) -> tuple[Tensor, Tensor]:
    logits = _as_tensor(logits, "logits")
    target = _as_tensor(target, "target")
    _check_floating(logits, "logits")
    _check_integer(target, "target")
    if logits.dim() != 2 or target.dim() != 1 or logits.shape[0] != target.shape[0] or logits.shape[1] == 0:
        raise ValueError(
            f"logits must have shape [N, C] (C >= 1) and target [N], got logits {tuple(logits.shape)} "
            f"and target {tuple(target.shape)}"
        )
    return logits, target.to(device=logits.device, dtype=torch.int64)


def nll(logits: Tensor, target: Tensor, temperature: float = 1.0, *, chunk: int = 1 << 16) -> float:
    """Mean negative log-likelihood ``-log softmax(z / T)_y`` over the pixels, in float64.

    Args:
        logits: ``[N, C]`` floating (no NaN; ``-inf`` allowed where the label is not).
        target: ``[N]`` integer class indices in ``[0, C)`` (filter ignored pixels first).
        temperature: ``T > 0``.
        chunk: pixels per float64 slice (bounds the temporary memory).

    Returns:
        the mean NLL in nats (``nan`` for ``N = 0``).
    """
    logits, target = _checked_logits_target(logits, target)
    if not temperature > 0.0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite float, got {temperature!r}")
    if target.numel() == 0:
        return math.nan
    total = 0.0
    for start in range(0, target.numel(), chunk):
        z = logits[start : start + chunk].to(torch.float64) / temperature
        y = target[start : start + chunk]
        total += float((torch.logsumexp(z, dim=1) - z.gather(1, y[:, None])[:, 0]).sum())
    return total / target.numel()


def fit_temperature(
    logits: Tensor,
    target: Tensor,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    tol: float = 1e-5,
) -> float:
    """The temperature minimising :func:`nll` over ``(logits, target)``.

    Golden-section search on ``u = log T`` within ``log(bounds)``, to a bracket narrower than
    ``tol`` (relative precision of ``T``; about 32 evaluations of the NLL over the default bounds,
    each one pass over ``[N, C]`` in float64: about 4 s for 200k pixels and 19 classes on one CPU
    core). The search is exact for unimodal objectives, and this one
    is: ``NLL(1/T)`` is convex (``logsumexp`` of a linear function of ``1/T`` minus a linear term).
    When the minimum lies outside ``bounds`` the nearer bound is returned (e.g. every pixel right
    with a margin: the NLL keeps falling as ``T -> 0``).

    Args:
        logits: ``[N, C]`` floating; target: ``[N]`` integer in ``[0, C)``; ``N >= 1``.
        bounds: ``(low, high)`` with ``0 < low < high``.
        tol: width of the final bracket in ``log T``.

    Returns:
        ``T`` (float).
    """
    logits, target = _checked_logits_target(logits, target)
    if target.numel() == 0:
        raise ValueError("logits and target must hold at least one pixel to fit a temperature, got N = 0")
    low, high = (float(b) for b in bounds)
    if not 0.0 < low < high or not math.isfinite(high):
        raise ValueError(f"bounds must be (low, high) with 0 < low < high < inf, got {bounds!r}")
    if not tol > 0.0:
        raise ValueError(f"tol must be positive, got {tol!r}")

    # The objective is evaluated ~40 times: convert once, and take the label's logit out of the loop
    # (NLL(T) = mean(logsumexp(z / T) - z_y / T)).
    z = logits.to(torch.float64)
    z_label_mean = float(z.gather(1, target[:, None]).mean())

    def objective(u: float) -> float:
        inverse = math.exp(-u)
        return float(torch.logsumexp(z * inverse, dim=1).mean()) - z_label_mean * inverse

    ratio = (math.sqrt(5.0) - 1.0) / 2.0  # 1 / golden ratio
    a, b = math.log(low), math.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = objective(c), objective(d)
    while b - a > tol:
        # Keep the sub-bracket holding the lower of the two interior points; one new evaluation.
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = objective(d)
    # The bracket's ends are candidates too: a minimum beyond the bounds ends at a bound.
    candidates = [(fc, c), (fd, d), (objective(a), a), (objective(b), b)]
    return math.exp(min(candidates)[1])


class LogitReservoir:
    """A uniform random sample (without replacement) of at most ``capacity`` labelled pixels.

    Each pixel gets an independent uniform random key, and the reservoir keeps the ``capacity``
    pixels with the smallest keys seen so far: every subset of that size is equally likely,
    whatever the order and the batching of the updates. Once full, only pixels whose key beats the
    largest kept key enter (an expected ``capacity / t`` of the ``t``-th pixel), so most updates
    copy nothing. Memory: ``capacity * (C + 3)`` floats at most.

    State: ``logits`` ``[M, C]`` float32, ``target`` ``[M]`` int64, keys ``[M]`` float64
    (``M <= capacity``), and ``num_seen`` (labelled pixels offered so far).

    Args:
        capacity: the most pixels kept (default :data:`DEFAULT_CAPACITY`).
        seed: seed of the keys (the sample is reproducible for a given stream and seed).
        ignore_index: target value of unlabelled pixels, never kept (``None``: keep all).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, seed: int = 0, ignore_index: int | None = 255) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.seed = seed
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Empty the reservoir (the key stream restarts from ``seed``)."""
        self.logits: Tensor | None = None
        self.target: Tensor | None = None
        self._keys: Tensor | None = None
        self._generator: torch.Generator | None = None
        self.num_seen = 0

    def __len__(self) -> int:
        return 0 if self.target is None else int(self.target.numel())

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Offer a batch of pixels.

        Args:
            logits: ``[N, C]`` floating (e.g. ``seg_logits.flatten(1).t()`` of one image); every
                update must have the same ``C``.
            target: ``[N]`` integer class indices, or ``ignore_index`` (dropped).
        """
        logits, target = _checked_logits_target(logits, target)
        if self.logits is not None and logits.shape[1] != self.logits.shape[1]:
            raise ValueError(
                f"logits must have {self.logits.shape[1]} classes like the earlier updates, got {logits.shape[1]}"
            )
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            logits, target = logits[keep], target[keep]
        n = target.numel()
        if n == 0:
            return
        if self._generator is None:
            self._generator = torch.Generator(device=logits.device).manual_seed(self.seed)
        keys = torch.rand(n, generator=self._generator, device=logits.device, dtype=torch.float64)
        self.num_seen += n
        logits = logits.to(torch.float32)
        if self._keys is not None and self._keys.numel() >= self.capacity:
            enter = keys < self._keys.max()
            if not bool(enter.any()):
                return
            keys, logits, target = keys[enter], logits[enter], target[enter]
        if self._keys is None:
            all_keys, all_logits, all_target = keys, logits, target
        else:
            device = self._keys.device
            all_keys = torch.cat([self._keys, keys.to(device)])
            all_logits = torch.cat([self.logits, logits.to(device)])
            all_target = torch.cat([self.target, target.to(device)])
        if all_keys.numel() > self.capacity:
            kept = torch.topk(all_keys, self.capacity, largest=False).indices
            all_keys, all_logits, all_target = all_keys[kept], all_logits[kept], all_target[kept]
        self._keys, self.logits, self.target = all_keys, all_logits.contiguous(), all_target

    def fit(self, **kwargs: Any) -> float | None:
        """:func:`fit_temperature` on the kept pixels (``kwargs`` passed on); ``None`` when empty."""
        if len(self) == 0:
            return None
        return fit_temperature(self.logits, self.target, **kwargs)

    def nbytes(self) -> int:
        """Bytes held (bounded by ``capacity * (C * 4 + 16)``)."""
        return sum(t.numel() * t.element_size() for t in (self.logits, self.target, self._keys) if t is not None)


class ScaledCalibration(StreamingMetric):
    """Streaming ECE, MCE and NLL of ``softmax(z)`` and ``softmax(z / T)`` on the same pixels.

    A ``torchmetrics.Metric`` (see :class:`~gmmseg_lab.eval.metrics.StreamingMetric`) with two child
    :class:`~gmmseg_lab.eval.metrics.CalibrationError` metrics, ``before`` and ``after``, and its own
    states ``nll_sum_before`` and ``nll_sum_after`` (float64 scalars) and ``num_pixels`` (int64
    scalar), all summed over the ranks: constant memory. ``reset``, ``merge``, ``all_reduce_``,
    ``state_dict`` (keys ``nll_sum_before``, ..., ``before.count``, ...) and device moves cover
    the children too.

    Args:
        temperature: the fitted ``T > 0``.
        n_bins: calibration bins (as :class:`~gmmseg_lab.eval.metrics.CalibrationError`).
        ignore_index: target value of unlabelled pixels (not scored).
        kwargs: ``torchmetrics.Metric`` keyword arguments, passed on to the children too.
    """

    higher_is_better = False  # ECE, MCE and NLL

    def __init__(self, temperature: float, n_bins: int = 15, ignore_index: int | None = 255, **kwargs: Any) -> None:
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not (temperature > 0 and math.isfinite(temperature))
        ):
            raise ValueError(f"temperature must be a positive finite float, got {temperature!r}")
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.n_bins = n_bins
        self.ignore_index = ignore_index
        self.before = CalibrationError(n_bins=n_bins, **kwargs)
        self.after = CalibrationError(n_bins=n_bins, **kwargs)
        for name in ("nll_sum_before", "nll_sum_after"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum", persistent=True)
        self.add_state("num_pixels", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum", persistent=True)

    def _config(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "n_bins": self.n_bins, "ignore_index": self.ignore_index}

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Score a batch: ``logits`` ``[N, C]`` floating, ``target`` ``[N]`` class indices or ``ignore_index``."""
        logits, target = _checked_logits_target(logits, target)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            logits, target = logits[keep], target[keep]
        if target.numel() == 0:
            return
        self._follow(logits)  # the NLL sums (and the children) move to the logits' device
        logits = logits.to(torch.float64)  # the NLL sums run in float64; softmax is cheap either way
        for scale, metric in ((1.0, self.before), (self.temperature, self.after)):
            log_probs = torch.log_softmax(logits / scale, dim=1)
            metric.update_from_probs(log_probs.exp(), target, ignore_index=None)
            total = -log_probs.gather(1, target[:, None]).sum()
            if metric is self.before:
                self.nll_sum_before += total
            else:
                self.nll_sum_after += total
        self.num_pixels += target.numel()

    def compute(self) -> dict[str, Any]:
        """``{"temperature", "ece_before", "ece_after", "mce_before", "mce_after", "nll_before",
        "nll_after", "num_pixels"}``; the scores are ``None`` (with a warning) when nothing was scored."""
        before, after = self.before.compute(), self.after.compute()
        n = int(self.num_pixels)
        return {
            "temperature": self.temperature,
            "ece_before": before["ece"],
            "ece_after": after["ece"],
            "mce_before": before["mce"],
            "mce_after": after["mce"],
            "nll_before": float(self.nll_sum_before) / n if n else None,
            "nll_after": float(self.nll_sum_after) / n if n else None,
            "num_pixels": n,
        }
