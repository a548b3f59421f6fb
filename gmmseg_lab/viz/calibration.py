"""Calibration views (notebook 04): reliability diagrams, confidence histograms and ECE / MCE tables.

Inputs are the evaluator's ``metrics.json`` bins (:meth:`gmmseg_lab.eval.metrics.CalibrationError.compute`):
a dict of equally long lists ``lower``, ``upper``, ``count``, ``confidence``, ``accuracy``, with
``n_bins + 1`` entries (the last one is torchmetrics' degenerate ``[1, 1]`` bin of confidences that
are exactly 1.0) and ``None`` confidence / accuracy in empty bins. A model is a list of such dicts,
one per seed; several seeds are summarised by their mean ± sample standard deviation (ddof=1).

ECE and MCE are recomputed from the bins (``ece = sum_b count_b / N |acc_b - conf_b|``, ``mce`` the
largest gap over non-empty bins), the evaluator's own definitions, so a figure needs nothing else.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..eval.confidence_bound import layernorm_confidence_bound, layernorm_confidence_bound_per_class
from ..stats import format_mean_std, seed_stats
from ._widgets import figure_box
from .common import format_percent
from .style import FONT, model_colours, model_symbols, rgba

__all__ = [
    "PROBABILITIES",
    "aggregate_bins",
    "bins_by_model",
    "calibration_bins_from_metrics",
    "calibration_errors",
    "calibration_table",
    "calibration_widget",
    "check_bins",
    "confidence_histogram_figure",
    "reliability_figure",
]

#: The probabilities whose calibration the evaluator measures: the class logits' softmax
#: (``calibration_bins``) and, for GMM heads, Bayes' posterior (``bayes_posterior_calibration``).
PROBABILITIES = ("class logits", "Bayes posterior")
_BIN_KEYS = ("lower", "upper", "count", "confidence", "accuracy")
#: Default titles per probability (what "confidence" means in the figure).
_RELIABILITY_TITLES = {
    "class logits": "Reliability diagram: confidence = max softmax of the class logits",
    "Bayes posterior": "Reliability diagram: confidence = max of Bayes' posterior p(c|x)",
}


# --------------------------------------------------------------------------------------------------
# Bins: validation, ECE / MCE, aggregation over seeds.


def check_bins(bins: Mapping, name: str = "bins") -> dict[str, np.ndarray]:
    """Validate one reliability-diagram bins dict and return it as numpy arrays.

    Args:
        bins: dict of equally long lists (``B = n_bins + 1``) ``lower``, ``upper``, ``count``,
            ``confidence`` and ``accuracy`` (``None`` in empty bins).
        name: how to name ``bins`` in error messages, e.g. ``"models['gmm'][1]"``.

    Returns:
        dict of ``[B]`` arrays: ``lower``, ``upper``, ``confidence``, ``accuracy`` (float64, NaN in
        empty bins) and ``count`` (int64).
    """
    if not isinstance(bins, Mapping):
        raise TypeError(f"{name} must be a dict of bin lists, got {type(bins).__name__}")
    missing = [key for key in _BIN_KEYS if key not in bins]
    if missing:
        hint = " (pass metrics['calibration_bins'], not the whole metrics.json)" if "calibration_bins" in bins else ""
        raise ValueError(f"{name} must have the keys {list(_BIN_KEYS)}, missing {missing}{hint}")
    size = len(bins["lower"])
    for key in _BIN_KEYS:
        if len(bins[key]) != size:
            raise ValueError(f"{name}[{key!r}] has {len(bins[key])} entries, expected {size} like {name}['lower']")
    if size == 0:
        raise ValueError(f"{name} must have at least one bin")
    count = np.asarray(bins["count"], dtype=np.int64)
    if (count < 0).any():
        raise ValueError(f"{name}['count'] must be >= 0, found {int(count.min())}")

    def as_float(key: str) -> np.ndarray:
        return np.asarray([np.nan if v is None else v for v in bins[key]], dtype=np.float64)

    out = {
        "lower": as_float("lower"),
        "upper": as_float("upper"),
        "count": count,
        "confidence": as_float("confidence"),
        "accuracy": as_float("accuracy"),
    }
    filled = count > 0
    for key in ("confidence", "accuracy"):
        values = out[key][filled]
        if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
            raise ValueError(f"{name}[{key!r}] must be in [0, 1] wherever count > 0")
    return out


def calibration_errors(bins: Mapping, name: str = "bins") -> tuple[float | None, float | None]:
    """``(ece, mce)`` of one bins dict (``B`` equally long lists, see :func:`check_bins`), as the
    evaluator defines them; ``(None, None)`` when every bin is empty."""
    b = check_bins(bins, name)
    filled = b["count"] > 0
    total = int(b["count"].sum())
    if total == 0:
        return None, None
    gap = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float((gap * b["count"][filled]).sum() / total), float(gap.max())


def calibration_bins_from_metrics(metrics: Mapping, probability: str = "class logits") -> dict | None:
    """The bins of one ``metrics.json`` for ``probability`` in :data:`PROBABILITIES`.

    Returns ``None`` for ``"Bayes posterior"`` when the run has none (a softmax head).
    """
    if probability not in PROBABILITIES:
        raise ValueError(f"probability must be one of {PROBABILITIES}, got {probability!r}")
    if probability == "class logits":
        if "calibration_bins" not in metrics:
            raise ValueError("metrics must hold 'calibration_bins' (a metrics.json written by the evaluator)")
        return metrics["calibration_bins"]
    posterior = metrics.get("bayes_posterior_calibration")
    return None if posterior is None else posterior["bins"]


def bins_by_model(
    metrics_by_model: Mapping[str, Sequence[Mapping]], probability: str = "class logits"
) -> dict[str, list[dict]]:
    """``{label: [metrics.json per seed]}`` -> ``{label: [bins per seed]}`` for ``probability``.

    Models without bins for ``probability`` in any seed (softmax heads have no Bayes posterior) are
    left out. A model with bins in some seeds only keeps those seeds, with a ``UserWarning`` naming
    the seeds dropped (by position in its list), since its mean ± std then covers fewer seeds.
    """
    out = {}
    for label, runs in metrics_by_model.items():
        bins = [calibration_bins_from_metrics(m, probability) for m in runs]
        missing = [i for i, b in enumerate(bins) if b is None]
        if len(missing) == len(bins):
            continue
        if missing:
            warnings.warn(
                f"bins_by_model: {label!r} has no {probability} bins in seeds {missing} (positions in "
                f"its list of {len(bins)}); they are left out of its mean ± std",
                UserWarning,
                stacklevel=2,
            )
        out[label] = [b for b in bins if b is not None]
    return out


def aggregate_bins(bins_per_seed: Sequence[Mapping], name: str = "bins") -> dict[str, np.ndarray]:
    """Per-bin mean ± std over seeds of confidence, accuracy and pixel share.

    Args:
        bins_per_seed: one bins dict per seed, all with the same edges.
        name: how to name the list in error messages.

    Returns:
        dict of ``[B]`` float64 arrays: ``lower``, ``upper``, ``confidence`` (mean over the seeds where
        the bin is non-empty, NaN where it is empty for all), ``accuracy`` and ``accuracy_std``
        (ddof=1, 0 with one seed), ``share`` and ``share_std`` (fraction of each seed's pixels in the
        bin, over all seeds), ``seeds`` (how many seeds have the bin non-empty), plus ``ece`` and
        ``mce``: ``[S]`` per-seed values.
    """
    if isinstance(bins_per_seed, Mapping) or len(bins_per_seed) == 0:
        raise ValueError(f"{name} must be a non-empty list of bins dicts (one per seed)")
    checked = [check_bins(b, f"{name}[{i}]") for i, b in enumerate(bins_per_seed)]
    first = checked[0]
    for i, b in enumerate(checked[1:], start=1):
        for edge in ("lower", "upper"):
            if b[edge].shape != first[edge].shape or not np.allclose(b[edge], first[edge]):
                raise ValueError(
                    f"{name}[{i}] has bin edges different from {name}[0] ({edge!r} differs): "
                    "seeds must share their bins"
                )
    count = np.stack([b["count"] for b in checked]).astype(np.float64)  # [S, B]
    filled = count > 0
    confidence = np.stack([b["confidence"] for b in checked])
    accuracy = np.stack([b["accuracy"] for b in checked])
    seeds = filled.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_mean = np.where(seeds > 0, np.where(filled, confidence, 0).sum(0) / np.maximum(seeds, 1), np.nan)
        acc_mean = np.where(seeds > 0, np.where(filled, accuracy, 0).sum(0) / np.maximum(seeds, 1), np.nan)
        squares = np.where(filled, (accuracy - acc_mean) ** 2, 0).sum(0)
        acc_std = np.where(seeds > 1, np.sqrt(squares / np.maximum(seeds - 1, 1)), 0.0)
        totals = count.sum(axis=1, keepdims=True)
        share = np.where(totals > 0, count / np.maximum(totals, 1), 0.0)
    errors = [calibration_errors(b, f"{name}[{i}]") for i, b in enumerate(bins_per_seed)]  # checks again: cheap
    return {
        "lower": first["lower"],
        "upper": first["upper"],
        "confidence": conf_mean,
        "accuracy": acc_mean,
        "accuracy_std": acc_std,
        "share": share.mean(axis=0),
        "share_std": share.std(axis=0, ddof=1) if len(checked) > 1 else np.zeros_like(share[0]),
        "seeds": seeds.astype(np.float64),
        "ece": np.asarray([np.nan if e is None else e for e, _ in errors]),
        "mce": np.asarray([np.nan if m is None else m for _, m in errors]),
    }


def _check_models(models: Mapping, name: str) -> None:
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"{name} must be a non-empty dict {{label: [bins per seed]}}, got {models!r:.80}")


def _legend_label(label: str, summary: Mapping) -> str:
    seeds = len(summary["ece"])
    runs = f"{seeds} seeds" if seeds > 1 else "1 seed"
    return f"{label}: ECE {format_percent(summary['ece'])} %, MCE {format_percent(summary['mce'])} % ({runs})"


def _views(
    models: Mapping, posterior_models: Mapping | None, probability: str = PROBABILITIES[0]
) -> list[tuple[str, Mapping]]:
    """``[(probability, models)]``: what ``models`` holds, then Bayes' posterior's view if given."""
    _check_models(models, "models")
    if probability not in PROBABILITIES:
        raise ValueError(f"probability must be one of {PROBABILITIES}, got {probability!r}")
    views = [(probability, models)]
    if posterior_models is not None:
        if probability != PROBABILITIES[0]:
            raise ValueError(
                "posterior_models goes with models of the class logits; with "
                f"probability={probability!r} pass those bins as models alone"
            )
        _check_models(posterior_models, "posterior_models")
        views.append((PROBABILITIES[1], posterior_models))
    return views


def _view_menu(views: list[tuple[str, Mapping]], trace_views: list[int], titles: list[str], x: float) -> dict:
    """A static dropdown switching which view's traces are visible (``-1``: always visible)."""
    buttons = []
    for v, (probability, _) in enumerate(views):
        visible = [t == v or t == -1 for t in trace_views]
        buttons.append(
            dict(
                label=f"probability: {probability}",
                method="update",
                args=[{"visible": visible}, {"title.text": titles[v]}],
            )
        )
    return dict(
        type="dropdown",
        buttons=buttons,
        active=0,
        x=x,
        xanchor="left",
        y=1.0,
        yanchor="bottom",
        showactive=True,
        bgcolor="white",
        font=dict(size=12),
    )


