"""Execute notebooks top to bottom in a fresh kernel and save them with their outputs.

Usage: python tools/execute_notebooks.py [notebooks/03_feature_maps.ipynb ...]   (default: all)

Runs under the same isolated, offline environment as the tests, strips widget state
(nbval and readers do not need it), and reports anything nbval or a reader would trip over.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbformat  # noqa: E402

from tests.support import NOTEBOOKS, execute_notebook, isolate_environment, output_problems  # noqa: E402

def main(paths: list[str]) -> int:
    isolate_environment()
    targets = [Path(p).resolve() for p in paths] or NOTEBOOKS
    failed = 0
    for path in targets:
        start = time.perf_counter()
        notebook = execute_notebook(path)
        notebook.metadata.pop("widgets", None)
        nbformat.write(notebook, path)
        problems = output_problems(notebook)
        failed += bool(problems)
        print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
        for problem in problems:
            print(f"  PROBLEM {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
