"""The embedded procedural data set, the on-disk layout and real data sets (numpy + PIL; no torch, no mmseg).

Public API:

- :mod:`~gmmseg_lab.data.scenes`: :data:`CLASSES`, :data:`PALETTE`, :data:`MODES`,
  :data:`PRESETS`, :data:`ANOMALY_SOURCES`, :data:`PHOTO_OBJECTS` (the photographs pasted into the
  anomaly split), :class:`Scene`, :func:`render_scene` ``(rng, size, anomaly=False, index=None) -> Scene``,
  :func:`make_dataset` ``(out_dir, preset="quick", seed=0, overwrite=False, progress=True) -> Path``.
- :mod:`~gmmseg_lab.data.layout`: :func:`read_classes`, :func:`check_dataset`,
  :func:`validate_dataset`, :class:`DatasetReport`, :class:`DatasetError`, :func:`list_pairs`,
  :func:`list_anomaly_pairs`, :func:`read_anomaly_sources` (which source each anomaly pixel comes
  from), :func:`list_images` (the one listing of a split folder, shared by the
  checker and ``GMMLabDataset``), :func:`load_image`, :func:`load_mask`.
- :mod:`~gmmseg_lab.data.real`: real data sets in their releases' layouts (Cityscapes, ADE20K,
  COCO-Stuff-10K; Fishyscapes, Road Anomaly, SegmentMeIfYouCan): :data:`FORMATS`,
  :func:`detect_format`, :func:`check_real_dataset`, :func:`validate_real_dataset`,
  :class:`RealDatasetReport`, :func:`read_anomaly_benchmark` ``(root, fmt="auto") ->``
  :class:`AnomalyBenchmark` (iterates decoded ``(image, mask)``, masks remapped to 0 inlier /
  1 anomaly / 255 void),
  :func:`remap_anomaly_mask`, :func:`convert_cityscapes_label_ids`, :func:`cityscapes_train_ids`.
- :mod:`~gmmseg_lab.data.mmseg_dataset` (imports mmseg; import it explicitly): registers
  ``GMMLabDataset`` in mmseg's ``DATASETS``.
"""

from .layout import (
    DatasetError,
    DatasetReport,
    check_dataset,
    list_anomaly_pairs,
    list_images,
    list_pairs,
    load_image,
    load_mask,
    read_anomaly_sources,
    read_classes,
    validate_dataset,
)
from .real import (
    ANOMALY_FORMATS,
    CLOSED_SET_FORMATS,
    CLOSED_SETS,
    FORMATS,
    AnomalyBenchmark,
    AnomalyFrame,
    RealDatasetReport,
    check_real_dataset,
    cityscapes_train_ids,
    convert_cityscapes_label_ids,
    detect_format,
    read_anomaly_benchmark,
    remap_anomaly_mask,
    validate_real_dataset,
)
from .scenes import (
    ANOMALY_COLOURS,
    ANOMALY_SOURCES,
    CLASSES,
    MODE_COLOURS,
    MODES,
    PALETTE,
    PHOTO_OBJECTS,
    PRESETS,
    Scene,
    make_dataset,
    render_scene,
    scene_rng,
)

__all__ = [
    "ANOMALY_COLOURS",
    "ANOMALY_SOURCES",
    "PHOTO_OBJECTS",
    "ANOMALY_FORMATS",
    "CLASSES",
    "CLOSED_SETS",
    "CLOSED_SET_FORMATS",
    "FORMATS",
    "MODES",
    "MODE_COLOURS",
    "PALETTE",
    "PRESETS",
    "AnomalyBenchmark",
    "AnomalyFrame",
    "DatasetError",
    "DatasetReport",
    "RealDatasetReport",
    "Scene",
    "check_dataset",
    "check_real_dataset",
    "cityscapes_train_ids",
    "convert_cityscapes_label_ids",
    "detect_format",
    "list_anomaly_pairs",
    "list_images",
    "list_pairs",
    "load_image",
    "load_mask",
    "make_dataset",
    "read_anomaly_benchmark",
    "read_anomaly_sources",
    "read_classes",
    "remap_anomaly_mask",
    "render_scene",
    "scene_rng",
    "validate_dataset",
    "validate_real_dataset",
]
