"""Anomaly views (notebook 06): score maps, ROC / PR curves, a threshold slider and AUROC / AP tables.

Inputs are plain arrays: per image an RGB ``image [H, W, 3]`` uint8, an anomaly ``score [H, W]``
float (higher = more anomalous: ``-max_c log p(x|c)`` for GMMSeg, ``1 - max softmax`` for a softmax
head) and a ``mask [H, W]`` with 0 inlier, 1 anomaly and 255 void (not scored); and the curves and
metrics of :class:`gmmseg_lab.eval.metrics.AnomalyScores` (``curves()`` and ``compute()``), one
per seed. A pixel is flagged anomalous when its score is ``>=`` the threshold, the convention of
``AnomalyScores.curves``.

Photographs without labels (:func:`gmmseg_lab.experiments.explore.predict_images`) pass ``mask=None``
(``masks=None``) to the image views: every pixel is scored, no ground-truth outline is drawn, and the
views give the share of pixels flagged where they would give TPR / FPR.

Images travel inside the figures as PNG data URIs (``go.Image(source=...)``,
:func:`~gmmseg_lab.viz.common.png_data_uri`): a slider step then carries a few kilobytes per image
instead of a list of every pixel value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..stats import seed_stats
from ._widgets import figure_box
from .common import format_percent, png_data_uri
from .style import ANOMALY_COLOUR, FONT, SCORE_COLORSCALE, blend, hex_colour, image_axes, model_colours

__all__ = [
    "anomaly_table",
    "anomaly_widget",
    "curves_figure",
    "flag_rates",
    "flagged_overlay",
    "mask_outline",
    "quantile_thresholds",
    "score_overlay_figure",
    "threshold_figure",
]

VOID = 255
#: Opacity of the flagged-pixel overlay on the image.
FLAG_OPACITY = 0.65


# --------------------------------------------------------------------------------------------------
# Checks and small helpers.


def _check_image(image, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name} must be a [H, W, 3] uint8 array, got shape {image.shape} dtype {image.dtype}")
    return image


def _check_score_and_mask(
    score, mask, shape: tuple[int, int], score_name: str = "score", mask_name: str = "mask"
) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score)
    mask = np.asarray(mask)
    if score.shape != shape:
        raise ValueError(f"{score_name} must have the image's shape {shape}, got {score.shape}")
    if mask.shape != shape:
        raise ValueError(f"{mask_name} must have the image's shape {shape}, got {mask.shape}")
    if not np.issubdtype(score.dtype, np.floating):
        raise ValueError(f"{score_name} must be a floating-point array, got dtype {score.dtype}")
    if np.issubdtype(mask.dtype, np.floating):
        raise ValueError(f"{mask_name} must be an integer or bool array, got dtype {mask.dtype}")
    mask = mask.astype(np.int64)
    bad = ~np.isin(mask, (0, 1, VOID))
    if bad.any():
        raise ValueError(
            f"{mask_name} must hold only 0 (inlier), 1 (anomaly) or 255 (void), "
            f"found {sorted(set(np.unique(mask[bad]).tolist()))[:5]}"
        )
    if np.isnan(score[mask != VOID]).any():
        raise ValueError(f"{score_name} must not be NaN on scored (non-void) pixels")
    return score.astype(np.float64), mask


def _check_stack(images, scores, masks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``images [N, H, W, 3]``, ``scores [N, H, W]``, ``masks [N, H, W]`` (lists of arrays accepted)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, 3] uint8, got shape {images.shape}")
    scores, masks = np.asarray(scores), np.asarray(masks)
    if len(scores) != len(images) or len(masks) != len(images):
        raise ValueError(
            f"scores and masks must have one entry per image ({len(images)}), "
            f"got {len(scores)} scores and {len(masks)} masks"
        )
    out_scores, out_masks = [], []
    for i, image in enumerate(images):
        image = _check_image(image, f"images[{i}]")
        s, m = _check_score_and_mask(scores[i], masks[i], image.shape[:2], f"scores[{i}]", f"masks[{i}]")
        out_scores.append(s)
        out_masks.append(m)
    return images, np.stack(out_scores), np.stack(out_masks)


def _stride(shape: tuple[int, int], max_side: int) -> int:
    """Subsampling step so that no side exceeds ``max_side`` (keeps pages of large images small)."""
    if not isinstance(max_side, int) or max_side < 8:
        raise ValueError(f"max_side must be an int >= 8, got {max_side!r}")
    return max(1, math.ceil(max(shape) / max_side))


def mask_outline(mask: np.ndarray, value: int = 1) -> tuple[list, list]:
    """Outline of the pixels of ``mask`` (``[H, W]`` ints) equal to ``value``, in pixel coordinates
    (x = column, y = row).

    Returns:
        ``(x, y)`` lists of closed polylines separated by ``None`` (empty when no pixel matches),
        running between pixel centres of the region's boundary.
    """
    import contourpy

    mask = np.asarray(mask)
    # A frame of zeros closes the contours of regions that touch the border.
    inside = np.pad((mask == value).astype(np.float64), 1)
    if not inside.any():
        return [], []
    h, w = inside.shape
    lines = contourpy.contour_generator(np.arange(w) - 1.0, np.arange(h) - 1.0, inside, line_type="Separate").lines(0.5)
    xs, ys = [], []
    for line in lines:
        xs += [round(float(v), 2) for v in line[:, 0]] + [None]
        ys += [round(float(v), 2) for v in line[:, 1]] + [None]
    return xs, ys


def flag_rates(scores, masks, threshold: float) -> dict[str, float | None]:
    """Rates of pixels flagged by ``score >= threshold``, pooled over images, void pixels excluded.

    Args:
        scores, masks: ``[..., H, W]`` arrays of the same shape.

    Returns:
        ``{"tpr", "fpr", "flagged"}``: share of anomalous pixels flagged (``None`` without any),
        share of inlier pixels flagged (``None`` without any), share of scored pixels flagged.
    """
    scores, masks = np.asarray(scores), np.asarray(masks)
    if scores.shape != masks.shape:
        raise ValueError(f"masks must have the shape of scores {scores.shape}, got {masks.shape}")
    flagged = scores >= threshold
    anomaly, inlier = masks == 1, masks == 0
    scored = int(anomaly.sum() + inlier.sum())
    return {
        "tpr": float((flagged & anomaly).sum() / anomaly.sum()) if anomaly.any() else None,
        "fpr": float((flagged & inlier).sum() / inlier.sum()) if inlier.any() else None,
        "flagged": float((flagged & (anomaly | inlier)).sum() / scored) if scored else None,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _quantile_levels(scores, masks, num: int, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """``([num] quantile levels, [num] scores at them)`` over the scored (non-void) pixels."""
    scores, masks = np.asarray(scores), np.asarray(masks)
    if scores.shape != masks.shape:
        raise ValueError(f"masks must have the shape of scores {scores.shape}, got {masks.shape}")
    if not isinstance(num, int) or num < 1 or not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need an int num >= 1 and 0 <= low <= high <= 1, got num={num!r}, low={low}, high={high}")
    scored = scores[masks != VOID]
    if scored.size == 0:
        raise ValueError("masks must leave at least one scored (non-void) pixel")
    levels = np.linspace(low, high, num)
    return levels, np.quantile(scored.astype(np.float64), levels)


def quantile_thresholds(scores, masks=None, num: int = 21, low: float = 0.5, high: float = 0.999) -> np.ndarray:
    """``num`` thresholds at evenly spaced quantiles in ``[low, high]`` of the scored pixels' scores.

    Args:
        scores, masks: ``[..., H, W]`` arrays of the same shape (void = 255 pixels are left out);
            ``masks=None`` (no labels): every pixel is scored.

    Ties can make quantiles coincide: the result is sorted and unique, so it may be shorter.
    """
    if masks is None:
        masks = np.zeros(np.shape(scores), dtype=np.int64)
    return np.unique(_quantile_levels(scores, masks, num, low, high)[1])


def _outline_traces(mask: np.ndarray, show_legend: bool) -> list[go.Scatter]:
    """The ground-truth outline drawn twice, dark and wide under light and thin: visible on anything."""
    x, y = mask_outline(mask)
    # The legend shows the dark halo's key: a white line would vanish on the white legend.
    return [
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            line=dict(color="#000000", width=4),
            hoverinfo="skip",
            name="ground-truth anomaly outline",
            showlegend=show_legend,
            legendgroup="outline",
            meta={"role": "outline-halo"},
        ),
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            line=dict(color="#ffffff", width=1.8),
            hoverinfo="skip",
            showlegend=False,
            legendgroup="outline",
            meta={"role": "outline"},
        ),
    ]


def flagged_overlay(image: np.ndarray, score: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
    """``image`` (``[H, W, 3]`` uint8) with the flagged pixels (``score >= threshold`` and ``mask != 255``;
    ``score`` and ``mask`` are ``[H, W]``) tinted in :data:`ANOMALY_COLOUR`; returns ``[H, W, 3]`` uint8."""
    flagged = (score >= threshold) & (mask != VOID)
    overlay = np.empty_like(image)
    overlay[...] = np.asarray(ANOMALY_COLOUR, dtype=np.uint8)
    return blend(image, overlay, FLAG_OPACITY, flagged)


def _image_trace(image: np.ndarray, step: int, name: str) -> go.Image:
    return go.Image(
        source=png_data_uri(image[::step, ::step]),
        x0=(step - 1) / 2,
        y0=(step - 1) / 2,
        dx=step,
        dy=step,
        name=name,
        hovertemplate="(%{x}, %{y})<extra>" + name + "</extra>",
    )


# --------------------------------------------------------------------------------------------------
# Figures.


def score_overlay_figure(
    image,
    score,
    mask=None,
    *,
    threshold: float | None = None,
    score_range=None,
    opacity: float = 0.7,
    title: str | None = None,
    max_side: int = 384,
) -> go.Figure:
    """An image, its anomaly score over it, and (with ``threshold``) the pixels flagged at that threshold.

    Panels: (1) the image with the ground-truth anomaly outline; (2) the score as a heatmap over the
    image (void pixels left unscored, so the image shows through), same outline; (3) if
    ``threshold`` is given, the image with the pixels whose score is ``>= threshold`` in magenta and
    that threshold's TPR / FPR on this image in the panel title.

    Args:
        image: ``[H, W, 3]`` uint8. score: ``[H, W]`` float, higher = more anomalous.
        mask: ``[H, W]`` 0 inlier, 1 anomaly, 255 void; None for an image without labels (every
            pixel scored, no outline; the flagged panel gives the share of pixels flagged).
        threshold: optional flagging threshold.
        score_range: ``(low, high)`` of the colour scale; default the 1st and 99th percentiles of
            the scored pixels (pass one range to compare images of the same model).
        opacity: heatmap opacity over the image.
        max_side: larger images are subsampled (every k-th pixel) to this many pixels per side.

    Returns:
        A figure; the heatmap trace has ``meta={"role": "score"}`` and its ``z`` is the (subsampled)
        score with NaN at void pixels.
    """
    image = _check_image(image)
    labeled = mask is not None
    if not labeled:
        mask = np.zeros(image.shape[:2], dtype=np.int64)
    score, mask = _check_score_and_mask(score, mask, image.shape[:2])
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    scored = mask != VOID
    if score_range is None:
        values = score[scored] if scored.any() else np.zeros(1)
        score_range = tuple(np.percentile(values, [1, 99]).tolist())
    low, high = (float(v) for v in score_range)
    if not high > low:
        high = low + 1e-6  # a constant score still gets a valid colour scale
    step = _stride(image.shape[:2], max_side)
    panels = ["image and ground-truth anomalies" if labeled else "image (no labels)", "anomaly score"]
    if threshold is not None:
        rates = flag_rates(score, mask, threshold)
        panels.append(
            f"score ≥ {threshold:.4g}: TPR {_percent(rates['tpr'])}, FPR {_percent(rates['fpr'])}"
            if labeled
            else f"score ≥ {threshold:.4g}: {_percent(rates['flagged'])} of the pixels flagged"
        )
    # Room between the panels for the score's colour bar, right of the second panel.
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.1)
    fig.add_trace(_image_trace(image, step, "image"), row=1, col=1)
    outlines = _outline_traces if labeled else (lambda _mask, show_legend: [])
    for trace in outlines(mask, show_legend=True):
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(_image_trace(image, step, "image"), row=1, col=2)
    shown = np.where(scored, score, np.nan)[::step, ::step]
    fig.add_trace(
        go.Heatmap(
            z=shown,
            x0=(step - 1) / 2,
            dx=step,
            y0=(step - 1) / 2,
            dy=step,
            zmin=low,
            zmax=high,
            colorscale=SCORE_COLORSCALE,
            opacity=opacity,
            name="anomaly score",
            meta={"role": "score"},
            colorbar=dict(
                title=dict(text="anomaly<br>score"),
                len=0.8,
                x=fig.layout.xaxis2.domain[1] + 0.005,
                xanchor="left",
                thickness=14,
            ),
            hovertemplate="(%{x}, %{y})<br>score %{z:.4g}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    for trace in outlines(mask, show_legend=False):
        fig.add_trace(trace, row=1, col=2)
    if threshold is not None:
        fig.add_trace(_image_trace(flagged_overlay(image, score, mask, threshold), step, "flagged"), row=1, col=3)
        for trace in outlines(mask, show_legend=False):
            fig.add_trace(trace, row=1, col=3)
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"flagged (score ≥ {threshold:.4g})",
                marker=dict(symbol="square", size=12, color=hex_colour(ANOMALY_COLOUR)),
            ),
            row=1,
            col=3,
        )
    image_axes(fig, len(panels), shape=image.shape[:2])
    width = 380 * len(panels) + 160
    fig.update_layout(
        title=dict(
            text=title
            or (
                "Anomaly score (higher = more anomalous); void pixels are not scored"
                if labeled
                else "Anomaly score (higher = more anomalous); no labels, every pixel scored"
            ),
            x=0.01,
            xanchor="left",
        ),
        font=FONT,
        template="plotly_white",
        width=width,
        height=500,
        margin=dict(l=60, r=40, t=90, b=90),
        legend=dict(orientation="h", x=0.0, xref="container", y=0.01, yref="container", yanchor="bottom"),
    )
    fig.update_annotations(font_size=13)
    return fig


#: ``np.trapezoid`` (numpy >= 2.0) or its older name ``np.trapz`` (numpy 1.x; removed in 2.x).
_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")


def _curve_metrics(curves: Mapping[str, np.ndarray]) -> dict[str, float]:
    """AUROC, AP and FPR95 from the curve points (exact when no point was dropped by ``max_points``)."""
    fpr, tpr = np.asarray(curves["fpr"], np.float64), np.asarray(curves["tpr"], np.float64)
    precision, recall = np.asarray(curves["precision"], np.float64), np.asarray(curves["recall"], np.float64)
    above = np.nonzero(tpr >= 0.95)[0]
    return {
        "auroc": float(_trapezoid(tpr, fpr)),
        "ap": float(np.sum(np.diff(recall) * precision[1:])),
        "fpr95": float(fpr[above[0]]) if above.size else None,
    }


def _check_curves(curves: Mapping, name: str) -> dict[str, np.ndarray]:
    if not isinstance(curves, Mapping):
        raise TypeError(f"{name} must be a dict from AnomalyScores.curves(), got {type(curves).__name__}")
    keys = ("fpr", "tpr", "precision", "recall")
    missing = [k for k in keys if k not in curves]
    if missing:
        raise ValueError(f"{name} must have the keys {list(keys)} (AnomalyScores.curves()), missing {missing}")
    out = {k: np.asarray(curves[k], dtype=np.float64) for k in keys}
    size = len(out["fpr"])
    if size < 2 or any(len(v) != size for v in out.values()):
        raise ValueError(
            f"{name}: fpr, tpr, precision and recall must have the same length >= 2, got "
            f"{ {k: len(v) for k, v in out.items()} }"
        )
    return out


def _metric_values(runs: Sequence[Mapping], key: str) -> list[float | None]:
    return [run.get(key) for run in runs]


_ANOMALY_KEYS = ("auroc", "ap", "fpr95")


def _check_anomaly_metrics(runs: Sequence[Mapping], name: str) -> None:
    """Each of ``runs`` (one dict per seed) must have auroc, ap and fpr95 (``AnomalyScores.compute()``)."""
    for i, m in enumerate(runs):
        missing = [k for k in _ANOMALY_KEYS if k not in m]
        if missing:
            hint = " (pass metrics['anomaly'], not the whole metrics.json)" if "anomaly" in m else ""
            raise ValueError(
                f"{name}[{i}] must have auroc, ap and fpr95 (AnomalyScores.compute() or "
                f"metrics.json['anomaly']), missing {missing}{hint}"
            )


def curves_figure(
    curves_by_model: Mapping[str, Sequence[Mapping]],
    metrics_by_model: Mapping[str, Sequence[Mapping]] | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """ROC (left) and precision-recall (right) curves, one colour per model, one line per seed.

    The legend gives AUROC, AP and FPR95 as mean ± std over seeds (%), from ``metrics_by_model``
    when given (``AnomalyScores.compute()``, exact), else from the curve points (exact unless
    ``curves()`` dropped points). Each seed's FPR95, the FPR where 95 % of the anomalous pixels are
    flagged, is marked on its ROC curve (×), on the dotted TPR = 95 % line. The PR panel's dashed
    line is chance: the share of anomalous pixels (the precision of flagging every pixel).

    Args:
        curves_by_model: ``{label: [AnomalyScores.curves() per seed]}``.
        metrics_by_model: ``{label: [AnomalyScores.compute() per seed]}``, same seeds in the same
            order (``metrics.json``'s ``anomaly`` entries work too).
        title: figure title.

    Returns:
        A figure whose curve traces carry ``meta={"model", "seed", "panel"}``.
    """
    if not isinstance(curves_by_model, Mapping) or not curves_by_model:
        raise ValueError("curves_by_model must be a non-empty dict {label: [curves per seed]}")
    colours = model_colours(list(curves_by_model))
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=("ROC: inliers flagged against anomalies found", "Precision-recall"),
    )
    chance = set()
    for label, runs in curves_by_model.items():
        if isinstance(runs, Mapping) or not runs:
            raise ValueError(f"curves_by_model[{label!r}] must be a non-empty list of curves dicts (one per seed)")
        checked = [_check_curves(c, f"curves_by_model[{label!r}][{i}]") for i, c in enumerate(runs)]
        if metrics_by_model is not None:
            if label not in metrics_by_model:
                raise ValueError(f"metrics_by_model has no entry for {label!r} (it has {list(metrics_by_model)})")
            metrics = list(metrics_by_model[label])
            if len(metrics) != len(runs):
                raise ValueError(
                    f"metrics_by_model[{label!r}] must have one dict per seed like "
                    f"curves_by_model[{label!r}] ({len(runs)}), got {len(metrics)}"
                )
            _check_anomaly_metrics(metrics, f"metrics_by_model[{label!r}]")
        else:
            metrics = [_curve_metrics(c) for c in checked]
        seeds = len(runs)
        name = (
            f"{label}: AUROC {format_percent(_metric_values(metrics, 'auroc'))} %, "
            f"AP {format_percent(_metric_values(metrics, 'ap'))} %, "
            f"FPR95 {format_percent(_metric_values(metrics, 'fpr95'))} % "
            f"({seeds} seed{'s' if seeds > 1 else ''})"
        )
        colour = colours[label]
        for i, (curve, metric) in enumerate(zip(checked, metrics)):
            common = dict(mode="lines", line=dict(color=colour, width=2), legendgroup=label, name=name)
            fig.add_trace(
                go.Scatter(
                    x=curve["fpr"],
                    y=curve["tpr"],
                    showlegend=i == 0,
                    meta={"model": label, "seed": i, "panel": "roc"},
                    hovertemplate=f"<b>{label}</b> seed {i}<br>FPR %{{x:.4f}}<br>TPR %{{y:.4f}}<extra></extra>",
                    **common,
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    # "vh": AP = sum_k (R_k - R_{k-1}) P_k gives P_k to (R_{k-1}, R_k] (recall increases
                    # along the points), so the area under the drawn steps is the AP.
                    x=curve["recall"],
                    y=curve["precision"],
                    showlegend=False,
                    line_shape="vh",
                    meta={"model": label, "seed": i, "panel": "pr"},
                    hovertemplate=f"<b>{label}</b> seed {i}<br>recall %{{x:.4f}}<br>precision %{{y:.4f}}<extra></extra>",  # noqa: E501
                    **common,
                ),
                row=1,
                col=2,
            )
            if metric.get("fpr95") is not None:
                fig.add_trace(
                    go.Scatter(
                        x=[metric["fpr95"]],
                        y=[0.95],
                        mode="markers",
                        legendgroup=label,
                        showlegend=False,
                        marker=dict(symbol="x", size=11, color=colour, line=dict(color="#000000", width=1)),
                        meta={"model": label, "seed": i, "panel": "fpr95"},
                        hovertemplate=f"<b>{label}</b> seed {i}<br>FPR95 = %{{x:.4f}}<extra></extra>",
                    ),
                    row=1,
                    col=1,
                )
            chance.add(round(float(curve["precision"][-1]), 6))
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line=dict(color="#888888", dash="dash", width=1),
            name="chance",
            hoverinfo="skip",
            legendgroup="chance",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0.95, 0.95],
            mode="lines",
            line=dict(color="#555555", dash="dot", width=1),
            name="TPR = 95 % (× marks each seed's FPR95)",
            hoverinfo="skip",
        ),
        row=1,
        col=1,
    )
    for level in sorted(chance):
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[level, level],
                mode="lines",
                showlegend=False,
                legendgroup="chance",
                line=dict(color="#888888", dash="dash", width=1),
                hovertemplate=f"chance: {100 * level:.2f} % of pixels are anomalous<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="false-positive rate (inlier pixels flagged)", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="true-positive rate (anomalous pixels flagged)", range=[0, 1.01], row=1, col=1)
    fig.update_xaxes(title_text="recall (anomalous pixels flagged)", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="precision (flagged pixels that are anomalous)", range=[0, 1.01], row=1, col=2)
    fig.update_layout(
        title=dict(text=title or "Pixel-level anomaly detection: ROC and precision-recall", x=0.01, xanchor="left"),
        font=FONT,
        template="plotly_white",
        width=1150,
        height=600 + 22 * len(curves_by_model),
        margin=dict(l=80, r=30, t=90, b=120 + 22 * len(curves_by_model)),
        legend=dict(orientation="h", x=0.0, xref="container", y=0.01, yref="container", yanchor="bottom"),
    )
    return fig


def threshold_figure(
    images, scores, masks, thresholds, *, titles: Sequence[str] | None = None, max_side: int = 384
) -> go.Figure:
    """Flagged pixels at each threshold, with a slider over the thresholds that works in static HTML.

    Each image is shown with the pixels whose score is ``>= threshold`` tinted magenta and the
    ground-truth anomaly outline; the title gives that threshold's TPR and FPR pooled over all the
    images (void pixels excluded). Slider steps use plotly's ``"update"`` method on the images'
    ``source`` (a PNG each), so no kernel is needed.

    Args:
        images: ``[N, H, W, 3]`` uint8 (or a list of such arrays of one size).
        scores: ``[N, H, W]`` float. masks: ``[N, H, W]`` 0 / 1 / 255, or None for images without
            labels (no outline; the title gives the share of pixels flagged).
        thresholds: ``[K]`` increasing or not; one slider step each, in the given order.
        titles: optional ``N`` panel titles (default ``"image i"``).
        max_side: larger images are subsampled to this many pixels per side.

    Returns:
        A figure with ``layout.sliders[0].steps`` of length K; step ``k``'s ``args[0]["source"]``
        holds the N PNG data URIs and its label the threshold.
    """
    labeled = masks is not None
    if not labeled:
        masks = np.zeros(np.shape(scores), dtype=np.int64)
    images, scores, masks = _check_stack(images, scores, masks)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or np.isnan(thresholds).any():
        raise ValueError(f"thresholds must be a non-empty list of numbers, got {thresholds!r}")
    n = len(images)
    if titles is None:
        titles = [f"image {i}" for i in range(n)]
    if len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    step = _stride(images.shape[1:3], max_side)
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(titles), horizontal_spacing=0.03)
    image_traces = []

    def sources(threshold: float) -> list[str]:
        return [
            png_data_uri(flagged_overlay(images[i], scores[i], masks[i], threshold)[::step, ::step]) for i in range(n)
        ]

    def heading(threshold: float) -> str:
        rates = flag_rates(scores, masks, threshold)
        if not labeled:
            return (
                f"Pixels flagged anomalous at score ≥ {threshold:.4g}: {_percent(rates['flagged'])} of the "
                f"pixels (magenta)<br><sup>pooled over {n} image{'s' if n > 1 else ''}; no labels, so no "
                "TPR / FPR</sup>"
            )
        return (
            f"Pixels flagged anomalous at score ≥ {threshold:.4g}: TPR {_percent(rates['tpr'])} of the anomalous "
            f"pixels, FPR {_percent(rates['fpr'])} of the inliers<br><sup>pooled over {n} image"
            f"{'s' if n > 1 else ''}; {_percent(rates['flagged'])} of all scored pixels flagged (magenta)</sup>"
        )

    first = sources(thresholds[0])
    for i in range(n):
        fig.add_trace(
            go.Image(
                source=first[i],
                x0=(step - 1) / 2,
                y0=(step - 1) / 2,
                dx=step,
                dy=step,
                name=titles[i],
                hovertemplate="(%{x}, %{y})<extra></extra>",
                meta={"role": "flagged", "image": i},
            ),
            row=1,
            col=i + 1,
        )
        image_traces.append(len(fig.data) - 1)
        for trace in _outline_traces(masks[i], show_legend=i == 0) if labeled else []:
            fig.add_trace(trace, row=1, col=i + 1)
    image_axes(fig, n, shape=images.shape[1:3])
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name="flagged pixels (score ≥ threshold)",
            marker=dict(symbol="square", size=12, color=hex_colour(ANOMALY_COLOUR)),
        ),
        row=1,
        col=1,
    )
    steps = []
    for k, threshold in enumerate(thresholds):
        steps.append(
            dict(
                method="update",
                label=f"{threshold:.4g}",
                args=[
                    {"source": first if k == 0 else sources(threshold)},
                    {"title.text": heading(threshold)},
                    image_traces,
                ],
            )
        )
    panel = 360 if n > 1 else 520
    fig.update_layout(
        title=dict(text=heading(thresholds[0]), x=0.01, xanchor="left"),
        font=FONT,
        template="plotly_white",
        width=max(700, panel * n + 120),
        height=panel + 260,
        margin=dict(l=60, r=30, t=100, b=170),
        legend=dict(orientation="h", x=0.0, xref="container", y=0.01, yref="container", yanchor="bottom"),
        sliders=[
            dict(
                active=0,
                steps=steps,
                x=0.0,
                len=1.0,
                y=-0.14,
                yanchor="top",
                pad=dict(t=10),
                currentvalue=dict(prefix="threshold (score ≥): ", font=dict(size=14)),
            )
        ],
    )
    return fig


def _anomaly_rows(metrics_by_model: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    if not isinstance(metrics_by_model, Mapping) or not metrics_by_model:
        raise ValueError("metrics_by_model must be a non-empty dict {label: [metrics per seed]}")
    rows = []
    for label, runs in metrics_by_model.items():
        if isinstance(runs, Mapping) or not runs:
            raise ValueError(f"metrics_by_model[{label!r}] must be a non-empty list of dicts (one per seed)")
        _check_anomaly_metrics(runs, f"metrics_by_model[{label!r}]")
        row = {"model": label}
        for key, column in (("auroc", "AUROC (%)"), ("ap", "AP (%)"), ("fpr95", "FPR95 (%)")):
            row[column] = format_percent(_metric_values(runs, key))
        row["seeds"] = len(runs)
        for key in _ANOMALY_KEYS:
            stat = seed_stats(_metric_values(runs, key))
            row[f"{key}_mean"], row[f"{key}_std"] = stat["mean"], stat["std"]
        rows.append(row)
    return rows


def anomaly_table(metrics_by_model: Mapping[str, Sequence[Mapping]]):
    """AUROC, AP and FPR95 per model, mean ± std over seeds, as a ``pandas.DataFrame``.

    Args:
        metrics_by_model: ``{label: [AnomalyScores.compute() per seed]}`` (``metrics.json["anomaly"]``).

    Returns:
        Columns ``model``, ``AUROC (%)``, ``AP (%)``, ``FPR95 (%)`` (``"mean ± std"`` text), ``seeds``,
        and the fractions ``auroc_mean``, ``auroc_std``, ``ap_mean``, ``ap_std``, ``fpr95_mean``,
        ``fpr95_std`` (metrics undefined for a seed, ``None``, are left out of its mean).
    """
    import pandas as pd

    return pd.DataFrame(_anomaly_rows(metrics_by_model))


def _threshold_options(scores: np.ndarray, masks: np.ndarray, num: int) -> list[tuple[str, float]]:
    """The thresholds of :func:`quantile_thresholds` (quantiles 0.5..0.999), each labelled with the
    share of pixels it flags."""
    quantiles, values = _quantile_levels(scores, masks, num, 0.5, 0.999)
    options, seen = [], set()
    for q, t in zip(quantiles, values):
        if float(t) in seen:
            continue
        seen.add(float(t))
        options.append((f"{t:.4g} (top {100 * (1 - q):.1f} % of pixels)", float(t)))
    return options


def anomaly_widget(
    images, masks, scores_by_model: Mapping[str, np.ndarray], *, num_thresholds: int = 41, max_side: int = 384
):
    """Live anomaly explorer for JupyterLab: pick a model, an image and a threshold.

    Controls (``box.controls``): ``"model"`` (dropdown of the labels), ``"image"`` (slider over the
    images) and ``"threshold"`` (``SelectionSlider`` over thresholds at quantiles 50 %..99.9 % of
    the model's scored pixels, pooled over the images; its options change with the model, since
    scores of different models live on different scales). ``box.figure`` is the current
    :func:`score_overlay_figure` with the flagged panel.

    Args:
        images: ``[N, H, W, 3]`` uint8. masks: ``[N, H, W]`` 0 / 1 / 255, or None for images
            without labels (every pixel scored, no outline, the share of pixels flagged).
        scores_by_model: ``{label: [N, H, W] float scores}``.
    """
    import ipywidgets as widgets

    if not isinstance(scores_by_model, Mapping) or not scores_by_model:
        raise ValueError("scores_by_model must be a non-empty dict {label: [N, H, W] scores}")
    labeled = masks is not None
    if not labeled:
        masks = np.zeros(np.shape(images)[:3], dtype=np.int64)
    checked = {}
    for label, scores in scores_by_model.items():
        checked_images, checked[label], checked_masks = _check_stack(images, scores, masks)
    images, masks = checked_images, checked_masks
    options = {label: _threshold_options(s, masks, num_thresholds) for label, s in checked.items()}
    labels = list(checked)

    def middle(label: str) -> float:
        # Start where about 5 % of the pixels are flagged: a readable first picture.
        values = [v for _, v in options[label]]
        return values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]

    controls = {
        "model": widgets.Dropdown(options=labels, value=labels[0], description="model"),
        "image": widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
        "threshold": widgets.SelectionSlider(
            options=options[labels[0]],
            value=middle(labels[0]),
            description="threshold",
            continuous_update=False,
            layout=widgets.Layout(width="520px"),
        ),
    }

    box = None

    def on_model(change) -> None:
        # The thresholds follow the model (scores of two models live on different scales); one
        # redraw once both have changed.
        slider = controls["threshold"]
        with box.held():
            slider.options = options[change["new"]]
            slider.value = middle(change["new"])

    controls["model"].observe(on_model, names="value")
    # One colour range per model, over all its images (images of one model compare directly),
    # computed once per model rather than per redraw.
    score_ranges: dict[str, tuple[float, float]] = {}

    def render() -> go.Figure:
        label, i = controls["model"].value, controls["image"].value
        threshold = controls["threshold"].value
        scores = checked[label]
        if label not in score_ranges:
            score_ranges[label] = tuple(np.percentile(scores[masks != VOID], [1, 99]).tolist())
        title = f"{label}, image {i}: anomaly score and pixels flagged at score ≥ {threshold:.4g}"
        return score_overlay_figure(
            images[i],
            scores[i],
            masks[i] if labeled else None,
            threshold=threshold,
            max_side=max_side,
            score_range=score_ranges[label],
            title=title,
        )

    # The model's own handler (on_model) redraws once after the thresholds follow; observing the
    # model here as well would redraw a second time.
    box = figure_box(controls, render, redraw_on=("image", "threshold"))
    return box


# --------------------------------------------------------------------------------------------------
# Every anomaly score, SegmentMeIfYouCan's component metrics, and results per anomaly source
# (metrics.json's anomaly_by_score, anomaly_components, anomaly_by_source).

#: What each score of ``anomaly_by_score`` is (higher = more anomalous), in the order tables show them.
SCORE_LABELS = {
    "neg_max_log_likelihood": "−max_c log p(x|c) (GMMSeg)",
    "neg_logsumexp_log_likelihood": "−logsumexp_c log p(x|c)",
    "max_softmax": "1 − max softmax",
    "entropy": "softmax entropy",
    "max_logit": "−max logit",
    "energy": "energy, −logsumexp logits",
}


def _check_metrics_by_model(metrics_by_model: Mapping, key: str) -> None:
    if not isinstance(metrics_by_model, Mapping) or not metrics_by_model:
        raise ValueError("metrics_by_model must be a non-empty dict {label: [metrics.json per seed]}")
    for label, runs in metrics_by_model.items():
        if isinstance(runs, Mapping) or not runs:
            raise ValueError(f"metrics_by_model[{label!r}] must be a non-empty list of metrics.json dicts")
        for i, m in enumerate(runs):
            if key not in m:
                raise ValueError(
                    f"metrics_by_model[{label!r}][{i}] has no {key!r} (a metrics.json of a data set "
                    "with an anomaly split, written by the current evaluator)"
                )


def scores_table(metrics_by_model: Mapping[str, Sequence[Mapping]]):
    """AUROC, AP and FPR95 of every anomaly score of every model, mean ± std over seeds (%).

    Args:
        metrics_by_model: ``{label: [metrics.json per seed]}``; each has ``anomaly_by_score``.

    Returns:
        a ``pandas.DataFrame`` with columns ``model``, ``score``, ``AUROC (%)``, ``AP (%)``,
        ``FPR95 (%)``, ``seeds`` and ``auroc_mean``; one row per (model, score the model offers).
    """
    import pandas as pd

    _check_metrics_by_model(metrics_by_model, "anomaly_by_score")
    rows = []
    for label, runs in metrics_by_model.items():
        names = [s for s in SCORE_LABELS if all(s in m["anomaly_by_score"] for m in runs)]
        for score in names:
            per_seed = [m["anomaly_by_score"][score] for m in runs]
            rows.append(
                {
                    "model": label,
                    "score": SCORE_LABELS[score],
                    "AUROC (%)": format_percent(_metric_values(per_seed, "auroc")),
                    "AP (%)": format_percent(_metric_values(per_seed, "ap")),
                    "FPR95 (%)": format_percent(_metric_values(per_seed, "fpr95")),
                    "seeds": len(runs),
                    "auroc_mean": seed_stats(_metric_values(per_seed, "auroc"))["mean"],
                }
            )
    return pd.DataFrame(rows)


def scores_figure(metrics_by_model: Mapping[str, Sequence[Mapping]], metric: str = "auroc") -> go.Figure:
    """Bars of ``metric`` (auroc, ap or fpr95) per anomaly score, one colour per model; whiskers are
    the sample std over seeds, dots the seeds."""
    if metric not in _ANOMALY_KEYS:
        raise ValueError(f"metric must be one of {_ANOMALY_KEYS}, got {metric!r}")
    _check_metrics_by_model(metrics_by_model, "anomaly_by_score")
    colours = model_colours(list(metrics_by_model))
    fig = go.Figure()
    for label, runs in metrics_by_model.items():
        names = [s for s in SCORE_LABELS if all(s in m["anomaly_by_score"] for m in runs)]
        values = [[m["anomaly_by_score"][s].get(metric) for m in runs] for s in names]
        stats = [seed_stats(v) for v in values]
        fig.add_trace(
            go.Bar(
                x=[SCORE_LABELS[s] for s in names],
                y=[st["mean"] for st in stats],
                name=label,
                marker_color=colours[label],
                offsetgroup=label,
                error_y=dict(type="data", array=[st["std"] for st in stats], visible=len(runs) > 1),
                hovertemplate=f"{label}<br>%{{x}}: {metric} %{{y:.3f}}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[SCORE_LABELS[s] for s, v in zip(names, values) for _ in v],
                y=[x for v in values for x in v],
                mode="markers",
                offsetgroup=label,
                marker=dict(color="black", size=5),
                showlegend=False,
                name=f"{label} seeds",
                hovertemplate=f"{label} seed<br>%{{x}}: %{{y:.3f}}<extra></extra>",
            )
        )
    better = "higher" if metric != "fpr95" else "lower"
    fig.update_layout(
        barmode="group",
        scattermode="group",
        font=FONT,
        title=f"Every anomaly score: {metric.upper()} ({better} is better; dots: seeds)",
        yaxis_title=metric.upper(),
        yaxis_range=[0, 1],
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def components_table(metrics_by_model: Mapping[str, Sequence[Mapping]]):
    """SegmentMeIfYouCan's component-level metrics of each model's headline score, mean ± std (%).

    sIoU: mean over ground-truth anomalies of their (adjusted) IoU with the predicted components
    touching them; PPV: mean over predicted components of the share of their pixels on an anomaly;
    mean F1: component F1 averaged over the sIoU / PPV thresholds 0.25 ... 0.75. The prediction is the
    score thresholded at its best pixel-level F1, as the benchmark does.
    """
    import pandas as pd

    _check_metrics_by_model(metrics_by_model, "anomaly_components")
    rows = []
    for label, runs in metrics_by_model.items():
        comps = [m["anomaly_components"] for m in runs]
        rows.append(
            {
                "model": label,
                "score": SCORE_LABELS.get(comps[0].get("score"), comps[0].get("score")),
                "sIoU (%)": format_percent(_metric_values(comps, "siou")),
                "PPV (%)": format_percent(_metric_values(comps, "ppv")),
                "mean F1 (%)": format_percent(_metric_values(comps, "mean_f1")),
                "anomalies": int(comps[0].get("num_gt_components", 0)),
                "predicted components": format_percent(
                    [c.get("num_pred_components", 0) / 100 for c in comps], digits=0
                ),
                "seeds": len(runs),
            }
        )
    return pd.DataFrame(rows)


def by_source_figure(metrics_by_model: Mapping[str, Sequence[Mapping]], metric: str = "auroc") -> go.Figure:
    """``metric`` of each model's headline score per anomaly source (procedural objects, the cat, the
    coffee cup, ...): each source's anomalous pixels against every inlier pixel; whiskers: std over seeds."""
    if metric not in _ANOMALY_KEYS:
        raise ValueError(f"metric must be one of {_ANOMALY_KEYS}, got {metric!r}")
    _check_metrics_by_model(metrics_by_model, "anomaly_by_source")
    colours = model_colours(list(metrics_by_model))
    fig = go.Figure()
    for label, runs in metrics_by_model.items():
        score = runs[0]["anomaly"]["score"]
        sources = list(runs[0]["anomaly_by_source"])
        stats = [seed_stats([m["anomaly_by_source"][src][score].get(metric) for m in runs]) for src in sources]
        fig.add_trace(
            go.Bar(
                x=sources,
                y=[s["mean"] for s in stats],
                name=f"{label}: {SCORE_LABELS.get(score, score)}",
                marker_color=colours[label],
                error_y=dict(type="data", array=[s["std"] for s in stats], visible=len(runs) > 1),
                hovertemplate=f"{label}<br>%{{x}}: {metric} %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        font=FONT,
        yaxis_range=[0, 1],
        yaxis_title=metric.upper(),
        title=f"{metric.upper()} per anomaly source (each model's headline score)",
        legend=dict(orientation="h", y=-0.25),
    )
    return fig
