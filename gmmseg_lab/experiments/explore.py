"""Your own images, no labels needed: a trained model's per-pixel outputs on a folder of photographs.

:func:`predict_images` is the unlabeled sibling of
:func:`~gmmseg_lab.experiments.predictions.collect_predictions`: it runs a model (a ``gmmseg-lab train``
work dir, one converted by ``gmmseg-lab import-release``, or an mmseg config + checkpoint) over
photographs of any size and returns the same :class:`~gmmseg_lab.experiments.predictions.Predictions`,
with ``gt`` all 255 (ignore) and ``labeled=False``, so the figures colour by the predicted class and
the anomaly score where they would use the ground truth, and leave out what needs labels.

- GMM head: ``class_log_likelihood`` ``log p(x|c)``, ``embeddings`` (stitched in slide mode), the
  mixture, and ``anomaly_score = -max_c log p(x|c)``;
- softmax head: ``features`` (the decode head's fused feature, the input of its 1x1 classifier) and
  ``anomaly_score = 1 - max softmax``;
- both: ``score_maps``, every anomaly score the head offers (max-softmax, entropy, max-logit, energy;
  the density scores for a GMM head), as the evaluator computes them.

Photographs larger than the model's training crop go through sliding-window inference (``slide``).
Images of different sizes are brought to one size (the first image's, longest side at most
``max_side``): each is resized to cover it, keeping its aspect ratio, and centre-cropped, so nothing
is stretched and no padding is scored.

:class:`ImageScorer` keeps a loaded model for repeated calls (the upload control,
:mod:`gmmseg_lab.viz.upload`). :func:`fit_embedding_map` / :func:`place_on_map` fit an openTSNE map on
labelled pixels (and the mixture means) and place new images' pixels on it with openTSNE's
``transform``: where an anomaly lands among the training classes. Notebooks 02, 03 and 06 build
their views of a folder of photographs from these; :mod:`gmmseg_lab.report.explore` runs them into a
report (``gmmseg-lab explore``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.layout import DatasetError, load_image, read_classes, validate_dataset
from ..eval.evaluate import _anomaly_score_maps, _test_transforms, resolve_model
from ..models import is_gmm_head, load_segmentor
from ..models.inference import decode_head_of, predict_batch
from ..viz import anomaly as van
from ..viz import embedding as ve
from ..viz.explore import anomaly_maps_figure, segmentation_figure, upload_widget
from .notebook import embedding_sentences as labelled
from .predictions import Predictions, collect_predictions
from .runs import ensure_run

#: File suffixes :func:`list_images` reads from a folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: What the views say in place of a metric that needs labels.
NO_LABELS_NOTE = (
    "these images have no labels: metrics that need them (mIoU, calibration, AUROC / AP / FPR95, "
    "component usage on labelled pixels) are left out; the views colour by the predicted class "
    "and the anomaly score instead"
)
#: Default longest side of the images predicted (larger ones are resized down first): CPU time and
#: the figures' size grow with the pixel count.
MAX_SIDE = 384

__all__ = [
    "IMAGE_SUFFIXES",
    "NO_LABELS_NOTE",
    "EmbeddingMap",
    "ImageScorer",
    "fit_embedding_map",
    "list_images",
    "model_classes",
    "place_on_map",
    "predict_images",
    "reference_predictions",
]


# ----------------------------------------------------------------------------------- images
def list_images(images, max_images: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The images to predict, as ``[(name, [H, W, 3] uint8 RGB)]``, in a stable order.

    Args:
        images: a folder (its image files, :data:`IMAGE_SUFFIXES`, sorted by name; not recursive),
            one image file, a list of files, a ``{name: array}`` mapping, or a list of arrays
            (``[H, W, 3]`` uint8 RGB, ``[H, W]`` grey, or ``[H, W, 4]`` RGBA: alpha dropped).
        max_images: keep the first this many.

    Raises:
        FileNotFoundError: a folder or file that does not exist.
        ValueError: a folder without images, a file that is not a readable image, an array of
            another shape or type (each message names the file or the list position).
    """

    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
    if isinstance(images, (str, Path)):
        path = Path(images).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"images {path}: no such folder or image file")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"images {path}: no image files in it (expected {', '.join(IMAGE_SUFFIXES)})")
            items: list = files
        else:
            items = [path]
    elif isinstance(images, Mapping):
        items = list(images.items())
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, Sequence) and not isinstance(images, (bytes, bytearray)):
        items = list(images)
    else:
        raise ValueError(
            f"images must be a folder, an image file, a list of files or arrays, or a "
            f"{{name: array}} mapping; got {type(images).__name__}"
        )
    if not items:
        raise ValueError("images: an empty list; give at least one image")
    items = items[:max_images] if max_images else items
    out = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, value = item
        elif isinstance(item, (str, Path)):
            name, value = Path(item).name, Path(item)
        else:
            name, value = f"image_{i}", item
        if isinstance(value, (str, Path)):
            value = Path(value).expanduser()
            if not value.is_file():
                raise FileNotFoundError(f"images[{i}] {value}: no such image file")
            try:
                array = load_image(value)
            except OSError as err:  # PIL's UnidentifiedImageError is an OSError
                raise ValueError(f"images[{i}] {value}: not a readable image ({err})") from None
        else:
            array = _rgb_array(value, f"images[{i}] ({name})")
        out.append((name, array))
    return out


