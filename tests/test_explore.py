"""Your own images, no labels (gmmseg_lab.experiments.explore, `gmmseg-lab explore`): a lab-trained quick model,
its softmax twin and a converted synthetic release model on scikit-image's photographs (larger than the
quick models' 64 px crop, so inference slides)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gmmseg_lab.cli import main
from gmmseg_lab.experiments.explore import (
    NO_LABELS_NOTE,
    ImageScorer,
    common_size,
    fit_embedding_map,
    fit_image,
    list_images,
    place_on_map,
    predict_images,
    reference_predictions,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")
MAX_SIDE = 192  # the photos scaled down: CPU time; still 3x the quick models' 64 px crop


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    source = Path(skimage.data.__file__).parent
    for name in PHOTOS:
        shutil.copy(source / name, folder / name)
    (folder / "notes.txt").write_text("not a photo")  # a folder may hold other files
    return folder


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory, quick_dataset) -> dict[str, Path]:
    """A quick segformer GMMSeg model and its softmax twin, 2 iterations each."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for head in ("gmm", "softmax"):
        work = root / head
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(quick_dataset),
                    "--arch",
                    "segformer",
                    "--preset",
                    "quick",
                    "--head",
                    head,
                    "--max-iters",
                    "2",
                    "--no-progress",
                    "--work-dir",
                    str(work),
                ]
            )
            == 0
        )
        runs[head] = work
    return runs


@pytest.fixture(scope="module")
def release_work(tmp_path_factory) -> Path:
    """A synthetic checkpoint in the authors' release layout, converted by `gmmseg-lab import-release`."""
    from test_release_import import make_mit, release_meta, release_state, save_release

    root = tmp_path_factory.mktemp("release")
    path = save_release(root / "release.pth", release_state(make_mit()), release_meta(config=False))
    work = root / "work"
    assert main(["import-release", str(path), "--out", str(work)]) == 0
    return work


@pytest.fixture(scope="module")
def lab_gmm(lab_runs) -> ImageScorer:
    return ImageScorer.load(lab_runs["gmm"], device="cpu")


@pytest.fixture(scope="module")
def gmm_preds(lab_gmm, photos):
    return predict_images(lab_gmm, photos, max_side=MAX_SIDE)


# ---------------------------------------------------------------------- images
def test_list_images_reads_folders_files_arrays_and_names_what_is_wrong(photos, tmp_path):
    named = list_images(photos)
    assert [n for n, _ in named] == sorted(PHOTOS)  # notes.txt is not an image
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for _, a in named)
    assert [n for n, _ in list_images(photos, max_images=2)] == sorted(PHOTOS)[:2]
    assert [n for n, _ in list_images([photos / "rocket.jpg"])] == ["rocket.jpg"]
    grey, rgba = np.zeros((5, 6), np.uint8), np.full((5, 6, 4), 7, np.uint8)
    got = list_images({"g": grey, "a": rgba})
    assert [n for n, _ in got] == ["g", "a"] and got[0][1].shape == (5, 6, 3) and (got[1][1] == 7).all()
    assert [n for n, _ in list_images([grey])] == ["image_0"]

    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"no png")
    for images, error, text in (
        (tmp_path / "none", FileNotFoundError, "none"),
        (tmp_path / "empty", ValueError, "no image files"),
        ([tmp_path / "broken.png"], ValueError, "broken.png"),
        ([np.zeros((4, 4, 3), np.float32)], ValueError, "uint8"),
        ([np.zeros((4, 4, 2), np.uint8)], ValueError, "shape"),
        ([], ValueError, "empty"),
    ):
        with pytest.raises(error, match=text):
            list_images(images)


def test_images_are_brought_to_one_size_without_stretching():
    assert common_size((400, 600), 300) == (200, 300)
    assert common_size((100, 60), 300) == (100, 60)  # never enlarged
    tall = np.zeros((60, 20, 3), np.uint8)
    tall[:, :10] = 255  # left half white
    fitted = fit_image(tall, (30, 30))  # cover: 90 x 30, centre rows kept
    assert fitted.shape == (30, 30, 3)
    assert fitted[:, :14].min() == 255 and fitted[:, 16:].max() == 0  # the halves stay halves: no squeeze


