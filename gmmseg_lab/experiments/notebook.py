"""What every notebook does first, and the sentences it writes about its own results.

**Set-up.** A notebook's parameters cell names ``work_dir`` (where trained runs live), ``data_dir`` (the
embedded data set), ``preset``, ``data_seed`` and ``live``; the report runner fills them, and in
JupyterLab their defaults train ``quick`` models once into ``runs/lab-<preset>/`` beside
``notebooks/``. :func:`setup` is the one call every notebook starts with: the known-harmless library
warnings filtered (:data:`KNOWN_WARNINGS`), plotly set up for JupyterLab and offline pages, the folders
resolved and the data set made (:func:`resolve_dirs`); it returns them as a :class:`Lab`.

**Sentences.** The notebooks' prose explains what a figure shows and what a good or a bad result looks
like; it never quotes a number, since numbers change with the preset and the seeds. Where the
explanation needs this run's numbers ("here GMMSeg's AUROC is ... against ..."), a code cell computes
them with one of the ``*_sentences`` functions below, which return a :class:`Finding`: plain text when
printed, Markdown when displayed in a notebook.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ..eval.confidence_bound import layernorm_confidence_bound_per_class
from ..stats import HEADLINE_METRICS, format_mean_std, metric_value, seed_stats
from ..viz import setup_plotly
from ..viz.ablation import ablation_stats, compare, final_value, format_bytes
from ..viz.anomaly import SCORE_LABELS
from ..viz.calibration import calibration_errors, check_bins, mean_confidence
from ..viz.components import component_balance
from .compare import by_model
from .predictions import score_norm_parameters
from .runs import ensure_dataset

__all__ = [
    "KNOWN_LOG_MESSAGES",
    "KNOWN_WARNINGS",
    "QUIET_ENV",
    "Finding",
    "KnownMessage",
    "Lab",
    "ablation_sentences",
    "bound_inputs",
    "bound_sentences",
    "by_source_sentences",
    "calibration_sentences",
    "convergence_sentences",
    "embedding_sentences",
    "memory_sentences",
    "per_class_sentences",
    "posterior_sentences",
    "prepare_data",
    "quiet_known_warnings",
    "resolve_dirs",
    "score_sentences",
    "setup",
    "temperature_sentences",
    "toy_confidence_sentences",
    "toy_fit_sentences",
    "twin_sentences",
    "usage_sentences",
]


# ----------------------------------------------------------------------------------- folders
def prepare_data(data_dir: str | Path, preset: str, data_seed: int = 0) -> Path:
    """The embedded data set of ``preset`` and ``data_seed`` at ``data_dir`` (generated once, then reused)."""
    return ensure_dataset(Path(data_dir), preset, data_seed)


def resolve_dirs(
    work_dir: str | Path | None, data_dir: str | Path | None, preset: str, data_seed: int = 0
) -> tuple[Path, Path]:
    """The notebooks' folders: ``work_dir`` (default ``../runs/lab-<preset>`` beside ``notebooks/``, for
    live use in JupyterLab) and ``data_dir`` (default ``<work_dir>/data``), with the data set of
    ``preset`` and ``data_seed`` made there."""
    work = Path(work_dir) if work_dir else Path("..") / "runs" / f"lab-{preset}"
    work = work.expanduser().resolve()
    data = Path(data_dir).expanduser().resolve() if data_dir else work / "data"
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(data, preset, data_seed)
    return work, data


@dataclass(frozen=True)
class Lab:
    """What :func:`setup` returns: a notebook's folders and settings."""

    work_dir: Path
    data_dir: Path
    preset: str
    data_seed: int = 0
    live: bool = True

    @property
    def progress(self) -> bool:
        """Progress bars while training and evaluating: live in JupyterLab; not in a report, whose page
        would keep a bar frozen at its first frame."""
        return self.live


def setup(
    work_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    preset: str = "quick",
    data_seed: int = 0,
    live: bool = True,
    *,
    verbose: bool = True,
) -> Lab:
    """The first call of every notebook: quiet the known-harmless warnings (:func:`quiet_known_warnings`),
    set plotly up (:func:`gmmseg_lab.viz.setup_plotly`), resolve the folders and make the data set
    (:func:`resolve_dirs`); prints them unless ``verbose=False``."""

    quiet_known_warnings()
    setup_plotly()
    work, data = resolve_dirs(work_dir, data_dir, preset, data_seed)
    lab = Lab(work_dir=work, data_dir=data, preset=preset, data_seed=int(data_seed), live=bool(live))
    if verbose:
        print(f"runs: {work}\ndata: {data}")
    return lab


