"""The exercise checkers accept right answers and name what is wrong in wrong ones, without
printing the answer."""

from __future__ import annotations

import pytest

from cgclib.book.exercises import chapters
from cgclib.checks import CHECKERS, check
from cgclib.stats import pairs_for_power

from .conftest import ROOT

RIGHT = {
    "ex-phase-groups": (2.5, 4.0),
    "ex-density-breadth-extremes": lambda q, m: q / m,
    "ex-orth-power": (pairs_for_power(0.1), pairs_for_power(0.054)),
    "ex-structure-cross": (
        lambda m, n, s, sigma: sigma**2 * s * (m + n) + m * n * sigma**4,
        lambda m, n, s, sigma: m * n * sigma**2,
    ),
}


def _beta_max(s, q, s_max):
    mean = sum(q) / len(q)
    return min(
        (s_max - si) / (qi - mean) if qi > mean else si / (mean - qi) for si, qi in zip(s, q, strict=True) if qi != mean
    )


RIGHT["ex-abs-budget"] = _beta_max

WRONG = {  # a plausible mistake each, and what the message must say
    "ex-phase-groups": ((2.0, 2.0), "too low"),
    "ex-density-breadth-extremes": (lambda q, m: 1 / m, "wrong at (2, 4)"),
    "ex-orth-power": ((785, 2690), "too low"),  # without Spearman's factor 1.06
    "ex-abs-budget": (lambda s, q, s_max: min(s_max - x for x in s), "wrong at"),
    "ex-structure-cross": (
        (lambda m, n, s, sigma: sigma**2 * s * (m + n), lambda m, n, s, sigma: m * n * sigma**2),
        "the factored error",
    ),
}


def test_every_checker_belongs_to_an_exercise_of_the_book():
    labels = {e.label for chapter in chapters(ROOT) for e in chapter.exercises}
    assert set(CHECKERS) <= labels
    assert set(RIGHT) == set(CHECKERS) == set(WRONG)


@pytest.mark.parametrize("label", sorted(CHECKERS))
def test_a_right_answer_is_accepted(label, capsys):
    assert check(label, RIGHT[label])
    assert capsys.readouterr().out.startswith(f"{label}: right")


@pytest.mark.parametrize("label", sorted(CHECKERS))
def test_a_wrong_answer_is_named_without_the_answer(label, capsys):
    answer, says = WRONG[label]
    outcome = check(label, answer)
    printed = capsys.readouterr().out
    assert not outcome and says in printed
    if label in ("ex-phase-groups", "ex-orth-power"):  # the expected numbers never appear
        for number in RIGHT[label]:
            assert str(number) not in printed


def test_answers_of_the_wrong_shape_are_named():
    assert "give 2 numbers" in check("ex-phase-groups", 2.5).message
    assert "give a Python function" in check("ex-density-breadth-extremes", 0.5).message
    assert "raised ZeroDivisionError" in check("ex-density-breadth-extremes", lambda q, m: q / 0).message
    with pytest.raises(KeyError, match="no checker for 'ex-nothing'"):
        check("ex-nothing", 1)
