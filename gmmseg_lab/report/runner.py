"""``gmmseg-lab report``: execute the lab's notebooks with papermill into a browsable report.

The runner (1) validates the report definition and grid before any work, (2) makes the embedded data
set, (3) executes every job (notebook x parameter combination) in dependency order, up to ``jobs`` at a
time, each in its own subprocess with ``OMP_NUM_THREADS = cores // jobs`` (so parallel notebooks do not
oversubscribe the cores), and (4) writes ``index.html`` and ``summary.json``.

Output folder::

    DIR/index.html  DIR/summary.json
    DIR/notebooks/<job>.ipynb   DIR/html/<job>.html          executed notebook and its page
    DIR/jobs/<job>/{status,results,outcome,spec}.json, runs_used.jsonl, log.txt
    DIR/work/data               the generated data set
    DIR/work/runs/<run>         trained models (shared by the notebooks: trained once)

Resumable: a job whose notebook, parameters and library code are unchanged since it last succeeded,
and whose trained runs are all still there unchanged, is reused (its key is a hash of the first three;
``jobs/<job>/runs_used.jsonl`` lists the runs); a training run interrupted inside a notebook resumes
from its last checkpoint. A failing notebook is marked failed with its error; jobs that need it are skipped;
every other job still runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..catalog import embedded_data
from ..experiments.runs import RUNS_USED_ENV, ensure_dataset, runs_unchanged
from ..io_utils import atomic_write_json, source_digest, usable_cpus
from .index import write_index
from .results import aggregate, read_results
from .spec import Job, ReportPlan, ReportSpecError, load_plan

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PACKAGE_DIR.parent
#: Per job: the trained runs its notebook used (written by :func:`gmmseg_lab.experiments.runs.note_run_used`).
RUNS_USED_FILE = "runs_used.jsonl"


def default_notebooks_dir() -> Path:
    return REPO_DIR / "notebooks"


def default_definitions_dir() -> Path:
    return REPO_DIR / "reports"


def code_fingerprint() -> str:
    """Hash of the library's code and shipped configs: a change invalidates every cached job."""
    return source_digest(PACKAGE_DIR, suffixes=(".py", ".j2", ".json"))


def _inside(root: Path, path: Path) -> Path:
    """``path`` resolved, refusing anything that escapes ``root`` (job names come from files)."""
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ReportSpecError(f"{path}: outside the output folder {root}")
    return resolved


@dataclass
class JobState:
    job: Job
    status: str = "pending"  # pending | running | ok | reused | failed | skipped
    error: str | None = None
    seconds: float = 0.0
    key: str = ""


