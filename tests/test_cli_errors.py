"""Bad input at the command line: one message on stderr naming the file or option, no traceback,
exit 2 for usage errors and 1 for data errors, and nothing left on disk by a refused command.

The table (:data:`CASES`) runs through ``gmmseg_lab.cli.main`` in-process; a few cases run again in a
real subprocess, where a traceback would reach the terminal. Paths in the table are templates:
``{data}`` the quick data set, ``{f}`` this module's folder of broken fixtures, ``{out}`` the test's
own empty folder (also the working directory), ``{work}`` / ``{ckpt}`` a segformer-gmm work dir
trained for 2 iterations / its checkpoint (trained once per module, only for the cases that use it),
``{deeplab}`` the shipped deeplabv3plus quick config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gmmseg_lab import cli
from gmmseg_lab.cli import main

REPO = Path(__file__).resolve().parents[1]
DEEPLAB_CONFIG = REPO / "gmmseg_lab" / "configs" / "deeplabv3plus" / "deeplabv3plus_quick_gmm.py"
USAGE, DATA = 2, 1

TRAIN = ["train", "--data", "{data}", "--work-dir", "{out}/w", "--max-iters", "2", "--no-progress"]
EVAL = ["evaluate", "--checkpoint", "{work}", "--data", "{data}", "--no-progress"]
# Cases: id -> (argv, exit status, substrings the message must hold). The message must name the
# file or the option at fault; "{...}" in a substring is a path template as in argv.
CASES = {
    # ---- evaluate: the checkpoint
    "evaluate: missing checkpoint": (
        ["evaluate", "--checkpoint", "{out}/none.pth", "--data", "{data}"],
        DATA,
        ["none.pth", "no such"],
    ),
    "evaluate: empty checkpoint": (
        ["evaluate", "--checkpoint", "{f}/empty.pth", "--data", "{data}"],
        DATA,
        ["empty.pth", "empty (0 bytes)"],
    ),
    "evaluate: random bytes": (
        ["evaluate", "--checkpoint", "{f}/random.pth", "--data", "{data}"],
        DATA,
        ["random.pth", "corrupt"],
    ),
    "evaluate: a text file": (
        ["evaluate", "--checkpoint", "{f}/notes.txt", "--data", "{data}"],
        DATA,
        ["notes.txt", "not a torch checkpoint"],
    ),
    "evaluate: a plain tensor": (
        ["evaluate", "--checkpoint", "{f}/tensor.pth", "--data", "{data}"],
        DATA,
        ["tensor.pth", "not a checkpoint", "Tensor"],
    ),
    "evaluate: a dict without state_dict": (
        ["evaluate", "--checkpoint", "{f}/no_state_dict.pth", "--data", "{data}"],
        DATA,
        ["no_state_dict.pth", "without 'state_dict'", "'epoch'"],
    ),
    "evaluate: a state dict of another model": (
        ["evaluate", "--checkpoint", "{f}/other_weights.pth", "--config", "{work}/config.py", "--data", "{data}"],
        DATA,
        ["other_weights.pth", "does not fit", "fc.weight"],
    ),
    "evaluate: a bare checkpoint without a config": (
        ["evaluate", "--checkpoint", "{f}/other_weights.pth", "--data", "{data}"],
        USAGE,
        ["other_weights.pth", "--config"],
    ),
    "evaluate: work dir without config.py": (
        ["evaluate", "--checkpoint", "{f}/work_no_config", "--data", "{data}"],
        DATA,
        ["work_no_config", "config.py"],
    ),
    "evaluate: work dir without checkpoints": (
        ["evaluate", "--checkpoint", "{f}/work_no_ckpt", "--data", "{data}"],
        DATA,
        ["work_no_ckpt", "no intact checkpoint"],
    ),
    "evaluate: checkpoint of another architecture": (
        ["evaluate", "--checkpoint", "{ckpt}", "--config", "{deeplab}", "--data", "{data}"],
        DATA,
        ["iter_2.pth", "does not fit", "deeplabv3plus_quick_gmm.py", "another architecture"],
    ),
    "evaluate: missing --config": (EVAL + ["--config", "{out}/nope.py"], DATA, ["--config", "nope.py", "no such file"]),
    "evaluate: --config not Python": (EVAL + ["--config", "{f}/broken.py"], DATA, ["broken.py", "SyntaxError"]),
    # ---- evaluate: the data
    "evaluate: missing --data": (
        ["evaluate", "--checkpoint", "{work}", "--data", "{out}/nowhere"],
        DATA,
        ["--data", "nowhere", "no such folder"],
    ),
    "evaluate: --data is a file": (
        ["evaluate", "--checkpoint", "{work}", "--data", "{f}/random.pth"],
        DATA,
        ["--data", "random.pth", "a file"],
    ),
    "evaluate: 3 classes (labels out of range)": (
        EVAL[:4] + ["{f}/classes3"],
        DATA,
        ["classes3", "out of range for 3 classes", "and", "more"],
    ),
    "evaluate: more classes than the model's": (
        EVAL[:4] + ["{f}/classes25"],
        DATA,
        ["classes25", "classes.json", "25 classes", "predicts 9"],
    ),
    "evaluate: missing split": (EVAL + ["--split", "test"], DATA, ["images/test", "missing folder"]),
    "evaluate: an anomaly benchmark that is a file": (
        ["evaluate", "--checkpoint", "{work}", "--anomaly-data", "{f}/random.pth"],
        DATA,
        ["--anomaly-data"],
    ),
    # ---- evaluate: options
    "evaluate: neither --data nor --anomaly-data": (["evaluate", "--checkpoint", "{work}"], USAGE, ["--anomaly-data"]),
    "evaluate: --out is a directory": (EVAL + ["--out", "{out}"], USAGE, ["--out", "a directory"]),
    "evaluate: --out under a file": (EVAL + ["--out", "{f}/random.pth/m.json"], USAGE, ["--out", "is a file"]),
    "evaluate: --batch-size 0": (EVAL + ["--batch-size", "0"], USAGE, ["--batch-size", "positive integer"]),
    "evaluate: --slide 0 0": (EVAL + ["--slide", "0", "0"], USAGE, ["--slide", "positive integer"]),
    "evaluate: --slide stride > crop": (EVAL + ["--slide", "16", "32"], USAGE, ["--slide 16 32", "STRIDE"]),
    "evaluate: unknown --anomaly-format": (EVAL + ["--anomaly-format", "x"], USAGE, ["--anomaly-format"]),
    # ---- train: options
    "train: unknown --gmm option": (
        TRAIN + ["--gmm", "bogus=1"],
        USAGE,
        ["--gmm", "'bogus'", "valid options", "mean_momentum", "memory_size"],
    ),
    "train: --gmm value out of range": (TRAIN + ["--gmm", "mean_momentum=2"], USAGE, ["mean_momentum", "[0, 1]"]),
    "train: --gmm value of the wrong type": (
        TRAIN + ["--gmm", "mean_momentum=abc"],
        USAGE,
        ["mean_momentum", "a number"],
    ),
    "train: --gmm unknown memory": (TRAIN + ["--gmm", "memory=weird"], USAGE, ["memory", "'weird'", "fifo"]),
    "train: --gmm head option": (TRAIN + ["--gmm", "num_components=3"], USAGE, ["num_components", "head"]),
    "train: --gmm without a value": (TRAIN + ["--gmm", "novalue"], USAGE, ["--gmm", "KEY=VALUE", "novalue"]),
    "train: --gmm value not YAML": (TRAIN + ["--gmm", "memory=[1"], USAGE, ["--gmm", "not valid YAML"]),
    "train: --gmm with --head softmax": (TRAIN + ["--head", "softmax", "--gmm", "memory=stats"], USAGE, ["--head gmm"]),
    "train: --backbone the architecture lacks": (
        TRAIN + ["--arch", "ocrnet", "--backbone", "efficientnet-lite0"],
        USAGE,
        ["--backbone", "ocrnet", "hrnet"],
    ),
    "train: --backbone another architecture's": (
        TRAIN + ["--arch", "segformer", "--backbone", "resnet"],
        USAGE,
        ["--backbone", "'resnet'", "mit"],
    ),
    "train: --backbone for a preset without its configs": (
        TRAIN + ["--preset", "paper", "--backbone", "efficientnet-lite0"],
        USAGE,
        ["--backbone", "'paper'"],
    ),
    "train: unknown --backbone": (TRAIN + ["--backbone", "vgg"], USAGE, ["--backbone", "invalid choice"]),
    "train: --backbone with a config file": (
        ["train", "{deeplab}", "--work-dir", "{out}/w", "--backbone", "mit"],
        USAGE,
        ["--backbone", "config file"],
    ),
    "train: --init-from missing": (TRAIN + ["--init-from", "{out}/none.pth"], DATA, ["--init-from", "none.pth"]),
    "train: --init-from random bytes": (
        TRAIN + ["--init-from", "{f}/random.pth"],
        DATA,
        ["--init-from", "random.pth", "not a readable"],
    ),
    "train: --init-from with --resume": (
        TRAIN + ["--init-from", "{f}/random.pth", "--resume"],
        USAGE,
        ["--init-from", "--resume"],
    ),
    "train: --max-iters 0": (TRAIN + ["--max-iters", "0"], USAGE, ["--max-iters", "positive integer"]),
    "train: --max-iters -3": (TRAIN + ["--max-iters", "-3"], USAGE, ["--max-iters", "-3"]),
    "train: --seed -1": (TRAIN + ["--seed", "-1"], USAGE, ["--seed", "non-negative"]),
    "train: unknown --arch": (TRAIN + ["--arch", "resnet"], USAGE, ["--arch", "invalid choice"]),
    "train: no --data and no config": (["train", "--work-dir", "{out}/w"], USAGE, ["--data is required"]),
    "train: config file and --data": (
        ["train", "{f}/no_model.py", "--data", "{data}", "--work-dir", "{out}/w"],
        USAGE,
        ["not both"],
    ),
    "train: --gmm with a config file": (
        ["train", "{f}/bad_gmm.py", "--work-dir", "{out}/w", "--gmm", "memory=stats"],
        USAGE,
        ["--gmm", "config file"],
    ),
    "train: --work-dir is a file": (TRAIN + ["--work-dir", "{f}/random.pth"], USAGE, ["--work-dir", "not a directory"]),
    "train: --work-dir under a file": (
        TRAIN + ["--work-dir", "{f}/random.pth/w"],
        USAGE,
        ["--work-dir", "random.pth is a file"],
    ),
    # ---- train: data, config files, checkpoints
    "train: missing --data": (
        ["train", "--data", "{out}/nowhere", "--work-dir", "{out}/w"],
        DATA,
        ["--data", "nowhere", "no such folder"],
    ),
    "train: empty --data": (
        ["train", "--data", "{f}/empty_dir", "--work-dir", "{out}/w"],
        DATA,
        ["empty_dir", "classes.json: missing"],
    ),
    "train: --data not a data set": (
        ["train", "--data", "{f}/work_no_config", "--work-dir", "{out}/w"],
        DATA,
        ["work_no_config", "images/train"],
    ),
    "train: --data is a file": (
        ["train", "--data", "{f}/random.pth", "--work-dir", "{out}/w"],
        DATA,
        ["--data", "a file"],
    ),
    "train: missing config file": (
        ["train", "{out}/nope.py", "--work-dir", "{out}/w"],
        DATA,
        ["nope.py", "no such file"],
    ),
    "train: config not Python": (
        ["train", "{f}/broken.py", "--work-dir", "{out}/w"],
        DATA,
        ["broken.py", "SyntaxError"],
    ),
    "train: config with an undefined name": (
        ["train", "{f}/undefined.py", "--work-dir", "{out}/w"],
        DATA,
        ["undefined.py", "NameError"],
    ),
    "train: config is a directory": (
        ["train", "{f}/empty_dir", "--work-dir", "{out}/w"],
        DATA,
        ["empty_dir", "a directory"],
    ),
    "train: config of another kind": (["train", "{f}/notes.txt", "--work-dir", "{out}/w"], DATA, ["notes.txt", ".py"]),
    "train: config without a model": (
        ["train", "{f}/no_model.py", "--work-dir", "{out}/w"],
        DATA,
        ["no_model.py", "'model'"],
    ),
    "train: config with a bad gmm_cfg": (
        ["train", "{f}/bad_gmm.py", "--work-dir", "{out}/w"],
        DATA,
        ["bad_gmm.py", "mean_momentum", "[0, 1]"],
    ),
    "train: config with a missing data_root": (
        ["train", "{f}/bad_root.py", "--work-dir", "{out}/w"],
        DATA,
        ["bad_root.py", "data_root", "no such folder"],
    ),
    "train: --resume-from a missing file": (
        TRAIN + ["--resume-from", "{out}/missing.pth"],
        DATA,
        ["missing.pth", "does not exist"],
    ),
    "train: --resume-from a corrupt file": (
        TRAIN + ["--resume-from", "{f}/random.pth"],
        DATA,
        ["random.pth", "corrupt"],
    ),
    "train: --resume-from a plain tensor": (
        TRAIN + ["--resume-from", "{f}/tensor.pth"],
        DATA,
        ["tensor.pth", "not a checkpoint"],
    ),
    # ---- data make / data check
    "data make: --out is a file": (
        ["data", "make", "--out", "{f}/random.pth", "--no-progress"],
        USAGE,
        ["--out", "random.pth", "not a directory"],
    ),
    "data make: --out not empty": (
        ["data", "make", "--out", "{data}", "--no-progress"],
        USAGE,
        ["--out", "--overwrite"],
    ),
    "data make: --overwrite of something else": (
        ["data", "make", "--out", "{f}/work_no_config", "--overwrite", "--no-progress"],
        USAGE,
        ["work_no_config", "not a data set"],
    ),
    "data make: --seed -1": (["data", "make", "--out", "{out}/d", "--seed", "-1"], USAGE, ["--seed", "-1"]),
    "data check: missing folder": (["data", "check", "{out}/nowhere"], DATA, ["nowhere", "no such folder"]),
    "data check: a file": (["data", "check", "{f}/random.pth"], DATA, ["random.pth", "a file, not a folder"]),
    "data check: --limit -1": (["data", "check", "{data}", "--limit", "-1"], USAGE, ["--limit", "non-negative"]),
    "data check: wrong --format": (
        ["data", "check", "{data}", "--format", "cityscapes"],
        DATA,
        ["problem(s)", "looks like lab", "--format lab"],
    ),
    "data check: --make-train-ids on the lab layout": (
        ["data", "check", "{data}", "--make-train-ids"],
        USAGE,
        ["--make-train-ids", "Cityscapes"],
    ),
    # ---- import-release
    "import-release: missing checkpoint": (
        ["import-release", "{out}/none.pth", "--out", "{out}/w"],
        DATA,
        ["none.pth", "does not exist"],
    ),
    "import-release: empty checkpoint": (
        ["import-release", "{f}/empty.pth", "--out", "{out}/w"],
        DATA,
        ["empty.pth", "empty (0 bytes)"],
    ),
    "import-release: random bytes": (
        ["import-release", "{f}/random.pth", "--out", "{out}/w"],
        DATA,
        ["random.pth", "not a torch checkpoint"],
    ),
    "import-release: a plain tensor": (
        ["import-release", "{f}/tensor.pth", "--out", "{out}/w"],
        DATA,
        ["tensor.pth", "not a checkpoint", "Tensor"],
    ),
    "import-release: a dict without state_dict": (
        ["import-release", "{f}/no_state_dict.pth", "--out", "{out}/w"],
        DATA,
        ["no_state_dict.pth", "without 'state_dict'", "'epoch'"],
    ),
    "import-release: not a release checkpoint": (
        ["import-release", "{f}/other_weights.pth", "--out", "{out}/w"],
        DATA,
        ["other_weights.pth", "no decode_head.means: not a GMMSeg release checkpoint", "fc.weight"],
    ),
    "import-release: a directory": (
        ["import-release", "{f}/empty_dir", "--out", "{out}/w"],
        DATA,
        ["empty_dir", "a directory"],
    ),
    "import-release: --out not empty": (
        ["import-release", "{f}/other_weights.pth", "--out", "{f}/work_no_config"],
        USAGE,
        ["--out", "work_no_config", "not empty"],
    ),
    "import-release: --out is a file": (
        ["import-release", "{f}/other_weights.pth", "--out", "{f}/random.pth"],
        USAGE,
        ["--out", "random.pth", "not a directory"],
    ),
    "import-release: --out under a file": (
        ["import-release", "{f}/other_weights.pth", "--out", "{f}/random.pth/w"],
        USAGE,
        ["--out", "is a file"],
    ),
    "import-release: --max-memory-gb -1": (
        ["import-release", "{f}/other_weights.pth", "--out", "{out}/w", "--max-memory-gb", "-1"],
        USAGE,
        ["--max-memory-gb", "non-negative"],
    ),
    "import-release: --memory-size 0": (
        ["import-release", "{f}/other_weights.pth", "--out", "{out}/w", "--memory-size", "0"],
        USAGE,
        ["--memory-size", "positive integer"],
    ),
    "import-release: no --out": (["import-release", "{f}/other_weights.pth"], USAGE, ["--out"]),
    # ---- report / demo
    "report: unknown --preset": (
        ["report", "--preset", "nope", "--out", "{out}/r"],
        USAGE,
        ["--preset", "'nope'", "quick"],
    ),
    "report: --jobs 0": (["report", "--jobs", "0", "--out", "{out}/r"], USAGE, ["--jobs", "positive integer"]),
    "report: --timeout 0": (["report", "--timeout", "0", "--out", "{out}/r"], USAGE, ["--timeout"]),
    "report: --out is a file": (["report", "--out", "{f}/random.pth"], USAGE, ["--out", "not a directory"]),
    "report: missing grid": (
        ["report", "--out", "{out}/r", "--grid", "{out}/g.yaml"],
        DATA,
        ["--grid", "g.yaml", "no such file"],
    ),
    "report: grid is not YAML": (
        ["report", "--out", "{out}/r", "--grid", "{f}/bad.yaml"],
        DATA,
        ["bad.yaml", "not valid YAML"],
    ),
    "report: grid of the wrong shape": (
        ["report", "--out", "{out}/r", "--grid", "{f}/list.yaml"],
        DATA,
        ["list.yaml", "expected a mapping"],
    ),
    "demo: --out is a file": (["demo", "--out", "{f}/random.pth"], USAGE, ["--out", "random.pth", "not a directory"]),
    "demo: --seed -1": (["demo", "--out", "{out}/d", "--seed", "-1"], USAGE, ["--seed"]),
    # ---- argparse's own
    "unknown subcommand": (["fit"], USAGE, ["invalid choice: 'fit'"]),
    "unknown option": (["train", "--epochs", "3"], USAGE, ["unrecognized arguments: --epochs"]),
}
NEEDS_MODEL = ("{work}", "{ckpt}")


def _write_fixtures(root: Path, quick_dataset: Path) -> None:
    """The broken inputs: tiny files, and two copies of the quick data set with other classes."""
    import torch

    from gmmseg_lab.models import build_config
    from gmmseg_lab.models.presets import gmm_head_configs

    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.pth").write_bytes(b"")
    (root / "random.pth").write_bytes(os.urandom(4096))
    (root / "notes.txt").write_text("these are notes, not a checkpoint\n")
    torch.save(torch.zeros(3), root / "tensor.pth")
    torch.save({"epoch": 3, "weights": [1, 2]}, root / "no_state_dict.pth")
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, root / "other_weights.pth")
    (root / "empty_dir").mkdir()
    (root / "work_no_config").mkdir()
    (root / "work_no_config" / "log.txt").write_text("no config here\n")
    (root / "work_no_ckpt").mkdir()
    (root / "work_no_ckpt" / "config.py").write_text("model = dict(type='EncoderDecoder')\n")
    (root / "broken.py").write_text("model = dict(\n")
    (root / "undefined.py").write_text("model = undefined_name\n")
    (root / "no_model.py").write_text("x = 1\n")
    (root / "bad.yaml").write_text("notebook: [1\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, max_iters=2)
    gmm_head_configs(cfg)[0]["gmm_cfg"]["mean_momentum"] = 5.0
    cfg.dump(str(root / "bad_gmm.py"))
    cfg = build_config("segformer", "gmm", "quick", data_root=root / "no_such_data", max_iters=2)
    cfg.dump(str(root / "bad_root.py"))
    for name, count in (("classes3", 3), ("classes25", 25)):
        target = root / name
        shutil.copytree(quick_dataset, target)
        info = json.loads((target / "classes.json").read_text())
        extra = [f"class_{i}" for i in range(max(0, count - len(info["classes"])))]
        info["classes"] = (info["classes"] + extra)[:count]
        info["palette"] = (info["palette"] + [[i, i, i] for i in range(len(extra))])[:count]
        (target / "classes.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory, quick_dataset):
    root = tmp_path_factory.mktemp("cli_errors") / "f"
    _write_fixtures(root, quick_dataset)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, quick_dataset, single_thread_torch):
    """A segformer-gmm work dir trained for 2 iterations of the quick preset (~10-20 s)."""
    work = tmp_path_factory.mktemp("cli_errors_model") / "w"
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
                "--max-iters",
                "2",
                "--work-dir",
                str(work),
                "--no-progress",
            ]
        )
        == 0
    )
    return work


def _snapshot(*roots: Path) -> set[tuple[str, int, int]]:
    """Every path under ``roots`` with its size and modification time."""
    found = set()
    for root in roots:
        for path in [root, *root.rglob("*")]:
            stat = path.lstat()
            found.add((str(path), stat.st_size if path.is_file() else 0, stat.st_mtime_ns))
    return found


def _run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)``'s exit status (argparse's own errors through SystemExit) and stderr."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


def _paths(request, fixtures_dir, quick_dataset, out: Path, templates) -> dict[str, str]:
    paths = {"data": str(quick_dataset), "f": str(fixtures_dir), "out": str(out), "deeplab": str(DEEPLAB_CONFIG)}
    if any(need in t for t in templates for need in NEEDS_MODEL):
        work = request.getfixturevalue("trained")
        paths.update(work=str(work), ckpt=str(work / "iter_2.pth"))
    return paths


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_message_and_the_right_exit_status(
    case, request, fixtures_dir, quick_dataset, tmp_path, monkeypatch, capsys
):
    argv, status, wanted = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # default outputs (work_dirs/...) would land here
    paths = _paths(request, fixtures_dir, quick_dataset, out, argv + wanted)
    argv = [a.format(**paths) for a in argv]
    watched = [out, fixtures_dir, Path(quick_dataset)] + ([Path(paths["work"])] if "work" in paths else [])
    before = _snapshot(*watched)

    got, err = _run_in_process(argv, capsys)

    assert "Traceback" not in err, err
    assert got == status, f"exit {got}, expected {status}: {err}"
    assert "error:" in err, err
    for text in wanted:
        assert text.format(**paths) in err, f"{text!r} not in: {err}"
    assert _snapshot(*watched) == before, "a refused command left something on disk"


# ---------------------------------------------------------------------- a real terminal
SUBPROCESS_CASES = [
    "evaluate: random bytes",
    "train: unknown --gmm option",
    "data check: a file",
    "train: --max-iters 0",
]


@pytest.mark.slow
def test_no_traceback_reaches_the_terminal(fixtures_dir, quick_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    paths = {"data": str(quick_dataset), "f": str(fixtures_dir), "out": str(out)}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop(cli.TRACEBACK_ENV, None)
    for case in SUBPROCESS_CASES:
        argv, status, wanted = CASES[case]
        proc = subprocess.run(
            [sys.executable, "-m", "gmmseg_lab", *(a.format(**paths) for a in argv)],
            capture_output=True,
            text=True,
            cwd=out,
            env=env,
            timeout=300,
        )
        assert "Traceback" not in proc.stderr + proc.stdout, f"{case}:\n{proc.stderr}"
        assert proc.returncode == status, f"{case}: exit {proc.returncode}:\n{proc.stderr}"
        message = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(message) == 1, f"{case}: {proc.stderr}"
        assert all(text.format(**paths) in proc.stderr for text in wanted), f"{case}: {proc.stderr}"
    assert not any(out.iterdir()), "a refused command left something behind"


# ---------------------------------------------------------------------- real bugs stay visible
def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise KeyError("a bug in the library")

    monkeypatch.setitem(cli.COMMANDS, "toy", broken)
    with pytest.raises(KeyError, match="a bug in the library"):
        main(["toy"])

    def disk_full(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(cli.COMMANDS, "toy", disk_full)
    with pytest.raises(OSError, match="No space left"):  # not a usage or data error: shown in full
        main(["toy"])


def test_the_traceback_variable_shows_every_error(monkeypatch, tmp_path):
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(cli.DataError, match="nowhere"):
        main(["data", "check", str(tmp_path / "nowhere")])


def test_exit_status_table():
    from gmmseg_lab.data.layout import DatasetError
    from gmmseg_lab.models.inference import ConfigError
    from gmmseg_lab.report.spec import ReportSpecError
    from gmmseg_lab.train import CheckpointError

    assert cli.exit_status(cli.UsageError("x")) == USAGE and cli.exit_status(cli.DataError("x")) == DATA
    for exc in (
        DatasetError("x"),
        CheckpointError("x"),
        ConfigError("x"),
        ReportSpecError("x"),
        FileNotFoundError("x"),
        NotADirectoryError("x"),
    ):
        assert cli.exit_status(exc) == DATA, exc
    for exc in (FileExistsError("x"), ValueError("x")):
        assert cli.exit_status(exc) == USAGE, exc
    for exc in (KeyError("x"), TypeError("x"), RuntimeError("x"), OSError(28, "full")):
        assert cli.exit_status(exc) is None, exc


def test_a_long_problem_list_is_cut_short():
    from gmmseg_lab.data.layout import DatasetError

    exc = DatasetError([f"mask_{i}.png: bad" for i in range(30)], "DIR")
    text = cli._message(exc)
    assert "30 problem(s)" in text and "mask_9.png" in text and "mask_10.png" not in text
    assert "and 20 more" in text


# ---------------------------------------------------------------------- the same checks in the Python API
def test_gmm_options_are_checked_by_build_config(quick_dataset):
    from gmmseg_lab.models import build_config
    from gmmseg_lab.models.presets import check_gmm_options, gmm_options

    assert set(gmm_options()) >= {"memory", "mean_momentum", "memory_size", "e_step", "ignore_index"}
    assert not set(gmm_options()) & {"num_classes", "num_components", "embed_dim"}
    with pytest.raises(ValueError, match=r"gmm_cfg: unknown GMM option 'bogus'; valid options: e_step, memory"):
        build_config("segformer", "gmm", "quick", gmm_cfg={"bogus": 1})
    with pytest.raises(ValueError, match=r"mean_momentum must be in \[0, 1\], got 2"):
        build_config("segformer", "gmm", "quick", gmm_cfg={"mean_momentum": 2})
    with pytest.raises(ValueError, match="memory_size must be >= 2 for memory='stats'"):
        build_config("segformer", "gmm", "quick", gmm_cfg={"memory": "stats", "memory_size": 1})
    check_gmm_options(
        {"memory": "stats", "mean_momentum": 1, "samples_per_component": None, "memory_size": 10**9}
    )  # valid; the probe does not allocate 10**9 samples
    cfg = build_config("segformer", "gmm", "quick", gmm_cfg={"memory": "stats", "e_step": "em"})
    assert cfg.model.decode_head.gmm_cfg.memory == "stats"


def test_train_refuses_before_writing(quick_dataset, tmp_path):
    from gmmseg_lab.models import build_config
    from gmmseg_lab.models.presets import gmm_head_configs
    from gmmseg_lab.train import train

    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=tmp_path / "a" / "w", max_iters=1)
    gmm_head_configs(cfg)[0]["gmm_cfg"]["bogus"] = 1
    with pytest.raises(ValueError, match="unknown GMM option 'bogus'"):
        train(cfg, progress=False)
    assert not (tmp_path / "a").exists()
    # A config mmengine itself refuses (an unregistered loss) leaves no work dir either.
    cfg = build_config("segformer", "gmm", "quick", data_root=quick_dataset, work_dir=tmp_path / "b" / "w", max_iters=1)
    cfg.model.decode_head.loss_decode = dict(type="NoSuchLoss")
    with pytest.raises(KeyError, match="NoSuchLoss"):
        train(cfg, progress=False, log_level="ERROR")
    assert not (tmp_path / "b").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        train(cfg, progress=False, work_dir=tmp_path / "file")


def test_load_segmentor_refuses_a_checkpoint_of_another_model(trained, fixtures_dir):
    from gmmseg_lab.models import load_segmentor
    from gmmseg_lab.train import CheckpointError

    load_segmentor(trained, device="cpu")  # its own checkpoint fits
    with pytest.raises(CheckpointError, match="does not fit the model of deeplabv3plus_quick_gmm.py"):
        load_segmentor(DEEPLAB_CONFIG, trained / "iter_2.pth", device="cpu")
    with pytest.raises(CheckpointError, match="cannot load checkpoint .*random.pth"):
        load_segmentor(trained, fixtures_dir / "random.pth", device="cpu")
    # Not strict: what fits is loaded (nothing here), no error.
    load_segmentor(DEEPLAB_CONFIG, trained / "iter_2.pth", device="cpu", strict=False)
