"""Fill-in-the-blank exercises: a check that says "not done yet" instead of failing on a blank.

An exercise cell leaves ``...`` where the student writes code; the check cell after it reads

    if not unfinished(n_convs=n_convs):
        assert n_convs == 36, "Count again: ..."
        print("Correct.")

so "Run All" goes through an unfinished notebook, and a filled-in answer is really checked.
"""

from __future__ import annotations


def unfinished(**answers: object) -> bool:
    """True, after saying which, while any answer is still the placeholder ``...``."""
    blanks = [name for name, value in answers.items() if value is Ellipsis]
    if blanks:
        print(f"Not done yet: replace the ... in the exercise cell ({', '.join(blanks)}), "
              "run it, then run this cell again.")
    return bool(blanks)
