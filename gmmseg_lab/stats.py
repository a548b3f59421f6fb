"""The headline metrics and their spread over seeds: the one place where an evaluator's
``metrics.json`` is named (:data:`HEADLINE_METRICS`, :func:`metric_value`, :func:`flatten_metrics`) and
summarised as mean ± sample standard deviation (:func:`seed_stats`)."""

from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple


class HeadlineMetric(NamedTuple):
    """One headline number of an evaluator ``metrics.json``."""

    key: str  # short name used in records and summary.json
    label: str  # column heading
    path: tuple[str, ...]  # key path in metrics.json
    higher_is_better: bool


#: Every headline metric, in the order tables show them.
HEADLINE_METRICS = (
    HeadlineMetric("miou", "mIoU", ("miou",), True),
    HeadlineMetric("acc", "pixel acc.", ("acc",), True),
    HeadlineMetric("ece", "ECE", ("ece",), False),
    HeadlineMetric("mce", "MCE", ("mce",), False),
    HeadlineMetric("bayes_ece", "ECE (Bayes)", ("bayes_posterior_calibration", "ece"), False),
    # After temperature scaling (T fitted on every other image, scored on the rest; on those scored
    # images only, so compare with temperature_scaling.*.ece_before rather than with "ece").
    HeadlineMetric("ece_ts", "ECE (T-scaled)", ("temperature_scaling", "logits", "ece_after"), False),
    HeadlineMetric(
        "bayes_ece_ts", "ECE (Bayes, T-scaled)", ("temperature_scaling", "bayes_posterior", "ece_after"), False
    ),
    HeadlineMetric("auroc", "AUROC", ("anomaly", "auroc"), True),
    HeadlineMetric("ap", "AP", ("anomaly", "ap"), True),
    HeadlineMetric("fpr95", "FPR95", ("anomaly", "fpr95"), False),
)


def headline(*keys: str) -> tuple[HeadlineMetric, ...]:
    """The :data:`HEADLINE_METRICS` named by ``keys``, in that order."""
    by_key = {m.key: m for m in HEADLINE_METRICS}
    return tuple(by_key[k] for k in keys)


def seed_stats(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n − 1) of one metric over seeds.

    Args:
        values: one value per seed, ``[S]``; ``None`` and non-finite values (a metric a run could not
            compute) are left out of the statistics but kept in ``values``.

    Returns:
        ``{"mean", "std", "n", "values"}``: ``n`` counts the finite values; ``std`` is 0.0 for one
        value; ``mean`` and ``std`` are NaN for none.
    """
    values = list(values)
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0 if n else float("nan")
    return {"mean": mean, "std": std, "n": n, "values": values}


def format_mean_std(stat: dict, digits: int = 3) -> str:
    """``0.553 ± 0.004`` from :func:`seed_stats` (one value when ``n == 1``, ``n/a`` when none)."""
    if not stat or not stat.get("n"):
        return "n/a"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def metric_value(metrics: dict, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in a ``metrics.json`` dict (e.g. ``("anomaly", "auroc")``), None if absent."""
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


#: Columns of the twin-comparison tables: (label, key path in metrics.json, higher is better).
TABLE_COLUMNS = tuple(
    (m.label, m.path, m.higher_is_better)
    for m in headline("miou", "ece", "bayes_ece", "ece_ts", "auroc", "ap", "fpr95")
)


def flatten_metrics(metrics: dict) -> dict[str, float]:
    """The headline numbers of an evaluator ``metrics.json`` (missing ones are left out)."""
    flat: dict[str, float] = {}
    for metric in HEADLINE_METRICS:
        name, path = metric.key, metric.path
        value: Any = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
