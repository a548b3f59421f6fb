"""Streaming evaluation metrics with constant memory, built on ``torchmetrics.Metric``.

Every metric keeps a few fixed-size tensors as its state, declared with ``add_state(...,
dist_reduce_fx="sum")`` and updated in place by vectorised kernels (``index_add_``, no Python loop
over pixels), so the memory is the same after one image or after a whole data set:

- :class:`SegmentationIoU`: a ``[C, C]`` int64 confusion matrix -> mIoU, per-class IoU, pixel
  accuracy and mean class accuracy, with mmsegmentation's ``IoUMetric`` conventions.
- :class:`CalibrationError`: per-bin counts and sums -> ECE, MCE and the reliability diagram, with
  torchmetrics' ``MulticlassCalibrationError`` binning.
- :class:`AnomalyScores`: a two-row histogram over an order-preserving integer key of the float32
  score -> AUROC, average precision, FPR at 95% TPR, ROC / PR curves, for unbounded scores, and the
  pixel thresholds at best F1 or at a given TPR (for component-level metrics,
  :mod:`gmmseg_lab.eval.components`).

The anomaly scores themselves: :func:`logit_anomaly_scores` (``max_softmax``, ``entropy``,
``max_logit``, ``energy``) and :func:`log_likelihood_anomaly_scores` (GMMSeg's density scores).

Common interface (torchmetrics' own, with what :class:`StreamingMetric` adds): ``update(...)``,
``compute() -> dict``, ``reset()``, ``state_dict()`` / ``load_state_dict()`` (every state is
persistent; plain tensors that can be summed elementwise), ``merge_state`` and its checked wrapper
``merge(other)``, ``to(device)``. Under ``torch.distributed``, ``compute()`` (and the other queries
of the state: ``curves``, ``threshold_at_best_f1``, ...) sums the states over the ranks first and
keeps the local ones afterwards, so every rank must call it; ``all_reduce_()`` sums them in place
for good. The state follows the device of the inputs: the first ``update`` with CUDA tensors moves
it to that device.

Inputs may be float16, bfloat16, float32 or float64 (cast internally) and of any shape: extra
dimensions are flattened. Invalid inputs raise ``ValueError`` naming the argument and what was
expected; with ``validate=False`` only the free checks (shape, dtype) run, skipping the value
checks that need a device-to-host synchronisation.

Undefined results (no pixel scored, no positive or no negative) are returned as ``None`` with a
:class:`MetricUndefinedWarning`, never as a silent NaN, and also for a metric never updated (no
torchmetrics "compute before update" warning). The only NaNs are documented per-class entries
(``per_class_iou`` / ``per_class_acc`` of classes absent from the data), as in mmseg.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = [
    "AnomalyScores",
    "CalibrationError",
    "MetricUndefinedWarning",
    "SegmentationIoU",
    "StreamingMetric",
    "log_likelihood_anomaly_scores",
    "logit_anomaly_scores",
    "softmax_confidence_and_entropy",
]

_Query = TypeVar("_Query", bound=Callable[..., Any])


class MetricUndefinedWarning(UserWarning):
    """A metric is undefined for the data seen so far (e.g. AUROC without any anomalous pixel)."""


# --------------------------------------------------------------------------------------------------
# Input checks: every message names the argument and what was expected.


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(f"{name} must be a torch.Tensor (or numpy array), got {type(value).__name__}")


def _check_same_shape(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{b_name} must have the shape of {a_name} {tuple(a.shape)}, got shape {tuple(b.shape)}")


def _check_integer(value: Tensor, name: str, *, allow_bool: bool = False) -> None:
    if value.is_floating_point() or value.is_complex() or (value.dtype == torch.bool and not allow_bool):
        kinds = "an integer or bool" if allow_bool else "an integer"
        raise ValueError(f"{name} must be {kinds} tensor, got dtype {value.dtype}")


def _check_floating(value: Tensor, name: str) -> None:
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")


def _check_no_nan(value: Tensor, name: str) -> None:
    if value.numel() and bool(torch.isnan(value).any()):
        raise ValueError(f"{name} must not contain NaN, found {int(torch.isnan(value).sum())} NaN value(s)")


def _check_range(value: Tensor, name: str, low: float, high: float, what: str) -> None:
    """Raise unless every entry lies in ``[low, high]``; ``what`` describes the expected values."""
    if value.numel() == 0:
        return
    lo, hi = torch.aminmax(value)
    if bool(lo < low) or bool(hi > high):
        raise ValueError(f"{name} must hold {what}, found values in [{float(lo):.6g}, {float(hi):.6g}]")


def _undefined(message: str) -> None:
    # stacklevel 4 points at the caller: _undefined <- the query <- its synchronising wrapper.
    warnings.warn(message, MetricUndefinedWarning, stacklevel=4)


# --------------------------------------------------------------------------------------------------


def _on_global_state(query: _Query) -> _Query:
    """Run a read-only query of the state (``curves``, ``threshold_at_best_f1``, ...) on the states
    summed over the ranks, as ``compute()`` does; a collective under ``torch.distributed``."""

    @functools.wraps(query)
    def wrapped(self: StreamingMetric, *args: Any, **kwargs: Any) -> Any:
        with self._global_state():
            return query(self, *args, **kwargs)

    return wrapped  # type: ignore[return-value]


class StreamingMetric(Metric):
    """Base class: a ``torchmetrics.Metric`` whose whole state is a few fixed-size tensors that add up.

    Subclasses call ``super().__init__(**kwargs)``, declare every state with
    ``self.add_state(name, default=torch.zeros(...), dist_reduce_fx="sum", persistent=True)``, call
    ``self._place(device)`` and implement ``_config()`` (what must agree for two states to merge).
    torchmetrics then does the bookkeeping: ``reset``, ``state_dict`` / ``load_state_dict``, the
    sum over the ranks in ``compute()`` (``sync`` / ``unsync``), ``merge_state``, device moves,
    pickling and ``copy.deepcopy``. This class adds:

    - ``compute()`` that is never cached and never warns "compute before update": an empty state is
      a defined question whose answer is ``None`` with a :class:`MetricUndefinedWarning`;
    - :meth:`merge` (``merge_state`` after checking class and configuration) and :meth:`all_reduce_`
      (``_sync_dist``, kept), the lab's earlier interface;
    - checked ``load_state_dict`` (keys, shapes; values cast to the state's dtype and device, copied);
    - states that follow the inputs' device (``_follow``), and :meth:`state_nbytes`;
    - child ``StreamingMetric`` modules (see ``ScaledCalibration``) reset, merged and all-reduced
      with their parent.

    Keyword arguments go to ``torchmetrics.Metric`` (``process_group``, ``dist_sync_fn``,
    ``sync_on_compute``, ...). ``dist_sync_on_step`` must stay ``False`` (torchmetrics cannot merge
    such states); ``compute_on_cpu`` only moves list states, and these metrics have none;
    ``compute_with_cache`` is ignored (``compute()`` is never cached).
    """

    is_differentiable = False
    # Each update only adds to the state, so one update per forward() and merge_state() are exact.
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("dist_sync_on_step", False):
            raise ValueError("dist_sync_on_step must be False: the states are summed in compute(), not per step")
        super().__init__(**kwargs)

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _place(self, device: torch.device | str | None) -> None:
        # Called by subclasses once their states exist: nn.Module.to moves the states and defaults.
        if device is not None:
            self.to(device)

    def _follow(self, tensor: Tensor) -> None:
        # States live where the inputs are: no host round trip of million-pixel tensors.
        if tensor.device != self.device:
            self.to(tensor.device)

    def _child_metrics(self) -> list[StreamingMetric]:
        return [child for child in self.children() if isinstance(child, StreamingMetric)]

    # ----------------------------------------------------------------------------------------------
    # compute() and the other queries of the state

    def _wrap_compute(self, compute: Callable[..., Any]) -> Callable[..., Any]:
        # torchmetrics' wrapper would also warn on compute() before update() (ours answers None with
        # a MetricUndefinedWarning), cache the dict until the next update (dicts of lists are mutable,
        # and merge_state / load_state_dict do not clear that cache), and squeeze one-element tensors
        # (the [1, 1] confusion of one class). Only its synchronisation is kept.
        @functools.wraps(compute)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self._global_state():
                return compute(*args, **kwargs)

        return wrapped

    @contextmanager
    def _global_state(self) -> Iterator[None]:
        """Inside: the states summed over the ranks (under ``torch.distributed``); the local states
        are restored on the way out, exception or not (torchmetrics' ``sync_context`` restores them
        only on success, and a metric left synced refuses the next ``compute()``)."""
        self.sync(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync)
        try:
            yield
        finally:
            self.unsync(should_unsync=self._is_synced and self._should_unsync)

    # ----------------------------------------------------------------------------------------------
    # State bookkeeping

    def reset(self) -> None:
        """Zero the state (same shapes, same device) and forget an :meth:`all_reduce_`."""
        super().reset()
        for child in self._child_metrics():
            child.reset()
        self._to_sync = self.sync_on_compute

    def merge(self, other: StreamingMetric) -> StreamingMetric:
        """Add the state of ``other`` (same class and configuration) to this one; returns ``self``.

        ``merge_state`` with a check of the configuration first (adding two confusion matrices of
        different class counts, or two histograms of different resolutions, is meaningless).
        """
        if type(other) is not type(self):
            raise ValueError(f"other must be a {type(self).__name__}, got {type(other).__name__}")
        if other._config() != self._config():
            raise ValueError(f"other must have the configuration {self._config()}, got {other._config()}")
        for mine, theirs in zip(self._child_metrics(), other._child_metrics()):
            mine.merge(theirs)
        self.merge_state({name: value.to(self.device) for name, value in other.metric_state.items()})
        self._update_count += other.update_count
        return self

    def all_reduce_(self, group: Any = None) -> StreamingMetric:
        """Sum the state over all ``torch.distributed`` ranks in place, for good (no-op without a
        process group); returns ``self``.

        Every rank must call it (it is a collective). The state must be on a device the backend
        supports (CUDA for NCCL). Afterwards every rank holds the global state, so ``compute()``
        stops summing over the ranks (it would add up the copies) until :meth:`reset`. Plain
        ``compute()`` is usually what you want: it sums over the ranks and keeps the local state.
        """
        for child in self._child_metrics():
            child.all_reduce_(group)
        if self.distributed_available_fn():
            self._sync_dist(self.dist_sync_fn or gather_all_tensors, process_group=group)
            self._to_sync = False
        return self

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # nn.Module.load_state_dict hands each module its own copy of the dict; torchmetrics would
        # take the tensors as they are (any shape, dtype or device, aliased with the caller's).
        # State names have no dot: dotted keys belong to child metrics, which check their own.
        given = sorted(k[len(prefix) :] for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :])
        if strict and set(given) != set(self._defaults):
            raise ValueError(f"state must have the keys {sorted(self._defaults)}, got {given}")
        for name in self._defaults:
            if prefix + name not in state_dict:
                continue
            current = getattr(self, name)
            value = _as_tensor(state_dict[prefix + name], f"state[{name!r}]")
            if value.shape != current.shape:
                raise ValueError(f"state[{name!r}] must have shape {tuple(current.shape)}, got {tuple(value.shape)}")
            state_dict[prefix + name] = value.detach().to(device=current.device, dtype=current.dtype).clone()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def state_nbytes(self) -> int:
        """Bytes held by the state (child metrics included); independent of how many updates were made."""
        own = sum(getattr(self, name).numel() * getattr(self, name).element_size() for name in self._defaults)
        return own + sum(child.state_nbytes() for child in self._child_metrics())

    def extra_repr(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{config}, device={str(self.device)!r}"


# --------------------------------------------------------------------------------------------------


class SegmentationIoU(StreamingMetric):
    """Streaming confusion matrix for semantic segmentation, with mmseg ``IoUMetric`` conventions.

    State: ``confusion``, ``[C, C]`` int64, ``confusion[t, p]`` = number of scored pixels with
    target class ``t`` predicted as ``p`` (rows: target, columns: prediction, as in torchmetrics and
    scikit-learn). Pixels whose target is ``ignore_index`` are not scored.

    Definitions (identical to mmseg's ``IoUMetric.total_area_to_metrics``, in float64 instead of
    float32, and as fractions instead of percentages):

    - ``per_class_iou[c] = TP_c / (TP_c + FP_c + FN_c)``, NaN when the class is absent from both
      the predictions and the targets (union 0); a class predicted but never present has IoU 0.
      ``compute`` warns (:class:`MetricUndefinedWarning`) naming every class without target pixels.
    - ``miou``: mean of ``per_class_iou`` over the non-NaN entries.
    - ``acc``: overall pixel accuracy ``sum_c TP_c / #scored pixels``.
    - ``per_class_acc[c] = TP_c / #target pixels of c`` (NaN when the class has no target pixel);
      ``macc`` is its NaN-ignoring mean.

    Difference from mmseg: predicted or target labels outside ``[0, C)`` (other than
    ``ignore_index`` in the target) raise ``ValueError`` instead of being silently dropped.

    Args:
        num_classes: number of classes ``C``.
        ignore_index: target value that marks unlabelled pixels (``None``: every pixel counts).
        device: initial device of the state (it follows the inputs afterwards).
        validate: check label ranges on every update (costs one host synchronisation).
        kwargs: ``torchmetrics.Metric`` keyword arguments (see :class:`StreamingMetric`).
    """

    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        *,
        device: torch.device | str | None = None,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if ignore_index is not None and (not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes):
            raise ValueError(f"ignore_index must be None or an int outside [0, {num_classes}), got {ignore_index!r}")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.validate = validate
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
            persistent=True,
        )
        self._place(device)

    def _config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index}

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate one batch.

        Args:
            pred: predicted class indices, integer tensor of any shape (e.g. ``[B, H, W]``),
                values in ``[0, C)``.
            target: ground-truth class indices, integer tensor of the same shape, values in
                ``[0, C)`` or ``ignore_index``.
        """
        pred = _as_tensor(pred, "pred")
        target = _as_tensor(target, "target")
        _check_integer(pred, "pred")
        _check_integer(target, "target")
        _check_same_shape(pred, "pred", target, "target")
        self._follow(pred)
        pred = pred.reshape(-1).to(device=self.device, dtype=torch.int64)
        target = target.reshape(-1).to(device=self.device, dtype=torch.int64)
        C = self.num_classes
        keep = None if self.ignore_index is None else target != self.ignore_index
        if self.validate:
            scored_pred = pred if keep is None else pred[keep]
            scored_target = target if keep is None else target[keep]
            expected = f"class indices in [0, {C})"
            _check_range(scored_pred, "pred", 0, C - 1, f"{expected} where the target is scored")
            _check_range(scored_target, "target", 0, C - 1, f"{expected} or ignore_index={self.ignore_index}")
        cell = target * C + pred
        if keep is None:
            self.confusion.view(-1).index_add_(0, cell, torch.ones_like(cell))
        else:
            # Ignored pixels add 0 to cell 0: no boolean compaction, hence no host sync on CUDA.
            self.confusion.view(-1).index_add_(0, torch.where(keep, cell, 0), keep.to(torch.int64))

    def compute(self) -> dict[str, Any]:
        """The metrics of everything seen since the last reset.

        Returns:
            dict with ``miou`` (float), ``per_class_iou`` (list of C floats, NaN for absent
            classes), ``acc`` (float), ``macc`` (float), ``per_class_acc`` (list of C floats, NaN
            for classes without target pixels), ``num_pixels`` (int, scored pixels),
            ``confusion`` (``[C, C]`` int64 CPU tensor, rows target, columns prediction), and the
            classes without target pixels: ``absent_never_predicted`` (ints; IoU NaN, left out of
            miou) and ``absent_predicted`` (ints; IoU 0, false positives). Scalars are ``None``
            (with a :class:`MetricUndefinedWarning`) when nothing was scored.
        """
        confusion = self.confusion.detach().cpu()
        true_pos = confusion.diagonal().double()
        target_area = confusion.sum(dim=1).double()
        pred_area = confusion.sum(dim=0).double()
        union = target_area + pred_area - true_pos
        nan = torch.tensor(math.nan, dtype=torch.float64)
        iou = torch.where(union > 0, true_pos / union.clamp_min(1), nan)
        class_acc = torch.where(target_area > 0, true_pos / target_area.clamp_min(1), nan)
        num_pixels = int(confusion.sum())
        absent = (target_area == 0).nonzero().flatten().tolist()
        never = [c for c in absent if pred_area[c] == 0]
        only_pred = [c for c in absent if pred_area[c] > 0]
        if num_pixels == 0:
            _undefined("SegmentationIoU.compute(): no pixel was scored; miou, acc and macc are None")
            miou = acc = macc = None
        else:
            if absent:
                _undefined(
                    f"SegmentationIoU.compute(): class(es) {absent} have no target pixel: their per_class_acc "
                    f"is NaN; per_class_iou is NaN (left out of miou) for {never} (never predicted) and 0 "
                    f"for {only_pred} (predicted only: false positives, as in mmseg)"
                )
            miou = float(iou.nanmean())
            acc = float(true_pos.sum() / num_pixels)
            macc = float(class_acc.nanmean())
        return {
            "miou": miou,
            "per_class_iou": iou.tolist(),
            "acc": acc,
            "macc": macc,
            "per_class_acc": class_acc.tolist(),
            "num_pixels": num_pixels,
            "confusion": confusion.clone(),
            "absent_never_predicted": never,
            "absent_predicted": only_pred,
        }


# --------------------------------------------------------------------------------------------------


class CalibrationError(StreamingMetric):
    """Top-label calibration error (ECE, MCE) and reliability diagram, streamed over equal-width bins.

    Binning follows torchmetrics' ``MulticlassCalibrationError`` exactly: edges
    ``torch.linspace(0, 1, n_bins + 1)`` in float32, confidences cast to float32 and assigned with
    ``torch.bucketize(conf, edges, right=True) - 1``, so bin ``b`` is ``[edge_b, edge_{b+1})`` and a
    confidence of exactly 1.0 lands in an extra, last bin ``[1, 1]`` (``n_bins + 1`` bins in all).
    That extra bin matters for segmentation, where float32 softmax saturates to 1.0 on many pixels.

    State (``B = n_bins + 1``): ``count`` ``[B]`` int64, ``confidence_sum`` ``[B]`` float64 (sums
    the confidences as given, in float64), ``correct_count`` ``[B]`` int64.

    Definitions, with ``acc_b = correct_b / count_b``, ``conf_b = confidence_sum_b / count_b``:
    ``ece = sum_b count_b / N * |acc_b - conf_b|`` and ``mce = max_b |acc_b - conf_b|`` over the
    non-empty bins.

    For GMMSeg the confidence is ``max_c softmax(logits)_c`` of the class logits (the per-class
    mixture log-likelihoods); see :meth:`update_from_probs`.

    Args:
        n_bins: number of equal-width bins over ``[0, 1)``.
        device: initial device of the state (it follows the inputs afterwards).
        validate: check value ranges on every update (costs a host synchronisation).
        kwargs: ``torchmetrics.Metric`` keyword arguments (see :class:`StreamingMetric`).
    """

    higher_is_better = False

    def __init__(
        self,
        n_bins: int = 15,
        *,
        device: torch.device | str | None = None,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
            raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
        super().__init__(**kwargs)
        self.n_bins = n_bins
        self.validate = validate
        # Configuration, not state: a plain attribute (not a buffer), moved lazily by _accumulate,
        # so that neither state_dict nor set_dtype touches it.
        self._edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)
        bins = n_bins + 1
        self.add_state("count", default=torch.zeros(bins, dtype=torch.int64), dist_reduce_fx="sum", persistent=True)
        self.add_state(
            "confidence_sum", default=torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum", persistent=True
        )
        self.add_state(
            "correct_count", default=torch.zeros(bins, dtype=torch.int64), dist_reduce_fx="sum", persistent=True
        )
        self._place(device)

    def _config(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins}

    def update(self, confidence: Tensor, correct: Tensor) -> None:
        """Accumulate one batch of top-label confidences.

        Args:
            confidence: floating tensor of any shape (e.g. ``[N]``), values in ``[0, 1]``.
            correct: bool tensor of the same shape, whether the top-label prediction is right.
        """
        confidence = _as_tensor(confidence, "confidence")
        correct = _as_tensor(correct, "correct")
        _check_floating(confidence, "confidence")
        if correct.dtype != torch.bool:
            raise ValueError(f"correct must be a bool tensor, got dtype {correct.dtype}")
        _check_same_shape(confidence, "confidence", correct, "correct")
        if self.validate:
            _check_no_nan(confidence, "confidence")
            _check_range(confidence, "confidence", 0.0, 1.0, "probabilities in [0, 1]")
        self._follow(confidence)
        self._accumulate(confidence.reshape(-1), correct.reshape(-1).to(self.device))

    def update_from_probs(self, probs: Tensor, target: Tensor, ignore_index: int | None = 255) -> None:
        """Accumulate from class probabilities: confidence = max prob, correct = argmax == target.

        Args:
            probs: class probabilities ``[N, C]`` (or ``[B, C, ...]``, class dimension 1), floating,
                values in ``[0, 1]`` (apply the softmax to logits first).
            target: class indices ``[N]`` (or ``[B, ...]``), integer, values in ``[0, C)`` or
                ``ignore_index``; ignored pixels are dropped.
            ignore_index: target value to skip (``None``: keep every entry).
        """
        probs = _as_tensor(probs, "probs")
        target = _as_tensor(target, "target")
        _check_floating(probs, "probs")
        _check_integer(target, "target")
        layout_ok = probs.dim() == target.dim() + 1 and probs.shape[:1] + probs.shape[2:] == target.shape
        if not layout_ok or probs.dim() < 2:
            raise ValueError(
                "probs must have shape [N, C] (or [B, C, ...]) matching target [N] (or [B, ...]), "
                f"got probs {tuple(probs.shape)} and target {tuple(target.shape)}"
            )
        if self.validate:
            _check_no_nan(probs, "probs")
            _check_range(probs, "probs", 0.0, 1.0, "probabilities in [0, 1] (apply softmax to logits)")
        self._follow(probs)
        confidence, predicted = probs.max(dim=1)
        confidence, predicted = confidence.reshape(-1), predicted.reshape(-1)
        target = target.reshape(-1).to(device=self.device, dtype=torch.int64)
        keep = None if ignore_index is None else target != ignore_index
        if self.validate:
            num_classes = probs.shape[1]
            _check_range(
                target if keep is None else target[keep],
                "target",
                0,
                num_classes - 1,
                f"class indices in [0, {num_classes}) or ignore_index={ignore_index}",
            )
        self._accumulate(confidence, predicted == target, keep)

    def _accumulate(self, confidence: Tensor, correct: Tensor, keep: Tensor | None = None) -> None:
        if self._edges.device != self.device:
            self._edges = self._edges.to(self.device)
        # Bin on float32 values against float32 edges, as torchmetrics does, so bins agree exactly.
        bins = torch.bucketize(confidence.float(), self._edges, right=True) - 1
        bins = bins.clamp_(0, self.n_bins)  # only matters with validate=False and out-of-range input
        # index_add_ with 0/1 weights rather than bincount or boolean compaction: no host sync on CUDA.
        weight = torch.ones_like(bins) if keep is None else keep.to(torch.int64)
        confidence = confidence.to(torch.float64)
        if keep is not None:
            confidence = torch.where(keep, confidence, 0.0)
        self.count.index_add_(0, bins, weight)
        self.confidence_sum.index_add_(0, bins, confidence)
        self.correct_count.index_add_(0, bins, correct.to(torch.int64) * weight)

    def compute(self) -> dict[str, Any]:
        """ECE, MCE and the reliability-diagram data of everything seen since the last reset.

        Returns:
            dict with ``ece`` and ``mce`` (floats, ``None`` with a warning when nothing was seen),
            ``num_samples`` (int) and ``bins``: a dict of ``n_bins + 1`` long lists ``lower``,
            ``upper`` (bin edges; the last bin is ``[1.0, 1.0]``), ``count`` (ints), and
            ``confidence`` / ``accuracy`` (per-bin means; ``None`` for empty bins, so no NaN).
        """
        count = self.count.detach().cpu()
        conf_sum = self.confidence_sum.detach().cpu()
        correct = self.correct_count.detach().cpu().double()
        total = int(count.sum())
        filled = count > 0
        denom = count.double().clamp_min(1)
        mean_conf = conf_sum / denom
        mean_acc = correct / denom
        gap = (mean_acc - mean_conf).abs()
        if total == 0:
            _undefined("CalibrationError.compute(): no sample was seen; ece and mce are None")
            ece = mce = None
        else:
            ece = float((gap * count.double()).sum() / total)
            mce = float(gap[filled].max())
        edges = self._edges.double().tolist()
        filled_list = filled.tolist()
        return {
            "ece": ece,
            "mce": mce,
            "num_samples": total,
            "bins": {
                "lower": edges[:-1] + [1.0],
                "upper": edges[1:] + [1.0],
                "count": count.tolist(),
                "confidence": [v if f else None for v, f in zip(mean_conf.tolist(), filled_list)],
                "accuracy": [v if f else None for v, f in zip(mean_acc.tolist(), filled_list)],
            },
        }


# --------------------------------------------------------------------------------------------------


def _float32_order_key(values: Tensor) -> Tensor:
    """Map float32 values to int32 keys with the same order (``a < b`` iff ``key(a) < key(b)``).

    IEEE-754 bit patterns of non-negative floats already sort like the values when read as
    integers; negative floats sort backwards, so their 31 magnitude bits are flipped (the sign bit
    stays, keeping them below every non-negative key). -0.0 must be folded into +0.0 beforehand.
    Works for infinities and denormals; NaN must be excluded beforehand.
    """
    bits = values.contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _order_key_to_float32(keys: Tensor) -> Tensor:
    """Inverse of :func:`_float32_order_key` for int64 keys in the int32 range."""
    keys = keys.to(torch.int64)
    bits = torch.where(keys < 0, keys ^ 0x7FFFFFFF, keys).to(torch.int32)
    return bits.view(torch.float32)


class AnomalyScores(StreamingMetric):
    """Streaming AUROC, average precision and FPR at 95% TPR for unbounded real-valued scores.

    Higher score = more anomalous. The mask marks anomalies with 1, inliers with 0 and void pixels
    with ``ignore_index`` (not scored).

    **How the state stays constant.** Each score is cast to float32 and mapped to an integer key
    whose order is the order of the floats (sign bit kept, magnitude bits flipped for negatives);
    the top ``key_bits`` bits of that key index a histogram with ``2**key_bits`` bins, one row for
    inliers and one for anomalies: state ``histogram`` ``[2, 2**key_bits]`` int64 (16 MiB at the
    default ``key_bits=20``), whatever the number of pixels. The bin layout is fixed (no data-driven
    range), so histograms from any shard, rank or batch can simply be added: the state is declared
    with ``dist_reduce_fx="sum"``, and under ``torch.distributed`` ``compute`` and every query of
    the histogram (``curves``, ``fpr_at_tpr``, ``threshold_at_best_f1``, ``threshold_at_tpr``,
    ``auroc_binning_error_bound``) first sum it over the ranks, so every rank must call them.

    **Precision.** A bin holds the float32 values that share sign, exponent and the top
    ``key_bits - 9`` mantissa bits: within a bin values differ by a factor below
    ``1 + 2**-(key_bits - 9)`` (``1 + 4.9e-4`` at 20 bits, ``1 + 7.8e-3`` at 16 bits), over the whole
    normal float32 range (``1.2e-38 <= |x| <= 3.4e38``); denormals (``|x| < 1.2e-38``) share an
    absolute bin width of ``2**-(117 + key_bits)``, and ``±inf`` get bins of their own (float64 scores
    beyond float32 range become ``±inf``).
    Scores in one bin are treated as tied, so the metrics are *exactly* those of scikit-learn on the
    scores rounded down to their bin's lower edge (``bin_lower_edges``); the difference from the
    unrounded scores is bounded by :meth:`auroc_binning_error_bound` for AUROC, and is far below
    1e-3 for typical data. The resolution is relative to ``|score|``: scores packed in a narrow
    range far from 0 (e.g. all within 3000 ± 0.5) lose resolution; subtract a fixed reference value
    from them before calling ``update``.

    **Definitions** (scikit-learn's, thresholds = distinct binned scores, decreasing):

    - ``auroc``: trapezoidal area under the ROC curve (ties give diagonal segments), as
      ``roc_auc_score``.
    - ``ap``: ``sum_k (R_k - R_{k-1}) P_k``, the step (non-interpolated) definition of
      ``average_precision_score``.
    - ``fpr95``: the FPR at the first (highest) threshold where TPR >= 0.95, i.e. the smallest FPR
      at which at least 95% of the anomalous pixels are detected; from ``roc_curve`` that is
      ``fpr[argmax(tpr >= 0.95)]`` (with ``drop_intermediate=False``). Binning can only raise it,
      by at most the fraction of inliers in the bin where TPR crosses 0.95.

    Measured against scikit-learn on the raw scores (60k pixels, ``key_bits=20``; Gaussian,
    ±1e±35 magnitudes, -500 ± 60 log-likelihoods, tiny values): AUROC within 1e-6, AP within 1e-4,
    FPR95 within 7e-4; exact with exactly tied (e.g. integer) scores.

    **Undefined metrics** are returned as ``None`` with a :class:`MetricUndefinedWarning` (an
    evaluation loop over images without anomalies should not crash): ``auroc`` and ``fpr95`` need
    both classes, ``ap`` needs at least one anomalous pixel.

    Args:
        key_bits: histogram resolution, 12..24 bits (see Precision).
        ignore_index: mask value of void pixels (``None``: the mask holds only 0 and 1).
        device: initial device of the state (it follows the inputs afterwards).
        validate: check for NaN scores and mask values on every update (costs a host sync).
        kwargs: ``torchmetrics.Metric`` keyword arguments (see :class:`StreamingMetric`).
    """

    # AUROC and AP are higher-is-better, FPR95 lower-is-better: no single direction.
    higher_is_better = None

    def __init__(
        self,
        key_bits: int = 20,
        ignore_index: int | None = 255,
        *,
        device: torch.device | str | None = None,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(key_bits, int) or isinstance(key_bits, bool) or not 12 <= key_bits <= 24:
            raise ValueError(f"key_bits must be an int in [12, 24], got {key_bits!r}")
        if ignore_index is not None and (not isinstance(ignore_index, int) or ignore_index in (0, 1)):
            raise ValueError(f"ignore_index must be None or an int other than 0 and 1, got {ignore_index!r}")
        super().__init__(**kwargs)
        self.key_bits = key_bits
        self.ignore_index = ignore_index
        self.validate = validate
        self._shift = 32 - key_bits
        self._num_bins = 1 << key_bits
        self.add_state(
            "histogram",
            default=torch.zeros(2, self._num_bins, dtype=torch.int64),
            dist_reduce_fx="sum",
            persistent=True,
        )
        self._place(device)

    def _config(self) -> dict[str, Any]:
        return {"key_bits": self.key_bits, "ignore_index": self.ignore_index}

    @property
    def relative_bin_width(self) -> float:
        """Upper bound of ``(hi - lo) / |lo|`` for two finite normal values sharing a bin."""
        return 2.0 ** -(self.key_bits - 9)

    def score_to_bin(self, scores: Tensor) -> Tensor:
        """Histogram bin (int64, in ``[0, 2**key_bits)``, increasing with the score) of each score."""
        # Adding +0.0 turns -0.0 into +0.0, so both zeros share a key.
        values = scores.to(torch.float32) + 0.0
        return (_float32_order_key(values) >> self._shift).to(torch.int64) + (self._num_bins // 2)

    def bin_lower_edges(self, bins: Tensor) -> Tensor:
        """Smallest float32 value of each bin (float32; the bin holding ``-inf`` gives ``-inf``)."""
        keys = (bins.to(torch.int64) - self._num_bins // 2) << self._shift
        edges = _order_key_to_float32(keys)
        # The lowest key of the bin that holds -inf is a NaN bit pattern: report -inf.
        return torch.where(torch.isnan(edges), float("-inf"), edges)

    def update(self, scores: Tensor, mask: Tensor) -> None:
        """Accumulate one batch.

        Args:
            scores: anomaly scores, floating tensor of any shape (e.g. ``[B, H, W]``), any finite or
                infinite value, no NaN (on scored pixels); cast to float32.
            mask: integer or bool tensor of the same shape: 1 anomaly, 0 inlier, ``ignore_index``
                void.
        """
        scores = _as_tensor(scores, "scores")
        mask = _as_tensor(mask, "mask")
        _check_floating(scores, "scores")
        _check_integer(mask, "mask", allow_bool=True)
        _check_same_shape(scores, "scores", mask, "mask")
        self._follow(scores)
        scores = scores.reshape(-1)
        mask = mask.reshape(-1).to(self.device)
        if mask.dtype == torch.bool:
            positive, keep = mask, None
        else:
            positive = mask == 1
            keep = None if self.ignore_index is None else mask != self.ignore_index
            if self.validate:
                allowed = "0 (inlier), 1 (anomaly)" + (
                    "" if self.ignore_index is None else f" or {self.ignore_index} (void)"
                )
                valid = (mask == 0) | positive
                if keep is not None:
                    valid |= ~keep
                if not bool(valid.all()):
                    bad = torch.unique(mask[~valid])[:5].tolist()
                    raise ValueError(f"mask must hold only {allowed}, found {bad}")
        if self.validate:
            _check_no_nan(scores if keep is None else scores[keep], "scores")
        cell = positive.to(torch.int64) * self._num_bins + self.score_to_bin(scores)
        weight = torch.ones_like(cell) if keep is None else keep.to(torch.int64)
        if keep is not None:
            cell = torch.where(keep, cell, 0)  # void pixels (perhaps NaN) add 0 to cell 0
        self.histogram.view(-1).index_add_(0, cell, weight)

    # ----------------------------------------------------------------------------------------------

    def _cumulative(self) -> tuple[Tensor, Tensor, Tensor]:
        """Cumulative (tp, fp) counts at each non-empty bin, highest score first, and its lower edge.

        Returns float64 ``[M]`` tp and fp (on the state device) and float32 ``[M]`` thresholds.
        """
        histogram = self.histogram
        filled = torch.nonzero(histogram.sum(dim=0)).flatten().flip(0)
        tp = histogram[1, filled].cumsum(0).to(torch.float64)
        fp = histogram[0, filled].cumsum(0).to(torch.float64)
        return tp, fp, self.bin_lower_edges(filled)

    def _counts(self) -> tuple[int, int]:
        totals = self.histogram.sum(dim=1).tolist()
        return int(totals[1]), int(totals[0])

    def compute(self) -> dict[str, Any]:
        """AUROC, AP and FPR95 of everything seen since the last reset.

        Returns:
            dict with ``auroc``, ``ap``, ``fpr95`` (floats, or ``None`` with a warning when
            undefined, see the class docstring), ``num_pos`` and ``num_neg`` (ints: anomalous and
            inlier pixels scored).
        """
        num_pos, num_neg = self._counts()
        result: dict[str, Any] = {"auroc": None, "ap": None, "fpr95": None}
        result.update(num_pos=num_pos, num_neg=num_neg)
        if num_pos == 0 or num_neg == 0:
            missing = "anomalous (mask 1)" if num_pos == 0 else "inlier (mask 0)"
            undefined = "auroc, ap and fpr95 are" if num_pos == 0 else "auroc and fpr95 are"
            _undefined(f"AnomalyScores.compute(): no {missing} pixel was scored; {undefined} None")
        if num_pos == 0:
            return result
        tp, fp, _ = self._cumulative()
        tp_prev = torch.cat([tp.new_zeros(1), tp[:-1]])
        precision = tp / (tp + fp)
        result["ap"] = float(((tp - tp_prev) * precision).sum() / num_pos)
        if num_neg == 0:
            return result
        tpr = torch.cat([tp.new_zeros(1), tp / num_pos])
        fpr = torch.cat([fp.new_zeros(1), fp / num_neg])
        result["auroc"] = float(torch.trapezoid(tpr, fpr))
        result["fpr95"] = self._fpr_at(tpr, fpr, 0.95)
        return result

    @staticmethod
    def _fpr_at(tpr: Tensor, fpr: Tensor, level: float) -> float:
        # tpr is non-decreasing: the first index with tpr >= level is a left-sided searchsorted.
        index = torch.searchsorted(tpr, torch.tensor([level], dtype=tpr.dtype, device=tpr.device))
        return float(fpr[index.clamp_max(tpr.numel() - 1)].item())

    @_on_global_state
    def fpr_at_tpr(self, tpr: float = 0.95) -> float | None:
        """FPR at the first threshold where TPR >= ``tpr`` (``None`` with a warning if undefined)."""
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"tpr must be in (0, 1], got {tpr!r}")
        num_pos, num_neg = self._counts()
        if num_pos == 0 or num_neg == 0:
            _undefined("AnomalyScores.fpr_at_tpr(): needs both anomalous and inlier pixels; returning None")
            return None
        tp, fp, _ = self._cumulative()
        zero = tp.new_zeros(1)
        return self._fpr_at(torch.cat([zero, tp / num_pos]), torch.cat([zero, fp / num_neg]), tpr)

    @_on_global_state
    def threshold_at_best_f1(self) -> dict[str, float] | None:
        """The pixel threshold of highest pixel-level F1, as SegmentMeIfYouCan picks it for its
        component metrics (``nanargmax`` of ``2PR / (P + R)`` over the precision-recall curve).

        Candidate thresholds are the lower edges of the non-empty bins (as :meth:`curves`): flagging
        ``score >= threshold`` (on float32 scores) flags exactly the pixels of that bin and of every
        higher one, so the precision and recall returned are exactly those of the thresholded
        scores. Among equal F1 the highest threshold (fewest flagged pixels) wins.

        Returns:
            ``{"threshold", "f1", "precision", "recall"}`` (floats), or ``None`` with a
            :class:`MetricUndefinedWarning` when no anomalous pixel was scored (F1 is then 0 or
            undefined at every threshold).
        """
        num_pos, _ = self._counts()
        if num_pos == 0:
            _undefined("AnomalyScores.threshold_at_best_f1(): no anomalous (mask 1) pixel was scored; returning None")
            return None
        tp, fp, thresholds = self._cumulative()
        # F1 = 2PR / (P + R) = 2 tp / (flagged + positives): no 0/0 once a pixel is flagged.
        f1 = 2.0 * tp / (tp + fp + num_pos)
        best = int(torch.argmax(f1))  # the first maximum, i.e. the highest threshold among ties
        flagged = float(tp[best] + fp[best])
        return {
            "threshold": float(thresholds[best]),
            "f1": float(f1[best]),
            "precision": float(tp[best]) / flagged,
            "recall": float(tp[best]) / num_pos,
        }

    @_on_global_state
    def threshold_at_tpr(self, tpr: float = 0.95) -> dict[str, float] | None:
        """The highest pixel threshold whose TPR reaches ``tpr`` (the operating point of FPR95).

        Flag ``score >= threshold`` (float32 scores), as for :meth:`threshold_at_best_f1`.

        Returns:
            ``{"threshold", "tpr", "fpr"}`` (floats; ``fpr`` is ``None`` without inlier pixels), or
            ``None`` with a :class:`MetricUndefinedWarning` when no anomalous pixel was scored.
        """
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"tpr must be in (0, 1], got {tpr!r}")
        num_pos, num_neg = self._counts()
        if num_pos == 0:
            _undefined("AnomalyScores.threshold_at_tpr(): no anomalous (mask 1) pixel was scored; returning None")
            return None
        tp, fp, thresholds = self._cumulative()
        rates = tp / num_pos
        # rates is non-decreasing and ends at 1, so the first index reaching tpr exists.
        index = int(torch.searchsorted(rates, torch.tensor([tpr], dtype=rates.dtype, device=rates.device)))
        index = min(index, rates.numel() - 1)
        return {
            "threshold": float(thresholds[index]),
            "tpr": float(rates[index]),
            "fpr": float(fp[index]) / num_neg if num_neg else None,
        }

    @_on_global_state
    def auroc_binning_error_bound(self) -> float | None:
        """Upper bound on ``|auroc - auroc of the unbinned scores|``.

        Only (anomaly, inlier) pairs sharing a bin can be mis-ordered by the binning, and each
        counts 1/2 instead of 0 or 1: the bound is ``sum_b pos_b * neg_b / (2 * P * N)``.
        """
        num_pos, num_neg = self._counts()
        if num_pos == 0 or num_neg == 0:
            return None
        pairs = (self.histogram[0].to(torch.float64) * self.histogram[1].to(torch.float64)).sum()
        return float(pairs / (2.0 * num_pos * num_neg))

    @_on_global_state
    def curves(self, max_points: int = 500) -> dict[str, np.ndarray]:
        """ROC and precision-recall curves for plotting, at most ``max_points`` points.

        Points are ordered by decreasing threshold and start at ``(fpr, tpr) = (0, 0)`` with
        threshold ``+inf`` and precision 1 (scikit-learn's convention for recall 0). When there are
        more thresholds than ``max_points``, points evenly spaced along the ROC curve's length
        (``fpr + tpr``) are kept, the last point (``fpr = tpr = 1``) always included.

        Returns:
            dict of float64 numpy arrays of equal length ``[M]``: ``fpr``, ``tpr``, ``precision``,
            ``recall`` (= ``tpr``) and ``thresholds`` (lower edge of the bin: a pixel is flagged
            anomalous when its score is ``>=`` the threshold). Raises ``ValueError`` when there are
            no anomalous or no inlier pixels.
        """
        if not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"max_points must be an int >= 2, got {max_points!r}")
        num_pos, num_neg = self._counts()
        if num_pos == 0 or num_neg == 0:
            raise ValueError(f"curves need anomalous and inlier pixels, got num_pos={num_pos}, num_neg={num_neg}")
        tp, fp, thresholds = self._cumulative()
        zero = tp.new_zeros(1)
        tpr = torch.cat([zero, tp / num_pos])
        fpr = torch.cat([zero, fp / num_neg])
        precision = torch.cat([zero + 1.0, tp / (tp + fp)])
        thresholds = torch.cat([thresholds.new_full((1,), float("inf")), thresholds]).to(torch.float64)
        if tpr.numel() > max_points:
            # L1 arc length along the ROC curve goes from 0 to 2 monotonically.
            length = fpr + tpr
            targets = torch.linspace(0.0, 2.0, max_points, dtype=torch.float64, device=length.device)
            index = torch.searchsorted(length, targets).clamp_max(length.numel() - 1)
            index = torch.unique(torch.cat([index, index.new_tensor([0, length.numel() - 1])]))
            tpr, fpr, precision, thresholds = tpr[index], fpr[index], precision[index], thresholds[index]
        out = {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": tpr, "thresholds": thresholds}
        return {key: value.detach().cpu().numpy().copy() for key, value in out.items()}


# --------------------------------------------------------------------------------------------------


def softmax_confidence_and_entropy(logits: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Maximum softmax probability and softmax entropy, computed stably from logits.

    For the softmax baselines' anomaly scores: ``1 - max_prob`` and ``entropy`` (higher = more
    anomalous). Works through ``log_softmax`` (no overflow for huge logits, no ``0 * log 0`` NaN:
    classes with probability 0, e.g. ``-inf`` logits, contribute 0 to the entropy).

    Args:
        logits: floating tensor ``[N, C]`` (or any shape, classes along ``dim``, e.g. ``[B, C, H, W]``
            with ``dim=1``); no NaN or ``+inf``, and at least one finite logit per row.
        dim: the class dimension.

    Returns:
        ``(max_prob, entropy)``, each of the input shape without ``dim`` (``[N]``), float32 (float64
        for float64 input); entropy in nats, in ``[0, log C]``.
    """
    logits = _as_tensor(logits, "logits")
    _check_floating(logits, "logits")
    if logits.dim() == 0 or logits.shape[dim] == 0:
        raise ValueError(f"logits must have a non-empty class dimension {dim}, got {tuple(logits.shape)}")
    _check_no_nan(logits, "logits")
    if logits.numel() and bool(torch.isposinf(logits).any()):
        raise ValueError("logits must not contain +inf")
    if logits.numel() and bool(torch.isneginf(logits).all(dim=dim).any()):
        raise ValueError(f"logits must have at least one finite entry along dim {dim} in every row")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = torch.log_softmax(logits.to(dtype), dim=dim)
    probs = log_probs.exp()
    max_prob = log_probs.amax(dim=dim).exp()
    plogp = torch.where(probs > 0, probs * log_probs, torch.zeros((), dtype=dtype, device=probs.device))
    entropy = (-plogp.sum(dim=dim)).clamp_min(0.0)
    return max_prob, entropy


def _checked_scores_input(values: Tensor, name: str, dim: int) -> Tensor:
    """Shared checks of the per-class inputs of the anomaly-score functions (see their docstrings)."""
    values = _as_tensor(values, name)
    _check_floating(values, name)
    if values.dim() == 0 or values.shape[dim] == 0:
        raise ValueError(f"{name} must have a non-empty class dimension {dim}, got {tuple(values.shape)}")
    _check_no_nan(values, name)
    if values.numel() and bool(torch.isposinf(values).any()):
        raise ValueError(f"{name} must not contain +inf")
    if values.numel() and bool(torch.isneginf(values).all(dim=dim).any()):
        raise ValueError(f"{name} must have at least one finite entry along dim {dim} in every row")
    return values.to(torch.float64 if values.dtype == torch.float64 else torch.float32)


def logit_anomaly_scores(logits: Tensor, dim: int = -1) -> dict[str, Tensor]:
    """The anomaly scores of the softmax family, from class logits; higher = more anomalous.

    - ``max_softmax``: ``1 - max_c softmax(z)_c`` (Hendrycks & Gimpel's MSP baseline);
    - ``entropy``: softmax entropy in nats (:func:`softmax_confidence_and_entropy`);
    - ``max_logit``: ``-max_c z_c`` (Hendrycks et al.'s MaxLogit), which, unlike the softmax,
      keeps the scale of the logits: a pixel where no class scores high stays suspicious even when
      one class is far ahead of the others;
    - ``energy``: ``-logsumexp_c z_c``, the free energy at temperature 1 (Liu et al., 2020).

    For a GMM head these are computed on its class logits (the LayerNorm-ed class scores); the
    density scores are :func:`log_likelihood_anomaly_scores`.

    Args:
        logits: floating tensor, classes along ``dim`` (``[N, C]``, or ``[C, H, W]`` with ``dim=0``);
            no NaN or ``+inf``, at least one finite logit per pixel.
        dim: the class dimension.

    Returns:
        ``{name: scores}``, each score of the input shape without ``dim`` (``[N]`` or ``[H, W]``),
        float32 (float64 for float64 input).
    """
    logits = _checked_scores_input(logits, "logits", dim)
    max_prob, entropy = softmax_confidence_and_entropy(logits, dim=dim)
    return {
        "max_softmax": 1.0 - max_prob,
        "entropy": entropy,
        "max_logit": -logits.amax(dim=dim),
        "energy": -torch.logsumexp(logits, dim=dim),
    }


def log_likelihood_anomaly_scores(log_likelihood: Tensor, dim: int = -1) -> dict[str, Tensor]:
    """GMMSeg's density scores from the class log-likelihoods ``log p(x|c)``; higher = more anomalous.

    - ``neg_max_log_likelihood``: ``-max_c log p(x|c)``, the paper's score;
    - ``neg_logsumexp_log_likelihood``: ``-logsumexp_c log p(x|c)`` = ``-log p(x) - log C`` under
      the uniform class prior: the negative log marginal density, up to a constant.

    Args:
        log_likelihood: floating tensor, classes along ``dim`` (``[N, C]`` or ``[C, H, W]`` with
            ``dim=0``); no NaN or ``+inf``, at least one finite entry per pixel.
        dim: the class dimension.

    Returns:
        ``{name: scores}`` of the input shape without ``dim``, float32 (float64 for float64 input).
    """
    log_likelihood = _checked_scores_input(log_likelihood, "log_likelihood", dim)
    return {
        "neg_max_log_likelihood": -log_likelihood.amax(dim=dim),
        "neg_logsumexp_log_likelihood": -torch.logsumexp(log_likelihood, dim=dim),
    }
