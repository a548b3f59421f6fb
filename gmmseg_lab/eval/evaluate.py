"""Score a trained segmentor on a data set in the lab's layout: mIoU, calibration, anomaly detection.

Every metric is a streaming state (:mod:`gmmseg_lab.eval.metrics`), so memory stays constant however
many pixels are scored. The same code scores a GMMSeg model and its softmax twin:

- closed set (``images/<split>``): mIoU and per-class IoU, pixel accuracy, ECE and MCE (15 bins) of
  the softmax over the class logits, with the reliability-diagram bins; for a GMM head also the
  ECE / MCE of Bayes' posterior ``softmax_c log p(x|c)`` (``bayes_posterior_calibration``);
- open world (``anomaly/``, when present): AUROC, AP and FPR at 95% TPR of every anomaly score the
  model offers: ``-max_c log p(x|c)`` (GMMSeg's), ``1 - max softmax`` and the softmax entropy. The
  headline ``anomaly`` entry is GMMSeg's density score for a GMM head and ``1 - max softmax`` for a
  softmax head;
- a real anomaly benchmark (Fishyscapes, Road Anomaly, SegmentMeIfYouCan in their releases'
  layouts, :mod:`gmmseg_lab.data.real`): the same scores, by :func:`evaluate_anomaly` or
  ``evaluate(..., anomaly_data=DIR)``; its images go through the model's test transforms, with
  images and remapped masks from the benchmark reader instead of the pipeline's loading steps.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..data.layout import read_classes, undefined_anomaly_note, validate_dataset
from ..io_utils import atomic_write_json
from .metrics import AnomalyScores, CalibrationError, SegmentationIoU, softmax_confidence_and_entropy

PRIMARY_SCORE = {"gmm": "neg_max_log_likelihood", "softmax": "max_softmax"}


def resolve_model(model: str | Path, config: str | Path | None = None):
    """Turn a work dir or a checkpoint file into ``(config, checkpoint)`` for ``load_segmentor``.

    A work dir holds ``config.py`` and ``last_checkpoint``. A bare ``.pth`` uses ``config`` when
    given, else the ``config.py`` beside it, else the config mmengine stored in the checkpoint.
    """
    from mmengine.config import Config

    model = Path(model)
    if model.is_dir():
        if not (model / "config.py").is_file():
            raise FileNotFoundError(f"{model}: a work dir must hold config.py (written by `gmmseg-lab train`)")
        from ..train import last_checkpoint  # the pointer, or the newest intact checkpoint without one

        checkpoint = last_checkpoint(model)
        if checkpoint is None:
            raise FileNotFoundError(f"{model}: no last_checkpoint and no intact checkpoint; train first or pass "
                                    "a .pth file")
        return Config.fromfile(str(config or model / "config.py")), checkpoint
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such checkpoint file or work dir")
    if config is not None:
        return Config.fromfile(str(config)), model
    if (model.parent / "config.py").is_file():
        return Config.fromfile(str(model.parent / "config.py")), model
    meta = torch.load(model, map_location="cpu", weights_only=False).get("meta", {})
    if "cfg" not in meta:
        raise ValueError(f"{model}: no config beside it and none stored in it; pass --config")
    return Config.fromstring(meta["cfg"], file_format=".py"), model


def _load_model(model: str | Path, config, slide: tuple[int, int] | None, device: str | None):
    """Resolve ``model`` (:func:`resolve_model`), apply ``slide``, load it.

    Returns:
        ``(segmentor, cfg, checkpoint, head, head_kind)``; ``head_kind`` is ``"gmm"`` or ``"softmax"``.
    """
    from ..models import is_gmm_head, load_segmentor
    from ..models.inference import decode_head_of

    cfg, checkpoint = resolve_model(model, config)
    if slide is not None:
        crop, stride = slide
        cfg.model.test_cfg = dict(mode="slide", crop_size=(crop, crop), stride=(stride, stride))
    segmentor, cfg = load_segmentor(cfg, checkpoint, device=device)
    head = decode_head_of(segmentor)
    return segmentor, cfg, checkpoint, head, "gmm" if is_gmm_head(head) else "softmax"


def _loader_for(cfg, data_dir: Path, img_dir: str, ann_dir: str, batch_size: int):
    from ..models import build_dataloader

    cfg = copy.deepcopy(cfg)
    loader = cfg.val_dataloader
    loader.batch_size = batch_size
    loader.num_workers = 0
    loader.pop("persistent_workers", None)
    dataset = loader.dataset
    dataset.data_root = str(data_dir)
    dataset.data_prefix = dict(img_path=img_dir, seg_map_path=ann_dir)
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
        ``{"miou", "acc", "ece", "mce", "per_class_iou", "calibration_bins", "anomaly":
        {"auroc", "ap", "fpr95", "score"}, "anomaly_by_score": {...}, "notes": [...], ...}``; values
        in [0, 1]. The anomaly entries are present only when the data set has an anomaly split.
        Undefined values are NaN / None (``null`` in the JSON file), each explained by a line of
        ``notes`` (and a :class:`~gmmseg_lab.eval.metrics.MetricUndefinedWarning`): a class without
        any pixel in the split and never predicted has IoU NaN; an anomaly split without anomalous
        (or inlier) pixels has AUROC and FPR95 (and AP) None.
    """
    from tqdm.auto import tqdm

    from ..models.inference import predict_batch

    data_dir = Path(data_dir)
    # A benchmark given replaces data_dir/anomaly: that split is then neither checked nor scored.
    validate_dataset(data_dir, splits=(split,), check_anomaly=anomaly_data is None)
    classes, _ = read_classes(data_dir)
    benchmark = _checked_benchmark(anomaly_data, anomaly_format) if anomaly_data is not None else None
    has_anomaly = benchmark is None and (data_dir / "anomaly" / "images").is_dir()

    segmentor, cfg, checkpoint, head, head_kind = _load_model(model, config, slide, device)
    if head.num_classes != len(classes):
        raise ValueError(f"{data_dir / 'classes.json'}: {len(classes)} classes, but the model at {model} "
                         f"predicts {head.num_classes}")

    iou = SegmentationIoU(len(classes))
    calibration = CalibrationError(n_bins=n_bins)
    # For a GMM head, also the calibration of Bayes' posterior softmax_c(log p(x|c)) itself.
    bayes_calibration = CalibrationError(n_bins=n_bins) if head_kind == "gmm" else None
    loader = _loader_for(cfg, data_dir, f"images/{split}", f"annotations/{split}", batch_size)
    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress):
        for r in predict_batch(segmentor, batch):
            gt = r["gt"].to(r["pred"].device)
            iou.update(r["pred"], gt)
            probs = torch.softmax(r["seg_logits"].float(), dim=0).flatten(1).t()
            calibration.update_from_probs(probs, gt.flatten())
            if bayes_calibration is not None:
                posterior = torch.softmax(r["class_log_likelihood"].float(), dim=0).flatten(1).t()
                bayes_calibration.update_from_probs(posterior, gt.flatten())
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
        notes.append(f"per_class_iou of {never} is null (NaN): annotations/{split} has no pixel of them and the "
                     "model predicts none; they are left out of miou")
    if only_pred:
        notes.append(f"per_class_iou of {only_pred} is 0: annotations/{split} has no pixel of them but the model "
                     "predicts some (false positives, counted in miou as in mmseg)")
    result["notes"] = notes
    if bayes_calibration is not None:
        bayes = bayes_calibration.compute()
        result["bayes_posterior_calibration"] = {"ece": bayes["ece"], "mce": bayes["mce"], "bins": bayes["bins"]}

    if benchmark is not None:  # a real anomaly benchmark replaces data_dir/anomaly
        result.update(_score_benchmark(segmentor, cfg, head_kind, benchmark, batch_size, progress))
        notes += benchmark.notes + _undefined_anomaly_notes(result["anomaly"], f"{benchmark.root} ({benchmark.fmt})")
    if has_anomaly:
        scores = _new_anomaly_scores(head_kind)
        loader = _loader_for(cfg, data_dir, "anomaly/images", "anomaly/masks", batch_size)
        for batch in tqdm(loader, desc="evaluate anomaly", disable=not progress):
            for r in predict_batch(segmentor, batch):
                _update_anomaly_scores(scores, r, r["gt"])
        result.update(_anomaly_results(scores, head_kind))
        notes += _undefined_anomaly_notes(result["anomaly"], str(data_dir / "anomaly" / "masks"))

    if out is not None:
        atomic_write_json(out, result)
    return result


