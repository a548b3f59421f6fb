"""Score a trained segmentor on a data set in the lab's layout: mIoU, calibration, anomaly detection.

Every metric is a streaming state (:mod:`gmmseg_lab.eval.metrics`), so memory stays constant however
many pixels are scored. The same code scores a GMMSeg model and its softmax twin:

- closed set (``images/<split>``): mIoU and per-class IoU, pixel accuracy, ECE and MCE (15 bins) of
  the softmax over the class logits, with the reliability-diagram bins; for a GMM head also the
  ECE / MCE of Bayes' posterior ``softmax_c log p(x|c)`` (``bayes_posterior_calibration``);
- temperature scaling (``temperature_scaling``): ``T`` fitted on every other image of the split
  (positions 0, 2, 4, ... of its sorted order) and the ECE / MCE / NLL before and after ``T`` on the
  others, for the softmax of the class logits and, for a GMM head, for Bayes' posterior
  (:mod:`gmmseg_lab.eval.temperature`). The split is still read once: the fitting half first, then
  the scored half; mIoU, ECE and MCE above cover both halves, as before;
- open world (``anomaly/``, when present): AUROC, AP and FPR at 95% TPR of every anomaly score the
  model offers (``anomaly_by_score``): the softmax family on the class logits, ``max_softmax``
  (``1 - max softmax``), ``entropy``, ``max_logit`` (``-max_c logit``), ``energy``
  (``-logsumexp_c logit``), and for a GMM head the densities ``neg_max_log_likelihood``
  (``-max_c log p(x|c)``, GMMSeg's) and ``neg_logsumexp_log_likelihood``. The headline ``anomaly``
  entry is GMMSeg's density score for a GMM head and ``1 - max softmax`` for a softmax head. A
  second pass over the split scores SegmentMeIfYouCan's component metrics (sIoU, PPV, mean F1,
  :mod:`gmmseg_lab.eval.components`) at each score's best-pixel-F1 threshold
  (``anomaly_components`` for the headline score, ``anomaly_components_by_score``); on the lab's
  split the predicted components connect through its void band (:data:`COMPONENT_RULES`). With
  ``anomaly/sources.json`` and ``anomaly/source_masks/`` (which anomaly covers each pixel), also
  ``anomaly_by_source``: each source's anomalous pixels against every inlier pixel;
- a real anomaly benchmark (Fishyscapes, Road Anomaly, SegmentMeIfYouCan in their releases'
  layouts, :mod:`gmmseg_lab.data.real`): the same scores, by :func:`evaluate_anomaly` or
  ``evaluate(..., anomaly_data=DIR)``; its images go through the model's test transforms, with
  images and remapped masks from the benchmark reader instead of the pipeline's loading steps;
  the component metrics use the benchmark's minimum component sizes (:data:`COMPONENT_RULES`).

Memory stays constant: two passes over the anomaly split (pixels, then components) and one over the
closed-set split; no pixel is kept beyond the temperature fit's bounded reservoir.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from ..checkpoints import check_checkpoint, last_checkpoint
from ..data.layout import (
    DatasetError,
    list_anomaly_pairs,
    load_mask,
    read_anomaly_sources,
    read_classes,
    undefined_anomaly_note,
    validate_dataset,
)
from ..data.real import ANOMALY_FORMATS, CLOSED_SET_FORMATS, check_real_dataset, read_anomaly_benchmark
from ..io_utils import atomic_write_json
from ..models import build_dataloader, is_gmm_head, load_segmentor
from ..models.inference import decode_head_of, predict_batch, read_config
from .components import AnomalyComponents
from .metrics import (
    AnomalyScores,
    CalibrationError,
    MetricUndefinedWarning,
    SegmentationIoU,
    log_likelihood_anomaly_scores,
    logit_anomaly_scores,
)
from .temperature import LogitReservoir, ScaledCalibration, temperature_split

PRIMARY_SCORE = {"gmm": "neg_max_log_likelihood", "softmax": "max_softmax"}
#: How components are formed (:mod:`gmmseg_lab.eval.components`) per anomaly format:
#: ``(min_pred_size, min_gt_size, connect_through_void)``. Sizes: SegmentMeIfYouCan's obstacle track
#: 50 / 10, its anomaly track (and the other full-resolution benchmarks) 500 / 100; none for the
#: lab's 64-pixel images, where the benchmark's sizes scaled by image area (500 of 2048x1024 pixels)
#: come to about one pixel. Void: the benchmarks drop predictions on void before labelling (their
#: rule); the lab's generated masks put a 1-pixel void band around every anomaly, which would cut
#: every prediction at the anomaly's outline (an untrained model that flags every pixel scored mean
#: F1 0.73, sIoU 1.0), so there the predicted components connect through the void.
COMPONENT_RULES = {"lab": (0, 0, True), "smiyc-obstacle": (50, 10, False)}
DEFAULT_COMPONENT_RULE = (500, 100, False)
#: Histogram resolution of the per-source anomaly metrics: one histogram per source and score, so
#: 1 MiB each (relative bin width 7.8e-3) rather than the headline metrics' 16 MiB.
SOURCE_KEY_BITS = 16


def resolve_model(model: str | Path, config: str | Path | None = None):
    """Turn a work dir or a checkpoint file into ``(config, checkpoint)`` for ``load_segmentor``.

    A work dir holds ``config.py`` and ``last_checkpoint``. A bare ``.pth`` uses ``config`` when
    given, else the ``config.py`` beside it, else the config mmengine stored in the checkpoint.

    Raises:
        FileNotFoundError: no such file or work dir, a work dir without config.py or checkpoint.
        gmmseg_lab.models.inference.ConfigError: a config file that is missing or invalid.
        gmmseg_lab.checkpoints.CheckpointError: a ``.pth`` that is empty, corrupt or not a checkpoint.
        ValueError: a ``.pth`` with no config beside it or in it and ``config`` not given.
    """
    from mmengine.config import Config

    model = Path(model)
    if model.is_dir():
        if not (model / "config.py").is_file():
            raise FileNotFoundError(f"{model}: a work dir must hold config.py (written by `gmmseg-lab train`)")
        checkpoint = last_checkpoint(model)
        if checkpoint is None:
            raise FileNotFoundError(
                f"{model}: no last_checkpoint and no intact checkpoint; train first or pass a .pth file"
            )
        return read_config(config or model / "config.py"), checkpoint
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such checkpoint file or work dir")
    check_checkpoint(model, for_resume=False)  # empty, corrupt, not a checkpoint: CheckpointError naming it
    if config is not None:
        return read_config(config), model
    if (model.parent / "config.py").is_file():
        return read_config(model.parent / "config.py"), model
    import zipfile

    meta = torch.load(model, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(model)).get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("cfg"), str):
        raise ValueError(f"{model}: no config beside it and none stored in it; pass --config")
    return Config.fromstring(meta["cfg"], file_format=".py"), model


def _load_model(model: str | Path, config, slide: tuple[int, int] | None, device: str | None):
    """Resolve ``model`` (:func:`resolve_model`), apply ``slide``, load it.

    Returns:
        ``(segmentor, cfg, checkpoint, head, head_kind)``; ``head_kind`` is ``"gmm"`` or ``"softmax"``.
    """
    cfg, checkpoint = resolve_model(model, config)
    if slide is not None:
        crop, stride = slide
        cfg.model.test_cfg = dict(mode="slide", crop_size=(crop, crop), stride=(stride, stride))
    segmentor, cfg = load_segmentor(cfg, checkpoint, device=device)
    head = decode_head_of(segmentor)
    return segmentor, cfg, checkpoint, head, "gmm" if is_gmm_head(head) else "softmax"


def _loader_for(cfg, data_dir: Path, img_dir: str, ann_dir: str, batch_size: int, indices: list[int] | None = None):
    """The config's val loader over ``data_dir/img_dir`` with ``ann_dir``; with ``indices``, only
    those positions of the data set's (sorted) image list, in that order."""
    cfg = copy.deepcopy(cfg)
    loader = cfg.val_dataloader
    loader.batch_size = batch_size
    loader.num_workers = 0
    loader.pop("persistent_workers", None)
    dataset = loader.dataset
    dataset.data_root = str(data_dir)
    dataset.data_prefix = dict(img_path=img_dir, seg_map_path=ann_dir)
    # Serialising the data list only pays off for worker processes (none here), and mmengine runs a
    # full gc.collect() for it: about 0.3 s per loader, and evaluate builds four.
    dataset.serialize_data = False
    if indices is not None:
        dataset.indices = list(indices)
    return build_dataloader(cfg, "val")