# ----------------------------------------------------------------------------------- known warnings
class KnownMessage(NamedTuple):
    """A library message seen in the notebooks, known to be harmless here, filtered by its start."""

    message: str  # the start of the message, literally
    source: str  # who says it, and when
    why: str  # why it is harmless here, and why it is not fixed at its cause


#: ``warnings.warn`` messages of the libraries, each filtered where notebooks build and train models.
KNOWN_WARNINGS = (
    KnownMessage(
        "Default ``avg_non_ignore`` is False",
        "mmseg's CrossEntropyLoss, every time a model is built (training, evaluation, predictions)",
        "the shipped configs keep mmseg's default loss normalisation; avg_non_ignore=True, which the "
        "message recommends, would change the training loss: a config change, not a notebook one",
    ),
    KnownMessage(
        "The draw is False",
        "mmseg's SegVisualizationHook, when a training run starts",
        "the configs switch drawing off on purpose: no validation images are drawn",
    ),
    KnownMessage(
        "Multi-processing start method `fork` is different from the previous setting `spawn`",
        "mmengine's set_multi_processing, in a training worker of run_many",
        "run_many starts its workers with spawn (no fork of a kernel's threads); mmengine then sets "
        "the worker's default to fork for data-loader processes, which the lab's configs never "
        "start (num_workers=0)",
    ),
)

#: Messages of mmengine's logger (printed at WARNING level, not through ``warnings``) of the same kind.
KNOWN_LOG_MESSAGES = (
    KnownMessage(
        "The prefix is not set in metric class IoUMetric",
        "mmengine's BaseMetric, for the configs' val_evaluator",
        "the lab reads the metric names unprefixed (mIoU, not val/mIoU); setting a prefix is a config change",
    ),
    KnownMessage(
        '"FileClient" will be deprecated in future',
        "mmengine's CheckpointHook and LoggerHook, which build a FileClient whatever the config says",
        "mmengine's own deprecation notice about its internals",
    ),
    KnownMessage(
        '"HardDiskBackend" is the alias of "LocalBackend"',
        "the same FileClient, built by mmengine's hooks",
        "mmengine's own deprecation notice about its internals",
    ),
)

#: Set by :func:`quiet_known_warnings`: processes started from a notebook (the training workers of
#: :func:`gmmseg_lab.experiments.runs.run_many`, which import this package) install the same filters.
QUIET_ENV = "GMMSEG_LAB_QUIET_KNOWN_WARNINGS"


def _known(message: str, known: Sequence[KnownMessage]) -> bool:
    return any(message.startswith(k.message) for k in known)


def _drop_known_log_messages() -> None:
    """Keep mmengine's logger from printing :data:`KNOWN_LOG_MESSAGES` (every other record, of any
    level, still goes out). MMLogger instances are made per run, inside mmengine's Runner, so the
    filter sits on the class's own ``callHandlers`` (installed once)."""
    from mmengine.logging import MMLogger

    if getattr(MMLogger.callHandlers, "_drops_known_messages", False):
        return
    call_handlers = MMLogger.callHandlers

    def callHandlers(self, record):  # noqa: N802 (logging's name)
        if record.levelno == logging.WARNING and _known(record.getMessage(), KNOWN_LOG_MESSAGES):
            return
        call_handlers(self, record)

    callHandlers._drops_known_messages = True
    MMLogger.callHandlers = callHandlers


def quiet_known_warnings() -> None:
    """Filter the messages of :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_MESSAGES`, each by its text, in
    this process and (through :data:`QUIET_ENV`) in the processes it starts; nothing else is filtered.
    Idempotent."""
    for known in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(known.message), category=UserWarning)
    _drop_known_log_messages()
    os.environ[QUIET_ENV] = "1"


