"""The book's exercise index, generated from the exercises themselves.

Every exercise is a `{exercise}` directive on a chapter page whose argument is its title
followed by its difficulty and time, `Title (easy|medium|hard, N min)`. The index page
(`book/exercises.md`) lists them by chapter in book order, title first, marking the code
exercises (those with a stub in `cgclib.checks.STUBS`) and the self-checks, so that it never
drifts from the pages; `python -m cgclib.book.exercises` rewrites it and the tests check
that the page is what this module generates.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..checks import CHECKERS, STUBS
from ..paths import project_root
from ..storage import atomic_write_bytes

DIFFICULTIES = ("easy", "medium", "hard")
EXERCISE = re.compile(r"^```\{exercise\}(?P<title>[^\n]*)\n:label: (?P<label>\S+)\n", re.M)
MARKS = re.compile(r"^(?P<title>.+) \((?P<difficulty>\w+), (?P<minutes>\d+) min\)$")
INDEX = "book/exercises.md"


class ExerciseError(ValueError):
    """An exercise without a title, difficulty or time."""


@dataclass(frozen=True)
class Exercise:
    label: str
    title: str
    difficulty: str
    minutes: int


@dataclass(frozen=True)
class ChapterExercises:
    label: str  # the chapter page's reference label, e.g. ch-density
    title: str
    exercises: list[Exercise]
    page: Path  # the book page they are on


def page_exercises(text: str, where: str = "?") -> list[Exercise]:
    """The exercises of one page, in order; each must carry its marks."""
    found = []
    for match in EXERCISE.finditer(text):
        heading = match.group("title").strip()
        marks = MARKS.match(heading)
        if marks is None or marks.group("difficulty") not in DIFFICULTIES:
            raise ExerciseError(
                f"{where}: exercise {match.group('label')} needs a title with its marks, "
                f"'Title (easy|medium|hard, N min)'; got {heading!r}"
            )
        difficulty, minutes = marks.group("difficulty"), int(marks.group("minutes"))
        found.append(Exercise(match.group("label"), marks.group("title"), difficulty, minutes))
    return found


def chapters(root: Path | None = None) -> list[ChapterExercises]:
    """Every book page of `_toc.yml` that has exercises, in book order."""
    root = root or project_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    out = []
    for name in files:
        path = root / f"{name}.md"
        if not name.startswith("book/") or not path.is_file():
            continue
        text = path.read_text()
        exercises = page_exercises(text, str(path))
        if not exercises:
            continue
        label = re.match(r"\((?P<label>[\w-]+)\)=\n# (?P<title>.+)\n", text)
        if label is None:
            raise ExerciseError(f"{path}: a page with exercises starts with its label and title")
        out.append(ChapterExercises(label.group("label"), label.group("title"), exercises, path))
    return out


def index_page(root: Path | None = None) -> str:
    """The text of the exercise index."""
    parts = [
        "(ch-exercises)=\n# Exercises\n\n"
        "Every exercise in the book, by chapter, with its difficulty and the time it takes a student\n"
        "who has read the chapter. The solutions are folded under each exercise; open them after\n"
        "trying. Those marked *code* ask for a Python function, written in the chapter's notebook\n"
        "(the student edition has a stub of it). Those marked *self-check* have a checker that says\n"
        "whether an answer is right, or what is wrong with it, without showing the answer: in a\n"
        'notebook, `from cgclib.checks import check`, then `check("<label>", answer)` with the label\n'
        "shown here.\n"
    ]
    for chapter in chapters(root):
        minutes = sum(e.minutes for e in chapter.exercises)
        count, code = len(chapter.exercises), sum(e.label in STUBS for e in chapter.exercises)
        where = f"From {{ref}}`{chapter.label}`, {count} exercises ({code} in code), about {minutes} minutes"
        parts.append(f"\n## {chapter.title}\n\n{where}:\n\n")
        for e in chapter.exercises:
            marks = ", code" if e.label in STUBS else ""
            marks += f", self-check `{e.label}`" if e.label in CHECKERS else ""
            parts.append(f"- {{numref}}`{e.label}`: {e.title} ({e.difficulty}, {e.minutes} min{marks})\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    root = project_root()
    atomic_write_bytes(root / INDEX, index_page(root).encode())
    print(f"wrote {INDEX}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