# ---------------------------------------------------------------------- predictions
def test_a_lab_gmm_model_predicts_photos_with_sliding_windows(lab_gmm, gmm_preds, quick_dataset):
    preds = gmm_preds
    assert lab_gmm.slide == ((64, 64), (42, 42))  # the training crop, 2/3 stride: the photos are larger
    assert lab_gmm.classes_source == str(quick_dataset / "classes.json")
    assert preds.labeled is False and preds.head == "gmm" and preds.names == sorted(PHOTOS)
    n, height, width = preds.gt.shape
    assert (n, max(height, width)) == (3, MAX_SIDE) and (preds.gt == 255).all()
    assert preds.images.shape == (3, height, width, 3) and preds.pred.shape == (3, height, width)
    np.testing.assert_allclose(preds.probs.sum(1), 1.0, atol=1e-5)
    # GMMSeg's score is -max_c log p(x|c); the evaluator's other scores come along
    np.testing.assert_allclose(preds.anomaly_score, -preds.class_log_likelihood.max(1), rtol=1e-6)
    assert set(preds.score_maps) == {
        "max_softmax",
        "entropy",
        "max_logit",
        "energy",
        "neg_max_log_likelihood",
        "neg_logsumexp_log_likelihood",
    }
    np.testing.assert_allclose(preds.score_maps["max_softmax"], 1 - preds.probs.max(1), atol=1e-6)
    # embeddings stitched from the windows on the stride-4 grid, unit length
    assert preds.embeddings.shape[2:] == (-(-height // 4), -(-width // 4))
    np.testing.assert_allclose(np.linalg.norm(preds.embeddings, axis=1), 1.0, atol=1e-4)
    assert (preds.gt_small == 255).all() and preds.means.shape[:2] == (len(preds.classes), preds.num_components)


def test_slide_runs_one_window_per_crop_and_equals_whole_inference_on_a_small_image(lab_gmm, photos):
    calls = []
    hook = lab_gmm.model.backbone.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    try:
        predict_images(lab_gmm, [photos / "chelsea.png"], max_side=MAX_SIDE)
        small = {"small": list_images([photos / "coffee.png"])[0][1][:64, :64]}
        slid = predict_images(lab_gmm, small)
        n_large = len(calls) - 1
    finally:
        hook.remove()
    height, width = common_size((300, 451), MAX_SIDE)
    rows, cols = (height - 64 + 41) // 42 + 1, (width - 64 + 41) // 42 + 1
    assert n_large == rows * cols and all(tuple(s[2:]) == (64, 64) for s in calls)
    whole = ImageScorer.load(lab_gmm.source, device="cpu", slide=False)
    assert whole.slide is None
    plain = predict_images(whole, small)
    np.testing.assert_allclose(plain.class_log_likelihood, slid.class_log_likelihood, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(plain.pred, slid.pred)


def test_the_softmax_twin_gives_its_fused_features_and_softmax_scores(lab_runs, photos):
    preds = predict_images(lab_runs["softmax"], photos, max_images=2, max_side=MAX_SIDE, device="cpu")
    assert preds.head == "softmax" and not preds.labeled and len(preds.names) == 2
    assert preds.embeddings is None and preds.class_log_likelihood is None
    assert preds.features.ndim == 4 and preds.features.shape[2:] == (
        -(-preds.gt.shape[1] // 4),
        -(-preds.gt.shape[2] // 4),
    )
    assert set(preds.score_maps) == {"max_softmax", "entropy", "max_logit", "energy"}
    np.testing.assert_allclose(preds.anomaly_score, 1 - preds.probs.max(1), atol=1e-6)
    # an mmseg model given as config + checkpoint file (here the twin's own two files, taken apart)
    weights = Path((lab_runs["softmax"] / "last_checkpoint").read_text().strip())
    config = shutil.copy(lab_runs["softmax"] / "config.py", weights.parent.parent / "softmax_config.py")
    apart = predict_images(weights, photos, max_images=2, max_side=MAX_SIDE, config=config, device="cpu")
    np.testing.assert_allclose(apart.score_maps["energy"], preds.score_maps["energy"], rtol=1e-5, atol=1e-5)


def test_a_converted_release_model_predicts_photos(release_work, photos):
    scorer = ImageScorer.load(release_work, device="cpu")
    assert scorer.head == "gmm" and scorer.classes_source == str(release_work / "classes.json")
    assert scorer.classes == [f"stuff_{i}" for i in range(6)]
    preds = predict_images(scorer, photos, max_images=2, max_side=MAX_SIDE)
    assert preds.embeddings is not None and preds.embeddings.shape[1] == 16  # D of the synthetic release
    assert preds.pred.max() < 6 and np.isfinite(preds.anomaly_score).all()
    np.testing.assert_allclose(preds.anomaly_score, -preds.class_log_likelihood.max(1), rtol=1e-6)


def test_bad_model_inputs_are_named(tmp_path, photos):
    from mmengine.config import Config

    from gmmseg_lab.experiments.explore import _test_cfg

    with pytest.raises(FileNotFoundError, match="none"):
        predict_images(tmp_path / "none", photos)
    cfg = Config(dict(model=dict(test_cfg=dict(mode="whole"))))
    with pytest.raises(ValueError, match="slide"):
        _test_cfg(cfg, (64, 100))  # a stride above the crop leaves pixels unscored
    assert _test_cfg(cfg, None) == dict(mode="whole")  # no training crop known: the config's own


# ---------------------------------------------------------------------- views of unlabeled predictions
def test_views_colour_by_the_predicted_class_without_labels(gmm_preds):
    from gmmseg_lab.viz import anomaly as van
    from gmmseg_lab.viz import components as vc
    from gmmseg_lab.viz import embedding as ve

    x, info = ve.sample_pixels(gmm_preds, n_per_class=15, seed=0)
    height, width = gmm_preds.gt.shape[1:]
    h, w = gmm_preds.embeddings.shape[2:]
    np.testing.assert_array_equal(
        info["label"], gmm_preds.pred[info["image"], info["row"] * height // h, info["col"] * width // w]
    )
    assert info["label_kind"] == "predicted"
    fig = ve.tsne_figure(
        np.random.default_rng(0).normal(size=(len(x), 2)),
        info,
        np.zeros((len(gmm_preds.classes), gmm_preds.num_components, 2)),
        gmm_preds.classes,
        gmm_preds.palette,
    )
    assert "predicted class" in str(fig.layout.updatemenus[0].buttons[0].label)
    assert "predicted class" in fig.data[0].hovertemplate
    usage = vc.component_usage(gmm_preds)  # no labels: by predicted class
    assert usage.sum() == len(gmm_preds.names) * h * w  # every cell has a predicted class
    np.testing.assert_array_equal(usage, vc.component_usage(gmm_preds, by="pred"))
    with pytest.raises(ValueError, match="by='pred'"):
        vc.component_usage(gmm_preds, by="gt")
    assert (
        "predicted"
        in vc.component_usage_figure(usage, gmm_preds.classes, gmm_preds.palette, labeled=False).layout.title.text
    )
    overlay = vc.component_overlay_figure(gmm_preds, 0)
    assert len([t for t in overlay.data if t.type == "image"]) == 2 * len(gmm_preds.names)
    fig = van.score_overlay_figure(gmm_preds.images[0], gmm_preds.anomaly_score[0], None, threshold=0.0)
    assert not [t for t in fig.data if (t.meta or {}).get("role") == "outline"]
    assert "of the pixels flagged" in fig.layout.annotations[2].text and "(no labels)" in fig.layout.annotations[0].text
    thresholds = van.quantile_thresholds(gmm_preds.anomaly_score)
    fig = van.threshold_figure(gmm_preds.images, gmm_preds.anomaly_score, None, thresholds[:3])
    assert "no labels" in fig.layout.title.text
    assert NO_LABELS_NOTE.startswith("these images have no labels")


def test_softmax_features_make_a_map_without_means(lab_runs, photos):
    from gmmseg_lab.viz import embedding as ve

    preds = predict_images(lab_runs["softmax"], photos, max_images=1, max_side=96, device="cpu")
    x, info = ve.sample_pixels(preds, n_per_class=10)
    assert x.shape[1] == preds.features.shape[1] and (info["component"] == -1).all()
    coords, mean_coords = ve.tsne_embedding(x, None, perplexity=5)
    assert mean_coords is None and coords.shape == (len(x), 2)
    fig = ve.tsne_figure(coords, info, None, preds.classes, preds.palette, colour_by="anomaly")
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["colour: predicted class", "colour: anomaly score"]
    with pytest.raises(ValueError, match="colour_by"):
        ve.tsne_figure(coords, info, None, preds.classes, preds.palette, colour_by="component")
    box = ve.tsne_widget(preds, n_per_class=10, perplexity=5)  # the live view: no component colouring offered
    assert [v for _, v in box.controls["colour_by"].options] == ["class", "anomaly"]
    box.controls["colour_by"].value = "anomaly"
    assert [t.visible for t in box.figure.data][-1] is True and box.figure.data[-1].name == "anomaly score"


def test_new_pixels_are_placed_on_a_map_of_labelled_pixels(lab_runs, gmm_preds):
    from gmmseg_lab.viz import embedding as ve

    reference, note = reference_predictions(lab_runs["gmm"], max_images=4)
    assert reference is not None and reference.labeled and "reference map" in note
    x_ref, info_ref = ve.sample_pixels(reference, n_per_class=20, seed=0)
    emap = fit_embedding_map(x_ref, info_ref, reference.means, seed=0, perplexity=10)
    assert emap.coords.shape == (len(x_ref), 2) and emap.mean_coords.shape == reference.means.shape[:2] + (2,)
    fitted = emap.coords.copy()
    x_new, info_new = ve.sample_pixels(gmm_preds, n_per_class=10, seed=0)
    placed = place_on_map(emap, x_new)
    assert placed.shape == (len(x_new), 2) and np.isfinite(placed).all()
    np.testing.assert_array_equal(emap.coords, fitted)  # the map does not move
    # a fitted pixel placed again lands near where it was fitted, relative to the map's spread
    again = place_on_map(emap, x_ref[:20])
    spread = np.ptp(fitted, axis=0).max()
    assert np.median(np.linalg.norm(again - fitted[:20], axis=1)) < 0.1 * spread
    fig = ve.tsne_placed_figure(
        emap.coords, emap.info, emap.mean_coords, placed, info_new, reference.classes, reference.palette
    )
    new_traces = [t for t in fig.data if t.legendgroup == "new"]
    assert new_traces[0].visible and not any(t.visible for t in new_traces[1:])  # anomaly colouring first
    np.testing.assert_allclose(new_traces[0].marker.color, info_new["anomaly_score"])
    with pytest.raises(ValueError, match="new_coords"):
        ve.tsne_placed_figure(emap.coords, emap.info, None, placed[:3], info_new, reference.classes, reference.palette)
    # a converted model has no data set: no reference, and the note says why
    assert reference_predictions(lab_runs["gmm"] / "nowhere.pth")[0] is None


def test_the_upload_control_scores_a_real_picture(lab_gmm, photos):
    from test_viz_upload import png_bytes, upload_value

    from gmmseg_lab.viz.explore import upload_widget

    box = upload_widget({"GMMSeg": lab_gmm}, max_side=96)
    rgb = list_images([photos / "coffee.png"])[0][1]
    box.controls["upload"].value = upload_value("coffee.png", png_bytes(rgb))
    preds = box.predictions["GMMSeg"]
    assert preds.names == ["coffee.png"] and max(preds.images.shape[1:3]) == 96
    assert "component" in box.components_figure.layout.title.text
    heat = [t for t in box.anomaly_figure.data if t.type == "heatmap"][0]
    np.testing.assert_allclose(heat.z, preds.score_maps["neg_max_log_likelihood"][0], rtol=1e-6)


# ---------------------------------------------------------------------- what the notebooks call
def test_the_notebook_helpers_build_the_unlabeled_views(lab_runs, photos, quick_dataset):
    from gmmseg_lab.experiments import explore
    from gmmseg_lab.viz import embedding as ve

    labelled = explore.notebook_predictions(lab_runs["gmm"], quick_dataset, None, max_images=2)
    assert labelled.labeled and explore.summary_line(labelled, "segformer", 0).startswith("segformer GMMSeg, seed 0")
    assert explore.embedding_figures(lab_runs["gmm"], labelled) == []  # labelled: the notebook's own views
    preds = explore.notebook_predictions(lab_runs["gmm"], quick_dataset, str(photos), max_images=2)
    assert not preds.labeled and NO_LABELS_NOTE in explore.summary_line(preds, "segformer", 0)
    x, info = ve.sample_pixels(preds, n_per_class=10)
    assert "No labels" in explore.embedding_sentences(info, preds.classes)
    figures = explore.embedding_figures(
        lab_runs["gmm"], preds, softmax=lab_runs["softmax"], n_per_class=10, perplexity=5
    )
    assert len(figures) == 2
    assert "placed" in figures[0].layout.title.text and "softmax" in figures[1].layout.title.text

    class Lab:  # what anomaly_session reads of notebook.setup's Lab
        work_dir, data_dir, preset, progress = lab_runs["gmm"].parent, quick_dataset, "quick", False

    assert explore.anomaly_session(Lab, None) is None
    session = explore.anomaly_session(Lab, str(photos), lab_runs["gmm"], lab_runs["softmax"], max_images=2)
    assert list(session.preds) == ["GMMSeg", "softmax"]
    np.testing.assert_array_equal(session.preds["softmax"].images, session.preds["GMMSeg"].images)
    assert NO_LABELS_NOTE in session._repr_markdown_()
    kinds = [f.layout.title.text for f in session.figures()]
    assert len(kinds) == 1 + 2 + 2 + 1 and "Predicted classes" in kinds[0] and "no labels" in kinds[-1]
    anomaly, upload = session.widgets()
    assert list(anomaly.controls["model"].options) == ["GMMSeg", "softmax"]
    assert list(upload.controls["model"].options) == ["GMMSeg", "softmax"]


# ---------------------------------------------------------------------- the command
def test_explore_refuses_bad_input_naming_it(tmp_path, photos, lab_runs, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    work = str(lab_runs["gmm"])
    cases = [
        (["--checkpoint", str(tmp_path / "none"), "--images", str(photos)], 1, "--checkpoint"),
        (["--checkpoint", work, "--images", str(tmp_path / "none")], 1, "--images"),
        (["--checkpoint", work, "--images", str(tmp_path / "empty")], 1, "no image files"),
        (
            ["--checkpoint", work, "--images", str(photos), "--softmax-config", str(tmp_path / "file")],
            2,
            "--softmax-config",
        ),
        (["--checkpoint", work, "--images", str(photos), "--softmax", str(tmp_path / "none")], 1, "--softmax"),
    ]
    for argv, status, text in cases:
        assert main(["explore", *argv, "--out", str(tmp_path / "report")]) == status, argv
        err = capsys.readouterr().err
        assert "gmmseg-lab explore: error:" in err and text in err, (argv, err)
    assert main(["explore", "--checkpoint", work, "--images", str(photos), "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()  # nothing written by a refused command


@pytest.mark.slow
def test_explore_builds_a_report_from_unlabeled_photos(tmp_path, photos, lab_runs, release_work):
    from gmmseg_lab.report.explore import EXPLORE_NOTEBOOKS

    out = tmp_path / "report"
    assert (
        main(
            [
                "explore",
                "--checkpoint",
                str(lab_runs["gmm"]),
                "--images",
                str(photos),
                "--out",
                str(out),
                "--softmax",
                str(lab_runs["softmax"]),
                "--max-images",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert {name: job["status"] for name, job in summary["jobs"].items()} == dict.fromkeys(EXPLORE_NOTEBOOKS, "ok")
    for name in EXPLORE_NOTEBOOKS:
        page = (out / "html" / f"{name}.html").read_text()
        assert "chelsea.png" in page and "no labels" in page, name
    assert "softmax" in (out / "html" / "06_open_world_anomaly.html").read_text()
    assert (out / "index.html").is_file() and json.loads((out / "explore.json").read_text())["softmax"]
    release_out = tmp_path / "release_report"
    assert (
        main(
            [
                "explore",
                "--checkpoint",
                str(release_work),
                "--images",
                str(photos),
                "--out",
                str(release_out),
                "--max-images",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((release_out / "summary.json").read_text())
    assert all(job["status"] == "ok" for job in summary["jobs"].values())
    assert "stuff_" in (release_out / "html" / "02_component_assignments.html").read_text()
