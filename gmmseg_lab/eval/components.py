"""Component-level anomaly metrics of SegmentMeIfYouCan (Chan et al., NeurIPS 2021 datasets track),
streamed with constant memory.

Pixel metrics (AUROC, AP, FPR95) let one large anomaly outweigh many small ones. SegmentMeIfYouCan
also scores connected components, per image:

- the ground-truth anomaly mask (value 1) and the prediction ``score >= threshold`` (restricted to
  non-void pixels, so a predicted component never runs across void) are split into connected
  components with 8-connectivity (``scipy.ndimage.label`` with a 3x3 structure);
- predicted components smaller than ``min_pred_size`` pixels are dropped; ground-truth components
  smaller than ``min_gt_size`` pixels become void (the benchmark: 500 / 100 on the anomaly track,
  50 / 10 on the obstacle track, for 2048x1024-class images; 0 / 0, no filter, for the lab's
  64-pixel images, where those sizes scaled by image area are about one pixel);
- everything below is counted on the region of interest (non-void pixels) only.

(A caveat for data whose void is a thin band around every anomaly, as in the lab's generated
split: there the benchmark's rule cuts every prediction at the band, and a map that flags every
pixel gets sIoU 1 on every anomaly. ``connect_through_void=True`` labels the predicted components
through the void instead; see :class:`AnomalyComponents`.)

**sIoU of a ground-truth component** ``k`` (IoU adjusted for the other ground-truth components):
with ``K̂(k)`` the predicted components that intersect ``k`` and ``A(k)`` the pixels of the other
ground-truth components, ``sIoU(k) = |k ∩ K̂(k)| / |(k ∪ K̂(k)) \\ A(k)|``. A prediction that merges
two neighbouring anomalies is thus not punished, for either of them, by the pixels of the other;
in counts, the denominator is ``|k|`` plus the inlier pixels of ``K̂(k)``. A ``k`` that no
prediction touches has sIoU 0.

**PPV of a predicted component** ``k̂`` (component-wise precision): ``|k̂ ∩ K(k̂)| / |k̂|``, with
``K(k̂)`` the ground-truth components it intersects: the fraction of its pixels on anomalies.

**F1 at a threshold** ``tau``: a ground-truth component is a true positive when ``sIoU >= tau``,
otherwise a false negative; a predicted component is a false positive when ``PPV < tau``;
``F1(tau) = 2 TP / (2 TP + FN + FP)``, the counts summed over all images. ``mean_f1`` averages
``F1(tau)`` over ``tau = 0.25, 0.30, ..., 0.75``. (Comparisons as the benchmark's code makes them:
``>=`` for TP, ``<`` for FP; the taus are the decimals themselves, not ``linspace`` roundings, so a
component at exactly ``tau`` counts as the decimal says.)

**The pixel threshold** is chosen beforehand, from the pixel-level statistics of the whole split,
as the benchmark does: the threshold of best pixel F1 (:meth:`AnomalyScores.threshold_at_best_f1
<gmmseg_lab.eval.metrics.AnomalyScores.threshold_at_best_f1>`). It is an oracle threshold, chosen
on the data it scores, as in the benchmark; so an evaluator makes two passes over the anomaly split:
the first fills :class:`~gmmseg_lab.eval.metrics.AnomalyScores`, the second this metric.

The state (:class:`AnomalyComponents`) is a handful of sums and per-tau counts, whatever the number
of images: constant memory, mergeable across shards like the other streaming metrics. The
per-image work runs on the CPU (scipy); images of a few megapixels take milliseconds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from .metrics import StreamingMetric, _as_tensor, _check_floating, _check_integer, _check_same_shape, _undefined

__all__ = ["DEFAULT_TAUS", "AnomalyComponents", "component_statistics"]

#: The sIoU / PPV thresholds of SegmentMeIfYouCan: 0.25 to 0.75 in steps of 0.05.
DEFAULT_TAUS: tuple[float, ...] = tuple(round(0.25 + 0.05 * i, 2) for i in range(11))

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _size_filtered_labels(
    binary: np.ndarray, min_size: int, counted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of ``binary`` (``[H, W]`` bool) and their sizes.

    Args:
        counted: ``[H, W]`` bool, the pixels that count towards a component's size (default all).

    Returns:
        ``(labels [H, W] int64, sizes [n + 1] int64)``: components are numbered ``1..n``, background 0;
        with ``min_size > 0``, components smaller than it are set to 0 and their sizes to 0 (the
        numbering keeps its gaps: nothing here needs it dense).
    """
    labels, count = ndimage.label(binary, structure=_EIGHT_CONNECTED)
    labels = labels.astype(np.int64, copy=False)
    sizes = np.bincount((labels if counted is None else labels[counted]).ravel(), minlength=count + 1)
    sizes[0] = 0
    if min_size > 0 and count:
        small = sizes < min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
            sizes[small] = 0
    return labels, sizes


