"""The student edition: every chapter with exercises, no solutions, a scaffold that calls
the checker where there is one; a student notebook executes from the top through its
exercises."""

from __future__ import annotations

import re

import nbformat
import pytest

from cgclib.book.exercises import chapters
from cgclib.book.student import exercise_statements, scaffold, write_student_edition
from cgclib.checks import CHECKERS, STUBS

from ..conftest import ROOT


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    return write_student_edition(tmp_path_factory.mktemp("student"), ROOT)


def test_every_chapter_with_exercises_has_a_student_notebook_without_solutions(edition):
    names = {p.stem for p in edition}
    pages = {c.label for c in chapters(ROOT)}
    assert len(names) == len(pages)
    for path in edition:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        page = (ROOT / "book" / f"{path.stem}.md").read_text()
        for label, solution in re.findall(r"```\{solution\} (\S+)\n:class: dropdown\n\n(.+?)\n", page):
            assert solution not in text, f"{path.name}: the solution of {label} leaked"
            assert "{solution}" not in text
        (chapter,) = [c for c in chapters(ROOT) if c.page == ROOT / "book" / f"{path.stem}.md"]
        for exercise in chapter.exercises:
            assert exercise.title in text, exercise.label


def test_a_student_notebook_executes_through_its_exercises(edition, tmp_path):
    import papermill

    (path,) = [p for p in edition if p.stem == "phase_transitions"]
    spec = __import__("yaml").safe_load((ROOT / "tests" / "book" / "ci_parameters.yaml").read_text())
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(path),
        str(out),
        parameters={**spec["phase_transitions"]["parameters"], "replicates": []},
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    cells = nbformat.read(out, as_version=4).cells
    scaffolds = [c for c in cells if c.cell_type == "code" and 'check("ex-' in c.source]
    assert len(scaffolds) == len([label for label in CHECKERS if label.startswith("ex-phase-")])
    for cell in scaffolds:  # each unanswered scaffold runs and says what is missing
        (label,) = re.findall(r'check\("(ex-[\w-]+)"', cell.source)
        missing = "returns None" if label in STUBS else "give 2 numbers"
        assert f"{label}: " in str(cell.outputs) and missing in str(cell.outputs), label


def test_a_code_exercise_gets_a_stub_of_each_function_it_asks_for():
    assert scaffold("ex-phase-wanda").count("def wanda_mask(weight, x, sparsity):") == 1
    assert 'check("ex-phase-wanda", wanda_mask)' in scaffold("ex-phase-wanda")
    assert 'check("ex-structure-cross", (factored, direct))' in scaffold("ex-structure-cross")
    assert "answer = ..." in scaffold("ex-phase-groups")
    for label in STUBS:  # the signature a stub gives is the one the exercise states
        for chapter in chapters(ROOT):
            statements = exercise_statements(chapter.page.read_text())
            if label in statements:
                for signature in STUBS[label]:
                    assert f"`{signature}`" in " ".join(statements[label].split()), (label, signature)
