"""Test-session setup shared by the unit tests and nbval's notebook runs."""

import pytest

from tests.support import isolate_environment

# Before any kernel starts: nothing is written to the home folder, nothing is downloaded.
isolate_environment()


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may not be installed
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist, keep each notebook's nbval cells together, in order, on one worker: they share one
    kernel. Every other test is scheduled on its own, so the long notebook tests spread over the workers."""
    from xdist.scheduler import LoadScopeScheduling

    class OneNotebookPerWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path.endswith(".ipynb") else nodeid

    return OneNotebookPerWorker(config, log)
