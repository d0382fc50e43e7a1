"""docs/remote-kernels.md: linked from the README, and its constants are the code's."""

from helpers import explorer
from tests.support import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "remote-kernels.md"


def test_the_readme_links_the_remote_kernels_page():
    assert "(docs/remote-kernels.md)" in (REPO_ROOT / "README.md").read_text()
    assert PAGE.is_file()


def test_the_page_quotes_the_explorers_constants():
    text = PAGE.read_text()
    assert f"`helpers.explorer.BROWSER_ZOOM = {explorer.BROWSER_ZOOM}`" in text
    assert explorer.PAGE_BYTES == 256 * 2**10 and "fits 256 KiB (`helpers.explorer.PAGE_BYTES`)" in text
    assert f"steps down from\n  {explorer.JPEG_QUALITIES[0]} until" in text
    assert "LOSSLESS_PREMIUM" in text and hasattr(explorer, "LOSSLESS_PREMIUM")
