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
    return [render_scene(scene_rng(0, "anomaly", i), size, anomaly=True, index=i) for i in range(count)]


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
    """Procedural anomaly pixels are far from every inlier mode's mean colour; their palette too.
    (Photographic objects have real colours, by design: see test_pasted_photos_keep_photo_colours.)"""
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in quick_train_scenes]).astype(np.float64)
    labels = np.concatenate([s.label.ravel() for s in quick_train_scenes])
    modes = np.concatenate([s.mode.ravel() for s in quick_train_scenes])
    keys = [tuple(k) for k in np.unique(np.stack([labels, modes], axis=1), axis=0).tolist()]
    mode_means = np.array([pixels[(labels == c) & (modes == m)].mean(axis=0) for c, m in keys])
    spread = max(np.sqrt(pixels[(labels == c) & (modes == m)].var(axis=0).mean()) for c, m in keys)
    procedural = [s for s in quick_anomaly_scenes if (s.anomaly_source == scenes.PROCEDURAL_SOURCE_ID).any()]
    assert len(procedural) >= 5
    for scene in procedural:
        x = scene.image[scene.anomaly_source == scenes.PROCEDURAL_SOURCE_ID].astype(np.float64)
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


# --------------------------------------------------------------------------------------------
# Photographic anomaly objects and the anomaly split's sources.
# --------------------------------------------------------------------------------------------

EXPECTED_SOURCES = [
    {"id": 1, "name": "procedural", "kind": "procedural"},
    {"id": 2, "name": "cat", "kind": "photo", "file": "chelsea.png"},
    {"id": 3, "name": "coffee cup", "kind": "photo", "file": "coffee.png"},
    {"id": 4, "name": "astronaut", "kind": "photo", "file": "astronaut.png"},
    {"id": 5, "name": "motorcycle", "kind": "photo", "file": "motorcycle_left.png"},
    {"id": 6, "name": "rocket", "kind": "photo", "file": "rocket.jpg"},
]
PHOTO_NAMES = [s["name"] for s in EXPECTED_SOURCES if s["kind"] == "photo"]


@pytest.fixture(scope="module")
def cpu_anomaly_set(tmp_path_factory):
    """The cpu preset's anomaly split, seed 0 (scenes do not depend on the preset's other sizes)."""
    preset = dict(PRESETS["cpu"], num_train=0, num_val=0)
    return make_dataset(tmp_path_factory.mktemp("cpu-anomaly") / "set", preset, seed=0, progress=False)


def _read_split(root):
    sources = json.loads((root / "anomaly/sources.json").read_text())
    stems = sorted(p.name for p in (root / "anomaly/images").glob("*.png"))
    masks = {n: np.asarray(Image.open(root / "anomaly/masks" / n)) for n in stems}
    source_masks = {n: np.asarray(Image.open(root / "anomaly/source_masks" / n)) for n in stems}
    images = {n: np.asarray(Image.open(root / "anomaly/images" / n)) for n in stems}
    return sources, images, masks, source_masks


def _outline_mask(obj, size):
    """The outline rasterised on the full photo, by the test itself."""
    from PIL import ImageDraw

    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([(x * w, y * h) for x, y in obj.outline], fill=255)
    return np.asarray(mask) > 0


def test_sources_constant_is_the_published_format():
    assert [dict(s) for s in scenes.ANOMALY_SOURCES] == EXPECTED_SOURCES
    assert [p.name for p in scenes.PHOTO_OBJECTS] == PHOTO_NAMES
    for obj in scenes.PHOTO_OBJECTS:
        assert scenes.photo_path(obj.file).is_file()  # bundled with scikit-image, never downloaded


@pytest.mark.parametrize("preset_name", ["quick", "cpu"])
def test_every_photo_appears_several_times(preset_name, quick_dataset, cpu_anomaly_set):
    root = quick_dataset if preset_name == "quick" else cpu_anomaly_set
    sources, _, _, source_masks = _read_split(root)
    assert sources["sources"] == EXPECTED_SOURCES
    assert len(sources["images"]) == PRESETS[preset_name]["num_anomaly"]
    counts = {name: sum(name in listed for listed in sources["images"].values()) for name in PHOTO_NAMES}
    assert min(counts.values()) >= (2 if preset_name == "quick" else 6), counts
    with_photo = sum(any(n in PHOTO_NAMES for n in listed) for listed in sources["images"].values())
    with_procedural = sum("procedural" in listed for listed in sources["images"].values())
    assert with_photo >= 0.6 * len(source_masks) and with_procedural >= 0.4 * len(source_masks)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["anomaly_sources"] == EXPECTED_SOURCES


@pytest.mark.parametrize("preset_name", ["quick", "cpu"])
def test_source_masks_agree_with_masks_and_sources_json(preset_name, quick_dataset, cpu_anomaly_set):
    root = quick_dataset if preset_name == "quick" else cpu_anomaly_set
    sources, _, masks, source_masks = _read_split(root)
    names = {s["id"]: s["name"] for s in sources["sources"]}
    assert sorted(sources["images"]) == sorted(masks)
    for name, mask in masks.items():
        src = source_masks[name]
        assert src.dtype == np.uint8 and src.shape == mask.shape, name
        assert np.array_equal(src > 0, mask == 1), name  # a source exactly on the anomaly pixels
        listed = sources["images"][name]
        assert len(listed) == len(set(listed)), name
        assert set(listed) == {names[int(v)] for v in np.unique(src) if v}, name
        assert set(np.unique(src).tolist()) <= {0, *names}, name


