"""The notebooks' library: the one set-up call, the by-model helper, the known-warning filters and the
sentences that put a run's numbers into words (gmmseg_lab.experiments.notebook, .compare.by_model)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gmmseg_lab.experiments import notebook
from gmmseg_lab.experiments.compare import by_model
from gmmseg_lab.experiments.notebook import KNOWN_LOG_MESSAGES, KNOWN_WARNINGS, QUIET_ENV, Finding


# ----------------------------------------------------------------------------------- by_model
@pytest.fixture()
def twin_runs():
    return {
        (arch, head, seed): {
            "metrics": {"miou": seed + (0.5 if head == "gmm" else 0.0)},
            "run_dir": Path(f"/runs/{arch}_{head}_s{seed}"),
        }
        for arch in ("segformer", "segformer@mit")
        for head in ("gmm", "softmax")
        for seed in (0, 1)
    }


def test_by_model_lists_seeds_per_model_in_order(twin_runs):
    out = by_model(twin_runs, ["segformer", "segformer@mit"], [1, 0])
    assert list(out) == ["segformer gmm", "segformer softmax", "segformer@mit gmm", "segformer@mit softmax"]
    assert out["segformer gmm"] == [{"miou": 1.5}, {"miou": 0.5}]  # the seeds' order
    assert out["segformer@mit softmax"] == [{"miou": 1.0}, {"miou": 0.0}]


def test_by_model_takes_a_key_a_callable_none_one_seed_and_heads(twin_runs):
    assert by_model(twin_runs, ["segformer"], 0, "run_dir") == {
        "segformer gmm": Path("/runs/segformer_gmm_s0"),
        "segformer softmax": Path("/runs/segformer_softmax_s0"),
    }
    names = by_model(twin_runs, ["segformer"], (0, 1), key=lambda run: run["run_dir"].name, heads=("gmm",))
    assert names == {"segformer gmm": ["segformer_gmm_s0", "segformer_gmm_s1"]}
    assert by_model(twin_runs, ["segformer"], [0], key=None)["segformer gmm"] == [twin_runs[("segformer", "gmm", 0)]]
    seeds = iter([0, 1])  # a generator is read once, for every model
    assert all(len(v) == 2 for v in by_model(twin_runs, ["segformer", "segformer@mit"], seeds).values())


def test_by_model_names_a_missing_run(twin_runs):
    with pytest.raises(KeyError, match=r"no run \('segformer', 'gmm', 7\)"):
        by_model(twin_runs, ["segformer"], [0, 7])


# ----------------------------------------------------------------------------------- setup
@pytest.fixture()
def restore_filters(monkeypatch):
    """Undo what quiet_known_warnings changes in this process: warnings filters, the environment,
    mmengine's logger class."""
    from mmengine.logging import MMLogger

    monkeypatch.setattr(MMLogger, "callHandlers", MMLogger.callHandlers)
    monkeypatch.delenv(QUIET_ENV, raising=False)
    with warnings.catch_warnings():
        yield


def test_setup_returns_the_folders_and_makes_the_data_set_once(quick_dataset, tmp_path, restore_filters):
    out = io.StringIO()
    with redirect_stdout(out):
        lab = notebook.setup(tmp_path / "work", quick_dataset, "quick", 0, False)
    assert lab.work_dir == (tmp_path / "work").resolve() and lab.work_dir.is_dir()
    assert lab.data_dir == Path(quick_dataset).resolve()
    assert (lab.preset, lab.data_seed, lab.live, lab.progress) == ("quick", 0, False, False)
    assert out.getvalue() == f"runs: {lab.work_dir}\ndata: {lab.data_dir}\n"
    assert os.environ[QUIET_ENV] == "1"  # processes started from here filter the same messages
    import plotly.io as pio

    assert pio.renderers.default == "plotly_mimetype+lab_offline"
    live = notebook.setup(tmp_path / "work", quick_dataset, "quick", live=True, verbose=False)
    assert live.live and live.progress