def _rgb_array(value, what: str) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB from a grey, RGB or RGBA uint8 array."""
    array = np.asarray(value)
    if array.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 image array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"{what}: expected [H, W, 3] RGB (or [H, W] grey, [H, W, 4] RGBA), got shape {array.shape}")
    return np.ascontiguousarray(array[..., :3])


def common_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(H, W)`` of ``shape`` scaled down (aspect ratio kept) so that its longest side is at most ``max_side``."""
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 16:
        raise ValueError(f"max_side must be an int >= 16, got {max_side!r}")
    height, width = shape
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (``[h, w, 3]`` uint8) resized to cover ``size`` = ``(H, W)`` with its aspect ratio kept
    (bilinear), then centre-cropped to it: ``[H, W, 3]`` uint8, nothing stretched, nothing padded."""
    from PIL import Image

    height, width = size
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    scale = max(height / h, width / w)
    new = (max(width, round(w * scale)), max(height, round(h * scale)))  # PIL sizes are (W, H)
    resized = np.asarray(Image.fromarray(image).resize(new, Image.BILINEAR))
    top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


# ----------------------------------------------------------------------------------- the model
def _default_palette(num_classes: int) -> np.ndarray:
    """``[C, 3]`` uint8 distinct colours for a model that names no palette (golden-angle hues)."""
    import colorsys

    return np.asarray(
        [
            [round(255 * v) for v in colorsys.hsv_to_rgb((0.61803398875 * c) % 1.0, 0.65, 0.9)]
            for c in range(num_classes)
        ],
        dtype=np.uint8,
    )


def model_classes(model_path: str | Path, cfg, num_classes: int) -> tuple[list[str], np.ndarray, str]:
    """The class names and ``[C, 3]`` uint8 palette of a model, and where they were read.

    Looked for in order: ``classes.json`` in the work dir (``gmmseg-lab import-release`` writes one)
    or beside the checkpoint; the ``classes.json`` of the config's ``data_root`` (a lab-trained run's
    data set); the config's dataset ``metainfo``; else generic names ``class 0`` ... with distinct
    colours. A source whose number of classes is not the head's ``num_classes`` is skipped.
    """

    model_path = Path(model_path)
    folder = model_path if model_path.is_dir() else model_path.parent
    candidates = [folder / "classes.json"]
    if cfg.get("data_root"):
        candidates.append(Path(str(cfg.data_root)) / "classes.json")
    for path in candidates:
        if path.is_file():
            try:
                classes, palette = read_classes(path)
            except (DatasetError, ValueError, OSError):
                continue
            if len(classes) == num_classes:
                return list(classes), np.asarray(palette, dtype=np.uint8), str(path)
    for loader in ("test_dataloader", "val_dataloader"):
        meta = ((cfg.get(loader) or {}).get("dataset") or {}).get("metainfo") or {}
        classes = list(meta.get("classes") or [])
        if len(classes) == num_classes:
            palette = meta.get("palette")
            palette = (
                np.asarray(palette, dtype=np.uint8)
                if palette is not None and len(palette) == num_classes
                else _default_palette(num_classes)
            )
            return [str(c) for c in classes], palette, f"{loader}.dataset.metainfo"
    return [f"class {c}" for c in range(num_classes)], _default_palette(num_classes), "generic names"


def _training_crop(cfg) -> tuple[int, int] | None:
    """The ``(h, w)`` a model was trained on: the config's ``crop_size``, else its data preprocessor's size."""
    for value in (cfg.get("crop_size"), (cfg.model.get("data_preprocessor") or {}).get("size")):
        if value is not None:
            try:
                h, w = (int(v) for v in value)
            except (TypeError, ValueError):
                continue
            if h > 0 and w > 0:
                return h, w
    return None


def _test_cfg(cfg, slide) -> dict:
    """``model.test_cfg`` for ``slide``: ``(crop, stride)``; ``False``: the config's own; ``None``
    (auto): the config's when it slides, else windows of the training crop every 2/3 of it (an
    image no larger than the crop is one window, i.e. whole-image inference)."""
    own = dict(cfg.model.get("test_cfg") or {})
    if slide is False:
        return own
    if slide is not None:
        try:
            crop, stride = (int(v) for v in slide)
        except (TypeError, ValueError):
            raise ValueError(f"slide must be None, False or (crop, stride), got {slide!r}") from None
        if not 0 < stride <= crop:
            raise ValueError(f"slide (crop, stride) needs 0 < stride <= crop, got {slide!r}")
        return dict(mode="slide", crop_size=(crop, crop), stride=(stride, stride))
    if own.get("mode") == "slide":
        return own
    crop = _training_crop(cfg)
    if crop is None:
        return own
    return dict(mode="slide", crop_size=crop, stride=tuple(max(1, (2 * c) // 3) for c in crop))


class ImageScorer:
    """A loaded model that predicts unlabeled images (:meth:`predict`); build it with :meth:`load`.

    Attributes:
        model, cfg: the segmentor (eval mode) and its config (with the ``test_cfg`` in use).
        head: ``"gmm"`` or ``"softmax"``; classes, palette: names and ``[C, 3]`` uint8 colours.
        classes_source: where the class names were read (:func:`model_classes`).
        checkpoint: the weights loaded; source: the work dir or checkpoint given.
    """

    def __init__(self, model, cfg, checkpoint, source, classes, palette, classes_source: str):

        self.model, self.cfg, self.checkpoint, self.source = model, cfg, str(checkpoint), str(source)
        self.decode_head = decode_head_of(model)
        self.head = "gmm" if is_gmm_head(self.decode_head) else "softmax"
        self.classes, self.palette, self.classes_source = list(classes), np.asarray(palette, np.uint8), classes_source
        self._transforms = None

    @classmethod
    def load(
        cls, checkpoint: str | Path, config: str | Path | None = None, device: str | None = None, slide=None
    ) -> "ImageScorer":
        """Load a work dir (``gmmseg-lab train`` or ``import-release``), or a checkpoint ``.pth`` with
        ``config`` (an mmseg config file; default the ``config.py`` beside it or the one stored in it).

        Args:
            slide: ``None`` (auto, see :func:`_test_cfg`): sliding windows of the training crop for
                images larger than it; ``(crop, stride)``: those windows; ``False``: the config's
                ``test_cfg`` as it is.

        Raises:
            FileNotFoundError, ConfigError, CheckpointError, ValueError: as
            :func:`gmmseg_lab.eval.evaluate.resolve_model` and :func:`gmmseg_lab.models.load_segmentor`
            (each names the file).
        """

        cfg, weights = resolve_model(checkpoint, config)
        cfg.model.test_cfg = _test_cfg(cfg, slide)
        model, cfg = load_segmentor(cfg, weights, device=device)
        num_classes = int(decode_head_of(model).num_classes)
        classes, palette, source = model_classes(checkpoint, cfg, num_classes)
        return cls(model, cfg, weights, checkpoint, classes, palette, source)

    @property
    def slide(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """``(crop_size, stride)`` of sliding-window inference, or None for whole-image inference."""
        test_cfg = self.model.test_cfg or {}
        if test_cfg.get("mode") != "slide":
            return None
        return tuple(test_cfg["crop_size"]), tuple(test_cfg["stride"])

    def _batches(self, named: list[tuple[str, np.ndarray]], batch_size: int):
        """Data-loader-like batches of the images through the model's test transforms (loading steps
        dropped; RGB flipped to BGR as mmseg's ``LoadImageFromFile`` gives it)."""
        from mmengine.dataset import pseudo_collate

        if self._transforms is None:
            self._transforms = _test_transforms(self.cfg)
        samples = []
        for name, rgb in named:
            sample = self._transforms(
                dict(
                    img=np.ascontiguousarray(rgb[..., ::-1]),
                    img_path=name,
                    ori_shape=rgb.shape[:2],
                    img_shape=rgb.shape[:2],
                    seg_fields=[],
                    reduce_zero_label=False,
                )
            )
            if samples and (len(samples) == batch_size or sample["inputs"].shape != samples[0]["inputs"].shape):
                yield pseudo_collate(samples)
                samples = []
            samples.append(sample)
        if samples:
            yield pseudo_collate(samples)

    def predict(
        self, images, max_images: int | None = 8, max_side: int = MAX_SIDE, batch_size: int = 2, progress: bool = False
    ) -> Predictions:
        """Per-pixel outputs on unlabeled ``images`` (anything :func:`list_images` takes).

        Every image is brought to one size ``(H, W)``: the first image's, scaled so that its longest
        side is at most ``max_side``; the others are resized to cover it (aspect ratio kept) and
        centre-cropped (:func:`fit_image`).

        Returns:
            :class:`Predictions` with ``labeled=False``, ``gt`` ``[N, H, W]`` all 255, ``split``
            ``"images"``, ``run_dir`` the model given; for a GMM head ``embeddings`` ``[N, D, h, w]``,
            ``gt_small`` (all 255 on that grid), ``class_log_likelihood`` and the mixture; for a
            softmax head ``features`` ``[N, Ch, h, w]``; ``score_maps`` ``{name: [N, H, W]}``.
        """

        named = list_images(images, max_images)
        size = common_size(named[0][1].shape[:2], max_side)
        named = [(name, fit_image(rgb, size)) for name, rgb in named]
        gmm = self.head == "gmm"
        grid_key = "embeddings" if gmm else "features"
        out: dict[str, list] = {k: [] for k in ("pred", "probs", "anomaly_score", "class_log_likelihood", "grid")}
        maps: dict[str, list] = {}
        bar = tqdm(total=len(named), desc=f"predict ({self.head})", unit="image", disable=not progress)
        for batch in self._batches(named, batch_size):
            for r in predict_batch(self.model, batch, features=not gmm):
                out["pred"].append(r["pred"].cpu().numpy().astype(np.int64))
                probs = torch.softmax(r["seg_logits"].float(), dim=0).cpu()
                out["probs"].append(probs.numpy().astype(np.float32))
                scores = {k: v.float().cpu().numpy() for k, v in _anomaly_score_maps(r).items()}
                for key, value in scores.items():
                    maps.setdefault(key, []).append(value)
                out["anomaly_score"].append(scores["neg_max_log_likelihood" if gmm else "max_softmax"])
                if gmm:
                    out["class_log_likelihood"].append(r["class_log_likelihood"].float().cpu().numpy())
                out["grid"].append(r[grid_key].float().cpu().numpy())
                bar.update(1)
        bar.close()
        n = len(named)
        images_arr = np.stack([rgb for _, rgb in named])
        grid = np.stack(out["grid"]).astype(np.float32)
        preds = Predictions(
            names=[name for name, _ in named],
            images=images_arr,
            gt=np.full(images_arr.shape[:3], 255, np.int64),
            pred=np.stack(out["pred"]),
            probs=np.stack(out["probs"]),
            anomaly_score=np.stack(out["anomaly_score"]).astype(np.float32),
            classes=list(self.classes),
            palette=self.palette.copy(),
            head=self.head,
            split="images",
            run_dir=self.source,
            labeled=False,
            score_maps={k: np.stack(v).astype(np.float32) for k, v in maps.items()},
        )
        if gmm:
            gmm_module = self.decode_head.gmm
            preds.class_log_likelihood = np.stack(out["class_log_likelihood"]).astype(np.float32)
            preds.embeddings = grid
            preds.gt_small = np.full((n,) + grid.shape[2:], 255, np.int64)
            preds.means = gmm_module.means.detach().float().cpu().numpy()
            preds.stds = gmm_module.stds.detach().float().cpu().numpy()
            preds.log_weights = gmm_module.log_weights.detach().float().cpu().numpy()
        else:
            preds.features = grid
        return preds


