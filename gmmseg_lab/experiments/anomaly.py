"""The open-world views' experiment steps: a run's anomaly curves on the whole anomaly split, and which
anomaly images to show first."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ..data.layout import list_anomaly_pairs, read_anomaly_sources
from ..eval.metrics import AnomalyScores
from .predictions import collect_predictions

__all__ = ["anomaly_curves", "anomaly_image_order"]


def anomaly_curves(run_dir: str | Path, data_dir: str | Path, max_points: int = 300) -> dict:
    """ROC / PR curves and AUROC, AP, FPR95 of a run's headline anomaly score on the whole anomaly split.

    Returns:
        ``{"curves": {fpr, tpr, precision, recall, thresholds}, "metrics": {auroc, ap, fpr95, ...},
        "predictions": Predictions of the anomaly split}``.
    """
    n = len(list_anomaly_pairs(data_dir))
    preds = collect_predictions(run_dir, data_dir, split="anomaly", max_images=n)
    scores = AnomalyScores()
    scores.update(torch.from_numpy(preds.anomaly_score.reshape(-1)), torch.from_numpy(preds.gt.reshape(-1)))
    curves = {k: v.tolist() for k, v in scores.curves(max_points=max_points).items()}
    return {"curves": curves, "metrics": scores.compute(), "predictions": preds}


def anomaly_image_order(names: Iterable[str], data_dir: str | Path) -> list[int]:
    """Positions of the anomaly images ``names``, those that show a photographed object first (a cat on
    the road reads at a glance), then the others, each group in its given order. Without
    ``anomaly/sources.json`` the given order."""
    names = list(names)
    found = read_anomaly_sources(data_dir)
    if found is None:
        return list(range(len(names)))
    sources, images = found
    photos = {s["name"] for s in sources if s.get("kind") == "photo"}
    with_photo = [i for i, n in enumerate(names) if photos & set(images.get(n, ()))]
    return with_photo + [i for i in range(len(names)) if i not in set(with_photo)]
