"""Bad data, end to end: the checker, both readers, mmseg's loaders and ``evaluate`` agree.

For every fault the data-set checker (``check_dataset`` / ``validate_dataset``) either names the
broken file in a problem, or passes a file that ``load_image`` / ``load_mask`` and mmseg's loaders
(``build_config`` + ``build_dataloader``, the path of training and evaluation) read to the very same
pixels. Where mmseg's loader reads a refused file without complaint (a mask of the wrong size, an
image turned by its EXIF tag, a 16-bit label above 255, a lossy mask), the test shows the silent
damage the checker prevents. docs/robustness.md tabulates the cases.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from gmmseg_lab.data.layout import (
    DatasetError,
    check_dataset,
    load_image,
    load_mask,
    validate_dataset,
)
from gmmseg_lab.eval.metrics import AnomalyScores, MetricUndefinedWarning, SegmentationIoU

H, W = 8, 12
CLASSES = {"classes": ["a", "b", "c"], "palette": [[255, 0, 0], [0, 255, 0], [0, 0, 255]]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Single-threaded torch (see conftest.single_thread_torch)."""


# ------------------------------------------------------------------------------------------------
# A tiny valid data set, and the two readers


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(seed: int, h: int = H, w: int = W) -> np.ndarray:
    label = np.random.default_rng(100 + seed).integers(0, 3, (h, w), dtype=np.uint8)
    label[0, :4] = [255, 0, 1, 2]  # every class present, and one ignored pixel
    return label


