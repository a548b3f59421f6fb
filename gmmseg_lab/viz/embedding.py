"""Notebook 03, "the embedding space": where pixels and mixture means lie, seen through t-SNE.

- :func:`sample_pixels`: a class-stratified sample of pixel embeddings with what is known about each;
- :func:`tsne_embedding`: one t-SNE run over the sample and the ``C * M`` component means together
  (t-SNE has no ``transform``: points not in the run cannot be placed afterwards);
- :func:`tsne_figure` / :func:`tsne_widget`: the map, coloured by class, component or anomaly score.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from scipy.special import logsumexp

from ._widgets import figure_box
from .style import FONT, SCORE_COLORSCALE, class_colours, component_palette, hex_colour
from .training import add_menus

#: What :func:`tsne_figure` can colour the points by.
COLOUR_BY = ("class", "component", "anomaly")


def sample_pixels(preds, n_per_class: int = 60, seed: int = 0, image_indices: Sequence[int] | None = None):
    """Up to ``n_per_class`` embedding pixels of each ground-truth class, drawn without replacement.

    Pixels are cells of the embedding grid (``[N, D, h, w]``) whose ``gt_small`` label is a class
    (ignore = 255 skipped); a class with fewer pixels gives all of them.

    Returns:
        ``(x, info)``: ``x`` ``[n, D]`` float32 embeddings and ``info``, a dict of ``[n]`` arrays:
        ``label`` (ground-truth class), ``component`` (the most likely component of that class,
        ``argmax_m component_log_prob``; not the training E-step's assignment, which with the
        default Sinkhorn E-step is balanced over a batch and can pick a less likely component),
        ``bayes_class`` (the cell's Bayes class with a uniform prior, ``argmax_c log p(x|c)`` on the
        embedding grid; not ``preds.pred``, the head's prediction at image resolution),
        ``anomaly_score`` (``preds.anomaly_score`` at the image pixel the cell was resized from,
        ``[r * H // h, c * W // w]`` as for ``gt_small``), ``image``, ``row``, ``col`` (cell on the
        embedding grid) and ``name`` (image file name).
    """
    if not preds.is_gmm or preds.embeddings is None or preds.gt_small is None:
        raise ValueError(f"sample_pixels needs a GMM head's embeddings and gt_small; preds.head is {preds.head!r}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    n_images = len(preds.names)
    image_indices = list(range(n_images)) if image_indices is None else list(image_indices)
    if not image_indices or any(not 0 <= i < n_images for i in image_indices):
        raise ValueError(f"image_indices must be non-empty indices in [0, {n_images}), got {image_indices}")
    num_c = len(preds.classes)
    labels = preds.gt_small[image_indices]  # [n_img, h, w]
    img, row, col = np.nonzero((labels >= 0) & (labels < num_c))
    label = labels[img, row, col]
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_c):
        members = np.flatnonzero(label == c)
        if len(members):
            chosen.append(np.sort(rng.choice(members, size=min(n_per_class, len(members)), replace=False)))
    if not chosen:
        raise ValueError("preds.gt_small has no labelled pixel to sample")
    chosen = np.concatenate(chosen)
    img = np.asarray(image_indices)[img[chosen]]
    row, col, label = row[chosen], col[chosen], label[chosen]
    x = preds.embeddings[img, :, row, col].astype(np.float32)  # [n, D]

    # component (of the labelled class) and Bayes class from the mixture itself, per sampled cell
    component, bayes_class = np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=np.int64)
    for i in np.unique(img):
        at = np.flatnonzero(img == i)
        log_prob = preds.component_log_prob(int(i))[:, :, row[at], col[at]]  # [C, M, k]
        component[at] = log_prob[label[at], :, np.arange(len(at))].argmax(-1)
        bayes_class[at] = logsumexp(log_prob, axis=1).argmax(0)
    height, width = preds.gt.shape[1:]
    h, w = preds.embeddings.shape[2:]
    score = preds.anomaly_score[img, row * height // h, col * width // w]
    info = dict(label=label.astype(np.int64), component=component.astype(np.int64), bayes_class=bayes_class,
                anomaly_score=score.astype(np.float64), image=img.astype(np.int64), row=row.astype(np.int64),
                col=col.astype(np.int64), name=np.asarray([preds.names[i] for i in img], dtype=object))
    return x, info


def tsne_embedding(x: np.ndarray, means: np.ndarray, seed: int = 0, perplexity: float = 30.0):
    """2-D t-SNE of pixel embeddings and mixture means, fitted in one run.

    Args:
        x: ``[n, D]`` pixel embeddings (e.g. from :func:`sample_pixels`).
        means: ``[C, M, D]`` component means (or ``[K, D]``).
        seed: t-SNE's random state (PCA initialisation, so runs are close across seeds too).
        perplexity: t-SNE perplexity; must be below the number of points ``n + C * M``.

    Returns:
        ``(coords, mean_coords)``: ``[n, 2]`` and ``means.shape[:-1] + (2,)``.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be [n, D], got shape {x.shape}")
    if means.ndim not in (2, 3) or means.shape[-1] != x.shape[1]:
        raise ValueError(f"means must be [C, M, D] or [K, D] with D = {x.shape[1]}, got shape {means.shape}")
    flat = means.reshape(-1, means.shape[-1])
    points = np.concatenate([x, flat])
    if not 0 < perplexity < len(points):
        raise ValueError(f"perplexity must be in (0, {len(points)}) for {len(points)} points, got {perplexity}")
    tsne = TSNE(n_components=2, perplexity=float(perplexity), init="pca", random_state=seed, learning_rate="auto")
    coords = tsne.fit_transform(points)
    return coords[:len(x)], coords[len(x):].reshape(means.shape[:-1] + (2,))


def _hover_data(info: Mapping, classes: Sequence[str]) -> tuple[np.ndarray, str]:
    names = np.asarray(classes, dtype=object)
    customdata = np.stack([info["name"], info["row"], info["col"], names[info["label"]], info["component"],
                           info["anomaly_score"], names[info["bayes_class"]]], axis=-1)
    template = ("<b>%{customdata[3]}</b> (ground truth; Bayes class argmax p(x|c): %{customdata[6]})"
                "<br>most likely component %{customdata[4]}"
                "<br>%{customdata[0]}, cell (row %{customdata[1]}, col %{customdata[2]})"
                "<br>anomaly score %{customdata[5]:.3g}<extra></extra>")
    return customdata, template


def tsne_figure(coords: np.ndarray, info: Mapping, mean_coords: np.ndarray, classes: Sequence[str], palette,
                colour_by: str = "class", label_means: bool = True, marker_size: int = 7,
                title: str = "t-SNE of pixel embeddings and mixture means") -> go.Figure:
    """Scatter of :func:`tsne_embedding`'s coordinates with a menu to recolour the points.

    Args:
        coords: ``[n, 2]`` pixel coordinates; ``info``: :func:`sample_pixels`'s dict.
        mean_coords: ``[C, M, 2]`` coordinates of the component means (drawn as large outlined
            diamonds in their component shade, labelled "class m").
        classes, palette: class names and ``[C, 3]`` uint8 colours.
        colour_by: the colouring shown first: ``"class"`` (ground truth), ``"component"`` (shades
            of the class colour, dark = component 0) or ``"anomaly"`` (anomaly score, colour bar).

    Each colouring is its own group of traces; the menu (static HTML) switches their visibility.
    Hover gives image name, embedding-grid cell, ground-truth class, the cell's Bayes class, the
    most likely component and the anomaly score.
    """
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {COLOUR_BY}, got {colour_by!r}")
    coords = np.asarray(coords, dtype=np.float64)
    mean_coords = np.asarray(mean_coords, dtype=np.float64)
    n = len(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be [n, 2], got shape {coords.shape}")
    for key in ("label", "component", "anomaly_score", "name", "row", "col", "bayes_class"):
        if key not in info or len(info[key]) != n:
            raise ValueError(f"info[{key!r}] must have one entry per point ({n}); pass sample_pixels' info")
    num_c = len(classes)
    if mean_coords.ndim != 3 or mean_coords.shape[0] != num_c or mean_coords.shape[2] != 2:
        raise ValueError(f"mean_coords must be [C, M, 2] with C = {num_c}, got shape {mean_coords.shape}")
    num_m = mean_coords.shape[1]
    colours = class_colours(palette)
    shades = component_palette(palette, num_m)
    label, component = np.asarray(info["label"]), np.asarray(info["component"])
    customdata, template = _hover_data(info, classes)

    fig = go.Figure()
    groups: dict[str, list[int]] = {k: [] for k in COLOUR_BY}
    for c in range(num_c):  # by class: one trace per class, so the legend names the classes
        members = label == c
        if not members.any():
            continue
        groups["class"].append(len(fig.data))
        fig.add_scatter(x=coords[members, 0], y=coords[members, 1], mode="markers", name=classes[c],
                          legendgroup="class", legendgrouptitle_text="ground-truth class",
                          marker=dict(size=marker_size, color=colours[c], line=dict(width=0.4, color="white")),
                          customdata=customdata[members], hovertemplate=template)
    for c in range(num_c):  # by component: shades of each class colour, one legend entry per class
        members = label == c
        if not members.any():
            continue
        groups["component"].append(len(fig.data))
        fig.add_scatter(x=coords[members, 0], y=coords[members, 1], mode="markers",
                          name=classes[c], legendgroup="component",
                          legendgrouptitle_text="class; shade = component (dark 0 → light)",
                          marker=dict(size=marker_size, color=[hex_colour(shades[c, m]) for m in component[members]],
                                      line=dict(width=0.4, color="#333")),
                          customdata=customdata[members], hovertemplate=template)
    groups["anomaly"].append(len(fig.data))
    fig.add_scatter(x=coords[:, 0], y=coords[:, 1], mode="markers", name="anomaly score", showlegend=False,
                      marker=dict(size=marker_size, color=np.asarray(info["anomaly_score"], dtype=np.float64),
                                  colorscale=SCORE_COLORSCALE, showscale=True, line=dict(width=0),
                                  colorbar=dict(title=dict(text="anomaly<br>score", side="top"), x=1.02, len=0.75)),
                      customdata=customdata, hovertemplate=template)
    mean_c, mean_m = np.meshgrid(np.arange(num_c), np.arange(num_m), indexing="ij")
    fig.add_scatter(
        x=mean_coords[..., 0].ravel(), y=mean_coords[..., 1].ravel(), name="component means (class m)",
        mode="markers+text" if label_means else "markers", legendgroup="means", legendgrouptitle_text="mixture",
        text=[f"{classes[c]} {m}" for c, m in zip(mean_c.ravel(), mean_m.ravel())], textposition="top center",
        textfont=dict(size=FONT["size"] - 3, color="#222"),
        marker=dict(symbol="diamond", size=15, color=[hex_colour(shades[c, m]) for c, m in
                                                       zip(mean_c.ravel(), mean_m.ravel())],
                    line=dict(width=2, color="black")),
        hovertemplate="mean of <b>%{text}</b><extra></extra>")
    n_traces = len(fig.data)

    def visible(kind: str) -> list[bool]:
        return [t in groups[kind] or t == n_traces - 1 for t in range(n_traces)]

    for t, trace in enumerate(fig.data):
        trace.visible = visible(colour_by)[t]
    titles = {"class": "colour: ground-truth class", "component": "colour: component (shade of the class colour)",
              "anomaly": "colour: anomaly score"}
    height, top, bottom = 700, 130, 60
    fig.update_layout(
        title=dict(text=f"{title}<br><sup>{len(coords)} pixels, {num_c * num_m} means, one t-SNE run</sup>",
                   x=0.01, y=0.98, yanchor="top"),
        font=FONT, template="plotly_white", height=height, margin=dict(l=70, r=30, t=top, b=bottom),
        xaxis=dict(title="t-SNE 1", zeroline=False), yaxis=dict(title="t-SNE 2", zeroline=False),
        legend=dict(x=1.12, y=1.0, groupclick="toggleitem"), hovermode="closest")
    buttons = [dict(label=titles[k], method="restyle", args=[{"visible": visible(k)}]) for k in COLOUR_BY]
    add_menus(fig, [(buttons, COLOUR_BY.index(colour_by))], height, top, bottom, px_above_plot=30)
    return fig


def tsne_widget(preds, n_per_class: int = 60, seed: int = 0, perplexity: int = 30):
    """Live t-SNE view: ``.controls["colour_by"]`` redraws, ``.controls["perplexity"]`` re-runs t-SNE
    (results are cached per perplexity); the pixel sample is drawn once (:func:`sample_pixels`)."""
    import ipywidgets as widgets

    x, info = sample_pixels(preds, n_per_class, seed)
    n_points = len(x) + int(np.prod(preds.means.shape[:-1]))
    upper = max(2, min(100, n_points - 1))
    controls = {
        "colour_by": widgets.Dropdown(options=[("class", "class"), ("component", "component"),
                                               ("anomaly score", "anomaly")], value="class", description="colour by"),
        "perplexity": widgets.IntSlider(value=min(perplexity, upper), min=2, max=upper, step=1,
                                        description="perplexity", continuous_update=False),
    }
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def render() -> go.Figure:
        p = controls["perplexity"].value
        if p not in cache:
            cache[p] = tsne_embedding(x, preds.means, seed, p)
        coords, mean_coords = cache[p]
        return tsne_figure(coords, info, mean_coords, preds.classes, preds.palette, controls["colour_by"].value,
                           title=f"t-SNE of pixel embeddings and mixture means (perplexity {p})")

    box = figure_box(controls, render)
    box.samples = (x, info)
    return box
