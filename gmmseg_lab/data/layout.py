"""Reader and checker for the on-disk data-set layout (the embedded set's, and any user's).

Layout::

    DIR/classes.json                      {"classes": [...], "palette": [[r, g, b], ...]}
    DIR/images/{train,val}/NAME.png|jpg   RGB images
    DIR/annotations/{train,val}/NAME.png  uint8 class index per pixel, 255 = ignore
    DIR/anomaly/images/NAME.png|jpg       optional anomaly split
    DIR/anomaly/masks/NAME.png            0 inlier, 1 anomaly, 255 void
    DIR/anomaly/sources.json              optional: {"sources": [{"id": 1, "name": "procedural",
                                          "kind": "procedural"}, {"id": 2, "name": "cat", "kind":
                                          "photo", "file": "chelsea.png"}, ...], "images":
                                          {"NAME.png": ["procedural", "cat"], ...}}
    DIR/anomaly/source_masks/NAME.png     optional (needs sources.json): 0 off the anomalies, else
                                          the id of the anomaly's source; > 0 exactly where the mask is 1
    DIR/meta.json                         optional, written by the generator

An image and its mask pair up by file stem (``a.jpg`` with ``a.png``). Masks must be PNG:
JPEG's lossy compression would corrupt class indices. Extensions count in any case (``a.JPG``).
A split folder is flat: a sub-folder in it is an error. The checker and the mmseg data set
(:mod:`gmmseg_lab.data.mmseg_dataset`) list files with the same function, :func:`list_images`, so
what is checked is what is trained on.

Defined behaviour for unusual files:

- Images in grey-scale (``L``, ``LA``, ``1``, ``I;16``...), palette (``P``) or ``RGBA`` mode are
  not errors: :func:`load_image` converts them to RGB exactly as mmseg's ``LoadImageFromFile``
  (OpenCV) does (grey replicated to three channels, palette expanded, alpha dropped without
  compositing, 16-bit reduced to its high byte). :func:`check_dataset` counts them in
  :attr:`DatasetReport.image_modes` and adds a note.
- ``CMYK`` (OpenCV and Pillow convert it differently) and 32-bit (``I``, ``F``) images are errors.
- An image with an EXIF orientation other than 1 is an error: OpenCV turns it, its mask is not.
- Files are judged by content: images must decode as PNG or JPEG, masks as PNG (a GIF or JPEG
  named ``.png`` is an error), and a PNG must be complete to its IEND chunk with correct CRCs
  (Pillow decodes a PNG cut after its pixel data, libpng refuses it).
- Masks must be single-channel: ``L`` or ``P`` (a palette PNG's *indices* are the labels, as in
  Pascal VOC; its colours are ignored), or 16/32-bit integer with values <= 255. An RGB(A) mask
  is an error: a colour-coded mask needs converting to indices first.
- Not errors, but notes: a split without any pixel of some class, an anomaly split without any
  anomalous (or inlier) pixel (its AUROC is then undefined: ``null`` in metrics.json).
- The anomaly split may name the source of each anomaly (the embedded set does: procedural
  objects and photographs): ``sources.json`` (every source with a unique id 1..254 and name; per
  image, the names of the sources visible in it) and ``source_masks/`` (one PNG per image, the same
  size, values 0 and the listed ids, > 0 exactly where the anomaly mask is 1, the ids present
  matching the image's entry). When present they are checked: what cannot be read or interpreted
  (malformed sources.json, an undecodable source mask, another size than its image, ids that
  sources.json does not define, source masks without sources.json) is an error; disagreements
  between readable files (a source mask that no longer follows its edited anomaly mask, an entry
  listing other sources, an image without its source mask or entry) are notes.
  :func:`read_anomaly_sources` reads ``sources.json``.

Nothing here imports torch or mmseg.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAB_ANOMALY_VALUES",
    "MASK_EXTENSION",
    "DatasetError",
    "DatasetReport",
    "FolderListing",
    "PairScan",
    "anomaly_values_problem",
    "check_dataset",
    "check_pair",
    "describe_anomaly_values",
    "exif_orientation_problem",
    "label_range_problem",
    "list_anomaly_pairs",
    "list_images",
    "list_pairs",
    "load_image",
    "load_mask",
    "note_image_modes",
    "read_anomaly_sources",
    "read_classes",
    "scan_anomaly_split",
    "scan_pairs",
    "undefined_anomaly_note",
    "validate_dataset",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
MASK_EXTENSION = ".png"
IGNORE_INDEX = 255
#: The lab layout's anomaly mask values (stored value -> 0 inlier / 1 anomaly / 255 void).
LAB_ANOMALY_VALUES: dict[int, int] = {0: 0, 1: 1, IGNORE_INDEX: IGNORE_INDEX}
ANOMALY_VALUES = tuple(LAB_ANOMALY_VALUES)
#: Image modes refused by the checker and by :func:`load_image`, with the reason.
UNSUPPORTED_IMAGE_MODES = {
    "CMYK": "OpenCV (mmseg's reader) and Pillow convert CMYK to RGB differently; save it as RGB",
    "I": "32-bit samples have no defined 8-bit RGB conversion; save it as 8-bit RGB",
    "F": "32-bit samples have no defined 8-bit RGB conversion; save it as 8-bit RGB",
}
#: Decoded formats (by content, not by name) allowed for images, and for masks.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a camera's multi-picture JPEG; both readers take frame 1
MASK_FORMATS = ("PNG",)
EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DatasetError(ValueError):
    """A data set breaks the layout. ``problems`` lists every problem, each naming its file."""

    def __init__(self, problems: str | list[str], root: str | Path | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"invalid data set at {root}" if root is not None else "invalid data set"
        if len(self.problems) == 1 and root is None:
            message = self.problems[0]
        else:
            message = f"{head}: {len(self.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# classes.json
# --------------------------------------------------------------------------------------------


def _classes_problems(path: Path) -> tuple[list[str], tuple[str, ...] | None, list[list[int]] | None]:
    """Validate ``classes.json``; returns (problems, classes, palette)."""
    if not path.is_file():
        return [f"{path}: missing (it must list the class names and palette)"], None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"{path}: malformed JSON ({exc})"], None, None
    if not isinstance(data, dict):
        return [f"{path}: top level must be an object with keys 'classes' and 'palette'"], None, None
    problems = [f"{path}: missing key {key!r}" for key in ("classes", "palette") if key not in data]
    if problems:
        return problems, None, None
    classes, palette = data["classes"], data["palette"]
    if not isinstance(classes, list) or not classes:
        problems.append(f"{path}: 'classes' must be a non-empty list of names")
    elif not all(isinstance(c, str) and c.strip() for c in classes):
        problems.append(f"{path}: every class name must be a non-empty string")
    elif len(set(classes)) != len(classes):
        problems.append(f"{path}: class names must be unique")
    elif len(classes) > IGNORE_INDEX:
        problems.append(f"{path}: at most {IGNORE_INDEX} classes fit in uint8 masks with 255 = ignore")
    if not isinstance(palette, list):
        problems.append(f"{path}: 'palette' must be a list of [r, g, b] colours")
    else:
        if isinstance(classes, list) and len(palette) != len(classes):
            problems.append(f"{path}: palette has {len(palette)} colours for {len(classes)} classes")
        for i, colour in enumerate(palette):
            if not (
                isinstance(colour, list)
                and len(colour) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour)
            ):
                problems.append(f"{path}: palette[{i}] = {colour!r} is not [r, g, b] with integers 0..255")
    if problems:
        return problems, None, None
    return [], tuple(classes), [list(c) for c in palette]


def read_classes(root: str | Path) -> tuple[tuple[str, ...], list[list[int]]]:
    """Read and validate ``root/classes.json`` (or ``root`` itself when it is a JSON file).

    Returns:
        ``(classes, palette)``: class names, and one ``[r, g, b]`` (ints 0..255) per class.

    Raises:
        DatasetError: missing file, malformed JSON, missing keys, palette length mismatch or bad
            colour values; the message names the file.
    """
    path = Path(root)
    if not (path.suffix.lower() == ".json" and path.is_file()):
        path = path / "classes.json"
    problems, classes, palette = _classes_problems(path)
    if problems:
        raise DatasetError(problems)
    return classes, palette


# --------------------------------------------------------------------------------------------
# anomaly/sources.json
# --------------------------------------------------------------------------------------------

ANOMALY_SOURCES_FILE = "sources.json"
SOURCE_MASKS_FOLDER = "source_masks"


def _sources_problems(path: Path) -> tuple[list[str], list[dict] | None, dict[str, list[str]] | None]:
    """Validate ``anomaly/sources.json``; returns (problems, sources, images)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"{path}: malformed JSON ({exc})"], None, None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sources"), list)
        or not isinstance(data.get("images"), dict)
    ):
        return [f"{path}: top level must be an object with 'sources' (a list) and 'images' (an object)"], None, None
    problems, ids, names = [], set(), set()
    for i, source in enumerate(data["sources"]):
        if not (
            isinstance(source, dict)
            and isinstance(source.get("id"), int)
            and not isinstance(source["id"], bool)
            and 1 <= source["id"] < IGNORE_INDEX
            and isinstance(source.get("name"), str)
            and source["name"]
            and isinstance(source.get("kind"), str)
        ):
            problems.append(
                f"{path}: sources[{i}] = {source!r} needs an integer 'id' 1..{IGNORE_INDEX - 1}, "
                "a non-empty 'name' and a 'kind'"
            )
            continue
        if source["id"] in ids or source["name"] in names:
            problems.append(f"{path}: sources[{i}]: id {source['id']} or name {source['name']!r} used twice")
        ids.add(source["id"])
        names.add(source["name"])
    for image, listed in data["images"].items():
        if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
            problems.append(f"{path}: images[{image!r}] must be a list of source names")
        elif unknown := sorted(set(listed) - names):
            problems.append(f"{path}: images[{image!r}] names unknown source(s) {', '.join(map(repr, unknown))}")
        elif len(set(listed)) != len(listed):
            problems.append(f"{path}: images[{image!r}] lists a source twice")
    if problems:
        return problems, None, None
    return [], [dict(s) for s in data["sources"]], {k: list(v) for k, v in data["images"].items()}


