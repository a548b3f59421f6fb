"""What every notebook does first: its folders and its data set, in one call.

A notebook's parameters cell names ``work_dir`` (where trained runs live), ``data_dir`` (the
embedded data set), ``preset`` and ``data_seed``; the report runner fills them, and in JupyterLab
their defaults train ``quick`` models once into ``runs/lab-<preset>/`` beside ``notebooks/``.
"""

from __future__ import annotations

from pathlib import Path

from .runs import ensure_dataset

__all__ = ["prepare_data", "resolve_dirs"]


def prepare_data(data_dir: str | Path, preset: str, data_seed: int = 0) -> Path:
    """The embedded data set of ``preset`` and ``data_seed`` at ``data_dir`` (generated once, then reused)."""
    return ensure_dataset(Path(data_dir), preset, data_seed)


def resolve_dirs(work_dir: str | Path | None, data_dir: str | Path | None, preset: str,
                 data_seed: int = 0) -> tuple[Path, Path]:
    """The notebooks' folders: ``work_dir`` (default ``../runs/lab-<preset>`` beside ``notebooks/``, for
    live use in JupyterLab) and ``data_dir`` (default ``<work_dir>/data``), with the data set of
    ``preset`` and ``data_seed`` made there."""
    work = Path(work_dir) if work_dir else Path("..") / "runs" / f"lab-{preset}"
    work = work.expanduser().resolve()
    data = Path(data_dir).expanduser().resolve() if data_dir else work / "data"
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(data, preset, data_seed)
    return work, data
