"""Figures (plotly, pure functions of arrays) and ipywidgets views for the lab's notebooks.

Every figure function takes numpy arrays, :class:`gmmseg_lab.experiments.predictions.Predictions` or the dicts the
evaluator writes, and returns a figure whose interactivity in a static HTML report comes from plotly's
own sliders and menus (no kernel); every ``*_widget`` builder returns an ipywidgets box (``.controls``,
``.figure``) whose callbacks redraw from the same functions, live in JupyterLab.

Modules: :mod:`.toy` (notebook 00), :mod:`.training` (01), :mod:`.components` (02), :mod:`.embedding`
(03), :mod:`.calibration` (04), :mod:`.ablation` (05), :mod:`.anomaly` (06), :mod:`.explore` (your own
pictures, no labels: segmentation, every anomaly score, the upload control); shared by them:
:mod:`.style` (colours, image axes), :mod:`.common` (PNG data URIs, mean ± std over seeds) and
:mod:`._widgets` (the ipywidgets plumbing).
"""

from .style import blend, class_colours, colourise, component_palette, model_colours, setup_plotly

__all__ = ["blend", "class_colours", "colourise", "component_palette", "model_colours", "setup_plotly"]