# ----------------------------------------------------------------------------------- sentences
class Finding(str):
    """Sentences about this run's results: plain text when printed, Markdown when a notebook displays it."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return str(self)


def _finding(lines: Sequence[str]) -> Finding:
    lines = [line for line in lines if line]
    if len(lines) == 1:
        return Finding(lines[0])
    return Finding("\n".join(f"- {line}" for line in lines))


def _stat(values: Sequence[float | None], digits: int = 3, percent: bool = False) -> str:
    stat = seed_stats(values)
    if percent:
        stat = {**stat, "mean": 100 * stat["mean"], "std": 100 * stat["std"]}
    return format_mean_std(stat, digits) + (" %" if percent and stat["n"] else "")


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _resolve_metric(metric) -> tuple[str, tuple[str, ...], bool]:
    """A headline metric key (``"miou"``, ``"auroc"``, ...) or a ``(label, key path, higher is better)``."""
    if isinstance(metric, str):
        for m in HEADLINE_METRICS:
            if m.key == metric:
                return m.label, m.path, m.higher_is_better
        raise ValueError(
            f"metric {metric!r} is not a headline metric ({', '.join(m.key for m in HEADLINE_METRICS)}); "
            "pass (label, key path, higher_is_better)"
        )
    label, path, up = metric
    return label, tuple(path.split(".")) if isinstance(path, str) else tuple(path), bool(up)


def _difference_text(
    values: np.ndarray, reference: np.ndarray, up: bool, digits: int, who: str, other: str, unit: str = ""
) -> str:
    """``who`` against ``other``: which is ahead, by how much, and whether that is beyond seed noise."""

    test = compare(values, reference)
    delta = test["delta"]
    if not np.isfinite(delta):
        return "no comparison (a side has no value)"
    if round(abs(delta), digits) == 0:
        return "the two are level"
    ahead = who if (delta > 0) == up else other
    text = f"{ahead} is ahead by {abs(delta):.{digits}f}{unit}"
    if test["within_noise"] is None:
        return text + " (one seed, or no spread: nothing to tell it from noise)"
    return text + (
        ", within noise (less than twice the difference's standard error over seeds)"
        if test["within_noise"]
        else ", beyond noise (more than twice its standard error over seeds)"
    )


def _pairs(labels: Sequence[str], suffixes=(" gmm", " softmax")) -> list[tuple[str, str | None, str | None]]:
    """``[(arch, gmm label, softmax label)]`` of ``"<arch> <head>"`` labels, in order of first appearance."""
    archs: dict[str, dict[str, str]] = {}
    for label in labels:
        for head, suffix in zip(("gmm", "softmax"), suffixes):
            if label.endswith(suffix):
                archs.setdefault(label[: -len(suffix)], {})[head] = label
    return [(arch, heads.get("gmm"), heads.get("softmax")) for arch, heads in archs.items()]


def twin_sentences(
    metrics_by_model: Mapping[str, Sequence[Mapping]], metric, digits: int = 3, percent: bool = False
) -> Finding:
    """GMMSeg against its softmax twin on one metric, one sentence per architecture.

    Args:
        metrics_by_model: ``{"<arch> gmm": [metrics per seed], "<arch> softmax": [...]}``
            (:func:`gmmseg_lab.experiments.compare.by_model`).
        metric: a headline metric key of :data:`gmmseg_lab.stats.HEADLINE_METRICS` (``"miou"``,
            ``"ece"``, ``"auroc"``, ``"fpr95"``, ...) or ``(label, key path, higher is better)``, e.g.
            ``("sIoU", "anomaly_components.siou", True)``.
    """
    label, path, up = _resolve_metric(metric)
    scale = 100.0 if percent else 1.0
    lines = []
    for arch, gmm, softmax in _pairs(list(metrics_by_model)):
        if gmm is None or softmax is None:
            continue
        values = {k: [metric_value(m, path) for m in metrics_by_model[k]] for k in (gmm, softmax)}
        finite = {
            k: np.asarray([scale * v for v in vs if v is not None and math.isfinite(v)]) for k, vs in values.items()
        }
        n = len(metrics_by_model[gmm])
        lines.append(
            f"{arch}: GMMSeg's {label} is {_stat(values[gmm], digits, percent)} against "
            f"{_stat(values[softmax], digits, percent)} for its softmax twin "
            f"({'higher' if up else 'lower'} is better; {_seeds(n)}): "
            + _difference_text(
                finite[gmm], finite[softmax], up, digits, "GMMSeg", "the softmax twin", " points" if percent else ""
            )
            + "."
        )
    if not lines:
        raise ValueError(
            f"metrics_by_model must hold '<arch> gmm' and '<arch> softmax' entries, got {list(metrics_by_model)}"
        )
    return _finding(lines)


def per_class_sentences(metrics_by_model: Mapping[str, Sequence[Mapping]], digits: int = 2) -> Finding:
    """Per architecture: on how many classes GMMSeg's mean IoU is above or below its twin's (and the
    largest gap each way), and the classes neither head segments at all."""
    lines = []
    for arch, gmm, softmax in _pairs(list(metrics_by_model)):
        if gmm is None or softmax is None:
            continue
        classes = list(metrics_by_model[gmm][0]["per_class_iou"])
        mean = {
            k: np.asarray(
                [seed_stats([m["per_class_iou"].get(c) for m in metrics_by_model[k]])["mean"] for c in classes]
            )
            for k in (gmm, softmax)
        }
        gap = mean[gmm] - mean[softmax]
        ahead, behind = np.flatnonzero(gap > 0.005), np.flatnonzero(gap < -0.005)
        most_ahead = (
            f" (most: {classes[ahead[np.argmax(gap[ahead])]]}, {gap[ahead].max():+.{digits}f})" if len(ahead) else ""
        )
        most_behind = (
            f" (most: {classes[behind[np.argmin(gap[behind])]]}, {gap[behind].min():+.{digits}f})"
            if len(behind)
            else ""
        )
        parts = [
            f"{arch}: GMMSeg's IoU is higher on {len(ahead)} of {len(classes)} classes{most_ahead} and lower "
            f"on {len(behind)}{most_behind}"
        ]
        never = [c for c, a, b in zip(classes, mean[gmm], mean[softmax]) if a < 0.005 and b < 0.005]
        parts.append(
            f"neither head segments {', '.join(never)} (IoU about 0)"
            if never
            else "every class is segmented by at least one head"
        )
        lines.append("; ".join(parts))
    return _finding(lines)


# ---- notebook 00: the toy
def toy_confidence_sentences(far: Mapping[str, float]) -> Finding:
    """Both classifiers' mean confidence far from the toy data
    (:func:`gmmseg_lab.experiments.toy.toy_far_confidence`)."""
    soft, gmm = far["softmax_confidence"], far["gmm_confidence"]
    verdict = (
        "the softmax is sure of points it has never seen, the GMM is not"
        if soft > gmm + 0.1
        else "unusually, the softmax is not more confident than the GMM there"
        if soft <= gmm
        else "the softmax is only slightly more confident than the GMM there"
    )
    return Finding(
        f"Here, on a circle of radius {far['radius']:.1f} around the data (3 times its extent), the "
        f"softmax MLP's mean confidence is {soft:.3f} and the GMM's {gmm:.3f}: {verdict}."
    )


def toy_fit_sentences(em, sinkhorn) -> Finding:
    """Classic EM against Sinkhorn EM at the last iteration (:class:`gmmseg_lab.gmm.fit.FitSnapshots`):
    each component's share of the points and the mean log-likelihood."""
    lines, spread, loglik = [], {}, {}
    for name, snap in (("classic EM", em), ("Sinkhorn EM", sinkhorn)):
        masses = np.asarray(snap.masses[-1], dtype=np.float64)
        spread[name], loglik[name] = float(masses.max() - masses.min()), float(snap.log_likelihood[-1])
        shares = ", ".join(f"{100 * m:.0f} %" for m in sorted(masses, reverse=True))
        lines.append(
            f"{name}: its {len(masses)} components hold {shares} of the class's points (largest minus "
            f"smallest share: {100 * spread[name]:.0f} points); mean log p(x) = {loglik[name]:.3f} nats "
            "per point"
        )
    gap = spread["classic EM"] - spread["Sinkhorn EM"]
    even = (
        "more even than classic EM's"
        if gap > 0.01
        else "as even as classic EM's"
        if gap >= -0.01
        else "less even than classic EM's (the transport has not converged)"
    )
    fit = loglik["classic EM"] - loglik["Sinkhorn EM"]
    better = (
        f"classic EM fits the points better, by {fit:.3f} nats per point"
        if fit > 5e-4
        else f"Sinkhorn EM fits the points better, by {-fit:.3f} nats per point"
        if fit < -5e-4
        else "both fit the points equally well"
    )
    lines.append(
        f"after {em.num_iterations} iterations the Sinkhorn E-step's shares are {even}, and {better}; a "
        "higher log-likelihood is a better fit of these points, not necessarily one component per blob"
    )
    return _finding(lines)


