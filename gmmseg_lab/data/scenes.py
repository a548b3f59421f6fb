"""A procedural urban-scene data set, generated deterministically from a seed (numpy + PIL only).

The scenes look like a simplified driving data set seen from a car: sky at the top, a street
receding to a vanishing point, rows of building facades on both sides, sidewalks, grass verges,
hedges and trees, poles with traffic signs, people and cars. Geometry follows a pin-hole camera
at eye height ``E`` above a flat ground plane, so sizes shrink consistently with distance.

Every class is *multimodal* on purpose: each has two to four appearance modes that differ
clearly in colour and texture (a car is red, white or blue; vegetation is grass or foliage...).
This is the situation GMMSeg's per-class mixture is designed for, and where a single Gaussian
per class is the wrong model. :func:`render_scene` returns, for every pixel, the class *and*
the mode that generated it (:data:`MODES` names them).

The anomaly split pastes one or two objects per scene, mostly on the road, in the spirit of
Fishyscapes Static / Road Anomaly. About half of them are *procedural*: unseen shapes (irregular
polygons, ellipses, blobs) with unseen textures (checkerboard, stripes, dots, rings) in colours
used by no inlier mode (:data:`ANOMALY_COLOURS`). The other half are *real photographic objects*
(:data:`PHOTO_OBJECTS`): a cat, a coffee cup, an astronaut, a motorcycle and a rocket, cut out of
the photographs that scikit-image's wheel ships in ``skimage/data/`` (read from the installed
files, never downloaded) along an outline polygon kept in this module. A cut-out is scaled to its
depth on the ground plane, stands on the ground, is hidden by nearer inliers, shares the scene's
lighting, and has an anti-aliased edge whose mixed pixels outside the object all fall in the void
band. Anomaly masks use 0 = inlier, 1 = anomaly, 255 = void; the void is a thin band just outside
every anomaly's border (as in Fishyscapes), where a pixel mixes both and no answer is fair.
Every anomaly object's source is recorded (:data:`ANOMALY_SOURCES`: id 1 ``procedural``, ids 2-6
the photos), per pixel in a source mask and per image in ``sources.json``.

:func:`make_dataset` writes the on-disk layout read by :mod:`gmmseg_lab.data.layout`::

    DIR/classes.json                      {"classes": [...], "palette": [[r, g, b], ...]}
    DIR/meta.json                         generator, version, preset, seed, sizes, modes
    DIR/images/{train,val}/NAME.png       RGB
    DIR/annotations/{train,val}/NAME.png  uint8 class index, 255 = ignore
    DIR/anomaly/images/NAME.png           RGB
    DIR/anomaly/masks/NAME.png            0 inlier, 1 anomaly, 255 void
    DIR/anomaly/source_masks/NAME.png     uint8: 0 where the mask is not 1 (inlier or void), else
                                          the id of the source of the anomaly seen at that pixel
    DIR/anomaly/sources.json              {"sources": [{"id": 1, "name": "procedural",
                                          "kind": "procedural"}, {"id": 2, "name": "cat", "kind":
                                          "photo", "file": "chelsea.png"}, ...], "images":
                                          {"NAME.png": ["procedural", "cat"], ...}}: every source,
                                          and per image the sources visible in it, in paint order
                                          (far to near), each once

meta.json lists the sources too (``"anomaly_sources"``) when the set has an anomaly split;
:func:`gmmseg_lab.data.layout.read_anomaly_sources` reads ``sources.json`` back.

The command line ``python -m gmmseg_lab.data.scenes OUT_DIR --preset quick`` does the same.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io_utils import usable_cpus

__all__ = [
    "ANOMALY_COLOURS",
    "ANOMALY_SOURCES",
    "CLASSES",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "MODES",
    "MODE_COLOURS",
    "PALETTE",
    "PHOTO_OBJECTS",
    "PRESETS",
    "PhotoObject",
    "Scene",
    "make_dataset",
    "photo_cutout",
    "photo_path",
    "render_scene",
    "scene_rng",
]

GENERATOR_NAME = "gmmseg_lab.data.scenes"
# Bump whenever a change alters the generated pixels, so meta.json tells old sets from new.
GENERATOR_VERSION = "2"  # 2: photographic objects in the anomaly split, source masks

CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "vegetation",
    "sky",
    "pole",
    "traffic_sign",
    "person",
    "car",
)
# Cityscapes colours for the same classes, so colourised labels read familiarly.
PALETTE: list[list[int]] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [107, 142, 35],
    [70, 130, 180],
    [153, 153, 153],
    [220, 220, 0],
    [220, 20, 60],
    [0, 0, 142],
]
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, POLE, SIGN, PERSON, CAR = range(len(CLASSES))

#: Appearance modes of every class; the mode map stores the index into this tuple.
MODES: dict[str, tuple[str, ...]] = {
    "road": ("asphalt", "concrete", "lane_paint"),
    "sidewalk": ("red_pavers", "sandstone_slabs"),
    "building": ("brick", "glass", "plaster"),
    "vegetation": ("grass", "foliage"),
    "sky": ("clear", "overcast"),
    "pole": ("galvanised", "black_paint"),
    "traffic_sign": ("yellow_warning", "blue_information"),
    "person": ("dark_clothing", "hi_vis_clothing", "skin"),
    "car": ("red_paint", "white_paint", "blue_paint", "glass_and_tyres"),
}

#: Base RGB colour of every (class, mode) before texture, lighting and noise.
MODE_COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "road": ((58, 58, 63), (152, 149, 140), (228, 228, 220)),
    "sidewalk": ((178, 90, 78), (204, 190, 150)),
    "building": ((126, 56, 40), (62, 104, 136), (226, 216, 192)),
    "vegetation": ((96, 162, 52), (36, 78, 36)),
    "sky": ((92, 150, 226), (203, 206, 210)),
    "pole": ((168, 171, 178), (30, 30, 34)),
    "traffic_sign": ((238, 196, 28), (28, 84, 196)),
    "person": ((44, 42, 64), (244, 126, 22), (212, 160, 120)),
    "car": ((186, 24, 30), (230, 230, 228), (26, 46, 146), (26, 26, 30)),
}

#: Saturated colours that no inlier mode uses; anomalies are textured with two of them.
ANOMALY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
    (160, 255, 0),  # lime
    (130, 0, 255),  # violet
    (255, 70, 170),  # hot pink
    (0, 255, 140),  # spring green
)


@dataclass(frozen=True)
class PhotoObject:
    """A real object cut out of one of the photographs bundled with scikit-image.

    Attributes:
        name: the source's name in ``sources.json`` (``"cat"``).
        file: the photograph, a file of ``skimage/data/`` (``"chelsea.png"``).
        outline: the object's outline, a polygon of ``(x, y)`` vertices in normalised photo
            coordinates (0..1, x to the right, y down), drawn tight around the object by hand.
        height: range of the object's height standing on the ground, in eye heights E (a person
            is 1.05-1.25 E here); its width follows from the cut-out's aspect ratio.
    """

    name: str
    file: str
    outline: tuple[tuple[float, float], ...]
    height: tuple[float, float]


#: The photographic anomaly objects. The photos come without masks: each outline was traced on
#: the photo by eye (the cat's head and chest, ears included; the cup on its saucer with the
#: spoon; the astronaut to the waist with the helmet in her arm; the motorcycle from tail light to
#: front wheel; the rocket without its launch tower) and checked by rendering the cut-outs.
PHOTO_OBJECTS: tuple[PhotoObject, ...] = (
    PhotoObject(
        "cat",
        "chelsea.png",
        (
            (0.09, 0.0),
            (0.17, 0.0),
            (0.30, 0.05),
            (0.50, 0.06),
            (0.68, 0.03),
            (0.74, 0.0),
            (0.885, 0.0),
            (0.83, 0.13),
            (0.80, 0.24),
            (0.80, 0.36),
            (0.795, 0.5),
            (0.77, 0.61),
            (0.71, 0.73),
            (0.675, 0.83),
            (0.71, 0.91),
            (0.73, 1.0),
            (0.0, 1.0),
            (0.0, 0.42),
            (0.04, 0.3),
            (0.065, 0.14),
        ),
        (0.45, 0.75),
    ),
    PhotoObject(
        "coffee cup",
        "coffee.png",
        (
            (0.30, 0.2),
            (0.33, 0.1),
            (0.40, 0.06),
            (0.47, 0.05),
            (0.55, 0.06),
            (0.62, 0.09),
            (0.67, 0.14),
            (0.70, 0.16),
            (0.70, 0.2),
            (0.75, 0.27),
            (0.795, 0.37),
            (0.80, 0.5),
            (0.79, 0.62),
            (0.75, 0.75),
            (0.68, 0.86),
            (0.58, 0.94),
            (0.47, 0.97),
            (0.36, 0.95),
            (0.26, 0.89),
            (0.18, 0.8),
            (0.14, 0.68),
            (0.13, 0.55),
            (0.16, 0.42),
            (0.21, 0.32),
            (0.28, 0.24),
        ),
        (0.3, 0.55),
    ),
    PhotoObject(
        "astronaut",
        "astronaut.png",
        (
            (0.44, 0.03),
            (0.52, 0.035),
            (0.57, 0.08),
            (0.59, 0.14),
            (0.585, 0.2),
            (0.55, 0.24),
            (0.51, 0.28),
            (0.52, 0.31),
            (0.56, 0.34),
            (0.59, 0.40),
            (0.60, 0.46),
            (0.64, 0.49),
            (0.68, 0.53),
            (0.70, 0.58),
            (0.71, 0.66),
            (0.76, 0.67),
            (0.86, 0.69),
            (0.93, 0.74),
            (0.96, 0.82),
            (0.98, 0.92),
            (0.98, 1.0),
            (0.04, 1.0),
            (0.04, 0.8),
            (0.05, 0.64),
            (0.08, 0.54),
            (0.13, 0.47),
            (0.20, 0.42),
            (0.23, 0.36),
            (0.26, 0.31),
            (0.33, 0.28),
            (0.31, 0.22),
            (0.30, 0.15),
            (0.31, 0.09),
            (0.34, 0.055),
            (0.38, 0.04),
        ),
        (0.7, 0.95),
    ),
    PhotoObject(
        "motorcycle",
        "motorcycle_left.png",
        (
            (0.125, 0.40),
            (0.15, 0.37),
            (0.19, 0.34),
            (0.21, 0.33),
            (0.33, 0.345),
            (0.47, 0.37),
            (0.475, 0.33),
            (0.50, 0.31),
            (0.53, 0.315),
            (0.56, 0.335),
            (0.62, 0.33),
            (0.63, 0.26),
            (0.645, 0.21),
            (0.67, 0.17),
            (0.69, 0.15),
            (0.705, 0.17),
            (0.735, 0.19),
            (0.74, 0.22),
            (0.77, 0.24),
            (0.79, 0.26),
            (0.78, 0.29),
            (0.765, 0.33),
            (0.76, 0.37),
            (0.78, 0.45),
            (0.79, 0.52),
            (0.83, 0.53),
            (0.87, 0.56),
            (0.88, 0.6),
            (0.91, 0.66),
            (0.925, 0.73),
            (0.91, 0.82),
            (0.88, 0.88),
            (0.84, 0.905),
            (0.79, 0.895),
            (0.75, 0.86),
            (0.72, 0.8),
            (0.70, 0.74),
            (0.69, 0.68),
            (0.66, 0.68),
            (0.62, 0.72),
            (0.5, 0.735),
            (0.44, 0.745),
            (0.39, 0.74),
            (0.37, 0.77),
            (0.33, 0.79),
            (0.27, 0.795),
            (0.215, 0.78),
            (0.18, 0.73),
            (0.17, 0.65),
            (0.175, 0.57),
            (0.19, 0.5),
            (0.16, 0.475),
            (0.13, 0.47),
            (0.12, 0.44),
        ),
        (0.6, 0.8),
    ),
    PhotoObject(
        "rocket",
        "rocket.jpg",
        (
            (0.505, 0.297),
            (0.512, 0.305),
            (0.518, 0.32),
            (0.521, 0.34),
            (0.522, 0.37),
            (0.521, 0.41),
            (0.519, 0.42),
            (0.519, 0.85),
            (0.521, 0.95),
            (0.487, 0.95),
            (0.489, 0.85),
            (0.489, 0.42),
            (0.487, 0.41),
            (0.487, 0.37),
            (0.488, 0.34),
            (0.492, 0.32),
            (0.498, 0.305),
        ),
        (1.0, 1.5),
    ),
)

PROCEDURAL_SOURCE_ID = 1
#: Every source of anomaly objects, as ``sources.json`` and meta.json list them: id 1 the
#: procedural objects, then one id per :data:`PHOTO_OBJECTS` entry. Ids are stable.
ANOMALY_SOURCES: tuple[dict, ...] = (
    {"id": PROCEDURAL_SOURCE_ID, "name": "procedural", "kind": "procedural"},
    *(
        {"id": PROCEDURAL_SOURCE_ID + 1 + i, "name": p.name, "kind": "photo", "file": p.file}
        for i, p in enumerate(PHOTO_OBJECTS)
    ),
)
_SOURCE_NAMES = {s["id"]: s["name"] for s in ANOMALY_SOURCES}

#: Sizes of the embedded data set. ``size`` is the square image side in pixels.
PRESETS: dict[str, dict] = {
    "quick": {"size": 64, "num_train": 48, "num_val": 16, "num_anomaly": 16},
    "cpu": {"size": 128, "num_train": 300, "num_val": 60, "num_anomaly": 60},
}

_SPLIT_CODES = {"train": 0, "val": 1, "anomaly": 2}


@dataclass
class Scene:
    """One rendered scene.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        label: ``[H, W]`` uint8 class index into :data:`CLASSES`; 255 under anomalies.
        mode: ``[H, W]`` uint8 mode index into ``MODES[CLASSES[label]]``; 255 where undefined.
        anomaly_mask: ``[H, W]`` uint8, 0 inlier / 1 anomaly / 255 void, or None for inlier scenes.
        anomaly_source: ``[H, W]`` uint8, the id (:data:`ANOMALY_SOURCES`) of the source of the
            anomaly object seen at each pixel where ``anomaly_mask`` is 1, else 0; None for
            inlier scenes.
        anomaly_sources: names of the sources visible in the scene, in paint order (far to near),
            each once; None for inlier scenes.
    """

    image: np.ndarray
    label: np.ndarray
    mode: np.ndarray
    anomaly_mask: np.ndarray | None = None
    anomaly_source: np.ndarray | None = None
    anomaly_sources: tuple[str, ...] | None = None


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for scene ``index`` of ``split``: independent of every other scene, so a
    scene does not change when the preset's sizes change."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODES[split], int(index)]))


# --------------------------------------------------------------------------------------------
# Noise and texture primitives. Every field is [S, S] float32 over the whole canvas: at these
# sizes (<= 128 px) computing a full field and using it under a mask is cheaper than cropping.
# --------------------------------------------------------------------------------------------


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a ``[g, g]`` grid to ``[size, size]``."""
    g = grid.shape[0]
    pos = np.linspace(0.0, g - 1.0, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), g - 2)
    frac = pos - i0
    rows = grid[i0] * (1.0 - frac)[:, None] + grid[i0 + 1] * frac[:, None]
    return rows[:, i0] * (1.0 - frac)[None, :] + rows[:, i0 + 1] * frac[None, :]


