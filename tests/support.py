"""Shared by the test suite and tools/execute_notebooks.py: an isolated environment and a notebook runner."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.-]+/){2,}|site-packages/")


def output_problems(notebook) -> list[str]:
    """What nbval or a reader would trip over in stored outputs: errors, stderr, paths of this machine."""
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                problems.append(f"cell {index}: error output {output.get('ename')}")
            text = "".join(output.get("text", "")) + "".join(
                str(v) for k, v in output.get("data", {}).items() if k.startswith("text/")
            )
            if output.get("name") == "stderr":
                problems.append(f"cell {index}: writes to stderr: {text[:120]!r}")
            match = MACHINE_PATH.search(text)
            if match:
                problems.append(f"cell {index}: shows a path of this machine {match.group(0)!r}")
    return problems


def ci_is_set() -> bool:
    """True when the CI variable is set (to anything but "", "0", "false" or "no").

    Under CI a check that cannot run must fail, not skip: a skipped check would pass unseen.
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def isolate_environment(scratch: Path | None = None) -> Path:
    """Point every per-user folder that Jupyter, IPython and matplotlib write to at a temp folder.

    Also forbids weight downloads (CNN_HOOKS_LAB_OFFLINE=1): tests must never touch the network,
    and their stored outputs must not depend on whether a download happened. A temp folder made
    here is removed when the process exits (the kernels it served have ended by then).
    """
    if scratch is None:
        scratch = Path(tempfile.mkdtemp(prefix="cnn-hooks-lab-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    scratch = Path(scratch)
    folders = {
        "IPYTHONDIR": "ipython",
        "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
        "JUPYTER_DATA_DIR": "jupyter-data",
        "MPLCONFIGDIR": "matplotlib",
        "TORCH_HOME": "torch",
        "TORCHINDUCTOR_CACHE_DIR": "torchinductor",  # torch makes it on import, in the system temp folder
    }
    for variable, name in folders.items():
        (scratch / name).mkdir(parents=True, exist_ok=True)
        os.environ[variable] = str(scratch / name)
    os.environ["CNN_HOOKS_LAB_OFFLINE"] = "1"
    os.environ.pop("CNN_HOOKS_LAB_WEIGHTS", None)  # a teacher's shared checkpoint must not change stored outputs
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugger note in kernels
    # Build matplotlib's font cache now, so no kernel prints "building the font cache".
    import matplotlib.font_manager  # noqa: F401

    return scratch


def write_stand_in_checkpoint(path: Path, seed: int = 1) -> Path:
    """Save a ResNet34 state dict (seeded random values) where a pretrained checkpoint would be.

    Loaded through CNN_HOOKS_LAB_WEIGHTS it makes the notebooks take their ``if pretrained:``
    branches offline. Its values mean nothing: check that cells run, not what they print.
    """
    import torch
    from torchvision.models import resnet34

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.save(resnet34(weights=None).state_dict(), path)
    return path


def execute_notebook(path: Path, timeout: int = 600):
    """Run a notebook top to bottom in a fresh kernel, in its own folder; return the executed node."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook
