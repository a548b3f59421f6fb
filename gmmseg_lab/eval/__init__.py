"""Evaluation: streaming, constant-memory metrics (pure PyTorch, no mmseg import)."""

from .metrics import (
    AnomalyScores,
    CalibrationError,
    MetricUndefinedWarning,
    SegmentationIoU,
    StreamingMetric,
    softmax_confidence_and_entropy,
)

__all__ = [
    "AnomalyScores",
    "CalibrationError",
    "MetricUndefinedWarning",
    "SegmentationIoU",
    "StreamingMetric",
    "softmax_confidence_and_entropy",
]
