"""Small system helpers: atomic writes (an interrupted run never leaves a half-written file), source
digests, and the CPUs this process may use."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; renamed onto ``path`` only if the block succeeds.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary sibling file and a rename."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def source_digest(root: str | Path, parts: Iterable[str] = ("",), suffixes: tuple[str, ...] = (".py",)) -> str:
    """SHA-256 of the files under ``root/part`` (a file or a folder, for each part) with these suffixes.

    Used as a cache key: a change in the code that produced a cached result invalidates it.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for part in parts:
        base = root / part
        files = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in files:
            if path.suffix in suffixes and path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """``json.dump`` ``data`` (NaN written as null) atomically to ``path``."""
    return atomic_write_text(path, json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
