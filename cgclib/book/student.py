"""The student edition: each chapter's notebook followed by its exercises, without solutions.

`python -m cgclib.book.student [FOLDER]` (default `_build/student`) writes one notebook per
chapter with exercises: the chapter's own notebook, so that a student runs the experiment
first, then an "Exercises" section with each exercise's statement, title and marks, and a
cell for the answer. An exercise with a checker (`cgclib.checks`) gets a scaffold that calls
it: for a code exercise, a stub of each function it asks for, with the signature its statement
gives (`cgclib.checks.STUBS`); for a numeric one, a name to assign. The others get a markdown
cell to write in. The solutions, folded on the book's pages, are left out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..checks import CHECKERS, STUBS
from ..paths import project_root
from .chapters import list_chapters
from .exercises import chapters

BLOCK = re.compile(r"^```\{exercise\}[^\n]*\n:label: (?P<label>\S+)\n(?P<body>.*?)^```$", re.M | re.S)
OPTION = re.compile(r"^:[a-z-]+:.*$", re.M)


def exercise_statements(page: str) -> dict[str, str]:
    """Each exercise's statement on a book page, by label (directive options removed)."""
    return {m.group("label"): OPTION.sub("", m.group("body")).strip() for m in BLOCK.finditer(page)}


def scaffold(label: str) -> str:
    """The code cell a student fills in for an exercise with a checker: the stubs of a code
    exercise's functions, which return None until written, or a name for a numeric answer."""
    if label not in STUBS:
        return (
            "from cgclib.checks import check\n\n"
            "answer = ...  # your answer: the numbers the exercise asks for\n"
            f'check("{label}", answer)'
        )
    stubs = "\n\n\n".join(f"def {signature}:\n    ...  # your code: return the result" for signature in STUBS[label])
    names = [signature.split("(")[0] for signature in STUBS[label]]
    answer = names[0] if len(names) == 1 else f"({', '.join(names)})"
    return f'from cgclib.checks import check\n\n\n{stubs}\n\n\ncheck("{label}", {answer})'


def student_notebook(chapter: str, root: Path | None = None):
    """The student edition of `chapter` as an nbformat notebook, or None without exercises."""
    import jupytext
    import nbformat

    root = root or project_root()
    page_path = root / "book" / f"{chapter}.md"
    found = [c for c in chapters(root) if c.page == page_path]
    if not found:
        return None
    page = page_path.read_text()
    statements = exercise_statements(page)
    notebook = jupytext.read(list_chapters(root)[chapter].path)
    cells = [nbformat.v4.new_markdown_cell("## Exercises\n\nThe book's page of this chapter explains the ideas.")]
    for exercise in found[0].exercises:
        heading = f"### {exercise.title} ({exercise.difficulty}, {exercise.minutes} min)"
        cells.append(nbformat.v4.new_markdown_cell(f"{heading}\n\n{statements[exercise.label]}"))
        if exercise.label in CHECKERS:
            cells.append(nbformat.v4.new_code_cell(scaffold(exercise.label)))
        else:
            cells.append(nbformat.v4.new_markdown_cell("*Your answer:*"))
    notebook.cells.extend(cells)
    return notebook


def write_student_edition(folder: Path, root: Path | None = None) -> list[Path]:
    """Write every chapter's student notebook into `folder`; their paths."""
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in list_chapters(root):
        notebook = student_notebook(chapter, root)
        if notebook is None:
            continue
        path = folder / f"{chapter}.ipynb"
        nbformat.write(notebook, path)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else project_root() / "_build" / "student"
    for path in write_student_edition(folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
