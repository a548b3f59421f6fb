"""Real data sets in their releases' layouts, on tiny fixtures written in those exact layouts:
detection, checking (one breakage at a time), exact anomaly-mask remapping, the Cityscapes
converter, loading through mmseg with the shipped paper configs, and anomaly evaluation end to end."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gmmseg_lab.cli import main
from gmmseg_lab.data.layout import DatasetError
from gmmseg_lab.data.real import (
    ANOMALY_FORMATS,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CLOSED_SETS,
    check_real_dataset,
    cityscapes_train_ids,
    convert_cityscapes_label_ids,
    detect_format,
    read_anomaly_benchmark,
    remap_anomaly_mask,
)

H, W = 32, 64
SQUARE = (slice(8, 16), slice(20, 36))  # the anomaly in every benchmark fixture: 8 x 16 = 128 pixels
VOID_ROWS = slice(0, 4)  # void in the fixtures of formats that have void


# ---------------------------------------------------------------------------------- writers


def _save(array, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, **kwargs)
    return path


def _rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _three_regions(top, square, rest, h=H, w=W):
    """A label: ``top`` on the top half, ``square`` on the bottom-left quarter, ``rest`` elsewhere."""
    label = np.full((h, w), rest, np.uint8)
    label[: h // 2] = top
    label[h // 2 :, : w // 2] = square
    return label


def write_cityscapes(root, kind="labelTrainIds"):
    """Cityscapes: 2 train frames (aachen), 1 val frame (frankfurt); road / bicycle / unlabelled."""
    frames = {
        "train": [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019")],
        "val": [("frankfurt", "frankfurt_000000_000294")],
    }
    for split, names in frames.items():
        for i, (city, base) in enumerate(names):
            _save(_rgb(i), root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png")
            label_dir = root / "gtFine" / split / city
            if kind == "labelTrainIds":
                _save(_three_regions(0, 18, 255), label_dir / f"{base}_gtFine_labelTrainIds.png")
            else:  # road = id 7, bicycle = id 33, unlabeled = id 0
                _save(_three_regions(7, 33, 0), label_dir / f"{base}_gtFine_labelIds.png")
            (label_dir / f"{base}_gtFine_polygons.json").write_text("{}")
    return root


def write_ade20k(root):
    """ADEChallengeData2016: 2 training, 1 validation; labels 0 (other), 1 and 150."""
    for split, n in (("training", 2), ("validation", 1)):
        prefix = "train" if split == "training" else "val"
        for i in range(n):
            name = f"ADE_{prefix}_{i + 1:08d}"
            _save(_rgb(i), root / "images" / split / f"{name}.jpg", quality=95)
            _save(_three_regions(1, 150, 0), root / "annotations" / split / f"{name}.png")
    return root


def write_coco_stuff10k(root):
    """COCO-Stuff-10K after mmseg's converter: 2 train2014, 1 test2014; labels 0 (unlabeled), 1, 171."""
    for split, n in (("train2014", 2), ("test2014", 1)):
        for i in range(n):
            name = f"COCO_{split}_{i + 77:012d}"
            _save(_rgb(i), root / "images" / split / f"{name}.jpg", quality=95)
            _save(_three_regions(1, 171, 0), root / "annotations" / split / f"{name}_labelTrainIds.png")
    (root / "imageLists").mkdir()
    return root


def _truth(void=True, h=H, w=W):
    """The remapped mask every benchmark fixture must give: 1 on SQUARE, 255 on VOID_ROWS."""
    mask = np.zeros((h, w), np.uint8)
    if void:
        mask[VOID_ROWS] = 255
    mask[SQUARE] = 1
    return mask


def _stored(inlier, anomaly, void, h=H, w=W):
    mask = np.full((h, w), inlier, np.uint8)
    if void is not None:
        mask[VOID_ROWS] = void
    mask[SQUARE] = anomaly
    return mask


