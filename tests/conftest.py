"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def quick_dataset(tmp_path_factory):
    """The embedded data set, preset "quick", seed 0, generated once per test session (~1 s).

    Treat it as read-only: several tests share it.
    """
    from gmmseg_lab.data.scenes import make_dataset

    return make_dataset(tmp_path_factory.mktemp("quick") / "set", preset="quick", seed=0, progress=False)


@pytest.fixture(scope="module")
def single_thread_torch():
    """Single-threaded torch for a module: the models under test are tiny, and on a shared 2-core
    machine OpenMP threads competing with another process make many small ops far slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory):
    """The quick report (every notebook, executed by papermill), built once per test session.

    Returns the :class:`gmmseg_lab.report.runner.ReportRunner` after ``run()``; its ``out`` folder holds
    ``index.html``, ``summary.json``, ``html/``, ``notebooks/`` and ``work/`` (data and trained runs).
    Set ``GMMSEG_LAB_TEST_REPORT=DIR`` to reuse (and keep) a report folder between sessions.
    """
    import os
    from pathlib import Path

    from gmmseg_lab.report.runner import ReportRunner

    out = os.environ.get("GMMSEG_LAB_TEST_REPORT")
    out = Path(out) if out else tmp_path_factory.mktemp("report") / "quick"
    runner = ReportRunner(out, preset="quick", progress=False)
    runner.summary = runner.run()
    return runner