# --------------------------------------------------------------------------------------------------
# Figures.


def reliability_figure(
    models: Mapping[str, Sequence[Mapping]],
    posterior_models: Mapping | None = None,
    *,
    probability: str = PROBABILITIES[0],
    colours: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Reliability diagram: accuracy against confidence per bin, one series per model.

    Each point is a non-empty bin at (mean confidence, mean accuracy) over seeds, with the seeds'
    standard deviation of the accuracy as an error bar; the shaded band between a model's curve and
    the diagonal is its calibration gap (above the diagonal: under-confident, below: over-confident).
    The legend gives ECE and MCE (mean ± std over seeds, in %).

    Args:
        models: ``{label: [bins dict per seed]}`` for ``probability``.
        posterior_models: the same for Bayes' posterior ``softmax_c log p(x|c)`` (GMM heads only),
            with ``models`` of the class logits; when given, a dropdown in the figure (static, no
            kernel) switches between the two.
        probability: which of :data:`PROBABILITIES` ``models`` holds (default the class logits);
            the default title names it.
        colours: ``{label: colour}``; default :func:`~gmmseg_lab.viz.style.model_colours` in order
            of first appearance.
        title: figure title (default says which probability is shown).

    Returns:
        A ``go.Figure``; the traces of view ``v`` carry ``meta={"view": v, "model": label}``.
    """
    views = _views(models, posterior_models, probability)
    labels = list(dict.fromkeys(label for _, ms in views for label in ms))
    colours = {**model_colours(labels), **(colours or {})}
    symbols = model_symbols(labels)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line=dict(color="#555555", dash="dash", width=1.5),
            hoverinfo="skip",
        )
    )
    trace_views, titles = [-1], []
    for v, (shown, view_models) in enumerate(views):
        titles.append(title or _RELIABILITY_TITLES[shown])
        for label, bins in view_models.items():
            summary = aggregate_bins(bins, f"{'models' if v == 0 else 'posterior_models'}[{label!r}]")
            filled = summary["seeds"] > 0
            conf, acc = summary["confidence"][filled], summary["accuracy"][filled]
            colour = colours[label]
            # Gap band: along the curve, back along the diagonal.
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([conf, conf[::-1]]),
                    y=np.concatenate([acc, conf[::-1]]),
                    fill="toself",
                    fillcolor=rgba(colour, 0.18),
                    line=dict(width=0),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=f"{v}:{label}",
                    visible=v == 0,
                    meta={"view": v, "model": label, "role": "gap"},
                )
            )
            custom = np.stack(
                [
                    summary["lower"][filled],
                    summary["upper"][filled],
                    100 * summary["share"][filled],
                    summary["seeds"][filled],
                    summary["accuracy_std"][filled],
                ],
                axis=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=conf,
                    y=acc,
                    mode="lines+markers",
                    name=_legend_label(label, summary),
                    legendgroup=f"{v}:{label}",
                    visible=v == 0,
                    line=dict(color=colour, width=2),
                    marker=dict(color=colour, size=9, symbol=symbols[label], line=dict(color="white", width=1)),
                    error_y=dict(
                        type="data",
                        array=summary["accuracy_std"][filled],
                        visible=len(bins) > 1,
                        color=colour,
                        thickness=1.2,
                        width=3,
                    ),
                    customdata=custom,
                    hovertemplate=(
                        f"<b>{label}</b><br>bin [%{{customdata[0]:.3f}}, %{{customdata[1]:.3f}}]<br>"
                        "mean confidence %{x:.3f}<br>accuracy %{y:.3f} ± %{customdata[4]:.3f}<br>"
                        "%{customdata[2]:.2f} % of pixels (%{customdata[3]} seeds)<extra></extra>"
                    ),
                    meta={"view": v, "model": label, "role": "curve"},
                )
            )
            trace_views += [v, v]
    fig.update_layout(
        title=dict(text=titles[0], x=0.01, xanchor="left", y=0.98),
        font=FONT,
        template="plotly_white",
        width=760,
        height=760,
        margin=dict(l=80, r=30, t=110, b=40 + 26 * len(labels)),
        legend=dict(
            orientation="h", x=0, xref="container", y=0.01, yref="container", yanchor="bottom", font=dict(size=12)
        ),
        # constrain="domain": the square aspect shrinks the plot area instead of widening the ranges.
        xaxis=dict(
            title="mean confidence in the bin (max class probability)", range=[0, 1.01], dtick=0.1, constrain="domain"
        ),
        yaxis=dict(
            title="accuracy in the bin (fraction of pixels correct)",
            range=[0, 1.01],
            dtick=0.1,
            scaleanchor="x",
            scaleratio=1,
            constrain="domain",
        ),
    )
    if len(views) > 1:
        fig.update_layout(updatemenus=[_view_menu(views, trace_views, titles, x=0.0)])
    return fig


def _bin_names(lower: np.ndarray, upper: np.ndarray) -> list[str]:
    return ["= 1 (saturated)" if lo == up == 1.0 else f"{lo:.2f}–{up:.2f}" for lo, up in zip(lower, upper)]


def confidence_histogram_figure(
    models: Mapping[str, Sequence[Mapping]],
    posterior_models: Mapping | None = None,
    *,
    probability: str = PROBABILITIES[0],
    log_y: bool = True,
    colours: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Share of pixels per confidence bin, one bar group per bin, one bar per model.

    Bars are the mean over seeds of ``count_b / sum(count)`` in %, with the seeds' standard
    deviation as error bars. Segmentation confidences pile up near 1, so the y axis is logarithmic
    by default; a button switches it (and, with ``posterior_models``, a dropdown switches between the
    class logits and Bayes' posterior) in the static figure.

    Args:
        models, posterior_models, probability, colours, title: as in :func:`reliability_figure`.
        log_y: start with a logarithmic y axis.

    Returns:
        A ``go.Figure`` of ``go.Bar`` traces (``meta={"view": v, "model": label}``).
    """
    views = _views(models, posterior_models, probability)
    labels = list(dict.fromkeys(label for _, ms in views for label in ms))
    colours = {**model_colours(labels), **(colours or {})}
    fig = go.Figure()
    trace_views, titles = [], []
    for v, (shown, view_models) in enumerate(views):
        titles.append(title or f"Pixels per confidence bin ({shown})")
        for label, bins in view_models.items():
            summary = aggregate_bins(bins, f"{'models' if v == 0 else 'posterior_models'}[{label!r}]")
            fig.add_trace(
                go.Bar(
                    x=_bin_names(summary["lower"], summary["upper"]),
                    y=100 * summary["share"],
                    error_y=dict(type="data", array=100 * summary["share_std"], visible=len(bins) > 1, thickness=1.2),
                    name=f"{label} ({len(bins)} seed{'s' if len(bins) > 1 else ''})",
                    marker_color=colours[label],
                    visible=v == 0,
                    meta={"view": v, "model": label},
                    hovertemplate=f"<b>{label}</b><br>confidence %{{x}}<br>%{{y:.3f}} % of pixels<extra></extra>",
                )
            )
            trace_views.append(v)
    fig.update_layout(
        title=dict(text=titles[0], x=0.01, xanchor="left", y=0.98),
        font=FONT,
        template="plotly_white",
        barmode="group",
        width=900,
        height=560,
        margin=dict(l=80, r=30, t=110, b=150 + 12 * len(labels)),
        legend=dict(orientation="h", x=0, xref="container", y=0.01, yref="container", yanchor="bottom"),
        xaxis=dict(title="confidence bin (max class probability)", tickangle=-45),
        yaxis=dict(title="pixels in the bin (%)", type="log" if log_y else "linear", tickformat="~g"),
    )
    menus = [
        dict(
            type="buttons",
            direction="right",
            x=1.0,
            xanchor="right",
            y=1.0,
            yanchor="bottom",
            active=0 if log_y else 1,
            showactive=True,
            bgcolor="white",
            font=dict(size=12),
            buttons=[
                dict(label="log y", method="relayout", args=[{"yaxis.type": "log"}]),
                dict(label="linear y", method="relayout", args=[{"yaxis.type": "linear"}]),
            ],
        )
    ]
    if len(views) > 1:
        menus.append(_view_menu(views, trace_views, titles, x=0.0))
    fig.update_layout(updatemenus=menus)
    return fig


def _calibration_rows(models: Mapping[str, Sequence[Mapping]], posterior_models: Mapping | None = None) -> list[dict]:
    rows = []
    for v, (probability, view_models) in enumerate(_views(models, posterior_models)):
        for label, bins in view_models.items():
            summary = aggregate_bins(bins, f"{'models' if v == 0 else 'posterior_models'}[{label!r}]")
            ece, mce = seed_stats(summary["ece"]), seed_stats(summary["mce"])
            rows.append(
                {
                    "model": label,
                    "probability": probability,
                    "ECE (%)": format_percent(summary["ece"]),
                    "MCE (%)": format_percent(summary["mce"]),
                    "seeds": len(bins),
                    "ece_mean": ece["mean"],
                    "ece_std": ece["std"],
                    "mce_mean": mce["mean"],
                    "mce_std": mce["std"],
                }
            )
    return rows


def calibration_table(models: Mapping[str, Sequence[Mapping]], posterior_models: Mapping | None = None):
    """ECE and MCE per model and probability, mean ± std over seeds, as a ``pandas.DataFrame``.

    Columns: ``model``, ``probability``, ``ECE (%)`` and ``MCE (%)`` (``"mean ± std"`` text),
    ``seeds``, and the numbers as fractions: ``ece_mean``, ``ece_std``, ``mce_mean``, ``mce_std``.
    """
    import pandas as pd

    return pd.DataFrame(_calibration_rows(models, posterior_models))


def _empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=dict(text=message),
        font=FONT,
        template="plotly_white",
        width=760,
        height=300,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
    )
    return fig


