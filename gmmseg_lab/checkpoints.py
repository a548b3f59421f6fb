"""Checkpoints on disk, with no framework beyond torch: find a work dir's checkpoint, check that a file
is one, read the tensors of one.

- :func:`last_checkpoint` ``(work_dir) -> Path | None``: the checkpoint to resume a work dir from:
  the one ``work_dir/last_checkpoint`` names, or, when that pointer is missing, empty or garbled (an
  older non-atomic writer cut short, a run killed between its first checkpoint and the pointer),
  the newest intact ``iter_N.pth`` / ``epoch_N.pth``.
- :func:`check_checkpoint` ``(path, for_resume=True) -> Path``: a complete, readable checkpoint, or
  :class:`CheckpointError` naming the file and what is wrong (missing, empty, truncated, corrupt,
  not a checkpoint at all) and, to resume, the work dir's other checkpoints.
- :func:`read_state_dict` ``(path) -> {name: tensor}``: the model tensors of an mmengine / mmcv
  checkpoint or of a plain state-dict file.

Checkpoints are written by :mod:`gmmseg_lab.train` (atomically: temporary file, then rename; the
pointer after the file; pruning last), read here by everything that loads a model.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch

__all__ = [
    "CheckpointError",
    "check_checkpoint",
    "checkpoint_files",
    "last_checkpoint",
    "read_pointer",
    "read_state_dict",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from or loaded: missing, empty, truncated, corrupt, not a
    checkpoint at all (a plain tensor, a dict without ``state_dict``), or one whose weights do not
    fit the model built from the config (another architecture, another number of classes)."""


def _checkpoint_iter(path: Path) -> int:
    stem = path.stem
    return int(stem.split("_")[-1]) if stem.split("_")[-1].isdigit() else -1


def read_pointer(work_dir: Path) -> tuple[Path | None, str | None]:
    """``(checkpoint named by work_dir/last_checkpoint, None)``, or ``(None, what is wrong with the
    pointer)``: ``"missing"``, ``"empty"`` or ``"garbled (...)"``."""
    pointer = work_dir / "last_checkpoint"
    if not pointer.is_file():
        return None, "missing"
    try:
        text = pointer.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"garbled ({type(exc).__name__})"
    if not text:
        return None, "empty"
    if "\n" in text or "\x00" in text:
        return None, "garbled (not a single path)"
    path = Path(text)
    return (path if path.is_absolute() else work_dir / path), None


def checkpoint_files(work_dir: Path) -> list[Path]:
    """The work dir's ``iter_N.pth`` / ``epoch_N.pth``, newest first."""
    names = re.compile(r"(iter|epoch)_\d+\.pth")
    found = [p for p in work_dir.glob("*.pth") if names.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=_checkpoint_iter, reverse=True)


