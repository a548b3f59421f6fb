"""Real data sets in the layouts their releases use: detection, readers, checkers, a converter.

Closed set (read for training and validation by mmseg's own data set classes through the shipped
``paper*`` configs; this module only checks them)::

    cityscapes       DIR/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
                     DIR/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
                     19 train IDs (0..18), 255 ignore; mmseg ``CityscapesDataset``, preset ``paper``
    ade20k           DIR = .../ADEChallengeData2016
                     DIR/images/{training,validation}/ADE_*.jpg
                     DIR/annotations/{training,validation}/ADE_*.png
                     0 = "other", 1..150 the classes (``reduce_zero_label``: 0 -> 255, c -> c - 1);
                     mmseg ``ADE20KDataset``, preset ``paper-ade20k``
    coco-stuff-10k   DIR/images/{train2014,test2014}/COCO_*.jpg
                     DIR/annotations/{train2014,test2014}/COCO_*_labelTrainIds.png
                     as written by mmseg's tools/dataset_converters/coco_stuff10k.py: 0 = unlabeled,
                     1..171 the classes (``reduce_zero_label``); mmseg ``COCOStuffDataset``,
                     preset ``paper-cocostuff10k``

Open world (read here; every mask is remapped to 0 inlier / 1 anomaly / 255 void, the values
:class:`gmmseg_lab.eval.metrics.AnomalyScores` scores)::

    fishyscapes-laf     release: DIR/<NNNN>_<lafid>_labels.png (fishyscapes_lostandfound.zip) with
                        Lost & Found's images at DIR/leftImg8bit/<split>/<scene>/<lafid>_leftImg8bit.png;
                        or prepared: DIR/images/<name>.{png,jpg} + DIR/labels_masks/<name>.png
                        (also DIR/original/ + DIR/labels/). Values 0 inlier, 1 anomaly, anything
                        else void (as bdlb scores it: ``valid = mask <= 1``). Prepared frames of
                        the two sets read alike; a folder name with ``static`` names them Static,
                        any other is read as fishyscapes-laf (with a note unless it says lost/laf).
    fishyscapes-static  release: DIR/<NNNN>_<csid>_labels.png + DIR/<NNNN>_<csid>_rgb.npz (fs_val_v3.zip;
                        the image is clip(Cityscapes image + npz['rgb'], 0, 255)) with Cityscapes'
                        images at DIR/leftImg8bit/val/<city>/<csid>_leftImg8bit.png; or prepared as
                        for fishyscapes-laf. Same values.
    road-anomaly        DIR/frame_list.json (optional), DIR/frames/<name>.{jpg,webp,png},
                        DIR/frames/<name>.labels/labels_semantic.png: 0 background, 1 road (both
                        inlier), 2 anomaly; no void.
    smiyc-anomaly       DIR = dataset_AnomalyTrack: DIR/images/<name>.jpg,
                        DIR/labels_masks/<name>_labels_semantic.png: 0 inlier, 1 anomaly, 255 void.
                        Only the validation frames have masks; the others (the hidden test set)
                        are skipped and counted.
    smiyc-obstacle      DIR = dataset_ObstacleTrack: as smiyc-anomaly, images .webp.

and ``lab``, the lab's own layout (:mod:`gmmseg_lab.data.layout`; its ``anomaly/`` split when used as
an anomaly benchmark).

Public API: :data:`FORMATS`, :data:`CLOSED_SET_FORMATS`, :data:`ANOMALY_FORMATS`,
:data:`CLOSED_SETS` (:class:`ClosedSetSpec` per format), :func:`detect_format`,
:func:`check_real_dataset` / :func:`validate_real_dataset` (-> :class:`RealDatasetReport`),
:func:`read_anomaly_benchmark` (-> :class:`AnomalyBenchmark` of :class:`AnomalyFrame`),
:func:`remap_anomaly_mask`, :data:`CITYSCAPES_LABEL_ID_TO_TRAIN_ID`, :func:`cityscapes_train_ids`,
:func:`convert_cityscapes_label_ids`.

Nothing here imports torch; mmseg is imported only to read the class names of a closed set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..io_utils import atomic_open
from .layout import (
    IGNORE_INDEX,
    IMAGE_EXTENSIONS,
    LAB_ANOMALY_VALUES,
    DatasetError,
    DatasetReport,
    anomaly_values_problem,
    check_dataset,
    check_pair,
    describe_anomaly_values,
    exif_orientation_problem,
    label_range_problem,
    load_image,
    load_mask,
    note_image_modes,
    scan_anomaly_split,
    scan_pairs,
    undefined_anomaly_note,
)

__all__ = [
    "ANOMALY_FORMATS",
    "CITYSCAPES_LABEL_ID_TO_TRAIN_ID",
    "CLOSED_SETS",
    "CLOSED_SET_FORMATS",
    "FORMATS",
    "AnomalyBenchmark",
    "AnomalyFrame",
    "ClosedSetSpec",
    "RealDatasetReport",
    "check_real_dataset",
    "cityscapes_train_ids",
    "closed_set_classes",
    "convert_cityscapes_label_ids",
    "detect_format",
    "read_anomaly_benchmark",
    "remap_anomaly_mask",
    "validate_real_dataset",
]

CLOSED_SET_FORMATS = ("cityscapes", "ade20k", "coco-stuff-10k")
ANOMALY_FORMATS = ("fishyscapes-laf", "fishyscapes-static", "road-anomaly", "smiyc-anomaly", "smiyc-obstacle")
FORMATS = ("lab",) + CLOSED_SET_FORMATS + ANOMALY_FORMATS
BENCHMARK_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + (".webp",)


# --------------------------------------------------------------------------------------------
# Closed-set specifications
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedSetSpec:
    """Where a closed-set release keeps its files and what its label values mean.

    Attributes:
        name: the format name (``cityscapes``...).
        mmseg_type: the mmseg data set class that reads it.
        preset: the shipped config preset that trains on it (``build_config(arch, head, preset)``).
        splits: split name -> ``(image folder, label folder)`` relative to the root, as in the configs.
        img_suffix / seg_suffix: file-name endings; an image ``<dir>/<rel>X<img_suffix>`` pairs
            with ``<label dir>/<rel>X<seg_suffix>`` (mmseg's rule).
        num_classes: classes the model predicts.
        max_label: largest valid stored label value (255 is always allowed: ignore).
        reduce_zero_label: mmseg maps stored 0 to 255 and c to c - 1.
    """

    name: str
    mmseg_type: str
    preset: str
    splits: dict
    img_suffix: str
    seg_suffix: str
    num_classes: int
    max_label: int
    reduce_zero_label: bool


CLOSED_SETS: dict[str, ClosedSetSpec] = {
    "cityscapes": ClosedSetSpec(
        "cityscapes",
        "CityscapesDataset",
        "paper",
        {"train": ("leftImg8bit/train", "gtFine/train"), "val": ("leftImg8bit/val", "gtFine/val")},
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        num_classes=19,
        max_label=18,
        reduce_zero_label=False,
    ),
    "ade20k": ClosedSetSpec(
        "ade20k",
        "ADE20KDataset",
        "paper-ade20k",
        {
            "training": ("images/training", "annotations/training"),
            "validation": ("images/validation", "annotations/validation"),
        },
        ".jpg",
        ".png",
        num_classes=150,
        max_label=150,
        reduce_zero_label=True,
    ),
    "coco-stuff-10k": ClosedSetSpec(
        "coco-stuff-10k",
        "COCOStuffDataset",
        "paper-cocostuff10k",
        {
            "train2014": ("images/train2014", "annotations/train2014"),
            "test2014": ("images/test2014", "annotations/test2014"),
        },
        ".jpg",
        "_labelTrainIds.png",
        num_classes=171,
        max_label=171,
        reduce_zero_label=True,
    ),
}


def closed_set_classes(fmt: str) -> tuple[str, ...]:
    """Class names of a closed set, from its mmseg data set class (imports mmseg)."""
    import mmseg.datasets

    return tuple(getattr(mmseg.datasets, CLOSED_SETS[fmt].mmseg_type).METAINFO["classes"])


# --------------------------------------------------------------------------------------------
# Cityscapes labelIds -> trainIds
# --------------------------------------------------------------------------------------------

# cityscapesscripts/helpers/labels.py: label id -> train id for the 19 evaluated classes; every
# other id (unlabeled, ego vehicle, ..., caravan, trailer, license plate) is 255.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
_LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


def _cityscapes_lookup() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` uint8 Cityscapes label IDs (0..33) -> ``[H, W]`` uint8 train IDs (0..18, 255)."""
    return _cityscapes_lookup()[np.asarray(label_ids, np.uint8)]


def _atomic_save_png(array: np.ndarray, path: Path) -> None:
    """Save ``array`` as a PNG via a temporary sibling and a rename (never a half-written file)."""
    with atomic_open(path, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def convert_cityscapes_label_ids(root: str | Path, splits=("train", "val"), overwrite: bool = False) -> list[Path]:
    """Write ``*_gtFine_labelTrainIds.png`` beside every ``*_gtFine_labelIds.png`` of ``splits``.

    The official 34 -> 19 mapping (:data:`CITYSCAPES_LABEL_ID_TO_TRAIN_ID`), the same result as
    cityscapesscripts' ``csCreateTrainIdLabelImgs`` (which draws the polygons instead). Each file
    is written atomically; existing train-ID files are kept unless ``overwrite``. Every labelIds
    file to convert is decoded once before anything is written, so a broken one stops the
    conversion with no file written (each is then decoded again to write it).

    Returns:
        the files written, sorted.

    Raises:
        DatasetError: a split folder is missing, or labelIds files are unreadable or not
            single-channel (every such file is named; nothing is written then).
    """
    root = Path(root)
    sources, problems = [], []
    for split in splits:
        folder = root / "gtFine" / split
        if not folder.is_dir():
            problems.append(f"{folder}: missing folder (Cityscapes gtFine split {split!r})")
            continue
        sources += sorted(folder.rglob(f"*{_LABEL_IDS_SUFFIX}"))
    if problems:
        raise DatasetError(problems, root)
    todo = []
    for source in sources:
        target = source.with_name(source.name[: -len(_LABEL_IDS_SUFFIX)] + "_gtFine_labelTrainIds.png")
        if overwrite or not target.exists():
            todo.append((source, target))
    for source, _ in todo:  # every unreadable file is named before anything is written
        try:
            load_mask(source)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            problems.append(f"{source}: unreadable labelIds mask ({type(exc).__name__}: {exc})")
    if problems:
        raise DatasetError(problems, root)
    for source, target in todo:
        _atomic_save_png(cityscapes_train_ids(load_mask(source)), target)
    return [target for _, target in todo]


# --------------------------------------------------------------------------------------------
# Anomaly benchmarks: frames and masks
# --------------------------------------------------------------------------------------------

# Stored value -> 0 inlier / 1 anomaly / 255 void; `other` for values not listed (None: an error).
_ANOMALY_VALUE_MAPS: dict[str, tuple[dict[int, int], int | None]] = {
    "lab": (LAB_ANOMALY_VALUES, None),
    "fishyscapes-laf": ({0: 0, 1: 1, 255: 255}, 255),
    "fishyscapes-static": ({0: 0, 1: 1, 255: 255}, 255),
    "road-anomaly": ({0: 0, 1: 0, 2: 1}, None),
    "smiyc-anomaly": ({0: 0, 1: 1, 255: 255}, None),
    "smiyc-obstacle": ({0: 0, 1: 1, 255: 255}, None),
}


def _describe_values(fmt: str) -> str:
    return describe_anomaly_values(*_ANOMALY_VALUE_MAPS[fmt])


def _values_problem(path, values, fmt: str) -> str | None:
    """The problem naming stored ``values`` (distinct ints) that ``fmt`` does not define, or None."""
    owner = "the lab layout" if fmt == "lab" else fmt
    return anomaly_values_problem(path, values, *_ANOMALY_VALUE_MAPS[fmt], owner=owner)


def remap_anomaly_mask(raw: np.ndarray, fmt: str, path: str | Path | None = None) -> np.ndarray:
    """A stored anomaly mask ``[H, W]`` (uint8, the benchmark's values) -> ``[H, W]`` uint8 with
    0 inlier, 1 anomaly, 255 void.

    Raises:
        DatasetError: values the format does not define (naming ``path`` when given).
    """
    if fmt not in _ANOMALY_VALUE_MAPS:
        raise ValueError(f"unknown anomaly format {fmt!r}; choose one of {tuple(_ANOMALY_VALUE_MAPS)}")
    raw = np.asarray(raw, np.uint8)
    problem = _values_problem(path, np.flatnonzero(np.bincount(raw.ravel(), minlength=256)), fmt)
    if problem:
        raise DatasetError(problem)
    mapping, other = _ANOMALY_VALUE_MAPS[fmt]
    table = np.full(256, IGNORE_INDEX if other is None else other, np.uint8)
    for value, target in mapping.items():
        table[value] = target
    return table[raw]


@dataclass(frozen=True)
class AnomalyFrame:
    """One labelled frame of an anomaly benchmark.

    Attributes:
        name: a unique name (file stem).
        image_path: the image file (for fishyscapes-static releases: the Cityscapes base image).
        mask_path: the benchmark's own mask file, values as the release stores them.
        fmt: the benchmark format (decides the value mapping).
        overlay_path: fishyscapes-static release only: the ``*_rgb.npz`` added to the base image.
    """

    name: str
    image_path: Path
    mask_path: Path
    fmt: str
    overlay_path: Path | None = None

    def load_image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB, composed with its overlay when it has one."""
        image = load_image(self.image_path)
        if self.overlay_path is None:
            return image
        overlay = _load_overlay(self.overlay_path)
        if overlay.shape != image.shape:
            raise DatasetError(
                f"{self.overlay_path}: overlay shape {overlay.shape} differs from its "
                f"Cityscapes image's {image.shape} ({self.image_path})"
            )
        return np.clip(image.astype(np.int64) + overlay, 0, 255).astype(np.uint8)

    def load_raw_mask(self) -> np.ndarray:
        """``[H, W]`` uint8 as stored."""
        return load_mask(self.mask_path)

    def load_mask(self) -> np.ndarray:
        """``[H, W]`` uint8: 0 inlier, 1 anomaly, 255 void."""
        return remap_anomaly_mask(self.load_raw_mask(), self.fmt, self.mask_path)


def _load_overlay(path: Path) -> np.ndarray:
    """Fishyscapes Static overlay: ``npz['rgb']``, ``[H, W, 3]`` ints added to the base image."""
    try:
        with np.load(path) as data:
            files = list(data.files)
            overlay = np.asarray(data["rgb"]) if "rgb" in files else None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable overlay ({exc})") from exc
    if overlay is None:
        raise DatasetError(f"{path}: no array 'rgb' in the overlay (found {sorted(files)})")
    return overlay.astype(np.int64)


@dataclass
class AnomalyBenchmark:
    """The labelled frames of an anomaly benchmark, as :func:`read_anomaly_benchmark` found them.

    Attributes:
        root: the benchmark directory.
        fmt: its format.
        frames: labelled frames, sorted by name.
        unlabelled: images without a mask where the release has them (SMIYC's test images).
        problems: structural problems (missing partners, malformed index files), each naming a file.
        notes: remarks on how the benchmark was read (e.g. which Fishyscapes set was assumed).
    """

    root: Path
    fmt: str
    frames: list[AnomalyFrame] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        """``(image, mask)`` per frame, decoded: ``image`` ``[H, W, 3]`` uint8 RGB as the benchmark
        defines it (a Fishyscapes Static image composed with its overlay: the anomaly exists only
        there, not in the file at ``frame.image_path``), ``mask`` ``[H, W]`` uint8 0 inlier /
        1 anomaly / 255 void. Iterate ``frames`` for names and paths."""
        for frame in self.frames:
            yield frame.load_image(), frame.load_mask()


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in BENCHMARK_IMAGE_EXTENSIONS
    )


def _frames_lab(root: Path, bench: AnomalyBenchmark) -> None:
    scan = scan_anomaly_split(root)
    if scan is None:
        bench.problems.append(f"{root / 'anomaly'}: missing folder (the lab layout's anomaly split)")
        return
    bench.problems += scan.problems
    bench.frames += [AnomalyFrame(i.stem, i, m, "lab") for i, m in scan.pairs]


def _frames_smiyc(root: Path, bench: AnomalyBenchmark) -> None:
    """images/<name>.<ext> + labels_masks/<name>_labels_semantic.png; unlabelled images allowed."""
    image_dir, mask_dir = root / "images", root / "labels_masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            bench.problems.append(f"{folder}: missing folder ({bench.fmt} layout)")
    if bench.problems:
        return
    images = {p.stem: p for p in _image_files(image_dir)}
    suffix = "_labels_semantic.png"
    for mask in sorted(mask_dir.glob(f"*{suffix}")):
        stem = mask.name[: -len(suffix)]
        if stem in images:
            bench.frames.append(AnomalyFrame(stem, images.pop(stem), mask, bench.fmt))
        else:
            bench.problems.append(f"{mask}: mask without its image (expected {image_dir / stem}.jpg, .png or .webp)")
    bench.unlabelled += sorted(images.values())


def _frames_road_anomaly(root: Path, bench: AnomalyBenchmark) -> None:
    """frames/<name>.<ext> + frames/<name>.labels/labels_semantic.png, listed by frame_list.json."""
    frames_dir = root / "frames"
    if not frames_dir.is_dir():
        bench.problems.append(f"{frames_dir}: missing folder (road-anomaly layout)")
        return
    listing = root / "frame_list.json"
    if listing.is_file():
        try:
            names = json.loads(listing.read_text(encoding="utf-8"))
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise ValueError("expected a JSON list of image file names")
        except (ValueError, UnicodeDecodeError) as exc:
            bench.problems.append(f"{listing}: malformed ({exc})")
            return
        images = [frames_dir / name for name in names]
    else:
        images = _image_files(frames_dir)
    for image in images:
        mask = frames_dir / f"{image.stem}.labels" / "labels_semantic.png"
        if not image.is_file():
            bench.problems.append(f"{image}: listed in {listing.name} but missing")
        elif not mask.is_file():
            bench.problems.append(f"{image}: image without its mask (expected {mask})")
        else:
            bench.frames.append(AnomalyFrame(image.stem, image, mask, bench.fmt))


_FS_LABELS = re.compile(r"^(\d+)_(.+)_labels\.png$")


def _base_image_index(root: Path) -> dict[str, Path]:
    """``<id>`` -> ``DIR/leftImg8bit/<split>/<folder>/<id>_leftImg8bit.<ext>`` (Cityscapes naming)."""
    index = {}
    base = root / "leftImg8bit"
    if base.is_dir():
        for path in sorted(base.glob("*/*/*_leftImg8bit.*")):
            if path.suffix.lower() in BENCHMARK_IMAGE_EXTENSIONS:
                index.setdefault(path.name[: -len("_leftImg8bit") - len(path.suffix)], path)
    return index


def _frames_fishyscapes_release(root: Path, bench: AnomalyBenchmark) -> None:
    """The released validation zip (``NNNN_<id>_labels.png``, Static also ``NNNN_<id>_rgb.npz``)
    with its base images under ``DIR/leftImg8bit``."""
    base_images = _base_image_index(root)
    base_name = "Lost & Found" if bench.fmt == "fishyscapes-laf" else "Cityscapes"
    for mask in sorted(root.glob("*_labels.png")):
        match = _FS_LABELS.match(mask.name)
        if match is None:
            bench.problems.append(f"{mask}: not named <number>_<image id>_labels.png")
            continue
        fs_id, base_id = match.groups()
        image = base_images.get(base_id)
        if image is None:
            bench.problems.append(
                f"{mask}: its {base_name} image {base_id}_leftImg8bit.png was not found "
                f"under {root / 'leftImg8bit'} (put or link {base_name}'s leftImg8bit/ there)"
            )
            continue
        overlay = None
        if bench.fmt == "fishyscapes-static":
            overlays = sorted(root.glob(f"{fs_id}_*rgb.npz"))
            if not overlays:
                bench.problems.append(
                    f"{mask}: no overlay {fs_id}_*rgb.npz beside it (fs_val_v3.zip holds one per image)"
                )
                continue
            overlay = overlays[0]
        bench.frames.append(AnomalyFrame(f"{fs_id}_{base_id}", image, mask, bench.fmt, overlay))


def _prepared_folders(root: Path) -> tuple[Path, Path] | None:
    for image_dir, mask_dir in (("images", "labels_masks"), ("original", "labels")):
        if (root / image_dir).is_dir() and (root / mask_dir).is_dir():
            return root / image_dir, root / mask_dir
    return None


def _frames_fishyscapes(root: Path, bench: AnomalyBenchmark) -> None:
    if any(_FS_LABELS.match(p.name) for p in root.glob("*_labels.png")):
        _frames_fishyscapes_release(root, bench)
        return
    folders = _prepared_folders(root)
    if folders is None:
        bench.problems.append(
            f"{root}: no Fishyscapes files (expected <NNNN>_<id>_labels.png from the release, "
            f"or images/ + labels_masks/, or original/ + labels/)"
        )
        return
    scan = scan_pairs(*folders, f"{bench.fmt} frames")
    bench.problems += scan.problems
    bench.frames += [AnomalyFrame(i.stem, i, m, bench.fmt) for i, m in scan.pairs]


_FRAME_READERS = {
    "lab": _frames_lab,
    "fishyscapes-laf": _frames_fishyscapes,
    "fishyscapes-static": _frames_fishyscapes,
    "road-anomaly": _frames_road_anomaly,
    "smiyc-anomaly": _frames_smiyc,
    "smiyc-obstacle": _frames_smiyc,
}


def read_anomaly_benchmark(root: str | Path, fmt: str = "auto", strict: bool = True) -> AnomalyBenchmark:
    """List the labelled frames of an anomaly benchmark (masks are read lazily, remapped).

    Args:
        root: the benchmark directory (layouts in the module docstring).
        fmt: one of :data:`ANOMALY_FORMATS`, ``"lab"`` (its ``anomaly/`` split) or ``"auto"``.
        strict: raise :class:`DatasetError` on structural problems or when no frame is labelled.

    Returns:
        an :class:`AnomalyBenchmark`; iterate it for decoded ``(image, mask)`` pairs (``[H, W, 3]``
        uint8 RGB, overlays applied; ``[H, W]`` uint8 0 inlier / 1 anomaly / 255 void), or use
        ``frame.load_image()`` / ``frame.load_mask()`` of ``bench.frames``. Never read
        ``frame.image_path`` as the benchmark's image: for Fishyscapes Static it is the Cityscapes
        image before the anomaly is blended in.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: missing folder (the anomaly benchmark directory)")
    notes: list[str] = []
    fmt = _detect_format(root, notes) if fmt == "auto" else fmt
    if fmt not in _FRAME_READERS:
        raise DatasetError(
            f"{root}: {fmt!r} is not an anomaly benchmark format (anomaly formats: lab, {', '.join(ANOMALY_FORMATS)})"
        )
    bench = AnomalyBenchmark(root=root, fmt=fmt, notes=notes)
    _FRAME_READERS[fmt](root, bench)
    if not bench.frames and not bench.problems:
        bench.problems.append(f"{root}: no labelled frame found ({fmt} layout)")
    if strict and bench.problems:
        raise DatasetError(bench.problems, root)
    return bench


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _smiyc_track(root: Path) -> str:
    """RoadObstacle21 or RoadAnomaly21: by the folder name (``dataset_ObstacleTrack``...), else by
    the images' extension (the obstacle track's are ``.webp``)."""
    name = root.name.lower()
    if "obstacle" in name:
        return "smiyc-obstacle"
    if "anomaly" in name:
        return "smiyc-anomaly"
    images = root / "images"
    webp = images.is_dir() and any(p.suffix.lower() == ".webp" for p in images.iterdir())
    return "smiyc-obstacle" if webp else "smiyc-anomaly"


#: Prepared Fishyscapes frames whose folder name says neither set are read as this one.
_FISHYSCAPES_DEFAULT = "fishyscapes-laf"


def _detect_here(root: Path, notes: list[str] | None = None) -> str | None:
    """The format of ``root`` itself, or None; remarks on the guess go to ``notes``.

    Prepared Fishyscapes frames (``images/`` + ``labels_masks/``) whose folder name says neither Lost
    & Found nor Static are read as :data:`_FISHYSCAPES_DEFAULT`, with a note: prepared, the two sets
    are read and remapped identically (no overlay, 0 inlier, 1 anomaly, anything else void), so
    only the name given in the results depends on it.
    """
    if (root / "classes.json").is_file():
        return "lab"
    if any(_FS_LABELS.match(p.name) for p in root.glob("*_labels.png")):
        return "fishyscapes-static" if any(root.glob("*rgb.npz")) else "fishyscapes-laf"
    if (root / "gtFine").is_dir() or (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if any((root / d / s).is_dir() for d in ("images", "annotations") for s in ("training", "validation")):
        return "ade20k"
    if (
        any((root / d / s).is_dir() for d in ("images", "annotations") for s in ("train2014", "test2014"))
        or (root / "imageLists").is_dir()
        or any((root / "annotations").glob("*.mat"))
    ):
        return "coco-stuff-10k"
    if (root / "frames").is_dir():
        return "road-anomaly"
    if (root / "labels_masks").is_dir() and any((root / "labels_masks").glob("*_labels_semantic.png")):
        return _smiyc_track(root)
    if _prepared_folders(root) is not None:
        name = root.name.lower()
        if "static" in name:
            return "fishyscapes-static"
        if "lost" in name or "laf" in name:
            return "fishyscapes-laf"
        if notes is not None:
            notes.append(
                f"{root}: prepared Fishyscapes frames (images + masks, 0 inlier / 1 anomaly / other "
                f"void) whose folder name says neither Lost & Found nor Static: read as "
                f"{_FISHYSCAPES_DEFAULT} (both sets read and score identically once prepared; pass "
                f"--format fishyscapes-static to name them Static in the results)"
            )
        return _FISHYSCAPES_DEFAULT
    return None


def detect_format(root: str | Path) -> str:
    """Which layout ``root`` holds: one of :data:`FORMATS`.

    Prepared Fishyscapes frames in a folder whose name says neither ``static`` nor ``lost`` /
    ``laf`` are ``fishyscapes-laf`` (:func:`check_real_dataset` and :func:`read_anomaly_benchmark`
    add a note saying so).

    Raises:
        DatasetError: a missing folder, or no known layout (naming a sub-folder that holds one,
            e.g. ``ADEChallengeData2016``).
    """
    return _detect_format(Path(root), None)


def _detect_format(root: Path, notes: list[str] | None) -> str:
    """:func:`detect_format`, with remarks on the guess appended to ``notes``."""
    if not root.is_dir():
        raise DatasetError(f"{root}: missing folder (the data set directory)")
    found = _detect_here(root, notes)
    if found is not None:
        return found
    hints = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        inner = _detect_here(child)
        if inner is not None:
            hints.append(f"{child} looks like {inner}")
    hint = f"; did you mean a sub-folder? ({'; '.join(hints)})" if hints else ""
    raise DatasetError(f"{root}: no known data set layout (formats: {', '.join(FORMATS)}; see docs/datasets.md){hint}")


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


@dataclass
class RealDatasetReport(DatasetReport):
    """What :func:`check_real_dataset` found (extends :class:`DatasetReport`).

    Attributes:
        format: the layout checked (one of :data:`FORMATS`).
        label_values: per split (``"anomaly"`` for benchmarks), the distinct values stored in the
            label files, as found (before any remapping), sorted.
        unlabelled: images without labels that the layout allows (SMIYC's hidden test images).
        decoded: per split, how many pairs were decoded (fewer than the count with ``limit``).
    """

    format: str = "lab"
    label_values: dict[str, list[int]] = field(default_factory=dict)
    unlabelled: int = 0
    decoded: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines: format, counts, classes, values seen, problems."""
        if self.format not in FORMATS:
            head = f"{self.root}: layout not recognised"
        elif self.format in ANOMALY_FORMATS:
            head = f"{self.format} anomaly benchmark at {self.root}"
        else:
            head = f"{self.format} data set at {self.root}: {len(self.classes)} classes"
            if self.classes:
                shown = ", ".join(self.classes[:8]) + (", ..." if len(self.classes) > 8 else "")
                head += f" ({shown})"
        lines = [head]
        for split, n in self.counts.items():
            line = f"  {split}: {n} pairs"
            if self.decoded.get(split, n) != n:
                line += f" ({self.decoded[split]} decoded)"
            if split in self.label_values:
                line += f"; label values {_ranges(self.label_values[split])}"
            lines.append(line)
        if self.unlabelled:
            lines.append(f"  {self.unlabelled} image(s) without labels skipped (the release's hidden test set)")
        return "\n".join(lines + self._closing_lines())


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 255]`` -> ``"0..2, 5, 255"``; ``"none"`` when empty."""
    if not values:
        return "none"
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def _limited(pairs: list, limit: int | None) -> list:
    return pairs if limit is None else pairs[: max(int(limit), 0)]


def _check_lab(root: Path, splits, limit, report: RealDatasetReport) -> None:
    """The lab layout: ``splits`` None checks train, val and the anomaly split when present; a
    list checks those splits, ``"anomaly"`` naming the anomaly split (then required), so
    ``("anomaly",)`` checks a lab folder used as an anomaly benchmark (classes.json + anomaly/)."""
    if splits is None:
        closed, anomaly = ("train", "val"), True
    else:
        closed, anomaly = tuple(s for s in splits if s != "anomaly"), "anomaly" in splits
        if anomaly and not (root / "anomaly").exists():
            report.problems.append(f"{root / 'anomaly'}: missing folder (the lab layout's anomaly split)")
    lab = check_dataset(root, splits=closed, check_anomaly=anomaly)
    for name in ("classes", "palette", "counts", "class_pixels", "ignore_pixels", "anomaly_pixels", "image_modes"):
        setattr(report, name, getattr(lab, name))
    report.notes += lab.notes
    report.problems += lab.problems
    for split, pixels in lab.class_pixels.items():
        seen = [c for c, n in enumerate(pixels) if n]
        report.label_values[split] = seen + ([IGNORE_INDEX] if lab.ignore_pixels.get(split) else [])


def _closed_set_pairs(root: Path, spec: ClosedSetSpec, split: str, problems: list[str]) -> list[tuple[Path, Path]]:
    """Pair ``split``'s images with label files by mmseg's suffix rule; structural problems only."""
    image_rel, label_rel = spec.splits[split]
    image_dir, label_dir = root / image_rel, root / label_rel
    missing = [d for d in (image_dir, label_dir) if not d.is_dir()]
    for folder in missing:
        problems.append(f"{folder}: missing folder ({spec.name} split {split!r})")
    if missing:
        return []
    images = {
        str(p.relative_to(image_dir))[: -len(spec.img_suffix)]: p
        for p in sorted(image_dir.rglob(f"*{spec.img_suffix}"))
        if p.is_file()
    }
    labels = {
        str(p.relative_to(label_dir))[: -len(spec.seg_suffix)]: p
        for p in sorted(label_dir.rglob(f"*{spec.seg_suffix}"))
        if p.is_file()
    }
    pairs, needs_conversion = [], []
    for key, image in images.items():
        if key in labels:
            pairs.append((image, labels[key]))
        elif spec.name == "cityscapes" and (label_dir / (key + _LABEL_IDS_SUFFIX)).is_file():
            needs_conversion.append(label_dir / (key + _LABEL_IDS_SUFFIX))
        else:
            problems.append(f"{image}: image without its label (expected {label_dir / (key + spec.seg_suffix)})")
    for key, label in labels.items():
        if key not in images:
            problems.append(f"{label}: label without its image (expected {image_dir / (key + spec.img_suffix)})")
    if needs_conversion:
        problems.append(
            f"{label_dir}: {len(needs_conversion)} image(s) have *{_LABEL_IDS_SUFFIX} but no *{spec.seg_suffix} "
            f"(first: {needs_conversion[0]}); create the train-ID files with `gmmseg-lab data check {root} "
            f"--make-train-ids` (official 34 -> 19 mapping) or cityscapesscripts' csCreateTrainIdLabelImgs"
        )
    if not images and not labels:
        problems.append(f"{image_dir}: empty split ({spec.name} split {split!r} has no *{spec.img_suffix} images)")
    return pairs


def _coco_raw_problem(root: Path) -> str | None:
    """The unconverted COCO-Stuff-10K release (``annotations/*.mat``) needs mmseg's converter."""
    mats = sorted((root / "annotations").glob("*.mat")) if (root / "annotations").is_dir() else []
    if mats and not (root / "annotations" / "train2014").is_dir():
        return (
            f"{mats[0]}: the unconverted COCO-Stuff-10K release ({len(mats)} .mat files); run mmseg's "
            f"`python tools/dataset_converters/coco_stuff10k.py {root} --nproc 8` to write "
            f"images/{{train2014,test2014}} and annotations/{{train2014,test2014}}/*_labelTrainIds.png"
        )
    return None


def _check_closed_set(root: Path, fmt: str, splits, limit, report: RealDatasetReport) -> None:
    spec = CLOSED_SETS[fmt]
    report.classes = closed_set_classes(fmt)
    if fmt == "coco-stuff-10k" and (raw := _coco_raw_problem(root)):
        report.problems.append(raw)
        return
    for split in splits or tuple(spec.splits):
        if split not in spec.splits:
            report.problems.append(f"{root}: unknown split {split!r} for {fmt} (splits: {', '.join(spec.splits)})")
            continue
        pairs = _closed_set_pairs(root, spec, split, report.problems)
        report.counts[split] = len(pairs)
        checked = _limited(pairs, limit)
        report.decoded[split] = len(checked)
        histogram = np.zeros(256, np.int64)
        for image_path, label_path in checked:
            label = check_pair(image_path, label_path, report, report.problems)
            if label is None:
                continue
            counts = np.bincount(label.ravel(), minlength=256)
            histogram += counts
            if bad := label_range_problem(label_path, counts, spec.max_label, fmt):
                report.problems.append(bad)
        report.label_values[split] = [int(v) for v in np.flatnonzero(histogram)]
        report.ignore_pixels[split] = int(histogram[IGNORE_INDEX] + (histogram[0] if spec.reduce_zero_label else 0))
    if spec.reduce_zero_label:
        report.notes.append(
            f"stored label 0 is ignored and c becomes class c - 1 (mmseg's reduce_zero_label); "
            f"{spec.num_classes} classes"
        )
    report.notes.append(f"read by mmseg's {spec.mmseg_type}; train with --preset {spec.preset}")
    note_image_modes(report)


def _load_or_problem(loader, path: Path, problems: list[str]) -> np.ndarray | None:
    """``loader(path)``, or None with a problem naming the file when it cannot be read."""
    try:
        return loader(path)
    except DatasetError as exc:  # already names its file (an overlay)
        problems.extend(exc.problems)
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problems.append(f"{path}: unreadable or corrupt ({type(exc).__name__}: {exc})")
        return None


def _check_frame(frame: AnomalyFrame, report: RealDatasetReport, histogram: np.ndarray, seen: np.ndarray) -> None:
    """Decode one anomaly frame exactly as the evaluation will (image composed with its overlay,
    EXIF orientation applied); add its remapped values to ``histogram`` and stored ones to ``seen``."""
    if (turned := exif_orientation_problem(frame.image_path, frame.mask_path)) is not None:
        report.problems.append(turned)
        return
    image = _load_or_problem(lambda _: frame.load_image(), frame.image_path, report.problems)
    raw = _load_or_problem(load_mask, frame.mask_path, report.problems)
    if image is None or raw is None:
        return
    if image.shape[:2] != raw.shape:
        report.problems.append(
            f"{frame.mask_path}: mask size {raw.shape[1]}x{raw.shape[0]} differs from its "
            f"image's {image.shape[1]}x{image.shape[0]} ({frame.image_path.name})"
        )
        return
    counts = np.bincount(raw.ravel(), minlength=256)
    seen |= counts > 0
    if bad := _values_problem(frame.mask_path, np.flatnonzero(counts), frame.fmt):
        report.problems.append(bad)
        return
    histogram += np.bincount(remap_anomaly_mask(raw, frame.fmt).ravel(), minlength=256)


def _check_anomaly(root: Path, fmt: str, limit, report: RealDatasetReport) -> None:
    bench = read_anomaly_benchmark(root, fmt, strict=False)
    report.problems += bench.problems
    report.unlabelled = len(bench.unlabelled)
    report.counts["anomaly"] = len(bench.frames)
    checked = _limited(bench.frames, limit)
    report.decoded["anomaly"] = len(checked)
    histogram, seen = np.zeros(256, np.int64), np.zeros(256, bool)
    for frame in checked:
        _check_frame(frame, report, histogram, seen)
    report.label_values["anomaly"] = [int(v) for v in np.flatnonzero(seen)]
    report.anomaly_pixels = {"inlier": int(histogram[0]), "anomaly": int(histogram[1]), "void": int(histogram[255])}
    report.notes.append(f"mask values: {_describe_values(fmt)}")
    note = undefined_anomaly_note(
        report.anomaly_pixels["anomaly"], report.anomaly_pixels["inlier"], f"the {len(checked)} decoded frame(s)"
    )
    if checked and note:
        report.notes.append(note)


def check_real_dataset(root: str | Path, fmt: str = "auto", splits=None, limit: int | None = None) -> RealDatasetReport:
    """Check a data set in any of :data:`FORMATS` without raising.

    Finds: missing folders, images without labels and labels without images, Cityscapes sets
    with only ``*_gtFine_labelIds.png`` (and says how to convert), the unconverted COCO-Stuff-10K
    release, unreadable images or labels, a label whose size differs from its image's, label
    values outside the classes (closed set) or not defined by the benchmark (open world). Every
    problem names its file.

    Args:
        root: the data set directory.
        fmt: one of :data:`FORMATS`, or ``"auto"`` (:func:`detect_format`).
        splits: closed-set splits to check (default: every split of the format, e.g. ``train``
            and ``val`` for Cityscapes, ``training`` and ``validation`` for ADE20K; for the lab
            layout ``train``, ``val`` and ``anomaly`` when present). For the lab layout,
            ``"anomaly"`` names its anomaly split: ``("anomaly",)`` checks a lab folder used as an
            anomaly benchmark (classes.json and anomaly/ only).
        limit: decode at most this many pairs per split (pairing is still checked for all files);
            the lab layout is always decoded in full.
    """
    root = Path(root)
    report = RealDatasetReport(root=root, format=fmt)
    try:
        report.format = _detect_format(root, report.notes) if fmt == "auto" else fmt
    except DatasetError as exc:
        report.format = "unknown"
        report.problems += exc.problems
        return report
    if report.format not in FORMATS:
        report.problems.append(f"{root}: unknown format {report.format!r} (formats: {', '.join(FORMATS)})")
        return report
    if not root.is_dir():
        report.problems.append(f"{root}: missing folder (the data set directory)")
        return report
    if report.format == "lab":
        _check_lab(root, splits, limit, report)
    elif report.format in CLOSED_SETS:
        _check_closed_set(root, report.format, splits, limit, report)
    else:
        _check_anomaly(root, report.format, limit, report)
    return report


def validate_real_dataset(
    root: str | Path, fmt: str = "auto", splits=None, limit: int | None = None
) -> RealDatasetReport:
    """:func:`check_real_dataset`, raising :class:`DatasetError` that lists every problem found."""
    report = check_real_dataset(root, fmt=fmt, splits=splits, limit=limit)
    if report.problems:
        raise DatasetError(report.problems, root)
    return report
