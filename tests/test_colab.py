"""Colab readiness: badges and setup cells from one source, and the setup cell on a simulated Colab."""

import os
import subprocess
import sys

import nbformat
import pytest

from tests.support import NOTEBOOKS, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import sync_notebooks  # noqa: E402

PRETEND_COLAB = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"


def test_notebooks_are_in_sync_with_the_one_repository_address():
    result = subprocess.run([sys.executable, "tools/sync_notebooks.py", "--check"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_badge_setup_cell_and_gpu_metadata(path):
    repo, ref = sync_notebooks.repo_and_ref()
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].source.startswith(sync_notebooks.badge(repo, ref, path.name))
    setup = next(c for c in notebook.cells if c.cell_type == "code")
    assert setup.source.startswith(sync_notebooks.setup_template())
    assert "pip install" not in setup.source, "never reinstall torch or ipywidgets on Colab"
    assert notebook.metadata["accelerator"] == "GPU"


def _run_setup(cwd, prefix="", env=None):
    code = prefix + sync_notebooks.setup_template() + "print(describe_environment())\n"
    code += "import helpers; print('helpers from', helpers.__file__)\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_setup_cell_locally_uses_this_checkout_and_clones_nothing(tmp_path):
    before = set(os.listdir(REPO_ROOT / "notebooks"))
    result = _run_setup(REPO_ROOT / "notebooks")
    assert result.returncode == 0, result.stderr
    assert f"helpers from {REPO_ROOT / 'helpers'}" in result.stdout
    assert "torch " in result.stdout and "device: " in result.stdout
    assert set(os.listdir(REPO_ROOT / "notebooks")) == before


def test_setup_cell_on_colab_clones_the_pinned_branch(tmp_path):
    """Colab opens one notebook in /content, without the repository: the cell must fetch it.

    GitHub is out of reach here, so git is told to read github.com from a local mirror
    of this repository; the google.colab module is the marker Colab's kernel imports.
    """
    repo, ref = sync_notebooks.repo_and_ref()
    mirror = tmp_path / "mirror"
    bare = mirror / f"{repo}.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(REPO_ROOT), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "branch", "--force", ref, "HEAD"], check=True,
                   capture_output=True)
    content = tmp_path / "content"
    content.mkdir()
    redirect = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{mirror}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/"}
    result = _run_setup(content, PRETEND_COLAB, redirect)
    assert result.returncode == 0, result.stderr
    assert f"helpers from {content / 'cnn-hooks-lab' / 'helpers'}" in result.stdout
    assert "Runtime > Change runtime type" in result.stdout  # no GPU here: say how to get one
    again = _run_setup(content, PRETEND_COLAB, redirect)  # re-run: reuse the clone
    assert again.returncode == 0, again.stderr