def test_setup_defaults_follow_jupyterlab_beside_notebooks(quick_dataset, tmp_path, monkeypatch, restore_filters):
    """With work_dir None the runs go to ../runs/lab-<preset> from the notebooks' folder."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    lab = notebook.setup(None, quick_dataset, "quick", verbose=False)
    assert lab.work_dir == (tmp_path / "runs" / "lab-quick").resolve()


# ----------------------------------------------------------------------------------- known warnings
def test_known_warnings_are_filtered_by_message_and_others_are_not(restore_filters):
    notebook.quiet_known_warnings()
    notebook.quiet_known_warnings()  # idempotent
    with warnings.catch_warnings(record=True) as seen:
        # catch_warnings(record=True) keeps the filters installed above
        for known in KNOWN_WARNINGS:
            warnings.warn(known.message + " and the rest of the library's text.", UserWarning)
        warnings.warn("Default something else is False", UserWarning)
        warnings.warn(KNOWN_WARNINGS[0].message, DeprecationWarning)  # another category: not ours to hide
    messages = [str(w.message) for w in seen]
    assert messages == ["Default something else is False", KNOWN_WARNINGS[0].message], messages


def test_known_mmengine_log_messages_are_dropped_and_others_kept(restore_filters, capsys):
    from mmengine.logging import MMLogger

    notebook.quiet_known_warnings()
    logger = MMLogger.get_instance("test_known_messages", log_level="INFO")
    for known in KNOWN_LOG_MESSAGES:
        logger.warning(known.message + ". More text.")
    logger.warning("A new mmengine warning")
    logger.info("an info line")
    logger.error(KNOWN_LOG_MESSAGES[0].message)  # an error is never dropped
    out = capsys.readouterr().out
    assert "A new mmengine warning" in out and "an info line" in out
    assert out.count(KNOWN_LOG_MESSAGES[0].message) == 1
    for known in KNOWN_LOG_MESSAGES[1:]:
        assert known.message not in out


@pytest.mark.slow
def test_a_process_started_from_a_notebook_filters_the_same_messages(tmp_path):
    """Training workers (spawned by run_many) import gmmseg_lab.experiments, which installs the filters
    when the kernel's setup set QUIET_ENV."""
    code = (
        "import warnings, gmmseg_lab.experiments\n"
        f"warnings.warn({KNOWN_WARNINGS[0].message!r} + ', if you would like ...', UserWarning)\n"
        "warnings.warn('an unknown warning', UserWarning)\n"
    )
    env = dict(os.environ, **{QUIET_ENV: "1"}, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "an unknown warning" in done.stderr and "avg_non_ignore" not in done.stderr, done.stderr


# ----------------------------------------------------------------------------------- sentences
def metrics(miou, auroc=None, fpr95=None):
    m = {"miou": miou}
    if auroc is not None:
        m["anomaly"] = {"auroc": auroc, "fpr95": fpr95}
    return m


def test_a_finding_is_text_printed_and_markdown_displayed():
    f = Finding("- a\n- b")
    assert f == "- a\n- b" and f._repr_markdown_() == "- a\n- b" and repr(f) == "- a\n- b"


def test_twin_sentences_say_who_is_ahead_and_whether_beyond_noise():
    clear = {
        "segformer gmm": [metrics(0.50, 0.90, 0.30), metrics(0.52, 0.92, 0.28)],
        "segformer softmax": [metrics(0.40, 0.70, 0.60), metrics(0.41, 0.71, 0.62)],
    }
    text = notebook.twin_sentences(clear, "miou")
    assert text.startswith("segformer: GMMSeg's mIoU is 0.510 ± 0.014 against 0.405 ± 0.007 for its softmax twin")
    assert "higher is better; 2 seeds" in text and "GMMSeg is ahead by 0.105, beyond noise" in text
    fpr = notebook.twin_sentences(clear, "fpr95")  # lower is better
    assert "lower is better" in fpr and "GMMSeg is ahead by 0.320" in fpr
    noisy = {"a gmm": [metrics(0.50), metrics(0.60)], "a softmax": [metrics(0.52), metrics(0.62)]}
    assert "the softmax twin is ahead by 0.020, within noise" in notebook.twin_sentences(noisy, "miou")
    one = {"a gmm": [metrics(0.5)], "a softmax": [metrics(0.4)]}
    assert "1 seed" in notebook.twin_sentences(
        one, "miou"
    ) and "nothing to tell it from noise" in notebook.twin_sentences(one, "miou")
    level = {"a gmm": [metrics(0.5)], "a softmax": [metrics(0.5)]}
    assert "the two are level" in notebook.twin_sentences(level, "miou")


def test_twin_sentences_take_a_key_path_percent_and_list_architectures():
    runs = {
        f"{arch} {head}": [{"anomaly_components": {"mean_f1": v}}]
        for arch, v0 in (("segformer", 0.2), ("upernet", 0.6))
        for head, v in (("gmm", v0), ("softmax", 0.4))
    }
    text = notebook.twin_sentences(runs, ("mean F1", "anomaly_components.mean_f1", True), digits=1, percent=True)
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("- segformer: GMMSeg's mean F1 is 20.0 % against 40.0 %")
    assert "the softmax twin is ahead by 20.0 points" in lines[0] and "GMMSeg is ahead by 20.0 points" in lines[1]
    with pytest.raises(ValueError, match="not a headline metric"):
        notebook.twin_sentences(runs, "mean_f1")
    with pytest.raises(ValueError, match="'<arch> gmm' and '<arch> softmax'"):
        notebook.twin_sentences({"segformer gmm": [metrics(0.1)]}, "miou")


def test_per_class_sentences_count_classes_each_way_and_name_the_unsegmented():
    iou = lambda *v: {"per_class_iou": dict(zip(["road", "car", "pole"], v))}  # noqa: E731
    runs = {"s gmm": [iou(0.8, 0.3, 0.0)], "s softmax": [iou(0.7, 0.5, 0.0)]}
    text = notebook.per_class_sentences(runs)
    assert "higher on 1 of 3 classes (most: road, +0.10)" in text and "lower on 1 (most: car, -0.20)" in text
    assert "neither head segments pole" in text


def bins(confidence, accuracy, count):
    b = len(count)
    return {
        "lower": list(np.linspace(0, 1, b, endpoint=False)),
        "upper": list(np.linspace(0, 1, b + 1)[1:]),
        "count": count,
        "confidence": confidence,
        "accuracy": accuracy,
    }


def test_calibration_sentences_give_ece_and_the_direction_of_the_error():
    under = bins([0.3, None], [0.8, None], [10, 0])
    over = bins([0.9, 0.95], [0.5, 0.6], [5, 5])
    text = notebook.calibration_sentences({"m gmm": [under], "m softmax": [over]}, {"m gmm": [under]})
    lines = text.splitlines()
    assert lines[0] == (
        "- m gmm, class logits: ECE 50.0 %; mean confidence 0.300 against accuracy 0.800: "
        "under-confident: its curve lies above the diagonal"
    )
    assert "m softmax, class logits: ECE 37.5 %" in lines[1] and "over-confident" in lines[1]
    assert lines[2].startswith("- m gmm, Bayes posterior: ECE 50.0 %")


def test_bound_sentences_compare_accuracy_with_the_cap():
    from gmmseg_lab.eval.confidence_bound import layernorm_confidence_bound

    c = 9
    run = {"gamma": np.ones(c), "beta": np.zeros(c), "bins": bins([0.4], [0.7], [10]), "acc": 0.9}
    text = notebook.bound_sentences({"m gmm": [run]})
    cap = layernorm_confidence_bound(c, 1.0)
    assert f"mean gamma 1.000 caps the top probability at {cap:.3f}" in text
    assert "gives 0.400 on average and is right on 0.900" in text and "cannot be calibrated" in text
    assert "does not bind" in notebook.bound_sentences({"m gmm": [{**run, "acc": cap - 0.1}]})


def test_temperature_sentences_give_t_and_ece_before_and_after():
    scaling = {
        "logits": {"temperature": 0.5, "ece_before": 0.3, "ece_after": 0.05},
        "bayes_posterior": {"temperature": 2.0, "ece_before": 0.2, "ece_after": 0.1},
    }
    text = notebook.temperature_sentences({"m gmm": [{"temperature_scaling": scaling}], "m softmax": [{}]})
    assert text.splitlines() == [
        "- m gmm, class logits: T = 0.500 sharpens (the model was under-confident); ECE 30.0 % before, 5.0 % after",
        "- m gmm, Bayes posterior: T = 2.000 softens (the model was over-confident); ECE 20.0 % before, 10.0 % after",
    ]
    assert "No model has a temperature fit" in notebook.temperature_sentences({"m softmax": [{}]})


def test_toy_sentences():
    far = {"radius": 12.34, "softmax_confidence": 0.99, "gmm_confidence": 0.01}
    assert notebook.toy_confidence_sentences(far) == (
        "Here, on a circle of radius 12.3 around the data (3 times its extent), the softmax MLP's mean confidence "
        "is 0.990 and the GMM's 0.010: the softmax is sure of points it has never seen, the GMM is not."
    )
    assert "unusually" in notebook.toy_confidence_sentences({**far, "softmax_confidence": 0.0})

    def snap(masses, ll):
        return SimpleNamespace(masses=np.asarray([masses]), log_likelihood=np.asarray([ll]), num_iterations=4)

    text = notebook.toy_fit_sentences(snap([0.6, 0.3, 0.1], -2.0), snap([0.34, 0.33, 0.33], -2.5))
    assert "classic EM: its 3 components hold 60 %, 30 %, 10 %" in text and "50 points" in text
    assert "mean log p(x) = -2.500" in text and "shares are more even than classic EM's" in text
    assert "classic EM fits the points better, by 0.500 nats per point" in text
    same = notebook.toy_fit_sentences(snap([0.5, 0.5], -1.0), snap([0.5, 0.5], -1.0))
    assert "as even as classic EM's, and both fit the points equally well" in same


def test_component_and_embedding_sentences():
    classes = ["road", "car", "sky"]
    usage = np.asarray([[10, 10], [20, 0], [0, 0]])
    text = notebook.usage_sentences(usage, classes)
    assert "from 0.00 (car) to 1.00 (road), mean 0.50 over the 2 classes with pixels" in text
    assert "1 of them put more than half" in text
    info = {"label": np.asarray([0, 0, 1, 1]), "bayes_class": np.asarray([0, 0, 0, 1])}
    text = notebook.embedding_sentences(info, classes)
    assert "Of the 4 sampled pixels, 75 %" in text and "from 50 % (car) to 100 % (road)" in text
    post = {
        "class_posterior": [0.1, 0.9, 0.0],
        "predicted_class": 1,
        "bayes_class": 1,
        "class_index": 1,
        "component_posterior": [0.05, 0.95],
        "component": 1,
        "row": 3,
        "col": 4,
    }
    text = notebook.posterior_sentences(post, classes, "val_0.png")
    assert text.startswith(
        "At pixel (row 3, column 4) of val_0.png the head predicts car; Bayes' posterior gives "
        "it 0.900 and agrees: its top class is car too."
    )
    assert "component 1 takes 0.950" in text and "one sub-mode" in text
    other = notebook.posterior_sentences({**post, "bayes_class": 0}, classes)
    assert "gives it 0.900 but prefers road (0.100): the logits and the mixtures disagree here" in other


def test_ablation_sentences():
    results = {
        "default": [{"miou": 0.50}, {"miou": 0.52}],
        "em": [{"miou": 0.40}, {"miou": 0.41}],
        "m1": [{"miou": 0.51}, {"miou": 0.50}],
    }
    labels = {"default": "GMMSeg", "em": "standard EM", "m1": "M = 1"}
    text = notebook.ablation_sentences(results, labels)
    lines = text.splitlines()
    assert lines[0] == "- GMMSeg (the reference): mIoU 0.510 (higher is better; 2 seeds)"
    assert lines[1] == "- standard EM: 0.405, -0.105 (worse than the reference, beyond noise)"
    assert lines[2] == "- M = 1: 0.505, -0.005 (worse than the reference, within noise)"
    curves = {
        v: [{"train": {"decode.gmm_balance": [0.5, b], "decode.gmm_loglik": [1.0, 2.0]}}]
        for v, b in (("default", 0.99), ("em", 0.7))
    }
    text = notebook.convergence_sentences(curves, labels)
    assert "GMMSeg: balance 0.99 at the end of training, mean log p(x|y) 2.0" in text
    assert "standard EM: balance 0.70" in text
    text = notebook.memory_sentences(
        {"default": 8_000_000, "stats": 80_000}, {"default": "FIFO", "stats": "statistics"}
    )
    assert text.startswith("Smallest store: statistics") and "(100 times as much)" in text


def test_anomaly_score_and_source_sentences():
    def run(auroc_density, auroc_softmax, sources):
        return {
            "anomaly": {"score": "neg_max_log_likelihood"},
            "anomaly_by_score": {
                "neg_max_log_likelihood": {"auroc": auroc_density},
                "max_softmax": {"auroc": auroc_softmax},
            },
            "anomaly_by_source": {s: {"neg_max_log_likelihood": {"auroc": v}} for s, v in sources.items()},
        }

    full = {"m gmm": [run(0.8, 0.7, {"cat": 0.9, "shapes": 0.6})], "m softmax": [run(0.6, 0.65, {"cat": 0.5})]}
    text = notebook.score_sentences(full)
    assert "m gmm: best AUROC 0.800 with −max_c log p(x|c)" in text
    text = notebook.by_source_sentences(full)
    assert text == "m gmm: easiest cat (AUROC 0.900), hardest shapes (0.600)"  # one source: no sentence