def calibration_widget(models: Mapping[str, Sequence[Mapping]], posterior_models: Mapping | None = None):
    """Live calibration view for JupyterLab: which models, which probability, which plot.

    Controls (``box.controls``): ``"models"`` (``SelectMultiple`` of labels), ``"probability"``
    (one of :data:`PROBABILITIES`; only the class logits without ``posterior_models``) and ``"view"``
    (``"reliability diagram"`` or ``"confidence histogram"``). ``box.figure`` is the current figure.
    """
    import ipywidgets as widgets

    views = dict(_views(models, posterior_models))
    labels = list(dict.fromkeys(label for ms in views.values() for label in ms))
    colours = model_colours(labels)
    controls = {
        "models": widgets.SelectMultiple(
            options=labels, value=tuple(labels), description="models", rows=min(len(labels), 6)
        ),
        "probability": widgets.ToggleButtons(options=list(views), value=PROBABILITIES[0], description="probability"),
        "view": widgets.ToggleButtons(
            options=["reliability diagram", "confidence histogram"], value="reliability diagram", description="plot"
        ),
    }

    def render() -> go.Figure:
        probability = controls["probability"].value
        chosen = {label: views[probability][label] for label in controls["models"].value if label in views[probability]}
        if not chosen:
            return _empty_figure(f"No selected model has {probability} bins: select another model")
        if controls["view"].value == "reliability diagram":
            return reliability_figure(chosen, probability=probability, colours=colours)
        return confidence_histogram_figure(chosen, probability=probability, colours=colours)

    return figure_box(controls, render)


