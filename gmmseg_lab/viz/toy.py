"""Notebook 00, "generative vs discriminative": a softmax MLP and a GMM classifier on 2-D multimodal data.

- :func:`decision_regions_figure`: predicted class and confidence over the plane, softmax next to
  GMM; the softmax stays confident far from the data, the GMM's confidence fades there.
- :func:`density_contours_figure`: each class's density ``log p(x|c)``, component means and 1-sigma
  ellipses.
- :func:`iterations_figure`: batch EM against Sinkhorn EM on one class, iteration by iteration
  (:func:`gmmseg_lab.experiments.toy.fit_iterations`), with a slider that works in a static HTML page.
- :func:`toy_widget`: the same, live in JupyterLab (iteration, E-step, number of components, class).

Figures need 2-D data (:func:`gmmseg_lab.data.toy.make_toy_data` with ``dim=2``) and only draw: the
classifiers are fitted by :mod:`gmmseg_lab.experiments.toy`. Class colours default to :data:`TOY_PALETTE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from ..data.toy import ToyData
from ..gmm import GMMClassifier
from ..gmm.fit import E_STEPS, FitSnapshots
from ..gmm.open_set import background_log_density, gmm_open_set_confidence
from ._widgets import figure_box
from .style import FONT, class_colours, component_palette, hex_colour

__all__ = [
    "E_STEP_NAMES",
    "TOY_PALETTE",
    "GridEvaluation",
    "decision_regions_figure",
    "default_extent",
    "density_contours_figure",
    "ellipse_xy",
    "gmm_on_grid",
    "grid_points",
    "iterations_figure",
    "snapshot_figure",
    "softmax_on_grid",
    "toy_palette",
    "toy_widget",
]

#: Okabe-Ito colours (orange, sky blue, bluish green, ...): distinguishable with colour-vision deficiencies.
TOY_PALETTE = np.array(
    [[230, 159, 0], [86, 180, 233], [0, 158, 115], [204, 121, 167], [0, 114, 178], [213, 94, 0], [240, 228, 66]],
    dtype=np.uint8,
)
E_STEP_NAMES = {"em": "classic EM (learned weights)", "sinkhorn": "Sinkhorn EM (uniform weights)"}


# --------------------------------------------------------------------------------------------------
# Checks and small helpers.


def _check_data(data: ToyData, name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(x [N, 2] float64, labels [N] int64)``; the figures draw the plane, so D must be 2."""
    if not isinstance(data, ToyData):
        raise TypeError(f"{name} must be a ToyData (from gmmseg_lab.data.toy.make_toy_data), got {type(data).__name__}")
    x = data.x.detach().cpu().double().numpy()
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name}.x must be [N, 2] for these 2-D figures, got shape {tuple(x.shape)}")
    return x, data.labels.detach().cpu().long().numpy()


def _num_classes(labels: np.ndarray) -> int:
    return int(labels.max()) + 1


def toy_palette(num_classes: int, palette=None) -> np.ndarray:
    """``[C, 3]`` uint8 class colours: ``palette`` if given, else the first C of :data:`TOY_PALETTE`."""
    palette = TOY_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) < num_classes:
        raise ValueError(f"palette must be [C, 3] with at least {num_classes} colours, got shape {palette.shape}")
    return palette[:num_classes]


def default_extent(x: np.ndarray, margin: float = 1.0) -> tuple[float, float, float, float]:
    """``(xmin, xmax, ymin, ymax)``: the data's bounding square grown by ``margin`` times its half-size.

    With the default margin the plane reaches as far again beyond the data: room to see what each
    model does where there is no data.
    """
    centre = (x.max(axis=0) + x.min(axis=0)) / 2
    half = float((x.max(axis=0) - x.min(axis=0)).max()) / 2 * (1 + margin)
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def _check_extent(extent) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in extent)
    if len(values) != 4 or not (values[0] < values[1] and values[2] < values[3]):
        raise ValueError(f"extent must be (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax, got {extent!r}")
    return values


