"""Figures (matplotlib / plotly, pure functions of arrays) and ipywidgets views for the lab's notebooks.

Every figure function takes numpy arrays or the dicts the evaluator writes, never a model, and returns
a figure; every ``*_widget`` builder returns an ipywidgets box whose callbacks redraw from the same
functions. Static HTML reports use the plotly figures' own sliders and menus (no kernel needed).
"""

from .style import blend, class_colours, colourise, component_palette, setup_plotly

__all__ = ["blend", "class_colours", "colourise", "component_palette", "setup_plotly"]