# --------------------------------------------------------------------------------------------------
# Why the logits' softmax is under-confident: the LayerNorm bound on the top probability.


def mean_confidence(bins: Mapping, name: str = "bins") -> float | None:
    """Pixel-weighted mean top probability of one bins dict (:func:`check_bins`); None when empty."""
    b = check_bins(bins, name)
    filled = b["count"] > 0
    total = int(b["count"].sum())
    return None if total == 0 else float((b["confidence"][filled] * b["count"][filled]).sum() / total)


def layernorm_bound_figure(models: Mapping[str, Sequence[Mapping]], num_classes: int) -> go.Figure:
    """The largest top probability the logits' softmax can reach, against the LayerNorm's weight.

    GMMSeg's logits are ``gamma * LN(s) + beta`` (:mod:`gmmseg_lab.eval.confidence_bound`). The line is
    the bound for a common ``gamma`` at this number of classes; each trained model (one marker per
    seed) sits at its learned mean ``gamma`` with three values: its bound with its own per-class
    ``gamma`` and ``beta`` (diamond), the mean top probability it actually gives (circle) and its pixel
    accuracy (cross). A model whose accuracy lies above its bound cannot be calibrated: its
    confidence is capped below the accuracy it earns.

    Args:
        models: ``{label: [per seed: {"gamma": [C], "beta": [C], "bins": calibration bins,
            "acc": pixel accuracy}]}`` (``gamma``/``beta`` from
            :func:`gmmseg_lab.experiments.predictions.score_norm_parameters`, ``bins``/``acc`` from metrics.json).
        num_classes: C.
    """
    _check_models(models, "models")
    gammas = [float(np.mean(r["gamma"])) for runs in models.values() for r in runs]
    top = max([3.0] + [1.2 * g for g in gammas])
    xs = np.linspace(0.0, top, 121)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[layernorm_confidence_bound(num_classes, float(g)) for g in xs],
            mode="lines",
            line=dict(color="#444", width=2),
            name=f"bound, common gamma (C = {num_classes})",
            hovertemplate="gamma %{x:.2f}: top probability at most %{y:.3f}<extra></extra>",
        )
    )
    fig.add_vline(
        x=1.0,
        line=dict(color="#999", dash="dot"),
        annotation_text="gamma at initialisation",
        annotation_position="bottom right",
    )
    colours = model_colours(list(models))
    for label, runs in models.items():
        g = [float(np.mean(r["gamma"])) for r in runs]
        bound = [
            float(layernorm_confidence_bound_per_class(np.asarray(r["gamma"]), np.asarray(r["beta"])).max())
            for r in runs
        ]
        conf = [mean_confidence(r["bins"], f"models[{label!r}]") for r in runs]
        acc = [float(r["acc"]) for r in runs]
        colour = colours[label]
        for values, symbol, what in (
            (bound, "diamond", "bound with its learned gamma, beta"),
            (conf, "circle", "mean top probability it gives"),
            (acc, "x", "its pixel accuracy"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=g,
                    y=values,
                    mode="markers",
                    name=f"{label}: {what}",
                    legendgroup=label,
                    marker=dict(color=colour, symbol=symbol, size=11, line=dict(width=1, color="white")),
                    customdata=list(range(len(runs))),
                    hovertemplate=f"{label} (seed #%{{customdata}})<br>mean gamma %{{x:.3f}}<br>{what}: %{{y:.3f}}"
                    "<extra></extra>",
                )
            )
    fig.update_layout(
        title=f"Why the logits' softmax is under-confident: LayerNorm caps the top probability ({num_classes} classes)",
        xaxis_title="LayerNorm weight gamma over the class scores (mean over classes)",
        yaxis_title="top softmax probability",
        yaxis_range=[0, 1.02],
        font=FONT,
        legend=dict(orientation="v", x=1.02, y=1),
        margin=dict(r=20),
    )
    return fig