def predict_images(
    checkpoint,
    images,
    max_images: int | None = 8,
    device: str | None = None,
    slide=None,
    config: str | Path | None = None,
    max_side: int = MAX_SIDE,
    progress: bool = False,
) -> Predictions:
    """A model's per-pixel outputs on unlabeled photographs (see the module docstring).

    Args:
        checkpoint: a work dir (``gmmseg-lab train`` or ``import-release``), a checkpoint ``.pth``
            (with ``config`` for an mmseg model), or an :class:`ImageScorer` already loaded.
        images: a folder of photographs, a list of files, arrays, or ``{name: array}``
            (:func:`list_images`).
        max_images: the first this many images (None: all).
        device: default CUDA when available.
        slide: ``None`` auto (windows of the training crop for larger images), ``(crop, stride)``,
            or ``False`` (the config's test_cfg).
        max_side: longest side the images are brought to (:meth:`ImageScorer.predict`).

    Returns:
        :class:`Predictions` with ``labeled=False`` (:meth:`ImageScorer.predict`).
    """
    scorer = checkpoint if isinstance(checkpoint, ImageScorer) else ImageScorer.load(checkpoint, config, device, slide)
    return scorer.predict(images, max_images=max_images, max_side=max_side, progress=progress)


def reference_predictions(
    checkpoint: str | Path, data_dir: str | Path | None = None, max_images: int = 8, device: str | None = None
) -> tuple[Predictions | None, str]:
    """Labelled predictions of the model's own data set, for a map the new images are placed on.

    ``data_dir`` default: the config's ``data_root`` of a lab-trained work dir. Returns
    ``(predictions, note)``: predictions of its ``val`` split
    (:func:`~gmmseg_lab.experiments.predictions.collect_predictions`, cached in the work dir), or
    None with a note saying why there is no reference (a converted release model has no data set
    beside it; a data set that is gone or whose classes are not the model's).
    """

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return None, f"{checkpoint}: a checkpoint file, not a work dir; no labelled reference map"
    cfg, _ = resolve_model(checkpoint)
    if data_dir is None:
        root = cfg.get("data_root")
        if not root:
            return None, f"{checkpoint}: its config names no data_root; no labelled reference map"
        data_dir = Path(str(root))
    data_dir = Path(data_dir)
    try:
        validate_dataset(data_dir, splits=("val",), check_anomaly=False)
        classes, _ = read_classes(data_dir)
    except (DatasetError, ValueError, OSError) as err:
        first = str(err).splitlines()[0]
        return None, f"{data_dir}: not a usable labelled data set ({first}); no reference map"
    preds = collect_predictions(checkpoint, data_dir, "val", max_images, device=device)
    if list(classes) != list(preds.classes) or (preds.is_gmm and preds.embeddings is None):
        return None, f"{data_dir}: its classes are not the model's (or no embeddings); no reference map"
    return preds, f"reference map: {len(preds.names)} labelled validation images of {data_dir}"


