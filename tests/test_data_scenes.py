"""The procedural street-scene generator: determinism, multimodality, anomalies, atomic writing."""

import json

import numpy as np
import pytest
from PIL import Image

from gmmseg_lab.data import scenes
from gmmseg_lab.data.scenes import (
    ANOMALY_COLOURS,
    CLASSES,
    MODE_COLOURS,
    MODES,
    PALETTE,
    PRESETS,
    make_dataset,
    render_scene,
    scene_rng,
)

TINY = {"size": 40, "num_train": 3, "num_val": 2, "num_anomaly": 2}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def quick_train_scenes():
    """The quick preset's training scenes with their mode maps (the same as on disk)."""
    size = PRESETS["quick"]["size"]
    return [render_scene(scene_rng(0, "train", i), size) for i in range(PRESETS["quick"]["num_train"])]


@pytest.fixture(scope="module")
def quick_anomaly_scenes():
    size = PRESETS["quick"]["size"]
    count = PRESETS["quick"]["num_anomaly"]
    return [render_scene(scene_rng(0, "anomaly", i), size, anomaly=True) for i in range(count)]


def test_constants_are_consistent():
    assert 6 <= len(CLASSES) <= 10
    assert len(PALETTE) == len(CLASSES)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in PALETTE)
    assert list(MODES) == list(CLASSES) == list(MODE_COLOURS)
    for name in CLASSES:
        assert len(MODES[name]) >= 2, name
        assert len(MODE_COLOURS[name]) == len(MODES[name]), name
    for name, preset in PRESETS.items():
        assert {"size", "num_train", "num_val", "num_anomaly"} <= set(preset), name
    assert PRESETS["quick"]["size"] == 64 and PRESETS["cpu"]["size"] == 128


@pytest.mark.parametrize("anomaly", [False, True])
def test_render_scene_shapes_and_maps(anomaly):
    scene = render_scene(np.random.default_rng(3), 64, anomaly=anomaly)
    assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
    assert scene.label.shape == scene.mode.shape == (64, 64)
    assert scene.label.dtype == scene.mode.dtype == np.uint8
    # A mode exactly where there is a class, and a valid index into that class's modes.
    assert np.array_equal(scene.label == 255, scene.mode == 255)
    for c, name in enumerate(CLASSES):
        assert np.all(scene.mode[scene.label == c] < len(MODES[name]))
    if anomaly:
        assert scene.anomaly_mask.shape == (64, 64) and scene.anomaly_mask.dtype == np.uint8
        assert np.array_equal(scene.anomaly_mask == 1, scene.label == 255)
    else:
        assert scene.anomaly_mask is None
        assert np.all(scene.label < len(CLASSES))


def test_render_is_deterministic_and_seed_dependent():
    a = render_scene(scene_rng(7, "train", 2), 64, anomaly=True)
    b = render_scene(scene_rng(7, "train", 2), 64, anomaly=True)
    for field in ("image", "label", "mode", "anomaly_mask"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    c = render_scene(scene_rng(8, "train", 2), 64, anomaly=True)
    d = render_scene(scene_rng(7, "train", 3), 64, anomaly=True)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, d.image)


def test_scene_rng_rejects_bad_seeds():
    for seed in (-1, 1.5, "0"):
        with pytest.raises(ValueError):
            scene_rng(seed, "train", 0)


def test_make_dataset_is_byte_identical_for_a_seed(tmp_path):
    first = _files(make_dataset(tmp_path / "a", TINY, seed=5, progress=False))
    second = _files(make_dataset(tmp_path / "b", TINY, seed=5, progress=False))
    assert first == second
    other = _files(make_dataset(tmp_path / "c", TINY, seed=6, progress=False))
    assert other.keys() == first.keys()
    assert other["images/train/train_00000.png"] != first["images/train/train_00000.png"]


def test_layout_and_meta_of_generated_set(quick_dataset):
    root = quick_dataset
    preset = PRESETS["quick"]
    assert len(list((root / "images/train").glob("*.png"))) == preset["num_train"]
    assert len(list((root / "annotations/val").glob("*.png"))) == preset["num_val"]
    assert len(list((root / "anomaly/masks").glob("*.png"))) == preset["num_anomaly"]
    classes = json.loads((root / "classes.json").read_text())
    assert classes == {"classes": list(CLASSES), "palette": PALETTE}
    meta = json.loads((root / "meta.json").read_text())
    assert meta["generator"] == scenes.GENERATOR_NAME and meta["version"] == scenes.GENERATOR_VERSION
    assert meta["preset"] == "quick" and meta["seed"] == 0 and meta["size"] == 64
    # The files are the rendered scenes: mode maps from render_scene describe them.
    scene = render_scene(scene_rng(0, "val", 3), 64)
    assert np.array_equal(np.asarray(Image.open(root / "images/val/val_00003.png")), scene.image)
    assert np.array_equal(np.asarray(Image.open(root / "annotations/val/val_00003.png")), scene.label)
    with Image.open(root / "images/train/train_00000.png") as img:
        assert img.mode == "RGB" and img.size == (64, 64)


def test_every_class_appears(quick_train_scenes):
    labels = np.stack([s.label for s in quick_train_scenes])
    present = set(np.unique(labels).tolist())
    assert present == set(range(len(CLASSES)))