def grid_points(extent, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A regular grid over ``extent``.

    Returns:
        ``(xs [R], ys [R], points [R*R, 2])``; ``points`` row ``i * R + j`` is ``(xs[j], ys[i])``,
        so a ``[R*R]`` result reshapes to an ``[R, R]`` image with rows along y (plotly's ``z``).
    """
    xmin, xmax, ymin, ymax = _check_extent(extent)
    if not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    xs = np.linspace(xmin, xmax, resolution)
    ys = np.linspace(ymin, ymax, resolution)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1)


def ellipse_xy(mean, std, n_sigma: float = 1.0, num_points: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Closed outline of the ``n_sigma`` ellipse of a diagonal 2-D Gaussian.

    Args:
        mean, std: ``[2]`` mean and per-axis standard deviations (axis-aligned: diagonal covariance).

    Returns:
        ``(x [P], y [P])``, first point repeated last.
    """
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if mean.shape != (2,) or std.shape != (2,):
        raise ValueError(f"mean and std must have shape [2], got {mean.shape} and {std.shape}")
    angle = np.linspace(0.0, 2 * np.pi, num_points)
    return mean[0] + n_sigma * std[0] * np.cos(angle), mean[1] + n_sigma * std[1] * np.sin(angle)


def _polylines(xy_pairs) -> tuple[list, list]:
    """Concatenate polylines into one trace's x / y, separated by ``None`` (plotly's line breaks)."""
    xs, ys = [], []
    for x, y in xy_pairs:
        xs += list(np.asarray(x, dtype=float)) + [None]
        ys += list(np.asarray(y, dtype=float)) + [None]
    return xs, ys


# --------------------------------------------------------------------------------------------------
# Evaluating both classifiers on a grid.


@dataclass
class GridEvaluation:
    """A classifier evaluated on a grid: ``xs [R]``, ``ys [R]``, ``predicted [R, R]`` class,
    ``confidence [R, R]`` in [0, 1] and, for the GMM, ``log_density [R, R]`` = ``max_c log p(x|c)``."""

    xs: np.ndarray
    ys: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    log_density: np.ndarray | None = None


def softmax_on_grid(model: nn.Module, extent, resolution: int = 160) -> GridEvaluation:
    """Predicted class and max softmax probability of ``model`` on a grid over ``extent``."""
    xs, ys, points = grid_points(extent, resolution)
    with torch.no_grad():
        probs = torch.softmax(model(torch.as_tensor(points, dtype=torch.float32)).double(), dim=1)
    confidence, predicted = probs.max(dim=1)
    shape = (len(ys), len(xs))
    return GridEvaluation(xs, ys, predicted.numpy().reshape(shape), confidence.numpy().reshape(shape))


def gmm_on_grid(gmm: GMMClassifier, extent, background: float, resolution: int = 160) -> GridEvaluation:
    """The GMM's class, open-set confidence (:func:`gmm_open_set_confidence`) and log-density on a grid."""
    xs, ys, points = grid_points(extent, resolution)
    with torch.no_grad():
        ll = gmm.class_log_likelihood(torch.as_tensor(points, dtype=torch.float32))
    confidence, predicted = gmm_open_set_confidence(ll, background)
    shape = (len(ys), len(xs))
    return GridEvaluation(
        xs,
        ys,
        predicted.numpy().reshape(shape),
        confidence.numpy().reshape(shape),
        ll.double().amax(dim=1).numpy().reshape(shape),
    )


def _region_colourscale(colours: list[str]) -> list:
    """Piecewise colour scale over ``z = class + confidence``: within ``[c, c + 1)`` white -> colour c."""
    num = len(colours)
    scale = []
    for c, colour in enumerate(colours):
        scale += [[c / num, "#ffffff"], [(c + 1) / num, colour]]
    return scale


def _region_z(grid: GridEvaluation) -> np.ndarray:
    # Confidence 1 would fall on the next class's white end: keep z strictly inside [c, c + 1).
    return grid.predicted + np.clip(grid.confidence, 0.0, 0.999)


# --------------------------------------------------------------------------------------------------
# Figures.


def _scatter_classes(fig, x, labels, colours, row=None, col=None, show_legend=True, opacity=0.9, size=5):
    for c, colour in enumerate(colours):
        pts = x[labels == c]
        fig.add_trace(
            go.Scatter(
                x=pts[:, 0],
                y=pts[:, 1],
                mode="markers",
                name=f"class {c} points",
                legendgroup=f"class {c}",
                showlegend=show_legend,
                marker=dict(color=colour, size=size, opacity=opacity, line=dict(color="#222222", width=0.4)),
                hovertemplate=f"class {c}<br>(%{{x:.2f}}, %{{y:.2f}})<extra></extra>",
            ),
            row=row,
            col=col,
        )


def decision_regions_figure(
    data: ToyData,
    gmm: GMMClassifier,
    softmax_model: nn.Module,
    extent=None,
    *,
    resolution: int = 160,
    palette=None,
    background_quantile: float = 0.01,
) -> go.Figure:
    """Predicted class regions shaded by confidence: softmax (left) against GMM (right).

    A cell's hue is its predicted class; its saturation is the confidence, from white (0) to the
    full class colour (1). Softmax confidence is ``max_c softmax(logits)_c``. For the GMM, plain
    Bayes' posterior ``max_c p(c|x)`` would not do: it is a ratio of densities, and far from the
    data one class's Gaussian tail (the nearest or widest) dominates the others', so the posterior
    tends to 1 there just as a softmax does (it is 1.0 in float32 at twice the data's radius). And
    ``max_c log p(x|c)`` alone is not a probability, so it cannot share a colour scale with the
    softmax. So the GMM's confidence is the posterior with one extra "none of these" class of
    constant density (:func:`gmm_open_set_confidence`), set at the 1 % quantile of the training
    points' ``max_c log p(x|c)`` (:func:`background_log_density`): equal to the posterior on the
    data, about 1/2 on the level set around it, and falling to 0 away from it. Hover shows
    ``log p(x|c*)`` as well.

    Args:
        data: 2-D toy data (points overlaid).
        gmm: a fitted :class:`GMMClassifier` on 2-D inputs.
        softmax_model: a module mapping ``[N, 2]`` float32 to ``[N, C]`` logits
            (:func:`gmmseg_lab.experiments.toy.fit_softmax_classifier`).
        extent: ``(xmin, xmax, ymin, ymax)``; default :func:`default_extent` (twice the data's span).
        resolution: grid cells per axis.
        palette: ``[C, 3]`` uint8 class colours (default :data:`TOY_PALETTE`).
        background_quantile: quantile of the training log-densities used as the background level.

    Returns:
        A two-panel figure: heatmaps of ``z = class + confidence`` (shared colour axis; hover shows
        class and confidence) and the points of each class.
    """
    x, labels = _check_data(data)
    num_classes = _num_classes(labels)
    if gmm.num_classes != num_classes or gmm.embed_dim != 2:
        raise ValueError(
            f"gmm must have {num_classes} classes on 2-D inputs, got {gmm.num_classes} "
            f"classes on {gmm.embed_dim}-D inputs"
        )
    extent = _check_extent(extent) if extent is not None else default_extent(x)
    colours = class_colours(toy_palette(num_classes, palette))
    soft = softmax_on_grid(softmax_model, extent, resolution)
    if soft.confidence.shape != (resolution, resolution) or soft.predicted.max() >= num_classes:
        raise ValueError(f"softmax_model must output [N, {num_classes}] logits")
    background = background_log_density(gmm, data.x, background_quantile)
    gen = gmm_on_grid(gmm, extent, background, resolution)

    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.08,
        subplot_titles=(
            "Softmax MLP (discriminative): max<sub>c</sub> p(c|x)",
            f"GMM (generative): p(c*|x) with a background density (log b = {background:.1f})",
        ),
    )
    for col, grid, name in ((1, soft, "softmax"), (2, gen, "GMM")):
        # float32: plotly ships numpy arrays as binary, so this halves the page.
        custom = np.stack(
            [grid.predicted, grid.confidence] + ([grid.log_density] if grid.log_density is not None else []), axis=-1
        ).astype(np.float32)
        extra = "<br>max<sub>c</sub> log p(x|c) = %{customdata[2]:.1f}" if grid.log_density is not None else ""
        fig.add_trace(
            go.Heatmap(
                x=grid.xs,
                y=grid.ys,
                z=_region_z(grid).astype(np.float32),
                coloraxis="coloraxis",
                customdata=custom,
                name=name,
                hovertemplate=(
                    f"<b>{name}</b><br>x = (%{{x:.2f}}, %{{y:.2f}})<br>class %{{customdata[0]}}"
                    f"<br>confidence %{{customdata[1]:.3f}}{extra}<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        _scatter_classes(fig, x, labels, colours, row=1, col=col, show_legend=col == 1, size=5)
    fig.update_layout(
        title=dict(
            text="Generative vs discriminative: predicted class, shaded by confidence (white = 0, full colour = 1)",
            x=0.01,
            xanchor="left",
        ),
        font=FONT,
        template="plotly_white",
        width=1150,
        height=640,
        margin=dict(l=70, r=40, t=100, b=110),
        coloraxis=dict(
            colorscale=_region_colourscale(colours),
            cmin=0,
            cmax=num_classes,
            colorbar=dict(
                title=dict(text="class ·<br>confidence"),
                tickvals=np.arange(num_classes) + 0.5,
                ticktext=[f"class {c}" for c in range(num_classes)],
                len=0.8,
            ),
        ),
        legend=dict(orientation="h", x=0.0, xref="container", y=0.01, yref="container", yanchor="bottom"),
    )
    for col in (1, 2):
        frame = dict(showline=True, mirror=True, linecolor="#888888", showgrid=False, zeroline=False)
        fig.update_xaxes(title_text="x₁ (data units)", range=extent[:2], constrain="domain", row=1, col=col, **frame)
        fig.update_yaxes(
            title_text="x₂ (data units)",
            range=extent[2:],
            scaleanchor="x" if col == 1 else "x2",
            constrain="domain",
            row=1,
            col=col,
            **frame,
        )
    return fig


def _enclosing_levels(class_ll: np.ndarray, enclosed) -> list[float]:
    """Log-density levels whose super-level sets hold the fractions ``enclosed`` of the class's points."""
    return [float(np.quantile(class_ll, 1.0 - f)) for f in enclosed]


def _contour_lines(xs, ys, z, level) -> list[np.ndarray]:
    import contourpy

    return contourpy.contour_generator(xs, ys, z, line_type="Separate").lines(level)


def density_contours_figure(
    data: ToyData, gmm: GMMClassifier, *, palette=None, extent=None, resolution: int = 150, enclosed=(0.5, 0.9)
) -> go.Figure:
    """Each class's density ``log p(x|c)`` as contours, with its components' means and 1-sigma ellipses.

    A class's contour at level ``L`` is drawn where ``log p(x|c) = L``; the levels are the quantiles
    of the class's own training points' ``log p(x_n|c)``, so the contour marked 50 % encloses the
    densest region holding half of the class's points (solid), 90 % nine tenths (dashed).
    Components are shades of their class's colour (:func:`~gmmseg_lab.viz.style.component_palette`).

    Args:
        data: 2-D toy data. gmm: a fitted :class:`GMMClassifier` on 2-D inputs.
        palette: ``[C, 3]`` uint8 class colours (default :data:`TOY_PALETTE`).
        extent: ``(xmin, xmax, ymin, ymax)``; default the data's span grown by 40 %.
        enclosed: fractions of each class's points enclosed by the drawn contours (at most 4).

    Returns:
        A figure whose traces carry ``meta`` ``{"class": c, "role": "contour" | "means" | "ellipse",
        ...}`` (``"level"`` and ``"enclosed"`` for contours).
    """
    x, labels = _check_data(data)
    num_classes = _num_classes(labels)
    if gmm.num_classes != num_classes or gmm.embed_dim != 2:
        raise ValueError(
            f"gmm must have {num_classes} classes on 2-D inputs, got {gmm.num_classes} "
            f"classes on {gmm.embed_dim}-D inputs"
        )
    enclosed = tuple(float(f) for f in enclosed)
    if not enclosed or len(enclosed) > 4 or not all(0 < f < 1 for f in enclosed):
        raise ValueError(f"enclosed must hold 1 to 4 fractions in (0, 1), got {enclosed!r}")
    extent = _check_extent(extent) if extent is not None else default_extent(x, margin=0.4)
    pal = toy_palette(num_classes, palette)
    colours = class_colours(pal)
    shades = component_palette(pal, gmm.num_components)
    xs, ys, points = grid_points(extent, resolution)
    with torch.no_grad():
        grid_ll = gmm.class_log_likelihood(torch.as_tensor(points, dtype=torch.float32)).double().numpy()
        train_ll = gmm.class_log_likelihood(data.x.float()).double().numpy()
    means = gmm.means.detach().double().numpy()
    stds = gmm.stds.detach().double().numpy()
    weights = gmm.log_weights.detach().double().exp().numpy()
    dashes = ("solid", "dash", "dot", "dashdot")

    fig = go.Figure()
    _scatter_classes(fig, x, labels, colours, opacity=0.35, size=4)
    for c in range(num_classes):
        z = grid_ll[:, c].reshape(len(ys), len(xs))
        for f, level, dash in zip(enclosed, _enclosing_levels(train_ll[labels == c, c], enclosed), dashes):
            lx, ly = _polylines((line[:, 0], line[:, 1]) for line in _contour_lines(xs, ys, z, level))
            fig.add_trace(
                go.Scatter(
                    x=lx,
                    y=ly,
                    mode="lines",
                    line=dict(color=colours[c], width=2.5, dash=dash),
                    name=f"class {c}: log p(x|c) = {level:.1f} ({f:.0%} of its points inside)",
                    legendgroup=f"class {c}",
                    showlegend=False,
                    hovertemplate=f"class {c}: log p(x|c) = {level:.2f}<br>encloses {f:.0%} of its points<extra></extra>",  # noqa: E501
                    meta={"class": c, "role": "contour", "level": level, "enclosed": f},
                )
            )
        ex, ey = _polylines(ellipse_xy(means[c, m], stds[c, m]) for m in range(gmm.num_components))
        fig.add_trace(
            go.Scatter(
                x=ex,
                y=ey,
                mode="lines",
                line=dict(color="#222222", width=1.2),
                hoverinfo="skip",
                legendgroup=f"class {c}",
                showlegend=False,
                meta={"class": c, "role": "ellipse"},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=means[c, :, 0],
                y=means[c, :, 1],
                mode="markers",
                name=f"class {c} component means",
                legendgroup=f"class {c}",
                marker=dict(
                    color=[hex_colour(rgb) for rgb in shades[c]],
                    size=13,
                    symbol="diamond",
                    line=dict(color="#222222", width=1.5),
                ),
                customdata=np.stack([np.arange(gmm.num_components), weights[c], stds[c, :, 0], stds[c, :, 1]], 1),
                hovertemplate=(
                    f"class {c}, component %{{customdata[0]}}<br>mean (%{{x:.2f}}, %{{y:.2f}})<br>"
                    "std (%{customdata[2]:.2f}, %{customdata[3]:.2f}), "
                    "weight %{customdata[1]:.2f}<extra></extra>"
                ),
                meta={"class": c, "role": "means"},
            )
        )
    for f, dash in zip(enclosed, dashes):  # legend keys for the line styles
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line=dict(color="#444444", width=2.5, dash=dash),
                name=f"density contour enclosing {f:.0%} of the class's points",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[None], y=[None], mode="lines", line=dict(color="#222222", width=1.2), name="component 1-σ ellipse"
        )
    )
    fig.update_layout(
        title=dict(
            text=f"Class densities log p(x|c) of the GMM ({gmm.num_components} components per class)",
            x=0.01,
            xanchor="left",
        ),
        font=FONT,
        template="plotly_white",
        width=1150,
        height=760,
        margin=dict(l=70, r=30, t=80, b=40),
        legend=dict(x=1.02, y=1.0, xanchor="left", font=dict(size=12)),
        xaxis=dict(title="x₁ (data units)", range=extent[:2], constrain="domain"),
        yaxis=dict(title="x₂ (data units)", range=extent[2:], scaleanchor="x", constrain="domain"),
    )
    return fig


# --------------------------------------------------------------------------------------------------
# EM iterations of one class's mixture.


def _component_colours(class_index: int, num_components: int, palette) -> list[str]:
    pal = toy_palette(class_index + 1, palette)
    return [hex_colour(rgb) for rgb in component_palette(pal, num_components)[class_index]]


def _point_style(snap: FitSnapshots, t: int, colours: list[str]) -> tuple[list[str], np.ndarray]:
    """Each point's colour (its most responsible component) and opacity (how sure that is)."""
    resp = snap.responsibilities[t]
    best = resp.argmax(axis=1)
    m = snap.num_components
    sure = (resp.max(axis=1) - 1.0 / m) / (1.0 - 1.0 / m) if m > 1 else np.ones(len(resp))
    return [colours[k] for k in best], 0.25 + 0.75 * np.clip(sure, 0, 1)


def _panel_state(snap: FitSnapshots, t: int, colours: list[str]) -> list[dict]:
    """The changing attributes of one panel's traces at iteration t.

    In trace order: the points, a dark halo under every ellipse (so an ellipse stays visible over
    points of its own colour), the M ellipses, the means.
    """
    point_colours, opacity = _point_style(snap, t, colours)
    ellipses = [ellipse_xy(snap.means[t, m, :2], snap.stds[t, m, :2]) for m in range(snap.num_components)]
    halo_x, halo_y = _polylines(ellipses)
    states = [
        dict(x=snap.x[:, 0], y=snap.x[:, 1], marker_color=point_colours, marker_opacity=opacity),
        dict(x=halo_x, y=halo_y, marker_color="#111111", marker_opacity=1.0),
    ]
    for m, (ex, ey) in enumerate(ellipses):
        states.append(dict(x=ex, y=ey, marker_color=colours[m], marker_opacity=1.0))
    states.append(
        dict(
            x=snap.means[t, :, 0],
            y=snap.means[t, :, 1],
            marker_color=colours,
            marker_opacity=1.0,
            customdata=np.stack([np.arange(snap.num_components), snap.weights[t], snap.masses[t]], axis=1),
        )
    )
    return states


def _panel_traces(snap: FitSnapshots, t: int, colours: list[str], show_legend: bool, name: str) -> list:
    states = _panel_state(snap, t, colours)
    points, halo, means = states[0], states[1], states[-1]
    traces = [
        go.Scatter(
            x=points["x"],
            y=points["y"],
            mode="markers",
            name=f"points of class {snap.class_index}",
            legendgroup="points",
            showlegend=show_legend,
            marker=dict(
                color=points["marker_color"],
                opacity=points["marker_opacity"],
                size=6,
                line=dict(color="#333333", width=0.5),
            ),
            hoverinfo="skip",
            meta={"panel": name, "role": "points"},
        ),
        go.Scatter(
            x=halo["x"],
            y=halo["y"],
            mode="lines",
            showlegend=False,
            line=dict(color="#111111", width=5.5),
            hoverinfo="skip",
            meta={"panel": name, "role": "halo"},
        ),
    ]
    for m in range(snap.num_components):
        s = states[2 + m]
        traces.append(
            go.Scatter(
                x=s["x"],
                y=s["y"],
                mode="lines",
                name=f"component {m} (1-σ ellipse, mean ◆)",
                legendgroup=f"component {m}",
                showlegend=show_legend,
                line=dict(color=colours[m], width=3),
                marker=dict(color=colours[m]),
                hoverinfo="skip",
                meta={"panel": name, "role": "ellipse", "component": m},
            )
        )
    traces.append(
        go.Scatter(
            x=means["x"],
            y=means["y"],
            mode="markers",
            showlegend=False,
            name="means",
            marker=dict(color=colours, size=15, symbol="diamond", opacity=1.0, line=dict(color="#111111", width=2)),
            customdata=means["customdata"],
            hovertemplate=(
                "component %{customdata[0]}<br>mean (%{x:.2f}, %{y:.2f})<br>weight %{customdata[1]:.3f}"
                "<br>mass %{customdata[2]:.3f}<extra>" + name + "</extra>"
            ),
            meta={"panel": name, "role": "means"},
        )
    )
    return traces


def _panel_range(*snaps: FitSnapshots, pad: float = 0.3) -> tuple[list[float], list[float]]:
    """Axis ranges holding the points and every iteration's ellipses: the view never jumps, and
    panels drawn with the same ranges compare at a glance."""
    lo = np.min(
        [np.minimum(s.x[:, :2].min(0), (s.means[..., :2] - s.stds[..., :2]).min(axis=(0, 1))) for s in snaps], axis=0
    )
    hi = np.max(
        [np.maximum(s.x[:, :2].max(0), (s.means[..., :2] + s.stds[..., :2]).max(axis=(0, 1))) for s in snaps], axis=0
    )
    return [float(lo[0] - pad), float(hi[0] + pad)], [float(lo[1] - pad), float(hi[1] + pad)]


def _json_list(values) -> list:
    """Floats rounded to 3 decimals (a thousandth of a data unit: invisible, and the page stays
    small), with ``None`` kept as line breaks."""
    return [None if v is None else round(float(v), 3) for v in values]


def _masses_text(snap: FitSnapshots, t: int) -> str:
    return " / ".join(f"{v:.2f}" for v in snap.masses[t])


_LL_STYLE = {
    "em": dict(color="#222222", dash="solid", symbol="circle"),
    "sinkhorn": dict(color="#777777", dash="dash", symbol="square"),
}  # grey: apart from class hues


def iterations_figure(snapshots_em: FitSnapshots, snapshots_sinkhorn: FitSnapshots, *, palette=None) -> go.Figure:
    """Classic EM next to Sinkhorn EM on one class, with a slider over iterations (static HTML).

    Each panel shows the class's points coloured by their most responsible component (opacity: how
    sure the E-step is), each component's 1-sigma ellipse and its mean (◆; hover for weight and
    mass). A third panel plots the mean log-likelihood per iteration, with the current one ringed.
    The slider's steps use plotly's ``"update"`` method, so they work with no Python kernel.

    Args:
        snapshots_em, snapshots_sinkhorn: :func:`gmmseg_lab.experiments.toy.fit_iterations` results for the same class,
            number of components and iterations (usually from the same ``seed``).
        palette: ``[C, 3]`` uint8 class colours (default :data:`TOY_PALETTE`).

    Returns:
        A figure with ``layout.sliders[0].steps`` of length ``T + 1``.
    """
    em, sk = snapshots_em, snapshots_sinkhorn
    for name, snap, e_step in (("snapshots_em", em, "em"), ("snapshots_sinkhorn", sk, "sinkhorn")):
        if not isinstance(snap, FitSnapshots):
            raise TypeError(f"{name} must be a FitSnapshots (from fit_iterations), got {type(snap).__name__}")
        if snap.e_step != e_step:
            raise ValueError(f"{name} must be fitted with e_step={e_step!r}, got {snap.e_step!r}")
        if snap.x.shape[1] != 2:
            raise ValueError(f"{name} must come from 2-D data, got D={snap.x.shape[1]}")
    if (sk.class_index, sk.num_components, sk.num_iterations, sk.x.shape) != (
        em.class_index,
        em.num_components,
        em.num_iterations,
        em.x.shape,
    ):
        raise ValueError(
            "snapshots_sinkhorn must fit the same class, number of components and iterations as snapshots_em: "
            f"got (class, M, T) = {(sk.class_index, sk.num_components, sk.num_iterations)} against "
            f"{(em.class_index, em.num_components, em.num_iterations)}"
        )
    colours = _component_colours(em.class_index, em.num_components, palette)
    steps_t = em.num_iterations
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.37, 0.37, 0.26],
        horizontal_spacing=0.07,
        subplot_titles=(E_STEP_NAMES["em"], E_STEP_NAMES["sinkhorn"], "mean log-likelihood"),
    )
    dynamic = []  # trace indices the slider changes, in the order of the states below
    xr, yr = _panel_range(em, sk)
    for col, snap in ((1, em), (2, sk)):
        for trace in _panel_traces(snap, 0, colours, show_legend=col == 1, name=E_STEP_NAMES[snap.e_step]):
            fig.add_trace(trace, row=1, col=col)
            dynamic.append(len(fig.data) - 1)
        fig.update_xaxes(title_text="x₁ (data units)", range=xr, constrain="domain", row=1, col=col)
        fig.update_yaxes(
            title_text="x₂ (data units)",
            range=yr,
            scaleanchor=f"x{col if col > 1 else ''}",
            constrain="domain",
            row=1,
            col=col,
        )
    iterations = np.arange(steps_t + 1)
    for snap in (em, sk):
        style = _LL_STYLE[snap.e_step]
        fig.add_trace(
            go.Scatter(
                x=iterations,
                y=snap.log_likelihood,
                mode="lines+markers",
                name=f"{E_STEP_NAMES[snap.e_step].split(' (')[0]}: mean log p(x)",
                line=dict(color=style["color"], dash=style["dash"], width=2),
                marker=dict(symbol=style["symbol"], size=5, color=style["color"]),
                hovertemplate="iteration %{x}<br>mean log p(x) = %{y:.3f} nats<extra></extra>",
                meta={"role": "log-likelihood", "e_step": snap.e_step},
            ),
            row=1,
            col=3,
        )
    for snap in (em, sk):
        style = _LL_STYLE[snap.e_step]
        fig.add_trace(
            go.Scatter(
                x=[0],
                y=[snap.log_likelihood[0]],
                mode="markers",
                showlegend=False,
                marker=dict(
                    size=16, color="rgba(0,0,0,0)", line=dict(color=style["color"], width=2.5), symbol="circle"
                ),
                hoverinfo="skip",
                meta={"role": "current", "e_step": snap.e_step},
            ),
            row=1,
            col=3,
        )
        dynamic.append(len(fig.data) - 1)
    fig.update_xaxes(title_text="EM iteration", row=1, col=3)
    fig.update_yaxes(title_text="mean log p(x) (nats per point)", row=1, col=3)

    def title(t: int) -> str:
        return (
            f"Fitting class {em.class_index} with {em.num_components} components, iteration {t} of {steps_t}"
            f"<br><sup>mean log p(x): EM {em.log_likelihood[t]:.3f}, Sinkhorn {sk.log_likelihood[t]:.3f} nats"
            f" · component masses: EM {_masses_text(em, t)}, Sinkhorn {_masses_text(sk, t)}"
            "<br>point colour: most responsible component · opacity: how sure the E-step is</sup>"
        )

    steps = []
    for t in range(steps_t + 1):
        states = _panel_state(em, t, colours) + _panel_state(sk, t, colours)
        states += [
            dict(x=[t], y=[snap.log_likelihood[t]], marker_color="rgba(0,0,0,0)", marker_opacity=1.0)
            for snap in (em, sk)
        ]
        update = {
            "x": [_json_list(s["x"]) for s in states],
            "y": [_json_list(s["y"]) for s in states],
            "marker.color": [
                s["marker_color"] if isinstance(s["marker_color"], str) else list(s["marker_color"]) for s in states
            ],
            "marker.opacity": [
                s["marker_opacity"]
                if np.isscalar(s["marker_opacity"])
                else [round(float(v), 2) for v in s["marker_opacity"]]
                for s in states
            ],
            # Only the means use customdata (their hover); None leaves the others without.
            "customdata": [s["customdata"].tolist() if "customdata" in s else None for s in states],
        }
        steps.append(dict(method="update", label=str(t), args=[update, {"title.text": title(t)}, dynamic]))
    fig.update_layout(
        title=dict(text=title(0), x=0.01, xanchor="left"),
        font=FONT,
        template="plotly_white",
        width=1150,
        height=820,
        margin=dict(l=70, r=30, t=150, b=210),
        legend=dict(orientation="h", x=0.0, xref="container", y=0.01, yref="container", yanchor="bottom"),
        sliders=[
            dict(
                active=0,
                steps=steps,
                x=0.0,
                len=0.72,
                y=-0.13,
                yanchor="top",
                pad=dict(t=10),
                currentvalue=dict(prefix="EM iteration: ", font=dict(size=14)),
            )
        ],
    )
    return fig