# ---- notebook 02: components
def posterior_sentences(posterior: Mapping[str, Any], classes: Sequence[str], image_name: str = "") -> Finding:
    """One pixel's posteriors (:func:`gmmseg_lab.viz.components.pixel_posterior`) in words."""
    post = np.asarray(posterior["class_posterior"], dtype=np.float64)
    predicted, bayes, chosen = posterior["predicted_class"], posterior["bayes_class"], posterior["class_index"]
    where = f"pixel (row {posterior['row']}, column {posterior['col']})" + (f" of {image_name}" if image_name else "")
    agree = (
        f"and agrees: its top class is {classes[bayes]} too"
        if predicted == bayes
        else f"but prefers {classes[bayes]} ({post[bayes]:.3f}): the logits and the mixtures disagree here"
    )
    resp = np.asarray(posterior["component_posterior"], dtype=np.float64)
    modes = "one sub-mode explains the pixel" if resp.max() > 0.9 else "several sub-modes share it"
    return Finding(
        f"At {where} the head predicts {classes[predicted]}; Bayes' posterior gives it "
        f"{post[predicted]:.3f} {agree}. Within "
        f"{classes[chosen]}, component {posterior['component']} takes {resp.max():.3f} of the "
        f"responsibility ({modes})."
    )


def usage_sentences(usage: np.ndarray, classes: Sequence[str]) -> Finding:
    """Component usage per class (:func:`gmmseg_lab.viz.components.component_usage`) in words: the
    balance (normalised entropy) range and how many classes lean on one component."""

    usage = np.asarray(usage)
    balance = component_balance(usage)
    present = np.flatnonzero(np.isfinite(balance))
    if not len(present):
        return Finding("No labelled pixel on these images: no component usage to describe.")
    low, high = present[np.argmin(balance[present])], present[np.argmax(balance[present])]
    top_share = usage[present].max(1) / usage[present].sum(1)
    leaning = int((top_share > 0.5).sum())
    return Finding(
        f"Balance (normalised entropy of a class's component shares; 1 = every component used equally, "
        f"0 = one takes all): from {balance[low]:.2f} ({classes[low]}) to {balance[high]:.2f} "
        f"({classes[high]}), mean {np.nanmean(balance):.2f} over the {len(present)} classes with pixels; "
        f"{leaning} of them put more than half of their pixels on one component."
    )


