"""What the notebooks look at: a trained run's per-pixel outputs on a few images, its logs and metrics.

:func:`collect_predictions` runs a ``gmmseg-lab train`` work dir over the first images of a split and
returns plain numpy arrays (:class:`Predictions`), cached in the run dir so every notebook that looks
at the same run pays for inference once. :func:`learning_curves` reads mmengine's ``scalars.json``.
Figures (:mod:`gmmseg_lab.viz`) take these arrays, never a model, so they are testable without one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import last_checkpoint
from ..data.layout import load_image, read_classes, validate_dataset
from ..eval.evaluate import _loader_for, resolve_model
from ..gmm.density import diag_gaussian_log_prob
from ..io_utils import atomic_open, source_digest
from ..models import is_gmm_head, load_segmentor
from ..models.inference import decode_head_of, predict_batch

CACHE_VERSION = 2
#: The code whose output the predictions cache holds: a change in it recomputes the cache.
_INFERENCE_CODE = (
    "experiments/predictions.py",
    "models",
    "gmm",
    "checkpoints.py",
    "data/layout.py",
    "eval/evaluate.py",
)


def _inference_code_digest() -> str:
    return source_digest(Path(__file__).resolve().parents[1], _INFERENCE_CODE)


@dataclass
class Predictions:
    """Per-pixel outputs of one model on ``N`` images of one split (numpy, on the CPU).

    Attributes:
        names: ``N`` image file names.
        images: ``[N, H, W, 3]`` uint8 RGB.
        gt: ``[N, H, W]`` int64: class index (255 ignore) for a closed-set split; for the ``anomaly``
            split the anomaly mask (0 inlier, 1 anomaly, 255 void).
        pred: ``[N, H, W]`` int64 argmax class.
        probs: ``[N, C, H, W]`` float32 softmax of the class logits.
        anomaly_score: ``[N, H, W]`` float32, higher = more anomalous: ``-max_c log p(x|c)`` for a GMM
            head, ``1 - max softmax`` for a softmax head.
        classes, palette: class names and ``[C, 3]`` uint8 colours.
        head: ``"gmm"`` or ``"softmax"``.
        class_log_likelihood: ``[N, C, H, W]`` float32 ``log p(x|c)`` (GMM only).
        embeddings: ``[N, D, h, w]`` float32 at feature resolution (GMM only).
        gt_small: ``[N, h, w]`` int64, ``gt`` resized (nearest) to the embeddings' grid (GMM only).
        means, stds: ``[C, M, D]`` float32 mixture parameters; log_weights ``[C, M]`` (GMM only).
        split, run_dir: where the arrays come from.
        labeled: False for photographs without labels (:func:`gmmseg_lab.experiments.explore.predict_images`):
            ``gt`` and ``gt_small`` are then all 255 and the views colour by ``pred`` instead.
        features: ``[N, Ch, h, w]`` float32, a softmax head's fused feature (the input of its 1x1
            classifier), at feature resolution (unlabeled predictions of a softmax head only).
        score_maps: ``{score name: [N, H, W] float32}``, every anomaly score the head offers
            (:func:`gmmseg_lab.eval.evaluate._anomaly_score_maps`; unlabeled predictions only).
    """

    names: list[str]
    images: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    probs: np.ndarray
    anomaly_score: np.ndarray
    classes: list[str]
    palette: np.ndarray
    head: str
    split: str = "val"
    run_dir: str = ""
    class_log_likelihood: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    gt_small: np.ndarray | None = None
    means: np.ndarray | None = None
    stds: np.ndarray | None = None
    log_weights: np.ndarray | None = None
    labeled: bool = True
    features: np.ndarray | None = None
    score_maps: dict[str, np.ndarray] | None = None

    @property
    def is_gmm(self) -> bool:
        return self.head == "gmm"

    @property
    def num_components(self) -> int:
        """M, Gaussians per class (0 for a softmax head)."""
        return 0 if self.means is None else int(self.means.shape[1])

    def component_log_prob(self, index: int) -> np.ndarray:
        """``[C, M, h, w]`` float64 *weighted* component log-densities of image ``index``'s embeddings:
        ``log w_cm + log N(x; mu_cm, diag sigma_cm^2)`` (unlike
        :meth:`gmmseg_lab.gmm.GMMClassifier.component_log_prob`, the mixture weight is included, so the
        argmax over ``M`` is the most likely component and a logsumexp over ``M`` is ``log p(x|c)``)."""
        if self.embeddings is None or self.means is None:
            raise ValueError("component log-densities need a GMM head's embeddings (whole-image inference)")
        c, m, d = self.means.shape
        x = torch.from_numpy(self.embeddings[index]).double()  # [D, h, w]
        h, w = x.shape[1:]
        flat = diag_gaussian_log_prob(
            x.reshape(d, h * w).T,
            torch.from_numpy(self.means).double().reshape(c * m, d),
            torch.from_numpy(self.stds).double().reshape(c * m, d),
        )  # [h*w, C*M]
        return flat.T.reshape(c, m, h, w).numpy() + self.log_weights.astype(np.float64)[..., None, None]


def _cache_path(run_dir: Path, split: str, max_images: int) -> Path:
    return run_dir / "analysis" / f"predictions_{split}_{max_images}.npz"


def _checkpoint_of(run_dir: Path) -> str:
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: no last_checkpoint and no intact checkpoint; train this run first")
    return str(checkpoint)


def collect_predictions(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str = "val",
    max_images: int = 8,
    device: str | None = None,
    use_cache: bool = True,
) -> Predictions:
    """Run a trained model on the first ``max_images`` images of ``split`` (``val``, ``train``, ``anomaly``).

    The arrays are cached in ``run_dir/analysis/`` (atomically) and reused while the run's checkpoint,
    the data folder and the inference code are the same; ``use_cache=False`` recomputes. The GMM's
    ``embeddings`` and ``gt_small`` exist only for whole-image inference (a config with
    ``test_cfg.mode = "slide"`` gives None there).
    """
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be a positive int, got {max_images!r}")
    if split not in ("train", "val", "anomaly"):
        raise ValueError(f"split must be 'train', 'val' or 'anomaly', got {split!r}")
    checkpoint = _checkpoint_of(run_dir)
    cache = _cache_path(run_dir, split, max_images)
    if use_cache and cache.is_file():
        loaded = _load_cache(cache, checkpoint, data_dir)
        if loaded is not None:
            return loaded

    if split == "anomaly":
        validate_dataset(data_dir, splits=(), check_anomaly=True)
        img_dir, ann_dir = "anomaly/images", "anomaly/masks"
    else:
        validate_dataset(data_dir, splits=(split,), check_anomaly=False)
        img_dir, ann_dir = f"images/{split}", f"annotations/{split}"
    classes, palette = read_classes(data_dir)
    cfg, checkpoint = resolve_model(run_dir)
    model, cfg = load_segmentor(cfg, checkpoint, device=device)
    head = decode_head_of(model)
    gmm = is_gmm_head(head)
    loader = _loader_for(cfg, data_dir, img_dir, ann_dir, batch_size=min(4, max_images))

    out: dict[str, list] = {
        k: []
        for k in (
            "names",
            "images",
            "gt",
            "pred",
            "probs",
            "anomaly_score",
            "class_log_likelihood",
            "embeddings",
            "gt_small",
        )
    }
    for batch in loader:
        for r in predict_batch(model, batch):
            if len(out["names"]) >= max_images:
                break
            path = Path(r["img_path"])
            out["names"].append(path.name)
            out["images"].append(load_image(path))
            gt = r["gt"].cpu().long()
            out["gt"].append(gt.numpy())
            out["pred"].append(r["pred"].cpu().numpy().astype(np.int64))
            probs = torch.softmax(r["seg_logits"].float(), dim=0).cpu()
            out["probs"].append(probs.numpy().astype(np.float32))
            if gmm:
                out["anomaly_score"].append(r["anomaly_score"].float().cpu().numpy())
                out["class_log_likelihood"].append(r["class_log_likelihood"].float().cpu().numpy())
                if "embeddings" in r:  # whole-image inference only
                    emb = r["embeddings"].float().cpu()
                    out["embeddings"].append(emb.numpy())
                    small = torch.nn.functional.interpolate(
                        gt[None, None].float(), size=emb.shape[-2:], mode="nearest"
                    )[0, 0].long()
                    out["gt_small"].append(small.numpy())
            else:
                out["anomaly_score"].append((1.0 - probs.amax(0)).numpy())
        if len(out["names"]) >= max_images:
            break
    if not out["names"]:
        raise ValueError(f"{data_dir / img_dir}: no images to predict")

    preds = Predictions(
        names=out["names"],
        images=np.stack(out["images"]),
        gt=np.stack(out["gt"]),
        pred=np.stack(out["pred"]),
        probs=np.stack(out["probs"]),
        anomaly_score=np.stack(out["anomaly_score"]).astype(np.float32),
        classes=list(classes),
        palette=np.asarray(palette, dtype=np.uint8),
        head="gmm" if gmm else "softmax",
        split=split,
        run_dir=str(run_dir),
    )
    if gmm:
        preds.class_log_likelihood = np.stack(out["class_log_likelihood"]).astype(np.float32)
        if len(out["embeddings"]) == len(out["names"]):
            preds.embeddings = np.stack(out["embeddings"]).astype(np.float32)
            preds.gt_small = np.stack(out["gt_small"])
        preds.means = head.gmm.means.detach().float().cpu().numpy()
        preds.stds = head.gmm.stds.detach().float().cpu().numpy()
        preds.log_weights = head.gmm.log_weights.detach().float().cpu().numpy()
    _save_cache(cache, preds, str(checkpoint), data_dir)
    return preds


def _save_cache(path: Path, preds: Predictions, checkpoint: str, data_dir: Path) -> None:
    arrays = {f.name: getattr(preds, f.name) for f in fields(preds) if isinstance(getattr(preds, f.name), np.ndarray)}
    meta = dict(
        version=CACHE_VERSION,
        checkpoint=checkpoint,
        data=str(data_dir.resolve()),
        code=_inference_code_digest(),
        names=preds.names,
        classes=preds.classes,
        head=preds.head,
        split=preds.split,
        run_dir=preds.run_dir,
    )
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def _load_cache(path: Path, checkpoint: str, data_dir: Path) -> Predictions | None:
    """The cached predictions, or None when stale or damaged (then they are recomputed)."""
    import zipfile
    import zlib

    try:
        with np.load(path) as npz:
            meta = json.loads(bytes(npz["__meta__"]).decode())
            if (
                meta.get("version") != CACHE_VERSION
                or meta.get("checkpoint") != checkpoint
                or meta.get("data") != str(data_dir.resolve())
                or meta.get("code") != _inference_code_digest()
            ):
                return None
            arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
        return Predictions(
            names=meta["names"],
            classes=meta["classes"],
            head=meta["head"],
            split=meta["split"],
            run_dir=meta["run_dir"],
            **arrays,
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error):
        return None


def learning_curves(run_dir: str | Path) -> dict[str, dict[str, list[float]]]:
    """Training and validation scalars of a run, from mmengine's ``vis_data/scalars.json`` files.

    Returns:
        ``{"train": {key: [...], "step": [...]}, "val": {key: [...], "step": [...]}}``; a key missing
        on some rows gets NaN there. When a run was resumed, the logs of every session are joined and
        a step logged twice keeps its latest value.
    """
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("*/vis_data/scalars.json"))
    rows: dict[str, dict[int, dict]] = {"train": {}, "val": {}}
    for file in files:
        for line in file.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            step = row.get("step", row.get("iter"))
            if step is None:
                continue
            kind = "train" if any(k.startswith("loss") or k == "lr" for k in row) else "val"
            rows[kind][int(step)] = row
    curves: dict[str, dict[str, list[float]]] = {}
    for kind, by_step in rows.items():
        steps = sorted(by_step)
        keys = sorted(
            {k for r in by_step.values() for k in r} - {"step", "iter", "epoch", "time", "data_time", "memory", "eta"}
        )
        curves[kind] = {"step": [float(s) for s in steps]}
        for key in keys:
            curves[kind][key] = [
                float(by_step[s][key]) if isinstance(by_step[s].get(key), (int, float)) else float("nan") for s in steps
            ]
    return curves


def score_norm_parameters(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The learned LayerNorm over the class scores of a GMMSeg run (its class logits are
    ``gamma * LN(s) + beta``), from the run's last checkpoint.

    Returns:
        ``{"gamma": [C], "beta": [C]}`` float64, or None for a softmax run (it has no such layer).
    """
    state = torch.load(_checkpoint_of(Path(run_dir)), map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    keys = sorted(k for k in state if k.endswith("gmm_score_norm.weight"))
    if not keys:
        return None
    prefix = keys[-1][: -len("weight")]  # the final decode head's (the last stage of a cascade)
    return {"gamma": state[prefix + "weight"].double().numpy(), "beta": state[prefix + "bias"].double().numpy()}
