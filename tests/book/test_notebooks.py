"""Every chapter notebook executes with small CI parameters (papermill, as `cgc run` does)
and writes the ledger records it promises, each valid and with a computed verdict."""

import pytest

from cgclib.book.chapters import list_chapters
from cgclib.ledger import load_results

from ..conftest import ROOT

CHAPTERS = list(list_chapters(ROOT))


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_and_records_its_claims(chapter, ci_chapter_runs):
    result = ci_chapter_runs(chapter)
    assert result.notebook.is_file()
    records = load_results(result.results)  # validates schema, ids and verdicts
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(ci_chapter_runs.spec[chapter]["claims"])


def _glued_names(notebook_path) -> set[str]:
    import nbformat

    nb = nbformat.read(notebook_path, as_version=4)
    return {
        o["metadata"]["scrapbook"]["name"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "scrapbook" in o.get("metadata", {})
    }


def _text_references(chapter: str) -> list[tuple[str, str, str]]:
    """(page, path, key) of every {glue:text} role in the book that names this chapter's
    notebook, split the way myst-nb splits them: the format spec after the last colon
    first (so a reference without one loses its key), then the path before '::'."""
    import re

    refs = []
    for page in sorted((ROOT / "book").glob("*.md")):
        for text in re.findall(r"\{glue:text\}`([^`]+)`", page.read_text()):
            if f"notebooks/{chapter}.md" not in text:
                continue
            path, _, name = text.rsplit(":", 1)[0].partition("::")
            refs.append((page.name, path, name))
    return refs


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_number_the_book_quotes_is_glued_by_its_notebook(chapter, ci_chapter_runs):
    glued, references = _glued_names(ci_chapter_runs(chapter).notebook), _text_references(chapter)
    assert references, f"the book quotes nothing from the {chapter} notebook (its rerun box at least)"
    for page, path, name in references:
        assert path == f"../notebooks/{chapter}.md", f"{page}: malformed glue reference to {path!r}"
        assert name in glued, f"{page} quotes {name!r}, which the {chapter} notebook does not glue"


def test_notebook_code_lines_fit_the_book_width():
    """A code cell wider than the book's column scrolls sideways: every line of every code
    cell (parameters included) fits the width the chapters are formatted to."""
    import jupytext
    import tomllib

    width = tomllib.loads((ROOT / "notebooks" / "ruff.toml").read_text())["line-length"]
    too_long = []
    for notebook in sorted((ROOT / "notebooks").glob("*.md")):
        for cell in jupytext.read(notebook).cells:
            if cell.cell_type != "code":
                continue
            lines = cell.source.splitlines()
            too_long += [
                f"{notebook.name}, cell {lines[0]!r}: {len(line)} > {width}: {line}"
                for line in lines
                if len(line) > width
            ]
    assert not too_long, "\n".join(too_long)