# ---- notebook 03: embeddings
def embedding_sentences(info: Mapping[str, np.ndarray], classes: Sequence[str]) -> Finding:
    """How well the sampled pixels (:func:`gmmseg_lab.viz.embedding.sample_pixels`) sit with their own
    class: the share whose Bayes class is their ground-truth class, overall and per class."""
    label, bayes = np.asarray(info["label"]), np.asarray(info["bayes_class"])
    right = bayes == label
    per_class = {c: float(right[label == c].mean()) for c in np.unique(label)}
    worst, best = min(per_class, key=per_class.get), max(per_class, key=per_class.get)
    return Finding(
        f"Of the {len(label)} sampled pixels, {100 * right.mean():.0f} % have their ground-truth class as "
        f"Bayes class (argmax over c of log p(x|c), in the full embedding space, not the map); by class "
        f"from {100 * per_class[worst]:.0f} % ({classes[worst]}) to {100 * per_class[best]:.0f} % "
        f"({classes[best]}). A class whose pixels sit on another class's means in the map is one the "
        "mixtures confuse."
    )


# ---- notebook 04: calibration
def _accuracy(bins: Mapping) -> float | None:

    b = check_bins(bins)
    filled = b["count"] > 0
    total = int(b["count"].sum())
    return None if not total else float((b["accuracy"][filled] * b["count"][filled]).sum() / total)


def calibration_sentences(
    logits_bins: Mapping[str, Sequence[Mapping]], posterior_bins: Mapping[str, Sequence[Mapping]] | None = None
) -> Finding:
    """ECE, mean confidence and accuracy of every model and probability
    (:func:`gmmseg_lab.viz.calibration.bins_by_model`), and which way each is miscalibrated."""

    lines = []
    for probability, models in (("class logits", logits_bins), ("Bayes posterior", posterior_bins or {})):
        for label, per_seed in models.items():
            ece = [calibration_errors(b)[0] for b in per_seed]
            conf = [mean_confidence(b) for b in per_seed]
            acc = [_accuracy(b) for b in per_seed]
            c, a = seed_stats(conf)["mean"], seed_stats(acc)["mean"]
            way = (
                "under-confident: its curve lies above the diagonal"
                if c < a - 0.02
                else "over-confident: its curve lies below the diagonal"
                if c > a + 0.02
                else "about as confident as it is accurate"
            )
            lines.append(
                f"{label}, {probability}: ECE {_stat(ece, 1, True)}; mean confidence {c:.3f} against "
                f"accuracy {a:.3f}: {way}"
            )
    return _finding(lines)