def _smooth_noise(rng: np.random.Generator, size: int, cells: tuple[int, ...] = (3, 6, 12)) -> np.ndarray:
    """Fractal value noise in roughly [-1, 1]: octaves of upsampled uniform grids, halving amplitude."""
    out = np.zeros((size, size), np.float32)
    amplitude, total = 1.0, 0.0
    for c in cells:
        grid = rng.uniform(-1.0, 1.0, size=(c + 1, c + 1)).astype(np.float32)
        out += amplitude * _upsample(grid, size)
        total += amplitude
        amplitude *= 0.5
    return out / total


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, by shifted ORs (r is 1-3 px here)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            out[yd, xd] |= mask[ys, xs]
    return out


def _polygon_mask(xx: np.ndarray, yy: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of every pixel centre against vertices ``(vx[i], vy[i])``."""
    inside = np.zeros(xx.shape, bool)
    n = len(vx)
    for i in range(n):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (yy >= min(y0, y1)) & (yy < max(y0, y1))
        x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    return inside


def _frac(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)


class _Canvas:
    """Image, label and mode map painted back to front, plus the camera geometry of the street.

    Camera: horizon at row ``vy``, vanishing point column ``vx``, focal length ``focal`` px, eye
    height E = 1 unit. A ground point at lateral offset X and depth Z (both in E) projects to
    ``y = vy + focal / Z`` and ``x = vx + X * focal / Z``; ``scale = focal / Z`` is then the
    number of pixels per E at that depth, for widths and heights alike.
    """

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng = rng
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.yy, self.xx = yy + 0.5, xx + 0.5  # pixel centres
        self.image = np.zeros((size, size, 3), np.float32)
        self.label = np.full((size, size), 255, np.uint8)
        self.mode = np.full((size, size), 255, np.uint8)
        self.vy = float(rng.uniform(0.36, 0.48) * size)
        self.vx = float(rng.uniform(0.38, 0.62) * size)
        self.focal = 0.9 * size
        below = self.yy > self.vy + 0.25
        dy = np.where(below, self.yy - self.vy, 1.0)
        self.ground = below
        self.ground_x = np.where(below, (self.xx - self.vx) / dy, 0.0)  # lateral X, in E
        self.ground_z = np.where(below, self.focal / dy, 1e4)  # depth Z, in E (1e4: sky, "far")

    def paint(self, mask: np.ndarray, cls: int, mode: int, colour) -> None:
        """Paint ``colour`` (an RGB triple or an ``[S, S, 3]`` field) under boolean ``mask``."""
        if not mask.any():
            return
        colour = np.asarray(colour, np.float32)
        self.image[mask] = colour[mask] if colour.ndim == 3 else colour
        self.label[mask] = cls
        self.mode[mask] = mode

    # Colour fields ---------------------------------------------------------------------------
    def flat(self, rgb, jitter: float = 0.0, grain: float = 0.0, blotch: float = 0.0, cells=(3, 6, 12)):
        """Base colour with per-object jitter, smooth blotches and per-pixel grain: ``[S, S, 3]``."""
        base = np.asarray(rgb, np.float32) + self.rng.normal(0.0, jitter, 3).astype(np.float32)
        field = np.broadcast_to(base, (self.size, self.size, 3)).copy()
        if blotch:
            field += blotch * _smooth_noise(self.rng, self.size, cells)[..., None]
        if grain:
            field += self.rng.normal(0.0, grain, (self.size, self.size, 1)).astype(np.float32)
        return field

    def mode_colour(self, cls: int, mode: int):
        return MODE_COLOURS[CLASSES[cls]][mode]

    # Projection helpers ----------------------------------------------------------------------
    def project(self, x: float, z: float) -> tuple[float, float, float]:
        """Ground point (X, Z) in E -> (column, row, pixels per E)."""
        scale = self.focal / z
        return self.vx + x * scale, self.vy + scale, scale

    def vertical_plane(self, x_plane: float, z0: float, z1: float, h0: float, h1: float):
        """Pixels of a vertical rectangle standing on the line X = x_plane, depths [z0, z1],
        heights [h0, h1] (in E); also returns its (depth, height) coordinates per pixel."""
        scale = (self.xx - self.vx) / x_plane  # pixels per E at the depth this column sees
        facing = scale > 1e-3  # columns on the plane's side of the vanishing point
        safe = np.where(facing, scale, 1.0)
        depth = np.where(facing, self.focal / safe, 1e4)
        height = np.where(facing, 1.0 - (self.yy - self.vy) / safe, -1e4)
        mask = facing & (depth >= z0) & (depth <= z1) & (height >= h0) & (height <= h1)
        return mask, depth, height


# --------------------------------------------------------------------------------------------
# Scene parts, painted back to front.
# --------------------------------------------------------------------------------------------


def _paint_sky(c: _Canvas) -> None:
    rng, s = c.rng, c.size
    everything = np.ones((s, s), bool)
    if rng.random() < 0.5:  # clear: deep blue at the top, paler towards the horizon
        t = np.clip(c.yy / max(c.vy, 1.0), 0.0, 1.2)[..., None]
        top = np.array(MODE_COLOURS["sky"][0], np.float32) - np.array([30, 30, 12], np.float32)
        field = top + t * np.array([55, 50, 18], np.float32)
        field = field + 4.0 * _smooth_noise(rng, s, (2, 4))[..., None]
        c.paint(everything, SKY, 0, field)
    else:  # overcast: flat grey with soft clouds
        c.paint(everything, SKY, 1, c.flat(MODE_COLOURS["sky"][1], jitter=3.0, blotch=10.0, cells=(2, 4, 8)))


def _building_field(c: _Canvas, mode: int, u: np.ndarray, v: np.ndarray, pitch_u: float, pitch_v: float):
    """Facade colour and a boolean 'glass' map from facade coordinates (u across, v up), in E."""
    cu, cv = _frac(u / pitch_u), _frac(v / pitch_v)
    glass_field = c.flat(MODE_COLOURS["building"][1], jitter=6.0, grain=3.0)
    # Reflections: glass brightens upwards, as it mirrors more sky.
    glass_field += np.clip(v, 0, 12)[..., None] * np.array([2.0, 2.6, 2.8], np.float32)
    if mode == 1:  # curtain-wall glass with dark mullions every panel
        mullion = (cu < 0.08) | (cv < 0.1)
        glass_field[mullion] *= 0.55
        return glass_field, np.ones_like(mullion)
    windows = (cu > 0.28) & (cu < 0.72) & (cv > 0.3) & (cv < 0.78) & (v > 0.4)
    if mode == 0:  # brick: per-brick jitter and slightly lighter mortar joints
        field = c.flat(MODE_COLOURS["building"][0], jitter=6.0, grain=5.0)
        brick_row = np.floor(v * 4.0)
        brick = np.floor(u * 2.0 + 0.5 * (brick_row % 2))
        jitter = _frac(np.sin(brick * 12.9898 + brick_row * 78.233) * 43758.5453) - 0.5
        field += (14.0 * jitter)[..., None]
        mortar = (_frac(v * 4.0) < 0.14) | (_frac(u * 2.0 + 0.5 * (brick_row % 2)) < 0.07)
        field[mortar] += np.array([22, 26, 26], np.float32)
    else:  # plaster: pale and smooth with blotches
        field = c.flat(MODE_COLOURS["building"][2], jitter=5.0, blotch=6.0, grain=2.0)
    field[windows] = glass_field[windows]
    return field, windows


def _paint_skyline(c: _Canvas) -> None:
    """Far buildings at the end of the street: rectangles standing on the horizon."""
    rng, s = c.rng, c.size
    x = -rng.uniform(0, 0.1) * s
    while x < s:
        width = rng.uniform(0.07, 0.22) * s
        if rng.random() < 0.2:  # a gap where the sky shows
            x += width * 0.6
            continue
        height = rng.uniform(0.04, 0.28) * s
        mode = int(rng.choice(3, p=[0.4, 0.3, 0.3]))
        mask = (c.xx >= x) & (c.xx < x + width) & (c.yy >= c.vy - height) & (c.yy < c.vy + 1)
        # Facade coordinates in E from pixel units; far buildings are ~ 40 E away.
        u, v = (c.xx - x) / (0.05 * s), (c.vy - c.yy) / (0.05 * s)
        field, windows = _building_field(c, mode, u, v, 1.6, 1.4)
        c.paint(mask & ~windows, BUILDING, mode, field)
        c.paint(mask & windows, BUILDING, 1, field)
        x += width


def _paint_far_trees(c: _Canvas) -> None:
    """Tree crowns poking above the skyline, behind the street's own facades."""
    rng, s = c.rng, c.size
    for _ in range(rng.integers(0, 4)):
        cx = rng.uniform(0, s)
        r = rng.uniform(0.03, 0.07) * s
        cy = c.vy - rng.uniform(0.5, 1.5) * r
        mask = np.zeros((s, s), bool)
        for _ in range(4):
            ox, oy = rng.normal(0, 0.5 * r, 2)
            mask |= (c.xx - cx - ox) ** 2 + (c.yy - cy - oy) ** 2 < (r * rng.uniform(0.6, 1.0)) ** 2
        mask &= c.yy < c.vy + 1
        c.paint(mask, VEGETATION, 1, c.flat(MODE_COLOURS["vegetation"][1], jitter=5.0, blotch=14.0, grain=5.0))


@dataclass
class _Street:
    road_left: float  # lateral X of the road's edges, in E
    road_right: float
    verge_left: float  # width of the grass verge beside each edge (0 = none)
    verge_right: float
    wall_left: float  # lateral X of the facades' bases
    wall_right: float


def _paint_ground(c: _Canvas) -> _Street:
    rng = c.rng
    width = rng.uniform(3.5, 6.0)
    offset = rng.uniform(0.3, 0.7) * width  # where the camera drives across the road
    left, right = -offset, width - offset
    verge_l = rng.uniform(0.5, 1.1) if rng.random() < 0.4 else 0.0
    verge_r = rng.uniform(0.5, 1.1) if rng.random() < 0.4 else 0.0
    street = _Street(
        left,
        right,
        verge_l,
        verge_r,
        wall_left=left - verge_l - rng.uniform(1.2, 2.8),
        wall_right=right + verge_r + rng.uniform(1.2, 2.8),
    )
    gx, gz = c.ground_x, c.ground_z
    ground = c.ground

    for side in (-1, 1):  # sidewalks, each side its own paving
        half = ground & ((gx < left) if side < 0 else (gx > right))
        mode = int(rng.integers(0, 2))
        base = MODE_COLOURS["sidewalk"][mode]
        field = c.flat(base, jitter=5.0, grain=5.0, blotch=5.0)
        if mode == 0:  # small red pavers in a running bond
            row = np.floor(gz / 0.35)
            joint = (_frac(gz / 0.35) < 0.12) | (_frac(gx / 0.6 + 0.5 * (row % 2)) < 0.08)
            field[joint] *= 0.82
        else:  # large sandstone slabs with fine joints
            joint = (_frac(gz / 1.2) < 0.05) | (_frac(gx / 1.2) < 0.04)
            field[joint] *= 0.9
        c.paint(half, SIDEWALK, mode, field)

    road = ground & (gx >= left) & (gx <= right)
    mode = int(rng.integers(0, 2))
    field = c.flat(MODE_COLOURS["road"][mode], jitter=4.0, grain=7.0 if mode == 0 else 4.0, blotch=6.0)
    if mode == 1:  # concrete slabs: dark expansion joints across and along the lane
        joint = (_frac(gz / 3.0) < 0.04) | (_frac((gx - left) / (0.5 * (right - left))) < 0.015)
        field[joint] *= 0.72
    c.paint(road, ROAD, mode, field)
    # Lane paint: a dashed centre line and, sometimes, solid edge lines.
    centre = 0.5 * (left + right)
    paint = road & (np.abs(gx - centre) < 0.07) & (_frac(gz / 3.0) < 0.5)
    if rng.random() < 0.5:
        paint |= road & ((gx - left < 0.12) | (right - gx < 0.12)) & (gx - left > 0.02) & (right - gx > 0.02)
    c.paint(paint, ROAD, 2, c.flat(MODE_COLOURS["road"][2], jitter=3.0, grain=4.0))

    verges = ((verge_l, (gx < left) & (gx >= left - verge_l)), (verge_r, (gx > right) & (gx <= right + verge_r)))
    for verge, inside in verges:
        if verge > 0:
            grass = c.flat(MODE_COLOURS["vegetation"][0], jitter=5.0, grain=9.0, blotch=8.0, cells=(8, 16, 24))
            c.paint(ground & inside, VEGETATION, 0, grass)
    return street


def _paint_facades(c: _Canvas, street: _Street) -> None:
    """Rows of buildings along both sides: vertical planes standing on the walls' base lines."""
    rng = c.rng
    for x_plane in (street.wall_left, street.wall_right):
        if rng.random() < 0.15:  # an open side: no buildings
            continue
        z = rng.uniform(0.5, 2.0)
        z_end = rng.uniform(25.0, 60.0)
        while z < z_end:
            length = rng.uniform(5.0, 18.0)
            if rng.random() < 0.12:  # an alley between buildings
                z += rng.uniform(2.0, 5.0)
                continue
            mode = int(rng.choice(3, p=[0.4, 0.3, 0.3]))
            height = rng.uniform(3.0, 12.0)
            mask, depth, height_map = c.vertical_plane(x_plane, z, z + length, 0.0, height)
            field, windows = _building_field(c, mode, depth, height_map, 1.8, 1.6)
            c.paint(mask & ~windows, BUILDING, mode, field)
            c.paint(mask & windows, BUILDING, 1, field)
            # A hedge in front of some buildings.
            if rng.random() < 0.3:
                inset = 0.25 if x_plane > 0 else -0.25
                hedge_end = z + length * rng.uniform(0.4, 1.0)
                hedge, _, _ = c.vertical_plane(x_plane - inset, z, hedge_end, 0.0, rng.uniform(0.5, 0.9))
                foliage = c.flat(MODE_COLOURS["vegetation"][1], jitter=5.0, blotch=16.0, grain=6.0, cells=(6, 12, 24))
                c.paint(hedge, VEGETATION, 1, foliage)
            z += length


def _tree(c: _Canvas, x: float, z: float):
    """A bushy tree or shrub standing on the ground at (x, z): a union of discs."""
    rng = c.rng
    px, py, scale = c.project(x, z)
    r = rng.uniform(0.5, 1.1) * scale
    mask = np.zeros_like(c.ground)
    height = rng.uniform(1.0, 2.5)
    for _ in range(rng.integers(4, 8)):
        cx = px + rng.normal(0, 0.4 * r)
        cy = py - rng.uniform(0.6 * r, height * scale)
        rad = r * rng.uniform(0.5, 0.9)
        mask |= (c.xx - cx) ** 2 + (c.yy - cy) ** 2 < rad**2
    mask &= c.yy <= py
    foliage = c.flat(MODE_COLOURS["vegetation"][1], jitter=5.0, blotch=18.0, grain=6.0, cells=(6, 12, 24))
    return [(mask, VEGETATION, 1, foliage)]


def _pole(c: _Canvas, x: float, z: float, toward_road: int):
    """A pole (street lamp or sign post) at (x, z); a sign on it sometimes."""
    rng = c.rng
    px, py, scale = c.project(x, z)
    height = rng.uniform(2.2, 3.6) * scale
    half_w = max(0.5, 0.05 * scale)
    mode = int(rng.integers(0, 2))
    pole = (np.abs(c.xx - px) <= half_w) & (c.yy <= py) & (c.yy >= py - height)
    parts = []
    has_sign = rng.random() < 0.6
    if not has_sign:  # a lamp arm reaching over the road
        arm_len = rng.uniform(0.5, 1.2) * scale
        arm_x0, arm_x1 = sorted((px, px + toward_road * arm_len))
        pole |= (c.xx >= arm_x0) & (c.xx <= arm_x1) & (np.abs(c.yy - (py - height)) <= half_w)
    colour = c.flat(MODE_COLOURS["pole"][mode], jitter=4.0, grain=4.0)
    parts.append((pole, POLE, mode, colour))
    if has_sign:
        sign_mode = int(rng.integers(0, 2))
        r = max(1.5, rng.uniform(0.22, 0.32) * scale)
        sx, sy = px, py - height + r
        if sign_mode == 0:  # warning sign: a diamond
            sign = np.abs(c.xx - sx) + np.abs(c.yy - sy) <= r * 1.2
        else:  # information sign: a rectangle
            sign = (np.abs(c.xx - sx) <= r) & (np.abs(c.yy - sy) <= 0.8 * r)
        parts.append((sign, SIGN, sign_mode, c.flat(MODE_COLOURS["traffic_sign"][sign_mode], jitter=5.0, grain=4.0)))
    return parts


def _person(c: _Canvas, x: float, z: float):
    """A pedestrian standing at (x, z): head, torso and two legs."""
    rng = c.rng
    px, py, scale = c.project(x, z)
    h = rng.uniform(1.05, 1.25) * scale
    w = 0.3 * h
    top_mode = 1 if rng.random() < 0.45 else 0
    legs_mode = 1 if (top_mode == 1 and rng.random() < 0.25) else 0
    head = (c.xx - px) ** 2 + (c.yy - (py - 0.91 * h)) ** 2 <= (0.085 * h + 0.35) ** 2
    torso = (np.abs(c.xx - px) <= 0.5 * w) & (c.yy >= py - 0.82 * h) & (c.yy <= py - 0.45 * h)
    gap = max(0.3, 0.06 * h)
    legs = (np.abs(c.xx - px) <= 0.38 * w) & (np.abs(c.xx - px) >= gap * 0.5) & (c.yy > py - 0.45 * h) & (c.yy <= py)
    skin_base = np.array(MODE_COLOURS["person"][2], np.float32) * rng.uniform(0.8, 1.08)
    return [
        (legs, PERSON, legs_mode, c.flat(MODE_COLOURS["person"][legs_mode], jitter=5.0, grain=4.0)),
        (torso, PERSON, top_mode, c.flat(MODE_COLOURS["person"][top_mode], jitter=6.0, grain=4.0, blotch=6.0)),
        (head, PERSON, 2, c.flat(skin_base, jitter=4.0, grain=3.0)),
    ]


def _car(c: _Canvas, x: float, z: float):
    """A car seen from behind at (x, z): body, cabin, rear window and wheels."""
    rng = c.rng
    px, py, scale = c.project(x, z)
    w = rng.uniform(1.1, 1.3) * scale
    h = rng.uniform(0.9, 1.05) * scale
    mode = int(rng.choice(3))
    dx, y = c.xx - px, c.yy
    body = (np.abs(dx) <= 0.5 * w) & (y >= py - 0.58 * h) & (y <= py - 0.1 * h)
    cabin_frac = np.clip((y - (py - h)) / (0.42 * h), 0.0, 1.0)  # 0 at roof, 1 at belt line
    cabin_half = 0.5 * w * (0.72 + 0.2 * cabin_frac)
    cabin = (np.abs(dx) <= cabin_half) & (y >= py - h) & (y < py - 0.58 * h)
    window = (np.abs(dx) <= cabin_half - 0.06 * w) & (y >= py - 0.93 * h) & (y < py - 0.64 * h)
    wheels = (np.abs(dx) >= 0.28 * w) & (np.abs(dx) <= 0.46 * w) & (y > py - 0.2 * h) & (y <= py)
    paint = c.flat(MODE_COLOURS["car"][mode], jitter=6.0, grain=4.0)
    paint += ((y - (py - h)) / max(h, 1.0) * -18.0)[..., None]  # lower panels in shade
    dark = c.flat(MODE_COLOURS["car"][3], jitter=3.0, grain=4.0)
    return [
        ((body | cabin) & ~window, CAR, mode, paint),
        (window | (wheels & ~body), CAR, 3, dark),
    ]


def _anomaly(c: _Canvas, x: float, z: float):
    """An unseen object lying on the ground at (x, z): an odd shape with an odd texture."""
    rng = c.rng
    px, py, scale = c.project(x, z)
    r = max(1.8, rng.uniform(0.2, 0.5) * scale)
    cx, cy = px, py - rng.uniform(0.5, 1.0) * r
    kind = rng.choice(["polygon", "ellipse", "blob"])
    if kind == "polygon":
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.45, 1.0, n)
        shape = _polygon_mask(c.xx, c.yy, cx + radii * np.cos(angles), cy + radii * np.sin(angles))
    elif kind == "ellipse":
        a, b, theta = r, r * rng.uniform(0.4, 0.9), rng.uniform(0, np.pi)
        u = (c.xx - cx) * np.cos(theta) + (c.yy - cy) * np.sin(theta)
        v = -(c.xx - cx) * np.sin(theta) + (c.yy - cy) * np.cos(theta)
        shape = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    else:
        shape = np.zeros_like(c.ground)
        for _ in range(rng.integers(3, 6)):
            ox, oy = rng.normal(0, 0.45 * r, 2)
            shape |= (c.xx - cx - ox) ** 2 + (c.yy - cy - oy) ** 2 <= (r * rng.uniform(0.4, 0.7)) ** 2
    # Texture from two distinct unseen colours.
    i, j = rng.choice(len(ANOMALY_COLOURS), 2, replace=False)
    col_a, col_b = np.array(ANOMALY_COLOURS[i], np.float32), np.array(ANOMALY_COLOURS[j], np.float32)
    period = max(2.0, r * rng.uniform(0.35, 0.7))
    theta = rng.uniform(0, np.pi)
    u = ((c.xx - cx) * np.cos(theta) + (c.yy - cy) * np.sin(theta)) / period
    v = (-(c.xx - cx) * np.sin(theta) + (c.yy - cy) * np.cos(theta)) / period
    texture = rng.choice(["checker", "stripes", "dots", "rings"])
    if texture == "checker":
        pick_a = (np.floor(u) + np.floor(v)) % 2 == 0
    elif texture == "stripes":
        pick_a = _frac(u) < 0.5
    elif texture == "dots":
        pick_a = (_frac(u) - 0.5) ** 2 + (_frac(v) - 0.5) ** 2 < 0.09
    else:
        pick_a = _frac(np.hypot(c.xx - cx, c.yy - cy) / period) < 0.5
    field = np.where(pick_a[..., None], col_a, col_b)
    field = field + c.rng.normal(0.0, 3.0, field.shape).astype(np.float32)
    return [(shape, None, PROCEDURAL_SOURCE_ID, (field, None))]


