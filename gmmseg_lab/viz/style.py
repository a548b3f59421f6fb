"""Shared look of the lab's figures: colours for models, classes and components, image axes, plotly set-up.

- Models (lines, bars, curves of notebooks 01 and 04-06) use one Okabe-Ito sequence,
  :data:`MODEL_COLOURS` through :func:`model_colours`, so a model keeps its colour across notebooks.
- Classes use the data set's palette (Cityscapes colours for the embedded data); a class's M
  components are shades of its colour from dark to light (:func:`component_palette`), so a component
  map still reads by class.
- :func:`image_axes` and :func:`panel_note` are the layout helpers of image panels and empty panels.
- :func:`setup_plotly` makes plotly figures draw both live in JupyterLab (the plotly mime type) and
  in nbconvert's static HTML with no network (plotly.js embedded once per page).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Colour of the anomaly / "unknown" overlays (not a class colour).
ANOMALY_COLOUR = (255, 0, 255)
#: Plotly layout defaults: readable on a projector (teaching) and in a report.
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=13)
#: Sequential colour scale for scores (perceptually uniform, reads in grey-scale).
SCORE_COLORSCALE = "Viridis"
#: Line / bar colours of models and variants, in order: Okabe-Ito (distinguishable with the common
#: colour-vision deficiencies). Yellow comes late because it is hard to see on white, black last
#: (reference lines and seed markers are dark).
MODEL_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
#: A marker shape per model as well as a colour, so series stay apart in grey-scale prints too.
MODEL_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "x", "star", "hexagon")
#: OKLab lightness window of the component shades (0 black, 1 white): away from the black of
#: ignore / void pixels and from white.
SHADE_LIGHTNESS = (0.35, 0.90)
#: Half-width of a class's shade window in OKLab lightness (the window is 0.17 wide).
SHADE_HALF_WIDTH = 0.085


def _offline_notebook_renderer():
    """plotly's ``notebook`` renderer (plotly.js embedded once per page) without MathJax from a CDN.

    The stock renderer adds a ``<script src=".../mathjax/...">`` from cdnjs to every figure, which an
    offline report page cannot load (a console error per figure); the lab's figures use no LaTeX.
    """
    import re

    from plotly.io._base_renderers import NotebookRenderer

    mathjax_tag = re.compile(r'<script src="[^"]*mathjax[^"]*"></script>', re.IGNORECASE)

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = mathjax_tag.sub("", bundle["text/html"])
            return bundle

    return OfflineNotebookRenderer(connected=False)


def setup_plotly() -> None:
    """Render plotly figures as the plotly mime type (drawn by JupyterLab's plotly extension) plus HTML
    with plotly.js embedded (drawn in nbconvert's static pages, with no network)."""
    import plotly.io as pio

    if "lab_offline" not in pio.renderers:
        pio.renderers["lab_offline"] = _offline_notebook_renderer()
    pio.renderers.default = "plotly_mimetype+lab_offline"
    pio.templates.default = "plotly_white"


# --------------------------------------------------------------------------------------------------
# Model colours.


def model_colours(labels: Sequence[str]) -> dict[str, str]:
    """One :data:`MODEL_COLOURS` colour per model label, in order (cycling after 8 models)."""
    return {label: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, label in enumerate(labels)}


def model_symbols(labels: Sequence[str]) -> dict[str, str]:
    """One plotly marker symbol per model label, in order (cycling after 8 models)."""
    return {label: MODEL_SYMBOLS[i % len(MODEL_SYMBOLS)] for i, label in enumerate(labels)}


def rgba(colour: str, alpha: float) -> str:
    """``'#rrggbb'`` -> ``'rgba(r, g, b, alpha)'`` (e.g. a translucent band in a line's colour)."""
    digits = colour.lstrip("#")
    if len(digits) != 6:
        raise ValueError(f"colour must be '#rrggbb', got {colour!r}")
    r, g, b = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


# --------------------------------------------------------------------------------------------------
# Class and component colours.


def hex_colour(rgb) -> str:
    """``(r, g, b)`` 0-255 -> ``'#rrggbb'``."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def class_colours(palette) -> list[str]:
    """``[C, 3]`` uint8 palette -> ``C`` hex colours."""
    return [hex_colour(c) for c in np.asarray(palette)]


# OKLab (Ottosson 2020): linear sRGB -> LMS -> cube root -> Lab. Perceptually even lightness, and a
# hue that stays put when the lightness changes (CIELab turns dark blues purple).
_RGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_TO_LAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_LAB_TO_LMS = np.linalg.inv(_LMS_TO_LAB)
_LMS_TO_RGB = np.linalg.inv(_RGB_TO_LMS)


def _srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` sRGB in [0, 1] -> ``[..., 3]`` OKLab."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    return np.cbrt(linear @ _RGB_TO_LMS.T) @ _LMS_TO_LAB.T


def _oklab_to_linear(lab: np.ndarray) -> np.ndarray:
    """``[..., 3]`` OKLab -> ``[..., 3]`` linear sRGB (outside [0, 1] when out of gamut)."""
    return ((lab @ _LAB_TO_LMS.T) ** 3) @ _LMS_TO_RGB.T


def _oklab_to_srgb_in_gamut(lab: np.ndarray, steps: int = 24) -> np.ndarray:
    """``[..., 3]`` OKLab -> sRGB in [0, 1], keeping lightness and hue and reducing chroma (bisection)
    where the colour is outside the sRGB gamut (chroma 0, a grey, always fits for lightness in [0, 1])."""
    lab = np.asarray(lab, dtype=np.float64)

    def fits(scale: np.ndarray) -> np.ndarray:
        linear = _oklab_to_linear(np.concatenate([lab[..., :1], lab[..., 1:] * scale[..., None]], -1))
        return ((linear >= -1e-9) & (linear <= 1 + 1e-9)).all(-1)

    low, high = np.zeros(lab.shape[:-1]), np.ones(lab.shape[:-1])
    inside = fits(high)
    low[inside] = 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        ok = fits(mid) & ~inside
        low = np.where(ok, mid, low)
        high = np.where(ok | inside, high, mid)
    linear = np.clip(_oklab_to_linear(np.concatenate([lab[..., :1], lab[..., 1:] * low[..., None]], -1)), 0, 1)
    return np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)


def component_palette(palette, num_components: int) -> np.ndarray:
    """``[C, M, 3]`` uint8: M shades of each class colour, darkest (component 0) first.

    Shades are made in OKLab (perceptually even lightness steps, hue kept): class ``c``'s M shades
    are evenly spaced in lightness over a window ``±`` :data:`SHADE_HALF_WIDTH` around the class
    colour's own lightness, the window shifted where needed to lie inside :data:`SHADE_LIGHTNESS`
    (so no shade comes near the black of ignore / void pixels or near white); chroma is the class
    colour's, reduced only where a shade would leave the sRGB gamut. With ``M == 1`` the shade is
    the class colour itself.

    Each class's shades depend on its own colour only. Classes whose colours differ in hue or
    chroma keep apart by that; classes that differ only in lightness (Cityscapes' grey building,
    L 0.39, and grey pole, L 0.68) keep disjoint lightness windows when their lightnesses lie more
    than three half-widths apart after the shift. Within a class the lightness step is
    ``0.17 / (M - 1)``: distinct for the default ``M = 5``, subtle for ``M = 10``.
    """
    palette = np.asarray(palette, dtype=np.float64)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be [C, 3], got shape {palette.shape}")
    if num_components < 1:
        raise ValueError(f"num_components must be >= 1, got {num_components}")
    if num_components == 1:
        return np.round(palette).astype(np.uint8)[:, None, :]
    lab = _srgb_to_oklab(palette / 255.0)  # [C, 3]
    low, high = SHADE_LIGHTNESS
    centre = np.clip(lab[:, 0], low + SHADE_HALF_WIDTH, high - SHADE_HALF_WIDTH)  # [C]
    offsets = np.linspace(-SHADE_HALF_WIDTH, SHADE_HALF_WIDTH, num_components)  # [M]
    shades = np.repeat(lab[:, None, :], num_components, axis=1)  # [C, M, 3]
    shades[..., 0] = centre[:, None] + offsets[None, :]
    return np.round(_oklab_to_srgb_in_gamut(shades) * 255).astype(np.uint8)


def colourise(labels: np.ndarray, palette, ignore_colour=(0, 0, 0)) -> np.ndarray:
    """``[H, W]`` int labels -> ``[H, W, 3]`` uint8; values outside the palette get ``ignore_colour``."""
    palette = np.asarray(palette, dtype=np.uint8)
    labels = np.asarray(labels)
    out = np.empty(labels.shape + (3,), dtype=np.uint8)
    out[...] = np.asarray(ignore_colour, dtype=np.uint8)
    ok = (labels >= 0) & (labels < len(palette))
    out[ok] = palette[labels[ok]]
    return out


def blend(image: np.ndarray, overlay: np.ndarray, opacity: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend ``overlay`` on ``image`` (both ``[H, W, 3]`` uint8), only where ``mask`` (``[H, W]``
    bool) is True; returns ``[H, W, 3]`` uint8."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    out = image.astype(np.float32) * (1 - opacity) + overlay.astype(np.float32) * opacity
    if mask is not None:
        out = np.where(mask[..., None], out, image.astype(np.float32))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Layout of image panels and empty panels.


def image_axes(fig, n_panels: int, shape: tuple[int, int] | None = None, label_first: bool = True) -> None:
    """Pixel axes for the subplots ``1..n_panels`` (``xaxis``/``yaxis``, ``xaxis2``/``yaxis2``, ...).

    Square pixels (y anchored to x), rows growing downwards, no grid; tick labels and axis titles
    ("column (px)", "row (px)") on the first panel only (none with ``label_first=False``). With
    ``shape = (H, W)`` the ranges are fixed to the image, ``[-0.5, W - 0.5]`` and ``[H - 0.5, -0.5]``
    (so overlaid lines cannot widen them); else the y axis is reversed and autoranged.
    """
    for k in range(1, n_panels + 1):
        suffix = "" if k == 1 else str(k)
        first = label_first and k == 1
        x = dict(
            showgrid=False,
            zeroline=False,
            showticklabels=first,
            title_text="column (px)" if first else None,
            constrain="domain",
        )
        y = dict(
            showgrid=False,
            zeroline=False,
            showticklabels=first,
            title_text="row (px)" if first else None,
            scaleanchor=f"x{suffix}",
            constrain="domain",
        )
        if shape is None:
            y["autorange"] = "reversed"
        else:
            height, width = shape
            x["range"] = [-0.5, width - 0.5]
            y["range"] = [height - 0.5, -0.5]
        fig.layout[f"xaxis{suffix}"].update(**x)
        fig.layout[f"yaxis{suffix}"].update(**y)


def panel_note(fig, row: int, col: int, text: str) -> None:
    """A grey note in the middle of an empty subplot (e.g. a scalar these runs did not log).

    plotly.js draws no axes for a subplot without traces and resolves ``"x3 domain"`` references
    to the first axes then, so the note is placed in paper coordinates from the subplot's domain.
    """
    subplot = fig.get_subplot(row, col)
    x, y = np.mean(subplot.xaxis.domain), np.mean(subplot.yaxis.domain)
    subplot.yaxis.update(visible=False)
    subplot.xaxis.update(showgrid=False, showticklabels=False, zeroline=False)
    fig.add_annotation(
        text=text,
        x=x,
        y=y,
        xref="paper",
        yref="paper",
        xanchor="center",
        yanchor="middle",
        showarrow=False,
        font=dict(color="#777777", size=FONT["size"]),
    )