def snapshot_figure(snapshots: FitSnapshots, iteration: int, *, palette=None) -> go.Figure:
    """One fit at one iteration: the panel of :func:`iterations_figure` and its log-likelihood curve."""
    if not isinstance(snapshots, FitSnapshots):
        raise TypeError(f"snapshots must be a FitSnapshots, got {type(snapshots).__name__}")
    if snapshots.x.shape[1] != 2:
        raise ValueError(f"snapshots must come from 2-D data, got D={snapshots.x.shape[1]}")
    if not isinstance(iteration, (int, np.integer)) or not 0 <= iteration <= snapshots.num_iterations:
        raise ValueError(f"iteration must be an int in [0, {snapshots.num_iterations}], got {iteration!r}")
    t = int(iteration)
    snap = snapshots
    colours = _component_colours(snap.class_index, snap.num_components, palette)
    name = E_STEP_NAMES[snap.e_step]
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1, subplot_titles=(name, "mean log-likelihood")
    )
    for trace in _panel_traces(snap, t, colours, show_legend=True, name=name):
        fig.add_trace(trace, row=1, col=1)
    style = _LL_STYLE[snap.e_step]
    fig.add_trace(
        go.Scatter(
            x=np.arange(snap.num_iterations + 1),
            y=snap.log_likelihood,
            mode="lines+markers",
            name="mean log p(x)",
            line=dict(color=style["color"], dash=style["dash"], width=2),
            marker=dict(size=5, symbol=style["symbol"], color=style["color"]),
            meta={"role": "log-likelihood", "e_step": snap.e_step},
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(
            x=[t],
            y=[snap.log_likelihood[t]],
            mode="markers",
            name=f"iteration {t}",
            marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color=style["color"], width=2.5)),
            meta={"role": "current"},
        ),
        row=1,
        col=2,
    )
    xr, yr = _panel_range(snap)
    fig.update_xaxes(title_text="x₁ (data units)", range=xr, constrain="domain", row=1, col=1)
    fig.update_yaxes(title_text="x₂ (data units)", range=yr, scaleanchor="x", constrain="domain", row=1, col=1)
    fig.update_xaxes(title_text="EM iteration", row=1, col=2)
    fig.update_yaxes(title_text="mean log p(x) (nats per point)", row=1, col=2)
    fig.update_layout(
        title=dict(
            text=(
                f"Class {snap.class_index}, {snap.num_components} components, iteration {t} of "
                f"{snap.num_iterations}: mean log p(x) = {snap.log_likelihood[t]:.3f} nats"
                f"<br><sup>component masses {_masses_text(snap, t)} · point colour: most responsible "
                "component, opacity: how sure</sup>"
            ),
            x=0.01,
            xanchor="left",
        ),
        font=FONT,
        template="plotly_white",
        width=1100,
        height=600,
        margin=dict(l=70, r=30, t=100, b=100),
        legend=dict(orientation="h", x=0.0, xref="container", y=0.01, yref="container", yanchor="bottom"),
    )
    return fig