# ----------------------------------------------------------------------------------- openTSNE map
@dataclass
class EmbeddingMap:
    """An openTSNE map fitted on labelled pixels (and the mixture means), new points placed by ``transform``.

    Attributes:
        embedding: the ``openTSNE.TSNEEmbedding`` (fitted on ``[n + K, D]`` points).
        coords: ``[n, 2]`` the fitted pixels; info: their :func:`~gmmseg_lab.viz.embedding.sample_pixels` dict.
        mean_coords: ``[C, M, 2]`` the component means (None without means).
    """

    embedding: Any
    coords: np.ndarray
    info: dict
    mean_coords: np.ndarray | None


def fit_embedding_map(
    x: np.ndarray, info: dict, means: np.ndarray | None = None, seed: int = 0, perplexity: float = 30.0
) -> EmbeddingMap:
    """Fit a 2-D openTSNE map on pixel embeddings ``x`` ``[n, D]`` and the means ``[C, M, D]`` together.

    Unlike scikit-learn's t-SNE (:func:`gmmseg_lab.viz.embedding.tsne_embedding`), openTSNE's map
    can place new points afterwards (:func:`place_on_map`) without moving the fitted ones. A
    perplexity too large for the number of points (openTSNE needs ``3 * perplexity`` neighbours) is
    lowered to fit.

    Raises:
        ValueError: shapes that do not fit.
    """
    from openTSNE import TSNE

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be [n, D], got shape {x.shape}")
    flat = np.zeros((0, x.shape[1]))
    if means is not None:
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 3 or means.shape[-1] != x.shape[1]:
            raise ValueError(f"means must be [C, M, D] with D = {x.shape[1]}, got shape {means.shape}")
        flat = means.reshape(-1, x.shape[1])
    points = np.concatenate([x, flat])
    if not 0 < perplexity < len(points) / 3:  # openTSNE needs 3 * perplexity neighbours
        perplexity = max(1.0, min(float(perplexity), (len(points) - 1) / 3))
    # one thread: the maps are small, and the lab's machines share their cores
    embedding = TSNE(
        n_components=2, perplexity=float(perplexity), initialization="pca", random_state=seed, n_jobs=1, verbose=False
    ).fit(points)
    coords = np.array(embedding)  # a copy: the map's own array is the embedding's state
    mean_coords = None if means is None else coords[len(x) :].reshape(means.shape[:-1] + (2,))
    return EmbeddingMap(embedding=embedding, coords=coords[: len(x)], info=dict(info), mean_coords=mean_coords)


