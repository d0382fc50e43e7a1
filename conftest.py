"""Test-session setup shared by the unit tests and nbval's notebook runs."""

from tests.support import isolate_environment

# Before any kernel starts: nothing is written to the home folder, nothing is downloaded.
isolate_environment()
