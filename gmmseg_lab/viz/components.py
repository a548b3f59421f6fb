"""Notebook 02, "inside the mixture": which Gaussian component explains each pixel.

A GMMSeg head models each class ``c`` by ``M`` diagonal Gaussians; a pixel embedding ``x`` has the
component log-densities ``log w_cm + log N(x; mu_cm, sigma_cm)`` (:meth:`Predictions.component_log_prob`,
``[C, M, h, w]`` at feature resolution). This module turns them into:

- :func:`component_assignment`: the most likely component (``argmax_m``) of the predicted (or a
  chosen) class;
- :func:`component_overlay_figure` / :func:`component_widget`: the image with component shades on top;
- :func:`pixel_posterior` / :func:`pixel_posterior_figure`: Bayes' posterior over classes and the
  responsibilities of the chosen class's components at one pixel;
- :func:`component_usage` / :func:`component_balance` / :func:`component_usage_figure`: how evenly
  each class uses its components on ground-truth-labelled pixels.

Image and feature grids are linked the way ``torch.nn.functional.interpolate(mode="nearest")`` links
them (image row ``r`` reads feature row ``r * h // H``), the same rule that made ``gt_small``.

Which component a pixel "belongs to" is always the most likely one, ``argmax_m component_log_prob``
(hard maximum a posteriori), not the training E-step's assignment: the head's default E-step is
Sinkhorn, which balances the components over a batch and can assign a pixel to a less likely one.

"Predicted class" means ``preds.pred``, the head's own prediction at image resolution (what
:func:`component_overlay_figure` colours by); the Bayes class ``argmax_c p(c|x)`` of
``class_log_likelihood`` is named as such where it is used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.special import logsumexp, softmax

from ._widgets import figure_box
from .common import png_data_uri
from .style import FONT, class_colours, component_palette, hex_colour, image_axes
from .training import add_menus

#: Opacity levels of the overlay's buttons in static HTML.
OPACITY_LEVELS = (0.3, 0.6, 0.9)


# ----------------------------------------------------------------------------------- checks, grids
def _require_gmm(preds, what: str) -> None:
    if not preds.is_gmm or preds.embeddings is None or preds.means is None:
        raise ValueError(
            f"{what} needs a GMM head's predictions (embeddings and mixture parameters); preds.head is {preds.head!r}"
        )


def _check_index(preds, index, name: str = "index") -> int:
    n = len(preds.names)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"{name} must be an image index in [0, {n}), got {index!r}")
    return int(index)


def _check_class(preds, class_index, name: str = "class_index") -> int | None:
    if class_index is None:
        return None
    c = len(preds.classes)
    if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) or not 0 <= class_index < c:
        raise ValueError(f"{name} must be None or a class index in [0, {c}), got {class_index!r}")
    return int(class_index)


def nearest_source_index(size_out: int, size_in: int) -> np.ndarray:
    """``[size_out]``: the input index nearest-neighbour resizing reads for each output index
    (``floor(i * size_in / size_out)``, as ``torch.nn.functional.interpolate(mode="nearest")``)."""
    return (np.arange(size_out) * size_in) // size_out


def _feature_cell(preds, row: int, col: int) -> tuple[int, int]:
    height, width = preds.gt.shape[1:]
    h, w = preds.embeddings.shape[2:]
    return row * h // height, col * w // width


# ----------------------------------------------------------------------------------- assignment
def component_assignment(preds, index: int, class_index: int | None = None, resolution: str = "image") -> np.ndarray:
    """Most likely mixture component of each pixel, within the predicted (or a given) class.

    Args:
        preds: :class:`~gmmseg_lab.experiments.predictions.Predictions` of a GMM head.
        index: image index.
        class_index: ``None``: at each pixel, the components of the class predicted there;
            an int: that class's components at every pixel (mask with ``pred == class_index`` to keep
            only the class's own pixels).
        resolution: ``"image"``: ``[H, W]``; the class is ``preds.pred`` (the head's prediction at
            image resolution) and the component is the argmax of ``component_log_prob`` at the
            feature cell the pixel reads (nearest-neighbour upsampling). ``"feature"``: ``[h, w]`` on
            the embedding grid, where ``preds.pred`` does not exist; the class is the Bayes class of
            the cell, ``argmax_c logsumexp_m component_log_prob`` (it can differ from ``preds.pred``
            at the pixels the cell is resized to).

    Returns:
        int64 component indices in ``[0, M)``, ``[H, W]`` or ``[h, w]``.
    """
    _require_gmm(preds, "component_assignment")
    index = _check_index(preds, index)
    class_index = _check_class(preds, class_index)
    if resolution not in ("image", "feature"):
        raise ValueError(f"resolution must be 'image' or 'feature', got {resolution!r}")
    log_prob = preds.component_log_prob(index)  # [C, M, h, w]
    if resolution == "image":
        labels = preds.pred[index] if class_index is None else np.full(preds.pred.shape[1:], class_index)
        return _assign_on_image(log_prob.argmax(1), labels)
    labels = logsumexp(log_prob, axis=1).argmax(0) if class_index is None else np.full(log_prob.shape[2:], class_index)
    return np.take_along_axis(log_prob.argmax(1), labels[None].astype(np.int64), axis=0)[0].astype(np.int64)


def _assign_on_image(best: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``best`` ``[C, h, w]`` (each class's best component per cell), ``labels`` ``[H, W]`` -> ``[H, W]``
    component of ``labels``' class at the cell each pixel reads (nearest-neighbour upsampling)."""
    rows = nearest_source_index(labels.shape[0], best.shape[1])
    cols = nearest_source_index(labels.shape[1], best.shape[2])
    return best[labels.astype(np.int64), rows[:, None], cols[None, :]].astype(np.int64)


