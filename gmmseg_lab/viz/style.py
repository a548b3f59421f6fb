"""Shared look of the lab's figures: colours for classes and components, plotly set-up for offline pages.

- Classes use the data set's palette (Cityscapes colours for the embedded data); a class's M
  components are shades of its colour from dark to light, so a component map still reads by class.
- :func:`setup_plotly` makes plotly figures draw both live in JupyterLab (the plotly mime type) and
  in nbconvert's static HTML with no network (plotly.js embedded once per page).
"""

from __future__ import annotations

import colorsys

import numpy as np

#: Colour of the anomaly / "unknown" overlays (not a class colour).
ANOMALY_COLOUR = (255, 0, 255)
#: Plotly layout defaults: readable on a projector (teaching) and in a report.
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=13)
#: Sequential colour scale for scores (perceptually uniform, reads in grey-scale).
SCORE_COLORSCALE = "Viridis"


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


def hex_colour(rgb) -> str:
    """``(r, g, b)`` 0-255 -> ``'#rrggbb'``."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def class_colours(palette) -> list[str]:
    """``[C, 3]`` uint8 palette -> ``C`` hex colours."""
    return [hex_colour(c) for c in np.asarray(palette)]


def component_palette(palette, num_components: int) -> np.ndarray:
    """``[C, M, 3]`` uint8: M shades of each class colour (darkest first, all distinguishable).

    Lightness is spread over a window of width 0.3 in HLS centred on the class colour's own lightness
    (clipped to [0.25, 0.75] so the shades stay away from black and white), so classes that differ only
    in lightness (grey building vs grey pole) keep different shade ranges; saturation is kept at least
    0.45 for coloured classes so their shades do not wash out.
    """
    palette = np.asarray(palette, dtype=np.float64) / 255.0
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be [C, 3], got shape {palette.shape}")
    if num_components < 1:
        raise ValueError(f"num_components must be >= 1, got {num_components}")
    out = np.zeros((len(palette), num_components, 3), dtype=np.uint8)
    for c, rgb in enumerate(palette):
        h, l, s = colorsys.rgb_to_hls(*rgb)
        centre = min(max(l, 0.25), 0.75)
        lightness = [l] if num_components == 1 else np.linspace(centre - 0.15, centre + 0.15, num_components)
        for m, light in enumerate(lightness):
            shade = colorsys.hls_to_rgb(h, light, max(s, 0.45) if s > 0.05 else s)
            out[c, m] = np.round(np.asarray(shade) * 255).astype(np.uint8)
    return out


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
    """Alpha-blend ``overlay`` on ``image`` (both ``[H, W, 3]`` uint8), only where ``mask`` is True."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    out = image.astype(np.float32) * (1 - opacity) + overlay.astype(np.float32) * opacity
    if mask is not None:
        out = np.where(mask[..., None], out, image.astype(np.float32))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
