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
- :mod:`.explore`: a model's per-pixel outputs on your own photographs, no labels needed
  (:func:`predict_images`, :class:`ImageScorer`), openTSNE maps new pixels are placed on, and the
  ``gmmseg-lab explore`` report.
- :mod:`.anomaly`: a run's anomaly curves on the whole anomaly split.
- :mod:`.toy`: notebook 00's classifiers on 2-D toy data.
- :mod:`.notebook`: the folders and data set every notebook starts from (:func:`resolve_dirs`).
"""

from .ablation import VARIANTS, Variant, ablation_records, memory_bytes, train_ablation
from .anomaly import anomaly_curves, anomaly_image_order
from .compare import run_demo, train_twins, twin_records, twin_summary
from .explore import ImageScorer, fit_embedding_map, list_images, place_on_map, predict_images, reference_predictions
from .notebook import prepare_data, resolve_dirs
from .predictions import Predictions, collect_predictions, learning_curves, score_norm_parameters
from .runs import ensure_dataset, ensure_run, run_dir_of, run_many, run_name, run_one

__all__ = [
    "VARIANTS",
    "ImageScorer",
    "Predictions",
    "Variant",
    "ablation_records",
    "anomaly_curves",
    "anomaly_image_order",
    "collect_predictions",
    "ensure_dataset",
    "ensure_run",
    "fit_embedding_map",
    "learning_curves",
    "list_images",
    "memory_bytes",
    "place_on_map",
    "predict_images",
    "prepare_data",
    "reference_predictions",
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