def class_posterior(preds, index: int, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """``[C, H, W]`` Bayes posterior ``p(c|x)`` with a uniform class prior: softmax of ``class_log_likelihood``.

    With ``rows`` ``[r]`` and ``cols`` ``[k]`` (pixel indices), only that grid: ``[C, r, k]``
    (the softmax runs on the selected pixels only).
    """
    _require_gmm(preds, "class_posterior")
    index = _check_index(preds, index)
    log_lik = preds.class_log_likelihood[index]
    if rows is not None or cols is not None:
        height, width = log_lik.shape[1:]
        rows = np.arange(height) if rows is None else np.asarray(rows)
        cols = np.arange(width) if cols is None else np.asarray(cols)
        log_lik = log_lik[:, rows[:, None], cols[None, :]]
    return softmax(log_lik.astype(np.float64), axis=0)


def pixel_posterior(preds, index: int, row: int, col: int, class_index: int | None = None) -> dict:
    """Posterior over classes and over one class's components at image pixel ``(row, col)``.

    Args:
        class_index: the class whose components are examined; ``None``: the predicted class
            ``preds.pred`` at the pixel (the class :func:`component_overlay_figure` colours it by).

    Returns:
        dict with ``class_posterior`` ``[C]`` (softmax of ``class_log_likelihood`` at the pixel: Bayes
        with a uniform prior), ``class_log_likelihood`` ``[C]``, ``class_index`` (``class_index``, or the
        predicted class), ``predicted_class`` (``preds.pred`` at the pixel), ``bayes_class`` (the class
        of highest posterior; it can differ from the predicted class, which comes from the head's
        logits), ``component_posterior`` ``[M]`` (responsibilities: softmax over ``m`` of that class's
        ``component_log_prob`` at the feature cell the pixel reads), ``component_log_prob`` ``[M]``,
        ``component`` (its argmax), ``row``, ``col``, ``feature_row``, ``feature_col``.
    """
    _require_gmm(preds, "pixel_posterior")
    index = _check_index(preds, index)
    class_index = _check_class(preds, class_index)
    height, width = preds.gt.shape[1:]
    for name, value, size in (("row", row, height), ("col", col, width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
            raise ValueError(f"{name} must be a pixel index in [0, {size}), got {value!r}")
    log_lik = preds.class_log_likelihood[index, :, row, col].astype(np.float64)
    posterior = softmax(log_lik)
    predicted = int(preds.pred[index, row, col])
    chosen = predicted if class_index is None else class_index
    feature_row, feature_col = _feature_cell(preds, int(row), int(col))
    comp_log_prob = preds.component_log_prob(index)[chosen, :, feature_row, feature_col]
    responsibilities = softmax(comp_log_prob)
    return dict(
        class_posterior=posterior,
        class_log_likelihood=log_lik,
        class_index=chosen,
        predicted_class=predicted,
        bayes_class=int(posterior.argmax()),
        component_posterior=responsibilities,
        component_log_prob=comp_log_prob,
        component=int(responsibilities.argmax()),
        row=int(row),
        col=int(col),
        feature_row=int(feature_row),
        feature_col=int(feature_col),
    )


# ----------------------------------------------------------------------------------- overlay
def component_colours(
    preds, index: int, class_index: int | None = None, dim_others: float = 0.55, _best: np.ndarray | None = None
) -> np.ndarray:
    """``[H, W, 4]`` uint8 RGBA overlay: each pixel in the shade of its component
    (:func:`component_assignment`, image resolution).

    With ``class_index=None`` every pixel is opaque in its predicted class's shades (``preds.pred``).
    With a class, its predicted pixels are opaque and the others are white with alpha ``dim_others``
    (washed out, so the class stands out even where its shades resemble the photo).
    """
    index = _check_index(preds, index)
    class_index = _check_class(preds, class_index)
    if not 0.0 <= dim_others <= 1.0:
        raise ValueError(f"dim_others must be in [0, 1], got {dim_others}")
    best = preds.component_log_prob(index).argmax(1) if _best is None else _best
    shades = component_palette(preds.palette, preds.num_components)  # [C, M, 3]
    pred = preds.pred[index]
    labels = pred if class_index is None else np.full(pred.shape, class_index)
    rgba = np.zeros(pred.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = shades[labels, _assign_on_image(best, labels)]
    rgba[..., 3] = 255
    if class_index is not None:
        others = pred != class_index
        rgba[others, :3] = 255
        rgba[others, 3] = round(255 * dim_others)
    return rgba


def _hover_grid(preds, index: int, stride: int, log_prob: np.ndarray) -> dict:
    """Predicted class, component and posteriors sampled every ``stride`` pixels, for a hover layer
    (``log_prob``: the image's ``component_log_prob``, ``[C, M, h, w]``)."""
    height, width = preds.gt.shape[1:]
    rows = np.arange(stride // 2, height, stride)
    cols = np.arange(stride // 2, width, stride)
    labels = preds.pred[index][np.ix_(rows, cols)]
    posterior = class_posterior(preds, index, rows, cols)  # [C, gh, gw]: softmax of the samples only
    h, w = log_prob.shape[2:]
    frows, fcols = rows * h // height, cols * w // width
    cell = log_prob[:, :, frows][:, :, :, fcols]  # [C, M, gh, gw]
    own = np.take_along_axis(cell, labels[None, None], axis=0)[0]  # [M, gh, gw] of the shown class
    responsibilities = softmax(own, axis=0)
    comp = responsibilities.argmax(0)
    customdata = np.stack(
        [
            np.broadcast_to(rows[:, None], labels.shape),
            np.broadcast_to(cols[None], labels.shape),
            comp,
            np.take_along_axis(posterior, labels[None], 0)[0],
            np.take_along_axis(responsibilities, comp[None], 0)[0],
        ],
        axis=-1,
    )
    return dict(rows=rows, cols=cols, labels=labels, component=comp, customdata=customdata)


def component_overlay_figure(
    preds,
    index: int = 0,
    class_index: int | None = None,
    opacity: float = 0.6,
    image_indices: Sequence[int] | None = None,
    pixel: tuple[int, int] | None = None,
    hover_stride: int | None = None,
    opacity_levels: Sequence[float] = OPACITY_LEVELS,
    panel_px: int = 520,
    menus: bool = True,
) -> go.Figure:
    """The image with each pixel's mixture component drawn in shades of its class colour.

    Args:
        preds: :class:`~gmmseg_lab.experiments.predictions.Predictions` of a GMM head.
        index: the image shown first.
        class_index: ``None`` colours every pixel by its predicted class's components (``preds.pred``);
            an int colours only the pixels predicted as that class and washes the others out (white
            at alpha 0.55 in the overlay, times ``opacity``: the photo shows through, paler).
        opacity: overlay opacity in ``[0, 1]``.
        image_indices: images the image dropdown offers (default: all; must contain ``index``).
        pixel: ``(row, col)`` to mark with a cross (the pixel :func:`pixel_posterior` looks at).
        hover_stride: pixels between hover samples (default: the feature stride ``H // h``, one
            sample per embedding cell).
        panel_px: height of the image panel in pixels.
        menus: add the static-HTML menus above the plot (off in :func:`component_widget`, whose
            controls replace them). Without menus only the overlay on show is encoded, not one per
            class choice: what keeps a live redraw fast.

    Static HTML controls: an image dropdown, a class dropdown ("all classes" or one class) and
    opacity buttons; they change independent trace properties, so any combination works. The
    right panel is the colour key (class × component, dark = component 0). Hover gives the pixel's
    predicted class (``preds.pred``) with its Bayes posterior ``p(c|x)``, and its most likely
    component of that class with its responsibility.
    """
    _require_gmm(preds, "component_overlay_figure")
    index = _check_index(preds, index)
    class_index = _check_class(preds, class_index)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    image_indices = (
        list(range(len(preds.names)))
        if image_indices is None
        else [_check_index(preds, i, "image_indices") for i in image_indices]
    )
    if index not in image_indices:
        raise ValueError(f"index {index} is not among image_indices {image_indices}")
    height, width = preds.gt.shape[1:]
    stride = max(height // preds.embeddings.shape[2], 1) if hover_stride is None else int(hover_stride)
    if stride < 1:
        raise ValueError(f"hover_stride must be >= 1, got {hover_stride}")
    classes, num_c, num_m = list(preds.classes), len(preds.classes), preds.num_components
    shades = component_palette(preds.palette, num_m)

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.78, 0.22],
        horizontal_spacing=0.1,
        subplot_titles=["image with component shades", "colour key (class × component)"],
    )
    n_img = len(image_indices)
    log_probs = {i: preds.component_log_prob(i) for i in image_indices}  # [C, M, h, w] each
    shown_class = -1 if class_index is None else class_index
    # The class menu needs every class's overlay; without menus only the one on show is encoded.
    choices = range(-1, num_c) if menus else [shown_class]
    overlays = {
        i: {
            k: png_data_uri(component_colours(preds, i, None if k < 0 else k, _best=log_probs[i].argmax(1)))
            for k in choices
        }
        for i in image_indices
    }
    for i in image_indices:  # traces [0, n_img): photos
        fig.add_trace(
            go.Image(source=png_data_uri(preds.images[i]), visible=i == index, hoverinfo="skip", name=preds.names[i]),
            row=1,
            col=1,
        )
    for i in image_indices:  # [n_img, 2 n_img): overlays (RGBA: others washed out with a class chosen)
        fig.add_trace(
            go.Image(
                source=overlays[i][shown_class],
                opacity=opacity,
                visible=i == index,
                hoverinfo="skip",
                name=f"components {preds.names[i]}",
            ),
            row=1,
            col=1,
        )
    names = np.asarray(classes, dtype=object)
    for i in image_indices:  # [2 n_img, 3 n_img): invisible hover layers, one cell per sample
        grid = _hover_grid(preds, i, stride, log_probs[i])
        fig.add_trace(
            go.Heatmap(
                z=grid["component"].astype(np.float32),
                x0=grid["cols"][0],
                dx=stride,
                y0=grid["rows"][0],
                dy=stride,
                text=names[grid["labels"]],
                customdata=grid["customdata"],
                opacity=0.0,
                showscale=False,
                hoverongaps=False,
                visible=i == index,
                name=preds.names[i],
                colorscale="Greys",
                hovertemplate=(
                    "pixel (row %{customdata[0]:.0f}, col %{customdata[1]:.0f})<br>"
                    "predicted class <b>%{text}</b>, Bayes p(class | x) = %{customdata[3]:.3f}<br>"
                    "most likely component <b>%{customdata[2]:.0f}</b>, responsibility "
                    "%{customdata[4]:.3f}<extra></extra>"
                ),
            ),
            row=1,
            col=1,
        )
    if pixel is not None:
        r, c = pixel
        if not (0 <= r < height and 0 <= c < width):
            raise ValueError(f"pixel must be (row, col) inside the {height}x{width} image, got {pixel}")
        # a white cross with a black core reads on light and dark pixels alike
        for colour, width in (("white", 5), ("black", 2)):
            fig.add_scatter(
                x=[c],
                y=[r],
                mode="markers",
                name=f"pixel ({r}, {c})",
                showlegend=False,
                marker=dict(symbol="x-thin-open", size=22, color=colour, line=dict(width=width, color=colour)),
                hovertemplate=f"selected pixel (row {r}, col {c})<extra></extra>",
                row=1,
                col=1,
            )
    key_c, key_m = np.meshgrid(np.arange(num_c), np.arange(num_m), indexing="ij")
    fig.add_scatter(
        x=key_m.ravel(),
        y=names[key_c.ravel()],
        mode="markers",
        showlegend=False,
        marker=dict(
            symbol="square",
            size=20,
            color=[hex_colour(shades[c, m]) for c, m in zip(key_c.ravel(), key_m.ravel())],
            line=dict(color="#444", width=0.6),
        ),
        customdata=np.exp(preds.log_weights).ravel(),
        hovertemplate="class %{y}, component %{x}<br>mixture weight %{customdata:.3f}<extra></extra>",
        row=1,
        col=2,
    )
    image_axes(fig, 1)
    fig.update_xaxes(
        title_text="component (dark → light)",
        tickmode="array",
        tickvals=list(range(num_m)),
        range=[-0.6, num_m - 0.4],
        showgrid=False,
        zeroline=False,
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text=None, autorange="reversed", showgrid=False, row=1, col=2)

    height_px, top, bottom = panel_px + 200, (150 if menus else 80), 50
    fig.update_layout(
        title=dict(
            text="Most likely Gaussian component of each pixel (shades of its predicted class's colour)",
            x=0.01,
            y=0.98,
            yanchor="top",
        ),
        font=FONT,
        template="plotly_white",
        height=height_px,
        margin=dict(l=70, r=70, t=top, b=bottom),
        hovermode="closest",
        plot_bgcolor="white",
    )
    if not menus:
        return fig
    overlay_ids = list(range(n_img, 2 * n_img))
    image_ids = list(range(3 * n_img))
    image_buttons = [
        dict(
            label=f"image: {preds.names[i]} (#{i})",
            method="restyle",
            args=[{"visible": [j == i for _ in range(3) for j in image_indices]}, image_ids],
        )
        for i in image_indices
    ]
    class_buttons = [
        dict(
            label="class: all classes" if k < 0 else f"class: {classes[k]}",
            method="restyle",
            args=[{"source": [overlays[i][k] for i in image_indices]}, overlay_ids],
        )
        for k in range(-1, num_c)
    ]
    opacity_buttons = [
        dict(label=f"opacity {round(level * 100)}%", method="restyle", args=[{"opacity": level}, overlay_ids])
        for level in opacity_levels
    ]
    active_opacity = (
        int(np.argmin([abs(level - opacity) for level in opacity_levels]))
        if any(abs(level - opacity) < 1e-9 for level in opacity_levels)
        else -1
    )
    add_menus(
        fig,
        [
            (image_buttons, image_indices.index(index)),
            (class_buttons, shown_class + 1),
            (opacity_buttons, active_opacity, "buttons"),
        ][0 if n_img > 1 else 1 :],
        height_px,
        top,
        bottom,
        spacing=0.26,
    )
    return fig


def pixel_posterior_figure(
    posterior: dict, classes: Sequence[str], palette, image_name: str | None = None
) -> go.Figure:
    """Two bar charts of :func:`pixel_posterior`'s output: ``p(class | x)`` and ``p(component | x, class)``.

    Args:
        posterior: :func:`pixel_posterior`'s dict (``class_posterior`` ``[C]``, ``component_posterior``
            ``[M]``, ``class_index``, ``row``, ``col``; the log-densities for the hover if present).
        classes: ``C`` class names; ``palette``: ``[C, 3]`` uint8 class colours.
        image_name: named in the title.
    """
    for key in ("class_posterior", "component_posterior", "class_index", "row", "col"):
        if key not in posterior:
            raise ValueError(f"posterior lacks {key!r}; pass the dict pixel_posterior returns")
    class_post = np.asarray(posterior["class_posterior"], dtype=np.float64)
    comp_post = np.asarray(posterior["component_posterior"], dtype=np.float64)
    if len(class_post) != len(classes):
        raise ValueError(f"classes has {len(classes)} names but the posterior has {len(class_post)} classes")
    chosen = int(posterior["class_index"])
    num_m = len(comp_post)
    shades = component_palette(palette, num_m)[chosen]
    where = f"pixel (row {posterior['row']}, col {posterior['col']})" + (f" of {image_name}" if image_name else "")
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        horizontal_spacing=0.1,
        subplot_titles=["p(class | x): Bayes, uniform prior", f"p(component | x, class = {classes[chosen]})"],
    )
    fig.add_bar(
        x=list(classes),
        y=class_post,
        marker_color=class_colours(palette),
        showlegend=False,
        marker_line=dict(color=["black" if c == chosen else "rgba(0,0,0,0)" for c in range(len(classes))], width=2.5),
        customdata=np.asarray(posterior.get("class_log_likelihood", np.full(len(classes), np.nan))),
        hovertemplate="%{x}: p = %{y:.4f}<br>log p(x|c) = %{customdata:.2f}<extra></extra>",
        row=1,
        col=1,
    )
    fig.add_bar(
        x=[f"component {m}" for m in range(num_m)],
        y=comp_post,
        showlegend=False,
        marker_color=[hex_colour(s) for s in shades],
        marker_line=dict(color="#444", width=1),
        customdata=np.asarray(posterior.get("component_log_prob", np.full(num_m, np.nan))),
        hovertemplate="%{x}: responsibility %{y:.4f}<br>log w + log N = %{customdata:.2f}<extra></extra>",
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text="posterior probability", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="responsibility", range=[0, 1.05], row=1, col=2)
    examined = "the predicted class" if posterior.get("predicted_class") == chosen else "the class examined"
    fig.update_xaxes(title_text=f"class (outlined: {examined})", tickangle=-30, row=1, col=1)
    fig.update_xaxes(title_text=f"component of {classes[chosen]} (dark → light)", row=1, col=2)
    fig.update_layout(
        title=dict(text=f"Posteriors at {where}", x=0.01),
        font=FONT,
        template="plotly_white",
        height=430,
        margin=dict(l=70, r=30, t=90, b=110),
    )
    return fig


# ----------------------------------------------------------------------------------- usage
def _luminance(rgb) -> float:
    r, g, b = np.asarray(rgb, dtype=np.float64) / 255.0
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def component_usage(preds, image_indices: Sequence[int] | None = None, by: str | None = None) -> np.ndarray:
    """``[C, M]`` int64: labelled pixels whose most likely component of their ground-truth class is ``m``.

    Counted on the embedding grid (``gt_small``, ignore = 255 and out-of-range labels skipped); a
    pixel of class ``c`` goes to ``argmax_m component_log_prob[c, m]``. That is the hard maximum a
    posteriori component, not the training E-step's assignment: the head's default Sinkhorn E-step
    balances the components over each batch and can give a pixel a less likely component, so this
    usage is typically less even than training achieved.

    ``by="pred"`` counts by the predicted class instead (``preds.pred`` at the pixel each grid cell
    was resized from): the usage on images without labels. ``by=None``: ``"gt"`` for labelled
    predictions, ``"pred"`` for unlabeled ones (``preds.labeled`` False).
    """
    _require_gmm(preds, "component_usage")
    if by is None:
        by = "gt" if getattr(preds, "labeled", True) else "pred"
    if by not in ("gt", "pred"):
        raise ValueError(f"by must be 'gt' or 'pred', got {by!r}")
    if by == "gt" and not getattr(preds, "labeled", True):
        raise ValueError(
            "component_usage(by='gt') needs labels and these predictions have none; "
            "use by='pred' (usage by predicted class)"
        )
    if by == "gt" and preds.gt_small is None:
        raise ValueError("component_usage needs preds.gt_small (the labels on the embedding grid)")
    image_indices = (
        range(len(preds.names))
        if image_indices is None
        else [_check_index(preds, i, "image_indices") for i in image_indices]
    )
    num_c, num_m = len(preds.classes), preds.num_components
    height, width = preds.gt.shape[1:]
    h, w = preds.embeddings.shape[2:]
    src_rows, src_cols = np.arange(h) * height // h, np.arange(w) * width // w  # the pixel each cell was resized from
    counts = np.zeros(num_c * num_m, dtype=np.int64)
    for i in image_indices:
        best = preds.component_log_prob(i).argmax(1)  # [C, h, w]
        labels = preds.gt_small[i] if by == "gt" else preds.pred[i][src_rows[:, None], src_cols[None, :]]
        rows, cols = np.nonzero((labels >= 0) & (labels < num_c))
        own = labels[rows, cols]
        counts += np.bincount(own * num_m + best[own, rows, cols], minlength=num_c * num_m)
    return counts.reshape(num_c, num_m)


def component_balance(usage: np.ndarray) -> np.ndarray:
    """``[C]`` normalised entropy of each class's component usage, ``H(p) / log M`` in ``[0, 1]``.

    1 = components used evenly, 0 = one component takes every pixel; NaN for a class without pixels;
    1 when ``M == 1``. The head's ``gmm_balance`` log uses the same formula and conventions but on the
    training E-step's assignment (Sinkhorn by default) of training batches, averaged over classes;
    applied to :func:`component_usage` (argmax assignment, evaluation images) the numbers are not
    the same quantity.
    """
    usage = np.asarray(usage, dtype=np.float64)
    if usage.ndim != 2:
        raise ValueError(f"usage must be [C, M], got shape {usage.shape}")
    totals = usage.sum(1)
    out = np.full(len(usage), np.nan)
    if usage.shape[1] == 1:
        out[totals > 0] = 1.0
        return out
    present = totals > 0
    p = usage[present] / totals[present, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    out[present] = entropy / np.log(usage.shape[1]) + 0.0  # + 0.0: no "-0.00" for a single used component
    return out


def component_usage_figure(
    usage: np.ndarray,
    classes: Sequence[str],
    palette,
    title: str = "How each class uses its mixture components (labelled pixels, most likely component)",
    labeled: bool = True,
) -> go.Figure:
    """Stacked horizontal bars: each class's share of pixels per component, in the component shades,
    with the normalised entropy (:func:`component_balance`) written after each bar.

    Args:
        usage: ``[C, M]`` pixel counts (:func:`component_usage`).
        classes: ``C`` class names; ``palette``: ``[C, 3]`` uint8 class colours.
        labeled: False for usage by predicted class on images without labels (``by="pred"``): the
            default title and axis then say so.
    """
    if not labeled and title.startswith("How each class uses its mixture components (labelled pixels"):
        title = "How each predicted class uses its mixture components (no labels: pixels by predicted class)"
    usage = np.asarray(usage)
    if usage.ndim != 2 or usage.shape[0] != len(classes):
        raise ValueError(f"usage must be [C, M] with C = len(classes) = {len(classes)}, got shape {usage.shape}")
    num_c, num_m = usage.shape
    shades = component_palette(palette, num_m)
    totals = usage.sum(1)
    share = np.divide(usage, totals[:, None], out=np.zeros(usage.shape, dtype=np.float64), where=totals[:, None] > 0)
    balance = component_balance(usage)
    fig = go.Figure()
    for m in range(num_m):
        fig.add_bar(
            y=list(classes),
            x=share[:, m],
            orientation="h",
            name=f"component {m}",
            showlegend=False,
            marker=dict(color=[hex_colour(shades[c, m]) for c in range(num_c)], line=dict(color="white", width=1)),
            text=[str(m) if s >= 0.04 else "" for s in share[:, m]],
            textposition="inside",
            insidetextanchor="middle",
            textfont=dict(color=["black" if _luminance(shades[c, m]) > 0.5 else "white" for c in range(num_c)]),
            customdata=np.stack([usage[:, m], totals], -1),
            hovertemplate=f"%{{y}}, component {m}: %{{customdata[0]:.0f}} of %{{customdata[1]:.0f}} pixels "
            "(%{x:.1%})<extra></extra>",
        )
    fig.add_scatter(
        y=list(classes),
        x=np.full(num_c, 1.02),
        mode="text",
        showlegend=False,
        hoverinfo="skip",
        text=["no pixels" if not np.isfinite(b) else f"{b:.2f}  ({n:,} px)" for b, n in zip(balance, totals)],
        textposition="middle right",
        textfont=dict(size=FONT["size"]),
    )
    fig.add_annotation(
        text="<b>balance</b>", x=1.02, y=1.0, xref="x", yref="paper", xanchor="left", yanchor="bottom", showarrow=False
    )
    fig.update_layout(
        title=dict(text=title, x=0.01),
        font=FONT,
        template="plotly_white",
        barmode="stack",
        xaxis=dict(
            title=f"share of the class's {'labelled' if labeled else 'predicted'} pixels (segments: "
            "component 0 dark → light)",
            range=[0, 1.3],
            tickformat=".0%",
            tickvals=[0, 0.25, 0.5, 0.75, 1.0],
        ),
        yaxis=dict(title=dict(text="class", standoff=12), autorange="reversed"),
        height=max(300, 34 * num_c + 160),
        margin=dict(l=130, r=30, t=90, b=70),
        uniformtext=dict(minsize=9, mode="hide"),
    )
    return fig


# ----------------------------------------------------------------------------------- widget
def component_widget(preds, panel_px: int = 460):
    """Live view: image, class, opacity and a pixel (row / column sliders) redraw the overlay
    (:func:`component_overlay_figure`, ``.figure``) and that pixel's posteriors
    (:func:`pixel_posterior_figure`, ``.posterior_figure``).

    ``.controls``: ``"image"``, ``"class"`` (-1 = all classes), ``"opacity"``, ``"row"``, ``"col"``.
    """
    import ipywidgets as widgets

    _require_gmm(preds, "component_widget")
    height, width = preds.gt.shape[1:]
    controls = {
        "image": widgets.IntSlider(
            value=0, min=0, max=len(preds.names) - 1, description="image", continuous_update=False
        ),
        "class": widgets.Dropdown(
            options=[("all classes", -1)] + [(n, c) for c, n in enumerate(preds.classes)], value=-1, description="class"
        ),
        "opacity": widgets.FloatSlider(
            value=0.6, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        ),
        "row": widgets.IntSlider(
            value=height // 2, min=0, max=height - 1, description="pixel row", continuous_update=False
        ),
        "col": widgets.IntSlider(
            value=width // 2, min=0, max=width - 1, description="pixel col", continuous_update=False
        ),
    }

    def chosen_class() -> int | None:
        return None if controls["class"].value < 0 else controls["class"].value

    def overlay() -> go.Figure:
        i = controls["image"].value
        return component_overlay_figure(
            preds,
            i,
            chosen_class(),
            controls["opacity"].value,
            image_indices=[i],
            pixel=(controls["row"].value, controls["col"].value),
            panel_px=panel_px,
            menus=False,
        )

    def posterior() -> go.Figure:
        i = controls["image"].value
        post = pixel_posterior(preds, i, controls["row"].value, controls["col"].value, chosen_class())
        return pixel_posterior_figure(post, preds.classes, preds.palette, image_name=preds.names[i])

    return figure_box(controls, overlay, extra_outputs=[("posterior_figure", posterior)])
