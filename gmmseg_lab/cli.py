"""``gmmseg-lab``: the lab's command line (argument parsing only; the work lives in the library).

::

    gmmseg-lab data make --preset quick|cpu --seed S --out DIR
    gmmseg-lab data check DIR
    gmmseg-lab train --data DIR --arch segformer|deeplabv3plus|upernet|ocrnet --head gmm|softmax
                     --preset quick|cpu --seed S --work-dir W        (or: gmmseg-lab train CONFIG.py)
    gmmseg-lab evaluate --checkpoint CKPT_OR_WORK_DIR --data DIR --out metrics.json
    gmmseg-lab demo [--out runs/demo]
    gmmseg-lab toy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data.real import ANOMALY_FORMATS, CLOSED_SETS
from .data.real import FORMATS as DATA_FORMATS

# The same as gmmseg_lab.models.presets' ARCHS, HEADS and PRESETS (tests/test_cli.py checks it),
# repeated because importing that module imports mmengine: `gmmseg-lab --help` stays fast.
ARCHS = ("segformer", "deeplabv3plus", "upernet", "ocrnet")
HEADS = ("gmm", "softmax")
TRAIN_PRESETS = ("quick", "cpu", "paper", "paper-ade20k", "paper-cocostuff10k")
#: Training preset -> the real data-set layout its config reads (the embedded presets read the lab's).
PRESET_LAYOUT = {spec.preset: name for name, spec in CLOSED_SETS.items()}
#: Layouts ``evaluate --anomaly-format`` accepts.
ANOMALY_DATA_FORMATS = ("auto", "lab") + ANOMALY_FORMATS


def _key_value(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key, yaml.safe_load(value)  # parsed as data: numbers, booleans, strings, lists


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmmseg-lab", description="GMMSeg lab: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make or check a data set in the lab's layout")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="generate the embedded procedural urban-scene data set")
    make.add_argument("--preset", choices=("quick", "cpu"), default="quick",
                      help="quick: 64 px, 48/16/16 images; cpu: 128 px, 300/60/60 (train/val/anomaly)")
    make.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    make.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing data set at --out")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")

    check = data_sub.add_parser("check", help="report what a data set holds and any problem, without training",
                                description="Detect the layout of DIR (the lab's, Cityscapes, ADE20K, COCO-Stuff-10K, "
                                            "Fishyscapes, Road Anomaly, SegmentMeIfYouCan; see docs/datasets.md) and "
                                            "report counts, classes, label values and every problem; exit 1 on problems.")
    check.add_argument("dir", type=Path, help="data set directory")
    check.add_argument("--format", choices=("auto",) + DATA_FORMATS, default="auto", metavar="FORMAT",
                       help=f"the layout DIR holds: {', '.join(DATA_FORMATS)} (default: auto, detect it)")
    check.add_argument("--splits", nargs="+",
                       help="splits to check (default: the format's, e.g. train val; ADE20K: training validation; "
                            "the lab layout: train val and anomaly when present, 'anomaly' naming its anomaly split)")
    check.add_argument("--limit", type=int, metavar="N",
                       help="decode at most N pairs per split (every file is still paired)")
    check.add_argument("--make-train-ids", action="store_true",
                       help="Cityscapes: first write *_gtFine_labelTrainIds.png from *_gtFine_labelIds.png "
                            "(official 34 -> 19 mapping, atomic writes, existing files kept)")

    train = sub.add_parser("train", help="train a GMMSeg model or its softmax twin",
                           description="Train from a shipped preset (--data/--arch/--head/--preset) or a config file.")
    train.add_argument("config", nargs="?", type=Path, help="an mmengine config file (instead of the preset options)")
    train.add_argument("--data", type=Path, help="data set directory in the lab's layout")
    train.add_argument("--arch", choices=ARCHS, default="segformer", help="architecture")
    train.add_argument("--head", choices=HEADS, default="gmm", help="generative GMM classifier or softmax twin")
    train.add_argument("--preset", choices=TRAIN_PRESETS, default="quick",
                       help="model size and schedule: quick/cpu on the embedded data; paper (Cityscapes), "
                            "paper-ade20k, paper-cocostuff10k: the paper's settings on the real data set")
    train.add_argument("--seed", type=int, default=0, help="random seed (weights, data order)")
    train.add_argument("--work-dir", type=Path, help="where logs, config.py and checkpoints go")
    train.add_argument("--max-iters", type=int, help="override the preset's number of iterations")
    train.add_argument("--gmm", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="GMM classifier option, e.g. --gmm memory=stats --gmm mean_momentum=0.99 (repeatable)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the work dir's last checkpoint (weights, GMM, optimizer, RNG: "
                            "the run ends as an uninterrupted one would)")
    train.add_argument("--resume-from", type=Path, metavar="CKPT",
                       help="continue from this checkpoint instead (e.g. an older one when the last is corrupt)")
    train.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none",
                       help="distributed launcher (use 'pytorch' under torchrun)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="score a trained model: mIoU, ECE/MCE, anomaly AUROC/AP/FPR95")
    ev.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint .pth or a train work dir")
    ev.add_argument("--data", type=Path, help="data set directory in the lab's layout (closed set, and its "
                    "anomaly/ split when present)")
    ev.add_argument("--anomaly-data", type=Path, help="an anomaly benchmark folder (Fishyscapes, Road Anomaly, "
                    "SegmentMeIfYouCan, or the lab layout) scored instead of DATA/anomaly; alone, only it is scored")
    ev.add_argument("--anomaly-format", default="auto", choices=ANOMALY_DATA_FORMATS, metavar="FORMAT",
                    help=f"layout of --anomaly-data: {', '.join(ANOMALY_DATA_FORMATS[1:])} (default: auto, "
                         "detect it); see `gmmseg-lab data check --help`")
    ev.add_argument("--out", type=Path, help="write the metrics here as JSON")
    ev.add_argument("--config", type=Path, help="config file (default: the one saved with the model)")
    ev.add_argument("--split", default="val", help="closed-set split to score")
    ev.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    ev.add_argument("--slide", nargs=2, type=int, metavar=("CROP", "STRIDE"),
                    help="sliding-window inference with square CROP windows every STRIDE pixels")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help="the quick end-to-end comparison: data, both heads, metrics table")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    demo.add_argument("--arch", choices=ARCHS, default="segformer", help="architecture")
    demo.add_argument("--preset", choices=("quick", "cpu"), default="quick", help="model size and schedule")
    demo.add_argument("--seed", type=int, default=0, help="random seed")

    sub.add_parser("toy", help="fit a GMM classifier on 2-D multimodal toy data and print what it learned")

    rep = sub.add_parser("report", help="execute the lab's notebooks with papermill into an HTML report",
                         description="Execute notebooks/ in dependency order (training once, reused by later "
                                     "notebooks), one executed notebook per grid combination; writes "
                                     "OUT/index.html and OUT/summary.json. Rerunning reuses every notebook "
                                     "whose parameters and code are unchanged.")
    rep.add_argument("--preset", default="quick", help="report definition reports/presets/<PRESET>.yaml "
                     "(quick: minutes; cpu: the README's numbers)")
    rep.add_argument("--grid", type=Path, help="a grid file (e.g. reports/ablation.yaml): one executed "
                     "notebook per combination of its values")
    rep.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (threads are split)")
    rep.add_argument("--out", required=True, type=Path, help="output folder")
    rep.add_argument("--notebooks", type=Path, help="notebooks folder (default: the repository's notebooks/)")
    rep.add_argument("--definitions", type=Path, help="report definitions folder (default: reports/)")
    rep.add_argument("--timeout", type=int, help="seconds a single cell may run (default: no limit)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _cmd_data(args) -> int:
    if args.data_command == "make":
        from .data.scenes import make_dataset

        path = make_dataset(args.out, preset=args.preset, seed=args.seed, overwrite=args.overwrite,
                            progress=not args.no_progress)
        print(f"wrote {path}")
        return 0
    from .data.real import check_real_dataset, convert_cityscapes_label_ids, detect_format

    splits = tuple(args.splits) if args.splits else None
    if args.make_train_ids:
        fmt = detect_format(args.dir) if args.format == "auto" else args.format
        if fmt != "cityscapes":
            raise ValueError(f"{args.dir}: --make-train-ids applies to Cityscapes, but this is {fmt}")
        written = convert_cityscapes_label_ids(args.dir, splits=splits or ("train", "val"))
        print(f"wrote {len(written)} *_gtFine_labelTrainIds.png file(s)")
    report = check_real_dataset(args.dir, fmt=args.format, splits=splits, limit=args.limit)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_train(args) -> int:
    from .data.layout import validate_dataset
    from .train import train

    if args.config is not None:
        if args.data is not None:
            raise ValueError("give either a config file or --data with the preset options, not both")
        if not args.config.is_file():
            raise FileNotFoundError(f"{args.config}: config file not found")
        from mmengine.config import Config

        cfg = Config.fromfile(str(args.config))
        if args.work_dir is not None:
            cfg.work_dir = str(args.work_dir)
    else:
        if args.data is None:
            raise ValueError("--data is required (or give a config file)")
        from .models import build_config

        # Every data problem is reported before anything is written.
        if args.preset in PRESET_LAYOUT:
            from .data.real import CLOSED_SETS, validate_real_dataset

            layout = PRESET_LAYOUT[args.preset]
            validate_real_dataset(args.data, fmt=layout, splits=tuple(CLOSED_SETS[layout].splits))
        else:
            validate_dataset(args.data, splits=("train", "val"), check_anomaly=False)
        gmm_cfg = dict(args.gmm) if args.gmm else None
        if gmm_cfg and args.head != "gmm":
            raise ValueError("--gmm options apply to --head gmm only")
        cfg = build_config(args.arch, args.head, args.preset, data_root=args.data,
                           work_dir=args.work_dir or Path("work_dirs") / f"{args.arch}_{args.head}_{args.preset}_s{args.seed}",
                           seed=args.seed, max_iters=args.max_iters, gmm_cfg=gmm_cfg)
    if args.launcher != "none":
        cfg.launcher = args.launcher
    work_dir = train(cfg, resume=args.resume_from or args.resume, progress=not args.no_progress)
    print(f"trained: {work_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    import json

    from .eval.evaluate import evaluate, evaluate_anomaly

    slide = tuple(args.slide) if args.slide else None
    if args.data is None and args.anomaly_data is None:
        raise ValueError("give --data (a data set in the lab's layout), --anomaly-data (a benchmark), or both")
    if args.data is None:
        result = evaluate_anomaly(args.checkpoint, args.anomaly_data, args.out, fmt=args.anomaly_format,
                                  config=args.config, batch_size=args.batch_size, slide=slide,
                                  progress=not args.no_progress)
        print(json.dumps(result.get("anomaly", result), indent=2, default=str))
        if args.out:
            print(f"wrote {args.out}")
        return 0
    result = evaluate(args.checkpoint, args.data, args.out, config=args.config, split=args.split,
                      batch_size=args.batch_size, slide=slide, progress=not args.no_progress,
                      anomaly_data=args.anomaly_data, anomaly_format=args.anomaly_format)
    summary = {k: result[k] for k in ("miou", "acc", "ece", "mce")}
    if "anomaly" in result:
        summary["anomaly"] = result["anomaly"]
    print(json.dumps(summary, indent=2))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _cmd_report(args) -> int:
    from .report.runner import ReportRunner
    from .report.spec import ReportSpecError

    try:
        runner = ReportRunner(args.out, preset=args.preset, grid=args.grid, jobs=args.jobs,
                              notebooks_dir=args.notebooks, definitions_dir=args.definitions,
                              progress=not args.no_progress, timeout=args.timeout)
    except ReportSpecError as err:
        print(f"gmmseg-lab report: {err}", file=sys.stderr)
        return 2
    runner.run()
    index = runner.out / "index.html"
    print(f"report: {index}")
    if runner.failed:
        print(f"{len(runner.failed)} notebook(s) did not succeed: {', '.join(runner.failed)} "
              f"(see {index})", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, arch=args.arch, preset=args.preset, seed=args.seed)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gmmseg-lab`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .data.layout import DatasetError

    try:
        if args.command == "data":
            return _cmd_data(args)
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "report":
            return _cmd_report(args)
        from .toy import main as toy_main

        toy_main()
        return 0
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"gmmseg-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
