"""The test suite's own machinery: when CI counts as set, and no temporary folder left behind."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, ci_is_set


@pytest.mark.parametrize(("value", "is_set"), [
    ("true", True), ("1", True), ("yes", True), ("TRUE", True), ("GitHub Actions", True),
    ("", False), (" ", False), ("0", False), ("false", False), ("False", False), ("no", False),
])
def test_ci_is_set(monkeypatch, value, is_set):
    monkeypatch.setenv("CI", value)
    assert ci_is_set() is is_set


def test_ci_is_not_set_without_the_variable(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert ci_is_set() is False


def test_the_isolated_environment_is_removed_when_the_process_ends():
    code = "from tests.support import isolate_environment; s = isolate_environment(); print(s); print(s.is_dir())"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    scratch, existed = run.stdout.split()
    assert existed == "True" and Path(scratch).name.startswith("cnn-hooks-lab-")
    assert not Path(scratch).exists(), f"{scratch} was left behind"