def evaluate(
    model: str | Path,
    data_dir: str | Path,
    out: str | Path | None = None,
    *,
    config: str | Path | None = None,
    split: str = "val",
    batch_size: int = 4,
    n_bins: int = 15,
    slide: tuple[int, int] | None = None,
    device: str | None = None,
    progress: bool = True,
    anomaly_data: str | Path | None = None,
    anomaly_format: str = "auto",
) -> dict[str, Any]:
    """Evaluate a trained model on ``data_dir`` and optionally write ``out`` (JSON, atomically).

    Args:
        model: a ``gmmseg-lab train`` work dir or a checkpoint ``.pth``.
        data_dir: a data set in the lab's layout (validated before any work).
        config: a config file overriding the one found with the model.
        split: the closed-set split to score.
        slide: ``(crop, stride)`` for sliding-window inference; ``None`` scores whole images.
        anomaly_data: a real anomaly benchmark (Fishyscapes, Road Anomaly, SegmentMeIfYouCan in
            its release's layout, see :mod:`gmmseg_lab.data.real`) scored instead of
            ``data_dir/anomaly`` (which is then neither checked nor read); checked before any
            work. The result then also has ``anomaly_data``, ``anomaly_format`` and
            ``anomaly_frames``.
        anomaly_format: its format, ``"auto"`` to detect it.

    Returns:
        ``{"miou", "acc", "ece", "mce", "per_class_iou", "calibration_bins",
        "bayes_posterior_calibration" (GMM heads), "temperature_scaling": {"logits": {...},
        "bayes_posterior": {...} (GMM heads)}, "anomaly": {"auroc", "ap", "fpr95", "score"},
        "anomaly_by_score": {...}, "anomaly_components": {"siou", "ppv", "mean_f1", ...},
        "anomaly_components_by_score": {...}, "anomaly_by_source": {...}, "notes": [...], ...}``;
        values in [0, 1] (temperatures and NLLs aside). The anomaly entries are present only when
        the data set has an anomaly split (``anomaly_by_source`` only with its sources files);
        each ``temperature_scaling`` entry has ``temperature``, ``ece_before``, ``ece_after``,
        ``mce_before``, ``mce_after``, ``nll_before``, ``nll_after`` (on the scored half),
        ``fit_images``, ``score_images``, ``fit_pixels`` (kept in the reservoir) and
        ``score_pixels``. Undefined values are NaN / None (``null`` in the JSON file), each
        explained by a line of ``notes`` (and a
        :class:`~gmmseg_lab.eval.metrics.MetricUndefinedWarning`): a class without any pixel in the
        split and never predicted has IoU NaN; an anomaly split without anomalous (or inlier)
        pixels has AUROC and FPR95 (and AP) None; a split of one image has no temperature scaling
        (``temperature_scaling`` None).

    Raises:
        DatasetError: the data set breaks the layout, including a malformed
            ``anomaly/sources.json`` or a source mask that is unreadable, of another size than its
            anomaly mask or with ids not in sources.json (each named), before any work.
    """
    data_dir = Path(data_dir)
    # A benchmark given replaces data_dir/anomaly: that split is then neither checked nor scored.
    validate_dataset(data_dir, splits=(split,), check_anomaly=anomaly_data is None)
    classes, _ = read_classes(data_dir)
    benchmark = _checked_benchmark(anomaly_data, anomaly_format) if anomaly_data is not None else None
    has_anomaly = benchmark is None and (data_dir / "anomaly" / "images").is_dir()
    sources = _read_anomaly_sources(data_dir) if has_anomaly else None  # checked before any work

    segmentor, cfg, checkpoint, head, head_kind = _load_model(model, config, slide, device)
    if head.num_classes != len(classes):
        raise DatasetError(
            f"{data_dir / 'classes.json'}: {len(classes)} classes, but the model at {model} predicts {head.num_classes}"
        )

    iou = SegmentationIoU(len(classes))
    calibration = CalibrationError(n_bins=n_bins)
    # For a GMM head, also the calibration of Bayes' posterior softmax_c(log p(x|c)) itself.
    bayes_calibration = CalibrationError(n_bins=n_bins) if head_kind == "gmm" else None
    # Temperature scaling: every other image fits T, the others are scored before and after it. To
    # know T before scoring, the fitting half is read first, then the scored half: each image once.
    img_dir, ann_dir = f"images/{split}", f"annotations/{split}"
    num_images = len(_loader_for(cfg, data_dir, img_dir, ann_dir, batch_size).dataset)
    fit_images, score_images = temperature_split(num_images)
    outputs = ("logits", "bayes_posterior") if head_kind == "gmm" else ("logits",)
    reservoirs = {name: LogitReservoir() for name in outputs}
    scaled: dict[str, ScaledCalibration] = {}
    parts = [("fit T", fit_images), ("score T", score_images)] if score_images else [("", None)]
    for part, indices in parts:
        if part == "score T":
            temperatures = {name: reservoir.fit() for name, reservoir in reservoirs.items()}
            scaled = {name: ScaledCalibration(t, n_bins=n_bins) for name, t in temperatures.items() if t is not None}
        loader = _loader_for(cfg, data_dir, img_dir, ann_dir, batch_size, indices=indices)
        for batch in tqdm(loader, desc=f"evaluate {split}" + (f" ({part})" if part else ""), disable=not progress):
            for r in predict_batch(segmentor, batch):
                gt = r["gt"].to(r["pred"].device)
                target = gt.flatten()
                iou.update(r["pred"], gt)
                logits = {"logits": r["seg_logits"].float().flatten(1).t()}  # [H*W, C]
                calibration.update_from_probs(torch.softmax(logits["logits"], dim=1), target)
                if bayes_calibration is not None:
                    logits["bayes_posterior"] = r["class_log_likelihood"].float().flatten(1).t()
                    bayes_calibration.update_from_probs(torch.softmax(logits["bayes_posterior"], dim=1), target)
                if part == "fit T":
                    for name, reservoir in reservoirs.items():
                        reservoir.update(logits[name], target)
                for name, metric in scaled.items():
                    metric.update(logits[name], target)
    seg = iou.compute()
    cal = calibration.compute()
    result: dict[str, Any] = {
        "miou": seg["miou"],
        "acc": seg["acc"],
        "ece": cal["ece"],
        "mce": cal["mce"],
        "per_class_iou": dict(zip(classes, seg["per_class_iou"])),
        "calibration_bins": cal["bins"],
        "head": head_kind,
        "model": str(model),
        "checkpoint": str(checkpoint),
        "data": str(data_dir),
        "split": split,
        "seed": (cfg.get("randomness") or {}).get("seed"),
    }
    # Undefined entries are explained in metrics.json, not only in a warning.
    notes = []
    never = [classes[c] for c in seg["absent_never_predicted"]]
    only_pred = [classes[c] for c in seg["absent_predicted"]]
    if never:
        notes.append(
            f"per_class_iou of {never} is null (NaN): annotations/{split} has no pixel of them and the "
            "model predicts none; they are left out of miou"
        )
    if only_pred:
        notes.append(
            f"per_class_iou of {only_pred} is 0: annotations/{split} has no pixel of them but the model "
            "predicts some (false positives, counted in miou as in mmseg)"
        )
    result["notes"] = notes
    if bayes_calibration is not None:
        bayes = bayes_calibration.compute()
        result["bayes_posterior_calibration"] = {"ece": bayes["ece"], "mce": bayes["mce"], "bins": bayes["bins"]}
    result["temperature_scaling"] = _temperature_results(
        scaled, reservoirs, fit_images, score_images, notes, f"images/{split}"
    )

    if benchmark is not None:  # a real anomaly benchmark replaces data_dir/anomaly
        result.update(_score_benchmark(segmentor, cfg, head_kind, benchmark, batch_size, progress, notes))
        notes += benchmark.notes + _undefined_anomaly_notes(result["anomaly"], f"{benchmark.root} ({benchmark.fmt})")
    if has_anomaly:
        loader = _loader_for(cfg, data_dir, "anomaly/images", "anomaly/masks", batch_size)

        def images() -> Iterator[tuple[dict, torch.Tensor]]:
            for batch in loader:
                for r in predict_batch(segmentor, batch):
                    yield r, r["gt"]

        where = str(data_dir / "anomaly" / "masks")
        result.update(
            _score_anomaly_split(
                images,
                len(loader.dataset),
                head_kind,
                COMPONENT_RULES["lab"],
                "evaluate anomaly",
                progress,
                notes,
                where,
                sources,
            )
        )

    if out is not None:
        atomic_write_json(out, result)
    return result