def test_render_scene_returns_the_source_map():
    scene = render_scene(scene_rng(0, "anomaly", 9), 64, anomaly=True, index=9)
    assert scene.anomaly_source.shape == (64, 64) and scene.anomaly_source.dtype == np.uint8
    assert np.array_equal(scene.anomaly_source > 0, scene.anomaly_mask == 1)
    assert len(scene.anomaly_sources) >= 1
    ids = {s["name"]: s["id"] for s in scenes.ANOMALY_SOURCES}
    assert {ids[n] for n in scene.anomaly_sources} == set(np.unique(scene.anomaly_source).tolist()) - {0}
    inlier = render_scene(scene_rng(0, "train", 0), 64)
    assert inlier.anomaly_source is None and inlier.anomaly_sources is None
    # Without an index the photos are drawn at random, still deterministically.
    a = render_scene(np.random.default_rng(11), 64, anomaly=True)
    b = render_scene(np.random.default_rng(11), 64, anomaly=True)
    assert a.anomaly_sources == b.anomaly_sources and np.array_equal(a.anomaly_source, b.anomaly_source)


def test_sources_are_byte_identical_for_a_seed(tmp_path):
    preset = {"size": 48, "num_train": 1, "num_val": 1, "num_anomaly": 6}
    first = _files(make_dataset(tmp_path / "a", preset, seed=3, progress=False))
    second = _files(make_dataset(tmp_path / "b", preset, seed=3, progress=False))
    assert first == second
    assert "anomaly/sources.json" in first and "anomaly/source_masks/anomaly_00005.png" in first
    listed = json.loads(first["anomaly/sources.json"])["images"]
    assert {n for names in listed.values() for n in names} >= set(PHOTO_NAMES)  # 6 scenes: all 5 photos


def test_photo_outlines_fit_their_objects():
    """The outlines lie in the photo, cover a sensible part of it, and hold what the object looks
    like (and its photo's background does not)."""
    checks = {  # name: (area fraction range, aspect w/h range of the cut-out)
        "cat": ((0.5, 0.9), (1.1, 1.6)),
        "coffee cup": ((0.3, 0.7), (0.9, 1.3)),
        "astronaut": ((0.35, 0.8), (0.8, 1.2)),
        "motorcycle": ((0.2, 0.5), (1.3, 1.9)),
        "rocket": ((0.01, 0.05), (0.04, 0.15)),
    }
    for obj in scenes.PHOTO_OBJECTS:
        outline = np.array(obj.outline)
        assert len(outline) >= 8 and outline.min() >= 0.0 and outline.max() <= 1.0, obj.name
        x, y = outline[:, 0], outline[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        (lo, hi), (alo, ahi) = checks[obj.name]
        assert lo < area < hi, (obj.name, area)
        with Image.open(scenes.photo_path(obj.file)) as img:
            photo = np.asarray(img.convert("RGB")).astype(np.float64)
        inside = _outline_mask(obj, (photo.shape[1], photo.shape[0]))
        assert abs(inside.mean() - area) < 0.02, obj.name
        rgb, cut_inside = scenes.photo_cutout(obj.name)
        assert alo < rgb.shape[1] / rgb.shape[0] < ahi, obj.name
        assert abs(cut_inside.sum() - inside.sum()) < 0.03 * inside.sum(), obj.name
        r, g, b = photo[..., 0], photo[..., 1], photo[..., 2]
        if obj.name == "cat":  # tabby fur: warm browns nearly everywhere
            assert ((r > g) & (g > b))[inside].mean() > 0.9
        elif obj.name == "coffee cup":  # red-brown cup and saucer, a white rim, on brown wood
            red = (r > 110) & (g < 70) & (b < 70)
            assert red[inside].mean() > 0.25 and red[inside].mean() > 2 * red[~inside].mean()
            assert ((r > 200) & (g > 200) & (b > 200))[inside].mean() > 0.05
        elif obj.name == "astronaut":  # the orange suit is in, the flag and the grey backdrop out
            orange = (r > 170) & (g > 50) & (g < 150) & (b < 100)
            assert orange[inside].mean() > 0.2 and orange[~inside].mean() < 0.05
        elif obj.name == "motorcycle":  # red paint in, the garage out
            red = (r > 120) & (g < 70) & (b < 70)
            assert red[inside].mean() > 3 * red[~inside].mean()
        else:  # a white rocket against the dusk sky
            lum = photo.mean(axis=-1)
            assert lum[inside].mean() > 1.4 * lum[~inside].mean()


def test_pasted_photos_keep_photo_colours(cpu_anomaly_set):
    """Pasted photo pixels carry the photo's colours (within the scene's lighting), not the
    procedural palette; procedural pixels do use it."""
    _, images, _, source_masks = _read_split(cpu_anomaly_set)
    ids = {s["name"]: s["id"] for s in EXPECTED_SOURCES}
    palette = np.array(ANOMALY_COLOURS, np.float64)

    def pixels(source_id):
        return np.concatenate([images[n][source_masks[n] == source_id] for n in images]).astype(np.float64)

    def near_palette(x):
        return (np.linalg.norm(x[:, None] - palette[None], axis=-1).min(axis=1) < 60).mean()

    assert near_palette(pixels(ids["procedural"])) > 0.9
    for name in PHOTO_NAMES:
        x = pixels(ids[name])
        assert len(x) > 300, name
        assert near_palette(x) < 0.02, name
        rgb, inside = scenes.photo_cutout(name)
        reference = rgb[inside].astype(np.float64).mean(axis=0)
        assert np.abs(x.mean(axis=0) - reference).max() < 30, (name, x.mean(axis=0), reference)


def test_several_workers_write_the_same_bytes(tmp_path):
    from gmmseg_lab.data.scenes import make_dataset

    one = make_dataset(tmp_path / "one", preset="quick", seed=3, progress=False, workers=1)
    two = make_dataset(tmp_path / "two", preset="quick", seed=3, progress=False, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
