"""Report definitions: which notebooks run, with which parameters, in which order; grids of parameters.

A report definition (``reports/presets/<preset>.yaml``) and a grid file (``reports/*.yaml``) are parsed
as data (``yaml.safe_load``: no tags, no code) and validated before any work starts; every error names
the file and the key. A definition::

    preset: quick                     # the embedded data set and training preset the notebooks use
    data_seed: 0                      # seed of the generated data set
    notebooks:
      - name: 01_train_and_compare    # notebooks/<name>.ipynb
        parameters: {archs: [segformer], seeds: [0, 1]}
      - name: 02_component_assignments
        needs: [01_train_and_compare] # runs after every job of these notebooks
        parameters: {arch: segformer, seed: 0}

A grid file expands one notebook into one job per combination of its ``grid`` values::

    notebook: 05_em_vs_sinkhorn
    parameters: {seeds: [0, 1, 2]}    # fixed for every combination (optional)
    grid: {arch: [segformer, deeplabv3plus]}
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import ARCHS, EMBEDDED_DATA, TRAINING_PRESETS, parse_model_spec
from ..experiments.ablation import VARIANTS

#: Parameters the runner sets for every notebook (a definition may not set them).
INJECTED = ("work_dir", "data_dir", "preset", "data_seed", "results_path", "live")
_DEF_KEYS = {"preset", "data_seed", "notebooks", "description"}
_NB_KEYS = {"name", "parameters", "needs"}
_GRID_KEYS = {"notebook", "parameters", "grid", "description"}
_NAME_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]*$")


class ReportSpecError(ValueError):
    """An invalid report definition, grid file or parameter (the message names the file and key)."""


@dataclass
class Job:
    """One notebook execution: a notebook with one set of parameters."""

    name: str  # unique, file-system safe: <notebook> or <notebook>__<combination>
    notebook: str
    parameters: dict[str, Any]
    needs: list[str] = field(default_factory=list)  # notebook names
    combination: dict[str, Any] = field(default_factory=dict)  # the grid values of this job


@dataclass
class ReportPlan:
    preset: str
    data_seed: int
    jobs: list[Job]
    definition: Path
    grid: Path | None = None


def _load_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ReportSpecError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ReportSpecError(f"{path}: not valid YAML ({err})") from None
    except UnicodeDecodeError:
        raise ReportSpecError(f"{path}: not UTF-8 text") from None


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The defaults of a notebook's ``parameters`` cell, ``{name: value}`` (literals only).

    Raises ReportSpecError when the notebook has no cell tagged ``parameters``.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            values: dict[str, Any] = {}
            try:
                body = ast.parse(cell.source).body
            except SyntaxError as err:
                raise ReportSpecError(
                    f"{path}: its parameters cell is not plain Python assignments (line {err.lineno}: {err.msg})"
                ) from None
            for node in body:
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                    if isinstance(target, ast.Name) and node.value is not None:
                        try:
                            values[target.id] = ast.literal_eval(node.value)
                        except ValueError:
                            values[target.id] = None
            return values
    raise ReportSpecError(f"{path}: no code cell tagged 'parameters' (papermill needs one)")


def _check_value(where: str, key: str, value: Any, default: Any) -> None:
    """Type check against the notebook's default, then the lab's own value checks."""

    def fail(expected: str):
        raise ReportSpecError(f"{where}: parameter {key!r} = {value!r}: expected {expected}")

    if default is not None:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                fail("true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                fail("an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail("a number")
        elif isinstance(default, str):
            if not isinstance(value, str):
                fail("a string")
        elif isinstance(default, list):
            if not isinstance(value, list):
                fail("a list")
    if key in ("archs", "seeds", "variants") and isinstance(value, list):
        hashable = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(hashable)) != len(hashable):
            fail("a list without repeated values (a repeated seed would count twice in the mean)")

    def is_model(spec: Any) -> bool:
        try:
            parse_model_spec(spec)
        except ValueError:
            return False
        return True

    if key == "arch" and not is_model(value):
        fail(f"one of {', '.join(ARCHS)}, optionally @backbone (e.g. deeplabv3plus@resnet)")
    if key == "archs" and (not value or not all(is_model(a) for a in value)):
        fail(f"a non-empty list of {', '.join(ARCHS)}, each optionally @backbone (e.g. deeplabv3plus@resnet)")
    if key == "seeds" and (not value or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value)):
        fail("a non-empty list of non-negative integers")
    if key == "seed" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        fail("a non-negative integer")
    if key == "variants" and (not value or any(v not in VARIANTS for v in value)):
        fail(f"a non-empty list of {', '.join(VARIANTS)}")
    if key in ("max_images", "n_per_class", "n_iters") and (
        isinstance(value, bool) or not isinstance(value, int) or value < 1
    ):
        fail("a positive integer")


def _check_parameters(where: str, params: Any, defaults: dict[str, Any], notebook: str) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ReportSpecError(f"{where}: 'parameters' must be a mapping, got {type(params).__name__}")
    for key, value in params.items():
        if key in INJECTED:
            raise ReportSpecError(f"{where}: parameter {key!r} is set by the report runner, not by a definition")
        if key not in defaults:
            raise ReportSpecError(
                f"{where}: {notebook} has no parameter {key!r}; its parameters are "
                f"{', '.join(k for k in defaults if k not in INJECTED)}"
            )
        _check_value(where, key, value, defaults[key])
    return dict(params)


def _combination_name(notebook: str, combination: dict[str, Any]) -> str:
    if not combination:
        return notebook
    parts = []
    for key, value in combination.items():
        text = "-".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{key}-{text}")
    name = re.sub(r"[^0-9A-Za-z_.-]+", "-", f"{notebook}__{'_'.join(parts)}")
    if len(name) > 120:  # keep file names short; the hash keeps them unique
        digest = hashlib.sha1(json.dumps(combination, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{name[:100]}-{digest}"
    return name


def _refuse_unknown_keys(where: str, mapping: dict, allowed: set[str]) -> None:
    """Name the first key of ``mapping`` outside ``allowed`` (a typo must not be silently ignored)."""
    unknown = set(mapping) - allowed
    if unknown:
        raise ReportSpecError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}")


def load_plan(definition: Path, notebooks_dir: Path, grid: Path | None = None) -> ReportPlan:
    """Parse and validate a report definition (and optional grid file) into jobs in dependency order."""
    definition = Path(definition)
    raw = _load_yaml(definition)
    if not isinstance(raw, dict):
        raise ReportSpecError(f"{definition}: expected a mapping with keys preset, notebooks")
    _refuse_unknown_keys(str(definition), raw, _DEF_KEYS)
    preset = raw.get("preset")
    embedded = [name for name, p in TRAINING_PRESETS.items() if p.data in EMBEDDED_DATA]
    if preset not in embedded:
        raise ReportSpecError(
            f"{definition}: 'preset' must be one of {', '.join(embedded)} (the training presets "
            f"on the embedded data), got {preset!r}"
        )
    data_seed = raw.get("data_seed", 0)
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise ReportSpecError(f"{definition}: 'data_seed' must be a non-negative integer, got {data_seed!r}")
    entries = raw.get("notebooks")
    if not isinstance(entries, list) or not entries:
        raise ReportSpecError(f"{definition}: 'notebooks' must be a non-empty list")

    jobs: list[Job] = []
    seen: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        where = f"{definition}: notebooks[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise ReportSpecError(f"{where}: expected a mapping with a 'name'")
        _refuse_unknown_keys(where, entry, _NB_KEYS)
        name = entry["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ReportSpecError(f"{where}: 'name' must be a notebook name like 01_train_and_compare, got {name!r}")
        if name in seen:
            raise ReportSpecError(f"{where}: notebook {name!r} is listed twice")
        path = notebooks_dir / f"{name}.ipynb"
        if not path.is_file():
            raise ReportSpecError(f"{where}: no notebook {path}")
        defaults = notebook_parameters(path)
        missing = [k for k in INJECTED if k not in defaults]
        if missing:
            raise ReportSpecError(f"{path}: its parameters cell must define {', '.join(missing)}")
        params = _check_parameters(f"{where} ({name})", entry.get("parameters"), defaults, name)
        needs = entry.get("needs") or []
        if not isinstance(needs, list) or any(not isinstance(n, str) or n not in seen for n in needs):
            raise ReportSpecError(f"{where}: 'needs' must list notebooks defined above it, got {needs!r}")
        seen[name] = defaults
        jobs.append(Job(name=name, notebook=name, parameters=params, needs=list(needs)))

    plan = ReportPlan(preset=preset, data_seed=data_seed, jobs=jobs, definition=definition)
    if grid is not None:
        plan.grid = Path(grid)
        plan.jobs = _expand_grid(plan.jobs, Path(grid), seen)
    return plan


def _expand_grid(jobs: list[Job], grid_path: Path, defaults_by_notebook: dict[str, dict]) -> list[Job]:
    raw = _load_yaml(grid_path)
    if not isinstance(raw, dict):
        raise ReportSpecError(f"{grid_path}: expected a mapping with keys notebook, grid")
    _refuse_unknown_keys(str(grid_path), raw, _GRID_KEYS)
    notebook = raw.get("notebook")
    if notebook not in defaults_by_notebook:
        raise ReportSpecError(
            f"{grid_path}: 'notebook' must be one of the report's notebooks "
            f"({', '.join(defaults_by_notebook)}), got {notebook!r}"
        )
    defaults = defaults_by_notebook[notebook]
    fixed = _check_parameters(f"{grid_path}: parameters", raw.get("parameters"), defaults, notebook)
    axes = raw.get("grid")
    if not isinstance(axes, dict) or not axes:
        raise ReportSpecError(f"{grid_path}: 'grid' must be a non-empty mapping of parameter -> list of values")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ReportSpecError(f"{grid_path}: grid.{key} must be a non-empty list of values")
        for value in values:
            _check_parameters(f"{grid_path}: grid.{key}", {key: value}, defaults, notebook)
    expanded: list[Job] = []
    for job in jobs:
        if job.notebook != notebook:
            expanded.append(job)
            continue
        keys = list(axes)
        for values in itertools.product(*(axes[k] for k in keys)):
            combination = dict(zip(keys, values))
            params = {**job.parameters, **fixed, **combination}
            expanded.append(
                Job(
                    name=_combination_name(notebook, combination),
                    notebook=notebook,
                    parameters=params,
                    needs=list(job.needs),
                    combination=combination,
                )
            )
    names = [j.name for j in expanded]
    if len(set(names)) != len(names):
        raise ReportSpecError(f"{grid_path}: two grid combinations give the same job name; use distinct values")
    return expanded