def toy_widget(
    data: ToyData,
    fit,
    *,
    num_components: int = 3,
    n_iters: int = 30,
    seed: int = 0,
    max_components: int = 6,
    palette=None,
    sinkhorn_epsilon: float = 0.05,
):
    """Live EM explorer for JupyterLab: one class's mixture fit, redrawn as the controls change.

    Controls (``box.controls``): ``"class_index"`` (dropdown), ``"e_step"`` (dropdown, ``"em"`` or
    ``"sinkhorn"``), ``"num_components"`` (slider 1..``max_components``) and ``"iteration"`` (slider
    0..``n_iters``). A fit (``fit(data, class_index, num_components, e_step, n_iters=..., seed=...,
    sinkhorn_epsilon=...)`` -> :class:`~gmmseg_lab.gmm.fit.FitSnapshots`, i.e.
    :func:`gmmseg_lab.experiments.toy.fit_iterations`) is computed once per class,
    E-step and M, then cached; moving the iteration slider only redraws. ``box.figure`` is the
    current :func:`snapshot_figure`; ``box.snapshots`` the current fit.
    """
    import ipywidgets as widgets

    _, labels = _check_data(data)
    num_classes = _num_classes(labels)
    if not 1 <= num_components <= max_components:
        raise ValueError(f"num_components must be in [1, max_components={max_components}], got {num_components}")
    controls = {
        "class_index": widgets.Dropdown(
            options=[(f"class {c}", c) for c in range(num_classes)], value=0, description="class"
        ),
        "e_step": widgets.Dropdown(options=[(E_STEP_NAMES[e], e) for e in E_STEPS], value="em", description="E-step"),
        "num_components": widgets.IntSlider(value=num_components, min=1, max=max_components, description="components"),
        "iteration": widgets.IntSlider(value=0, min=0, max=n_iters, description="iteration"),
    }
    cache: dict[tuple, FitSnapshots] = {}
    box = None

    def render() -> go.Figure:
        key = (controls["class_index"].value, controls["e_step"].value, controls["num_components"].value)
        if key not in cache:
            cache[key] = fit(
                data, key[0], key[2], key[1], n_iters=n_iters, seed=seed, sinkhorn_epsilon=sinkhorn_epsilon
            )
        if box is not None:
            box.snapshots = cache[key]
        return snapshot_figure(cache[key], controls["iteration"].value, palette=palette)

    box = figure_box(controls, render)
    box.snapshots = cache[(0, "em", num_components)]
    return box
