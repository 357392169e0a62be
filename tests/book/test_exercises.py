"""The exercise index is generated from the exercises, each titled and marked for
difficulty and time."""

from __future__ import annotations

import pytest

from cgclib.book.exercises import INDEX, ExerciseError, chapters, index_page, page_exercises
from cgclib.checks import CHECKERS, STUBS

from ..conftest import ROOT


def test_the_index_page_is_the_generated_one():
    assert (ROOT / INDEX).read_text() == index_page(ROOT), "run `python -m cgclib.book.exercises`"


def test_every_chapter_with_exercises_has_titles_and_marks():
    found = chapters(ROOT)
    assert len(found) >= 6
    for chapter in found:
        for exercise in chapter.exercises:
            assert 0 < len(exercise.title) <= 60 and not exercise.title.endswith("."), exercise  # a title
            assert 5 <= exercise.minutes <= 120, exercise


def test_every_chapter_is_a_course_kit():
    """Six exercises or more per chapter, at least half of them code exercises with a checker."""
    for chapter in chapters(ROOT):
        labels = [e.label for e in chapter.exercises]
        code = [label for label in labels if label in STUBS]
        assert len(labels) >= 6, f"{chapter.label}: {len(labels)} exercises"
        assert 2 * len(code) >= len(labels), f"{chapter.label}: {len(code)} of {len(labels)} in code"
        assert all(label in CHECKERS for label in code)


def test_the_index_marks_code_exercises_and_self_checks():
    page = index_page(ROOT)
    for label in STUBS:
        assert f"code, self-check `{label}`)" in page


@pytest.mark.parametrize(
    "heading",
    ["", " Two kinds of R squared", " Two kinds of R squared (tricky, 10 min)", " Two kinds (easy, ten min)"],
)
def test_an_exercise_without_its_marks_is_refused(heading):
    text = f"```{{exercise}}{heading}\n:label: ex-demo\n\nBody.\n```\n"
    with pytest.raises(ExerciseError, match="ex-demo needs a title with its marks"):
        page_exercises(text, "demo.md")


def test_marks_are_read():
    (exercise,) = page_exercises("```{exercise} Two kinds of R squared (hard, 25 min)\n:label: ex-r2\n")
    assert (exercise.label, exercise.title, exercise.difficulty, exercise.minutes) == (
        "ex-r2",
        "Two kinds of R squared",
        "hard",
        25,
    )
