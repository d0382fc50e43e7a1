"""Every notebook: committed in a clean state, quick, and safe to run twice in one kernel.

nbval (configured in pytest.ini) re-executes each notebook as committed, offline, so with
seeded random weights, and compares its stored text outputs. The run-twice test here
covers the rest in the same two passes: the ``if pretrained:`` branches (a stand-in
checkpoint passed through CNN_HOOKS_LAB_WEIGHTS) and the folded exercise solutions
(substituted for the exercise cells, so their checks must pass).
"""

import json
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support import NOTEBOOKS, output_problems, write_stand_in_checkpoint

NOTEBOOK_IDS = [p.name for p in NOTEBOOKS]
IGNORE_TAG = "nbval-ignore-output"
SKIP_TAG = "nbval-skip"  # slow, optional cells (notebook 09's real Inductor compile): nbval skips them, so do we
EXERCISE_TAG = "exercise"
SOLUTION_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
NOT_DONE = "Not done yet"  # what helpers.exercises.unfinished() prints for a blank answer
FALLBACK_NOTICE = "NOTICE: pretrained ResNet34 weights unavailable"
WEIGHTS_ENV_VAR = "CNN_HOOKS_LAB_WEIGHTS"


def _is_exercise(cell) -> bool:
    return cell.cell_type == "code" and EXERCISE_TAG in cell.metadata.get("tags", [])


def solution_for(cells, index: int) -> str:
    """The ```python block of the first markdown cell with ``<details>`` after exercise cell ``index``.

    The search stops at the next exercise cell, so one exercise never borrows another's solution.
    """
    for cell in cells[index + 1:]:
        if _is_exercise(cell):
            break
        if cell.cell_type == "markdown" and "<details>" in cell.source:
            match = SOLUTION_BLOCK.search(cell.source)
            if match is None:
                raise ValueError(f"cell {index} is tagged {EXERCISE_TAG!r}, but its <details> cell has no "
                                 "```python block with the solution.")
            return match.group(1).rstrip("\n")
    raise ValueError(f"cell {index} is tagged {EXERCISE_TAG!r}, but no markdown cell with <details> and a "
                     "```python solution follows it (before the next exercise).")


def substitute_solutions(notebook) -> list[int]:
    """Replace every exercise cell's source by its folded solution; return the indices replaced."""
    replaced = []
    for index, cell in enumerate(notebook.cells):
        if _is_exercise(cell):
            cell.source = solution_for(notebook.cells, index)
            replaced.append(index)
    return replaced


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory):
    """A ResNet34 checkpoint of random values, loaded as if pretrained (see tests.support)."""
    path = write_stand_in_checkpoint(tmp_path_factory.mktemp("weights") / "stand_in_resnet34.pth")
    yield path
    path.unlink()


def test_the_tutorials_are_there():
    names = [p.name for p in NOTEBOOKS]
    assert names[:3] == ["01_hook_types.ipynb", "02_resnet34_conv_layers.ipynb", "03_feature_maps.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_committed_state_is_clean(path):
    notebook = json.loads(path.read_text())
    assert path.stat().st_size <= 2 * 1024**2, f"{path.name} is {path.stat().st_size / 1024**2:.2f} MB; the limit is 2 MB"
    assert "widgets" not in notebook["metadata"], "strip metadata.widgets before committing"
    counts = [c["execution_count"] for c in notebook["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), "execute top to bottom in a fresh kernel"
    assert output_problems(notebook) == []
    # Test machinery stays out of students' sight: nbval cell tags, not comments in the code.
    marked = [i for i, c in enumerate(notebook["cells"]) if "NBVAL_" in "".join(c["source"])]
    assert marked == [], f"cells {marked} show an NBVAL comment; use the nbval-* cell tag instead"
    shown = [i for i, c in enumerate(notebook["cells"]) if "fingerprint" in _visible_text(c).lower()]
    assert shown == [], f"cells {shown} show a fingerprint; put it in its own folded cell after the figure"
    for index, cell in enumerate(notebook["cells"]):
        if "nbval-check" in cell.get("metadata", {}).get("tags", []):  # folded in JupyterLab and on Colab
            assert _folded(cell) and cell["metadata"].get("cellView") == "form", f"cell {index} is not folded"
            assert "".join(cell["source"]).startswith("#@title "), f"cell {index}: Colab folds it only with a #@title"


def _folded(cell) -> bool:
    """A cell a student does not see: source and outputs collapsed in JupyterLab, form view on Colab."""
    jupyter = cell.get("metadata", {}).get("jupyter", {})
    return bool(jupyter.get("source_hidden") and jupyter.get("outputs_hidden"))


def _visible_text(cell) -> str:
    """What a student sees of a cell: its source unless folded away, its outputs unless collapsed."""
    jupyter = cell.get("metadata", {}).get("jupyter", {})
    texts = [] if jupyter.get("source_hidden") else ["".join(cell["source"])]
    for output in [] if jupyter.get("outputs_hidden") else cell.get("outputs", []):
        texts.append("".join(output.get("text", "")))
        texts.extend("".join(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(texts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_runs_quickly_with_pretrained_weights_and_solutions_and_survives_running_every_cell_twice(
    path, stand_in_weights, monkeypatch
):
    # The kernel inherits this process's environment when it starts: it loads the stand-in as
    # pretrained weights, so every `if pretrained:` branch runs (nbval covers the random-weights path).
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(stand_in_weights))
    # One thread per kernel: pytest-xdist runs several notebooks at once, and torch's threads of two kernels fighting
    # over the same cores spin, which multiplies the CPU time measured below (7.8 s alone became 38 s for 06).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    solved = substitute_solutions(notebook)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    code_cells = [(i, c) for i, c in enumerate(notebook.cells)
                  if c.cell_type == "code" and SKIP_TAG not in c.metadata.get("tags", [])]
    probe = nbformat.v4.new_code_cell(f"import os; print(os.environ.get({WEIGHTS_ENV_VAR!r}))")
    with client.setup_kernel():
        notebook.cells.append(probe)  # nbclient writes each executed cell back into the notebook
        client.execute_cell(probe, len(notebook.cells) - 1)
        notebook.cells.pop()
        assert _text_outputs(probe) == [f"{stand_in_weights}\n"], "the kernel did not get the stand-in checkpoint"
        cpu_before = _kernel_cpu_seconds(client, notebook)
        start = time.perf_counter()
        for index, cell in code_cells:  # raises CellExecutionError, with the traceback, if a cell fails
            client.execute_cell(cell, index)
        first_pass = time.perf_counter() - start
        first_pass_cpu = _kernel_cpu_seconds(client, notebook) - cpu_before
        first_outputs = [_text_outputs(c) for _, c in code_cells]
        first_problems = output_problems(notebook)  # stderr or paths of this machine, on the pretrained path
        for index, cell in code_cells:  # a second "Run All" in the same kernel
            client.execute_cell(cell, index)
    second_outputs = [_text_outputs(c) for _, c in code_cells]
    print(f"{path.name}: first pass {first_pass:.1f} s wall, {first_pass_cpu:.1f} s CPU in the kernel, "
          f"{len(solved)} exercise solutions substituted")
    # CPU time, not wall time: the suite runs notebooks in parallel (pytest-xdist), and a busy machine stretches the
    # wall clock without making the notebook any heavier.
    assert first_pass_cpu < 30, f"{path.name} used {first_pass_cpu:.1f} s of CPU; the budget is 30 s"
    assert first_problems == []
    for (index, cell), texts in zip(code_cells, first_outputs):
        text = "".join(texts)
        assert FALLBACK_NOTICE not in text, f"cell {index} fell back to random weights despite {WEIGHTS_ENV_VAR}"
        assert NOT_DONE not in text, f"cell {index}: the substituted solution left its exercise unfinished"
    for (index, cell), before, after in zip(code_cells, first_outputs, second_outputs):
        if IGNORE_TAG in cell.metadata.get("tags", []):
            continue
        assert after == before, f"cell {index} printed something else on the second run (stale state?)"


def _kernel_cpu_seconds(client, notebook) -> float:
    """CPU seconds the kernel process has used so far (all its threads), read by a throw-away cell."""
    probe = nbformat.v4.new_code_cell("import time as _t; print(repr(_t.process_time()))")
    notebook.cells.append(probe)  # nbclient writes the executed cell back into the notebook
    try:
        client.execute_cell(probe, len(notebook.cells) - 1)
    finally:
        notebook.cells.pop()
    return float("".join(_text_outputs(probe)))


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_exercises_are_committed_as_the_students_version_with_a_check_and_a_solution(path):
    cells = nbformat.read(path, as_version=4).cells
    for index, cell in enumerate(cells):
        if not _is_exercise(cell):
            continue
        assert "..." in cell.source, f"exercise cell {index} has no ...: commit the blank, not the solution"
        check = next((c for c in cells[index + 1:] if c.cell_type == "code"), None)
        assert check is not None and "unfinished(" in check.source, (
            f"the code cell after exercise cell {index} should check it with helpers.exercises.unfinished()")
        assert solution_for(cells, index) != cell.source.rstrip("\n")


def _notebook(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def _exercise(source):
    return nbformat.v4.new_code_cell(source, metadata={"tags": [EXERCISE_TAG]})


def _solution(code, opening="<details><summary>Solution</summary>"):
    return nbformat.v4.new_markdown_cell(f"{opening}\n\n```python\n{code}\n```\nWhy it works.\n</details>")


def test_substitute_solutions_puts_each_solution_in_its_exercise_cell():
    notebook = _notebook(
        _exercise("n = ..."),
        nbformat.v4.new_code_cell("if not unfinished(n=n):\n    assert n == 36"),
        nbformat.v4.new_markdown_cell("A hint, not a solution: ```python\nn = 0\n```"),
        _solution("n = 36\nprint(n)"),
        nbformat.v4.new_code_cell("untouched = ..."),
        _exercise("m = ..."),
        _solution("m = [x[..., 0] for x in xs]", opening="<details>"),
    )
    assert substitute_solutions(notebook) == [0, 5]
    assert notebook.cells[0].source == "n = 36\nprint(n)"
    assert notebook.cells[5].source == "m = [x[..., 0] for x in xs]"
    assert notebook.cells[4].source == "untouched = ..."


def test_an_exercise_without_its_own_solution_is_named():
    with pytest.raises(ValueError, match="cell 0 is tagged 'exercise', but no markdown cell with <details>"):
        substitute_solutions(_notebook(_exercise("a = ..."), _exercise("b = ..."), _solution("b = 1")))
    with pytest.raises(ValueError, match="cell 0 .* has no ```python block"):
        substitute_solutions(_notebook(_exercise("a = ..."), nbformat.v4.new_markdown_cell("<details>a = 1</details>")))
