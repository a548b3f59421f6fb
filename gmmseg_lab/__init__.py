"""gmmseg-lab: a research lab and visualization suite for GMMSeg (NeurIPS 2022).

GMMSeg replaces a segmentation network's softmax classifier with a generative one: one Gaussian
mixture per class over pixel embeddings, fitted online by (Sinkhorn) EM.

Sub-packages, in the direction data flows:

- :mod:`gmmseg_lab.gmm`: the GMM mathematics, pure PyTorch (no mmseg import).
- :mod:`gmmseg_lab.data`: the embedded procedural data set and on-disk layout readers.
- :mod:`gmmseg_lab.models`: mmsegmentation integration (GMMSeg decode heads, configs).
- :mod:`gmmseg_lab.eval`: streaming metrics and evaluation.
- :mod:`gmmseg_lab.viz`: figures and widgets.
"""

__version__ = "0.1.0"
