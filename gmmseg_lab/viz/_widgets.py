"""The one ipywidgets pattern every live view uses: controls above outputs redrawn from figure functions.

Outputs are written as plotly mime bundles (``Output.outputs = (...)``) rather than through
``display`` inside ``with output``: the same code then works in a kernel, in a saved notebook's widget
state and in a plain process (tests), where ``display`` would print a repr; and no copy of plotly.js
is sent per redraw.
"""

from __future__ import annotations

import contextlib
import json
from typing import Callable, Mapping, Sequence

import plotly.graph_objects as go


def mime_bundle(figure: go.Figure) -> dict:
    """The plotly mime bundle of a figure (what JupyterLab draws), from ``figure.to_json()``.

    Built directly rather than through ``plotly.io.renderers``, whose import pulls in nbformat and
    jsonschema (seconds) for the same JSON.
    """
    return {
        "application/vnd.plotly.v1+json": json.loads(figure.to_json()),
        "text/plain": f"<Figure: {figure.layout.title.text or 'plotly figure'}>",
    }


def show_figure(output, figure: go.Figure) -> None:
    """Make ``output`` (an ``ipywidgets.Output``) show ``figure``."""
    output.outputs = ({"output_type": "display_data", "data": mime_bundle(figure), "metadata": {}},)


def figure_box(
    controls: Mapping[str, object],
    render: Callable[[], go.Figure],
    extra_outputs: Sequence[tuple[str, Callable[[], go.Figure]]] = (),
    redraw_on: Sequence[str] | None = None,
):
    """An ``ipywidgets.VBox`` of ``controls`` above an ``Output`` showing ``render()``, redrawn on change.

    Args:
        controls: name -> ipywidgets control; a change of a control's ``value`` redraws.
        render: returns the main figure (stored as ``box.figure``).
        extra_outputs: ``(attribute, render_fn)`` pairs: further figures redrawn on the same changes,
            shown below the main one and stored as ``box.<attribute>``.
        redraw_on: names of the controls whose changes redraw (default: all). A control left out
            has a handler of its own that redraws once, e.g. by changing other controls inside
            ``box.held()``.

    The box has ``controls``, ``figure``, ``output`` (the main ``Output``), ``redraw()`` and
    ``held()``: a context manager deferring redraws while several controls change, then redrawing once.
    """
    import ipywidgets as widgets

    output = widgets.Output()
    outputs = [(output, "figure", render)] + [(widgets.Output(), attr, fn) for attr, fn in extra_outputs]
    row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
    box = widgets.VBox([row] + [out for out, _, _ in outputs])
    box.controls = dict(controls)
    box.output = output
    hold = {"depth": 0}

    def redraw(_change=None) -> None:
        if hold["depth"]:
            return
        for out, attr, fn in outputs:
            fig = fn()
            setattr(box, attr, fig)
            show_figure(out, fig)

    @contextlib.contextmanager
    def held():
        hold["depth"] += 1
        try:
            yield
        finally:
            hold["depth"] -= 1
        redraw()

    box.redraw = redraw
    box.held = held
    names = list(controls) if redraw_on is None else list(redraw_on)
    unknown = [name for name in names if name not in controls]
    if unknown:
        raise ValueError(f"redraw_on names controls that do not exist: {unknown} (controls: {list(controls)})")
    for name in names:
        controls[name].observe(redraw, names="value")
    redraw()
    return box
