"""The experiments layer: trained runs and what the notebooks do with them.

Above training and evaluation, below the figures' consumers (notebooks, reports, the command line):

- :mod:`.runs`: the run store. Every trained model lives in a run folder, trained once and reused
  while its config and training code are unchanged (:func:`run_one`, :func:`run_many`).
- :mod:`.compare`: GMMSeg against its softmax twin for every architecture and seed
  (:func:`train_twins`), aggregated over seeds, as tables; ``gmmseg-lab demo``.
- :mod:`.ablation`: the recipe's ablation, one :class:`~.ablation.Variant` per row
  (:data:`~.ablation.VARIANTS`; a new row is one entry there).
- :mod:`.predictions`: a run's per-pixel outputs on a few images, cached (:func:`collect_predictions`),
  its learning curves and learned LayerNorm.
- :mod:`.anomaly`: a run's anomaly curves on the whole anomaly split.
- :mod:`.toy`: notebook 00's classifiers on 2-D toy data.
- :mod:`.notebook`: the folders and data set every notebook starts from (:func:`resolve_dirs`).
"""

from .ablation import VARIANTS, Variant, ablation_records, memory_bytes, train_ablation
from .anomaly import anomaly_curves, anomaly_image_order
from .compare import run_demo, train_twins, twin_records, twin_summary
from .notebook import prepare_data, resolve_dirs
from .predictions import Predictions, collect_predictions, learning_curves, score_norm_parameters
from .runs import ensure_dataset, ensure_run, run_dir_of, run_many, run_name, run_one

__all__ = [
    "VARIANTS",
    "Predictions",
    "Variant",
    "ablation_records",
    "anomaly_curves",
    "anomaly_image_order",
    "collect_predictions",
    "ensure_dataset",
    "ensure_run",
    "learning_curves",
    "memory_bytes",
    "prepare_data",
    "resolve_dirs",
    "run_demo",
    "run_dir_of",
    "run_many",
    "run_name",
    "run_one",
    "score_norm_parameters",
    "train_ablation",
    "train_twins",
    "twin_records",
    "twin_summary",
]