def write_smiyc(parent, track="AnomalyTrack"):
    """dataset_<track>: 2 labelled validation frames of different sizes + 1 unlabelled test image."""
    root = parent / f"dataset_{track}"
    ext = ".jpg" if track == "AnomalyTrack" else ".webp"
    _save(_rgb(0), root / "images" / f"validation0000{ext}")
    _save(_rgb(1, 40, 48), root / "images" / f"validation0001{ext}")
    _save(_rgb(2), root / "images" / f"test0000{ext}")
    _save(_stored(0, 1, 255), root / "labels_masks" / "validation0000_labels_semantic.png")
    _save(_stored(0, 1, 255, 40, 48), root / "labels_masks" / "validation0001_labels_semantic.png")
    _save(_rgb(3), root / "labels_masks" / "validation0000_labels_semantic_color.png")
    return root


def write_road_anomaly(parent):
    """RoadAnomaly: frame_list.json, frames/<name>.jpg, frames/<name>.labels/labels_semantic.png
    with 0 background, 1 road (rows 24..), 2 anomaly; no void."""
    root = parent / "RoadAnomaly"
    names = ["animals01_Guiguinto_railway_station_Calves.jpg", "cones01_roadworks.jpg"]
    for i, name in enumerate(names):
        _save(_rgb(i), root / "frames" / name, quality=95)
        label = _stored(0, 2, None)
        label[24:] = 1
        _save(label, root / "frames" / name.replace(".jpg", ".labels") / "labels_semantic.png")
    (root / "frame_list.json").write_text(json.dumps(names))
    return root


LAF_ID = "04_Maurener_Weg_8_000000_000030"
CS_ID = "frankfurt_000000_000294"


def write_fishyscapes_laf(parent):
    """fishyscapes_lostandfound.zip's labels + Lost & Found's leftImg8bit/ put beside them."""
    root = parent / "fishyscapes_lostandfound"
    _save(_stored(0, 1, 255), root / f"0000_{LAF_ID}_labels.png")
    _save(_rgb(0), root / "leftImg8bit" / "test" / "04_Maurener_Weg_8" / f"{LAF_ID}_leftImg8bit.png")
    return root


def write_fishyscapes_static(parent):
    """fs_val_v3.zip's labels and rgb overlays + Cityscapes' leftImg8bit/val beside them."""
    root = parent / "fs_static"
    _save(_stored(0, 1, 255), root / f"0000_{CS_ID}_labels.png")
    overlay = np.zeros((H, W, 3), np.int64)
    overlay[SQUARE] = 300  # the blended object (saturates to 255)
    overlay[20:22] = -40
    np.savez(root / f"0000_{CS_ID}_rgb.npz", rgb=overlay)
    _save(_rgb(0), root / "leftImg8bit" / "val" / "frankfurt" / f"{CS_ID}_leftImg8bit.png")
    return root


def write_fishyscapes_prepared(parent, name="FS_LostFound"):
    """A prepared copy: images/<name>.png + labels_masks/<name>.png (0 / 1 / 255)."""
    root = parent / name
    _save(_rgb(0), root / "images" / "frame0.png")
    _save(_stored(0, 1, 255), root / "labels_masks" / "frame0.png")
    return root


WRITERS = {
    "cityscapes": lambda p: write_cityscapes(p / "cityscapes"),
    "ade20k": lambda p: write_ade20k(p / "ADEChallengeData2016"),
    "coco-stuff-10k": lambda p: write_coco_stuff10k(p / "coco_stuff10k"),
    "fishyscapes-laf": write_fishyscapes_laf,
    "fishyscapes-static": write_fishyscapes_static,
    "road-anomaly": write_road_anomaly,
    "smiyc-anomaly": lambda p: write_smiyc(p, "AnomalyTrack"),
    "smiyc-obstacle": lambda p: write_smiyc(p, "ObstacleTrack"),
}


# ---------------------------------------------------------------------------------- detection and checks


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_detects_each_release_layout(fmt, tmp_path):
    assert detect_format(WRITERS[fmt](tmp_path)) == fmt