# --------------------------------------------------------------------------------------------
# Photographic anomaly objects: cut out of scikit-image's bundled photographs once per process.
# --------------------------------------------------------------------------------------------

_SUPERSAMPLE = 4  # a cut-out is resampled at 4x4 sub-pixels per pixel, then box-averaged
_MIN_ALPHA = 1.0 / 64.0  # coverage below this is resampling ripple, not object


def photo_path(file: str) -> Path:
    """The photograph ``file`` bundled in the installed scikit-image's ``skimage/data/`` folder.

    Found from the package's location without importing it; nothing is ever downloaded (the
    photos of :data:`PHOTO_OBJECTS` are all in the wheel).

    Raises:
        ModuleNotFoundError: scikit-image is not installed.
        FileNotFoundError: the file is not in the installed package.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the anomaly split's photographic objects need scikit-image "
            "(pip install scikit-image): its wheel ships the photographs"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed scikit-image (its wheel ships it)")
    return path


@functools.cache
def _cutout_image(photo: int) -> Image.Image:
    """``PHOTO_OBJECTS[photo]`` cropped to its outline's bounding box: RGBA, alpha 255 inside the
    outline and 0 outside (drawn at the photo's full resolution, so edges stay sharp until the
    paste resamples them). Cached: each photo is read and cut once per process."""
    spec = PHOTO_OBJECTS[photo]
    with Image.open(photo_path(spec.file)) as img:
        rgb = img.convert("RGB")
    w, h = rgb.size
    xs = [x * w for x, _ in spec.outline]
    ys = [y * h for _, y in spec.outline]
    box = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(w, math.ceil(max(xs))),
        min(h, math.ceil(max(ys))),
    )
    cut = rgb.crop(box)
    alpha = Image.new("L", cut.size, 0)
    ImageDraw.Draw(alpha).polygon([(x - box[0], y - box[1]) for x, y in zip(xs, ys)], fill=255)
    cut.putalpha(alpha)
    return cut


def photo_cutout(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out of the photographic object ``name`` (see :data:`PHOTO_OBJECTS`), at the photo's
    resolution: ``(rgb [h, w, 3] uint8, inside [h, w] bool)``, cropped to the outline's bounding box."""
    index = [p.name for p in PHOTO_OBJECTS].index(name)
    rgba = np.asarray(_cutout_image(index))
    return rgba[..., :3].copy(), rgba[..., 3] > 127