def temperature_table(metrics_by_model: Mapping[str, Sequence[Mapping]]):
    """Temperature scaling per model and probability: the fitted T and ECE / MCE / NLL before and
    after it on the scored half of the validation split, mean ± std over seeds.

    Args:
        metrics_by_model: ``{label: [metrics.json per seed]}`` (``temperature_scaling``).

    Returns:
        a ``pandas.DataFrame``, one row per (model, probability): ``model``, ``probability``, ``T``,
        ``ECE before (%)``, ``ECE after (%)``, ``MCE before (%)``, ``MCE after (%)``, ``NLL before``,
        ``NLL after``, ``seeds``.
    """
    import pandas as pd

    _check_models(metrics_by_model, "metrics_by_model")
    rows = []
    names = {"logits": "class logits", "bayes_posterior": "Bayes posterior"}
    for label, runs in metrics_by_model.items():
        scalings = [m.get("temperature_scaling") for m in runs]
        if any(s is None for s in scalings):
            continue  # a split of one image: nothing was scaled (a note in metrics.json says so)
        for key, probability in names.items():
            entries = [s.get(key) for s in scalings]
            if any(e is None for e in entries):
                continue
            row = {
                "model": label,
                "probability": probability,
                "T": format_mean_std(seed_stats([e["temperature"] for e in entries])),
            }
            for what in ("ece", "mce"):
                for when in ("before", "after"):
                    row[f"{what.upper()} {when} (%)"] = format_percent([e[f"{what}_{when}"] for e in entries])
            for when in ("before", "after"):
                row[f"NLL {when}"] = format_mean_std(seed_stats([e[f"nll_{when}"] for e in entries]))
            row["seeds"] = len(runs)
            rows.append(row)
    return pd.DataFrame(rows)