def test_detects_lab_and_prepared_fishyscapes_and_explains_the_rest(quick_dataset, tmp_path):
    assert detect_format(quick_dataset) == "lab"
    assert detect_format(write_fishyscapes_prepared(tmp_path, "FS_LostFound")) == "fishyscapes-laf"
    assert detect_format(write_fishyscapes_prepared(tmp_path, "fs_static")) == "fishyscapes-static"
    # Finding 15: prepared Lost & Found and Static frames read alike, so a folder name that says
    # neither is read as fishyscapes-laf with a note (it was an error).
    unnamed = write_fishyscapes_prepared(tmp_path, "frames_and_masks")
    assert detect_format(unnamed) == "fishyscapes-laf"
    report = check_real_dataset(unnamed)
    assert report.ok and any("--format fishyscapes-static" in n for n in report.notes), report.notes
    parent = tmp_path / "ade"
    write_ade20k(parent / "ADEChallengeData2016")
    with pytest.raises(DatasetError, match="ADEChallengeData2016 looks like ade20k"):
        detect_format(parent)
    with pytest.raises(DatasetError, match="missing folder"):
        detect_format(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "fmt, counts, values",
    [
        ("cityscapes", {"train": 2, "val": 1}, [0, 18, 255]),
        ("ade20k", {"training": 2, "validation": 1}, [0, 1, 150]),
        ("coco-stuff-10k", {"train2014": 2, "test2014": 1}, [0, 1, 171]),
    ],
)
def test_closed_set_report_counts_classes_and_values(fmt, counts, values, tmp_path):
    report = check_real_dataset(WRITERS[fmt](tmp_path))
    assert report.ok, report.summary()
    assert report.format == fmt
    assert report.counts == counts
    assert len(report.classes) == CLOSED_SETS[fmt].num_classes
    assert all(report.label_values[split] == values for split in counts)
    # ignored by mmseg: 255, and stored 0 where reduce_zero_label applies (a 16 x 32 quarter per image)
    assert report.ignore_pixels == {split: 512 * n for split, n in counts.items()}
    summary = report.summary()
    assert fmt in summary and "valid" in summary and f"--preset {CLOSED_SETS[fmt].preset}" in summary


@pytest.mark.parametrize("fmt", ANOMALY_FORMATS)
def test_anomaly_masks_are_remapped_exactly(fmt, tmp_path):
    bench = read_anomaly_benchmark(WRITERS[fmt](tmp_path))
    assert bench.fmt == fmt and len(bench) >= 1
    has_void = fmt != "road-anomaly"
    for frame in bench.frames:
        mask = frame.load_mask()
        h, w = mask.shape
        np.testing.assert_array_equal(mask, _truth(void=has_void, h=h, w=w))
        assert frame.load_image().shape == (h, w, 3)
    # Finding 1: iteration gives the decoded image (with its overlay), not a path to the base image.
    image, mask = next(iter(bench))
    np.testing.assert_array_equal(image, bench.frames[0].load_image())
    assert (mask == 1).sum() == 128
    report = check_real_dataset(bench.root)
    assert report.ok, report.summary()
    assert report.anomaly_pixels["anomaly"] == 128 * len(bench)


def test_road_anomaly_keeps_background_and_road_as_inliers():
    raw = np.array([[0, 1, 2]], np.uint8)
    np.testing.assert_array_equal(remap_anomaly_mask(raw, "road-anomaly"), [[0, 0, 1]])
    with pytest.raises(DatasetError, match=r"x\.png: anomaly mask values 255 are not defined for road-anomaly"):
        remap_anomaly_mask(np.array([[0, 255]], np.uint8), "road-anomaly", "x.png")
    # Fishyscapes scores as bdlb does: anything but 0 and 1 is void.
    np.testing.assert_array_equal(
        remap_anomaly_mask(np.array([[0, 1, 2, 255]], np.uint8), "fishyscapes-laf"), [[0, 1, 255, 255]]
    )


def test_fishyscapes_static_image_is_the_cityscapes_image_plus_the_overlay(tmp_path):
    root = write_fishyscapes_static(tmp_path)
    frame = read_anomaly_benchmark(root).frames[0]
    base = _rgb(0).astype(np.int64)
    expected = base.copy()
    expected[SQUARE] = 255
    expected[20:22] = np.clip(base[20:22] - 40, 0, 255)
    np.testing.assert_array_equal(frame.load_image(), expected)
    assert frame.overlay_path.name == f"0000_{CS_ID}_rgb.npz"