def _save(image: Image.Image | np.ndarray, path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(path, **kwargs)


@pytest.fixture
def lab(tmp_path):
    """3 classes; train t0.png, t1.png; val v0.png; anomaly x0.png (inlier, anomaly and void pixels)."""
    root = tmp_path / "lab"
    root.mkdir()
    (root / "classes.json").write_text(json.dumps(CLASSES))
    for i, name in enumerate(("t0", "t1")):
        _save(_rgb(i), root / f"images/train/{name}.png")
        _save(_labels(i), root / f"annotations/train/{name}.png")
    _save(_rgb(2), root / "images/val/v0.png")
    _save(_labels(2), root / "annotations/val/v0.png")
    _save(_rgb(3), root / "anomaly/images/x0.png")
    anomaly = np.zeros((H, W), np.uint8)
    anomaly[2:5, 3:7] = 1
    anomaly[0] = 255
    _save(anomaly, root / "anomaly/masks/x0.png")
    assert validate_dataset(root).ok, "the fixture itself must be valid"
    return root


def _dataset(root, split: str, loader: str = "val"):
    """mmseg's data set as the shipped quick config builds it for ``root``.

    ``loader="train"`` is the training path (with RandomFlip); ``"val"`` the evaluation path (no
    augmentation), pointed at any split as ``evaluate`` does.
    """
    from gmmseg_lab.models import build_config, build_dataloader

    cfg = build_config("segformer", "gmm", "quick", data_root=root)
    folders = {"anomaly": ("anomaly/images", "anomaly/masks")}.get(split, (f"images/{split}", f"annotations/{split}"))
    cfg[f"{loader}_dataloader"].dataset.data_prefix = dict(img_path=folders[0], seg_map_path=folders[1])
    cfg[f"{loader}_dataloader"].num_workers = 0
    return build_dataloader(cfg, loader).dataset


def _mmseg_sample(root, split: str, name: str, loader: str = "val"):
    """``(image RGB [H, W, 3], mask [H, W])`` of file stem ``name`` as mmseg's loader returns them."""
    dataset = _dataset(root, split, loader)
    for i in range(len(dataset)):
        if dataset.get_data_info(i)["img_path"].rsplit("/", 1)[-1].split(".")[0] == name:
            sample = dataset[i]
            image = sample["inputs"].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
            return np.ascontiguousarray(image), sample["data_samples"].gt_sem_seg.data[0].numpy()
    raise AssertionError(f"mmseg's data set of {root}/{split} has no image named {name}")


def _problems_naming(root, filename: str) -> list[str]:
    report = check_dataset(root)
    return [p for p in report.problems if filename in p]


def _assert_refused(root, filename: str, expected: str | None = None) -> list[str]:
    """The checker names ``filename`` (with ``expected`` in the message) and validate raises."""
    named = _problems_naming(root, filename)
    assert named, f"check_dataset({root}) should name {filename}; problems: {check_dataset(root).problems}"
    if expected is not None:
        assert any(expected in p for p in named), f"expected {expected!r} in the problem for {filename}: {named}"
    with pytest.raises(DatasetError) as info:
        validate_dataset(root)
    assert filename in str(info.value)
    return named


# ------------------------------------------------------------------------------------------------
# Truncated, corrupt and non-image files


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _other_format_bytes(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _bad_crc(data: bytes) -> bytes:
    broken = bytearray(data)
    idat = data.index(b"IDAT")
    broken[idat + 6] ^= 0xFF  # one byte of compressed pixel data: the chunk's CRC no longer matches
    return bytes(broken)


_IMAGE = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
_PNG, _JPEG = _png_bytes(_IMAGE), _jpeg_bytes(_IMAGE)

#: name -> (file name, bytes, whether mmseg's LoadImageFromFile fails on it too: True, False, or None
#: where it depends on the OpenCV build: libjpeg may decode a cut JPEG partially, with only a
#: warning, and OpenCV reads GIF only since 4.11). Each replaces a train image.
BROKEN_IMAGES = {
    "png cut at 10%": ("t0.png", _PNG[: len(_PNG) // 10], True),
    "png cut at 50%": ("t0.png", _PNG[: len(_PNG) // 2], True),
    "png cut at 90%": ("t0.png", _PNG[: len(_PNG) * 9 // 10], True),
    # Pillow decodes these three (the pixels are complete); libpng, hence mmseg, refuses them.
    "png without IEND": ("t0.png", _PNG[:-12], True),
    "png cut inside IEND": ("t0.png", _PNG[:-4], True),
    "png cut by 1 byte": ("t0.png", _PNG[:-1], True),
    "png with a bad CRC": ("t0.png", _bad_crc(_PNG), True),
    "jpeg cut at 10%": ("t0.jpg", _JPEG[: len(_JPEG) // 10], True),
    "jpeg cut at 50%": ("t0.jpg", _JPEG[: len(_JPEG) // 2], None),
    "jpeg cut at 90%": ("t0.jpg", _JPEG[: len(_JPEG) * 9 // 10], None),
    "jpeg without EOI": ("t0.jpg", _JPEG[:-2], None),
    "random bytes .png": ("t0.png", np.random.default_rng(1).bytes(3000), True),
    "random bytes .jpg": ("t0.jpg", np.random.default_rng(2).bytes(3000), True),
    "random bytes after a PNG signature": ("t0.png", _PNG[:8] + np.random.default_rng(3).bytes(500), True),
    "empty .png": ("t0.png", b"", True),
    "text named .jpg": ("t0.jpg", b"this is a note, not a photograph\n", True),
    "html error page named .png": ("t0.png", b"<html><body>404 Not Found</body></html>", True),
    "ICO named .png": ("t0.png", _other_format_bytes(_IMAGE[:32, :32], "ICO"), True),  # Pillow reads it, OpenCV not
    "GIF named .png": ("t0.png", _other_format_bytes(_IMAGE, "GIF"), None),  # the layout refuses it anyway
    "BMP named .jpg": ("t0.jpg", _other_format_bytes(_IMAGE, "BMP"), False),
}


@pytest.mark.parametrize("case", list(BROKEN_IMAGES))
def test_broken_image_is_named_by_the_checker_and_by_the_training_loader(lab, case):
    filename, data, loader_fails = BROKEN_IMAGES[case]
    (lab / "images/train/t0.png").unlink()
    (lab / "images/train" / filename).write_bytes(data)
    _save(_labels(0, 48, 64), lab / "annotations/train/t0.png")
    _assert_refused(lab, filename)

    dataset = _dataset(lab, "train", loader="train")
    index = [dataset.get_data_info(i)["img_path"].endswith(filename) for i in range(len(dataset))].index(True)
    try:
        sample = dataset[index]
    except DatasetError as error:
        assert loader_fails is not False, f"mmseg's loader should read {case}: {error}"
        assert f"images/train/{filename}" in str(error), f"mmseg's loader failed on {case} without naming it"
    else:
        assert loader_fails is not True, f"mmseg's loader read {case} without an error"
        assert tuple(sample["inputs"].shape) == (3, 48, 64)  # decoded: only the checker stops it


#: name -> (mask bytes, mmseg's LoadAnnotations fails on it too). Each replaces annotations/train/t0.png.
BROKEN_MASKS = {
    "mask png cut at 50%": (_png_bytes(_labels(0))[: len(_png_bytes(_labels(0))) // 2], True),
    "mask png cut inside IEND": (_png_bytes(_labels(0))[:-4], False),  # Pillow (mmseg's mask reader) takes it
    "mask random bytes": (np.random.default_rng(4).bytes(400), True),
    "mask empty file": (b"", True),
    "mask is a JPEG named .png": (_jpeg_bytes(_labels(0) * 80), False),  # lossy labels, read silently
}


@pytest.mark.parametrize("case", list(BROKEN_MASKS))
def test_broken_mask_is_named_by_the_checker_and_by_the_training_loader(lab, case):
    data, loader_fails = BROKEN_MASKS[case]
    (lab / "annotations/train/t0.png").write_bytes(data)
    _assert_refused(lab, "t0.png")
    if loader_fails:
        # the class-balanced sampler reads every training mask when the loader is built
        with pytest.raises(DatasetError) as info:
            _dataset(lab, "train", loader="train")
        assert "annotations/train/t0.png" in str(info.value) and "images/train/t0.png" in str(info.value)
        dataset = _dataset(lab, "train", loader="val")  # without the sampler: the loading transform names it
        with pytest.raises(DatasetError) as info:
            dataset[0]
        assert "annotations/train/t0.png" in str(info.value) and "images/train/t0.png" in str(info.value)
    else:
        dataset = _dataset(lab, "train", loader="train")
        assert dataset[0]["data_samples"].gt_sem_seg.data.shape[-2:] == (H, W)


def test_corrupt_anomaly_and_val_files_are_named(lab):
    (lab / "anomaly/images/x0.png").write_bytes(_PNG[:-4])
    (lab / "annotations/val/v0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    named = _assert_refused(lab, "x0.png", "truncated PNG")
    assert "anomaly/images" in named[0]
    _assert_refused(lab, "v0.png")


def test_png_trailing_bytes_after_iend_are_accepted_by_both_readers(lab):
    """Data after IEND is ignored by libpng and Pillow alike: not an error."""
    path = lab / "images/train/t0.png"
    path.write_bytes(path.read_bytes() + b"trailing bytes from a careless upload")
    assert validate_dataset(lab).ok
    image, _ = _mmseg_sample(lab, "train", "t0")
    assert np.array_equal(image, load_image(path)) and np.array_equal(image, _rgb(0))


# ------------------------------------------------------------------------------------------------
# Image modes: converted exactly as mmseg's reader does, or refused


def _mode_image(kind: str, seed: int = 5):
    """(PIL image to save, file suffix, save kwargs) of one image kind."""
    rgb = _rgb(seed)
    pil = Image.fromarray(rgb)
    alpha = np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)
    if kind == "L":
        return pil.convert("L"), ".png", {}
    if kind == "LA":
        return Image.merge("LA", (pil.convert("L"), Image.fromarray(alpha))), ".png", {}
    if kind == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), ".png", {}
    if kind == "P":
        return pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), ".png", {}
    if kind == "P with transparency":
        return pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), ".png", {"transparency": 3}
    if kind == "1":
        return pil.convert("1"), ".png", {}
    if kind == "I;16":
        grey = np.random.default_rng(seed).integers(0, 65536, (H, W), dtype=np.uint16)
        grey[0, :6] = [0, 255, 256, 383, 511, 65535]  # where rounding v/257 and v >> 8 disagree
        return Image.fromarray(grey), ".png", {}
    if kind == "L jpeg":
        return pil.convert("L"), ".jpg", {"quality": 90}
    if kind == "RGB jpeg 4:2:0":
        return pil, ".jpg", {"quality": 75, "subsampling": 2}
    raise AssertionError(kind)


MODES = ["L", "LA", "RGBA", "P", "P with transparency", "1", "I;16", "L jpeg", "RGB jpeg 4:2:0"]


@pytest.mark.parametrize("kind", MODES)
def test_image_modes_load_identically_in_load_image_and_mmseg(lab, kind):
    image, suffix, kwargs = _mode_image(kind)
    (lab / "images/train/t1.png").unlink()
    path = lab / f"images/train/t1{suffix}"
    _save(image, path, **kwargs)
    report = validate_dataset(lab)
    stored = Image.open(path).mode
    expected = 4 if stored == "RGB" else 1  # the other three images of the set are RGB
    assert report.image_modes.get(stored) == expected, f"{kind}: image_modes {report.image_modes}"
    if stored != "RGB":
        assert any("converted to RGB" in n and stored in n for n in report.notes), report.notes
    ours = load_image(path)
    assert ours.shape == (H, W, 3) and ours.dtype == np.uint8
    theirs, mask = _mmseg_sample(lab, "train", "t1")
    diff = np.abs(ours.astype(int) - theirs.astype(int)).max()
    assert np.array_equal(ours, theirs), f"{kind}: load_image and mmseg's LoadImageFromFile differ by up to {diff}"
    assert np.array_equal(mask, _labels(1))
    if stored in ("L", "LA", "1", "I;16"):
        assert np.array_equal(ours[..., 0], ours[..., 1]) and np.array_equal(ours[..., 1], ours[..., 2])


def test_16_bit_image_keeps_the_high_byte(lab):
    image, _, _ = _mode_image("I;16")
    path = lab / "images/train/t1.png"
    _save(image, path)
    assert load_image(path)[0, :6, 0].tolist() == [0, 0, 1, 1, 1, 255]


def test_16_bit_colour_pngs_read_identically(lab):
    """48- and 64-bit PNGs (written by OpenCV, as Pillow cannot) read alike in both readers."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(6)
    for name, channels in (("t0", 3), ("t1", 4)):
        cv2.imwrite(str(lab / f"images/train/{name}.png"), rng.integers(0, 65536, (H, W, channels), dtype=np.uint16))
    assert validate_dataset(lab).ok
    for name in ("t0", "t1"):
        theirs, _ = _mmseg_sample(lab, "train", name)
        assert np.array_equal(load_image(lab / f"images/train/{name}.png"), theirs), name


def test_cmyk_jpeg_is_refused_everywhere_but_by_mmseg(lab):
    cmyk = Image.fromarray(np.random.default_rng(8).integers(0, 256, (H, W, 4), dtype=np.uint8), "CMYK")
    (lab / "images/train/t1.png").unlink()
    path = lab / "images/train/t1.jpg"
    _save(cmyk, path, quality=100)
    _assert_refused(lab, "t1.jpg", "CMYK")
    with pytest.raises(ValueError, match="t1.jpg.*CMYK"):
        load_image(path)
    # Why: mmseg (OpenCV) reads it, but not to Pillow's RGB.
    theirs, _ = _mmseg_sample(lab, "train", "t1")
    pillow = np.asarray(Image.open(path).convert("RGB"))
    assert theirs.shape == pillow.shape and not np.array_equal(theirs, pillow)


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_refused_since_mmseg_turns_the_image_not_the_mask(lab, fmt, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    suffix = ".jpg" if fmt == "JPEG" else ".png"
    (lab / "images/train/t1.png").unlink()
    path = lab / f"images/train/t1{suffix}"
    _save(_rgb(1), path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    _assert_refused(lab, f"t1{suffix}", f"EXIF orientation {orientation}")
    # load_image turns it as mmseg does, pixel for pixel ...
    theirs, mask = _mmseg_sample(lab, "train", "t1")
    assert np.array_equal(load_image(path), theirs)
    # ... but the mask is read as stored: the pair no longer lines up (silently, for 180 degrees).
    if orientation in (5, 6, 7, 8):
        assert theirs.shape[:2] == (W, H) and mask.shape == (H, W)
    else:
        assert theirs.shape[:2] == mask.shape == (H, W) and not np.array_equal(
            theirs, np.asarray(Image.open(path).convert("RGB"))
        )


def test_exif_orientation_1_is_accepted(lab):
    exif = Image.Exif()
    exif[0x0112] = 1
    _save(_rgb(1), lab / "images/train/t1.png", exif=exif.tobytes())
    assert validate_dataset(lab).ok
    theirs, _ = _mmseg_sample(lab, "train", "t1")
    assert np.array_equal(theirs, _rgb(1))


# ------------------------------------------------------------------------------------------------
# Masks: channels, sizes, label values


def _mask_image(kind: str) -> Image.Image:
    label = _labels(0)
    if kind == "L":
        return Image.fromarray(label)
    if kind == "P":
        img = Image.fromarray(label).convert("P")
        img.putpalette([v for i in range(256) for v in (255 - i, i, (7 * i) % 256)])
        return img
    if kind == "I;16":
        return Image.fromarray(label.astype(np.uint16))
    if kind == "1":
        return Image.fromarray((label == 1))
    if kind == "RGB":
        return Image.fromarray(np.dstack([label] * 3))
    if kind == "RGBA":
        return Image.fromarray(np.dstack([label] * 3 + [np.full_like(label, 255)]), "RGBA")
    if kind == "LA":
        return Image.merge("LA", (Image.fromarray(label), Image.fromarray(np.full_like(label, 255))))
    if kind == "RGB palette colours":  # a colour-coded mask: class colours, not indices
        return Image.fromarray(np.asarray(CLASSES["palette"] + [[0, 0, 0]], np.uint8)[np.minimum(label, 3)])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["L", "P", "I;16", "1"])
def test_single_channel_masks_read_identically(lab, kind):
    _save(_mask_image(kind), lab / "annotations/train/t0.png")
    assert validate_dataset(lab).ok
    ours = load_mask(lab / "annotations/train/t0.png")
    _, theirs = _mmseg_sample(lab, "train", "t0")
    assert ours.dtype == np.uint8 and np.array_equal(ours, theirs), kind
    expected = (_labels(0) == 1).astype(np.uint8) if kind == "1" else _labels(0)
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("kind", ["RGB", "RGBA", "LA", "RGB palette colours"])
def test_multi_channel_masks_are_refused(lab, kind):
    _save(_mask_image(kind), lab / "annotations/train/t0.png")
    _assert_refused(lab, "t0.png", "single-channel")
    with pytest.raises(ValueError, match=r"t0\.png.*single-channel"):
        load_mask(lab / "annotations/train/t0.png")


def test_16_bit_mask_above_255_is_refused_though_mmseg_wraps_it_silently(lab):
    label = _labels(0).astype(np.uint16)
    label[3, 3] = 257  # uint8 wraps it to 1: a valid-looking class
    _save(Image.fromarray(label), lab / "annotations/train/t0.png")
    _assert_refused(lab, "t0.png", "do not fit in uint8")
    _, theirs = _mmseg_sample(lab, "train", "t0")
    assert theirs[3, 3] == 1


@pytest.mark.parametrize("shape", [(H + 1, W), (H, W - 1), (W, H), (1, 1), (2 * H, 2 * W)])
def test_mask_of_the_wrong_size_is_refused_though_mmseg_loads_it(lab, shape):
    _save(np.zeros(shape, np.uint8), lab / "annotations/val/v0.png")
    _assert_refused(lab, "v0.png", f"mask size {shape[1]}x{shape[0]} differs from its image's {W}x{H}")
    if shape == (1, 1):  # LoadAnnotations squeezes it to a scalar: PackSegInputs fails, a note naming the pair
        # (its own AssertionError since only failures of the loading transforms become a DatasetError)
        with pytest.raises(AssertionError, match=r"while preparing .*images/val/v0\.png and .*annotations/val/v0\.png"):
            _mmseg_sample(lab, "val", "v0")
        return
    image, mask = _mmseg_sample(lab, "val", "v0")  # no error: the pair is silently inconsistent
    assert image.shape[:2] == (H, W) and mask.shape == shape


@pytest.mark.parametrize("value,split", [(3, "train"), (7, "val"), (100, "train"), (254, "val")])
def test_label_out_of_range_is_refused_with_its_value(lab, value, split):
    name = "t1" if split == "train" else "v0"
    label = _labels(1 if split == "train" else 2)
    label[4, 5] = value
    _save(label, lab / f"annotations/{split}/{name}.png")
    _assert_refused(lab, f"{name}.png", f"label values {value} out of range for 3 classes")
    _, theirs = _mmseg_sample(lab, split, name)
    assert theirs[4, 5] == value  # mmseg passes it on: the GMM update or the metric would fail later
    from gmmseg_lab.gmm import GMMClassifier

    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        GMMClassifier(3, 2, 4).update(torch.randn(1, 4), torch.tensor([value]))
    with pytest.raises(ValueError, match="target must hold class indices"):
        SegmentationIoU(3).update(torch.tensor([0]), torch.tensor([value]))


@pytest.mark.parametrize("value", [2, 3, 128, 254])
def test_anomaly_mask_values_other_than_0_1_255_are_refused(lab, value):
    mask = load_mask(lab / "anomaly/masks/x0.png")
    mask[5, 5] = value
    _save(mask, lab / "anomaly/masks/x0.png")
    _assert_refused(lab, "x0.png", f"anomaly mask values {value}")


# ------------------------------------------------------------------------------------------------
# Empty splits and missing partners


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split_is_named_by_the_checker_and_by_the_loader(lab, split):
    for folder in (f"images/{split}", f"annotations/{split}"):
        for path in (lab / folder).iterdir():
            path.unlink()
    _assert_refused(lab, f"images/{split}", "empty split")
    with pytest.raises(DatasetError, match=rf"images/{split}: empty split"):
        _dataset(lab, split, loader="train" if split == "train" else "val")


def test_split_with_only_hidden_and_non_image_files(lab):
    folder = lab / "images/val"
    (folder / "v0.png").unlink()
    (lab / "annotations/val/v0.png").unlink()
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "README.txt").write_text("images go here")
    named = _problems_naming(lab, "images/val")
    assert any("README.txt: not an image file" in p for p in named), named
    assert not any(".DS_Store" in p for p in check_dataset(lab).problems), "hidden files are ignored"
    with pytest.raises(DatasetError, match="images/val: empty split"):
        _dataset(lab, "val")


def test_empty_anomaly_split_is_refused(lab):
    for folder in ("anomaly/images", "anomaly/masks"):
        for path in (lab / folder).iterdir():
            path.unlink()
    _assert_refused(lab, "anomaly/images", "empty split")


def test_image_without_mask_is_named_by_checker_and_loader(lab):
    (lab / "annotations/train/t1.png").unlink()
    _assert_refused(lab, "t1.png", "image without its mask")
    with pytest.raises(DatasetError) as info:  # the class-balanced sampler reads every training mask
        _dataset(lab, "train", loader="train")
    assert "annotations/train/t1.png" in str(info.value) and "No such file" in str(info.value)
    dataset = _dataset(lab, "train", loader="val")
    with pytest.raises(DatasetError) as info:
        dataset[1]
    assert "annotations/train/t1.png" in str(info.value) and "No such file" in str(info.value)


def test_mask_without_image_is_named_by_the_checker_and_skipped_by_the_loader(lab):
    (lab / "images/train/t1.png").unlink()
    _assert_refused(lab, "t1.png", "mask without its image")
    assert len(_dataset(lab, "train", loader="train")) == 1  # silently one pair short


def test_anomaly_image_without_mask_and_mask_without_image(lab):
    _save(_rgb(9), lab / "anomaly/images/x1.jpg")
    _save(np.zeros((H, W), np.uint8), lab / "anomaly/masks/x2.png")
    _assert_refused(lab, "x1.jpg", "image without its mask")
    _assert_refused(lab, "x2.png", "mask without its image")


# ------------------------------------------------------------------------------------------------
# Undefined metrics: an anomaly split without anomalies, a class without pixels


def test_anomaly_split_without_anomalous_pixels_gives_a_note_and_undefined_metrics(lab):
    mask = load_mask(lab / "anomaly/masks/x0.png")
    mask[mask == 1] = 0
    _save(mask, lab / "anomaly/masks/x0.png")
    report = validate_dataset(lab)  # a note, not a problem: the closed-set metrics stay defined
    assert report.anomaly_pixels["anomaly"] == 0
    assert any("no anomalous (1) pixel" in n and "AUROC" in n for n in report.notes), report.notes
    metric = AnomalyScores()
    metric.update(torch.rand(H * W), torch.from_numpy(mask).flatten())
    with pytest.warns(MetricUndefinedWarning, match="no anomalous"):
        out = metric.compute()
    assert out["auroc"] is None and out["ap"] is None and out["fpr95"] is None
    assert out["num_pos"] == 0 and out["num_neg"] == int((mask == 0).sum())


def test_anomaly_split_without_inlier_pixels_gives_a_note(lab):
    mask = np.full((H, W), 1, np.uint8)
    mask[0] = 255
    _save(mask, lab / "anomaly/masks/x0.png")
    report = validate_dataset(lab)
    assert any("no inlier (0) pixel" in n and "AUROC and FPR95" in n for n in report.notes), report.notes


def test_class_absent_from_a_split_gives_a_note_naming_it(lab):
    for name in ("t0", "t1"):
        label = load_mask(lab / f"annotations/train/{name}.png")
        label[label == 2] = 0
        _save(label, lab / f"annotations/train/{name}.png")
    report = validate_dataset(lab)
    assert report.class_pixels["train"][2] == 0
    notes = [n for n in report.notes if "split 'train'" in n]
    assert notes and "'c'" in notes[0] and "initial values" in notes[0], report.notes
    assert not any("split 'val'" in n for n in report.notes)


def test_iou_of_a_class_without_target_pixels_is_nan_or_0_with_a_warning():
    metric = SegmentationIoU(4)
    # class 2: never in the target, never predicted; class 3: never in the target, predicted once.
    metric.update(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 0, 1]))
    with pytest.warns(MetricUndefinedWarning, match=r"class\(es\) \[2, 3\] have no target pixel") as record:
        out = metric.compute()
    assert "NaN (left out of miou) for [2]" in str(record[0].message) and "0 for [3]" in str(record[0].message)
    assert math.isnan(out["per_class_iou"][2]) and out["per_class_iou"][3] == 0.0
    assert math.isnan(out["per_class_acc"][2]) and math.isnan(out["per_class_acc"][3])
    assert out["miou"] == pytest.approx((1 / 2 + 1 / 3 + 0.0) / 3)
    full = SegmentationIoU(2)
    full.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class present: no warning
        assert full.compute()["miou"] == 1.0


# ------------------------------------------------------------------------------------------------
# evaluate(): validated first, undefined metrics explained in metrics.json


@pytest.fixture(scope="module")
def untrained_model(quick_dataset, tmp_path_factory):
    """A randomly initialised quick SegFormer-GMM saved as a checkpoint with its config beside it."""
    from gmmseg_lab.models import build_config, load_segmentor

    folder = tmp_path_factory.mktemp("model")
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=folder, seed=0)
    torch.manual_seed(0)
    model, cfg = load_segmentor(cfg, checkpoint=None, device="cpu")
    torch.save({"state_dict": model.state_dict(), "meta": {}}, folder / "model.pth")
    cfg.dump(str(folder / "config.py"))
    return folder / "model.pth"


def _copy_quick(quick_dataset, tmp_path):
    return shutil.copytree(quick_dataset, tmp_path / "data")


def test_evaluate_explains_undefined_anomaly_metrics_and_absent_classes(untrained_model, quick_dataset, tmp_path):
    from gmmseg_lab.data.scenes import CLASSES as QUICK_CLASSES
    from gmmseg_lab.eval.evaluate import evaluate

    data = _copy_quick(quick_dataset, tmp_path)
    for path in (data / "anomaly/masks").iterdir():  # no anomalous pixel left
        mask = load_mask(path)
        mask[mask == 1] = 0
        _save(mask, path)
    absent = QUICK_CLASSES[-1]
    for path in (data / "annotations/val").iterdir():  # the last class becomes "ignore" in val
        mask = load_mask(path)
        mask[mask == len(QUICK_CLASSES) - 1] = 255
        _save(mask, path)
    out = tmp_path / "metrics.json"
    with pytest.warns(MetricUndefinedWarning) as record:
        result = evaluate(untrained_model, data, out, device="cpu", progress=False, batch_size=8)
    messages = " | ".join(str(r.message) for r in record)
    assert "no anomalous (mask 1) pixel" in messages and "have no target pixel" in messages, messages
    for key in ("auroc", "ap", "fpr95"):
        assert result["anomaly"][key] is None, key
    assert result["anomaly"]["num_pos"] == 0 and result["anomaly"]["num_neg"] > 0
    iou = result["per_class_iou"][absent]
    assert math.isnan(iou) or iou == 0.0, f"class {absent} has no val pixel: IoU NaN or 0, got {iou}"
    notes = " | ".join(result["notes"])
    assert "auroc, ap, fpr95 are null" in notes and "no anomalous (1) pixel" in notes, notes
    assert repr(absent) in notes, notes
    written = json.loads(out.read_text())
    assert written["anomaly"]["auroc"] is None and written["notes"] == result["notes"]
    assert written["per_class_iou"][absent] == (None if math.isnan(iou) else 0.0)
    assert 0.0 <= written["miou"] <= 1.0 and all(
        v is None or 0.0 <= v <= 1.0 for v in written["per_class_iou"].values()
    )


@pytest.mark.parametrize("fault", ["label out of range", "truncated png", "empty val split"])
def test_evaluate_refuses_bad_data_naming_the_file_before_any_work(untrained_model, quick_dataset, tmp_path, fault):
    from gmmseg_lab.eval.evaluate import evaluate

    data = _copy_quick(quick_dataset, tmp_path)
    if fault == "label out of range":
        path = data / "annotations/val/val_00003.png"
        mask = load_mask(path)
        mask[0, 0] = 200
        _save(mask, path)
        named = "val_00003.png"
    elif fault == "truncated png":
        path = data / "anomaly/images/anomaly_00002.png"
        path.write_bytes(path.read_bytes()[:-6])
        named = "anomaly_00002.png"
    else:
        shutil.rmtree(data / "images/val")
        (data / "images/val").mkdir()
        shutil.rmtree(data / "annotations/val")
        (data / "annotations/val").mkdir()
        named = "images/val"
    out = tmp_path / "metrics.json"
    with pytest.raises(DatasetError) as info:
        evaluate(untrained_model, data, out, device="cpu", progress=False)
    assert named in str(info.value)
    assert not out.exists()


def test_checker_crc_walk_accepts_every_generated_png(quick_dataset):
    """The chunk walk must not refuse valid PNGs: every file of the embedded set passes it."""
    from gmmseg_lab.data.layout import _png_structure_problem

    paths = sorted(quick_dataset.rglob("*.png"))
    assert len(paths) > 100
    for path in paths:
        assert _png_structure_problem(path) is None, path
        data = path.read_bytes()
        assert zlib.crc32(data[-8:-4]) == int.from_bytes(data[-4:], "big")  # IEND's own CRC