class ReportRunner:
    """Plans and executes one report build; see the module docstring."""

    def __init__(
        self,
        out: str | Path,
        preset: str = "quick",
        grid: str | Path | None = None,
        jobs: int = 1,
        notebooks_dir: str | Path | None = None,
        definitions_dir: str | Path | None = None,
        progress: bool = True,
        timeout: int | None = None,
    ):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ReportSpecError(f"--jobs must be a positive integer, got {jobs!r}")
        self.out = Path(out).expanduser().resolve()
        self.notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
        self.definitions_dir = Path(definitions_dir or default_definitions_dir()).resolve()
        if not self.notebooks_dir.is_dir():
            raise ReportSpecError(f"{self.notebooks_dir}: no notebooks folder (pass --notebooks DIR)")
        definition = self.definitions_dir / "presets" / f"{preset}.yaml"
        if not definition.is_file():
            known = sorted(p.stem for p in (self.definitions_dir / "presets").glob("*.yaml"))
            raise ReportSpecError(f"--preset {preset!r}: no report definition {definition}; known: {', '.join(known)}")
        # Everything is validated here, before any work.
        self.plan: ReportPlan = load_plan(definition, self.notebooks_dir, Path(grid) if grid else None)
        self.jobs = jobs
        self.progress = progress
        self.timeout = timeout
        self.states = {job.name: JobState(job) for job in self.plan.jobs}
        self._check_existing_data()

    def _check_existing_data(self) -> None:
        """An ``--out`` that already holds another preset's or seed's data set is refused before any work."""
        meta = self.data_dir / "meta.json"
        if not meta.is_file():
            return
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError) as err:
            raise ReportSpecError(f"{meta}: unreadable ({err}); choose another --out") from err
        data = embedded_data(self.plan.preset)
        if (info.get("preset"), info.get("seed")) != (data, self.plan.data_seed):
            raise ReportSpecError(
                f"--out {self.out}: its data set {self.data_dir} was made with preset {info.get('preset')!r} "
                f"seed {info.get('seed')}, this report needs preset {data!r} seed "
                f"{self.plan.data_seed}; choose another --out"
            )

    # ------------------------------------------------------------------ paths
    @property
    def work_dir(self) -> Path:
        return self.out / "work"

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    def job_dir(self, job: Job) -> Path:
        return _inside(self.out, self.out / "jobs" / job.name)

    def notebook_out(self, job: Job) -> Path:
        return _inside(self.out, self.out / "notebooks" / f"{job.name}.ipynb")

    def html_out(self, job: Job) -> Path:
        return _inside(self.out, self.out / "html" / f"{job.name}.html")

    # ------------------------------------------------------------------ one job
    def _parameters(self, job: Job) -> dict:
        return {
            **job.parameters,
            "work_dir": str(self.work_dir),
            "data_dir": str(self.data_dir),
            "preset": self.plan.preset,
            "data_seed": self.plan.data_seed,
            "results_path": str(self.job_dir(job) / "results.json"),
            "live": False,
        }

    def _key(self, job: Job, params: dict, fingerprint: str) -> str:
        nb = (self.notebooks_dir / f"{job.notebook}.ipynb").read_bytes()
        blob = json.dumps({"params": params, "code": fingerprint, "nb": hashlib.sha256(nb).hexdigest()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cached(self, job: Job, key: str) -> bool:
        """Same key, finished ok, pages there, and every trained run it used still as it was."""
        status = read_results(self.job_dir(job) / "status.json")
        return bool(
            status
            and status.get("key") == key
            and status.get("status") == "ok"
            and self.notebook_out(job).is_file()
            and self.html_out(job).is_file()
            and runs_unchanged(self.job_dir(job) / RUNS_USED_FILE)
        )

    def _run_job(self, job: Job, fingerprint: str, threads: int) -> JobState:
        state = self.states[job.name]
        job_dir = self.job_dir(job)
        job_dir.mkdir(parents=True, exist_ok=True)
        params = self._parameters(job)
        state.key = self._key(job, params, fingerprint)
        if self._cached(job, state.key):
            previous = read_results(job_dir / "status.json") or {}
            state.status, state.seconds = "reused", float(previous.get("seconds", 0.0))
            return state
        # Nothing of an earlier execution may pass for this one's (a failed run must not show an old page).
        for stale in (
            job_dir / "results.json",
            job_dir / "outcome.json",
            job_dir / RUNS_USED_FILE,
            self.notebook_out(job),
            self.html_out(job),
        ):
            stale.unlink(missing_ok=True)
        atomic_write_json(job_dir / "status.json", {"status": "running", "key": state.key, "job": job.name})
        spec = {
            "input": str(self.notebooks_dir / f"{job.notebook}.ipynb"),
            "output": str(self.notebook_out(job)),
            "html": str(self.html_out(job)),
            "outcome": str(job_dir / "outcome.json"),
            "parameters": params,
            "cwd": str(job_dir),
            "timeout": self.timeout,
        }
        atomic_write_json(job_dir / "spec.json", spec)
        self.notebook_out(job).parent.mkdir(parents=True, exist_ok=True)
        self.html_out(job).parent.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            PYTHONUNBUFFERED="1",
            **{RUNS_USED_ENV: str(job_dir / RUNS_USED_FILE)},
        )
        start = time.time()
        with open(job_dir / "log.txt", "w", encoding="utf-8") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "gmmseg_lab.report._execute", str(job_dir / "spec.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(job_dir),
            )
        outcome = read_results(job_dir / "outcome.json")
        if outcome is None:
            tail = (job_dir / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
            outcome = {"status": "failed", "error": f"executor exited with {proc.returncode}: " + " | ".join(tail)}
        state.status = "ok" if outcome.get("status") == "ok" else "failed"
        state.error = outcome.get("error")
        state.seconds = round(time.time() - start, 1)
        atomic_write_json(
            job_dir / "status.json",
            {
                "status": state.status,
                "key": state.key,
                "job": job.name,
                "error": state.error,
                "seconds": state.seconds,
                "parameters": job.parameters,
            },
        )
        return state

    # ------------------------------------------------------------------ the build
    def _blocked_by(self, job: Job) -> str | None:
        for need in job.needs:
            for state in self.states.values():
                if state.job.notebook == need and state.status in ("failed", "skipped"):
                    return state.job.name
        return None

    def _ready(self, job: Job) -> bool:
        return all(s.status in ("ok", "reused") for s in self.states.values() if s.job.notebook in job.needs)

    def run(self) -> dict:
        """Build the report; returns the summary (also written to ``summary.json``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        ensure_dataset(self.data_dir, self.plan.preset, self.plan.data_seed)
        fingerprint = code_fingerprint()
        threads = max(1, usable_cpus() // self.jobs)
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # a cap the user set is kept
            threads = max(1, min(threads, int(os.environ["OMP_NUM_THREADS"])))
        bar = tqdm(
            total=len(self.states), desc=f"report {self.plan.preset}", unit="notebook", disable=not self.progress
        )
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while True:
                for state in self.states.values():
                    if state.status != "pending":
                        continue
                    blocker = self._blocked_by(state.job)
                    if blocker is not None:
                        state.status, state.error = "skipped", f"needs {blocker}, which did not succeed"
                        bar.update(1)
                        bar.write(f"  skipped  {state.job.name}: {state.error}")
                    elif self._ready(state.job) and len(running) < self.jobs:
                        state.status = "running"
                        running[pool.submit(self._run_job, state.job, fingerprint, threads)] = state.job.name
                        bar.set_postfix_str(", ".join(sorted(running.values())))
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    state = self.states[name]
                    try:
                        future.result()
                    except Exception as err:  # a bug in the runner itself: record, go on
                        state.status, state.error = "failed", f"{type(err).__name__}: {err}"
                    bar.update(1)
                    line = f"  {state.status:8s} {name} ({state.seconds:.0f} s)"
                    bar.write(line + (f": {state.error}" if state.error else ""))
                bar.set_postfix_str(", ".join(sorted(running.values())))
        bar.close()
        return self.write_outputs()

    def write_outputs(self) -> dict:
        results = {}
        for name, state in self.states.items():
            if state.status in ("ok", "reused"):
                res = read_results(self.job_dir(state.job) / "results.json")
                if res is not None:
                    results[name] = {"notebook": state.job.notebook, "combination": state.job.combination, **res}
        summary = {
            "preset": self.plan.preset,
            "data_seed": self.plan.data_seed,
            "definition": str(self.plan.definition),
            "grid": str(self.plan.grid) if self.plan.grid else None,
            "jobs": {
                name: {
                    "notebook": s.job.notebook,
                    "status": s.status,
                    "error": s.error,
                    "seconds": s.seconds,
                    "parameters": s.job.parameters,
                    "html": f"html/{name}.html" if self.html_out(s.job).is_file() else None,
                    "notebook_file": f"notebooks/{name}.ipynb" if self.notebook_out(s.job).is_file() else None,
                }
                for name, s in self.states.items()
            },
            "groups": aggregate(results),
            "extra": {name: r.get("extra", {}) for name, r in results.items()},
        }
        atomic_write_json(self.out / "summary.json", summary)
        write_index(self.out / "index.html", summary)
        return summary

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.states.items() if s.status in ("failed", "skipped")]


def build_report(
    out: str | Path,
    preset: str = "quick",
    grid: str | Path | None = None,
    jobs: int = 1,
    notebooks_dir: str | Path | None = None,
    definitions_dir: str | Path | None = None,
    progress: bool = True,
    timeout: int | None = None,
) -> tuple[dict, list[str]]:
    """Build a report (see :class:`ReportRunner`); returns ``(summary, failed job names)``."""
    runner = ReportRunner(
        out,
        preset=preset,
        grid=grid,
        jobs=jobs,
        notebooks_dir=notebooks_dir,
        definitions_dir=definitions_dir,
        progress=progress,
        timeout=timeout,
    )
    summary = runner.run()
    return summary, runner.failed