def component_statistics(
    anomaly_gt: np.ndarray,
    predicted: np.ndarray,
    valid: np.ndarray,
    *,
    min_pred_size: int = 0,
    min_gt_size: int = 0,
    connect_through_void: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """sIoU of every ground-truth component and PPV of every predicted component of one image.

    Args:
        anomaly_gt: ``[H, W]`` bool, the ground-truth anomaly pixels (mask value 1).
        predicted: ``[H, W]`` bool, the pixels flagged anomalous (``score >= threshold``).
        valid: ``[H, W]`` bool, the non-void pixels; predictions outside it are dropped before the
            components are labelled.
        min_pred_size, min_gt_size: see the module docstring.
        connect_through_void: label the predicted components on the prediction including its void
            pixels (which still count for nothing); see :class:`AnomalyComponents`.

    Returns:
        ``(siou [G] float64, ppv [P] float64)``: one value per ground-truth component of at least
        ``min_gt_size`` pixels and per predicted component of at least ``min_pred_size`` pixels that
        keeps a pixel in the region of interest; in no particular order.
    """
    gt_labels, gt_sizes = _size_filtered_labels(anomaly_gt & valid, 0)
    if connect_through_void:
        pred_labels, _ = _size_filtered_labels(predicted, min_pred_size, counted=valid)
    else:  # the benchmark's rule: predictions on void are dropped before labelling
        pred_labels, _ = _size_filtered_labels(predicted & valid, min_pred_size)
    roi = valid
    if min_gt_size > 0:
        # Too-small ground-truth components become void, as in the benchmark: their pixels leave
        # the region of interest, for the predictions too.
        small = gt_sizes < min_gt_size
        small[0] = False
        roi = valid & ~small[gt_labels]
    g = gt_labels[roi]
    p = pred_labels[roi]
    n_gt, n_pred = int(gt_labels.max(initial=0)), int(pred_labels.max(initial=0))
    # counts[i, j] = pixels of the ROI in ground-truth component i and predicted component j
    # (0 = none): every quantity below is a sum over its rows or columns.
    counts = np.bincount(g * (n_pred + 1) + p, minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)
    gt_size = counts[1:].sum(axis=1)  # [n_gt]
    pred_size = counts[:, 1:].sum(axis=0)  # [n_pred]
    overlap = counts[1:, 1:]  # [n_gt, n_pred]
    on_inliers = counts[0, 1:]  # [n_pred]: pixels of each predicted component on no anomaly

    # sIoU: |k ∩ K̂(k)| / (|k| + inlier pixels of K̂(k)); the pixels of K̂(k) on other ground-truth
    # components are exactly the adjustment A(k) the benchmark subtracts.
    gt_kept = gt_size > 0
    touches = overlap > 0
    intersection = overlap.sum(axis=1)
    union = gt_size + touches.astype(np.int64) @ on_inliers
    siou = intersection[gt_kept] / union[gt_kept]
    # PPV: the anomalous fraction of each predicted component still in the ROI.
    pred_kept = pred_size > 0
    ppv = overlap.sum(axis=0)[pred_kept] / pred_size[pred_kept]
    return siou.astype(np.float64), ppv.astype(np.float64)


class AnomalyComponents(StreamingMetric):
    """Streaming SegmentMeIfYouCan component metrics: mean sIoU, mean PPV, F1 per tau and mean F1.

    See the module docstring for the definitions. The pixel threshold is fixed at construction
    (pick it with :meth:`AnomalyScores.threshold_at_best_f1
    <gmmseg_lab.eval.metrics.AnomalyScores.threshold_at_best_f1>` after a first pass).

    State (constant size, sums that add up across shards): ``siou_sum`` and ``ppv_sum`` (float64
    scalars), ``num_gt`` and ``num_pred`` (int64 scalars: components counted), and ``tp``, ``fn``,
    ``fp`` (``[T]`` int64, one entry per tau), every one declared with ``dist_reduce_fx="sum"``. It
    stays on the CPU whatever ``to()`` / ``cuda()`` asks (the labelling is scipy's), so under
    ``torch.distributed`` its sum over the ranks needs a backend that takes CPU tensors (gloo).

    Args:
        threshold: pixels with ``score >= threshold`` (compared in float32, as
            :class:`~gmmseg_lab.eval.metrics.AnomalyScores` bins them) are flagged anomalous.
        taus: sIoU / PPV thresholds (default :data:`DEFAULT_TAUS`), each in ``[0, 1]``.
        min_pred_size: predicted components with fewer pixels are dropped (0: keep all).
        min_gt_size: ground-truth components with fewer pixels become void (0: keep all).
        ignore_index: mask value of void pixels (``None``: the mask holds only 0 and 1).
        connect_through_void: label the predicted components on the whole thresholded map, void
            pixels included (they still count for nothing: not in sizes, sIoU or PPV). Off by
            default, the benchmark's rule. Where the void is a thin band around every anomaly (the
            lab's generated split), the benchmark's rule cuts every prediction at the band, so a
            map that flags everything scores sIoU 1 on every anomaly; connecting through the void
            makes that map one large component with a low sIoU and PPV, as intended.
        validate: check mask values on every update.
        kwargs: ``torchmetrics.Metric`` keyword arguments (see
            :class:`~gmmseg_lab.eval.metrics.StreamingMetric`).
    """

    higher_is_better = True  # sIoU, PPV and F1 alike

    def __init__(
        self,
        threshold: float,
        taus: tuple[float, ...] | list[float] = DEFAULT_TAUS,
        *,
        min_pred_size: int = 0,
        min_gt_size: int = 0,
        ignore_index: int | None = 255,
        connect_through_void: bool = False,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
            raise ValueError(f"threshold must be a real number (not NaN), got {threshold!r}")
        taus = tuple(float(t) for t in taus)
        if not taus or any(not 0.0 <= t <= 1.0 for t in taus) or len(set(taus)) != len(taus):
            raise ValueError(f"taus must be distinct values in [0, 1], at least one, got {taus!r}")
        for name, value in (("min_pred_size", min_pred_size), ("min_gt_size", min_gt_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if ignore_index is not None and (not isinstance(ignore_index, int) or ignore_index in (0, 1)):
            raise ValueError(f"ignore_index must be None or an int other than 0 and 1, got {ignore_index!r}")
        super().__init__(**kwargs)
        # Compare in float32, like the histogram that chose the threshold.
        self.threshold = float(np.float32(threshold))
        self.taus = taus
        self.min_pred_size = min_pred_size
        self.min_gt_size = min_gt_size
        self.ignore_index = ignore_index
        self.connect_through_void = bool(connect_through_void)
        self.validate = validate
        for name, dtype in (
            ("siou_sum", torch.float64),
            ("ppv_sum", torch.float64),
            ("num_gt", torch.int64),
            ("num_pred", torch.int64),
        ):
            self.add_state(
                name, default=torch.zeros((), dtype=dtype, device="cpu"), dist_reduce_fx="sum", persistent=True
            )
        for name in ("tp", "fn", "fp"):
            self.add_state(
                name,
                default=torch.zeros(len(taus), dtype=torch.int64, device="cpu"),
                dist_reduce_fx="sum",
                persistent=True,
            )

    def _config(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "taus": self.taus,
            "min_pred_size": self.min_pred_size,
            "min_gt_size": self.min_gt_size,
            "ignore_index": self.ignore_index,
            "connect_through_void": self.connect_through_void,
        }

    def _apply(self, fn: Any, exclude_state: Any = "") -> AnomalyComponents:
        # nn.Module.to / cuda / cpu all come here: the state stays on the CPU, where scipy labels the
        # components (nothing else to move: no parameters, buffers or children).
        return self

    def update(self, scores: Tensor, mask: Tensor) -> None:
        """Accumulate one image (``[H, W]``) or a batch of images (``[B, H, W]``).

        Args:
            scores: anomaly scores, floating, ``[H, W]`` or ``[B, H, W]``, higher = more anomalous
                (any device; NaN on void pixels is harmless, elsewhere it is never flagged).
            mask: integer or bool tensor of the same shape: 1 anomaly, 0 inlier, ``ignore_index``
                void.
        """
        scores = _as_tensor(scores, "scores")
        mask = _as_tensor(mask, "mask")
        _check_floating(scores, "scores")
        _check_integer(mask, "mask", allow_bool=True)
        _check_same_shape(scores, "scores", mask, "mask")
        if scores.dim() not in (2, 3):
            raise ValueError(f"scores must have shape [H, W] or [B, H, W], got {tuple(scores.shape)}")
        mask = mask.to(scores.device)
        # The comparisons run where the scores are; only bool maps travel to the host.
        flagged = scores.to(torch.float32) >= self.threshold
        if mask.dtype == torch.bool:
            anomalous, valid = mask, torch.ones_like(mask)
        else:
            anomalous = mask == 1
            valid = torch.ones_like(anomalous) if self.ignore_index is None else mask != self.ignore_index
            if self.validate:
                bad = ~((mask == 0) | anomalous | ~valid)
                if bool(bad.any()):
                    allowed = "0 (inlier), 1 (anomaly)" + (
                        "" if self.ignore_index is None else f" or {self.ignore_index} (void)"
                    )
                    raise ValueError(f"mask must hold only {allowed}, found {torch.unique(mask[bad])[:5].tolist()}")
        flagged, anomalous, valid = (t.cpu().numpy() for t in (flagged, anomalous, valid))
        if flagged.ndim == 2:
            flagged, anomalous, valid = flagged[None], anomalous[None], valid[None]
        taus = np.asarray(self.taus)
        for image in range(flagged.shape[0]):
            siou, ppv = component_statistics(
                anomalous[image],
                flagged[image],
                valid[image],
                min_pred_size=self.min_pred_size,
                min_gt_size=self.min_gt_size,
                connect_through_void=self.connect_through_void,
            )
            self.siou_sum += float(siou.sum())
            self.ppv_sum += float(ppv.sum())
            self.num_gt += siou.size
            self.num_pred += ppv.size
            tp = (siou[None, :] >= taus[:, None]).sum(axis=1)
            self.tp += torch.from_numpy(tp)
            self.fn += torch.from_numpy(siou.size - tp)
            self.fp += torch.from_numpy((ppv[None, :] < taus[:, None]).sum(axis=1))

    def compute(self) -> dict[str, Any]:
        """The component metrics of everything seen since the last reset.

        Returns:
            dict with ``siou`` (mean sIoU over ground-truth components), ``ppv`` (mean PPV over
            predicted components), ``mean_f1`` (mean of ``F1(tau)`` over the taus),
            ``f1_by_threshold`` (``{"0.25": F1, ...}``, tau written with two decimals),
            ``counts_by_threshold`` (``{"0.25": {"tp", "fn", "fp"}, ...}``), ``num_gt_components``,
            ``num_pred_components``, ``threshold`` (the pixel threshold), ``min_pred_size``,
            ``min_gt_size`` and ``connect_through_void``. ``siou`` is ``None`` without any
            ground-truth component, ``ppv`` without any predicted component, the F1s without either
            (each with a
            :class:`~gmmseg_lab.eval.metrics.MetricUndefinedWarning`).
        """
        num_gt, num_pred = int(self.num_gt), int(self.num_pred)
        if num_gt == 0:
            _undefined("AnomalyComponents.compute(): no ground-truth anomaly component was seen; siou is None")
        if num_pred == 0:
            _undefined("AnomalyComponents.compute(): no predicted component was seen; ppv is None")
        if num_pred == 0 and num_gt == 0:
            _undefined("AnomalyComponents.compute(): no component at all; the F1 scores are None")
        f1_by, counts_by = {}, {}
        for i, tau in enumerate(self.taus):
            tp, fn, fp = int(self.tp[i]), int(self.fn[i]), int(self.fp[i])
            denominator = 2 * tp + fn + fp
            f1_by[f"{tau:.2f}"] = 2 * tp / denominator if denominator else None
            counts_by[f"{tau:.2f}"] = {"tp": tp, "fn": fn, "fp": fp}
        f1_values = [v for v in f1_by.values() if v is not None]
        return {
            "siou": float(self.siou_sum) / num_gt if num_gt else None,
            "ppv": float(self.ppv_sum) / num_pred if num_pred else None,
            "mean_f1": sum(f1_values) / len(f1_values) if len(f1_values) == len(f1_by) else None,
            "f1_by_threshold": f1_by,
            "counts_by_threshold": counts_by,
            "num_gt_components": num_gt,
            "num_pred_components": num_pred,
            "threshold": self.threshold,
            "min_pred_size": self.min_pred_size,
            "min_gt_size": self.min_gt_size,
            "connect_through_void": self.connect_through_void,
        }
