"""Your own pictures (notebooks 02, 03, 06 with ``images`` set; ``gmmseg-lab explore``): views of unlabeled
predictions, and an upload control that scores a picture dropped into JupyterLab.

- :func:`segmentation_figure`: the image and each model's predicted classes over it (no ground truth);
- :func:`anomaly_maps_figure`: every anomaly score map a model offers on one image, side by side;
- :func:`upload_widget`: an ``ipywidgets.FileUpload``; each picture dropped in is scored by the
  models given (:class:`gmmseg_lab.experiments.explore.ImageScorer` or anything with its
  ``predict``) and shown as segmentation, mixture components (GMM) and an anomaly map.

The figures take :class:`~gmmseg_lab.experiments.predictions.Predictions` (``labeled=False``) and draw
only; the models run in :mod:`gmmseg_lab.experiments.explore`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._widgets import figure_box
from .anomaly import score_overlay_figure
from .common import png_data_uri
from .components import component_overlay_figure
from .style import FONT, SCORE_COLORSCALE, blend, colourise, image_axes
from .training import _class_legend, add_menus

__all__ = [
    "SCORE_NAMES",
    "anomaly_maps_figure",
    "decode_upload",
    "message_figure",
    "segmentation_figure",
    "upload_widget",
]

#: What each score map of ``Predictions.score_maps`` is (higher = more anomalous), in display order.
SCORE_NAMES = {
    "neg_max_log_likelihood": "−max_c log p(x|c) (GMMSeg)",
    "neg_logsumexp_log_likelihood": "−logsumexp_c log p(x|c)",
    "max_softmax": "1 − max softmax",
    "max_logit": "−max logit",
    "energy": "energy, −logsumexp logits",
    "entropy": "softmax entropy",
}


def _check_models(preds_by_model: Mapping) -> tuple[str, object]:
    if not isinstance(preds_by_model, Mapping) or not preds_by_model:
        raise ValueError("preds_by_model must be a non-empty dict {label: Predictions}")
    items = list(preds_by_model.items())
    ref_label, ref = items[0]
    for label, p in items[1:]:
        if list(p.names) != list(ref.names) or p.images.shape != ref.images.shape:
            raise ValueError(
                f"preds_by_model[{label!r}] holds other images than preds_by_model[{ref_label!r}]; "
                "predict every model on the same images (and max_side)"
            )
    return ref_label, ref


def segmentation_figure(
    preds_by_model: Mapping[str, object],
    image_indices: Sequence[int] | None = None,
    opacity: float = 0.6,
    panel_px: int = 360,
) -> go.Figure:
    """The image and each model's predicted classes blended over it, one image at a time.

    Args:
        preds_by_model: model label -> :class:`~gmmseg_lab.experiments.predictions.Predictions` on the
            same images (labelled or not: the ground truth is not drawn).
        image_indices: the images the dropdown offers (default all; the first is shown).
        opacity: the class colours' opacity over the photo, in ``[0, 1]``.
        panel_px: height of the image panels in pixels.

    Each panel title gives the model's most frequent predicted classes on the image; the legend names
    the class colours; a dropdown (static HTML) picks the image.
    """
    _, ref = _check_models(preds_by_model)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    n_total = len(ref.names)
    image_indices = list(range(n_total)) if image_indices is None else [int(i) for i in image_indices]
    if not image_indices or any(not 0 <= i < n_total for i in image_indices):
        raise ValueError(f"image_indices must be non-empty indices in [0, {n_total}), got {image_indices}")
    labels = list(preds_by_model)
    n_panels = 1 + len(labels)

    def top_classes(p, i: int) -> str:
        counts = np.bincount(p.pred[i].ravel(), minlength=len(p.classes))
        order = np.argsort(-counts)[:2]
        return ", ".join(f"{p.classes[c]} {100 * counts[c] / counts.sum():.0f} %" for c in order if counts[c])

    def titles_for(i: int) -> list[str]:
        return ["image"] + [f"{label}: {top_classes(preds_by_model[label], i)}" for label in labels]

    fig = make_subplots(rows=1, cols=n_panels, horizontal_spacing=0.015, subplot_titles=titles_for(image_indices[0]))
    for k, i in enumerate(image_indices):
        maps = [ref.images[i]] + [
            blend(ref.images[i], colourise(preds_by_model[label].pred[i], ref.palette), opacity) for label in labels
        ]
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
    _class_legend(fig, ref.classes, ref.palette)
    image_axes(fig, n_panels)

    def heading(i: int) -> str:
        return f"Predicted classes on {ref.names[i]} (#{i}); no labels, so no accuracy"

    height, top, bottom = panel_px + 190, 130, 50
    fig.update_layout(
        title=dict(text=heading(image_indices[0]), x=0.01, y=0.98, yanchor="top"),
        font=FONT,
        template="plotly_white",
        height=height,
        margin=dict(l=70, r=20, t=top, b=bottom),
        legend=dict(title=dict(text="predicted class"), x=1.01, y=1.0),
        plot_bgcolor="white",
    )
    if len(image_indices) > 1:
        buttons = []
        for k, i in enumerate(image_indices):
            visible = [k2 == k for k2 in range(len(image_indices)) for _ in range(n_panels)]
            visible += [True] * len(ref.classes)
            relayout = {"title.text": heading(i)}
            relayout.update({f"annotations[{a}].text": t for a, t in enumerate(titles_for(i))})
            buttons.append(
                dict(label=f"image: {ref.names[i]} (#{i})", method="update", args=[{"visible": visible}, relayout])
            )
        add_menus(fig, [(buttons, 0)], height, top, bottom)
    return fig


def anomaly_maps_figure(
    preds, index: int = 0, scores: Sequence[str] | None = None, max_side: int = 256, title: str | None = None
) -> go.Figure:
    """Every anomaly score map of one image side by side (each on its own colour scale, 1st to 99th
    percentile of the image), so the scores of one model can be compared where they light up.

    Args:
        preds: :class:`~gmmseg_lab.experiments.predictions.Predictions` with ``score_maps``
            (:func:`gmmseg_lab.experiments.explore.predict_images`).
        index: the image.
        scores: names of ``preds.score_maps`` to show (default all, in :data:`SCORE_NAMES` order).
        max_side: the maps are subsampled to this many pixels per side.
    """
    if not getattr(preds, "score_maps", None):
        raise ValueError("anomaly_maps_figure needs preds.score_maps (predictions of predict_images)")
    n = len(preds.names)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"index must be an image index in [0, {n}), got {index!r}")
    available = [k for k in SCORE_NAMES if k in preds.score_maps]
    available += [k for k in preds.score_maps if k not in SCORE_NAMES]
    scores = available if scores is None else list(scores)
    unknown = [s for s in scores if s not in preds.score_maps]
    if not scores or unknown:
        raise ValueError(f"scores must name maps of preds.score_maps ({', '.join(available)}), got {scores}")
    step = max(1, -(-max(preds.images.shape[1:3]) // max_side))
    fig = make_subplots(
        rows=1, cols=len(scores), horizontal_spacing=0.04, subplot_titles=[SCORE_NAMES.get(s, s) for s in scores]
    )
    for k, name in enumerate(scores, start=1):
        score = preds.score_maps[name][index].astype(np.float64)[::step, ::step]
        low, high = np.percentile(score, [1, 99])
        fig.add_trace(
            go.Heatmap(
                z=score,
                x0=(step - 1) / 2,
                dx=step,
                y0=(step - 1) / 2,
                dy=step,
                zmin=low,
                zmax=max(high, low + 1e-6),
                colorscale=SCORE_COLORSCALE,
                showscale=False,
                name=name,
                meta={"role": "score", "score": name},
                hovertemplate="(%{x}, %{y})<br>" + SCORE_NAMES.get(name, name) + " %{z:.4g}<extra></extra>",
            ),
            row=1,
            col=k,
        )
    image_axes(fig, len(scores), shape=preds.images.shape[1:3])
    fig.update_layout(
        title=dict(
            text=title
            or f"Every anomaly score of {preds.head} on {preds.names[index]} (bright = anomalous; "
            "each map on its own scale)",
            x=0.01,
        ),
        font=FONT,
        template="plotly_white",
        width=max(600, 300 * len(scores) + 100),
        height=420,
        margin=dict(l=60, r=30, t=100, b=60),
    )
    fig.update_annotations(font_size=12)
    return fig


def message_figure(text: str, title: str = "") -> go.Figure:
    """An empty figure carrying ``text`` in its middle (what a view shows before there is anything to draw)."""
    fig = go.Figure()
    fig.add_annotation(
        text=text,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font=dict(size=FONT["size"] + 2, color="#555"),
    )
    fig.update_layout(
        title=dict(text=title or text, x=0.01),
        font=FONT,
        template="plotly_white",
        height=260,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        margin=dict(l=30, r=30, t=70, b=30),
    )
    return fig


# ----------------------------------------------------------------------------------- upload
def decode_upload(value) -> tuple[str, np.ndarray, str] | None:
    """The last file of an ``ipywidgets.FileUpload`` value: ``(name, [H, W, 3] uint8 RGB, sha256 of the bytes)``,
    or None when nothing is uploaded.

    Accepts ipywidgets 8's value (a tuple of dicts with ``name`` and ``content``) and 7's
    (``{name: {"content": ...}}``).

    Raises:
        ValueError: naming the file, when its bytes are not an image PIL can read.
    """
    from PIL import Image, ImageOps

    if not value:
        return None
    if isinstance(value, Mapping):  # ipywidgets 7: {name: {"metadata": ..., "content": bytes}}
        name, entry = list(value.items())[-1]
        content = entry["content"]
    else:
        entry = value[-1]
        name, content = entry["name"], entry["content"]
    data = bytes(content)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as err:  # PIL raises several kinds for a file that is not an image
        raise ValueError(f"uploaded file {name!r}: not an image PIL can read ({type(err).__name__}: {err})") from None
    return str(name), np.ascontiguousarray(rgb), hashlib.sha256(data).hexdigest()


def upload_widget(scorers, max_side: int = 384, panel_px: int = 380):
    """Live view for JupyterLab: drop a picture into the upload control, see how each model reads it.

    Args:
        scorers: an :class:`~gmmseg_lab.experiments.explore.ImageScorer` (or anything with its
            ``predict(images, max_images=, max_side=)`` returning ``Predictions``), or ``{label: scorer}``
            to compare models (e.g. GMMSeg and a softmax model).
        max_side: the picture is scaled down to this longest side before it is scored.

    Controls (``box.controls``): ``"upload"`` (``ipywidgets.FileUpload``, one image), ``"model"``
    (whose anomaly map is shown), ``"score"`` (which of that model's anomaly scores; the options
    follow the model), ``"opacity"`` (of the class and component colours). Figures: ``box.figure``
    (:func:`segmentation_figure` of every model), ``box.components_figure``
    (:func:`gmmseg_lab.viz.components.component_overlay_figure` of the first GMM model),
    ``box.anomaly_figure`` (:func:`gmmseg_lab.viz.anomaly.score_overlay_figure`, no labels). Before
    a picture is dropped, and when a file is not an image, they carry a message instead
    (``box.error`` holds the error text, else None). ``box.predictions`` holds the current
    ``{label: Predictions}``; a picture already scored is not scored again.
    """
    import ipywidgets as widgets

    if not isinstance(scorers, Mapping):
        scorers = {getattr(scorers, "head", "model"): scorers}
    if not scorers or any(not callable(getattr(s, "predict", None)) for s in scorers.values()):
        raise ValueError("scorers must be a scorer (with a predict method) or a non-empty {label: scorer} dict")
    labels = list(scorers)
    cache: dict[str, dict] = {}
    box = None

    def score_options(label: str, preds=None) -> list[tuple[str, str]]:
        names = (
            list(preds.score_maps)
            if preds is not None and preds.score_maps
            else (
                ["neg_max_log_likelihood", "max_softmax", "max_logit", "energy"]
                if getattr(scorers[label], "head", "gmm") == "gmm"
                else ["max_softmax", "max_logit", "energy"]
            )
        )
        ordered = [k for k in SCORE_NAMES if k in names] + [k for k in names if k not in SCORE_NAMES]
        return [(SCORE_NAMES.get(k, k), k) for k in ordered]

    controls = {
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="picture"),
        "model": widgets.Dropdown(options=labels, value=labels[0], description="model"),
        "score": widgets.Dropdown(options=score_options(labels[0]), description="anomaly score"),
        "opacity": widgets.FloatSlider(
            value=0.6, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        ),
    }

    def current() -> dict | None:
        """``{label: Predictions}`` of the picture uploaded last (scored once), or None; sets ``box.error``."""
        try:
            decoded = decode_upload(controls["upload"].value)
        except ValueError as err:
            box_state["error"] = str(err)
            return None
        box_state["error"] = None
        if decoded is None:
            return None
        name, rgb, digest = decoded
        if digest not in cache:
            cache.clear()  # one picture at a time: a kernel should not keep every upload's arrays
            cache[digest] = {
                label: s.predict({name: rgb}, max_images=1, max_side=max_side) for label, s in scorers.items()
            }
        return cache[digest]

    box_state: dict = {"error": None}

    def waiting() -> go.Figure:
        if box_state["error"]:
            return message_figure(box_state["error"], "That file could not be scored")
        return message_figure("drop a picture into the upload control above")

    def segmentation() -> go.Figure:
        preds = current()
        if box is not None:
            box.predictions = preds
            box.error = box_state["error"]
        return waiting() if preds is None else segmentation_figure(preds, [0], controls["opacity"].value, panel_px)

    def components() -> go.Figure:
        preds = current()
        if preds is None:
            return waiting()
        gmm = [label for label, p in preds.items() if p.is_gmm and p.embeddings is not None]
        if not gmm:
            return message_figure("no GMM model here: components need a GMMSeg head")
        return component_overlay_figure(
            preds[gmm[0]], 0, opacity=controls["opacity"].value, menus=False, panel_px=panel_px
        )

    def anomaly() -> go.Figure:
        preds = current()
        if preds is None:
            return waiting()
        label, score = controls["model"].value, controls["score"].value
        p = preds[label]
        if score not in (p.score_maps or {}):
            return message_figure(f"{label} has no score {score!r}")
        return score_overlay_figure(
            p.images[0],
            p.score_maps[score][0],
            None,
            max_side=max_side,
            title=f"{label}: {SCORE_NAMES.get(score, score)} on {p.names[0]} (no labels)",
        )

    def on_model(change) -> None:
        # The score menu follows the model (a softmax model has no density score); one redraw.
        preds = current()
        options = score_options(change["new"], None if preds is None else preds[change["new"]])
        with box.held():
            keep = controls["score"].value
            controls["score"].options = options
            controls["score"].value = keep if keep in [v for _, v in options] else options[0][1]

    controls["model"].observe(on_model, names="value")
    box = figure_box(
        controls,
        segmentation,
        extra_outputs=[("components_figure", components), ("anomaly_figure", anomaly)],
        redraw_on=("upload", "score", "opacity"),
    )
    box.predictions = cache[next(iter(cache))] if cache else None
    box.error = box_state["error"]
    return box
