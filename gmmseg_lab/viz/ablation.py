"""Notebook 05, the EM-versus-Sinkhorn ablation: variants of the GMM head, each over several seeds.

Inputs are plain dicts: ``results`` (variant -> one ``metrics.json`` dict per seed), ``labels``
(variant -> description, e.g. from :data:`gmmseg_lab.experiments.ablation.VARIANTS`) and ``curves`` (variant ->
one :func:`~gmmseg_lab.experiments.predictions.learning_curves` dict per seed).

- :func:`ablation_stats`: long table of mean, std, n and the difference to the reference variant with
  a Welch t-test and a noise rule, ``|Δ| < 2 sqrt(sd1²/n1 + sd2²/n2)``;
- :func:`ablation_table`: the same as "mean ± std" and "Δ" strings, one row per variant;
- :func:`ablation_bars_figure`, :func:`convergence_figure`, :func:`memory_figure`, :func:`ablation_widget`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..stats import TABLE_COLUMNS as COLUMNS
from ..stats import format_mean_std, metric_value, seed_stats
from ._widgets import figure_box
from .style import FONT, model_colours, panel_note
from .training import SCALAR_TITLES, band_traces, seed_band

#: (label, key path in metrics.json, higher is better): the comparison table's columns
#: (:data:`gmmseg_lab.stats.TABLE_COLUMNS`); "balance" comes from the learning curves.
METRICS = COLUMNS
#: The component balance at the end of training (last logged ``decode.gmm_balance``); no better direction.
BALANCE = "balance"
BALANCE_KEY = "decode.gmm_balance"
#: Scalars :func:`convergence_figure` draws by default.
CONVERGENCE_KEYS = ("decode.gmm_loglik", "decode.gmm_balance", "decode.gmm_mean_step")


# ----------------------------------------------------------------------------------- numbers
def final_value(runs: Sequence[Mapping], key: str = BALANCE_KEY, kind: str = "train") -> np.ndarray:
    """``[seeds]`` last finite value of ``key`` in each run's learning curves (NaN when never logged)."""
    out = []
    for run in runs:
        values = np.asarray(run.get(kind, {}).get(key, []), dtype=np.float64)
        finite = values[np.isfinite(values)]
        out.append(finite[-1] if len(finite) else np.nan)
    return np.asarray(out, dtype=np.float64)


def _runs_values(
    results: Mapping[str, Sequence[Mapping]], metric: str, curves: Mapping[str, Sequence[Mapping]] | None = None
) -> dict[str, np.ndarray]:
    """variant -> ``[N]`` values of ``metric`` over all its runs, NaN where a run lacks it.

    ``N`` is ``len(results[variant])``, or for ``"balance"`` the number of its learning curves.
    """
    paths = {label: path for label, path, _ in METRICS}
    if metric not in paths and metric != BALANCE:
        raise ValueError(f"metric must be one of {[*paths, BALANCE]}, got {metric!r}")
    out = {}
    for variant, runs in results.items():
        if metric == BALANCE:
            out[variant] = final_value((curves or {}).get(variant, []))
        else:
            out[variant] = np.asarray(
                [np.nan if (v := metric_value(r, paths[metric])) is None else v for r in runs], dtype=np.float64
            )
    return out


def metric_values(
    results: Mapping[str, Sequence[Mapping]], metric: str, curves: Mapping[str, Sequence[Mapping]] | None = None
) -> dict[str, np.ndarray]:
    """variant -> ``[n]`` values of ``metric`` (one of :data:`METRICS` or ``"balance"``) over its seeds,
    runs without the metric (NaN, e.g. no anomaly pixels) dropped, so ``n`` can be below the runs."""
    return {variant: values[np.isfinite(values)] for variant, values in _runs_values(results, metric, curves).items()}


def _seeds_text(n: int, total: int) -> str:
    """``"3 seeds"``, ``"1 seed"``, or ``"2 of 3 seeds"`` when some runs lack the value."""
    if n < total:
        return f"{n} of {total} seeds"
    return f"{n} seed{'s' if n != 1 else ''}"


