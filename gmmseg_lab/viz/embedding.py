"""Notebook 03, "the embedding space": where pixels and mixture means lie, seen through t-SNE.

- :func:`sample_pixels`: a class-stratified sample of pixel embeddings with what is known about each;
- :func:`tsne_embedding`: one t-SNE run over the sample and the ``C * M`` component means together
  (t-SNE has no ``transform``: points not in the run cannot be placed afterwards);
- :func:`tsne_figure` / :func:`tsne_widget`: the map, coloured by class, component or anomaly score;
- :func:`tsne_placed_figure`: new images' pixels placed on a map fitted on labelled pixels (openTSNE's
  ``transform``, :func:`gmmseg_lab.experiments.explore.place_on_map`).

Unlabeled predictions (``preds.labeled`` False, photographs without masks) are sampled and coloured
by the *predicted* class instead of the ground truth; a softmax head's fused features are mapped
like embeddings, without means or components.
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
    (ignore = 255 skipped); a class with fewer pixels gives all of them. For unlabeled predictions
    (``preds.labeled`` False) the classes are the *predicted* ones, ``preds.pred`` at the image pixel
    each cell was resized from, and ``info["label_kind"]`` is ``"predicted"``. For a softmax head's
    predictions the points are its fused ``features`` (``[N, Ch, h, w]``); there are no components
    (``component`` -1) and ``bayes_class`` is the predicted class.

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
    labeled = getattr(preds, "labeled", True)
    grid = preds.embeddings if preds.is_gmm else getattr(preds, "features", None)
    if grid is None or (labeled and (not preds.is_gmm or preds.gt_small is None)):
        raise ValueError(
            f"sample_pixels needs a GMM head's embeddings and gt_small (or unlabeled predictions with "
            f"embeddings or features); preds.head is {preds.head!r}"
        )
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    n_images = len(preds.names)
    image_indices = list(range(n_images)) if image_indices is None else list(image_indices)
    if not image_indices or any(not 0 <= i < n_images for i in image_indices):
        raise ValueError(f"image_indices must be non-empty indices in [0, {n_images}), got {image_indices}")
    num_c = len(preds.classes)
    height, width = preds.gt.shape[1:]
    h, w = grid.shape[2:]
    if labeled:
        labels = preds.gt_small[image_indices]  # [n_img, h, w]
    else:  # the predicted class at the pixel each cell was resized from (nearest, as gt_small)
        rows, cols = np.arange(h) * height // h, np.arange(w) * width // w
        labels = preds.pred[image_indices][:, rows[:, None], cols[None, :]]
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
    x = grid[img, :, row, col].astype(np.float32)  # [n, D]

    # component (of the labelled class) and Bayes class from the mixture itself, per sampled cell
    component, bayes_class = np.full(len(x), -1, dtype=np.int64), label.astype(np.int64).copy()
    if preds.is_gmm:
        for i in np.unique(img):
            at = np.flatnonzero(img == i)
            log_prob = preds.component_log_prob(int(i))[:, :, row[at], col[at]]  # [C, M, k]
            component[at] = log_prob[label[at], :, np.arange(len(at))].argmax(-1)
            bayes_class[at] = logsumexp(log_prob, axis=1).argmax(0)
    score = preds.anomaly_score[img, row * height // h, col * width // w]
    info = dict(
        label=label.astype(np.int64),
        component=component.astype(np.int64),
        bayes_class=bayes_class,
        anomaly_score=score.astype(np.float64),
        image=img.astype(np.int64),
        row=row.astype(np.int64),
        col=col.astype(np.int64),
        name=np.asarray([preds.names[i] for i in img], dtype=object),
    )
    if not labeled:
        info["label_kind"] = "predicted"
    return x, info


def tsne_embedding(x: np.ndarray, means: np.ndarray | None, seed: int = 0, perplexity: float = 30.0):
    """2-D t-SNE of pixel embeddings and mixture means, fitted in one run.

    Args:
        x: ``[n, D]`` pixel embeddings (e.g. from :func:`sample_pixels`).
        means: ``[C, M, D]`` component means (or ``[K, D]``); None for features without a mixture
            (a softmax head's): then ``mean_coords`` is None.
        seed: t-SNE's random state (PCA initialisation, so runs are close across seeds too).
        perplexity: t-SNE perplexity; must be below the number of points ``n + C * M``.

    Returns:
        ``(coords, mean_coords)``: ``[n, 2]`` and ``means.shape[:-1] + (2,)``.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be [n, D], got shape {x.shape}")
    if means is None:
        means = np.zeros((0, x.shape[1]))
    means = np.asarray(means, dtype=np.float64)
    if means.ndim not in (2, 3) or means.shape[-1] != x.shape[1]:
        raise ValueError(f"means must be [C, M, D] or [K, D] with D = {x.shape[1]}, got shape {means.shape}")
    flat = means.reshape(-1, means.shape[-1])
    points = np.concatenate([x, flat])
    if not 0 < perplexity < len(points):
        raise ValueError(f"perplexity must be in (0, {len(points)}) for {len(points)} points, got {perplexity}")
    tsne = TSNE(n_components=2, perplexity=float(perplexity), init="pca", random_state=seed, learning_rate="auto")
    coords = tsne.fit_transform(points)
    if means.size == 0:
        return coords[: len(x)], None
    return coords[: len(x)], coords[len(x) :].reshape(means.shape[:-1] + (2,))


def _hover_data(info: Mapping, classes: Sequence[str], mixture: bool = True) -> tuple[np.ndarray, str]:
    names = np.asarray(classes, dtype=object)
    customdata = np.stack(
        [
            info["name"],
            info["row"],
            info["col"],
            names[info["label"]],
            info["component"],
            info["anomaly_score"],
            names[info["bayes_class"]],
        ],
        axis=-1,
    )
    if info.get("label_kind") == "predicted":
        mixture_text = (
            "<br>Bayes class argmax p(x|c): %{customdata[6]}, most likely component %{customdata[4]}" if mixture else ""
        )
        return customdata, (
            "<b>%{customdata[3]}</b> (predicted class; no labels)"
            + mixture_text
            + "<br>%{customdata[0]}, cell (row %{customdata[1]}, col %{customdata[2]})"
            "<br>anomaly score %{customdata[5]:.3g}<extra></extra>"
        )
    template = (
        "<b>%{customdata[3]}</b> (ground truth; Bayes class argmax p(x|c): %{customdata[6]})"
        "<br>most likely component %{customdata[4]}"
        "<br>%{customdata[0]}, cell (row %{customdata[1]}, col %{customdata[2]})"
        "<br>anomaly score %{customdata[5]:.3g}<extra></extra>"
    )
    return customdata, template


def tsne_figure(
    coords: np.ndarray,
    info: Mapping,
    mean_coords: np.ndarray,
    classes: Sequence[str],
    palette,
    colour_by: str = "class",
    label_means: bool = True,
    marker_size: int = 7,
    title: str = "t-SNE of pixel embeddings and mixture means",
) -> go.Figure:
    """Scatter of :func:`tsne_embedding`'s coordinates with a menu to recolour the points.

    Args:
        coords: ``[n, 2]`` pixel coordinates; ``info``: :func:`sample_pixels`'s dict.
        mean_coords: ``[C, M, 2]`` coordinates of the component means (drawn as large outlined
            diamonds in their component shade, labelled "class m"); None for a softmax head's
            features (no means, no component colouring).
        classes, palette: class names and ``[C, 3]`` uint8 colours.
        colour_by: the colouring shown first: ``"class"`` (ground truth), ``"component"`` (shades
            of the class colour, dark = component 0) or ``"anomaly"`` (anomaly score, colour bar).

    Each colouring is its own group of traces; the menu (static HTML) switches their visibility.
    Hover gives image name, embedding-grid cell, ground-truth class, the cell's Bayes class, the
    most likely component and the anomaly score. With unlabeled predictions' info
    (``info["label_kind"] == "predicted"``, :func:`sample_pixels`) "class" is the predicted class.
    """
    mixture = mean_coords is not None
    kinds = COLOUR_BY if mixture else ("class", "anomaly")
    if colour_by not in kinds:
        raise ValueError(f"colour_by must be one of {kinds}, got {colour_by!r}")
    coords = np.asarray(coords, dtype=np.float64)
    num_c = len(classes)
    mean_coords = np.asarray(mean_coords if mixture else np.zeros((num_c, 0, 2)), dtype=np.float64)
    n = len(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be [n, 2], got shape {coords.shape}")
    for key in ("label", "component", "anomaly_score", "name", "row", "col", "bayes_class"):
        if key not in info or len(info[key]) != n:
            raise ValueError(f"info[{key!r}] must have one entry per point ({n}); pass sample_pixels' info")
    if mean_coords.ndim != 3 or mean_coords.shape[0] != num_c or mean_coords.shape[2] != 2:
        raise ValueError(f"mean_coords must be [C, M, 2] with C = {num_c}, got shape {mean_coords.shape}")
    num_m = mean_coords.shape[1]
    colours = class_colours(palette)
    shades = component_palette(palette, max(num_m, 1))
    label, component = np.asarray(info["label"]), np.asarray(info["component"])
    customdata, template = _hover_data(info, classes, mixture)
    label_text = "predicted class" if info.get("label_kind") == "predicted" else "ground-truth class"

    fig = go.Figure()
    groups: dict[str, list[int]] = {k: [] for k in COLOUR_BY}
    for c in range(num_c):  # by class: one trace per class, so the legend names the classes
        members = label == c
        if not members.any():
            continue
        groups["class"].append(len(fig.data))
        fig.add_scatter(
            x=coords[members, 0],
            y=coords[members, 1],
            mode="markers",
            name=classes[c],
            legendgroup="class",
            legendgrouptitle_text=label_text,
            marker=dict(size=marker_size, color=colours[c], line=dict(width=0.4, color="white")),
            customdata=customdata[members],
            hovertemplate=template,
        )
    for c in range(num_c if mixture else 0):  # by component: shades of each class colour, one legend entry per class
        members = label == c
        if not members.any():
            continue
        groups["component"].append(len(fig.data))
        fig.add_scatter(
            x=coords[members, 0],
            y=coords[members, 1],
            mode="markers",
            name=classes[c],
            legendgroup="component",
            legendgrouptitle_text="class; shade = component (dark 0 → light)",
            marker=dict(
                size=marker_size,
                color=[hex_colour(shades[c, m]) for m in component[members]],
                line=dict(width=0.4, color="#333"),
            ),
            customdata=customdata[members],
            hovertemplate=template,
        )
    groups["anomaly"].append(len(fig.data))
    fig.add_scatter(
        x=coords[:, 0],
        y=coords[:, 1],
        mode="markers",
        name="anomaly score",
        showlegend=False,
        marker=dict(
            size=marker_size,
            color=np.asarray(info["anomaly_score"], dtype=np.float64),
            colorscale=SCORE_COLORSCALE,
            showscale=True,
            line=dict(width=0),
            colorbar=dict(title=dict(text="anomaly<br>score", side="top"), x=1.02, len=0.75),
        ),
        customdata=customdata,
        hovertemplate=template,
    )
    mean_c, mean_m = np.meshgrid(np.arange(num_c), np.arange(num_m), indexing="ij")
    if not mixture:
        return _finish_map(fig, groups, kinds, colour_by, title, f"{len(coords)} points, one t-SNE run", label_text)
    fig.add_scatter(
        x=mean_coords[..., 0].ravel(),
        y=mean_coords[..., 1].ravel(),
        name="component means (class m)",
        mode="markers+text" if label_means else "markers",
        legendgroup="means",
        legendgrouptitle_text="mixture",
        text=[f"{classes[c]} {m}" for c, m in zip(mean_c.ravel(), mean_m.ravel())],
        textposition="top center",
        textfont=dict(size=FONT["size"] - 3, color="#222"),
        marker=dict(
            symbol="diamond",
            size=15,
            color=[hex_colour(shades[c, m]) for c, m in zip(mean_c.ravel(), mean_m.ravel())],
            line=dict(width=2, color="black"),
        ),
        hovertemplate="mean of <b>%{text}</b><extra></extra>",
    )
    return _finish_map(
        fig,
        groups,
        kinds,
        colour_by,
        title,
        f"{len(coords)} pixels, {num_c * num_m} means, one t-SNE run",
        label_text,
        always_last=True,
    )


def _finish_map(
    fig: go.Figure,
    groups: Mapping[str, list[int]],
    kinds: Sequence[str],
    colour_by: str,
    title: str,
    subtitle: str,
    label_text: str,
    always_last: bool = False,
) -> go.Figure:
    """Layout and the colouring menu of a t-SNE map; ``always_last``: the last trace (the means) is
    shown under every colouring."""
    n_traces = len(fig.data)

    def visible(kind: str) -> list[bool]:
        return [t in groups[kind] or (always_last and t == n_traces - 1) for t in range(n_traces)]

    for t, trace in enumerate(fig.data):
        trace.visible = visible(colour_by)[t]
    titles = {
        "class": f"colour: {label_text}",
        "component": "colour: component (shade of the class colour)",
        "anomaly": "colour: anomaly score",
    }
    height, top, bottom = 700, 130, 60
    fig.update_layout(
        title=dict(text=f"{title}<br><sup>{subtitle}</sup>", x=0.01, y=0.98, yanchor="top"),
        font=FONT,
        template="plotly_white",
        height=height,
        margin=dict(l=70, r=30, t=top, b=bottom),
        xaxis=dict(title="t-SNE 1", zeroline=False),
        yaxis=dict(title="t-SNE 2", zeroline=False),
        legend=dict(x=1.12, y=1.0, groupclick="toggleitem"),
        hovermode="closest",
    )
    buttons = [dict(label=titles[k], method="restyle", args=[{"visible": visible(k)}]) for k in kinds]
    add_menus(fig, [(buttons, list(kinds).index(colour_by))], height, top, bottom, px_above_plot=30)
    return fig


def tsne_placed_figure(
    map_coords: np.ndarray,
    map_info: Mapping,
    mean_coords: np.ndarray | None,
    new_coords: np.ndarray,
    new_info: Mapping,
    classes: Sequence[str],
    palette,
    colour_by: str = "anomaly",
    marker_size: int = 8,
    title: str = "New images' pixels placed on a map of labelled pixels",
) -> go.Figure:
    """The labelled pixels of a fitted map (small, pale, by ground-truth class), the mixture means, and
    new images' pixels placed on it (large, outlined), coloured by their anomaly score or predicted class.

    Args:
        map_coords: ``[n, 2]`` fitted pixels and their ``map_info`` (:func:`sample_pixels` of labelled
            predictions); mean_coords: ``[C, M, 2]`` or None.
        new_coords: ``[k, 2]`` placed pixels (:func:`gmmseg_lab.experiments.explore.place_on_map`) and
            their ``new_info`` (:func:`sample_pixels` of unlabeled predictions).
        colour_by: the new pixels' colouring shown first, ``"anomaly"`` or ``"class"`` (the menu
            switches).
    """
    if colour_by not in ("anomaly", "class"):
        raise ValueError(f"colour_by must be 'anomaly' or 'class', got {colour_by!r}")
    map_coords, new_coords = np.asarray(map_coords, np.float64), np.asarray(new_coords, np.float64)
    for name, coords, info in (("map_coords", map_coords, map_info), ("new_coords", new_coords, new_info)):
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"{name} must be [n, 2], got shape {coords.shape}")
        for key in ("label", "anomaly_score", "name", "row", "col", "component", "bayes_class"):
            if key not in info or len(info[key]) != len(coords):
                raise ValueError(
                    f"{name}: its info[{key!r}] must have one entry per point ({len(coords)}); pass sample_pixels' info"
                )
    num_c = len(classes)
    colours = class_colours(palette)
    fig = go.Figure()
    mixture = mean_coords is not None
    map_data, map_template = _hover_data(map_info, classes, mixture)
    map_label = np.asarray(map_info["label"])
    for c in range(num_c):  # the map: always shown, pale, one legend entry per class
        members = map_label == c
        if members.any():
            fig.add_scatter(
                x=map_coords[members, 0],
                y=map_coords[members, 1],
                mode="markers",
                name=classes[c],
                legendgroup="map",
                legendgrouptitle_text="map: labelled pixels (ground truth)",
                marker=dict(size=5, color=colours[c], opacity=0.35, line=dict(width=0)),
                customdata=map_data[members],
                hovertemplate=map_template,
            )
    if mixture:
        mean_coords = np.asarray(mean_coords, np.float64)
        shades = component_palette(palette, mean_coords.shape[1])
        mean_c, mean_m = np.meshgrid(np.arange(num_c), np.arange(mean_coords.shape[1]), indexing="ij")
        fig.add_scatter(
            x=mean_coords[..., 0].ravel(),
            y=mean_coords[..., 1].ravel(),
            mode="markers",
            name="component means",
            legendgroup="means",
            legendgrouptitle_text="mixture",
            text=[f"{classes[c]} {m}" for c, m in zip(mean_c.ravel(), mean_m.ravel())],
            marker=dict(
                symbol="diamond",
                size=12,
                line=dict(width=1.5, color="black"),
                color=[hex_colour(shades[c, m]) for c, m in zip(mean_c.ravel(), mean_m.ravel())],
            ),
            hovertemplate="mean of <b>%{text}</b><extra></extra>",
        )
    fixed = len(fig.data)
    new_data, new_template = _hover_data(new_info, classes, mixture)
    new_label = np.asarray(new_info["label"])
    groups: dict[str, list[int]] = {"anomaly": [len(fig.data)], "class": []}
    fig.add_scatter(
        x=new_coords[:, 0],
        y=new_coords[:, 1],
        mode="markers",
        name="new pixels: anomaly score",
        legendgroup="new",
        legendgrouptitle_text="your images' pixels",
        marker=dict(
            size=marker_size,
            symbol="circle",
            line=dict(width=1, color="black"),
            color=np.asarray(new_info["anomaly_score"], np.float64),
            colorscale=SCORE_COLORSCALE,
            showscale=True,
            colorbar=dict(title=dict(text="anomaly<br>score", side="top"), x=1.02, len=0.75),
        ),
        customdata=new_data,
        hovertemplate=new_template,
    )
    for c in range(num_c):
        members = new_label == c
        if members.any():
            groups["class"].append(len(fig.data))
            fig.add_scatter(
                x=new_coords[members, 0],
                y=new_coords[members, 1],
                mode="markers",
                name=f"new: {classes[c]}",
                legendgroup="new",
                marker=dict(size=marker_size, color=colours[c], line=dict(width=1, color="black")),
                customdata=new_data[members],
                hovertemplate=new_template,
            )
    n_traces = len(fig.data)

    def visible(kind: str) -> list[bool]:
        return [t < fixed or t in groups[kind] for t in range(n_traces)]

    for t, trace in enumerate(fig.data):
        trace.visible = visible(colour_by)[t]
    height, top, bottom = 700, 130, 60
    fig.update_layout(
        title=dict(
            text=f"{title}<br><sup>{len(map_coords)} labelled pixels fitted, {len(new_coords)} new pixels "
            "placed (openTSNE transform)</sup>",
            x=0.01,
            y=0.98,
            yanchor="top",
        ),
        font=FONT,
        template="plotly_white",
        height=height,
        margin=dict(l=70, r=30, t=top, b=bottom),
        xaxis=dict(title="t-SNE 1", zeroline=False),
        yaxis=dict(title="t-SNE 2", zeroline=False),
        legend=dict(x=1.12, y=1.0, groupclick="toggleitem"),
        hovermode="closest",
    )
    buttons = [
        dict(label=label, method="restyle", args=[{"visible": visible(kind)}])
        for kind, label in (("anomaly", "new pixels: anomaly score"), ("class", "new pixels: predicted class"))
    ]
    add_menus(fig, [(buttons, ("anomaly", "class").index(colour_by))], height, top, bottom, px_above_plot=30)
    return fig


def tsne_widget(preds, n_per_class: int = 60, seed: int = 0, perplexity: int = 30):
    """Live t-SNE view: ``.controls["colour_by"]`` redraws, ``.controls["perplexity"]`` re-runs t-SNE
    (results are cached per perplexity); the pixel sample is drawn once (:func:`sample_pixels`)."""
    import ipywidgets as widgets

    x, info = sample_pixels(preds, n_per_class, seed)
    means = preds.means if preds.is_gmm else None
    n_points = len(x) + (0 if means is None else int(np.prod(means.shape[:-1])))
    upper = max(2, min(100, n_points - 1))
    options = [("class", "class"), ("component", "component"), ("anomaly score", "anomaly")]
    controls = {
        "colour_by": widgets.Dropdown(
            options=[o for o in options if means is not None or o[1] != "component"],
            value="class",
            description="colour by",
        ),
        "perplexity": widgets.IntSlider(
            value=min(perplexity, upper), min=2, max=upper, step=1, description="perplexity", continuous_update=False
        ),
    }
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def render() -> go.Figure:
        p = controls["perplexity"].value
        if p not in cache:
            cache[p] = tsne_embedding(x, means, seed, p)
        coords, mean_coords = cache[p]
        return tsne_figure(
            coords,
            info,
            mean_coords,
            preds.classes,
            preds.palette,
            controls["colour_by"].value,
            title=f"t-SNE of pixel embeddings and mixture means (perplexity {p})",
        )

    box = figure_box(controls, render)
    box.samples = (x, info)
    return box