def bound_inputs(
    runs: Mapping[tuple[str, str, int], Mapping], archs: Sequence[str], seeds: Sequence[int]
) -> dict[str, list[dict]]:
    """What :func:`gmmseg_lab.viz.calibration.layernorm_bound_figure` takes, for every GMMSeg run of
    :func:`gmmseg_lab.experiments.compare.train_twins`: its learned LayerNorm (``gamma``, ``beta``),
    calibration bins and pixel accuracy."""

    return by_model(
        runs,
        archs,
        list(seeds),
        heads=("gmm",),
        key=lambda run: dict(
            score_norm_parameters(run["run_dir"]), bins=run["metrics"]["calibration_bins"], acc=run["metrics"]["acc"]
        ),
    )


def bound_sentences(bound_models: Mapping[str, Sequence[Mapping]]) -> Finding:
    """Each GMMSeg model's LayerNorm bound on the top probability, its mean confidence and accuracy
    (:func:`bound_inputs`)."""

    lines = []
    for label, per_seed in bound_models.items():
        gamma = [float(np.mean(r["gamma"])) for r in per_seed]
        bound = [
            float(layernorm_confidence_bound_per_class(np.asarray(r["gamma"]), np.asarray(r["beta"])).max())
            for r in per_seed
        ]
        conf = [mean_confidence(r["bins"]) for r in per_seed]
        acc = [float(r["acc"]) for r in per_seed]
        b, a = seed_stats(bound)["mean"], seed_stats(acc)["mean"]
        verdict = (
            "its accuracy lies above the bound: these logits cannot be calibrated without a larger gamma"
            if a > b
            else "its accuracy lies below the bound: the cap does not bind for this model"
        )
        lines.append(
            f"{label}: mean gamma {_stat(gamma)} caps the top probability at {_stat(bound)}; it gives "
            f"{_stat(conf)} on average and is right on {_stat(acc)} of the pixels: {verdict}"
        )
    return _finding(lines)


def temperature_sentences(metrics_by_model: Mapping[str, Sequence[Mapping]]) -> Finding:
    """The fitted temperature of every model and probability and the ECE before and after it."""
    lines = []
    names = {"logits": "class logits", "bayes_posterior": "Bayes posterior"}
    for label, runs in metrics_by_model.items():
        scalings = [m.get("temperature_scaling") for m in runs]
        if any(s is None for s in scalings):
            continue
        for key, probability in names.items():
            entries = [s.get(key) for s in scalings]
            if any(e is None for e in entries):
                continue
            t = seed_stats([e["temperature"] for e in entries])["mean"]
            way = "sharpens (the model was under-confident)" if t < 1 else "softens (the model was over-confident)"
            lines.append(
                f"{label}, {probability}: T = {_stat([e['temperature'] for e in entries])} {way}; ECE "
                f"{_stat([e['ece_before'] for e in entries], 1, True)} before, "
                f"{_stat([e['ece_after'] for e in entries], 1, True)} after"
            )
    return _finding(lines or ["No model has a temperature fit (a validation split of one image)."])