def noise_threshold(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """``2 sqrt(std_a²/n_a + std_b²/n_b)``: about two standard errors of a difference of means
    (NaN when a side has fewer than two seeds: its spread is unknown). ``std_*`` and ``n_*`` are the
    sample std and count of each side's ``[S]`` values over seeds."""
    if n_a < 2 or n_b < 2:
        return float("nan")
    return 2.0 * math.sqrt(std_a**2 / n_a + std_b**2 / n_b)


def compare(values: np.ndarray, reference: np.ndarray) -> dict:
    """Difference of means ``values - reference`` with the noise rule and a Welch t-test.

    Args:
        values, reference: ``[S]`` and ``[S']`` values of one metric over the seeds of a variant and
            of the reference variant (NaN-free: :func:`metric_values`).

    Returns ``{"delta", "noise", "within_noise", "p_value"}``; ``within_noise`` is ``None`` and
    ``p_value`` NaN when either side has fewer than two seeds (or both have zero spread).
    """
    values, reference = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if not len(values) or not len(reference):
        return dict(delta=float("nan"), noise=float("nan"), within_noise=None, p_value=float("nan"))
    delta = float(values.mean() - reference.mean())
    sd_a = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    sd_b = float(reference.std(ddof=1)) if len(reference) > 1 else float("nan")
    noise = noise_threshold(sd_a, len(values), sd_b, len(reference))
    within = None if not np.isfinite(noise) else bool(abs(delta) < noise)
    p_value = float("nan")
    scale = max(abs(float(values.mean())), abs(float(reference.mean())), 1e-300)
    if len(values) > 1 and len(reference) > 1 and max(sd_a, sd_b) > 1e-9 * scale:  # else: no spread to test
        import warnings

        from scipy.stats import ttest_ind

        with warnings.catch_warnings():
            # a side of identical values (e.g. a metric a variant cannot change) makes scipy warn
            # about its moments; Welch's statistic is still defined by the other side's spread
            warnings.simplefilter("ignore", RuntimeWarning)
            p_value = float(ttest_ind(values, reference, equal_var=False).pvalue)
    return dict(delta=delta, noise=noise, within_noise=within, p_value=p_value)


def _check_results(results: Mapping, reference: str | None) -> None:
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty {variant: [metrics dict per seed]} dict")
    for variant, runs in results.items():
        if isinstance(runs, Mapping) or not all(isinstance(r, Mapping) for r in runs):
            raise ValueError(f"results[{variant!r}] must be a list of metrics dicts (one per seed)")
    if reference is not None and reference not in results:
        raise ValueError(f"reference {reference!r} is not a variant of results ({', '.join(results)})")


def ablation_stats(
    results: Mapping[str, Sequence[Mapping]],
    curves: Mapping[str, Sequence[Mapping]] | None = None,
    reference: str = "default",
):
    """Long ``pandas.DataFrame``: one row per (variant, metric).

    Columns: ``variant``, ``metric``, ``higher_is_better`` (None for balance), ``mean``, ``std``
    (sample std, NaN for one seed), ``n`` (seeds with the metric), ``runs`` (seeds in ``results``,
    or learning curves for balance), ``values``, ``delta`` (mean minus the reference's),
    ``noise`` (:func:`noise_threshold`), ``within_noise`` and ``p_value`` (Welch's t-test); the
    reference's own rows have ``delta = 0`` and no test. ``balance`` rows appear when ``curves`` is given.
    """
    import pandas as pd

    _check_results(results, reference)
    metrics = [(label, up) for label, _, up in METRICS] + ([(BALANCE, None)] if curves else [])
    rows = []
    for metric, up in metrics:
        all_runs = _runs_values(results, metric, curves)
        by_variant = {variant: values[np.isfinite(values)] for variant, values in all_runs.items()}
        ref = by_variant[reference]
        for variant, values in by_variant.items():
            test = (
                compare(values, ref)
                if variant != reference
                else dict(
                    delta=0.0 if len(values) else float("nan"),
                    noise=float("nan"),
                    within_noise=None,
                    p_value=float("nan"),
                )
            )
            stat = seed_stats(values)
            rows.append(
                dict(
                    variant=variant,
                    metric=metric,
                    higher_is_better=up,
                    mean=stat["mean"],
                    std=stat["std"] if stat["n"] > 1 else float("nan"),
                    n=stat["n"],
                    runs=len(all_runs[variant]),
                    values=values.tolist(),
                    **test,
                )
            )
    return pd.DataFrame(rows)


def _mean_std_cell(row, digits: int) -> str:
    text = format_mean_std({"mean": row["mean"], "std": row["std"], "n": int(row["n"])}, digits)
    if 0 < row["n"] < row["runs"]:
        text += f" ({_seeds_text(int(row['n']), int(row['runs']))})"
    return text


def _delta_text(row, digits: int, reference: str) -> str:
    if row["variant"] == reference:
        return "reference"
    if not np.isfinite(row["delta"]):
        return "n/a"
    delta = f"{row['delta']:+.{digits}f}".replace("-", "−")
    if row["within_noise"] is None:
        return f"{delta} (noise unknown: one seed)"
    p = f"p = {row['p_value']:.2g}" if np.isfinite(row["p_value"]) else "p n/a"
    return f"{delta} ({p}; {'within noise' if row['within_noise'] else 'beyond noise'})"


def ablation_table(
    results: Mapping[str, Sequence[Mapping]],
    labels: Mapping[str, str] | None = None,
    curves: Mapping[str, Sequence[Mapping]] | None = None,
    reference: str = "default",
    digits: int = 3,
    metrics: Sequence[str] | None = None,
):
    """One row per variant: description, seeds, and per metric "mean ± std" and "Δ vs reference".

    The Δ cell reads e.g. ``"+0.012 (p = 0.03; beyond noise)"``: *within noise* when
    ``|Δ| < 2 sqrt(sd1²/n1 + sd2²/n2)`` (:func:`noise_threshold`), with Welch's t-test p-value.
    Columns are a two-level index ``(metric, "mean ± std" | "Δ vs <reference>")``; metrics are
    mIoU, ECE, AUROC, AP, FPR95 (:data:`METRICS`) and, with ``curves``, the final component balance
    (``metrics`` keeps a subset, e.g. ``("mIoU", "AUROC")``, for a narrower table). The ``seeds``
    column counts each variant's runs; a "mean ± std" over fewer of them (a metric some runs lack)
    says so, e.g. ``"0.612 ± 0.004 (2 of 3 seeds)"``.
    """
    import pandas as pd

    stats = ablation_stats(results, curves, reference)
    if metrics is not None:
        unknown = sorted(set(metrics) - set(stats["metric"]))
        if unknown:
            raise ValueError(f"metrics {unknown} are not available; choose from {list(dict.fromkeys(stats['metric']))}")
        stats = stats[stats["metric"].isin(metrics)]
    labels = labels or {}
    delta_header = f"Δ vs {reference}"
    table = pd.DataFrame(index=pd.Index(list(results), name="variant"))
    table[("", "description")] = [labels.get(v, "") for v in results]
    table[("", "seeds")] = [len(results[v]) for v in results]
    for metric, group in stats.groupby("metric", sort=False):
        up = group["higher_is_better"].iloc[0]
        name = f"{metric} {'↑' if up else '↓'}" if up is not None else "final balance"
        group = group.set_index("variant")
        table[(name, "mean ± std")] = [_mean_std_cell(group.loc[v], digits) for v in results]
        table[(name, delta_header)] = [
            _delta_text(group.loc[v].to_dict() | {"variant": v}, digits, reference) for v in results
        ]
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


# ----------------------------------------------------------------------------------- figures
def ablation_bars_figure(
    results: Mapping[str, Sequence[Mapping]],
    labels: Mapping[str, str] | None = None,
    metrics: Sequence[str] = ("mIoU", "AUROC"),
    reference: str = "default",
    curves: Mapping[str, Sequence[Mapping]] | None = None,
    variants: Sequence[str] | None = None,
) -> go.Figure:
    """Per metric a panel: a bar per variant (mean over seeds, whisker = sample std), each seed as a
    black dot, and the reference variant's mean as a dashed line.

    The value axis is zoomed to the data (differences between variants are small next to the
    values): read the whiskers and dots, not the bar lengths. Runs without the metric (NaN) have no
    dot; the tick then reads e.g. "2 of 3 seeds", and a dot's hover names its run by position in
    the variant's list of ``results`` (the figure does not know the seed values).
    """
    _check_results(results, None)
    variants = list(results) if variants is None else list(variants)
    unknown = [v for v in variants if v not in results]
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of results' variants, got unknown {unknown}")
    if not metrics:
        raise ValueError("metrics is empty")
    labels = labels or {}
    colours = model_colours(list(results))
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        horizontal_spacing=0.1,
        subplot_titles=[
            f"{m} {'↑' if up else '↓'}" if (up := _direction(m)) is not None else "final component balance"
            for m in metrics
        ],
    )
    for col, metric in enumerate(metrics, start=1):
        all_runs = _runs_values(results, metric, curves)
        ref = seed_stats(all_runs.get(reference, []))
        low, high = np.inf, -np.inf
        for position, variant in enumerate(variants):
            runs = all_runs[variant]
            kept = np.flatnonzero(np.isfinite(runs))  # positions of the runs with the metric
            values = runs[kept]
            stat = seed_stats(values)
            mean, std, n = stat["mean"], stat["std"] if stat["n"] else 0.0, stat["n"]
            delta = f"<br>Δ vs {reference} {mean - ref['mean']:+.4f}" if variant != reference and n and ref["n"] else ""
            fig.add_bar(
                x=[position],
                y=[mean],
                error_y=dict(type="data", array=[std], visible=n > 1, thickness=1.5, width=8, color="#333"),
                marker=dict(color=colours[variant], opacity=0.75),
                width=0.6,
                name=f"{variant}: {labels.get(variant, variant)}",
                legendgroup=variant,
                showlegend=col == 1,
                hovertemplate=(
                    f"<b>{variant}</b> ({labels.get(variant, '')})"
                    f"<br>{metric} {mean:.4f} ± {std:.4f}"
                    f"<br>{_seeds_text(n, len(runs))}{delta}<extra></extra>"
                ),
                row=1,
                col=col,
            )
            if n:
                offsets = np.linspace(-0.15, 0.15, n) if n > 1 else np.zeros(1)
                fig.add_scatter(
                    x=position + offsets,
                    y=values,
                    mode="markers",
                    showlegend=False,
                    legendgroup=variant,
                    marker=dict(color="black", size=7, symbol="circle-open", line=dict(width=1.5)),
                    customdata=kept + 1,
                    hovertemplate=(f"{variant}, run %{{customdata}} of {len(runs)}: %{{y:.4f}}<extra></extra>"),
                    row=1,
                    col=col,
                )
                low = min(low, values.min(), mean - std)
                high = max(high, values.max(), mean + std)
        if ref["n"]:
            fig.add_hline(
                y=ref["mean"],
                line=dict(color="#555", dash="dash", width=1.2),
                row=1,
                col=col,
                annotation_text=f"{reference} mean",
                annotation_position="top left",
                annotation_font=dict(size=FONT["size"] - 2, color="#555"),
            )
        if np.isfinite(low):
            pad = max(0.15 * (high - low), 0.01 * max(abs(high), 1e-3))
            fig.update_yaxes(range=[low - pad, high + 1.5 * pad], row=1, col=col)
        else:
            panel_note(fig, 1, col, f"no {metric} values")
        fig.update_yaxes(title_text=f"{metric} (axis zoomed)", row=1, col=col)
        counts = {v: _seeds_text(int(np.isfinite(all_runs[v]).sum()), len(all_runs[v])) for v in variants}
        fig.update_xaxes(
            title_text="variant",
            tickmode="array",
            tickvals=list(range(len(variants))),
            ticktext=[f"{v}<br>({counts[v]})" for v in variants],
            range=[-0.6, len(variants) - 0.4],
            row=1,
            col=col,
        )
    fig.update_layout(
        title=dict(text="Ablation: mean over seeds (bar), sample std (whisker), seeds (circles)", x=0.01),
        font=FONT,
        template="plotly_white",
        height=520,
        barmode="overlay",
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0.0, title=dict(text="variant: ")),
        margin=dict(l=80, r=30, t=90, b=150),
    )
    return fig


