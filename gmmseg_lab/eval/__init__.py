"""Evaluation: streaming, constant-memory metrics (pure PyTorch and numpy, no mmseg import here;
:mod:`gmmseg_lab.eval.evaluate` runs a trained model through them)."""

from .components import AnomalyComponents, component_statistics
from .confidence_bound import layernorm_confidence_bound, layernorm_confidence_bound_per_class
from .metrics import (
    AnomalyScores,
    CalibrationError,
    MetricUndefinedWarning,
    SegmentationIoU,
    StreamingMetric,
    softmax_confidence_and_entropy,
)
from .temperature import LogitReservoir, ScaledCalibration, fit_temperature, nll, temperature_split

__all__ = [
    "AnomalyComponents",
    "AnomalyScores",
    "CalibrationError",
    "LogitReservoir",
    "MetricUndefinedWarning",
    "ScaledCalibration",
    "SegmentationIoU",
    "StreamingMetric",
    "component_statistics",
    "fit_temperature",
    "layernorm_confidence_bound",
    "layernorm_confidence_bound_per_class",
    "nll",
    "softmax_confidence_and_entropy",
    "temperature_split",
]