def test_smiyc_test_images_without_masks_are_counted_not_errors(tmp_path):
    root = write_smiyc(tmp_path)
    report = check_real_dataset(root)
    assert report.ok and report.counts == {"anomaly": 2} and report.unlabelled == 1
    assert report.label_values["anomaly"] == [0, 1, 255]
    assert "1 image(s) without labels skipped" in report.summary()


# ---------------------------------------------------------------------------------- Cityscapes conversion


def test_cityscapes_train_ids_follow_the_official_mapping():
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    train = cityscapes_train_ids(ids).ravel()
    assert [train[i] for i in (7, 8, 11, 24, 26, 31, 33)] == [0, 1, 2, 11, 13, 16, 18]
    assert all(train[i] == 255 for i in (0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255))
    assert sorted(int(v) for v in set(train.tolist()) - {255}) == list(range(19))
    assert len(CITYSCAPES_LABEL_ID_TO_TRAIN_ID) == 19


def test_cityscapes_with_label_ids_only_is_explained_then_converted(tmp_path, capsys):
    root = write_cityscapes(tmp_path / "cityscapes", kind="labelIds")
    report = check_real_dataset(root)
    assert not report.ok
    assert any(
        "aachen_000000_000019_gtFine_labelIds.png" in p and "--make-train-ids" in p and "csCreateTrainIdLabelImgs" in p
        for p in report.problems
    ), report.problems

    written = convert_cityscapes_label_ids(root)
    assert len(written) == 3
    converted = np.array(Image.open(root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    np.testing.assert_array_equal(converted, _three_regions(0, 18, 255))
    assert not [p for p in root.rglob("*") if p.name.startswith(".")], "a temporary file was left behind"
    assert convert_cityscapes_label_ids(root) == []  # existing train-ID files are kept
    assert len(convert_cityscapes_label_ids(root, overwrite=True)) == 3
    assert check_real_dataset(root).ok

    fresh = write_cityscapes(tmp_path / "fresh", kind="labelIds")
    assert main(["data", "check", str(fresh), "--make-train-ids"]) == 0
    assert "wrote 3 *_gtFine_labelTrainIds.png" in capsys.readouterr().out
    assert main(["data", "check", str(write_ade20k(tmp_path / "ade")), "--make-train-ids"]) == 2
    assert "applies to Cityscapes" in capsys.readouterr().err


def test_unconverted_coco_stuff_release_points_to_mmseg_converter(tmp_path):
    root = tmp_path / "coco_stuff10k"
    _save(_rgb(0), root / "images" / "COCO_train2014_000000000077.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "COCO_train2014_000000000077.mat").write_bytes(b"MATLAB 5.0")
    report = check_real_dataset(root)
    assert report.format == "coco-stuff-10k" and not report.ok
    assert "COCO_train2014_000000000077.mat" in report.problems[0]
    assert "tools/dataset_converters/coco_stuff10k.py" in report.problems[0]


# ---------------------------------------------------------------------------------- broken fixtures


def _cs_image_removed(root):
    victim = root / "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png"
    victim.unlink()
    return "aachen_000001_000019_gtFine_labelTrainIds.png", "label without its image"


def _cs_label_out_of_range(root):
    victim = root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"
    _save(_three_regions(0, 19, 255), victim)
    return victim.name, "label values 19 out of range"


def _ade_size_mismatch(root):
    victim = root / "annotations/validation/ADE_val_00000001.png"
    _save(np.zeros((H, W + 2), np.uint8), victim)
    return victim.name, "differs from its image"


def _smiyc_unreadable_image(root):
    victim = root / "images/validation0000.jpg"
    victim.write_bytes(b"\xff\xd8\xff this is not a jpeg")
    return victim.name, "unreadable"


def _smiyc_undefined_value(root):
    victim = root / "labels_masks/validation0001_labels_semantic.png"
    _save(_stored(0, 7, 255, 40, 48), victim)
    return victim.name, "anomaly mask values 7 are not defined for smiyc-anomaly"


def _smiyc_mask_without_image(root):
    (root / "images/validation0001.jpg").unlink()
    return "validation0001_labels_semantic.png", "mask without its image"


def _road_anomaly_exif_turned_image(root):
    victim = root / "frames/cones01_roadworks.jpg"
    exif = Image.Exif()
    exif[0x0112] = 3  # turned by 180 degrees on loading: same size, so only the tag gives it away
    Image.fromarray(_rgb(1)).save(victim, exif=exif)
    return victim.name, "EXIF orientation 3"


def _road_anomaly_missing_label(root):
    shutil.rmtree(root / "frames/cones01_roadworks.labels")
    return "cones01_roadworks.jpg", "image without its mask"


def _laf_missing_image(root):
    shutil.rmtree(root / "leftImg8bit")
    return f"0000_{LAF_ID}_labels.png", "was not found"


def _static_overlay_wrong_shape(root):
    np.savez(root / f"0000_{CS_ID}_rgb.npz", rgb=np.zeros((H, W - 1, 3), np.int64))
    return f"0000_{CS_ID}_rgb.npz", "overlay shape"


BREAKAGES = {
    "cityscapes: label without image": ("cityscapes", _cs_image_removed),
    "cityscapes: label value out of range": ("cityscapes", _cs_label_out_of_range),
    "ade20k: size mismatch": ("ade20k", _ade_size_mismatch),
    "smiyc: unreadable image": ("smiyc-anomaly", _smiyc_unreadable_image),
    "smiyc: undefined mask value": ("smiyc-anomaly", _smiyc_undefined_value),
    "smiyc: mask without image": ("smiyc-anomaly", _smiyc_mask_without_image),
    "road anomaly: missing label": ("road-anomaly", _road_anomaly_missing_label),
    "road anomaly: EXIF-turned image": ("road-anomaly", _road_anomaly_exif_turned_image),
    "fishyscapes laf: missing base image": ("fishyscapes-laf", _laf_missing_image),
    "fishyscapes static: overlay shape": ("fishyscapes-static", _static_overlay_wrong_shape),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_check_names_the_broken_file_and_exits_1(breakage, tmp_path, capsys):
    fmt, damage = BREAKAGES[breakage]
    root = WRITERS[fmt](tmp_path)
    assert main(["data", "check", str(root)]) == 0
    assert f"{fmt} " in capsys.readouterr().out
    named, what = damage(root)
    report = check_real_dataset(root)
    assert any(named in p and what in p for p in report.problems), report.problems
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert named in out and what in out


def test_check_cli_forced_format_limit_and_unknown_layout(tmp_path, capsys):
    root = write_cityscapes(tmp_path / "cityscapes")
    assert main(["data", "check", str(root), "--format", "cityscapes", "--splits", "val", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "val: 1 pairs (0 decoded)" in out and "train:" not in out
    assert main(["data", "check", str(root), "--format", "ade20k"]) == 1
    assert "images/training: missing folder" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 1
    assert "no known data set layout" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- mmseg, paper configs

PAPER = {"cityscapes": "paper", "ade20k": "paper-ade20k", "coco-stuff-10k": "paper-cocostuff10k"}
# stored label -> what mmseg's pipeline gives (reduce_zero_label for ADE20K and COCO-Stuff-10K)
LOADED_LABELS = {"cityscapes": (0, 18, 255), "ade20k": (0, 149, 255), "coco-stuff-10k": (0, 170, 255)}


def _fast_loaders(cfg_options=None):
    options = {
        f"{split}_dataloader.{key}": value
        for split in ("train", "val")
        for key, value in (("num_workers", 0), ("persistent_workers", False), ("batch_size", 1))
    }
    options.update(
        {
            "train_dataloader.dataset.pipeline.2.scale": (128, 64),  # RandomResize
            "train_dataloader.dataset.pipeline.3.crop_size": (32, 32),
        }
    )  # RandomCrop
    return options


@pytest.mark.parametrize("fmt", list(PAPER))
def test_closed_sets_load_through_mmseg_with_the_paper_configs(fmt, tmp_path):
    from gmmseg_lab.models import build_config, build_dataloader

    root = WRITERS[fmt](tmp_path)
    assert CLOSED_SETS[fmt].preset == PAPER[fmt]
    cfg = build_config("segformer", "gmm", PAPER[fmt], data_root=root, cfg_options=_fast_loaders())
    assert cfg.model.decode_head.head.num_classes == len(check_real_dataset(root).classes)

    batch = next(iter(build_dataloader(cfg, "val")))
    image, sample = batch["inputs"][0], batch["data_samples"][0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert image.shape[1] * W == image.shape[2] * H and image.shape[1] >= 512  # resized, aspect kept
    top, square, rest = LOADED_LABELS[fmt]
    # labels are loaded at the original size (the test pipeline resizes before loading them)
    np.testing.assert_array_equal(sample.gt_sem_seg.data[0].numpy(), _three_regions(top, square, rest))

    batch = next(iter(build_dataloader(cfg, "train")))
    image, label = batch["inputs"][0], batch["data_samples"][0].gt_sem_seg.data
    assert image.shape == (3, 32, 32) and label.shape == (1, 32, 32)
    assert set(label.unique().tolist()) <= set(LOADED_LABELS[fmt])


# ---------------------------------------------------------------------------------- anomaly evaluation


@pytest.fixture(scope="module")
def random_quick_model(quick_dataset, tmp_path_factory, single_thread_torch):
    """An untrained quick GMM SegFormer saved as ``random.pth`` with ``config.py`` beside it."""
    from gmmseg_lab.models import build_config, load_segmentor

    folder = tmp_path_factory.mktemp("random_model")
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=folder)
    model, cfg = load_segmentor(cfg, checkpoint=None, device="cpu")
    cfg.dump(str(folder / "config.py"))
    torch.save({"state_dict": model.state_dict()}, folder / "random.pth")
    return folder / "random.pth"


def _assert_unit_metrics(anomaly):
    for key in ("auroc", "ap", "fpr95"):
        assert 0.0 <= anomaly[key] <= 1.0


@pytest.mark.parametrize(
    "fmt, slide", [("smiyc-anomaly", None), ("road-anomaly", None), ("fishyscapes-static", (32, 16))]
)
def test_evaluate_anomaly_scores_every_labelled_pixel(fmt, slide, random_quick_model, tmp_path):
    from gmmseg_lab.eval.evaluate import evaluate_anomaly

    bench = read_anomaly_benchmark(WRITERS[fmt](tmp_path))
    truths = [frame.load_mask() for frame in bench.frames]
    out = tmp_path / "anomaly.json"
    result = evaluate_anomaly(
        random_quick_model, bench.root, out, batch_size=4, slide=slide, device="cpu", progress=False
    )
    assert result["anomaly_format"] == fmt and result["anomaly_frames"] == len(bench)
    assert result["anomaly"]["score"] == "neg_max_log_likelihood"
    for metrics in result["anomaly_by_score"].values():
        assert metrics["num_pos"] == sum(int((t == 1).sum()) for t in truths)
        assert metrics["num_neg"] == sum(int((t == 0).sum()) for t in truths)
        _assert_unit_metrics(metrics)
    assert json.loads(out.read_text())["anomaly"] == result["anomaly"]


def test_benchmark_path_equals_the_mmseg_dataset_path_and_plugs_into_evaluate(
    random_quick_model, quick_dataset, tmp_path
):
    from gmmseg_lab.eval.evaluate import evaluate, evaluate_anomaly

    lab = evaluate(random_quick_model, quick_dataset, device="cpu", progress=False)
    same = evaluate_anomaly(random_quick_model, quick_dataset, fmt="lab", device="cpu", progress=False)
    for name, metrics in lab["anomaly_by_score"].items():
        for key, value in metrics.items():
            assert same["anomaly_by_score"][name][key] == pytest.approx(value, abs=1e-6), (name, key)

    smiyc = write_smiyc(tmp_path)
    alone = evaluate_anomaly(random_quick_model, smiyc, device="cpu", progress=False)
    both = evaluate(random_quick_model, quick_dataset, device="cpu", progress=False, anomaly_data=smiyc)
    assert both["anomaly_format"] == "smiyc-anomaly" and both["anomaly_data"] == str(smiyc)
    assert both["miou"] == lab["miou"]
    assert both["anomaly"] == pytest.approx(alone["anomaly"])


def test_evaluate_anomaly_refuses_a_broken_benchmark_before_any_work(random_quick_model, tmp_path):
    from gmmseg_lab.eval.evaluate import evaluate_anomaly

    root = write_smiyc(tmp_path)
    named, _ = _smiyc_undefined_value(root)
    out = tmp_path / "anomaly.json"
    with pytest.raises(DatasetError, match=named):
        evaluate_anomaly(tmp_path / "no-such-model.pth", root, out, progress=False)
    assert not out.exists()
    with pytest.raises(DatasetError, match="not an anomaly benchmark"):
        evaluate_anomaly(random_quick_model, write_ade20k(tmp_path / "ade"), progress=False)


def test_benchmark_without_anomalous_pixels_gives_null_metrics_with_a_note(random_quick_model, tmp_path):
    from gmmseg_lab.eval.evaluate import evaluate_anomaly
    from gmmseg_lab.eval.metrics import MetricUndefinedWarning

    root = write_fishyscapes_laf(tmp_path)
    _save(np.zeros((H, W), np.uint8), root / f"0000_{LAF_ID}_labels.png")
    report = check_real_dataset(root)
    assert report.ok and any("no anomalous (1) pixel" in n for n in report.notes)
    with pytest.warns(MetricUndefinedWarning):
        result = evaluate_anomaly(random_quick_model, root, device="cpu", progress=False)
    assert result["anomaly"]["auroc"] is None and result["anomaly"]["num_neg"] == H * W
    assert any("no anomalous (1) pixel" in n and "auroc, ap, fpr95 are null" in n for n in result["notes"])


# ---------------------------------------------------------------------------------- review fixes


def test_iterating_fishyscapes_static_gives_the_image_with_its_anomaly(tmp_path):
    """The file at frame.image_path is the plain Cityscapes image: iteration must not hand it out."""
    bench = read_anomaly_benchmark(write_fishyscapes_static(tmp_path))
    ((image, mask),) = list(bench)
    assert isinstance(image, np.ndarray) and image.shape == (H, W, 3)
    assert (image[SQUARE] == 255).all() and (mask[SQUARE] == 1).all()  # the blended object is there
    base = np.asarray(Image.open(bench.frames[0].image_path).convert("RGB"))
    assert not np.array_equal(image, base)


def test_prepared_fishyscapes_sets_read_identically_so_an_unnamed_folder_is_not_an_error(tmp_path):
    root = write_fishyscapes_prepared(tmp_path, "frames_and_masks")
    laf, static = read_anomaly_benchmark(root, "fishyscapes-laf"), read_anomaly_benchmark(root, "fishyscapes-static")
    for (laf_image, laf_mask), (static_image, static_mask) in zip(laf, static, strict=True):
        np.testing.assert_array_equal(laf_image, static_image)
        np.testing.assert_array_equal(laf_mask, static_mask)
    guessed = read_anomaly_benchmark(root)
    assert guessed.fmt == "fishyscapes-laf" and any("fishyscapes-static" in n for n in guessed.notes)
    assert main(["data", "check", str(root)]) == 0


def test_cityscapes_conversion_names_every_unreadable_file_before_writing_any(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes", kind="labelIds")
    broken = [
        root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png",
        root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png",
    ]
    broken[0].write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    _save(_rgb(0), broken[1])  # not single-channel
    with pytest.raises(DatasetError) as info:
        convert_cityscapes_label_ids(root)
    assert all(path.name in str(info.value) for path in broken), str(info.value)
    assert not list(root.rglob("*_labelTrainIds.png")), "nothing may be written when a file is unreadable"
    assert not [p for p in root.rglob("*") if p.name.startswith(".")], "a temporary file was left behind"


def test_cityscapes_conversion_writes_files_with_normal_permissions(tmp_path):
    import os

    root = write_cityscapes(tmp_path / "cityscapes", kind="labelIds")
    umask = os.umask(0o022)
    try:
        written = convert_cityscapes_label_ids(root)
    finally:
        os.umask(umask)
    assert written and all(path.stat().st_mode & 0o777 == 0o644 for path in written)


def test_closed_set_cmyk_image_is_a_problem_not_a_converted_note(tmp_path):
    root = write_ade20k(tmp_path / "ADEChallengeData2016")
    victim = root / "images/training/ADE_train_00000001.jpg"
    Image.fromarray(_rgb(0)).convert("CMYK").save(victim, quality=95)
    report = check_real_dataset(root)
    assert any(victim.name in p and "CMYK" in p for p in report.problems), report.problems
    assert not any("CMYK" in n for n in report.notes), report.notes


def test_lab_and_benchmark_checkers_word_the_same_fault_alike(tmp_path):
    """One helper per check: an EXIF-turned image gets the same problem in both checkers."""
    from gmmseg_lab.data.layout import check_dataset

    exif = Image.Exif()
    exif[0x0112] = 6
    bench = write_road_anomaly(tmp_path)
    bench_image = bench / "frames/cones01_roadworks.jpg"
    Image.fromarray(_rgb(1)).save(bench_image, exif=exif, quality=95)
    lab = tmp_path / "lab"
    (lab / "anomaly/images").mkdir(parents=True)
    (lab / "classes.json").write_text(json.dumps({"classes": ["a"], "palette": [[0, 0, 0]]}))
    shutil.copy(bench_image, lab / "anomaly/images/cones01_roadworks.jpg")
    _save(np.zeros((H, W), np.uint8), lab / "anomaly/masks/cones01_roadworks.png")

    def _fault(problems, name):
        found = [p.split(": ", 1)[1] for p in problems if name in p.split(": ", 1)[0]]
        assert len(found) == 1, problems
        return found[0].replace("labels_semantic.png", "MASK").replace("cones01_roadworks.png", "MASK")

    from_bench = _fault(check_real_dataset(bench).problems, "cones01_roadworks.jpg")
    from_lab = _fault(check_dataset(lab, splits=()).problems, "cones01_roadworks.jpg")
    assert from_bench == from_lab and from_bench.startswith("EXIF orientation 6")


def test_lab_folder_with_only_an_anomaly_split_is_a_benchmark(random_quick_model, quick_dataset, tmp_path):
    from gmmseg_lab.eval.evaluate import evaluate_anomaly

    root = tmp_path / "lab_anomaly_only"
    root.mkdir()
    shutil.copy(quick_dataset / "classes.json", root / "classes.json")
    shutil.copytree(quick_dataset / "anomaly", root / "anomaly")
    report = check_real_dataset(root, splits=("anomaly",))
    assert report.ok and report.counts == {"anomaly": len(list((root / "anomaly/images").iterdir()))}, report.summary()
    result = evaluate_anomaly(random_quick_model, root, device="cpu", progress=False)
    assert result["anomaly_format"] == "lab" and result["anomaly_frames"] == report.counts["anomaly"]
    shutil.rmtree(root / "anomaly")
    with pytest.raises(DatasetError, match="anomaly: missing folder"):
        evaluate_anomaly(random_quick_model, root, device="cpu", progress=False)


def test_evaluate_with_a_benchmark_ignores_the_lab_anomaly_split(random_quick_model, quick_dataset, tmp_path):
    from gmmseg_lab.eval.evaluate import evaluate

    data = shutil.copytree(quick_dataset, tmp_path / "data")
    victim = sorted((data / "anomaly/masks").iterdir())[0]
    _save(np.full((4, 4), 7, np.uint8), victim)  # broken, but not used: the benchmark replaces it
    result = evaluate(random_quick_model, data, device="cpu", progress=False, anomaly_data=write_smiyc(tmp_path))
    assert result["anomaly_format"] == "smiyc-anomaly" and result["anomaly_frames"] == 2
    with pytest.raises(DatasetError, match=victim.name):
        evaluate(random_quick_model, data, device="cpu", progress=False)