def place_on_map(emap: EmbeddingMap, x_new: np.ndarray) -> np.ndarray:
    """``[k, 2]``: new pixel embeddings ``x_new`` ``[k, D]`` placed on a fitted map (openTSNE's
    ``transform``: each point starts at its nearest fitted neighbours and is optimised with the map held
    fixed)."""
    x_new = np.asarray(x_new, dtype=np.float64)
    if x_new.ndim != 2 or len(x_new) == 0:
        raise ValueError(f"x_new must be a non-empty [k, D] array, got shape {x_new.shape}")
    before = np.array(emap.embedding)
    placed = np.asarray(emap.embedding.transform(x_new, perplexity=min(5.0, max(1.0, (len(x_new) - 1) / 3))))
    # openTSNE's transform re-centres the fitted map in place (a translation) and returns the new
    # points in that frame: undo the translation, so the map and its figure stay where they were.
    shift = (np.asarray(emap.embedding) - before).mean(0)
    emap.embedding[:] = before
    return placed - shift


# ----------------------------------------------------------------------------------- the report
def images_summary(preds: Predictions) -> str:
    """One line on what was predicted: model, head, images and their size, inference mode."""
    height, width = preds.images.shape[1:3]
    return (
        f"{Path(preds.run_dir).name} ({preds.head} head): {len(preds.names)} unlabeled images at "
        f"{width}x{height} px, {len(preds.classes)} classes"
        + (f" x {preds.num_components} components" if preds.is_gmm else "")
    )


