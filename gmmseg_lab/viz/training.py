"""Notebook 01, "train and compare": GMMSeg against its softmax twin over several seeds.

- :func:`seed_band` / :func:`learning_curves_figure`: a training scalar's mean over seeds with a
  min–max (or ± std) band, per model, and the validation mIoU.
- :func:`metrics_table` / :func:`style_metrics_table`: the run grid's ``summary["aggregate"]`` as
  "mean ± std" strings, with the better head of each architecture marked.
- :func:`per_class_iou_figure`: per-class IoU, grouped by model, error bars over seeds.
- :func:`predictions_figure` / :func:`predictions_widget`: image | ground truth | each model's
  prediction, an image dropdown for static HTML, an image slider and model toggles live.
- :func:`add_menus`: a row of static-HTML menus above the plot, shared with the other notebooks' views.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..stats import TABLE_COLUMNS as COLUMNS
from ..stats import format_mean_std, seed_stats
from ._widgets import figure_box
from .common import png_data_uri
from .style import FONT, class_colours, colourise, hex_colour, image_axes, model_colours, panel_note, rgba

#: Axis titles of the scalars mmengine logs (others are shown under their log key).
SCALAR_TITLES = {
    "loss": "total training loss",
    "decode.loss_ce": "cross-entropy loss (decode head)",
    "decode.loss_component": "component loss (decode head)",
    "aux.loss_ce": "cross-entropy loss (auxiliary head)",
    "decode.acc_seg": "training pixel accuracy (%)",
    "decode.gmm_loglik": "mean log p(x|y), labelled pixels",
    "decode.gmm_balance": "component balance (normalised entropy)",
    "decode.gmm_mean_step": "mean move of component means (M-steps)",
    "lr": "learning rate",
    "mIoU": "validation mIoU (%)",
    "aAcc": "validation pixel accuracy (%)",
    "mAcc": "validation mean class accuracy (%)",
}

#: Colour of ground-truth pixels labelled ignore (255).
IGNORE_COLOUR = (0, 0, 0)


# ----------------------------------------------------------------------------------- curves
def seed_band(runs: Sequence[Mapping], key: str, kind: str = "train", band: str = "minmax") -> dict[str, np.ndarray]:
    """Mean over seeds of one logged scalar, with its spread, on the union of the logged steps.

    Args:
        runs: one :func:`gmmseg_lab.experiments.predictions.learning_curves` dict per seed.
        key: the scalar, e.g. ``"loss"`` or ``"decode.gmm_mean_step"``.
        kind: ``"train"`` or ``"val"``.
        band: ``"minmax"`` (lowest and highest seed) or ``"std"`` (mean ± sample std).

    Returns:
        ``{"step", "mean", "low", "high", "count"}``, each ``[S]``: NaN entries (a scalar logged on
        some rows only, like ``gmm_mean_step`` on M-step rows) are left out per seed, so ``count`` is
        the number of seeds that logged the step. All ``[0]`` when no run logged ``key``.
    """
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std', got {band!r}")
    series = []
    for run in runs:
        table = run.get(kind, {})
        if key not in table:
            continue
        steps = np.asarray(table["step"], dtype=np.float64)
        values = np.asarray(table[key], dtype=np.float64)
        if steps.shape != values.shape:
            raise ValueError(f"runs: {kind!r} step and {key!r} have different lengths ({len(steps)} and {len(values)})")
        logged = np.isfinite(values)
        if logged.any():
            series.append((steps[logged], values[logged]))
    if not series:
        empty = np.zeros(0)
        return dict(step=empty, mean=empty, low=empty, high=empty, count=np.zeros(0, dtype=np.int64))
    steps = np.unique(np.concatenate([s for s, _ in series]))
    grid = np.full((len(series), len(steps)), np.nan)
    for row, (s, v) in zip(grid, series):
        row[np.searchsorted(steps, s)] = v
    count = np.isfinite(grid).sum(0)
    mean = np.nanmean(grid, axis=0)  # every step has at least one seed
    if band == "minmax":
        low, high = np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)
    else:
        spread = np.zeros_like(mean)
        several = count > 1
        spread[several] = np.nanstd(grid[:, several], axis=0, ddof=1)
        low, high = mean - spread, mean + spread
    return dict(step=steps, mean=mean, low=low, high=high, count=count)


#: How :func:`band_traces` names the band in the hover text, per :func:`seed_band` ``band``.
_BAND_HOVER = {"minmax": "seed range (min – max)", "std": "mean ± sample std"}


def band_traces(
    band: Mapping[str, np.ndarray],
    name: str,
    colour: str,
    show_legend: bool = True,
    legend_group: str | None = None,
    hover_name: str | None = None,
    kind: str = "minmax",
) -> list[go.Scatter]:
    """A shaded band (low–high) and the mean line of :func:`seed_band`'s output, as two traces.

    Args:
        band: :func:`seed_band`'s dict: ``step``, ``mean``, ``low``, ``high``, ``count``, each ``[S]``.
        name: legend name; ``colour``: ``'#rrggbb'`` of the line (the band is that colour, translucent).
        kind: the ``band`` :func:`seed_band` was called with (``"minmax"`` or ``"std"``), named in
            the hover text.
    """
    if kind not in _BAND_HOVER:
        raise ValueError(f"kind must be one of {list(_BAND_HOVER)}, got {kind!r}")
    group = legend_group or name
    steps = band["step"]
    shade = go.Scatter(
        x=np.concatenate([steps, steps[::-1]]),
        y=np.concatenate([band["high"], band["low"][::-1]]),
        mode="lines",
        fill="toself",
        fillcolor=rgba(colour, 0.18),
        line=dict(width=0),
        hoverinfo="skip",
        legendgroup=group,
        showlegend=False,
        name=f"{name} spread",
    )
    line = go.Scatter(
        x=steps,
        y=band["mean"],
        mode="lines+markers" if len(steps) < 12 else "lines",
        line=dict(color=colour, width=2.2),
        marker=dict(size=6),
        name=name,
        legendgroup=group,
        showlegend=show_legend,
        customdata=np.stack([band["low"], band["high"], band["count"]], -1),
        hovertemplate=(
            f"<b>{hover_name or name}</b><br>iteration %{{x:.0f}}<br>mean %{{y:.4g}}"
            f"<br>{_BAND_HOVER[kind]}: %{{customdata[0]:.4g}} – %{{customdata[1]:.4g}}"
            "<br>seeds %{customdata[2]:.0f}<extra></extra>"
        ),
    )
    return [shade, line]


def _grid_shape(panels: int, max_cols: int) -> tuple[int, int]:
    cols = min(panels, max_cols)
    return math.ceil(panels / cols), cols


def learning_curves_figure(
    curves_by_model: Mapping[str, Sequence[Mapping]],
    keys: Sequence[str] = ("loss",),
    val_keys: Sequence[str] = ("mIoU",),
    band: str = "minmax",
    title: str = "Learning curves (line: mean over seeds; band: spread over seeds)",
    max_cols: int = 2,
) -> go.Figure:
    """Training scalars and validation metrics against iteration, one line per model, bands over seeds.

    Args:
        curves_by_model: model label -> list of :func:`~gmmseg_lab.experiments.predictions.learning_curves` dicts,
            one per seed.
        keys: training scalars, one panel each (a key no run logged gets an explanatory note, e.g.
            ``decode.gmm_loglik`` on runs older than the convergence statistics).
        val_keys: validation scalars, one panel each.
        band: ``"minmax"`` or ``"std"`` (see :func:`seed_band`).
    """
    if not curves_by_model:
        raise ValueError("curves_by_model is empty")
    for label, runs in curves_by_model.items():
        if isinstance(runs, Mapping) or not len(runs):
            raise ValueError(
                f"curves_by_model[{label!r}] must be a non-empty list of learning_curves dicts (one per seed)"
            )
    panels = [("train", k) for k in keys] + [("val", k) for k in val_keys]
    if not panels:
        raise ValueError("keys and val_keys are both empty")
    rows, cols = _grid_shape(len(panels), max_cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        horizontal_spacing=0.08,
        vertical_spacing=0.16,
        subplot_titles=[f"{'validation' if kind == 'val' else 'training'}: {key}" for kind, key in panels],
    )
    in_legend: set[str] = set()
    colours = model_colours(list(curves_by_model))
    for p, (kind, key) in enumerate(panels):
        row, col = p // cols + 1, p % cols + 1
        drawn = False
        for label, runs in curves_by_model.items():
            stats = seed_band(runs, key, kind, band)
            if not len(stats["step"]):
                continue  # e.g. a softmax run has no gmm_* scalars
            name = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            for trace in band_traces(
                stats, name, colours[label], show_legend=name not in in_legend, hover_name=f"{label} — {key}", kind=band
            ):
                fig.add_trace(trace, row=row, col=col)
            in_legend.add(name)
            drawn = True
        if not drawn:
            panel_note(fig, row, col, f"'{key}' was not logged by these runs")
        fig.update_xaxes(title_text="iteration", row=row, col=col)
        fig.update_yaxes(title_text=SCALAR_TITLES.get(key, key), row=row, col=col)
    fig.update_layout(
        title=dict(text=title, x=0.01),
        font=FONT,
        template="plotly_white",
        height=340 * rows + 110,
        legend=dict(orientation="h", yanchor="top", y=-0.12 if rows == 1 else -0.06, x=0.0),
        margin=dict(l=70, r=30, t=90, b=90),
        hovermode="closest",
    )
    return fig


# ----------------------------------------------------------------------------------- metrics table
def _aggregate_of(summary_aggregate: Mapping) -> Mapping:
    # accept the whole summary.json as well as its "aggregate" entry
    if "aggregate" in summary_aggregate and isinstance(summary_aggregate["aggregate"], Mapping):
        return summary_aggregate["aggregate"]
    return summary_aggregate


def metrics_table(summary_aggregate: Mapping, columns=COLUMNS, digits: int = 3):
    """The comparison grid as a table of "mean ± std" strings, and where each head is the better one.

    Args:
        summary_aggregate: ``{arch: {head: {metric: {"mean", "std", "n", "values"}}}}`` (the
            ``"aggregate"`` of :func:`gmmseg_lab.experiments.compare.run_comparison`'s summary; the whole summary is
            accepted too).
        columns: ``(label, key path, higher is better)`` triples; the default is the demo's columns.

    Returns:
        ``(table, better)``: two ``pandas.DataFrame`` indexed by ``(architecture, head)`` with one
        column per metric (``"mIoU ↑"``, ``"ECE ↓"``, ...) and a ``seeds`` column; ``better`` is True
        where that head has the best mean of its architecture for that metric (only when at least
        two heads report it). Pass both to :func:`style_metrics_table` for a highlighted view.
    """
    import pandas as pd

    aggregate = _aggregate_of(summary_aggregate)
    if not isinstance(aggregate, Mapping) or not aggregate:
        raise ValueError("summary_aggregate must be a non-empty {arch: {head: {metric: stats}}} dict")
    headers = [f"{label} {'↑' if up else '↓'}" for label, _, up in columns]
    index, cells, flags = [], [], []
    for arch, by_head in aggregate.items():
        if not isinstance(by_head, Mapping):
            raise ValueError(f"summary_aggregate[{arch!r}] must map head -> metrics, got {type(by_head).__name__}")
        best: dict[str, str] = {}
        for label, _, up in columns:
            means = {
                head: cols[label]["mean"]
                for head, cols in by_head.items()
                if label in cols and cols[label]["mean"] is not None and np.isfinite(cols[label]["mean"])
            }
            if len(means) > 1:
                best[label] = (max if up else min)(means, key=means.get)
        for head, cols in by_head.items():
            index.append((arch, head))
            row, flag = [], []
            for label, _, _ in columns:
                stats = cols.get(label)
                row.append("n/a" if stats is None else format_mean_std({"n": 1, **stats}, digits))
                flag.append(best.get(label) == head)
            seeds = max((int(s.get("n", 0)) for s in cols.values()), default=0)
            cells.append(row + [str(seeds)])
            flags.append(flag + [False])
    idx = pd.MultiIndex.from_tuples(index, names=["architecture", "head"])
    table = pd.DataFrame(cells, index=idx, columns=headers + ["seeds"])
    better = pd.DataFrame(flags, index=idx, columns=headers + ["seeds"])
    return table, better


def style_metrics_table(
    table,
    better,
    caption: str | None = "mean ± sample std over seeds; bold: better head "
    "of the architecture (↑ higher / ↓ lower is better)",
):
    """A ``pandas`` Styler of :func:`metrics_table`'s output: better cells bold on a light green."""
    styles = better.replace({True: "font-weight: bold; background-color: #dff0d8", False: ""})
    styler = table.style.apply(lambda _: styles, axis=None)
    return styler.set_caption(caption) if caption else styler


