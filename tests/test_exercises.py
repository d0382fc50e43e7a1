"""The fill-in-the-blank check: silent and False for answers, a clear message for blanks."""

from helpers.exercises import unfinished


def test_blank_answers_are_named(capsys):
    assert unfinished(first=..., second=3, third=...) is True
    assert "(first, third)" in capsys.readouterr().out


def test_filled_answers_pass_through_silently(capsys):
    assert unfinished(answer=0, other=None, empty=[]) is False
    assert capsys.readouterr().out == ""