# ----------------------------------------------------------------------------------- what the notebooks call
class Note(str):
    """A sentence for a notebook: plain text when printed, Markdown when displayed."""

    def _repr_markdown_(self) -> str:
        return str(self)


def notebook_predictions(
    run_dir: str | Path, data_dir: str | Path, images=None, max_images: int = 8, progress: bool = False
) -> Predictions:
    """Notebooks 02 and 03: the validation predictions of ``run_dir`` on ``data_dir`` (labelled,
    :func:`~gmmseg_lab.experiments.predictions.collect_predictions`), or with ``images`` set, its
    predictions on those photographs (unlabeled, :func:`predict_images`)."""

    if not images:
        return collect_predictions(run_dir, data_dir, "val", max_images)
    return predict_images(run_dir, images, max_images=max_images, progress=progress)


def summary_line(preds: Predictions, arch: str, seed: int) -> str:
    """The line notebooks 02 and 03 print about their predictions (with the no-labels note for photographs)."""
    if preds.labeled:
        return (
            f"{arch} GMMSeg, seed {seed}: {len(preds.names)} validation images, "
            f"{len(preds.classes)} classes x {preds.num_components} components"
        )
    return f"{images_summary(preds)}\n{NO_LABELS_NOTE}"


def embedding_sentences(info: Mapping[str, np.ndarray], classes: Sequence[str]):
    """Notebook 03's sentences on the sampled pixels: for labelled ones
    :func:`gmmseg_lab.experiments.notebook.embedding_sentences`; for unlabeled ones (``info["label_kind"]
    == "predicted"``) how often the head's prediction is also the mixtures' Bayes class."""
    if info.get("label_kind") != "predicted":
        return labelled(info, classes)
    label, bayes = np.asarray(info["label"]), np.asarray(info["bayes_class"])
    if (np.asarray(info["component"]) < 0).all():
        return Note(f"{len(label)} pixels sampled by predicted class; no labels, so no accuracy.")
    agree = bayes == label
    return Note(
        f"No labels: the {len(label)} sampled pixels are grouped by the class the head predicts. For "
        f"{100 * agree.mean():.0f} % of them the mixtures' Bayes class (argmax over c of log p(x|c)) is that "
        "class too; a pixel where they differ sits between classes in the embedding space, which is where "
        "an unfamiliar object lands."
    )


