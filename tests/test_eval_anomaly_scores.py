"""evaluate() on tiny trained twins (GMM and softmax): every anomaly score, the component metrics,
per-source results, temperature scaling; each checked against a direct computation from the model's
own outputs."""

import json
import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from gmmseg_lab.cli import main
from gmmseg_lab.data.layout import DatasetError, list_anomaly_pairs, load_mask
from gmmseg_lab.eval import AnomalyScores, CalibrationError, MetricUndefinedWarning
from gmmseg_lab.eval.evaluate import _load_model, _loader_for, _read_anomaly_sources, evaluate, evaluate_anomaly
from gmmseg_lab.eval.temperature import fit_temperature
from gmmseg_lab.report.results import flatten_metrics

SOURCES = [
    {"id": 1, "name": "procedural", "kind": "procedural"},
    {"id": 2, "name": "cat", "kind": "photo", "file": "chelsea.png"},
    {"id": 3, "name": "cup", "kind": "photo", "file": "coffee.png"},
]  # listed, never pasted
LOGIT_SCORES = {"max_softmax", "entropy", "max_logit", "energy"}
DENSITY_SCORES = {"neg_max_log_likelihood", "neg_logsumexp_log_likelihood"}


def _add_sources(root):
    """sources.json and source_masks/: in each anomaly mask the first 8-connected anomaly component is
    "procedural" (id 1), any other one "cat" (id 2)."""
    folder = root / "anomaly" / "source_masks"
    shutil.rmtree(folder, ignore_errors=True)  # the generator may write its own: these are the test's
    folder.mkdir()
    images = {}
    for image, mask_path in list_anomaly_pairs(root):
        components, count = ndimage.label(load_mask(mask_path) == 1, np.ones((3, 3)))
        source = np.where(components == 1, 1, np.where(components > 1, 2, 0)).astype(np.uint8)
        Image.fromarray(source).save(folder / f"{image.stem}.png")
        images[image.name] = ["procedural"] + (["cat"] if count > 1 else [])
    (root / "anomaly" / "sources.json").write_text(json.dumps({"sources": SOURCES, "images": images}))
    return root


@pytest.fixture(scope="module")
def data(quick_dataset, tmp_path_factory):
    return _add_sources(shutil.copytree(quick_dataset, tmp_path_factory.mktemp("sources") / "data"))


@pytest.fixture(scope="module")
def twins(data, tmp_path_factory, single_thread_torch):
    """Work dirs of a GMM SegFormer and its softmax twin, 2 iterations each (~20 s each)."""
    work = tmp_path_factory.mktemp("twins")
    for head in ("gmm", "softmax"):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(data),
                    "--arch",
                    "segformer",
                    "--head",
                    head,
                    "--preset",
                    "quick",
                    "--max-iters",
                    "2",
                    "--work-dir",
                    str(work / head),
                    "--no-progress",
                ]
            )
            == 0
        )
    return {head: work / head for head in ("gmm", "softmax")}


@pytest.fixture(scope="module")
def evaluated(twins, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("metrics")
    results = {}
    for head, work in twins.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricUndefinedWarning)
            results[head] = evaluate(work, data, out / f"{head}.json", device="cpu", progress=False)
        results[head]["_seconds"] = time.perf_counter() - start
        results[head]["_file"] = json.loads((out / f"{head}.json").read_text())
    return results


def _direct_outputs(work, data, img_dir, ann_dir, indices=None):
    """The model's per-image outputs on a split, straight from predict_batch (no evaluate code)."""
    from gmmseg_lab.models.inference import predict_batch

    segmentor, cfg, *_ = _load_model(work, None, None, "cpu")
    out = []
    for batch in _loader_for(cfg, data, img_dir, ann_dir, 4, indices=indices):
        out += predict_batch(segmentor, batch)
    return out