# ---- notebook 05: ablation
def ablation_sentences(
    results: Mapping[str, Sequence[Mapping]],
    labels: Mapping[str, str],
    curves: Mapping[str, Sequence[Mapping]] | None = None,
    metric: str = "mIoU",
    reference: str = "default",
) -> Finding:
    """Every variant against the reference on ``metric`` (a column of
    :data:`gmmseg_lab.viz.ablation.METRICS`), with the ablation's noise rule."""

    stats = ablation_stats(results, curves=curves, reference=reference)
    rows = stats[stats["metric"] == metric].set_index("variant")
    if rows.empty:
        raise ValueError(f"metric {metric!r} is not a column of the ablation")
    up = bool(rows["higher_is_better"].iloc[0])
    ref = rows.loc[reference]
    lines = [
        f"{labels.get(reference, reference)} (the reference): {metric} {ref['mean']:.3f} "
        f"({'higher' if up else 'lower'} is better; {_seeds(int(ref['n']))})"
    ]
    for variant, row in rows.drop(index=reference).iterrows():
        if not np.isfinite(row["delta"]):
            lines.append(f"{labels.get(variant, variant)}: no {metric}")
            continue
        better = (row["delta"] > 0) == up
        within = row["within_noise"]
        noise = (
            "one seed: no test against noise"
            if within is None or within != within  # None or NaN
            else "within noise"
            if within
            else "beyond noise"
        )
        lines.append(
            f"{labels.get(variant, variant)}: {row['mean']:.3f}, {row['delta']:+.3f} "
            f"({'better' if better else 'worse'} than the reference, {noise})"
        )
    return _finding(lines)


def convergence_sentences(curves: Mapping[str, Sequence[Mapping]], labels: Mapping[str, str]) -> Finding:
    """The last logged component balance and mean log p(x|y) of every variant (mean over seeds)."""

    lines = []
    for variant, runs in curves.items():
        balance = final_value(runs, "decode.gmm_balance")
        loglik = final_value(runs, "decode.gmm_loglik")
        if not np.isfinite(balance).any():
            continue
        lines.append(
            f"{labels.get(variant, variant)}: balance {_stat(balance.tolist(), 2)} at the end of training, "
            f"mean log p(x|y) {_stat(loglik.tolist(), 1)}"
        )
    return _finding(lines or ["No variant logged the mixture's convergence statistics."])


def memory_sentences(bytes_by_variant: Mapping[str, float], labels: Mapping[str, str]) -> Finding:
    """The sample store's size per variant, smallest and largest."""

    sizes = {v: float(np.mean(b)) for v, b in bytes_by_variant.items()}
    small, large = min(sizes, key=sizes.get), max(sizes, key=sizes.get)
    ratio = sizes[large] / sizes[small] if sizes[small] > 0 else float("inf")
    return Finding(
        f"Smallest store: {labels.get(small, small)}, {format_bytes(sizes[small])}; largest: "
        f"{labels.get(large, large)}, {format_bytes(sizes[large])} ({ratio:.0f} times as much)."
    )


# ---- notebook 06: anomalies
def score_sentences(metrics_by_model: Mapping[str, Sequence[Mapping]], metric: str = "auroc") -> Finding:
    """For every model, its anomaly score with the best mean ``metric`` and its headline score's."""

    up = metric != "fpr95"
    lines = []
    for label, runs in metrics_by_model.items():
        names = [s for s in SCORE_LABELS if all(s in m["anomaly_by_score"] for m in runs)]
        means = {s: seed_stats([m["anomaly_by_score"][s].get(metric) for m in runs])["mean"] for s in names}
        means = {s: v for s, v in means.items() if np.isfinite(v)}
        if not means:
            continue
        best = (max if up else min)(means, key=means.get)
        headline = runs[0]["anomaly"]["score"]
        lines.append(
            f"{label}: best {metric.upper()} {means[best]:.3f} with {SCORE_LABELS[best]}; its headline score "
            f"({SCORE_LABELS.get(headline, headline)}) gives {means.get(headline, float('nan')):.3f}"
        )
    return _finding(lines)


def by_source_sentences(metrics_by_model: Mapping[str, Sequence[Mapping]], metric: str = "auroc") -> Finding:
    """For every model, the anomaly source its headline score finds most and least easily."""
    lines = []
    for label, runs in metrics_by_model.items():
        if not all("anomaly_by_source" in m for m in runs):
            continue
        score = runs[0]["anomaly"]["score"]
        means = {
            src: seed_stats([m["anomaly_by_source"][src][score].get(metric) for m in runs])["mean"]
            for src in runs[0]["anomaly_by_source"]
        }
        means = {s: v for s, v in means.items() if np.isfinite(v)}
        if len(means) < 2:
            continue
        easy, hard = max(means, key=means.get), min(means, key=means.get)
        lines.append(
            f"{label}: easiest {easy} ({metric.upper()} {means[easy]:.3f}), hardest {hard} ({means[hard]:.3f})"
        )
    return _finding(lines or ["This data set's anomaly split names no sources."])


if os.environ.get(QUIET_ENV) == "1":  # a process a notebook started (a training worker): the same filters
    quiet_known_warnings()
