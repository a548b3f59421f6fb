"""Shared viz helpers: component shades, model colours, PNG data URIs, seed statistics, figure_box."""

import itertools

import numpy as np
import pytest

from gmmseg_lab.data import CLASSES, PALETTE
from gmmseg_lab.viz._widgets import figure_box
from gmmseg_lab.viz.common import decode_png_data_uri, format_percent, png_data_uri
from gmmseg_lab.viz.style import MODEL_COLOURS, component_palette, model_colours, rgba

IGNORE = (0, 0, 0)  # colour of ignore / void pixels in the label maps (colourise's default)


def cielab(rgb):
    """``[..., 3]`` sRGB 0-255 -> CIELab (D65), written out independently of the palette code."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def delta_e(a, b):
    return np.linalg.norm(cielab(a) - cielab(b), axis=-1)


@pytest.mark.parametrize("num_components", [2, 3, 5, 10])
def test_component_shades_of_the_real_palette_keep_classes_apart(num_components):
    shades = component_palette(PALETTE, num_components)  # [C, M, 3]
    assert shades.shape == (len(CLASSES), num_components, 3) and shades.dtype == np.uint8
    closest = min(
        (delta_e(shades[a][:, None], shades[b][None]).min(), CLASSES[a], CLASSES[b])
        for a, b in itertools.combinations(range(len(CLASSES)), 2)
    )
    # The old HLS shades put building's lightest 7 grey levels below pole's darkest (ΔE 2.8).
    assert closest[0] > 6.0, closest
    # No shade near the ignore colour (the old building component 0 was #202020, ΔE 12 from black).
    assert delta_e(shades, IGNORE).min() > 20.0
    assert delta_e(shades, (255, 255, 255)).min() > 20.0
    # Darkest first, evenly and visibly stepped within a class.
    lightness = cielab(shades)[..., 0]
    assert (np.diff(lightness, axis=1) > 0).all()
    assert np.linalg.norm(np.diff(cielab(shades), axis=1), axis=-1).min() > 15.0 / (num_components - 1)


def test_component_shades_stay_in_the_class_hue_and_single_component_is_the_class_colour():
    np.testing.assert_array_equal(component_palette(PALETTE, 1)[:, 0], np.asarray(PALETTE, np.uint8))
    shades = component_palette(PALETTE, 5)
    lab, own = cielab(shades), cielab(np.asarray(PALETTE))
    car = CLASSES.index("car")
    # Every shade of car is still blue: b* strongly negative, a* well below |b*|.
    assert (lab[car, :, 2] < -40).all() and (np.abs(lab[car, :, 1]) < np.abs(lab[car, :, 2])).all()
    grey = [CLASSES.index("building"), CLASSES.index("pole")]
    assert (shades[grey].max(-1) == shades[grey].min(-1)).all()  # greys stay grey
    # a shade of each class is within reach of the class colour itself
    assert np.linalg.norm(lab - own[:, None], axis=-1).min(1).max() < 15
    with pytest.raises(ValueError, match="palette"):
        component_palette(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match="num_components"):
        component_palette(PALETTE, 0)


def test_model_colours_and_rgba():
    colours = model_colours([f"m{i}" for i in range(10)])
    assert list(colours.values())[:8] == list(MODEL_COLOURS) and colours["m8"] == MODEL_COLOURS[0]
    assert rgba("#0072B2", 0.18) == "rgba(0, 114, 178, 0.18)"
    with pytest.raises(ValueError, match="rrggbb"):
        rgba("blue", 0.5)


def test_png_data_uri_round_trip_rgb_and_rgba():
    rng = np.random.default_rng(0)
    for channels in (3, 4):
        image = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
        np.testing.assert_array_equal(decode_png_data_uri(png_data_uri(image)), image)
    with pytest.raises(ValueError, match="uint8"):
        png_data_uri(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="data:image/png"):
        decode_png_data_uri("data:image/jpeg;base64,AAAA")


def test_format_percent_is_mean_and_sample_std_in_percent():
    assert format_percent([0.5, 0.7]) == f"60.00 ± {100 * np.std([0.5, 0.7], ddof=1):.2f}"
    assert format_percent([0.5, None, float("nan"), 0.7], digits=1) == f"60.0 ± {100 * np.std([0.5, 0.7], ddof=1):.1f}"
    assert format_percent([0.123]) == "12.30" and format_percent([None]) == "n/a"


def test_figure_box_redraws_only_on_the_named_controls():
    import ipywidgets as widgets
    import plotly.graph_objects as go

    controls = {"a": widgets.IntSlider(value=0), "b": widgets.IntSlider(value=0)}
    calls = []

    def render():
        calls.append((controls["a"].value, controls["b"].value))
        return go.Figure()

    box = figure_box(controls, render, redraw_on=("a",))
    controls["b"].value = 1
    controls["a"].value = 1
    assert calls == [(0, 0), (1, 1)]
    with box.held():
        controls["a"].value = 2
        controls["b"].value = 2
    assert calls[-1] == (2, 2) and len(calls) == 3
    with pytest.raises(ValueError, match="redraw_on"):
        figure_box(controls, render, redraw_on=("c",))
