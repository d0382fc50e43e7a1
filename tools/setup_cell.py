#@title Setup: run this cell first (it makes `helpers` importable; on Colab it fetches the repository)
import subprocess
import sys
from pathlib import Path

REPO, REF = "cnn-hooks-lab/cnn-hooks-lab", "main"  # written by tools/sync_notebooks.py


def find_repo_root() -> Path:
    """The folder holding helpers/: this notebook's repository, or a fresh clone on Colab."""
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "helpers" / "__init__.py").is_file():
            return folder
    if "google.colab" in sys.modules:  # Colab opened this one notebook, not the repository
        clone = Path.cwd() / "cnn-hooks-lab"  # /content/cnn-hooks-lab on Colab
        if not clone.exists():
            subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", REF,
                            f"https://github.com/{REPO}.git", str(clone)], check=True)
        return clone
    raise FileNotFoundError("helpers/ not found: open this notebook from inside the cnn-hooks-lab folder.")


repo_root = str(find_repo_root())
if repo_root not in sys.path:  # re-running this cell must not stack entries
    sys.path.insert(0, repo_root)
from helpers.environment import describe_environment  # noqa: E402

print(describe_environment())
