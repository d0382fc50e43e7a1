"""The explorer on ipywidgets 7.7, the version Colab has shipped.

Builds a throwaway virtual environment that sees this environment's packages
through a .pth file but has ipywidgets 7.7.x installed over them, then runs the
widget unit tests and executes notebook 04 (nbval) there. Needs the package index.
"""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, ci_is_set


def _require(condition: bool, reason: str) -> None:
    if not condition:
        if ci_is_set():
            pytest.fail(f"CI must run this check: {reason}")
        pytest.skip(f"SKIPPED, NOT CHECKED: {reason}")


def test_widget_tests_and_notebook_04_pass_with_ipywidgets_7(tmp_path):
    venv = tmp_path / "ipywidgets7"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-cache-dir", "--quiet", "ipywidgets>=7.7,<7.8"],
        capture_output=True, text=True,
    )
    _require(install.returncode == 0, f"could not install ipywidgets 7.7 (offline?): {install.stderr[-500:]}")
    version = subprocess.run([python, "-c", "import ipywidgets; print(ipywidgets.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()
    assert version.startswith("7.7."), version
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "tests/test_widgets.py",
         "notebooks/04_feature_explorer.ipynb"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    print(run.stdout[-3000:])
    assert run.returncode == 0, f"with ipywidgets {version}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