def read_anomaly_sources(root: str | Path) -> tuple[list[dict], dict[str, list[str]]] | None:
    """Read and validate ``root/anomaly/sources.json`` (or ``root`` itself when it is a JSON file).

    Returns:
        ``(sources, images)``: ``sources`` the list of ``{"id", "name", "kind", ...}`` (photos also
        have ``"file"``), ``images`` the image file name (``"anomaly_00000.png"``) -> names of the
        sources visible in it, in paint order; None when the file is absent.

    Raises:
        DatasetError: malformed JSON or structure (ids, names, unknown names); the message names the file.
    """
    path = Path(root)
    if not (path.suffix.lower() == ".json" and path.is_file()):
        path = path / "anomaly" / ANOMALY_SOURCES_FILE
    if not path.is_file():
        return None
    problems, sources, images = _sources_problems(path)
    if problems:
        raise DatasetError(problems)
    return sources, images


# --------------------------------------------------------------------------------------------
# Listing and loading
# --------------------------------------------------------------------------------------------


@dataclass
class FolderListing:
    """The files of one folder of the layout, as :func:`list_images` (and the mask listing) found them.

    Attributes:
        files: file stem -> path, in name order.
        problems: files that break the layout there (wrong kind, duplicate stem, sub-folder),
            each naming its file.
    """

    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _list_folder(folder: Path, extensions: tuple[str, ...], wrong_kind: str, noun: str) -> FolderListing:
    """Regular, non-hidden files directly in ``folder`` whose extension (in any case) is one of
    ``extensions``; everything else there is a problem (hidden entries are ignored)."""
    listing = FolderListing()
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            listing.problems.append(
                f"{path}: a folder inside {folder.name}/; the layout is flat (files directly "
                f"in {folder}), so nothing in it is checked or read"
            )
        elif not path.is_file():
            continue
        elif path.suffix.lower() not in extensions:
            listing.problems.append(f"{path}: {wrong_kind}")
        elif path.stem in listing.files:
            listing.problems.append(
                f"{path}: two {noun} share the name {path.stem!r} (also {listing.files[path.stem].name})"
            )
        else:
            listing.files[path.stem] = path
    return listing