# ----------------------------------------------------------------------------------- per-class IoU
def per_class_iou_figure(
    metrics_by_model: Mapping[str, Sequence[Mapping] | Mapping],
    title: str = "Per-class IoU (bar: mean over seeds; whisker: sample std)",
) -> go.Figure:
    """Grouped bars of per-class IoU, one colour per model, error bars = sample std over seeds.

    Args:
        metrics_by_model: model label -> list of ``metrics.json`` dicts (one per seed; a single dict
            is one seed). Classes are ordered as in the first model's ``per_class_iou``.
    """
    if not metrics_by_model:
        raise ValueError("metrics_by_model is empty")
    fig = go.Figure()
    colours = model_colours(list(metrics_by_model))
    classes: list[str] | None = None
    for label, runs in metrics_by_model.items():
        runs = [runs] if isinstance(runs, Mapping) else list(runs)
        if not runs or any("per_class_iou" not in r for r in runs):
            raise ValueError(f"metrics_by_model[{label!r}]: every metrics dict needs 'per_class_iou'")
        if classes is None:
            classes = list(runs[0]["per_class_iou"])
        stats = [seed_stats(r["per_class_iou"].get(c) for r in runs) for c in classes]  # per class, over seeds
        mean, std, counts = (np.array([s[key] for s in stats], dtype=np.float64) for key in ("mean", "std", "n"))
        std[counts == 0] = 0.0  # a class no seed reports: no bar, no whisker
        fig.add_bar(
            x=classes,
            y=mean,
            name=f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})",
            marker_color=colours[label],
            error_y=dict(type="data", array=std, visible=len(runs) > 1, thickness=1.5, width=4),
            customdata=np.stack([std, counts], -1),
            hovertemplate=f"<b>{label}</b><br>%{{x}}: IoU %{{y:.3f}} ± %{{customdata[0]:.3f}}"
            "<br>seeds %{customdata[1]:.0f}<extra></extra>",
        )
    fig.update_layout(
        title=dict(text=title, x=0.01),
        font=FONT,
        template="plotly_white",
        barmode="group",
        xaxis=dict(title="class", tickangle=-30),
        yaxis=dict(title="IoU", range=[0, 1.02]),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.0),
        height=460,
        margin=dict(l=70, r=30, t=100, b=110),
    )
    return fig