def test_every_class_is_multimodal(quick_train_scenes):
    """At least two modes per class, with mean colours far apart relative to the modes' spread."""
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in quick_train_scenes]).astype(np.float64)
    labels = np.concatenate([s.label.ravel() for s in quick_train_scenes])
    modes = np.concatenate([s.mode.ravel() for s in quick_train_scenes])
    for c, name in enumerate(CLASSES):
        stats = []
        for m in range(len(MODES[name])):
            x = pixels[(labels == c) & (modes == m)]
            if len(x) >= 20:
                # Spread as the RMS per-channel standard deviation.
                stats.append((MODES[name][m], x.mean(axis=0), np.sqrt(x.var(axis=0).mean())))
        assert len(stats) >= 2, f"{name}: only {[s[0] for s in stats]} present"
        for i in range(len(stats)):
            for j in range(i + 1, len(stats)):
                (na, mu_a, sd_a), (nb, mu_b, sd_b) = stats[i], stats[j]
                distance = np.linalg.norm(mu_a - mu_b)
                message = f"{name}: {na} vs {nb}: distance {distance:.0f}, sd {sd_a:.0f} / {sd_b:.0f}"
                assert distance > 4.0 * max(sd_a, sd_b), message


def test_single_gaussian_is_worse_than_the_modes(quick_train_scenes):
    """Within each class, pooling the modes inflates the colour spread well beyond any mode's."""
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in quick_train_scenes]).astype(np.float64)
    labels = np.concatenate([s.label.ravel() for s in quick_train_scenes])
    modes = np.concatenate([s.mode.ravel() for s in quick_train_scenes])
    for c, name in enumerate(CLASSES):
        in_class = labels == c
        pooled = np.sqrt(pixels[in_class].var(axis=0).mean())
        within = max(np.sqrt(pixels[in_class & (modes == m)].var(axis=0).mean()) for m in np.unique(modes[in_class]))
        assert pooled > 2.0 * within, name


def test_anomaly_masks_on_disk(quick_dataset):
    masks = sorted((quick_dataset / "anomaly/masks").glob("*.png"))
    assert len(masks) == PRESETS["quick"]["num_anomaly"]
    for path in masks:
        mask = np.asarray(Image.open(path))
        assert mask.dtype == np.uint8 and mask.shape == (64, 64)
        assert set(np.unique(mask).tolist()) == {0, 1, 255}, path.name
        assert (mask == 1).sum() >= 6, path.name


def test_void_band_surrounds_anomalies(quick_anomaly_scenes):
    for scene in quick_anomaly_scenes:
        mask = scene.anomaly_mask
        anomaly = mask == 1
        # Every void pixel touches an anomaly pixel (a 1 px band at 64 px).
        padded = np.pad(anomaly, 1)
        near = np.zeros_like(anomaly)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= padded[1 + dy : 65 + dy, 1 + dx : 65 + dx]
        assert np.all(near[mask == 255])


def test_anomaly_colours_are_unseen(quick_train_scenes, quick_anomaly_scenes):
    """Anomaly pixels are far from every inlier mode's mean colour; their palette too."""
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in quick_train_scenes]).astype(np.float64)
    labels = np.concatenate([s.label.ravel() for s in quick_train_scenes])
    modes = np.concatenate([s.mode.ravel() for s in quick_train_scenes])
    keys = [tuple(k) for k in np.unique(np.stack([labels, modes], axis=1), axis=0).tolist()]
    mode_means = np.array([pixels[(labels == c) & (modes == m)].mean(axis=0) for c, m in keys])
    spread = max(np.sqrt(pixels[(labels == c) & (modes == m)].var(axis=0).mean()) for c, m in keys)
    for scene in quick_anomaly_scenes:
        x = scene.image[scene.anomaly_mask == 1].astype(np.float64)
        nearest = np.linalg.norm(x[:, None, :] - mode_means[None], axis=-1).min(axis=1)
        assert np.mean(nearest > 2.0 * spread) > 0.99
    base = np.array([c for cols in MODE_COLOURS.values() for c in cols], np.float64)
    for colour in ANOMALY_COLOURS:
        assert np.linalg.norm(base - np.array(colour), axis=1).min() > 60, colour


def test_anomalies_lie_mostly_on_the_road():
    """Objects rest on the ground: just below an anomaly's columns is mostly road."""
    below_road = below_total = 0
    for i in range(12):
        scene = render_scene(scene_rng(1, "anomaly", i), 64, anomaly=True)
        anomaly = scene.anomaly_mask == 1
        for x in np.flatnonzero(anomaly.any(axis=0)):
            y = np.flatnonzero(anomaly[:, x]).max() + 2  # just under the object, past the void band
            if y < 64 and scene.label[y, x] != 255:
                below_total += 1
                below_road += scene.label[y, x] == CLASSES.index("road")
    assert below_total > 0 and below_road / below_total > 0.7


def test_make_dataset_refuses_non_empty_directory(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="taken"):
        make_dataset(out, TINY, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    make_dataset(out, TINY, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "classes.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary leftovers


def test_make_dataset_accepts_an_empty_directory(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert make_dataset(out, TINY, progress=False) == out.absolute()
    assert (out / "meta.json").is_file()


def test_make_dataset_is_atomic(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = scenes.render_scene

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash mid-generation")
        return real(*args, **kwargs)

    monkeypatch.setattr(scenes, "render_scene", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        make_dataset(tmp_path / "set", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []

    # An existing set survives a failed overwrite untouched.
    monkeypatch.setattr(scenes, "render_scene", real)
    out = make_dataset(tmp_path / "set", TINY, progress=False)
    before = _files(out)
    calls["n"] = 0
    monkeypatch.setattr(scenes, "render_scene", failing)
    with pytest.raises(RuntimeError):
        make_dataset(out, TINY, seed=9, progress=False, overwrite=True)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_make_dataset_rejects_bad_presets(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        make_dataset(tmp_path / "x", "huge", progress=False)
    with pytest.raises(ValueError, match="num_val"):
        make_dataset(tmp_path / "x", {"size": 32, "num_train": 1, "num_anomaly": 0}, progress=False)
    assert not (tmp_path / "x").exists()