def test_evaluate_writes_every_new_key_for_both_twins(evaluated, data):
    num_gt = sum(ndimage.label(load_mask(mask) == 1, np.ones((3, 3)))[1] for _, mask in list_anomaly_pairs(data))
    assert num_gt > 16  # some of the 16 images hold two anomalies
    for head, result in evaluated.items():
        scores = LOGIT_SCORES | (DENSITY_SCORES if head == "gmm" else set())
        assert set(result["anomaly_by_score"]) == scores
        primary = "neg_max_log_likelihood" if head == "gmm" else "max_softmax"
        assert result["anomaly"]["score"] == primary
        assert result["anomaly"] == dict(result["anomaly_by_score"][primary], score=primary)
        for name in scores:
            for key in ("auroc", "ap", "fpr95"):
                assert 0.0 <= result["anomaly_by_score"][name][key] <= 1.0, (head, name, key)

        components = result["anomaly_components"]
        assert components["score"] == primary and components == result["anomaly_components_by_score"][primary]
        assert set(result["anomaly_components_by_score"]) == scores
        for entry in result["anomaly_components_by_score"].values():
            assert 0.0 <= entry["mean_f1"] <= 1.0 and 0.0 <= entry["siou"] <= 1.0 and 0.0 <= entry["ppv"] <= 1.0
            assert entry["num_gt_components"] == num_gt
            assert len(entry["f1_by_threshold"]) == 11 and entry["threshold_rule"] == "best_pixel_f1"
            assert entry["mean_f1"] == pytest.approx(np.mean(list(entry["f1_by_threshold"].values())))
            assert (entry["min_pred_size"], entry["min_gt_size"], entry["connect_through_void"]) == (0, 0, True)

        scaling = result["temperature_scaling"]
        assert set(scaling) == ({"logits", "bayes_posterior"} if head == "gmm" else {"logits"})
        for entry in scaling.values():
            assert entry["fit_images"] == 8 and entry["score_images"] == 8  # 16 val images, every other one
            assert entry["fit_pixels"] == entry["fit_pixels_seen"] == 8 * 64 * 64  # under the cap: all kept
            assert entry["temperature"] > 0 and entry["nll_after"] <= entry["nll_before"] + 1e-9
            for key in ("ece_before", "ece_after", "mce_before", "mce_after"):
                assert 0.0 <= entry[key] <= 1.0
        flat = flatten_metrics(result["_file"])
        assert flat["ece_ts"] == scaling["logits"]["ece_after"]
        assert ("bayes_ece_ts" in flat) == (head == "gmm")
        assert set(result["anomaly_by_source"]) == {"procedural", "cat", "cup"}
        # the file holds what evaluate returned
        assert result["_file"]["anomaly_components_by_score"] == result["anomaly_components_by_score"]
        assert result["_file"]["temperature_scaling"] == result["temperature_scaling"]
    assert "bayes_posterior_calibration" not in evaluated["softmax"]


def test_max_logit_energy_and_densities_equal_a_direct_computation(evaluated, twins, data):
    for head, work in twins.items():
        outputs = _direct_outputs(work, data, "anomaly/images", "anomaly/masks")
        direct = {
            "max_logit": lambda r: -r["seg_logits"].amax(dim=0),
            "energy": lambda r: -torch.logsumexp(r["seg_logits"], dim=0),
        }
        if head == "gmm":
            direct["neg_max_log_likelihood"] = lambda r: -r["class_log_likelihood"].amax(dim=0)
            direct["neg_logsumexp_log_likelihood"] = lambda r: -torch.logsumexp(r["class_log_likelihood"], dim=0)
        for name, score_of in direct.items():
            metric = AnomalyScores()
            raw, labels = [], []
            for r in outputs:
                score = score_of(r)
                metric.update(score, r["gt"])
                keep = r["gt"] != 255
                raw.append(score[keep].numpy())
                labels.append((r["gt"][keep] == 1).numpy())
            ours = evaluated[head]["anomaly_by_score"][name]
            assert ours == pytest.approx(metric.compute(), abs=1e-12), (head, name)
            # Against the unbinned scores: within the histogram's own bound (the log-likelihoods of
            # a 2-iteration model are packed in a narrow range far from 0, so it is not negligible).
            exact = roc_auc_score(np.concatenate(labels), np.concatenate(raw))
            assert abs(ours["auroc"] - exact) <= metric.auroc_binning_error_bound() + 1e-9, (head, name)


