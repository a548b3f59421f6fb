"""Helpers the figure modules share: images inside figures, statistics over seeds and their text.

- :func:`png_data_uri` / :func:`decode_png_data_uri`: images travel inside figures as PNG data URIs
  (``go.Image(source=...)``), a few kilobytes per image instead of a list of every pixel value.
- :func:`format_percent`: one model's metric over its seeds as ``"mean ± std"`` text in %. Statistics
  over seeds come from :mod:`gmmseg_lab.stats` (``seed_stats``, ``format_mean_std``), the one place
  the project computes mean ± sample standard deviation; the viz modules use it too.
"""

from __future__ import annotations

import base64
import io
from typing import Iterable

import numpy as np

from ..stats import format_mean_std, seed_stats

_PNG_PREFIX = "data:image/png;base64,"


def png_data_uri(image: np.ndarray) -> str:
    """``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8 -> ``"data:image/png;base64,..."`` (lossless).

    Pillow's default compression: its ``optimize=True`` gains 1-3 % in size for 3-9 times the time
    (measured on 256 x 512 label overlays and photos), which a live widget's redraw cannot afford.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be a [H, W, 3] or [H, W, 4] uint8 array, got shape {image.shape} dtype {image.dtype}"
        )
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return _PNG_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png_data_uri(uri: str) -> np.ndarray:
    """Inverse of :func:`png_data_uri`: ``"data:image/png;base64,..."`` -> ``[H, W, 3|4]`` uint8."""
    from PIL import Image

    if not isinstance(uri, str) or not uri.startswith(_PNG_PREFIX):
        raise ValueError(f"uri must start with {_PNG_PREFIX!r}, got {str(uri)[:40]!r}")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri[len(_PNG_PREFIX) :]))))


def format_percent(values: Iterable[float | None], digits: int = 2) -> str:
    """``"mean ± std"`` in % of ``[S]`` fractions over seeds (``None`` / NaN entries left out), by
    :func:`gmmseg_lab.stats.seed_stats` and :func:`gmmseg_lab.stats.format_mean_std`."""
    stat = seed_stats(values)
    return format_mean_std({**stat, "mean": 100.0 * stat["mean"], "std": 100.0 * stat["std"]}, digits)