# ----------------------------------------------------------------------------------- predictions
def _class_legend(fig: go.Figure, classes: Sequence[str], palette, extra: Sequence[tuple[str, tuple]] = ()) -> None:
    """Legend entries (square markers, no data) for the class colours of label maps drawn as images."""
    for name, colour in list(zip(classes, class_colours(palette))) + [(n, hex_colour(c)) for n, c in extra]:
        fig.add_scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=name,
            hoverinfo="skip",
            marker=dict(symbol="square", size=13, color=colour, line=dict(color="#444", width=1)),
        )


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, ignore_index: int = 255) -> float:
    """Share of ground-truth-labelled pixels predicted right (NaN when none is labelled); ``pred`` and
    ``gt`` are int label maps of one shape, e.g. ``[H, W]``."""
    labelled = gt != ignore_index
    return float((pred[labelled] == gt[labelled]).mean()) if labelled.any() else float("nan")


def _check_same_images(preds_by_model: Mapping) -> tuple[str, object]:
    if not preds_by_model:
        raise ValueError("preds_by_model is empty")
    items = list(preds_by_model.items())
    ref_label, ref = items[0]
    for label, p in items[1:]:
        if list(p.names) != list(ref.names) or p.gt.shape != ref.gt.shape:
            raise ValueError(
                f"preds_by_model[{label!r}] holds other images than preds_by_model[{ref_label!r}]; "
                "collect every model's predictions on the same split and max_images"
            )
    return ref_label, ref