# --------------------------------------------------------------------------------------------
# Real anomaly benchmarks (gmmseg_lab.data.real): Fishyscapes, Road Anomaly, SegmentMeIfYouCan
# --------------------------------------------------------------------------------------------


def _new_anomaly_scores(head_kind: str, key_bits: int = 20, validate: bool = True) -> dict[str, AnomalyScores]:
    """One streaming metric per anomaly score the head offers (see :func:`_anomaly_score_maps`)."""
    names = ["max_softmax", "entropy", "max_logit", "energy"]
    if head_kind == "gmm":
        names += ["neg_max_log_likelihood", "neg_logsumexp_log_likelihood"]
    return {name: AnomalyScores(key_bits=key_bits, validate=validate) for name in names}


def _anomaly_score_maps(r: dict) -> dict[str, torch.Tensor]:
    """Every anomaly score of one image, ``{name: [H, W]}``, higher = more anomalous.

    ``r`` is a ``predict_batch`` result: the softmax family comes from ``seg_logits`` ``[C, H, W]``
    (a GMM head's class logits too), the density scores from ``class_log_likelihood`` ``[C, H, W]``
    when the head has it.
    """
    maps = logit_anomaly_scores(r["seg_logits"].float(), dim=0)
    if "class_log_likelihood" in r:
        maps.update(log_likelihood_anomaly_scores(r["class_log_likelihood"].float(), dim=0))
    return maps


