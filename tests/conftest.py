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
