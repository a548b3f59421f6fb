"""The on-disk layout: reader, checker (one breakage at a time) and the mmseg data set."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gmmseg_lab.data.layout import (
    DatasetError,
    check_dataset,
    list_anomaly_pairs,
    list_pairs,
    load_image,
    load_mask,
    read_classes,
    validate_dataset,
)
from gmmseg_lab.data.scenes import CLASSES, PALETTE, PRESETS

H, W = 6, 8


def _save(array, path, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(array, np.uint8))
    if mode is not None:
        img = img.convert(mode)
    img.save(path)


def _image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _label(seed, num_classes=3):
    label = np.random.default_rng(seed).integers(0, num_classes, (H, W), dtype=np.uint8)
    label[0, 0] = 255
    return label


@pytest.fixture
def good(tmp_path):
    """A tiny valid data set: 3 classes, 2 train pairs (png + jpg), 1 val pair, 1 anomaly pair."""
    root = tmp_path / "set"
    root.mkdir()
    classes = {"classes": ["a", "b", "c"], "palette": [[255, 0, 0], [0, 255, 0], [0, 0, 255]]}
    (root / "classes.json").write_text(json.dumps(classes))
    _save(_image(0), root / "images/train/t0.png")
    _save(_label(0), root / "annotations/train/t0.png")
    _save(_image(1), root / "images/train/t1.jpg")
    _save(_label(1), root / "annotations/train/t1.png")
    _save(_image(2), root / "images/val/v0.png")
    _save(_label(2), root / "annotations/val/v0.png")
    _save(_image(3), root / "anomaly/images/x0.png")
    anomaly = np.zeros((H, W), np.uint8)
    anomaly[2:4, 2:5] = 1
    anomaly[1, 2:5] = 255
    _save(anomaly, root / "anomaly/masks/x0.png")
    return root


def test_good_dataset_passes(good):
    report = validate_dataset(good)
    assert report.ok and report.problems == []
    assert report.classes == ("a", "b", "c")
    assert report.counts == {"train": 2, "val": 1, "anomaly": 1}
    expected = np.bincount(np.concatenate([_label(0).ravel(), _label(1).ravel()]), minlength=256)
    assert report.class_pixels["train"] == expected[:3].tolist()
    assert report.ignore_pixels == {"train": 2, "val": 1}
    assert report.anomaly_pixels == {"inlier": H * W - 6 - 3, "anomaly": 6, "void": 3}
    assert "valid" in report.summary()


def test_generated_quick_set_passes(quick_dataset):
    report = validate_dataset(quick_dataset)
    preset = PRESETS["quick"]
    assert report.counts == {"train": preset["num_train"], "val": preset["num_val"], "anomaly": preset["num_anomaly"]}
    assert report.classes == CLASSES
    assert all(n > 0 for n in report.class_pixels["train"])
    assert report.anomaly_pixels["anomaly"] > 0
    assert read_classes(quick_dataset) == (CLASSES, PALETTE)


def _remove_folder(root):
    shutil.rmtree(root / "annotations/val")
    return "annotations/val"


def _image_without_mask(root):
    (root / "annotations/train/t1.png").unlink()
    return "t1.jpg"


def _mask_without_image(root):
    _save(_label(5), root / "annotations/train/orphan.png")
    return "orphan.png"


def _size_mismatch(root):
    _save(np.zeros((H + 1, W), np.uint8), root / "annotations/train/t0.png")
    return "t0.png"


def _label_out_of_range(root):
    label = _label(0)
    label[2, 2] = 7
    _save(label, root / "annotations/val/v0.png")
    return "v0.png"


def _corrupt_image(root):
    (root / "images/train/t0.png").write_bytes(b"definitely not a png")
    return "t0.png"


def _truncated_image(root):
    path = root / "images/val/v0.png"
    _save(np.random.default_rng(9).integers(0, 256, (64, 64, 3)), path)
    path.write_bytes(path.read_bytes()[:200])
    return "v0.png"


def _malformed_classes(root):
    (root / "classes.json").write_text('{"classes": ["a", "b", "c"], "palette": [')
    return "classes.json"


def _empty_split(root):
    for folder in ("images/val", "annotations/val"):
        for path in (root / folder).iterdir():
            path.unlink()
    return "images/val"


def _bad_anomaly_values(root):
    mask = np.zeros((H, W), np.uint8)
    mask[3, 3] = 2
    _save(mask, root / "anomaly/masks/x0.png")
    return "x0.png"


def _rgb_mask(root):
    _save(np.zeros((H, W, 3), np.uint8), root / "annotations/train/t0.png")
    return "t0.png"


def _jpeg_mask(root):
    (root / "annotations/train/t0.png").unlink()
    _save(np.zeros((H, W), np.uint8), root / "annotations/train/t0.jpg")
    return "t0.jpg"


BREAKAGES = [
    _remove_folder,
    _image_without_mask,
    _mask_without_image,
    _size_mismatch,
    _label_out_of_range,
    _corrupt_image,
    _truncated_image,
    _malformed_classes,
    _empty_split,
    _bad_anomaly_values,
    _rgb_mask,
    _jpeg_mask,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__.strip("_"))
def test_each_breakage_is_reported_with_its_file(good, breakage):
    offending = breakage(good)
    report = check_dataset(good)
    assert not report.ok
    assert any(offending in p for p in report.problems), report.problems
    with pytest.raises(DatasetError) as info:
        validate_dataset(good)
    assert offending in str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.problems == report.problems


def test_all_problems_are_listed_at_once(good):
    _image_without_mask(good)
    _label_out_of_range(good)
    _bad_anomaly_values(good)
    with pytest.raises(DatasetError) as info:
        validate_dataset(good)
    message = str(info.value)
    assert all(name in message for name in ("t1.jpg", "v0.png", "x0.png"))
    assert len(info.value.problems) == 3


def test_missing_dataset_directory(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        validate_dataset(tmp_path / "nowhere")


def test_anomaly_split_is_optional(good):
    shutil.rmtree(good / "anomaly")
    report = validate_dataset(good)
    assert report.anomaly_pixels is None and "anomaly" not in report.counts
    assert list_anomaly_pairs(good) == []
    shutil.copytree(good / "images/val", good / "anomaly/images")
    assert validate_dataset(good, check_anomaly=False).ok  # masks folder missing, but not checked
    assert not check_dataset(good).ok


@pytest.mark.parametrize(
    "content, expected",
    [
        ("not json", "malformed JSON"),
        ('["a", "b"]', "top level"),
        ('{"palette": [[0, 0, 0]]}', "missing key 'classes'"),
        ('{"classes": ["a"]}', "missing key 'palette'"),
        ('{"classes": ["a", "b"], "palette": [[0, 0, 0]]}', "1 colours for 2 classes"),
        ('{"classes": ["a"], "palette": [[0, 0, 300]]}', "palette[0]"),
        ('{"classes": ["a"], "palette": [[0, 0]]}', "palette[0]"),
        ('{"classes": ["a"], "palette": ["red"]}', "palette[0]"),
        ('{"classes": ["a"], "palette": [[0.5, 0, 0]]}', "palette[0]"),
        ('{"classes": [], "palette": []}', "non-empty"),
        ('{"classes": ["a", "a"], "palette": [[0, 0, 0], [1, 1, 1]]}', "unique"),
    ],
)
def test_read_classes_rejects_malformed_files(tmp_path, content, expected):
    (tmp_path / "classes.json").write_text(content)
    with pytest.raises(DatasetError) as info:
        read_classes(tmp_path)
    assert expected in str(info.value) and "classes.json" in str(info.value)


def test_read_classes_accepts_a_file_path(good):
    assert read_classes(good / "classes.json") == (("a", "b", "c"), [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    with pytest.raises(DatasetError, match="missing"):
        read_classes(good / "images")


def test_list_pairs_and_loaders(good):
    pairs = list_pairs(good, "train")
    assert [(i.name, m.name) for i, m in pairs] == [("t0.png", "t0.png"), ("t1.jpg", "t1.png")]
    image = load_image(pairs[0][0])
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert np.array_equal(image, _image(0))
    assert np.array_equal(load_mask(pairs[0][1]), _label(0))
    assert [p[0].name for p in list_anomaly_pairs(good)] == ["x0.png"]
    _mask_without_image(good)
    with pytest.raises(DatasetError, match="orphan.png"):
        list_pairs(good, "train")
    assert len(list_pairs(good, "train", strict=False)) == 2


def test_grey_rgba_and_palette_images_are_converted_not_errors(good):
    _save(_image(0), good / "images/train/t0.png", mode="L")
    _save(_image(1), good / "images/val/v0.png", mode="RGBA")
    report = validate_dataset(good)
    assert report.image_modes == {"L": 1, "RGB": 2, "RGBA": 1}
    assert any("converted to RGB" in n for n in report.notes)
    grey = load_image(good / "images/train/t0.png")
    assert grey.shape == (H, W, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    rgba = load_image(good / "images/val/v0.png")
    assert np.array_equal(rgba, _image(1))


def test_palette_masks_keep_their_indices(good):
    mask = Image.fromarray(_label(0)).convert("P")  # "P" from "L" keeps values as indices
    mask.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    mask.save(good / "annotations/train/t0.png")
    assert np.array_equal(load_mask(good / "annotations/train/t0.png"), _label(0))
    assert validate_dataset(good).ok


def test_rgb_mask_is_rejected_by_load_mask(good):
    _rgb_mask(good)
    with pytest.raises(ValueError, match="single-channel"):
        load_mask(good / "annotations/train/t0.png")


# --------------------------------------------------------------------------------------------
# mmseg integration
# --------------------------------------------------------------------------------------------

PIPELINE = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]


def _build(root, split="train", **extra):
    pytest.importorskip("mmseg")
    from mmseg.registry import DATASETS

    import gmmseg_lab.data.mmseg_dataset  # noqa: F401  (registers GMMLabDataset)

    cfg = dict(
        type="GMMLabDataset",
        data_root=str(root),
        data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
        **{"pipeline": PIPELINE, **extra},
    )
    return DATASETS.build(cfg)


def test_mmseg_dataset_on_generated_set(quick_dataset):
    dataset = _build(quick_dataset)
    assert len(dataset) == PRESETS["quick"]["num_train"]
    assert tuple(dataset.metainfo["classes"]) == CLASSES
    assert [list(c) for c in dataset.metainfo["palette"]] == PALETTE
    assert dataset.reduce_zero_label is False and dataset.ignore_index == 255
    sample = dataset[0]
    assert tuple(sample["inputs"].shape) == (3, 64, 64)
    gt = sample["data_samples"].gt_sem_seg.data
    assert tuple(gt.shape) == (1, 64, 64)
    on_disk = np.asarray(Image.open(quick_dataset / "annotations/train/train_00000.png"))
    assert np.array_equal(gt[0].numpy(), on_disk)
    # LoadImageFromFile reads BGR, like every mmseg data set.
    image = np.asarray(Image.open(quick_dataset / "images/train/train_00000.png"))
    assert np.array_equal(sample["inputs"].permute(1, 2, 0).numpy(), image[..., ::-1])


def test_mmseg_dataset_class_subset_and_mixed_suffixes(good):
    dataset = _build(good, metainfo=dict(classes=("c", "a")))
    assert dataset.label_map == {0: 1, 1: 255, 2: 0}
    assert dataset.metainfo["palette"] == [[0, 0, 255], [255, 0, 0]]
    assert len(dataset) == 2  # t0.png and t1.jpg both found
    gt = dataset[0]["data_samples"].gt_sem_seg.data[0].numpy()
    expected = np.select([_label(0) == 0, _label(0) == 2], [1, 0], 255)
    assert np.array_equal(gt, expected)


def test_mmseg_dataset_reports_broken_classes_file(good):
    (good / "classes.json").write_text("{")
    with pytest.raises(DatasetError, match="classes.json"):
        _build(good)


# --------------------------------------------------------------------------------------------
# One listing for the checker and the mmseg data set; loading errors vs other errors
# --------------------------------------------------------------------------------------------


def test_checker_and_mmseg_dataset_list_the_same_images(good):
    """An upper-case extension is checked and trained on; a sub-folder is refused, not trained on."""
    _save(_image(5), good / "images/train/t2.JPG")
    _save(_label(5), good / "annotations/train/t2.png")
    report = check_dataset(good)
    assert report.ok and report.counts["train"] == 3, report.problems
    dataset = _build(good)
    checked = [str(image) for image, _ in list_pairs(good, "train")]
    assert [dataset.get_data_info(i)["img_path"] for i in range(len(dataset))] == checked
    assert checked[-1].endswith("t2.JPG")
    assert np.array_equal(dataset[2]["data_samples"].gt_sem_seg.data[0].numpy(), _label(5))

    _save(_image(6), good / "images/train/city/s0.png")
    _save(_label(6), good / "annotations/train/city/s0.png")
    problems = check_dataset(good).problems
    assert any("images/train/city: a folder inside train/" in p for p in problems), problems
    assert any("annotations/train/city: a folder inside train/" in p for p in problems), problems
    dataset = _build(good)
    assert len(dataset) == 3 and not any("s0.png" in dataset.get_data_info(i)["img_path"] for i in range(3))


def test_mmseg_dataset_keeps_the_type_of_errors_outside_loading(good):
    """A failure in a loading transform is a DatasetError naming the files; a failure elsewhere (a bug
    in a transform, not bad data) keeps its type and traceback, with a note naming the files."""
    pytest.importorskip("mmseg")
    from mmseg.registry import TRANSFORMS

    @TRANSFORMS.register_module(name="_GMMLabTestBrokenTransform", force=True)
    class _Broken:
        def __call__(self, results):
            raise TypeError("a bug in a transform")

    dataset = _build(good, pipeline=[PIPELINE[0], PIPELINE[1], dict(type="_GMMLabTestBrokenTransform"), PIPELINE[2]])
    with pytest.raises(TypeError, match="a bug in a transform") as info:
        dataset[0]
    assert not isinstance(info.value, DatasetError)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "images/train/t0.png" in notes and "annotations/train/t0.png" in notes and "in _Broken" in notes

    (good / "annotations/train/t0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"images/train/t0\.png and .*annotations/train/t0\.png: failed to load"):
        _build(good)[0]


def test_one_note_for_undefined_anomaly_metrics(good):
    from gmmseg_lab.data.layout import undefined_anomaly_note

    assert undefined_anomaly_note(3, 4, "x") is None
    no_anomaly = undefined_anomaly_note(0, 4, "the anomaly split")
    assert "no anomalous (1) pixel" in no_anomaly and "auroc, ap, fpr95 are null" in no_anomaly
    no_inlier = undefined_anomaly_note(4, 0, "x")
    assert (
        "no inlier (0) pixel" in no_inlier and "AUROC and FPR95" in no_inlier and "auroc, fpr95 are null" in no_inlier
    )
    _save(np.zeros((H, W), np.uint8), good / "anomaly/masks/x0.png")
    assert no_anomaly in check_dataset(good).notes


# --------------------------------------------------------------------------------------------
# The anomaly split's sources: anomaly/sources.json and anomaly/source_masks/.
# --------------------------------------------------------------------------------------------

SOURCES = [
    {"id": 1, "name": "procedural", "kind": "procedural"},
    {"id": 2, "name": "cat", "kind": "photo", "file": "chelsea.png"},
]


@pytest.fixture
def with_sources(good):
    """``good`` with a valid sources.json and source mask for its one anomaly image."""
    mask = load_mask(good / "anomaly/masks/x0.png")
    source = np.where(mask == 1, 1, 0).astype(np.uint8)
    source[3, 2:5] *= 2  # the lower row of the anomaly is the cat
    _save(source, good / "anomaly/source_masks/x0.png")
    (good / "anomaly/sources.json").write_text(
        json.dumps({"sources": SOURCES, "images": {"x0.png": ["procedural", "cat"]}})
    )
    return good


def test_sources_are_accepted_and_read(with_sources):
    from gmmseg_lab.data.layout import read_anomaly_sources

    report = validate_dataset(with_sources)
    assert report.ok and report.anomaly_source_pixels == {"procedural": 3, "cat": 3}
    sources, images = read_anomaly_sources(with_sources)
    assert sources == SOURCES and images == {"x0.png": ["procedural", "cat"]}
    assert read_anomaly_sources(with_sources / "anomaly/sources.json") == (sources, images)
    assert [p[0].name for p in list_anomaly_pairs(with_sources)] == ["x0.png"]


def test_sources_are_optional(good):
    from gmmseg_lab.data.layout import read_anomaly_sources

    assert read_anomaly_sources(good) is None
    assert validate_dataset(good).anomaly_source_pixels is None


def test_generated_set_has_valid_sources(quick_dataset):
    from gmmseg_lab.data.layout import read_anomaly_sources

    report = validate_dataset(quick_dataset)
    names = ["procedural", "cat", "coffee cup", "astronaut", "motorcycle", "rocket"]
    assert sorted(report.anomaly_source_pixels) == sorted(names)
    assert all(n > 0 for n in report.anomaly_source_pixels.values())
    assert sum(report.anomaly_source_pixels.values()) == report.anomaly_pixels["anomaly"]
    sources, images = read_anomaly_sources(quick_dataset)
    assert [s["name"] for s in sources] == names and [s["id"] for s in sources] == [1, 2, 3, 4, 5, 6]
    assert len(images) == PRESETS["quick"]["num_anomaly"]


def _wrong_size_source_mask(root):
    _save(np.zeros((H + 2, W), np.uint8), root / "anomaly/source_masks/x0.png")
    return "source_masks/x0.png"


def _malformed_sources_json(root):
    (root / "anomaly/sources.json").write_text('{"sources": [')
    return "sources.json"


def _sources_json_not_an_object(root):
    (root / "anomaly/sources.json").write_text("[1, 2]")
    return "sources.json"


def _duplicate_source_id(root):
    sources = SOURCES + [{"id": 2, "name": "dog", "kind": "photo"}]
    (root / "anomaly/sources.json").write_text(json.dumps({"sources": sources, "images": {"x0.png": ["cat"]}}))
    return "sources.json"


def _unknown_name_in_images(root):
    (root / "anomaly/sources.json").write_text(json.dumps({"sources": SOURCES, "images": {"x0.png": ["dog"]}}))
    return "sources.json"


def _image_missing_from_sources_json(root):
    (root / "anomaly/sources.json").write_text(json.dumps({"sources": SOURCES, "images": {}}))
    return "sources.json"


def _source_id_not_listed(root):
    source = load_mask(root / "anomaly/source_masks/x0.png")
    source[source == 2] = 9
    _save(source, root / "anomaly/source_masks/x0.png")
    return "source_masks/x0.png"


def _source_off_the_anomaly(root):
    source = load_mask(root / "anomaly/source_masks/x0.png")
    source[0, 0] = 1
    _save(source, root / "anomaly/source_masks/x0.png")
    return "x0.png (1 px)"


def _sources_json_lists_other_sources(root):
    (root / "anomaly/sources.json").write_text(json.dumps({"sources": SOURCES, "images": {"x0.png": ["cat"]}}))
    return "x0.png"


def _stray_entry_in_sources_json(root):
    images = {"x0.png": ["procedural", "cat"], "gone.png": ["cat"]}
    (root / "anomaly/sources.json").write_text(json.dumps({"sources": SOURCES, "images": images}))
    return "gone.png"


def _missing_source_mask(root):
    (root / "anomaly/source_masks/x0.png").unlink()
    return "x0.png"


def _source_mask_without_image(root):
    _save(np.zeros((H, W), np.uint8), root / "anomaly/source_masks/x9.png")
    return "x9.png"


def _corrupt_source_mask(root):
    (root / "anomaly/source_masks/x0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return "source_masks/x0.png"


def _source_masks_without_sources_json(root):
    (root / "anomaly/sources.json").unlink()
    return "source_masks"


SOURCE_BREAKAGES = [  # unreadable or uninterpretable: problems
    _wrong_size_source_mask,
    _malformed_sources_json,
    _sources_json_not_an_object,
    _duplicate_source_id,
    _unknown_name_in_images,
    _source_id_not_listed,
    _corrupt_source_mask,
    _source_masks_without_sources_json,
]
SOURCE_DISAGREEMENTS = [  # readable files that disagree: notes, the set stays usable
    _image_missing_from_sources_json,
    _source_off_the_anomaly,
    _sources_json_lists_other_sources,
    _stray_entry_in_sources_json,
    _missing_source_mask,
    _source_mask_without_image,
]


@pytest.mark.parametrize("breakage", SOURCE_BREAKAGES, ids=lambda f: f.__name__.strip("_"))
def test_each_source_breakage_is_reported_with_its_file(with_sources, breakage):
    offending = breakage(with_sources)
    report = check_dataset(with_sources)
    assert not report.ok
    assert any(offending in p for p in report.problems), report.problems
    with pytest.raises(DatasetError) as info:
        validate_dataset(with_sources)
    assert offending in str(info.value)
    # The anomaly split's pairs themselves stay usable.
    assert [p[0].name for p in list_anomaly_pairs(with_sources)] == ["x0.png"]


@pytest.mark.parametrize("breakage", SOURCE_DISAGREEMENTS, ids=lambda f: f.__name__.strip("_"))
def test_each_source_disagreement_is_a_note_naming_its_file(with_sources, breakage):
    offending = breakage(with_sources)
    report = validate_dataset(with_sources)
    assert any(offending in n and ("per-source figures" in n or "ignored" in n) for n in report.notes), report.notes


def test_edited_anomaly_masks_keep_the_generated_set_usable(quick_dataset, tmp_path):
    """Emptying the anomaly masks (as the robustness tests do) leaves the source masks behind: a note."""
    data = shutil.copytree(quick_dataset, tmp_path / "data")
    for path in (data / "anomaly/masks").iterdir():
        mask = load_mask(path)
        mask[mask == 1] = 0
        _save(mask, path)
    report = validate_dataset(data, splits=("val",))
    assert any("are not > 0 exactly where their anomaly mask is 1" in n for n in report.notes), report.notes


def test_read_anomaly_sources_names_a_bad_file(with_sources):
    from gmmseg_lab.data.layout import read_anomaly_sources

    _malformed_sources_json(with_sources)
    with pytest.raises(DatasetError, match=r"anomaly/sources\.json: malformed JSON"):
        read_anomaly_sources(with_sources)
    _unknown_name_in_images(with_sources)
    with pytest.raises(DatasetError, match=r"sources\.json: .*unknown source"):
        read_anomaly_sources(with_sources)


def test_source_checks_only_when_anomaly_is_checked(with_sources):
    _wrong_size_source_mask(with_sources)
    assert validate_dataset(with_sources, check_anomaly=False).ok
