"""Every chapter notebook executes with small CI parameters (papermill, as `cgc run` does)
and writes the ledger records it promises, each valid and with a computed verdict."""

import pytest

from cgclib.chapters import list_chapters
from cgclib.ledger import load_results

from .conftest import ROOT

CHAPTERS = list(list_chapters(ROOT))


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_and_records_its_claims(chapter, ci_chapter_runs):
    result = ci_chapter_runs(chapter)
    assert result.notebook.is_file()
    records = load_results(result.results)  # validates schema, ids and verdicts
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(ci_chapter_runs.spec[chapter]["claims"])