# --------------------------------------------------------------------------------------------
# Real anomaly benchmarks (gmmseg_lab.data.real): Fishyscapes, Road Anomaly, SegmentMeIfYouCan
# --------------------------------------------------------------------------------------------


def _new_anomaly_scores(head_kind: str) -> dict[str, AnomalyScores]:
    """One streaming metric per anomaly score the head offers."""
    scores = {"max_softmax": AnomalyScores(), "entropy": AnomalyScores()}
    if head_kind == "gmm":
        scores["neg_max_log_likelihood"] = AnomalyScores()
    return scores


def _update_anomaly_scores(scores: dict[str, AnomalyScores], r: dict, mask: torch.Tensor) -> None:
    """Add one image: ``r`` from ``predict_batch`` (``seg_logits`` ``[C, H, W]``, for GMM heads
    ``anomaly_score`` ``[H, W]``), ``mask`` ``[H, W]`` 0 inlier / 1 anomaly / 255 void."""
    mask = mask.to(r["seg_logits"].device).flatten()
    logits = r["seg_logits"].float().flatten(1).t()
    max_prob, entropy = softmax_confidence_and_entropy(logits)
    scores["max_softmax"].update(1.0 - max_prob, mask)
    scores["entropy"].update(entropy, mask)
    if "neg_max_log_likelihood" in scores:
        scores["neg_max_log_likelihood"].update(r["anomaly_score"].flatten(), mask)


def _anomaly_results(scores: dict[str, AnomalyScores], head_kind: str) -> dict[str, Any]:
    """``{"anomaly": the head's primary score's metrics and its name, "anomaly_by_score": every score's}``."""
    by_score = {name: metric.compute() for name, metric in scores.items()}
    primary = PRIMARY_SCORE[head_kind]
    return {"anomaly": dict(by_score[primary], score=primary), "anomaly_by_score": by_score}


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
    from ..data.layout import DatasetError
    from ..data.real import ANOMALY_FORMATS, CLOSED_SET_FORMATS, check_real_dataset, read_anomaly_benchmark

    report = check_real_dataset(bench_dir, fmt=fmt, splits=("anomaly",))
    if report.format in CLOSED_SET_FORMATS:
        raise DatasetError(f"{bench_dir}: a {report.format} data set is not an anomaly benchmark "
                           f"(formats: lab, {', '.join(ANOMALY_FORMATS)})")
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

    from ..data.layout import DatasetError

    transforms = _test_transforms(cfg)
    samples, masks = [], []
    for frame in frames:
        rgb = frame.load_image()
        mask = frame.load_mask()
        if mask.shape != rgb.shape[:2]:
            raise DatasetError(f"{frame.mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its "
                               f"image's {rgb.shape[1]}x{rgb.shape[0]} ({frame.image_path})")
        sample = transforms(dict(img=np.ascontiguousarray(rgb[..., ::-1]), img_path=str(frame.image_path),
                                 ori_shape=rgb.shape[:2], img_shape=rgb.shape[:2], seg_fields=[],
                                 reduce_zero_label=False))
        if samples and (len(samples) == batch_size or sample["inputs"].shape != samples[0]["inputs"].shape):
            yield pseudo_collate(samples), masks
            samples, masks = [], []
        samples.append(sample)
        masks.append(mask)
    if samples:
        yield pseudo_collate(samples), masks


def _score_benchmark(segmentor, cfg, head_kind: str, benchmark, batch_size: int, progress: bool) -> dict[str, Any]:
    """Anomaly metrics of ``segmentor`` on an :class:`~gmmseg_lab.data.real.AnomalyBenchmark`:
    ``{"anomaly", "anomaly_by_score", "anomaly_data", "anomaly_format", "anomaly_frames"}``."""
    from tqdm.auto import tqdm

    from ..models.inference import predict_batch

    scores = _new_anomaly_scores(head_kind)
    with tqdm(total=len(benchmark.frames), desc=f"evaluate {benchmark.fmt}", disable=not progress) as bar:
        for batch, masks in _benchmark_batches(cfg, benchmark.frames, batch_size):
            for r, mask in zip(predict_batch(segmentor, batch), masks):
                _update_anomaly_scores(scores, r, torch.from_numpy(mask))
            bar.update(len(masks))
    return dict(_anomaly_results(scores, head_kind), anomaly_data=str(benchmark.root),
                anomaly_format=benchmark.fmt, anomaly_frames=len(benchmark.frames))


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
    result = _score_benchmark(segmentor, cfg, head_kind, benchmark, batch_size, progress)
    result.update(head=head_kind, model=str(model), checkpoint=str(checkpoint),
                  notes=benchmark.notes + _undefined_anomaly_notes(result["anomaly"],
                                                                   f"{benchmark.root} ({benchmark.fmt})"))
    if out is not None:
        atomic_write_json(out, result)
    return result
