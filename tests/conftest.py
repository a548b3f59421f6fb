"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def quick_dataset(tmp_path_factory):
    """The embedded data set, preset "quick", seed 0, generated once per test session (~1 s).

    Treat it as read-only: several tests share it.
    """
    from gmmseg_lab.data.scenes import make_dataset

    return make_dataset(tmp_path_factory.mktemp("quick") / "set", preset="quick", seed=0, progress=False)
