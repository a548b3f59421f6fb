"""The embedded procedural data set and the on-disk layout (numpy + PIL; no torch, no mmseg).

Public API:

- :mod:`~gmmseg_lab.data.scenes`: :data:`CLASSES`, :data:`PALETTE`, :data:`MODES`,
  :data:`PRESETS`, :class:`Scene`, :func:`render_scene` ``(rng, size, anomaly=False) -> Scene``,
  :func:`make_dataset` ``(out_dir, preset="quick", seed=0, overwrite=False, progress=True) -> Path``.
- :mod:`~gmmseg_lab.data.layout`: :func:`read_classes`, :func:`check_dataset`,
  :func:`validate_dataset`, :class:`DatasetReport`, :class:`DatasetError`, :func:`list_pairs`,
  :func:`list_anomaly_pairs`, :func:`load_image`, :func:`load_mask`.
- :mod:`~gmmseg_lab.data.mmseg_dataset` (imports mmseg; import it explicitly): registers
  ``GMMLabDataset`` in mmseg's ``DATASETS``.
"""

from .layout import (
    DatasetError,
    DatasetReport,
    check_dataset,
    list_anomaly_pairs,
    list_pairs,
    load_image,
    load_mask,
    read_classes,
    validate_dataset,
)
from .scenes import (
    ANOMALY_COLOURS,
    CLASSES,
    MODE_COLOURS,
    MODES,
    PALETTE,
    PRESETS,
    Scene,
    make_dataset,
    render_scene,
    scene_rng,
)

__all__ = [
    "ANOMALY_COLOURS",
    "CLASSES",
    "MODES",
    "MODE_COLOURS",
    "PALETTE",
    "PRESETS",
    "DatasetError",
    "DatasetReport",
    "Scene",
    "check_dataset",
    "list_anomaly_pairs",
    "list_pairs",
    "load_image",
    "load_mask",
    "make_dataset",
    "read_classes",
    "render_scene",
    "scene_rng",
    "validate_dataset",
]