def test_anomaly_by_source_counts_each_source_against_every_inlier(evaluated, twins, data):
    by_source = evaluated["gmm"]["anomaly_by_source"]
    expected_pos = {1: 0, 2: 0}
    for image, mask_path in list_anomaly_pairs(data):
        mask = load_mask(mask_path)
        source = load_mask(data / "anomaly" / "source_masks" / f"{image.stem}.png")
        for sid in expected_pos:
            expected_pos[sid] += int(((source == sid) & (mask == 1)).sum())
    assert expected_pos[1] > 0 and expected_pos[2] > 0
    assert by_source["procedural"]["max_logit"]["num_pos"] == expected_pos[1]
    assert by_source["cat"]["energy"]["num_pos"] == expected_pos[2]
    total = evaluated["gmm"]["anomaly"]["num_pos"]
    assert expected_pos[1] + expected_pos[2] == total  # every anomalous pixel has a source here
    assert set(by_source["cat"]) == LOGIT_SCORES | DENSITY_SCORES
    assert set(by_source["cat"]["energy"]) == {"auroc", "ap", "fpr95", "num_pos"}
    assert by_source["cup"]["energy"] == {"auroc": None, "ap": None, "fpr95": None, "num_pos": 0}
    assert any("anomaly_by_source['cup'] is null" in n for n in evaluated["gmm"]["notes"])
    # "cat" against every inlier, from the model's own outputs (16-bit histogram, as evaluate's)
    metric = AnomalyScores(key_bits=16)
    for r in _direct_outputs(twins["gmm"], data, "anomaly/images", "anomaly/masks"):
        source = torch.from_numpy(
            load_mask(data / "anomaly" / "source_masks" / (r["img_path"].rsplit("/", 1)[1].rsplit(".", 1)[0] + ".png"))
        )
        mask = r["gt"]
        per_source = torch.where(mask == 0, 0, torch.where((mask == 1) & (source == 2), 1, 255))
        metric.update(-r["class_log_likelihood"].amax(dim=0), per_source)
    reference = metric.compute()
    assert by_source["cat"]["neg_max_log_likelihood"]["auroc"] == pytest.approx(reference["auroc"], abs=1e-12)
    assert reference["num_neg"] == evaluated["gmm"]["anomaly"]["num_neg"]


def _pixels(outputs, name):
    """``([N, C] logits, [N] labels)`` of predict_batch results: the class logits or the log-likelihoods."""
    key = {"logits": "seg_logits", "bayes_posterior": "class_log_likelihood"}[name]
    return (torch.cat([r[key].flatten(1).t() for r in outputs]), torch.cat([r["gt"].flatten() for r in outputs]))


def test_temperature_is_fitted_on_even_images_and_scored_on_odd_ones(evaluated, twins, data):
    for head, work in twins.items():
        fit = _direct_outputs(work, data, "images/val", "annotations/val", indices=list(range(0, 16, 2)))
        scored = _direct_outputs(work, data, "images/val", "annotations/val", indices=list(range(1, 16, 2)))
        assert {r["img_path"] for r in fit}.isdisjoint(r["img_path"] for r in scored)
        for name, entry in evaluated[head]["temperature_scaling"].items():
            logits, target = _pixels(fit, name)
            keep = target != 255
            # every fitting pixel is in the reservoir (32k < 200k), so the fit equals the fit on all
            assert entry["temperature"] == pytest.approx(fit_temperature(logits[keep], target[keep]), rel=1e-6)
            logits, target = _pixels(scored, name)
            before = CalibrationError(n_bins=15)
            before.update_from_probs(torch.softmax(logits, dim=1), target)
            assert entry["ece_before"] == pytest.approx(before.compute()["ece"], abs=1e-6), (head, name)
            after = CalibrationError(n_bins=15)
            after.update_from_probs(torch.softmax(logits.double() / entry["temperature"], dim=1), target)
            assert entry["ece_after"] == pytest.approx(after.compute()["ece"], abs=1e-6), (head, name)
    # The closed-set metrics still cover all 16 images, once each.
    assert sum(evaluated["gmm"]["calibration_bins"]["count"]) == 16 * 64 * 64