def _photo_anomaly(c: _Canvas, x: float, z: float, photo: int):
    """``PHOTO_OBJECTS[photo]`` standing on the ground at (x, z), sized for its depth.

    Returns one anomaly part whose colour is ``(field, alpha)``: ``alpha`` [S, S] is the
    cut-out's coverage of each pixel (anti-aliased edge), the part's mask is ``alpha >= 0.5``.
    """
    rng, s, k = c.rng, c.size, _SUPERSAMPLE
    spec = PHOTO_OBJECTS[photo]
    cut = _cutout_image(photo)
    px, py, scale = c.project(x, z)
    h = float(rng.uniform(*spec.height)) * scale
    w = h * cut.width / cut.height
    if rng.random() < 0.5:  # seen from the other side
        cut = cut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    left, top = px - 0.5 * w, py - h  # the cut-out's bottom edge rests on the ground point
    # Resample at k x k sub-pixels (PIL premultiplies alpha when resizing RGBA), place with
    # 1/k px precision, then average each k x k block: alpha becomes the pixel's coverage.
    x0, y0 = math.floor(left), math.floor(top)
    nx, ny = math.ceil(left + w) - x0 + 1, math.ceil(py) - y0 + 1
    sw, sh = max(1, round(k * w)), max(1, round(k * h))
    ox, oy = round(k * (left - x0)), round(k * (top - y0))
    rgba = np.asarray(cut.resize((sw, sh), Image.Resampling.LANCZOS), np.float32)
    sub_alpha = np.zeros((ny * k, nx * k), np.float32)
    sub_colour = np.zeros((ny * k, nx * k, 3), np.float32)
    sub_alpha[oy : oy + sh, ox : ox + sw] = rgba[..., 3] / 255.0
    sub_colour[oy : oy + sh, ox : ox + sw] = rgba[..., :3] * sub_alpha[oy : oy + sh, ox : ox + sw, None]
    cover = sub_alpha.reshape(ny, k, nx, k).mean(axis=(1, 3))
    colour = sub_colour.reshape(ny, k, nx, k, 3).mean(axis=(1, 3)) / np.maximum(cover, 1e-6)[..., None]
    alpha = np.zeros((s, s), np.float32)
    field = np.zeros((s, s, 3), np.float32)
    r0, r1, c0, c1 = max(y0, 0), min(y0 + ny, s), max(x0, 0), min(x0 + nx, s)
    if r0 < r1 and c0 < c1:
        alpha[r0:r1, c0:c1] = cover[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
        field[r0:r1, c0:c1] = colour[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    alpha[alpha < _MIN_ALPHA] = 0.0
    return [(alpha >= 0.5, None, PROCEDURAL_SOURCE_ID + 1 + photo, (field, np.minimum(alpha, 1.0)))]


@dataclass
class _AnomalyPaint:
    """What :func:`_paint_objects` leaves of the anomalies: the visible anomaly pixels, their
    sources, and the anti-aliasing halo of photo cut-outs (pixels outside an object that a cut-out's
    edge tinted) with the colour each had before, to undo where the halo misses the void band."""

    visible: np.ndarray  # [S, S] bool
    source: np.ndarray  # [S, S] uint8 source id, 0 off the visible anomalies
    order: list[int]  # source ids in paint order (far to near), one per object
    halo: np.ndarray  # [S, S] bool
    halo_before: np.ndarray  # [S, S, 3] float32
    photo: int = 0  # the source id of the scene's photographic object, 0 for none


def _photo_plan(rng: np.random.Generator, n_anomalies: int, index: int | None) -> tuple[int, int]:
    """Which of a scene's anomaly objects is a photo, and which photo: ``(slot, photo)``, slot -1
    for none.

    Three scenes in four have one photo among their one or two objects (half of all objects).
    With the scene's ``index`` in its split, every fourth scene (``i % 4 == 3``) has none and the
    others take the photos in turn (scene ``i`` is photo scene number ``i - i // 4``), so any 7
    consecutive scenes plan every photo; without it, the photo is drawn from ``rng``.
    """
    has_photo = rng.random() < 0.75
    photo = int(rng.integers(len(PHOTO_OBJECTS)))
    slot = int(rng.integers(n_anomalies))
    if index is not None:
        has_photo = index % 4 != 3
        photo = (index - index // 4) % len(PHOTO_OBJECTS)
    return (slot if has_photo else -1), photo


def _paint_objects(c: _Canvas, street: _Street, anomaly: bool, index: int | None = None) -> _AnomalyPaint:
    """Trees, poles, people, cars (and anomalies), placed on the ground and painted far to near."""
    rng, s = c.rng, c.size
    z_near = c.focal / (s - c.vy + 0.15 * s)  # a little below the bottom edge: cropped objects
    z_far = c.focal / max(0.04 * s, 1.0)

    def depth(nearest: float = 1.0) -> float:
        # Log-uniform in depth: a street shows a few near objects and many far ones.
        # ``nearest`` < 1 keeps big objects (cars) from filling the whole frame too often.
        z_min = z_near / nearest
        return float(np.exp(rng.uniform(np.log(z_min), np.log(z_far))))

    def sidewalk_x(side: int, margin: float = 0.3) -> float:
        if side < 0:
            return float(rng.uniform(street.wall_left + margin, street.road_left - street.verge_left - margin))
        return float(rng.uniform(street.road_right + street.verge_right + margin, street.wall_right - margin))

    objects = []  # (depth, parts)
    for _ in range(rng.integers(0, 4)):
        side = int(rng.choice([-1, 1]))
        z = depth()
        objects.append((z, _tree(c, sidewalk_x(side, 0.5), z)))
    for _ in range(rng.integers(1, 4)):
        side = int(rng.choice([-1, 1]))
        x = street.road_left - street.verge_left - 0.3 if side < 0 else street.road_right + street.verge_right + 0.3
        z = depth()
        objects.append((z, _pole(c, x, z, toward_road=-side)))
    for _ in range(rng.integers(1, 5)):
        z = depth()
        if rng.random() < 0.2:  # crossing the road
            x = float(rng.uniform(street.road_left, street.road_right))
        else:
            x = sidewalk_x(int(rng.choice([-1, 1])))
        objects.append((z, _person(c, x, z)))
    for _ in range(rng.integers(0, 4)):
        z = depth(nearest=0.6)
        lane_w = street.road_right - street.road_left
        x = float(rng.uniform(street.road_left + 0.35 * 1.2, street.road_right - 0.35 * 1.2)) if lane_w > 1.0 else 0.0
        objects.append((z, _car(c, x, z)))

    n_anomalies = int(rng.integers(1, 3)) if anomaly else 0
    photo_slot, photo = _photo_plan(rng, n_anomalies, index) if anomaly else (-1, 0)
    for k in range(n_anomalies):
        # Near enough to be seen (photos a little nearer: their detail needs pixels); on the road
        # four times in five.
        nearest = 0.4 if k == photo_slot else 0.25
        z = float(c.focal / rng.uniform(nearest * (s - c.vy), 0.95 * (s - c.vy)))
        for _try in range(10):  # redraw the place of one that would fall out of the frame
            if rng.random() < 0.8:
                x = float(rng.uniform(street.road_left + 0.3, street.road_right - 0.3))
            else:
                x = sidewalk_x(int(rng.choice([-1, 1])))
            if 0.05 * s < c.project(x, z)[0] < 0.95 * s:
                break
        objects.append((z, _photo_anomaly(c, x, z, photo) if k == photo_slot else _anomaly(c, x, z)))

    paint = _AnomalyPaint(
        np.zeros((s, s), bool),
        np.zeros((s, s), np.uint8),
        [],
        np.zeros((s, s), bool),
        np.zeros((s, s, 3), np.float32),
        PROCEDURAL_SOURCE_ID + 1 + photo if photo_slot >= 0 else 0,
    )
    for _, parts in sorted(objects, key=lambda item: -item[0]):
        for mask, cls, mode, colour in parts:
            if cls is None:  # an anomaly: no class, no mode; ``mode`` holds its source id
                field, alpha = colour
                if alpha is None:
                    c.image[mask] = field[mask]
                else:  # a cut-out: blend its anti-aliased edge with what lies behind
                    touched = alpha > 0
                    halo = touched & ~mask
                    first = halo & ~paint.halo
                    paint.halo_before[first] = c.image[first]
                    a = alpha[touched][:, None]
                    c.image[touched] = a * field[touched] + (1.0 - a) * c.image[touched]
                    paint.halo |= halo
                c.label[mask] = 255
                c.mode[mask] = 255
                paint.visible |= mask
                paint.source[mask] = mode
                paint.order.append(mode)
            else:
                c.paint(mask, cls, mode, colour)
                paint.visible &= ~mask  # an inlier in front hides the anomaly
            paint.halo &= ~mask  # and anything painted over a halo pixel replaces it
    paint.source[~paint.visible] = 0
    return paint


def _light(c: _Canvas) -> np.ndarray:
    """Global exposure, colour tint, soft cloud shadows and sensor noise -> ``[S, S, 3]`` uint8."""
    rng, s = c.rng, c.size
    gain = rng.uniform(0.9, 1.1)
    tint = rng.uniform(0.96, 1.04, 3).astype(np.float32)
    shadows = 1.0 + 0.07 * _smooth_noise(rng, s, (2, 4))
    image = c.image * (gain * shadows)[..., None] * tint
    image += rng.normal(0.0, 2.5, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, size: int, anomaly: bool = False, index: int | None = None) -> Scene:
    """Render one street scene.

    Args:
        rng: the only source of randomness; the same generator state gives the same scene.
        size: side ``S`` of the square image in pixels, at least 16 (the presets use 64 and 128;
            below ~48 px thin classes such as poles and signs become rare).
        anomaly: paste one or two anomaly objects (procedural or photographic) and return an
            anomaly mask and a source map.
        index: the scene's position in its anomaly split, or None. With it, the photographic
            objects of successive scenes take the photos in turn (as :func:`make_dataset` does, so
            every photo appears several times in a split); without it, each is drawn from ``rng``.

    Returns:
        :class:`Scene` with ``image [S, S, 3]`` uint8, ``label [S, S]`` uint8 (255 under
        anomalies), ``mode [S, S]`` uint8 (255 where undefined) and, when ``anomaly``,
        ``anomaly_mask [S, S]`` uint8 with 0 inlier, 1 anomaly, 255 void (a band of about
        ``S / 64`` px just outside each anomaly), ``anomaly_source [S, S]`` uint8 (the source id
        of each anomaly pixel, :data:`ANOMALY_SOURCES`; 0 elsewhere) and ``anomaly_sources``
        (the visible sources' names, in paint order).
    """
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    size = int(size)
    for _attempt in range(20):
        c = _Canvas(rng, size)
        _paint_sky(c)
        _paint_far_trees(c)
        _paint_skyline(c)
        street = _paint_ground(c)
        _paint_facades(c, street)
        paint = _paint_objects(c, street, anomaly, index)
        # An anomaly scene must show a fair amount of anomaly, and its photo if it has one (a few
        # pixels of it at least); redraw the rare ones that do not.
        if not anomaly or (
            paint.visible.sum() >= max(6, 0.004 * size * size)
            and (not paint.photo or (paint.source == paint.photo).sum() >= 4)
        ):
            break
    anomaly_mask = source = names = None
    if anomaly:
        anomalous = paint.visible
        band = _dilate(anomalous, max(1, round(size / 64))) & ~anomalous
        # A cut-out's soft edge may tint pixels outside it only inside the void band: elsewhere
        # (beside a sliver too thin to count as object, or next to an occluded part) undo it.
        undo = paint.halo & ~band
        c.image[undo] = paint.halo_before[undo]
        anomaly_mask = np.zeros((size, size), np.uint8)
        anomaly_mask[band] = 255
        anomaly_mask[anomalous] = 1
        source = paint.source
        present = set(np.unique(source[anomalous]).tolist())
        names = tuple(_SOURCE_NAMES[i] for i in dict.fromkeys(paint.order) if i in present)
    image = _light(c)
    return Scene(
        image=image, label=c.label, mode=c.mode, anomaly_mask=anomaly_mask, anomaly_source=source, anomaly_sources=names
    )


# --------------------------------------------------------------------------------------------
# Writing the data set.
# --------------------------------------------------------------------------------------------


def _resolve_preset(preset) -> tuple[str, dict]:
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a dict")
        return preset, dict(PRESETS[preset])
    if isinstance(preset, Mapping):
        missing = {"size", "num_train", "num_val", "num_anomaly"} - set(preset)
        if missing:
            raise ValueError(f"a preset dict needs the keys {sorted(missing)}")
        return "custom", dict(preset)
    raise TypeError(f"preset must be a name or a dict, got {type(preset).__name__}")


def _save_png(array: np.ndarray, path: Path) -> None:
    # Plain PNG without time stamps: the same array always gives the same bytes.
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _write_scene(task: tuple) -> tuple[str, list[str] | None]:
    """Render and write one scene; returns its file name and, for the anomaly split, the sources it shows."""
    root, split, index, size, seed = task
    root = Path(root)
    stem = f"{split}_{index:05d}.png"
    if split == "anomaly":
        scene = render_scene(scene_rng(seed, split, index), size, anomaly=True, index=index)
        _save_png(scene.image, root / "anomaly/images" / stem)
        _save_png(scene.anomaly_mask, root / "anomaly/masks" / stem)
        _save_png(scene.anomaly_source, root / "anomaly/source_masks" / stem)
        return stem, list(scene.anomaly_sources)
    scene = render_scene(scene_rng(seed, split, index), size)
    _save_png(scene.image, root / "images" / split / stem)
    _save_png(scene.label, root / "annotations" / split / stem)
    return stem, None


def _write_dataset(root: Path, name: str, cfg: dict, seed: int, progress: bool, workers: int = 1) -> None:
    from tqdm.auto import tqdm

    size = int(cfg["size"])
    jobs = [("train", i) for i in range(int(cfg["num_train"]))]
    jobs += [("val", i) for i in range(int(cfg["num_val"]))]
    jobs += [("anomaly", i) for i in range(int(cfg["num_anomaly"]))]
    for sub in ("images/train", "images/val", "annotations/train", "annotations/val"):
        (root / sub).mkdir(parents=True)
    if cfg["num_anomaly"]:
        for sub in ("images", "masks", "source_masks"):
            (root / "anomaly" / sub).mkdir(parents=True)
    with open(root / "classes.json", "w") as f:
        json.dump({"classes": list(CLASSES), "palette": PALETTE}, f, indent=2)
        f.write("\n")
    meta = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "preset": name,
        "seed": int(seed),
        **{k: cfg[k] for k in sorted(cfg)},
        "modes": {k: list(v) for k, v in MODES.items()},
        "anomaly_mask_values": {"0": "inlier", "1": "anomaly", "255": "void (band around anomalies)"},
    }
    if cfg["num_anomaly"]:  # the split names each anomaly's source: anomaly/sources.json, source_masks/
        meta["anomaly_sources"] = [dict(source) for source in ANOMALY_SOURCES]
    with open(root / "meta.json", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    visible = {}
    tasks = [(str(root), split, index, size, seed) for split, index in jobs]
    workers = min(workers, len(tasks))
    with tqdm(total=len(tasks), desc=f"scenes[{name}]", disable=not progress, unit="img") as bar:
        if workers > 1:
            import multiprocessing

            # Every scene depends only on (seed, split, index): written in any order by any process, the
            # files are the same bytes. Spawned, not forked: a notebook kernel's threads must not fork.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for stem, sources in pool.imap_unordered(_write_scene, tasks, chunksize=4):
                    if sources is not None:
                        visible[stem] = sources
                    bar.update(1)
        else:
            for task in tasks:
                stem, sources = _write_scene(task)
                if sources is not None:
                    visible[stem] = sources
                bar.update(1)
    visible = dict(sorted(visible.items()))
    if cfg["num_anomaly"]:
        with open(root / "anomaly/sources.json", "w") as f:
            json.dump({"sources": [dict(source) for source in ANOMALY_SOURCES], "images": visible}, f, indent=2)
            f.write("\n")


def make_dataset(
    out_dir, preset="quick", seed: int = 0, overwrite: bool = False, progress: bool = True, workers: int | None = None
) -> Path:
    """Generate the embedded data set into ``out_dir`` and return its path.

    Args:
        out_dir: target directory; created, or replaced when ``overwrite``.
        preset: a key of :data:`PRESETS` or a dict with ``size``, ``num_train``, ``num_val``,
            ``num_anomaly``.
        seed: non-negative integer; the same seed gives byte-identical files.
        overwrite: replace a non-empty ``out_dir``; without it a non-empty one is an error.
        progress: show a tqdm progress bar.
        workers: processes that render scenes (default: the usable cores, at most 4, one for tiny
            sets); any number gives the same bytes.

    The set is written into a temporary sibling directory and renamed into place at the end,
    so an interrupted run leaves no half-written data set (and, with ``overwrite``, the old set
    stays until the new one is complete).
    """
    name, cfg = _resolve_preset(preset)
    scene_rng(seed, "train", 0)  # validates the seed before touching the disk
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        if workers is None:
            total = int(cfg["num_train"]) + int(cfg["num_val"]) + int(cfg["num_anomaly"])
            workers = 1 if total < 100 else min(4, usable_cpus())
        _write_dataset(tmp, name, cfg, seed, progress, workers=max(1, int(workers)))
    except BaseException:  # KeyboardInterrupt too: never leave a half-written set behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():  # an empty directory, or one being overwritten: move it aside first
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) / "set"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)
    return out


def _main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Generate the embedded procedural street-scene data set.")
    parser.add_argument("out_dir")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    path = make_dataset(args.out_dir, args.preset, seed=args.seed, overwrite=args.overwrite)
    print(path)


if __name__ == "__main__":
    _main()