def predictions_figure(
    preds_by_model: Mapping[str, object],
    max_images: int = 4,
    image_indices: Sequence[int] | None = None,
    panel_px: int = 300,
) -> go.Figure:
    """Image | ground truth | each model's prediction, in class colours, for one image at a time.

    Args:
        preds_by_model: model label -> :class:`~gmmseg_lab.experiments.predictions.Predictions` on the same images.
        max_images: how many of the first images the dropdown offers (ignored with ``image_indices``).
        image_indices: the images to offer instead (the first is shown).
        panel_px: height of the image panels in pixels (the width follows the page).

    The label maps are embedded as PNG (``[H, W, 3]`` colours from ``palette``, ground-truth ignore
    pixels black); a dropdown picks the image (static HTML), subplot titles give each model's pixel
    accuracy on that image, and the legend names the class colours.
    """
    _, ref = _check_same_images(preds_by_model)
    n_total = len(ref.names)
    if image_indices is None:
        if not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be a positive int, got {max_images!r}")
        image_indices = list(range(min(max_images, n_total)))
    image_indices = [int(i) for i in image_indices]
    if not image_indices or any(not 0 <= i < n_total for i in image_indices):
        raise ValueError(f"image_indices must be non-empty indices in [0, {n_total}), got {image_indices}")
    labels = list(preds_by_model)
    n_panels = 2 + len(labels)

    def titles_for(i: int) -> list[str]:
        return ["image", "ground truth"] + [
            f"{label}: pixel acc {pixel_accuracy(preds_by_model[label].pred[i], ref.gt[i]):.3f}" for label in labels
        ]

    fig = make_subplots(rows=1, cols=n_panels, horizontal_spacing=0.015, subplot_titles=titles_for(image_indices[0]))
    for k, i in enumerate(image_indices):
        maps = [ref.images[i], colourise(ref.gt[i], ref.palette, ignore_colour=IGNORE_COLOUR)]
        maps += [colourise(preds_by_model[label].pred[i], ref.palette) for label in labels]
        for col, rgb in enumerate(maps, start=1):
            fig.add_trace(
                go.Image(
                    source=png_data_uri(rgb),
                    visible=k == 0,
                    name=ref.names[i],
                    hovertemplate="row %{y}, column %{x}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    _class_legend(fig, ref.classes, ref.palette, extra=[("ignore (GT 255)", IGNORE_COLOUR)])
    image_axes(fig, n_panels)
    n_legend = len(ref.classes) + 1

    def heading(i: int) -> str:
        return f"Predictions on {ref.split} image {ref.names[i]} (#{i})"

    height, top, bottom = panel_px + 190, 130, 50
    fig.update_layout(
        title=dict(text=heading(image_indices[0]), x=0.01, y=0.98, yanchor="top"),
        font=FONT,
        template="plotly_white",
        height=height,
        margin=dict(l=70, r=20, t=top, b=bottom),
        legend=dict(title=dict(text="class"), x=1.01, y=1.0),
        plot_bgcolor="white",
    )
    if len(image_indices) > 1:
        buttons = []
        for k, i in enumerate(image_indices):
            visible = [k2 == k for k2 in range(len(image_indices)) for _ in range(n_panels)]
            visible += [True] * n_legend
            relayout = {"title.text": heading(i)}
            relayout.update({f"annotations[{a}].text": t for a, t in enumerate(titles_for(i))})
            buttons.append(
                dict(label=f"image: {ref.names[i]} (#{i})", method="update", args=[{"visible": visible}, relayout])
            )
        add_menus(fig, [(buttons, 0)], height, top, bottom)
    return fig


def predictions_widget(preds_by_model: Mapping[str, object], max_images: int = 8, panel_px: int = 300):
    """Live view of :func:`predictions_figure`: an image slider and one toggle per model.

    Returns an ``ipywidgets.VBox`` with ``.controls`` (``"image"`` and ``"model:<label>"``) and
    ``.figure`` (the figure on display, replaced when a control changes).
    """
    import ipywidgets as widgets

    _, ref = _check_same_images(preds_by_model)
    n = min(max_images, len(ref.names))
    controls = {"image": widgets.IntSlider(value=0, min=0, max=n - 1, description="image", continuous_update=False)}
    for label in preds_by_model:
        controls[f"model:{label}"] = widgets.ToggleButton(value=True, description=label, tooltip=f"show {label}")

    def render() -> go.Figure:
        shown = {label: p for label, p in preds_by_model.items() if controls[f"model:{label}"].value}
        if not shown:
            return _image_and_gt_figure(ref, controls["image"].value, panel_px)
        return predictions_figure(shown, image_indices=[controls["image"].value], panel_px=panel_px)

    return figure_box(controls, render)


def _image_and_gt_figure(ref, index: int, panel_px: int) -> go.Figure:
    # predictions_figure with every model toggled off: image and ground truth only
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.015, subplot_titles=["image", "ground truth"])
    fig.add_trace(go.Image(source=png_data_uri(ref.images[index])), row=1, col=1)
    fig.add_trace(go.Image(source=png_data_uri(colourise(ref.gt[index], ref.palette, IGNORE_COLOUR))), row=1, col=2)
    _class_legend(fig, ref.classes, ref.palette, extra=[("ignore (GT 255)", IGNORE_COLOUR)])
    image_axes(fig, 2)
    fig.update_layout(
        title=dict(text=f"{ref.names[index]} (#{index}): no model selected", x=0.01),
        font=FONT,
        template="plotly_white",
        height=panel_px + 190,
        margin=dict(l=70, r=20, t=130, b=50),
        legend=dict(title=dict(text="class"), x=1.01, y=1.0),
    )
    return fig


# ----------------------------------------------------------------------------------- menus, widgets
def add_menus(
    fig: go.Figure,
    menus: Sequence[tuple[list, int]],
    height: int,
    margin_top: int,
    margin_bottom: int,
    px_above_plot: int = 40,
    x0: float = 0.0,
    spacing: float = 0.3,
) -> None:
    """Menus in a row above the plot area (below the title), ``spacing`` apart in paper units.

    ``menus``: ``(buttons, active)`` per menu for a dropdown, ``(buttons, active, "buttons")`` for a
    row of buttons. Button labels should name what they choose ("image: ...", "opacity 60%"): the
    labels stay legible wherever the menus land. plotly places menus in paper coordinates, so the
    plot area's height (``height - margin_top - margin_bottom``) converts the pixel offset.
    """
    y = 1.0 + px_above_plot / max(height - margin_top - margin_bottom, 1)
    fig.update_layout(
        updatemenus=[
            dict(
                buttons=buttons,
                active=active,
                type=kind[0] if kind else "dropdown",
                direction="right" if kind and kind[0] == "buttons" else "down",
                x=x0 + k * spacing,
                xanchor="left",
                y=y,
                yanchor="middle",
                showactive=True,
                pad=dict(l=0, r=0, t=0, b=0),
                font=dict(size=FONT["size"] - 1),
                bgcolor="#f4f4f4",
                bordercolor="#999999",
            )
            for k, (buttons, active, *kind) in enumerate(menus)
        ]
    )