def _direction(metric: str) -> bool | None:
    return {label: up for label, _, up in METRICS}.get(metric)


def convergence_figure(
    curves: Mapping[str, Sequence[Mapping]],
    keys: Sequence[str] = CONVERGENCE_KEYS,
    labels: Mapping[str, str] | None = None,
    band: str = "minmax",
    variants: Sequence[str] | None = None,
) -> go.Figure:
    """How the mixture converges: per scalar a panel, per variant the mean over seeds ± band.

    NaN-aware (:func:`~gmmseg_lab.viz.training.seed_band`): ``decode.gmm_mean_step`` is logged on
    M-step iterations only, so its points are those iterations; a scalar no run logged gets a note.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty {variant: [learning_curves dict per seed]} dict")
    if not keys:
        raise ValueError("keys is empty")
    variants = list(curves) if variants is None else list(variants)
    unknown = [v for v in variants if v not in curves]
    if unknown:
        raise ValueError(f"variants not in curves: {unknown}")
    labels = labels or {}
    colours = model_colours(list(curves))
    fig = make_subplots(
        rows=len(keys),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.07,
        subplot_titles=[SCALAR_TITLES.get(k, k) for k in keys],
    )
    shown: set[str] = set()
    for row, key in enumerate(keys, start=1):
        drawn = False
        for variant in variants:
            runs = curves[variant]
            stats = seed_band(runs, key, "train", band)
            if not len(stats["step"]):
                continue
            name = f"{variant}: {labels.get(variant, variant)} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            for trace in band_traces(
                stats,
                name,
                colours[variant],
                show_legend=name not in shown,
                legend_group=variant,
                hover_name=f"{variant} — {key}",
                kind=band,
            ):
                fig.add_trace(trace, row=row, col=1)
            shown.add(name)
            drawn = True
        if not drawn:
            panel_note(fig, row, 1, f"'{key}' was not logged by these runs")
        fig.update_yaxes(title_text=key.replace("decode.", ""), row=row, col=1)
    fig.update_xaxes(title_text="iteration", row=len(keys), col=1)
    fig.update_layout(
        title=dict(
            text=f"Mixture convergence (line: mean over seeds; band: {'min–max' if band == 'minmax' else '± std'})",
            x=0.01,
        ),
        font=FONT,
        template="plotly_white",
        height=260 * len(keys) + 200,
        legend=dict(orientation="h", yanchor="top", y=-0.06, x=0.0),
        margin=dict(l=80, r=30, t=90, b=120),
        hovermode="closest",
    )
    return fig


def format_bytes(n: float) -> str:
    """``1536 -> "1.5 KiB"`` (binary units)."""
    if not np.isfinite(n):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"


def memory_figure(
    bytes_by_variant: Mapping[str, float | Sequence[float]],
    labels: Mapping[str, str] | None = None,
    title: str = "Memory of the GMM's sample store per variant (log scale)",
) -> go.Figure:
    """Horizontal bars of each variant's memory footprint in bytes (mean when a list per seed is given),
    on a log axis (a FIFO queue and streaming statistics differ by orders of magnitude)."""
    if not isinstance(bytes_by_variant, Mapping) or not bytes_by_variant:
        raise ValueError("bytes_by_variant must be a non-empty {variant: bytes} dict")
    labels = labels or {}
    variants = list(bytes_by_variant)
    sizes = []
    for v in variants:
        values = np.atleast_1d(np.asarray(bytes_by_variant[v], dtype=np.float64))
        if not len(values) or (values <= 0).any() or not np.isfinite(values).all():
            raise ValueError(f"bytes_by_variant[{v!r}] must be positive byte counts, got {bytes_by_variant[v]!r}")
        sizes.append(float(values.mean()))
    colours = model_colours(variants)
    fig = go.Figure(
        go.Bar(
            y=[f"{v}" for v in variants],
            x=sizes,
            orientation="h",
            marker_color=[colours[v] for v in variants],
            text=[format_bytes(s) for s in sizes],
            textposition="outside",
            cliponaxis=False,
            customdata=[labels.get(v, v) for v in variants],
            hovertemplate="<b>%{y}</b> (%{customdata})<br>%{x:,.0f} bytes<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text=title, x=0.01),
        font=FONT,
        template="plotly_white",
        xaxis=dict(
            title="bytes (log scale)", type="log", range=[math.log10(min(sizes)) - 0.5, math.log10(max(sizes)) + 0.8]
        ),
        yaxis=dict(title="variant", autorange="reversed"),
        height=max(260, 48 * len(variants) + 150),
        margin=dict(l=120, r=40, t=80, b=70),
    )
    return fig


def ablation_widget(
    results: Mapping[str, Sequence[Mapping]],
    labels: Mapping[str, str] | None = None,
    curves: Mapping[str, Sequence[Mapping]] | None = None,
    reference: str = "default",
):
    """Live view of :func:`ablation_bars_figure` for one metric: ``.controls["metric"]`` (dropdown) and
    ``.controls["variant:<name>"]`` (checkboxes)."""
    import ipywidgets as widgets

    _check_results(results, reference)
    options = [label for label, _, _ in METRICS] + ([BALANCE] if curves else [])
    controls = {"metric": widgets.Dropdown(options=options, value="mIoU", description="metric")}
    for variant in results:
        controls[f"variant:{variant}"] = widgets.Checkbox(
            value=True, description=variant, indent=False, layout=widgets.Layout(width="auto")
        )

    def render() -> go.Figure:
        chosen = [v for v in results if controls[f"variant:{v}"].value]
        if not chosen:
            fig = go.Figure()
            fig.add_annotation(
                text="select at least one variant",
                x=0.5,
                y=0.5,
                xref="paper",
                yref="paper",
                showarrow=False,
                font=dict(size=FONT["size"] + 2, color="#777"),
            )
            fig.update_layout(
                title=dict(text="Ablation", x=0.01),
                font=FONT,
                template="plotly_white",
                height=300,
                xaxis=dict(visible=False),
                yaxis=dict(visible=False),
            )
            return fig
        return ablation_bars_figure(
            results, labels, metrics=(controls["metric"].value,), reference=reference, curves=curves, variants=chosen
        )

    return figure_box(controls, render)
