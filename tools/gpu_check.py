"""One-shot check of the CUDA path on a GPU machine: unit tests and every notebook, with times.

Usage (on the GPU machine, from the repository root, after installing requirements-test.txt):
    python tools/gpu_check.py [--report FILE]

Runs tests/test_cuda.py (and the rest of the unit tests) on CUDA, then executes every
notebook in a fresh kernel on copies in a temp folder (the committed ones are not touched)
and prints one line per notebook: time, and the first error if it failed. Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import NOTEBOOKS, execute_notebook, isolate_environment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    parser.add_argument("--allow-cpu", action="store_true", help="run even without CUDA (dry run)")
    args = parser.parse_args()

    import torch

    lines = [f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"]
    if torch.cuda.is_available():
        lines.append(f"device: {torch.cuda.get_device_name(0)}")
    elif not args.allow_cpu:
        print("No CUDA device: this script checks the GPU path (use --allow-cpu for a dry run).")
        return 2
    print(lines[-1], flush=True)

    failures = 0
    start = time.perf_counter()
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:nbval", "-o", "addopts=",
         "tests/test_cuda.py", "tests/test_hooks.py", "tests/test_models.py", "tests/test_viz.py"],
        cwd=ROOT, capture_output=True, text=True,
    )
    summary = [line for line in tests.stdout.splitlines() if line.strip()][-1:]
    lines.append(f"unit tests ({time.perf_counter() - start:.0f} s): {' '.join(summary)}")
    failures += tests.returncode != 0
    if tests.returncode:
        lines.append(tests.stdout[-3000:])
    print(lines[-1], flush=True)

    isolate_environment()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__"))
        for notebook in NOTEBOOKS:
            start = time.perf_counter()
            try:
                executed = execute_notebook(copy / "notebooks" / notebook.name)
                device_lines = [
                    "".join(o.get("text", "")) for c in executed.cells[:3] for o in c.get("outputs", [])
                ]
                on_cuda = any("device: cuda" in text for text in device_lines)
                lines.append(f"{notebook.name}: ok in {time.perf_counter() - start:.1f} s"
                             f"{'' if on_cuda else ' (setup cell did not report cuda!)'}")
                failures += not on_cuda and torch.cuda.is_available()
            except Exception as error:  # report every notebook, not just the first failure
                failures += 1
                lines.append(f"{notebook.name}: FAILED after {time.perf_counter() - start:.1f} s: "
                             f"{traceback.format_exception_only(error)[-1].strip()[:2000]}")
            print(lines[-1], flush=True)

    lines.append("RESULT: " + ("all passed" if failures == 0 else f"{failures} failure(s)"))
    print(lines[-1])
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
