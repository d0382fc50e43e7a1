"""Keep every notebook's Colab badge, setup cell and Colab metadata in line with one source.

The repository address and branch live in one place: the ``REPO, REF = ...`` line of
tools/setup_cell.py. A fork edits that line, then runs

    python tools/sync_notebooks.py          # rewrite the notebooks and README links
    python tools/sync_notebooks.py --check  # exit 1 if anything is out of date (the tests do this)

Each notebook's setup cell is folded away (JupyterLab ``source_hidden``, Colab
``cellView: form``), tagged ``nbval-ignore-output``, and holds the template (everything in setup_cell.py up to and
including the ``from helpers.environment import ...`` line) followed by the
notebook's own lines, which are kept.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_FILE = ROOT / "tools" / "setup_cell.py"
TEMPLATE_END = "from helpers.environment import describe_environment  # noqa: E402\n"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
IGNORE_TAG = "nbval-ignore-output"
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w./-]+?/notebooks/")


def repo_and_ref() -> tuple[str, str]:
    match = re.search(r'^REPO, REF = "([^"]+)", "([^"]+)"', TEMPLATE_FILE.read_text(), re.M)
    if not match:
        raise SystemExit(f"{TEMPLATE_FILE}: no line `REPO, REF = \"owner/name\", \"branch\"`")
    return match.group(1), match.group(2)


def setup_template() -> str:
    text = TEMPLATE_FILE.read_text()
    return text[: text.index(TEMPLATE_END) + len(TEMPLATE_END)]


def colab_url(repo: str, ref: str, notebook: str = "") -> str:
    return f"https://colab.research.google.com/github/{repo}/blob/{ref}/notebooks/{notebook}"


def badge(repo: str, ref: str, notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo, ref, notebook)})"


def synced(notebook, name: str, repo: str, ref: str):
    """The notebook with its badge, setup cell and metadata brought up to date (in place)."""
    first = notebook.cells[0]
    lines = first.source.splitlines()
    if lines and lines[0].startswith("[![Open In Colab]"):
        lines = lines[1:]
    first.source = "\n".join([badge(repo, ref, name), *lines])

    setup = next(c for c in notebook.cells if c.cell_type == "code")
    source = setup.source + ("\n" if not setup.source.endswith("\n") else "")
    tail = source[source.index(TEMPLATE_END) + len(TEMPLATE_END):] if TEMPLATE_END in source else source
    setup.source = (setup_template() + tail).rstrip("\n")
    # Students see one title line, not the machinery: folded in JupyterLab, a form on Colab.
    setup.metadata.setdefault("jupyter", {})["source_hidden"] = True
    setup.metadata["cellView"] = "form"
    tags = setup.metadata.setdefault("tags", [])
    if IGNORE_TAG not in tags:  # it prints versions and the device
        tags.append(IGNORE_TAG)

    notebook.metadata["accelerator"] = "GPU"
    notebook.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    return notebook


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, don't write")
    args = parser.parse_args(argv)
    repo, ref = repo_and_ref()
    stale = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        before = path.read_text()
        notebook = synced(nbformat.reads(before, as_version=4), path.name, repo, ref)
        after = nbformat.writes(notebook)
        after += "" if after.endswith("\n") else "\n"  # as nbformat.write() saves it
        if after != before:
            stale.append(path.name)
            if not args.check:
                path.write_text(after)
    readme = ROOT / "README.md"
    if readme.exists():
        text = readme.read_text()
        new = COLAB_LINK.sub(colab_url(repo, ref), text)
        if new != text:
            stale.append("README.md")
            if not args.check:
                readme.write_text(new)
    verb = "out of date" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else f"all in line with {repo}@{ref}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