def last_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``work_dir`` from, or None when it has none.

    Normally the one ``work_dir/last_checkpoint`` names (as named, even when that file is missing or
    damaged: :func:`check_checkpoint` then says so). When the pointer is missing, empty or garbled
    (written by an older, non-atomic writer and cut short, or a run killed between saving its first
    checkpoint and pointing to it), the newest intact ``iter_N.pth`` / ``epoch_N.pth`` of the work dir
    instead (a warning names it when the pointer exists but is unusable); None when there is no intact
    one (:func:`train` refuses to resume, or start afresh over, a work dir whose checkpoints are all
    damaged).
    """
    work_dir = Path(work_dir)
    path, problem = read_pointer(work_dir)
    if path is not None:
        return path
    for candidate in checkpoint_files(work_dir):
        try:
            check_checkpoint(candidate)
        except CheckpointError:
            continue
        if problem != "missing":
            warnings.warn(
                f"{work_dir / 'last_checkpoint'} is {problem}: using the newest intact checkpoint "
                f"there, {candidate.name}",
                RuntimeWarning,
                stacklevel=2,
            )
        return candidate
    return None


def _content_problem(obj, for_resume: bool) -> str | None:
    """What keeps a loaded checkpoint object from being used, or None. An mmengine checkpoint is a
    dict with ``state_dict`` (and ``meta``, which resuming needs); to load weights, a bare state
    dict (``torch.save(model.state_dict())``: a non-empty dict of tensors) is accepted too."""
    if not isinstance(obj, dict):
        return f"it is not a checkpoint (it holds a {type(obj).__module__}.{type(obj).__qualname__}, not a dict)"
    if "state_dict" in obj:
        if not isinstance(obj["state_dict"], dict):
            return f"its 'state_dict' is a {type(obj['state_dict']).__name__}, not a dict of tensors"
        if for_resume and not isinstance(obj.get("meta"), dict):
            return (
                "it has no 'meta' (iteration, seed...), so it was not saved by a training run; it can be "
                "loaded as weights but not resumed from"
            )
        return None
    if not for_resume and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None  # a bare state dict
    keys = ", ".join(repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
    return f"it is not a checkpoint (a dict without 'state_dict'; its keys: {keys or 'none'})"


def check_checkpoint(path: str | Path, *, for_resume: bool = True) -> Path:
    """Check that ``path`` is a complete, readable checkpoint before resuming from it; returns it.

    mmengine checkpoints are zip archives (``torch.save``): a truncated file has no central directory
    and a damaged one fails its CRCs, both found without unpickling. Anything else must load with
    ``torch.load``. Either way the object must be a checkpoint: a dict with ``state_dict`` (and
    ``meta`` to resume from it; with ``for_resume=False``, checking a file to load weights from, a
    bare state dict is accepted too). Raises :class:`CheckpointError` naming the file and, to
    resume, the work dir's other checkpoints (resume from one with ``train(cfg, resume=PATH)`` /
    ``--resume-from PATH``).
    """
    path = Path(path)
    problem = None
    if not path.exists():
        problem = "it does not exist"
    elif path.is_dir():
        problem = "it is a directory, not a checkpoint file"
    elif not path.is_file():
        problem = "it is not a regular file"
    elif path.stat().st_size == 0:
        problem = "it is empty (0 bytes)"
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                problem = f"it is corrupt (CRC check failed for its member {bad!r})"
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            problem = f"it is corrupt ({type(exc).__name__}: {exc})"
        if problem is None:
            try:  # memory-mapped: the pickle is read, the tensors' bytes are not
                problem = _content_problem(
                    torch.load(path, map_location="cpu", weights_only=False, mmap=True), for_resume
                )
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot use it"
                problem = (
                    f"it is a zip archive but not a torch checkpoint (torch.load failed: {type(exc).__name__}: {exc})"
                )
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot resume from it"
            problem = (
                f"it is truncated, corrupt or not a torch checkpoint (torch.load failed: {type(exc).__name__}: {exc})"
            )
        else:
            problem = _content_problem(obj, for_resume)
    if problem is None:
        return path
    if not for_resume:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")
    others = sorted((p for p in path.parent.glob("*.pth") if p.resolve() != path.resolve()), key=_checkpoint_iter)
    hint = (
        f"other checkpoints there: {', '.join(p.name for p in others)}; resume from one with "
        "train(cfg, resume=PATH) or `gmmseg-lab train ... --resume-from PATH`"
        if others
        else "no other checkpoint there; start afresh in a new work dir"
    )
    raise CheckpointError(f"cannot resume from {path}: {problem}; {hint}")


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of an mmengine / mmcv checkpoint file (``state_dict`` entry, ``module.`` of
    DDP stripped) or of a plain state-dict file.

    Raises:
        FileNotFoundError, ValueError: naming the file, when it is missing or holds no state dict.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: holds no state dict of tensors (expected an mmengine checkpoint with "
            "'state_dict', or a dict of tensors)"
        )
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}