def test_a_split_of_one_image_has_no_temperature_scaling(twins, data, tmp_path):
    one = shutil.copytree(data, tmp_path / "one")
    for path in sorted((one / "images" / "val").iterdir())[1:]:
        path.unlink()
        (one / "annotations" / "val" / f"{path.stem}.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        result = evaluate(twins["softmax"], one, device="cpu", progress=False)
    assert result["temperature_scaling"] is None
    assert any(n.startswith("temperature_scaling is null") and "1 image" in n for n in result["notes"])
    assert "ece_ts" not in flatten_metrics(result)


def _broken(data, tmp_path, breakage):
    root = shutil.copytree(data, tmp_path / "broken")
    sources = root / "anomaly" / "sources.json"
    first = sorted((root / "anomaly" / "source_masks").iterdir())[0]
    if breakage == "malformed json":
        sources.write_text('{"sources": [')
        return root, "sources.json"
    if breakage == "duplicate id":
        sources.write_text(json.dumps({"sources": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}))
        return root, "sources.json"
    if breakage == "id out of range":
        sources.write_text(json.dumps({"sources": [{"id": 0, "name": "a"}]}))
        return root, "sources.json"
    if breakage == "unknown source in images":
        sources.write_text(json.dumps({"sources": SOURCES, "images": {"anomaly_00000.png": ["dog"]}}))
        return root, "sources.json"
    if breakage == "wrong size":
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(first)
        return root, first.name
    if breakage == "unknown id in mask":
        values = load_mask(first)
        values[0, 0] = 9
        Image.fromarray(values).save(first)
        return root, first.name
    raise AssertionError(breakage)


@pytest.mark.parametrize(
    "breakage",
    [
        "malformed json",
        "duplicate id",
        "id out of range",
        "unknown source in images",
        "wrong size",
        "unknown id in mask",
    ],
)
def test_broken_sources_stop_before_any_work(data, tmp_path, breakage):
    root, named = _broken(data, tmp_path, breakage)
    # No model exists: the DatasetError must come first, naming the file.
    with pytest.raises(DatasetError, match=named.replace(".", r"\.")):
        evaluate(tmp_path / "no-model", root, device="cpu", progress=False)


def test_missing_sources_files_mean_no_entry(data, tmp_path):
    none = shutil.copytree(data, tmp_path / "none")
    shutil.rmtree(none / "anomaly" / "source_masks")
    (none / "anomaly" / "sources.json").unlink()
    assert _read_anomaly_sources(none) is None
    sources = _read_anomaly_sources(data)
    assert sources.names == {1: "procedural", 2: "cat", 3: "cup"} and sources.unmasked == []
    # An image without its source mask is no error (the layout checker notes it): its anomalies count
    # for no source.
    partial = shutil.copytree(data, tmp_path / "partial")
    first = min((partial / "anomaly" / "source_masks").iterdir())
    first.unlink()
    assert _read_anomaly_sources(partial).unmasked == [first.name]


def test_benchmark_path_has_every_score_and_the_component_metrics(twins, tmp_path):
    from test_data_real import write_smiyc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        result = evaluate_anomaly(twins["gmm"], write_smiyc(tmp_path), device="cpu", progress=False)
    assert set(result["anomaly_by_score"]) == LOGIT_SCORES | DENSITY_SCORES
    assert set(result["anomaly_components_by_score"]) == LOGIT_SCORES | DENSITY_SCORES
    components = result["anomaly_components"]
    assert components["score"] == "neg_max_log_likelihood"
    # the anomaly track's sizes, and its void rule
    assert (components["min_pred_size"], components["min_gt_size"], components["connect_through_void"]) == (
        500,
        100,
        False,
    )
