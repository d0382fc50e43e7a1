"""Every notebook: committed in a clean state, quick, and safe to run twice in one kernel.

nbval (configured in pytest.ini) re-executes each notebook and compares its stored
text outputs; these tests cover what nbval does not.
"""

import json
import time

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support import NOTEBOOKS, output_problems

NOTEBOOK_IDS = [p.name for p in NOTEBOOKS]
IGNORE_TAG = "nbval-ignore-output"


def test_the_tutorials_are_there():
    names = [p.name for p in NOTEBOOKS]
    assert names[:3] == ["01_hook_types.ipynb", "02_resnet34_conv_layers.ipynb", "03_feature_maps.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_committed_state_is_clean(path):
    notebook = json.loads(path.read_text())
    assert "widgets" not in notebook["metadata"], "strip metadata.widgets before committing"
    counts = [c["execution_count"] for c in notebook["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), "execute top to bottom in a fresh kernel"
    assert output_problems(notebook) == []
    # Test machinery stays out of students' sight: nbval cell tags, not comments in the code.
    marked = [i for i, c in enumerate(notebook["cells"]) if "NBVAL_" in "".join(c["source"])]
    assert marked == [], f"cells {marked} show an NBVAL comment; use the nbval-* cell tag instead"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_runs_quickly_and_survives_running_every_cell_twice(path):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    code_cells = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    with client.setup_kernel():
        start = time.perf_counter()
        for index, cell in code_cells:
            client.execute_cell(cell, index)
        first_pass = time.perf_counter() - start
        first_outputs = [_text_outputs(c) for _, c in code_cells]
        for index, cell in code_cells:  # a second "Run All" in the same kernel
            client.execute_cell(cell, index)
    second_outputs = [_text_outputs(c) for _, c in code_cells]
    print(f"{path.name}: first pass {first_pass:.1f} s")
    assert first_pass < 30, f"{path.name} took {first_pass:.1f} s; the budget is 30 s"
    for (index, cell), before, after in zip(code_cells, first_outputs, second_outputs):
        if IGNORE_TAG in cell.metadata.get("tags", []):
            continue
        assert after == before, f"cell {index} printed something else on the second run (stale state?)"


def _text_outputs(cell) -> list[str]:
    """The cell's text, with consecutive stream chunks joined (how a stream is split is timing)."""
    texts: list[str] = []
    previous_stream = None
    for output in cell.outputs:
        if output.output_type == "stream":
            if output.name == previous_stream:
                texts[-1] += output.text
            else:
                texts.append(output.text)
            previous_stream = output.name
            continue
        previous_stream = None
        if "text/plain" in output.get("data", {}):
            texts.append(output["data"]["text/plain"])
    return texts
