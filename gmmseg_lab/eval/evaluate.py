"""Score a trained segmentor on a data set in the lab's layout: mIoU, calibration, anomaly detection.

Every metric is a streaming state (:mod:`gmmseg_lab.eval.metrics`), so memory stays constant however
many pixels are scored. The same code scores a GMMSeg model and its softmax twin:

- closed set (``images/<split>``): mIoU and per-class IoU, pixel accuracy, ECE and MCE (15 bins) of
  the softmax over the class logits, with the reliability-diagram bins; for a GMM head also the
  ECE / MCE of Bayes' posterior ``softmax_c log p(x|c)`` (``bayes_posterior_calibration``);
- open world (``anomaly/``, when present): AUROC, AP and FPR at 95% TPR of every anomaly score the
  model offers: ``-max_c log p(x|c)`` (GMMSeg's), ``1 - max softmax`` and the softmax entropy. The
  headline ``anomaly`` entry is GMMSeg's density score for a GMM head and ``1 - max softmax`` for a
  softmax head.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..data.layout import read_classes, validate_dataset
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
        pointer = model / "last_checkpoint"
        if not pointer.is_file():
            raise FileNotFoundError(f"{model}: no last_checkpoint; train first or pass a .pth file")
        return Config.fromfile(str(config or model / "config.py")), Path(pointer.read_text().strip())
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
) -> dict[str, Any]:
    """Evaluate a trained model on ``data_dir`` and optionally write ``out`` (JSON, atomically).

    Args:
        model: a ``gmmseg-lab train`` work dir or a checkpoint ``.pth``.
        data_dir: a data set in the lab's layout (validated before any work).
        config: a config file overriding the one found with the model.
        split: the closed-set split to score.
        slide: ``(crop, stride)`` for sliding-window inference; ``None`` scores whole images.

    Returns:
        ``{"miou", "acc", "ece", "mce", "per_class_iou", "calibration_bins", "anomaly":
        {"auroc", "ap", "fpr95", "score"}, "anomaly_by_score": {...}, ...}``; values in [0, 1]. The
        anomaly entries are present only when the data set has an anomaly split.
    """
    from tqdm.auto import tqdm

    from ..models import is_gmm_head, load_segmentor
    from ..models.inference import decode_head_of, predict_batch

    data_dir = Path(data_dir)
    validate_dataset(data_dir, splits=(split,), check_anomaly=True)
    classes, _ = read_classes(data_dir)
    has_anomaly = (data_dir / "anomaly" / "images").is_dir()

    cfg, checkpoint = resolve_model(model, config)
    if slide is not None:
        crop, stride = slide
        cfg.model.test_cfg = dict(mode="slide", crop_size=(crop, crop), stride=(stride, stride))
    segmentor, cfg = load_segmentor(cfg, checkpoint, device=device)
    head = decode_head_of(segmentor)
    head_kind = "gmm" if is_gmm_head(head) else "softmax"
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
    if bayes_calibration is not None:
        bayes = bayes_calibration.compute()
        result["bayes_posterior_calibration"] = {"ece": bayes["ece"], "mce": bayes["mce"], "bins": bayes["bins"]}

    if has_anomaly:
        scores = {"max_softmax": AnomalyScores(), "entropy": AnomalyScores()}
        if head_kind == "gmm":
            scores["neg_max_log_likelihood"] = AnomalyScores()
        loader = _loader_for(cfg, data_dir, "anomaly/images", "anomaly/masks", batch_size)
        for batch in tqdm(loader, desc="evaluate anomaly", disable=not progress):
            for r in predict_batch(segmentor, batch):
                mask = r["gt"].to(r["pred"].device).flatten()
                logits = r["seg_logits"].float().flatten(1).t()
                max_prob, entropy = softmax_confidence_and_entropy(logits)
                scores["max_softmax"].update(1.0 - max_prob, mask)
                scores["entropy"].update(entropy, mask)
                if head_kind == "gmm":
                    scores["neg_max_log_likelihood"].update(r["anomaly_score"].flatten(), mask)
        by_score = {name: metric.compute() for name, metric in scores.items()}
        primary = PRIMARY_SCORE[head_kind]
        result["anomaly"] = dict(by_score[primary], score=primary)
        result["anomaly_by_score"] = by_score

    if out is not None:
        atomic_write_json(out, result)
    return result