def _update_anomaly_scores(scores: dict[str, AnomalyScores], maps: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
    """Add one image: ``maps`` from :func:`_anomaly_score_maps`, ``mask`` ``[H, W]`` 0 inlier /
    1 anomaly / 255 void."""
    for name, metric in scores.items():
        score = maps[name]
        metric.update(score, mask.to(score.device))


def _anomaly_results(scores: dict[str, AnomalyScores], head_kind: str) -> dict[str, Any]:
    """``{"anomaly": the head's primary score's metrics and its name, "anomaly_by_score": every score's}``."""
    by_score = {name: metric.compute() for name, metric in scores.items()}
    primary = PRIMARY_SCORE[head_kind]
    return {"anomaly": dict(by_score[primary], score=primary), "anomaly_by_score": by_score}


def _new_component_metrics(
    scores: dict[str, AnomalyScores], rule: tuple[int, int, bool]
) -> dict[str, tuple[AnomalyComponents, dict[str, float]] | None]:
    """For each score, the component metric at its best-pixel-F1 threshold (SegmentMeIfYouCan's
    choice) with that pixel operating point; ``None`` where no threshold exists (no anomalous pixel)."""
    out: dict[str, tuple[AnomalyComponents, dict[str, float]] | None] = {}
    for name, metric in scores.items():
        with warnings.catch_warnings():
            # Already explained by the note on the undefined pixel metrics.
            warnings.simplefilter("ignore", MetricUndefinedWarning)
            best = metric.threshold_at_best_f1()
        out[name] = (
            None
            if best is None
            else (
                AnomalyComponents(
                    best["threshold"], min_pred_size=rule[0], min_gt_size=rule[1], connect_through_void=rule[2]
                ),
                best,
            )
        )
    return out


def _component_results(
    components: dict[str, tuple[AnomalyComponents, dict[str, float]] | None], head_kind: str
) -> dict[str, Any]:
    """``{"anomaly_components": the primary score's, "anomaly_components_by_score": every score's}``;
    each entry is :meth:`AnomalyComponents.compute` with ``threshold_rule``, ``pixel_f1``,
    ``pixel_precision`` and ``pixel_recall`` (the pixel operating point) and ``score``."""
    by_score: dict[str, Any] = {}
    for name, entry in components.items():
        if entry is None:
            by_score[name] = None
            continue
        metric, best = entry
        by_score[name] = dict(
            metric.compute(),
            threshold_rule="best_pixel_f1",
            pixel_f1=best["f1"],
            pixel_precision=best["precision"],
            pixel_recall=best["recall"],
            score=name,
        )
    primary = PRIMARY_SCORE[head_kind]
    return {"anomaly_components": by_score[primary], "anomaly_components_by_score": by_score}


def _score_anomaly_split(
    images: Callable[[], Iterator[tuple[dict, torch.Tensor]]],
    num_images: int,
    head_kind: str,
    rule: tuple[int, int, bool],
    desc: str,
    progress: bool,
    notes: list[str],
    where: str,
    sources: _AnomalySources | None = None,
) -> dict[str, Any]:
    """Every anomaly metric of one anomaly split, in two passes.

    Args:
        images: called once per pass; yields ``(predict_batch result, mask [H, W])`` per image (0
            inlier, 1 anomaly, 255 void), the same images in the same order each time.
        num_images: their number (for the progress bar).
        rule: ``(min_pred_size, min_gt_size, connect_through_void)`` of the component metrics
            (:data:`COMPONENT_RULES`).
        notes: the undefined-metric notes are appended to it; ``where`` names the masks in them.
        sources: the split's anomaly sources (:func:`_read_anomaly_sources`), for
            ``anomaly_by_source``.

    Returns:
        ``{"anomaly", "anomaly_by_score", "anomaly_components", "anomaly_components_by_score"}``, and
        ``"anomaly_by_source"`` with ``sources``.
    """
    # Pass 1: pixel-level histograms (and, per source, one histogram per source and score).
    scores = _new_anomaly_scores(head_kind)
    by_source = None if sources is None else _SourceScores(sources, head_kind)
    for r, mask in tqdm(images(), total=num_images, desc=f"{desc} (pixels)", disable=not progress):
        maps = _anomaly_score_maps(r)
        _update_anomaly_scores(scores, maps, mask)
        if by_source is not None:
            by_source.update(maps, mask, r.get("img_path"))
    result = _anomaly_results(scores, head_kind)
    notes += _undefined_anomaly_notes(result["anomaly"], where)
    if by_source is not None:
        result["anomaly_by_source"] = by_source.compute(notes)

    # Pass 2: connected components, at thresholds that need the whole split's histogram.
    components = _new_component_metrics(scores, rule)
    if any(entry is not None for entry in components.values()):
        for r, mask in tqdm(images(), total=num_images, desc=f"{desc} (components)", disable=not progress):
            maps = _anomaly_score_maps(r)
            for name, entry in components.items():
                if entry is not None:
                    entry[0].update(maps[name], mask)
    result.update(_component_results(components, head_kind))
    if result["anomaly_components"] is None:
        notes.append(
            f"anomaly_components is null: {where} has no anomalous pixel, so no pixel threshold (best pixel F1) exists"
        )
    elif result["anomaly_components"]["num_pred_components"] == 0:
        notes.append(
            "anomaly_components: ppv is null: no predicted component at the threshold of best pixel F1 "
            f"(min_pred_size={rule[0]})"
        )
    return result


# --------------------------------------------------------------------------------------------
# Temperature scaling
# --------------------------------------------------------------------------------------------


def _temperature_results(
    scaled: dict[str, ScaledCalibration],
    reservoirs: dict[str, LogitReservoir],
    fit_images: list[int],
    score_images: list[int],
    notes: list[str],
    where: str,
) -> dict[str, Any] | None:
    """metrics.json's ``temperature_scaling``: per output (``logits``, ``bayes_posterior``) the
    fitted ``T`` and the calibration of the scored half before and after it; ``None`` (with a note)
    when the split has fewer than two images."""
    if not score_images:
        notes.append(
            f"temperature_scaling is null: {where} has {len(fit_images)} image(s); fitting T on every "
            "other image and scoring the rest needs at least 2"
        )
        return None
    out: dict[str, Any] = {}
    for name, reservoir in reservoirs.items():
        if name not in scaled:
            notes.append(
                f"temperature_scaling.{name} is null: the {len(fit_images)} fitting image(s) of {where} "
                "have no labelled pixel"
            )
            out[name] = None
            continue
        s = scaled[name].compute()
        out[name] = {
            "temperature": s["temperature"],
            "ece_before": s["ece_before"],
            "ece_after": s["ece_after"],
            "mce_before": s["mce_before"],
            "mce_after": s["mce_after"],
            "nll_before": s["nll_before"],
            "nll_after": s["nll_after"],
            "fit_images": len(fit_images),
            "score_images": len(score_images),
            "fit_pixels": len(reservoir),
            "fit_pixels_seen": reservoir.num_seen,
            "score_pixels": s["num_pixels"],
        }
        if s["num_pixels"] == 0:
            notes.append(
                f"temperature_scaling.{name}: the scored images of {where} have no labelled pixel; "
                "its ECE, MCE and NLL are null"
            )
    return out


# --------------------------------------------------------------------------------------------
# Anomaly sources: anomaly/sources.json and anomaly/source_masks/
# --------------------------------------------------------------------------------------------


@dataclass
class _AnomalySources:
    """The anomaly sources of a lab anomaly split.

    Attributes:
        path: the sources.json file.
        names: source id -> name (ids as stored in the source masks).
        masks: image stem -> its source mask (``[H, W]`` uint8: 0 no anomaly, else a source id).
        unmasked: names of the images without a source mask.
    """

    path: Path
    names: dict[int, str]
    masks: dict[str, Path]
    unmasked: list[str]


def _read_anomaly_sources(data_dir: Path) -> _AnomalySources | None:
    """The sources of ``data_dir/anomaly`` (``sources.json`` and ``source_masks/``, see
    :mod:`gmmseg_lab.data.layout`), or ``None`` when either is missing: no per-source results, no error.

    The files themselves are checked by :func:`~gmmseg_lab.data.layout.validate_dataset` (malformed
    sources.json, source masks undecodable, of another size or with undefined ids are errors naming
    the file); an image without a source mask is only noted there, and here its anomalies count for
    no source (its inliers still count as negatives).

    Raises:
        DatasetError: a malformed sources.json, naming it.
    """
    folder = data_dir / "anomaly" / "source_masks"
    parsed = read_anomaly_sources(data_dir)
    if parsed is None or not folder.is_dir():
        return None
    sources, _ = parsed
    masks, unmasked = {}, []
    for image, _ in list_anomaly_pairs(data_dir):
        if (folder / f"{image.stem}.png").is_file():
            masks[image.stem] = folder / f"{image.stem}.png"
        else:
            unmasked.append(image.name)
    return _AnomalySources(
        data_dir / "anomaly" / "sources.json", {s["id"]: s["name"] for s in sources}, masks, unmasked
    )


class _SourceScores:
    """Per-source anomaly metrics: for each source and score, a histogram whose positives are that
    source's anomalous pixels and whose negatives are every inlier pixel of the split (the pixels of
    the other sources and void pixels are left out)."""

    def __init__(self, sources: _AnomalySources, head_kind: str) -> None:
        self.sources = sources
        # No value checks: the masks are built here, the scores were checked by the headline metrics.
        self.scores = {
            name: _new_anomaly_scores(head_kind, key_bits=SOURCE_KEY_BITS, validate=False)
            for name in sources.names.values()
        }
        self.unattributed = 0  # anomalous pixels that no source claims
        self.off_anomaly = 0  # source pixels on inlier pixels (void ones are fine: a band around)

    def update(self, maps: dict[str, torch.Tensor], mask: torch.Tensor, img_path: str | None) -> None:
        """Add one image: ``maps`` (:func:`_anomaly_score_maps`), ``mask`` ``[H, W]``, its image path."""
        device = next(iter(maps.values())).device
        mask = mask.to(device)
        path = self.sources.masks.get(Path(str(img_path)).stem)
        if path is None:  # noted: its anomalies count for no source, its inliers as negatives
            source = torch.zeros_like(mask)
        else:
            source = torch.from_numpy(load_mask(path)).to(device=device, dtype=mask.dtype)
            if source.shape != mask.shape:  # checked up front; a file changed meanwhile
                raise DatasetError(
                    f"{path}: size {source.shape[1]}x{source.shape[0]} differs from its anomaly "
                    f"mask's {mask.shape[1]}x{mask.shape[0]}"
                )
        anomalous, inlier = mask == 1, mask == 0
        self.unattributed += int((anomalous & (source == 0)).sum())
        self.off_anomaly += int((inlier & (source != 0)).sum())
        for sid, name in self.sources.names.items():
            per_source = torch.where(inlier, 0, torch.where(anomalous & (source == sid), 1, 255)).to(mask.dtype)
            _update_anomaly_scores(self.scores[name], maps, per_source)

    def compute(self, notes: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """``{source name: {score name: {"auroc", "ap", "fpr95", "num_pos"}}}``; notes appended."""
        out = {}
        for name, scores in self.scores.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetricUndefinedWarning)  # explained by the note below
                computed = {score: metric.compute() for score, metric in scores.items()}
            out[name] = {score: {k: m[k] for k in ("auroc", "ap", "fpr95", "num_pos")} for score, m in computed.items()}
            first = next(iter(computed.values()))
            if first["num_pos"] == 0 or first["num_neg"] == 0:
                what = "no anomalous pixel of it" if first["num_pos"] == 0 else "no inlier pixel"
                notes.append(f"anomaly_by_source[{name!r}] is null: the anomaly split has {what}")
        where = self.sources.path.parent / "source_masks"
        if self.sources.unmasked:
            shown = ", ".join(self.sources.unmasked[:4]) + (", ..." if len(self.sources.unmasked) > 4 else "")
            notes.append(
                f"anomaly_by_source: {len(self.sources.unmasked)} image(s) have no source mask in {where} "
                f"({shown}); their anomalies count for no source, their inliers as negatives"
            )
        if self.unattributed:
            notes.append(
                f"anomaly_by_source: {self.unattributed} anomalous pixel(s) have no source in {where} "
                "(source id 0); they count for no source"
            )
        if self.off_anomaly:
            notes.append(
                f"anomaly_by_source: {self.off_anomaly} pixel(s) of {where} name a source where the "
                "anomaly mask says inlier; they count as inliers"
            )
        return out


def _undefined_anomaly_notes(headline: dict[str, Any], where: str) -> list[str]:
    """The note (:func:`~gmmseg_lab.data.layout.undefined_anomaly_note`) when the anomaly metrics
    of ``where`` are undefined (no anomalous or no inlier pixel); ``[]`` otherwise."""
    note = undefined_anomaly_note(headline["num_pos"], headline["num_neg"], where)
    return [note] if note else []


def _checked_benchmark(bench_dir: str | Path, fmt: str = "auto"):
    """Check every frame of an anomaly benchmark, then read it (for a lab folder: only its
    ``anomaly/`` split and classes.json are checked; it needs no train or val split).

    Raises:
        DatasetError: every problem found, each naming its file; or a closed-set directory.
    """
    report = check_real_dataset(bench_dir, fmt=fmt, splits=("anomaly",))
    if report.format in CLOSED_SET_FORMATS:
        raise DatasetError(
            f"{bench_dir}: a {report.format} data set is not an anomaly benchmark "
            f"(formats: lab, {', '.join(ANOMALY_FORMATS)})"
        )
    if report.problems:
        raise DatasetError(report.problems, bench_dir)
    return read_anomaly_benchmark(bench_dir, fmt)  # fmt as given: "auto" keeps the detection's notes


def _test_transforms(cfg):
    """The model's val pipeline without its loading steps (``Load*``), as one callable."""
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmseg"))
    pipeline = cfg.val_dataloader.dataset.pipeline
    kept = [t for t in pipeline if not str(t["type"]).split(".")[-1].startswith("Load")]
    return Compose(copy.deepcopy(kept))


def _benchmark_batches(cfg, frames, batch_size: int):
    """Data-loader-like batches from benchmark frames, with their masks.

    Each frame's RGB image (``frame.load_image()``, ``[H, W, 3]`` uint8) is flipped to BGR, as
    mmseg's ``LoadImageFromFile`` gives it, and sent through the model's test transforms.

    Yields:
        ``(data_batch, masks)``: ``data_batch`` as ``predict_batch`` takes it (``inputs``: list of
        ``[3, H', W']`` uint8 tensors, ``data_samples``), ``masks``: one ``[H, W]`` uint8 array
        (0 inlier / 1 anomaly / 255 void) per image at its original size. A batch holds images of
        one transformed size only (mmseg stacks test images without padding them).
    """
    import numpy as np
    from mmengine.dataset import pseudo_collate

    transforms = _test_transforms(cfg)
    samples, masks = [], []
    for frame in frames:
        rgb = frame.load_image()
        mask = frame.load_mask()
        if mask.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{frame.mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its "
                f"image's {rgb.shape[1]}x{rgb.shape[0]} ({frame.image_path})"
            )
        sample = transforms(
            dict(
                img=np.ascontiguousarray(rgb[..., ::-1]),
                img_path=str(frame.image_path),
                ori_shape=rgb.shape[:2],
                img_shape=rgb.shape[:2],
                seg_fields=[],
                reduce_zero_label=False,
            )
        )
        if samples and (len(samples) == batch_size or sample["inputs"].shape != samples[0]["inputs"].shape):
            yield pseudo_collate(samples), masks
            samples, masks = [], []
        samples.append(sample)
        masks.append(mask)
    if samples:
        yield pseudo_collate(samples), masks


def _score_benchmark(
    segmentor, cfg, head_kind: str, benchmark, batch_size: int, progress: bool, notes: list[str] | None = None
) -> dict[str, Any]:
    """Anomaly metrics of ``segmentor`` on an :class:`~gmmseg_lab.data.real.AnomalyBenchmark`:
    ``{"anomaly", "anomaly_by_score", "anomaly_components", "anomaly_components_by_score",
    "anomaly_data", "anomaly_format", "anomaly_frames"}``, in two passes over its frames (as
    :func:`_score_anomaly_split`); the notes on undefined component metrics go to ``notes``.
    The component metrics use :data:`COMPONENT_RULES` of the benchmark's format."""

    def images() -> Iterator[tuple[dict, torch.Tensor]]:
        for batch, masks in _benchmark_batches(cfg, benchmark.frames, batch_size):
            for r, mask in zip(predict_batch(segmentor, batch), masks):
                yield r, torch.from_numpy(mask)

    rule = COMPONENT_RULES.get(benchmark.fmt, DEFAULT_COMPONENT_RULE)
    component_notes: list[str] = []
    result = _score_anomaly_split(
        images,
        len(benchmark.frames),
        head_kind,
        rule,
        f"evaluate {benchmark.fmt}",
        progress,
        component_notes,
        f"{benchmark.root} ({benchmark.fmt})",
    )
    # The caller adds the note on undefined pixel metrics itself (_undefined_anomaly_notes).
    undefined = _undefined_anomaly_notes(result["anomaly"], f"{benchmark.root} ({benchmark.fmt})")
    if notes is not None:
        notes += [n for n in component_notes if n not in undefined]
    return dict(
        result, anomaly_data=str(benchmark.root), anomaly_format=benchmark.fmt, anomaly_frames=len(benchmark.frames)
    )


def evaluate_anomaly(
    model: str | Path,
    bench_dir: str | Path,
    out: str | Path | None = None,
    *,
    fmt: str = "auto",
    config: str | Path | None = None,
    batch_size: int = 4,
    slide: tuple[int, int] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained model on an anomaly benchmark alone; optionally write ``out`` (JSON, atomically).

    Args:
        model: a ``gmmseg-lab train`` work dir or a checkpoint ``.pth``.
        bench_dir: Fishyscapes (Lost & Found, Static), Road Anomaly or SegmentMeIfYouCan
            (RoadAnomaly21, RoadObstacle21) in its release's layout, or a lab data set (its
            ``anomaly/`` split); every frame is checked before any work.
        fmt: ``"auto"``, ``"lab"`` or one of :data:`gmmseg_lab.data.real.ANOMALY_FORMATS`.
        config, batch_size, slide, device, progress: as :func:`evaluate`.

    Returns:
        ``{"anomaly": {"auroc", "ap", "fpr95", "num_pos", "num_neg", "score"}, "anomaly_by_score":
        {score name: metrics}, "anomaly_data", "anomaly_format", "anomaly_frames", "head", "model",
        "checkpoint", "notes"}``.
    """
    benchmark = _checked_benchmark(bench_dir, fmt)
    segmentor, cfg, checkpoint, _, head_kind = _load_model(model, config, slide, device)
    component_notes: list[str] = []
    result = _score_benchmark(segmentor, cfg, head_kind, benchmark, batch_size, progress, component_notes)
    result.update(
        head=head_kind,
        model=str(model),
        checkpoint=str(checkpoint),
        notes=benchmark.notes
        + _undefined_anomaly_notes(result["anomaly"], f"{benchmark.root} ({benchmark.fmt})")
        + component_notes,
    )
    if out is not None:
        atomic_write_json(out, result)
    return result