def list_images(folder: str | Path, extensions=IMAGE_EXTENSIONS) -> FolderListing:
    """The images of one split folder, the one listing that the checker and the mmseg data set
    (:class:`~gmmseg_lab.data.mmseg_dataset.GMMLabDataset`) both use: regular, non-hidden files
    directly in ``folder`` (not in sub-folders) whose extension, in any case (``a.JPG`` too), is one
    of ``extensions``; sorted by name.

    Returns:
        a :class:`FolderListing`: ``files`` (stem -> path) and ``problems`` (non-image files,
        two images with one stem, sub-folders).
    """
    extensions = tuple(e.lower() for e in ((extensions,) if isinstance(extensions, str) else extensions))
    return _list_folder(
        Path(folder), extensions, f"not an image file (expected one of {', '.join(extensions)})", "images"
    )


@dataclass
class PairScan:
    """Image/mask pairs of one split (:func:`scan_pairs`) and the structural problems found."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def scan_pairs(image_dir: Path, mask_dir: Path, what: str) -> PairScan:
    """Pair the images of ``image_dir`` (:func:`list_images`) with the PNG masks of ``mask_dir``
    by stem; collect every structural problem, each naming its file."""
    scan = PairScan()
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            scan.problems.append(f"{folder}: missing folder ({what})")
    if scan.problems:
        return scan
    images = list_images(image_dir)
    masks = _list_folder(mask_dir, (MASK_EXTENSION,), "masks must be PNG (lossy formats corrupt label values)", "masks")
    scan.problems += images.problems + masks.problems
    for stem, path in images.files.items():
        if stem not in masks.files:
            scan.problems.append(f"{path}: image without its mask (expected {mask_dir / (stem + MASK_EXTENSION)})")
        else:
            scan.pairs.append((path, masks.files[stem]))
    for stem, path in masks.files.items():
        if stem not in images.files:
            scan.problems.append(f"{path}: mask without its image (expected {image_dir / stem}.png or .jpg)")
    if not images.files and not masks.files:
        scan.problems.append(f"{image_dir}: empty split ({what} has no images)")
    return scan


def scan_anomaly_split(root: str | Path) -> PairScan | None:
    """The pairs of ``root/anomaly`` (``images/`` with ``masks/``), or None when the optional
    anomaly split is absent. Used by the checker, :func:`list_anomaly_pairs` and the benchmark reader."""
    root = Path(root)
    if not (root / "anomaly").exists():
        return None
    return scan_pairs(root / "anomaly" / "images", root / "anomaly" / "masks", "anomaly split")


def list_pairs(root: str | Path, split: str, strict: bool = True) -> list[tuple[Path, Path]]:
    """``(image_path, mask_path)`` pairs of ``split``, sorted by name.

    With ``strict`` (default), raise :class:`DatasetError` on a missing folder, an unpaired file or
    an empty split; otherwise return whatever pairs exist.
    """
    root = Path(root)
    scan = scan_pairs(root / "images" / split, root / "annotations" / split, f"split {split!r}")
    if strict and scan.problems:
        raise DatasetError(scan.problems, root)
    return scan.pairs


def list_anomaly_pairs(root: str | Path, strict: bool = True) -> list[tuple[Path, Path]]:
    """``(image_path, anomaly_mask_path)`` pairs of ``root/anomaly``, sorted by name; ``[]`` when
    the optional anomaly split is absent. ``strict`` as in :func:`list_pairs`."""
    scan = scan_anomaly_split(root)
    if scan is None:
        return []
    if strict and scan.problems:
        raise DatasetError(scan.problems, root)
    return scan.pairs


def _image_to_rgb(img: Image.Image, path) -> np.ndarray:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        # The high byte, as OpenCV (mmseg's LoadImageFromFile) reduces 16-bit samples to 8 bits.
        grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in UNSUPPORTED_IMAGE_MODES:
        raise ValueError(f"{path}: image mode {img.mode!r} is not supported ({UNSUPPORTED_IMAGE_MODES[img.mode]})")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """Load an image as ``[H, W, 3]`` uint8 RGB, pixel for pixel as mmseg's ``LoadImageFromFile``
    (OpenCV) reads it, then BGR to RGB: grey replicated, palette expanded, alpha dropped, 16-bit
    reduced to its high byte, EXIF orientation applied.

    Raises:
        ValueError: naming ``path``, for CMYK and 32-bit images (see ``UNSUPPORTED_IMAGE_MODES``).
    """
    with Image.open(path) as img:
        img.load()
        return _image_to_rgb(ImageOps.exif_transpose(img), path).copy()


def _mask_to_array(img: Image.Image, path) -> np.ndarray:
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "1"):
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"{path}: mask values {values.min()}..{values.max()} do not fit in uint8")
        return values.astype(np.uint8)
    raise ValueError(f"{path}: mask must be single-channel (mode L or P), got mode {img.mode!r}")


def load_mask(path: str | Path) -> np.ndarray:
    """Load a mask as ``[H, W]`` uint8 (class indices, or anomaly values 0/1/255).

    Raises:
        ValueError: the mask is not single-channel or has values outside 0..255.
    """
    with Image.open(path) as img:
        img.load()
        return _mask_to_array(img, path).copy()


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found.

    Attributes:
        root: the data set directory.
        classes: class names from classes.json (empty when it is broken).
        palette: ``[r, g, b]`` per class (empty when classes.json is broken).
        counts: number of image/mask pairs per split (``"anomaly"`` included when checked).
        class_pixels: per split, pixel count per class, ``[num_classes]`` ints.
        ignore_pixels: per split, pixels labelled 255.
        anomaly_pixels: ``{"inlier": n, "anomaly": n, "void": n}``, or None without an anomaly split.
        anomaly_source_pixels: source name -> anomaly pixels of that source in ``anomaly/source_masks``,
            or None without source masks (or when sources.json is broken).
        image_modes: PIL mode -> number of images in it (everything is loaded as RGB).
        notes: non-fatal remarks (conversions performed on load).
        problems: every problem found, each naming its file; empty when the set is valid.
    """

    root: Path
    classes: tuple[str, ...] = ()
    palette: list[list[int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    class_pixels: dict[str, list[int]] = field(default_factory=dict)
    ignore_pixels: dict[str, int] = field(default_factory=dict)
    anomaly_pixels: dict[str, int] | None = None
    anomaly_source_pixels: dict[str, int] | None = None
    image_modes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"data set {self.root}: {len(self.classes)} classes"]
        lines += [f"  {split}: {n} pairs" for split, n in self.counts.items()]
        return "\n".join(lines + self._closing_lines())

    def _closing_lines(self) -> list[str]:
        """Anomaly pixels, notes and problems: the end of every summary."""
        lines = []
        if self.anomaly_pixels is not None:
            lines.append(f"  anomaly pixels: {self.anomaly_pixels}")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  {len(self.problems)} problem(s)" if self.problems else "  valid")
        lines += [f"    - {p}" for p in self.problems]
        return lines


def _png_structure_problem(path: Path) -> str | None:
    """Why libpng would reject the PNG at ``path``, or None.

    Pillow stops reading once the pixels are decoded, so it accepts a PNG cut inside its last chunks
    or its IEND; libpng (OpenCV, hence mmseg's ``LoadImageFromFile``) reads to IEND and refuses it.
    Walk every chunk: each must be complete with a correct CRC, and IEND must be reached.
    """
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return "not a PNG stream (bad signature)"
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            return f"truncated PNG: the file ends at byte {len(data)} before the IEND chunk"
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return (
                f"truncated PNG: chunk {kind.decode('latin-1')!r} at byte {pos} needs {length + 12} bytes, "
                f"the file has {len(data) - pos} left"
            )
        if zlib.crc32(data[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            return f"corrupt PNG: bad CRC in chunk {kind.decode('latin-1')!r} at byte {pos}"
        if kind == b"IEND":
            return None
        pos = end


def _open_decoded(path: Path, problems: list[str], formats: tuple[str, ...] = IMAGE_FORMATS) -> Image.Image | None:
    """Open and fully decode, turning any failure into a problem naming the file.

    Also refuses content in a format other than ``formats`` (whatever the file's extension: a GIF
    or ICO named ``.png`` decodes in Pillow but not always in OpenCV) and PNGs that libpng rejects.
    """
    try:
        with Image.open(path) as img:
            img.load()  # a truncated file only fails here; a loaded image outlives its file
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problems.append(f"{path}: unreadable or corrupt image ({type(exc).__name__}: {exc})")
        return None
    if img.format not in formats:
        problems.append(f"{path}: the file holds a {img.format} image; expected {' or '.join(formats)} content")
        return None
    if img.format == "PNG":
        reason = _png_structure_problem(path)
        if reason is not None:
            problems.append(f"{path}: unreadable or corrupt image ({reason})")
            return None
    return img


# Shared checks: the lab layout's checker (below) and real data sets' (gmmseg_lab.data.real) use
# these, so both say the same thing about the same fault.

_ANOMALY_MEANING = {0: "inlier", 1: "anomaly", IGNORE_INDEX: "void"}


def _shown(values) -> str:
    values = [int(v) for v in values]
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")


def exif_orientation_problem(image_path: Path, mask_path: Path, image: Image.Image | None = None) -> str | None:
    """A problem when the image carries an EXIF orientation other than 1 (None otherwise, and when
    the file cannot be opened: decoding reports that). ``image``: the opened image, to skip reopening.

    OpenCV (mmseg's ``LoadImageFromFile``) and :func:`load_image` apply the tag; masks are read as
    stored, so the pair no longer lines up.
    """
    if image is None:
        try:
            with Image.open(image_path) as img:
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None
    else:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation in (0, 1):
        return None
    return (
        f"{image_path}: EXIF orientation {orientation}: the image is turned on loading (by mmseg's "
        f"LoadImageFromFile and load_image) but its mask {Path(mask_path).name} is not; save the pixels "
        "upright without the tag"
    )


def label_range_problem(mask_path: Path, counts: np.ndarray, max_label: int, owner: str) -> str | None:
    """A problem naming the stored label values above ``max_label`` (other than 255 = ignore).

    Args:
        counts: ``[256]`` pixel count per stored value (``np.bincount(mask.ravel(), minlength=256)``).
        owner: what defines the classes, e.g. ``"3 classes"`` or ``"cityscapes"``.
    """
    bad = np.flatnonzero(counts[max_label + 1 : IGNORE_INDEX]) + max_label + 1
    if not len(bad):
        return None
    return (
        f"{mask_path}: label values {_shown(bad)} out of range for {owner} "
        f"(valid: 0..{max_label} and {IGNORE_INDEX} = ignore)"
    )


def describe_anomaly_values(mapping: dict[int, int], other: int | None = None) -> str:
    """``"0 -> inlier, 1 -> anomaly, 255 -> void"`` for a stored-value map; ``other``: the target
    of values not listed (None: they are errors)."""
    text = ", ".join(f"{v} -> {_ANOMALY_MEANING[t]}" for v, t in mapping.items())
    return text + (f", any other -> {_ANOMALY_MEANING[other]}" if other is not None else "")


def anomaly_values_problem(path, values, mapping: dict[int, int], other: int | None, owner: str) -> str | None:
    """A problem naming the stored anomaly-mask ``values`` that ``mapping`` does not define.

    Args:
        path: the mask file (None: the message names no file).
        values: the distinct stored values (any iterable of ints).
        mapping, other: as :func:`describe_anomaly_values`; with ``other`` every value is defined.
        owner: who defines the values, e.g. ``"the lab layout"`` or ``"road-anomaly"``.
    """
    if other is not None:
        return None
    bad = sorted({int(v) for v in values} - set(mapping))
    if not bad:
        return None
    where = f"{path}: " if path is not None else ""
    return (
        f"{where}anomaly mask values {_shown(bad)} are not defined for {owner} "
        f"(allowed: {describe_anomaly_values(mapping, other)})"
    )


def undefined_anomaly_note(num_pos: int, num_neg: int, where: str) -> str | None:
    """The one note, for the checkers and for ``evaluate``, that AUROC / AP / FPR95 are undefined:
    ``where`` (e.g. ``"the anomaly split"``) has no anomalous (``num_pos`` = 0) or no inlier
    (``num_neg`` = 0) pixel outside void. None when both kinds are present."""
    if num_pos and num_neg:
        return None
    if not num_pos:
        missing, upper, lower = "anomalous (1)", "AUROC, AP and FPR95", "auroc, ap, fpr95"
    else:
        missing, upper, lower = "inlier (0)", "AUROC and FPR95", "auroc, fpr95"
    return (
        f"{where} has no {missing} pixel outside void (255): {upper} are undefined "
        f"(in metrics.json: {lower} are null, with a warning)"
    )


def note_image_modes(report: DatasetReport) -> None:
    """Add the note on images stored in another mode than RGB (refused modes are problems, not notes)."""
    converted = {m: n for m, n in sorted(report.image_modes.items()) if m not in ("RGB", *UNSUPPORTED_IMAGE_MODES)}
    if converted:
        listed = ", ".join(f"{n} in mode {m}" for m, n in converted.items())
        report.notes.append(
            f"images not stored as RGB ({listed}) are converted to RGB on load (alpha dropped, "
            "16-bit reduced to its high byte), by load_image and mmseg's reader alike"
        )


def check_pair(image_path: Path, mask_path: Path, report: DatasetReport, problems: list[str]) -> np.ndarray | None:
    """Check one image/mask pair as mmseg's loaders will read it (decoded, format, mode, EXIF
    orientation, single-channel mask, sizes); returns the mask's values or None when it cannot be used."""
    image = _open_decoded(image_path, problems)
    mask_img = _open_decoded(mask_path, problems, MASK_FORMATS)
    if image is not None:
        report.image_modes[image.mode] = report.image_modes.get(image.mode, 0) + 1
        if image.mode in UNSUPPORTED_IMAGE_MODES:
            problems.append(
                f"{image_path}: image mode {image.mode!r} is not supported ({UNSUPPORTED_IMAGE_MODES[image.mode]})"
            )
        if (turned := exif_orientation_problem(image_path, mask_path, image)) is not None:
            problems.append(turned)
    if mask_img is None:
        return None
    try:
        mask = _mask_to_array(mask_img, mask_path)
    except ValueError as exc:
        problems.append(str(exc))
        return None
    if image is not None and image.size != mask_img.size:
        w, h = image.size
        mw, mh = mask_img.size
        problems.append(f"{mask_path}: mask size {mw}x{mh} differs from its image's {w}x{h} ({image_path.name})")
        return None
    return mask


def _listed(items: list[str]) -> str:
    return ", ".join(items[:4]) + (", ..." if len(items) > 4 else "")


class _SourceMaskChecker:
    """Checks ``anomaly/sources.json`` and ``anomaly/source_masks/`` (both optional) along the
    anomaly split's pairs: :meth:`check` per pair with its decoded anomaly mask, then :meth:`finish`.

    Files that cannot be read or interpreted (malformed sources.json, undecodable or multi-channel
    source masks, another size than the image, ids sources.json does not define, source masks
    without sources.json) are problems. Disagreements between readable files (a source mask that
    does not follow its anomaly mask, an image's entry listing other sources than its source mask
    shows, images without a source mask or entry) are notes: editing the anomaly masks, as one may,
    must not make the split unusable."""

    def __init__(self, anomaly_dir: Path, pairs: list[tuple[Path, Path]], problems: list[str]):
        self.json_path = anomaly_dir / ANOMALY_SOURCES_FILE
        self.folder = anomaly_dir / SOURCE_MASKS_FOLDER
        self.sources = self.images = None
        self.names: dict[int, str] = {}
        self.disagree: list[str] = []  # source masks off their anomaly masks, "name (n px)"
        self.mislisted: list[str] = []  # images whose sources.json entry differs from the source mask
        self.unmasked: list[str] = []  # images without a source mask
        self.stray_masks: list[str] = []  # source masks without an image
        self.unlisted: list[str] = []  # images without a sources.json entry
        self.stray_entries: list[str] = []  # sources.json entries without an image
        if self.json_path.exists():
            found, self.sources, self.images = _sources_problems(self.json_path)
            problems += found
            if self.sources is not None:
                self.names = {s["id"]: s["name"] for s in self.sources}
                on_disk = {image.name for image, _ in pairs}
                self.stray_entries = sorted(set(self.images) - on_disk)
                self.unlisted = sorted(on_disk - set(self.images))
        self.masks = FolderListing()
        if self.folder.is_dir():
            self.masks = _list_folder(self.folder, (MASK_EXTENSION,), "source masks must be PNG", "source masks")
            problems += self.masks.problems
            if not self.json_path.exists():
                problems.append(
                    f"{self.folder}: source masks without {self.json_path.name} to name their ids "
                    f"(expected {self.json_path})"
                )
        elif self.folder.exists():
            problems.append(f"{self.folder}: not a folder (the source masks' folder)")
        self.pixels = {name: 0 for name in self.names.values()} if self.names else None
        self.checked: set[str] = set()

    def check(self, image_path: Path, mask_path: Path, mask: np.ndarray | None, problems: list[str]) -> None:
        if not self.folder.is_dir():
            return
        self.checked.add(image_path.stem)
        path = self.masks.files.get(image_path.stem)
        if path is None:
            self.unmasked.append(image_path.name)
            return
        img = _open_decoded(path, problems, MASK_FORMATS)
        if img is None:
            return
        try:
            source = _mask_to_array(img, path)
        except ValueError as exc:
            problems.append(str(exc))
            return
        if mask is None:  # the pair itself is broken (reported): nothing to compare with
            return
        if source.shape != mask.shape:
            problems.append(
                f"{path}: source mask size {source.shape[1]}x{source.shape[0]} differs from its "
                f"image's {mask.shape[1]}x{mask.shape[0]} ({image_path.name})"
            )
            return
        counts = np.bincount(source.ravel(), minlength=256)
        present = [int(v) for v in np.flatnonzero(counts[1:]) + 1]
        if self.sources is not None:
            if unknown := [v for v in present if v not in self.names]:
                problems.append(
                    f"{path}: source ids {_shown(unknown)} are not defined in {self.json_path} "
                    f"(its ids: {_shown(sorted(self.names))})"
                )
                return
            for v in present:
                self.pixels[self.names[v]] += int(counts[v])
            listed = self.images.get(image_path.name)
            if listed is not None and set(listed) != {self.names[v] for v in present}:
                self.mislisted.append(image_path.name)
        if off := int(np.count_nonzero((source > 0) != (mask == 1))):
            self.disagree.append(f"{path.name} ({off} px)")

    def finish(self, report: DatasetReport) -> None:
        self.stray_masks = [path.name for stem, path in self.masks.files.items() if stem not in self.checked]
        unreliable, ignored = "the per-source figures of these images are not reliable", "they are ignored"
        remarks = [
            (
                self.disagree,
                f"source mask(s) in {self.folder} are not > 0 exactly where their anomaly mask is 1",
                unreliable,
            ),
            (self.unmasked, f"image(s) have no source mask in {self.folder}", unreliable),
            (
                self.mislisted,
                (f"image(s) have a {self.json_path.name} entry listing other sources than their source mask shows"),
                unreliable,
            ),
            (self.unlisted, f"image(s) have no entry in {self.json_path}", unreliable),
            (self.stray_masks, f"source mask(s) in {self.folder} have no image in the anomaly split", ignored),
            (self.stray_entries, f"entries of {self.json_path} name no image of the anomaly split", ignored),
        ]
        for items, what, meaning in remarks:
            if items:
                report.notes.append(f"{len(items)} {what} ({_listed(items)}): {meaning}")
        if self.folder.is_dir():
            report.anomaly_source_pixels = self.pixels


def check_dataset(root: str | Path, splits=("train", "val"), check_anomaly: bool = True) -> DatasetReport:
    """Check a data set in the layout without raising; see :class:`DatasetReport`.

    Detects: missing or malformed classes.json, missing folders, empty splits, images without masks
    and masks without images, non-image files and sub-folders in a split, unreadable/corrupt/truncated
    images or masks (PNGs checked chunk by chunk as libpng reads them), content in another format than
    PNG/JPEG (PNG for masks), CMYK or 32-bit images, images with an EXIF orientation, a mask whose
    size differs from its image's, non-single-channel masks, label values >= the number of
    classes (other than 255), and anomaly mask values other than 0/1/255; and, when the anomaly
    split has them, a malformed ``sources.json`` and source masks that are undecodable, of another
    size than their image or with ids sources.json does not define (source masks that disagree with
    the anomaly masks or with sources.json are notes). Every image and mask is decoded once: a few
    hundred 128 px pairs take well under a second.

    Args:
        root: the data set directory.
        splits: which ``images/<split>`` / ``annotations/<split>`` pairs to check.
        check_anomaly: also check ``root/anomaly`` when present (it is optional).
    """
    root = Path(root)
    report = DatasetReport(root=root)
    if not root.is_dir():
        report.problems.append(f"{root}: missing folder (the data set directory)")
        return report
    problems, classes, palette = _classes_problems(root / "classes.json")
    report.problems += problems
    if classes is not None:
        report.classes, report.palette = classes, palette
    num_classes = len(classes) if classes is not None else None

    for split in splits:
        scan = scan_pairs(root / "images" / split, root / "annotations" / split, f"split {split!r}")
        report.problems += scan.problems
        report.counts[split] = len(scan.pairs)
        histogram = np.zeros(256, np.int64)
        for image_path, mask_path in scan.pairs:
            mask = check_pair(image_path, mask_path, report, report.problems)
            if mask is None:
                continue
            counts = np.bincount(mask.ravel(), minlength=256)
            histogram += counts
            if num_classes is not None and (
                bad := label_range_problem(mask_path, counts, num_classes - 1, f"{num_classes} classes")
            ):
                report.problems.append(bad)
        if num_classes is not None:
            report.class_pixels[split] = [int(n) for n in histogram[:num_classes]]
            absent = [classes[c] for c in range(num_classes) if histogram[c] == 0]
            if absent and histogram.sum() > 0:
                report.notes.append(
                    f"split {split!r} has no pixel of class(es) {', '.join(map(repr, absent))}: trained on it, "
                    "their mixtures keep their initial values; evaluated on it, their IoU is NaN (null in "
                    "metrics.json) where the model never predicts them, else 0"
                )
        report.ignore_pixels[split] = int(histogram[IGNORE_INDEX])

    scan = scan_anomaly_split(root) if check_anomaly else None
    if scan is not None:
        report.problems += scan.problems
        report.counts["anomaly"] = len(scan.pairs)
        histogram = np.zeros(256, np.int64)
        sources = _SourceMaskChecker(root / "anomaly", scan.pairs, report.problems)
        for image_path, mask_path in scan.pairs:
            mask = check_pair(image_path, mask_path, report, report.problems)
            sources.check(image_path, mask_path, mask, report.problems)
            if mask is None:
                continue
            counts = np.bincount(mask.ravel(), minlength=256)
            histogram += counts
            bad = anomaly_values_problem(mask_path, np.flatnonzero(counts), LAB_ANOMALY_VALUES, None, "the lab layout")
            if bad:
                report.problems.append(bad)
        sources.finish(report)
        report.anomaly_pixels = {"inlier": int(histogram[0]), "anomaly": int(histogram[1]), "void": int(histogram[255])}
        note = undefined_anomaly_note(
            report.anomaly_pixels["anomaly"], report.anomaly_pixels["inlier"], "the anomaly split"
        )
        if histogram.sum() > 0 and note:
            report.notes.append(note)

    note_image_modes(report)
    return report


def validate_dataset(root: str | Path, splits=("train", "val"), check_anomaly: bool = True) -> DatasetReport:
    """:func:`check_dataset`, raising :class:`DatasetError` that lists every problem found.

    Returns:
        the :class:`DatasetReport` of a valid data set.
    """
    report = check_dataset(root, splits=splits, check_anomaly=check_anomaly)
    if report.problems:
        raise DatasetError(report.problems, root)
    return report