def embedding_figures(
    run_dir: str | Path,
    preds: Predictions,
    softmax: str | Path | None = None,
    softmax_config: str | Path | None = None,
    n_per_class: int = 60,
    seed: int = 0,
    perplexity: float = 30.0,
) -> list:
    """Notebook 03's extra maps for photographs (``[]`` for labelled predictions):

    - the photographs' pixels placed (openTSNE ``transform``) on a map fitted on the model's own
      labelled validation pixels and its means (:func:`reference_predictions`), when it has a data set;
      otherwise a note is printed saying why;
    - with ``softmax``, a t-SNE map of the softmax model's fused features on the same photographs,
      coloured by its predicted class or its anomaly score (1 - max softmax).
    """

    if preds.labeled:
        return []
    figures = []
    reference, note = reference_predictions(run_dir, max_images=len(preds.names))
    print(note)
    if reference is not None and preds.is_gmm:
        x_ref, info_ref = ve.sample_pixels(reference, n_per_class=n_per_class, seed=seed)
        emap = fit_embedding_map(x_ref, info_ref, reference.means, seed=seed, perplexity=perplexity)
        x_new, info_new = ve.sample_pixels(preds, n_per_class=max(1, n_per_class // 2), seed=seed)
        figures.append(
            ve.tsne_placed_figure(
                emap.coords,
                emap.info,
                emap.mean_coords,
                place_on_map(emap, x_new),
                info_new,
                reference.classes,
                reference.palette,
            )
        )
    if softmax is not None:
        twin = predict_images(
            softmax,
            _images_of(preds),
            config=softmax_config,
            max_images=len(preds.names),
            max_side=max(preds.images.shape[1:3]),
        )
        x, info = ve.sample_pixels(twin, n_per_class=n_per_class, seed=seed)
        coords, _ = ve.tsne_embedding(x, None, seed=seed, perplexity=min(perplexity, len(x) - 1))
        figures.append(
            ve.tsne_figure(
                coords,
                info,
                None,
                twin.classes,
                twin.palette,
                title=f"t-SNE of the softmax model's fused features ({Path(str(softmax)).name})",
            )
        )
    return figures


def _images_of(preds: Predictions) -> dict[str, np.ndarray]:
    """The photographs of ``preds`` as ``{name: [H, W, 3]}``, already at their common size (so a second
    model sees exactly the same pixels)."""
    return {name: preds.images[i] for i, name in enumerate(preds.names)}


def upload_control(
    run_dir: str | Path,
    softmax: str | Path | None = None,
    softmax_config: str | Path | None = None,
    max_side: int = MAX_SIDE,
):
    """The JupyterLab upload control (:func:`gmmseg_lab.viz.explore.upload_widget`) scoring a dropped
    picture with the GMMSeg model of ``run_dir`` (and the ``softmax`` model beside it)."""

    scorers = {"GMMSeg": ImageScorer.load(run_dir)}
    if softmax is not None:
        scorers["softmax"] = ImageScorer.load(softmax, softmax_config)
    return upload_widget(scorers, max_side=max_side)


class ExploreSession:
    """Notebook 06 on photographs: every model's unlabeled predictions on the same images.

    Attributes:
        preds: ``{label: Predictions}`` (``"GMMSeg"`` first, then ``"softmax"`` when given).
        sources: ``{label: work dir or checkpoint}``.
    """

    def __init__(self, preds: dict[str, Predictions], sources: dict[str, str]):
        self.preds, self.sources = preds, sources

    @property
    def gmm(self) -> Predictions:
        return next(iter(self.preds.values()))

    def summary(self) -> str:
        """What was predicted, by which model, and what is left out (plain text)."""
        lines = [f"{label}: {images_summary(p)} ({self.sources[label]})" for label, p in self.preds.items()]
        return "\n".join(
            lines + [f"{NO_LABELS_NOTE}; the sections after the pictures' views need labels and show nothing here"]
        )

    def _repr_markdown_(self) -> str:
        lines = [f"- **{label}**: {images_summary(p)} (`{self.sources[label]}`)" for label, p in self.preds.items()]
        return "\n".join(lines + ["", f"*{NO_LABELS_NOTE}.*"])

    def figures(self, max_images: int | None = None) -> list:
        """Segmentation of every model, every anomaly score of each model on the first image, each
        model's headline score over that image, and the GMM's flagged pixels at a threshold slider."""

        gmm = self.gmm
        order = list(range(len(gmm.names)))[:max_images]
        figures = [segmentation_figure(self.preds, order)]
        figures += [
            anomaly_maps_figure(
                p,
                0,
                max_side=160,
                title=f"{label}: every anomaly score on {p.names[0]} (bright = anomalous; each map on its own scale)",
            )
            for label, p in self.preds.items()
        ]
        figures += [
            van.score_overlay_figure(p.images[0], p.anomaly_score[0], None, title=f"{label}: {p.names[0]}")
            for label, p in self.preds.items()
        ]
        thresholds = van.quantile_thresholds(gmm.anomaly_score[order])
        figures.append(
            van.threshold_figure(
                gmm.images[order], gmm.anomaly_score[order], None, thresholds, titles=[gmm.names[i] for i in order]
            )
        )
        return figures

    def widgets(self) -> list:
        """Live views: the anomaly explorer over the photographs (no masks) and the upload control."""

        gmm = self.gmm
        labels = list(self.preds)
        anomaly = van.anomaly_widget(gmm.images, None, {label: p.anomaly_score for label, p in self.preds.items()})
        upload = upload_control(self.sources[labels[0]], self.sources.get("softmax"))
        return [anomaly, upload]


def anomaly_session(
    lab,
    images,
    checkpoint=None,
    softmax=None,
    softmax_config=None,
    arch: str = "segformer",
    seed: int = 0,
    max_images: int = 8,
) -> ExploreSession | None:
    """Notebook 06 with ``images`` set: the GMMSeg model (``checkpoint``, default the notebook's own
    quick run of ``arch`` and ``seed``, trained once) and the softmax model beside it (``softmax``
    with ``softmax_config``, default: the lab run's softmax twin when no checkpoint is given) on the
    photographs. None when ``images`` is not set (the labelled notebook runs instead)."""
    if not images:
        return None

    if checkpoint is None:
        checkpoint = ensure_run(lab.work_dir, lab.data_dir, arch, "gmm", lab.preset, seed, progress=lab.progress)
        if softmax is None:
            softmax = ensure_run(lab.work_dir, lab.data_dir, arch, "softmax", lab.preset, seed, progress=lab.progress)
    gmm = predict_images(checkpoint, images, max_images=max_images, progress=lab.progress)
    preds, sources = {"GMMSeg": gmm}, {"GMMSeg": str(checkpoint)}
    if softmax is not None:
        preds["softmax"] = predict_images(
            softmax, _images_of(gmm), config=softmax_config, max_images=max_images, max_side=max(gmm.images.shape[1:3])
        )
        sources["softmax"] = str(softmax)
    session = ExploreSession(preds, sources)
    print(session.summary())
    return session
