"""The command line: every bad input stops before any work with the file named; a quick run end to end."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gmmseg_lab.cli import build_parser, main


def _copy(quick_dataset, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(quick_dataset, target)
    return target


def _first(path, pattern="*.png"):
    return sorted(path.glob(pattern))[0]


def _no_mask(d):
    victim = _first(d / "annotations/train")
    victim.unlink()
    return victim.stem


def _wrong_size(d):
    victim = _first(d / "annotations/val")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(victim)
    return victim.name


def _label_out_of_range(d):
    victim = _first(d / "annotations/train")
    mask = np.array(Image.open(victim))
    mask[0, 0] = 42
    Image.fromarray(mask).save(victim)
    return victim.name


def _unreadable_image(d):
    victim = _first(d / "images/train")
    victim.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return victim.name


def _malformed_classes(d):
    (d / "classes.json").write_text('{"classes": ["road", ')
    return "classes.json"


def _missing_split(d):
    shutil.rmtree(d / "images" / "val")
    return "val"


BREAKAGES = {
    "image without its mask": _no_mask,
    "mask size differs from image": _wrong_size,
    "label >= number of classes": _label_out_of_range,
    "unreadable image": _unreadable_image,
    "malformed classes.json": _malformed_classes,
    "missing folder": _missing_split,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_train_refuses_bad_data_before_writing_anything(breakage, quick_dataset, tmp_path, capsys):
    data = _copy(quick_dataset, tmp_path)
    named = BREAKAGES[breakage](data)
    work_dir = tmp_path / "work"
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--arch",
            "segformer",
            "--head",
            "gmm",
            "--preset",
            "quick",
            "--work-dir",
            str(work_dir),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1  # a data error
    assert named in err, err
    assert not work_dir.exists()


def test_missing_data_folder(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--work-dir", str(tmp_path / "w")])
    assert rc == 1 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_evaluate_refuses_missing_checkpoint_and_bad_data(quick_dataset, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pth"),
            "--data",
            str(quick_dataset),
            "--out",
            str(tmp_path / "m.json"),
        ]
    )
    assert rc == 1 and "none.pth" in capsys.readouterr().err
    data = _copy(quick_dataset, tmp_path)
    named = _wrong_size(data)
    rc = main(
        ["evaluate", "--checkpoint", str(tmp_path / "none.pth"), "--data", str(data), "--out", str(tmp_path / "m.json")]
    )
    assert rc == 1 and named in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_data_make_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "make", "--preset", "quick", "--out", str(out), "--no-progress"]) == 0
    assert main(["data", "make", "--preset", "quick", "--out", str(out), "--no-progress"]) == 2
    assert str(out) in capsys.readouterr().err
    assert main(["data", "check", str(out)]) == 0


def test_gmm_options_are_parsed_as_data():
    args = build_parser().parse_args(["train", "--data", "d", "--gmm", "mean_momentum=0.99", "--gmm", "memory=stats"])
    assert dict(args.gmm) == {"mean_momentum": 0.99, "memory": "stats"}


@pytest.mark.parametrize("command", [[], ["data", "make"], ["data", "check"], ["train"], ["evaluate"], ["demo"]])
def test_help_documents_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: gmmseg-lab" in out
    if command == ["train"]:
        for option in ("--data", "--arch", "--head", "--preset", "--seed", "--work-dir", "--resume", "--gmm"):
            assert option in out


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "make", "--preset", "quick", "--seed", "1", "--out", str(data), "--no-progress"]) == 0
    results = {}
    for head in ("gmm", "softmax"):
        work = tmp_path / head
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
                    "--seed",
                    "0",
                    "--work-dir",
                    str(work),
                    "--max-iters",
                    "6",
                    "--no-progress",
                ]
            )
            == 0
        )
        assert (work / "last_checkpoint").is_file() and (work / "config.py").is_file()
        out = tmp_path / f"{head}.json"
        assert (
            main(["evaluate", "--checkpoint", str(work), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
        )
        results[head] = json.loads(out.read_text())
    for head, metrics in results.items():
        assert metrics["head"] == head
        for key in ("miou", "ece"):
            assert 0.0 <= metrics[key] <= 1.0
        for key in ("auroc", "ap", "fpr95"):
            assert 0.0 <= metrics["anomaly"][key] <= 1.0
    assert results["gmm"]["anomaly"]["score"] == "neg_max_log_likelihood"
    assert results["softmax"]["anomaly"]["score"] == "max_softmax"
    assert set(results["gmm"]["anomaly_by_score"]) == {
        "neg_max_log_likelihood",
        "neg_logsumexp_log_likelihood",
        "max_softmax",
        "entropy",
        "max_logit",
        "energy",
    }
    assert set(results["softmax"]["anomaly_by_score"]) == {"max_softmax", "entropy", "max_logit", "energy"}
    assert 0.0 <= results["gmm"]["bayes_posterior_calibration"]["ece"] <= 1.0
    assert "bayes_posterior_calibration" not in results["softmax"]
    # A bare checkpoint file works too (its config is found beside it).
    ckpt = (tmp_path / "gmm" / "last_checkpoint").read_text().strip()
    assert main(["evaluate", "--checkpoint", ckpt, "--data", str(data), "--no-progress"]) == 0
    # Sliding-window inference (48-px windows every 32 px over the 64-px images) scores the same
    # pixels: same pixel count, metrics in range, and close to whole-image inference (same weights).
    out = tmp_path / "slide.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "gmm"),
                "--data",
                str(data),
                "--slide",
                "48",
                "32",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    slide = json.loads(out.read_text())
    assert slide["anomaly"]["num_pos"] == results["gmm"]["anomaly"]["num_pos"]
    assert 0.0 <= slide["miou"] <= 1.0 and 0.0 <= slide["anomaly"]["auroc"] <= 1.0
    assert abs(slide["acc"] - results["gmm"]["acc"]) < 0.25


def test_paper_preset_checks_the_real_layout_first(tmp_path, capsys):
    from test_data_real import write_cityscapes

    data = write_cityscapes(tmp_path / "cityscapes", kind="labelIds")  # not yet converted to train IDs
    rc = main(["train", "--data", str(data), "--preset", "paper", "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 1 and "labelTrainIds" in err, err
    assert not (tmp_path / "w").exists()


def test_evaluate_on_an_anomaly_benchmark_layout(quick_dataset, tmp_path, capsys):
    from test_data_real import write_smiyc

    bench = write_smiyc(tmp_path)
    work = tmp_path / "gmm"
    assert (
        main(
            [
                "train",
                "--data",
                str(quick_dataset),
                "--arch",
                "segformer",
                "--head",
                "gmm",
                "--preset",
                "quick",
                "--work-dir",
                str(work),
                "--max-iters",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "bench.json"
    assert (
        main(["evaluate", "--checkpoint", str(work), "--anomaly-data", str(bench), "--out", str(out), "--no-progress"])
        == 0
    )
    result = json.loads(out.read_text())
    assert result["anomaly_format"] == "smiyc-anomaly" and result["anomaly"]["score"] == "neg_max_log_likelihood"
    assert 0.0 <= result["anomaly"]["auroc"] <= 1.0
    rc = main(["evaluate", "--checkpoint", str(work), "--no-progress"])
    assert rc == 2 and "--anomaly-data" in capsys.readouterr().err


def test_preset_tables_agree_with_their_sources():
    from gmmseg_lab import cli
    from gmmseg_lab.data.real import ANOMALY_FORMATS, CLOSED_SETS
    from gmmseg_lab.models import presets

    assert cli.PRESET_LAYOUT == {
        "paper": "cityscapes",
        "paper-ade20k": "ade20k",
        "paper-cocostuff10k": "coco-stuff-10k",
    }
    assert all(CLOSED_SETS[layout].preset == preset for preset, layout in cli.PRESET_LAYOUT.items())
    assert (cli.ARCHS, cli.HEADS, cli.TRAIN_PRESETS) == (presets.ARCHS, presets.HEADS, presets.PRESETS)
    assert set(cli.BACKBONE_NAMES) == {b for names in presets.BACKBONES.values() for b in names}
    assert set(cli.ANOMALY_DATA_FORMATS) == {"auto", "lab", *ANOMALY_FORMATS}


def test_anomaly_format_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(
            ["evaluate", "--checkpoint", "x.pth", "--anomaly-data", "d", "--anomaly-format", "fishyscape"]
        )
    assert info.value.code == 2 and "invalid choice: 'fishyscape'" in capsys.readouterr().err
    args = build_parser().parse_args(["evaluate", "--checkpoint", "x.pth", "--anomaly-format", "smiyc-obstacle"])
    assert args.anomaly_format == "smiyc-obstacle"


@pytest.mark.slow
def test_both_twins_train_on_the_pretrained_encoder_and_gmm_starts_from_the_softmax_twin(
    quick_dataset, tmp_path, capsys
):
    """``--backbone efficientnet-lite0`` for both heads, then ``--init-from`` the softmax twin's checkpoint."""
    import torch

    from gmmseg_lab.models.transfer import read_state_dict

    common = [
        "--data",
        str(quick_dataset),
        "--arch",
        "upernet",
        "--preset",
        "quick",
        "--backbone",
        "efficientnet-lite0",
        "--max-iters",
        "2",
        "--no-progress",
    ]
    for head in ("softmax", "gmm"):
        assert main(["train", *common, "--head", head, "--work-dir", str(tmp_path / head)]) == 0
        cfg = (tmp_path / head / "config.py").read_text()
        assert "EfficientNetLite" in cfg and "pretrained=True" in cfg
    capsys.readouterr()
    softmax_ckpt = tmp_path / "softmax" / "iter_2.pth"
    # another seed than the twins': a fresh head would start from other random weights
    assert (
        main(
            [
                "train",
                *common,
                "--head",
                "gmm",
                "--seed",
                "7",
                "--work-dir",
                str(tmp_path / "init"),
                "--init-from",
                str(softmax_ckpt),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"init from {softmax_ckpt.absolute()}" in out and "softmax classifier not loaded: decode_head.conv_seg" in out
    )
    assert "missing (left at their initialisation): decode_head.gmm" in out
    # Both twins start their backbone from ImageNet, so the decode head tells: the initialised run's
    # head (seed 7) left the softmax twin's weights only through 2 steps of training, while a fresh
    # seed-7 GMM model starts from other random weights (the twins share seed 0, hence one init).
    source, trained = read_state_dict(softmax_ckpt), read_state_dict(tmp_path / "init" / "iter_2.pth")
    assert main(["train", *common, "--head", "gmm", "--seed", "7", "--work-dir", str(tmp_path / "fresh7")]) == 0
    fresh = read_state_dict(tmp_path / "fresh7" / "iter_2.pth")
    keys = [
        k
        for k in source
        if k.startswith("decode_head.")
        and not k.startswith("decode_head.conv_seg")
        and k.endswith("conv.weight")
        and k in fresh
        and source[k].shape == fresh[k].shape
    ]
    assert keys, "the twins share no decode-head conv weight"
    for key in keys[:3]:
        assert (trained[key] - source[key]).abs().max() < 0.1 * (fresh[key] - source[key]).abs().max(), key
        assert torch.isfinite(trained[key]).all()
