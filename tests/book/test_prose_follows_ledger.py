"""Prose follows the ledger: a paragraph that quotes a chapter's glued numbers states no
verdict of its own. Words that judge a claim (holds, fails, inconclusive, "does not
predict", ...) are glued from the records (`<id>.verdict`) or from a reading the notebook
computes from them, so that the prose cannot contradict what the ledger says."""

from __future__ import annotations

import re

import pytest

from ..conftest import ROOT

GLUE = re.compile(r"\{glue:text\}`[^`]*`")
# Words that state a verdict on a claim. Plain-English uses with another meaning are written
# differently (e.g. "is satisfied", "breaks down") in paragraphs that quote measurements.
VERDICT_WORDS = re.compile(
    r"\b(holds?|fails?|failed|inconclusive|(?:does|do) not (?:hold|predict)|no interval excludes zero"
    r"|none excludes zero|is confirmed|is refuted)\b",
    re.IGNORECASE,
)
PAGES = sorted((ROOT / "book").glob("*.md"))


def typed_verdicts(text: str) -> list[tuple[str, str]]:
    """(verdict word, paragraph start) for each verdict word typed in a paragraph that glues
    numbers from a notebook; code blocks and directive options are skipped."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if not GLUE.search(flat):
            continue
        for word in VERDICT_WORDS.findall(GLUE.sub("", flat)):
            found.append((word, flat[:120]))
    return found


def test_the_check_finds_a_typed_verdict_and_accepts_a_glued_one():
    glued = "{glue:text}`../notebooks/x.md::x.claim.value:.2f`"
    assert typed_verdicts(f"We measure {glued}; the claim holds.")
    assert typed_verdicts(f"With rho = {glued}, density does not predict collapse.")
    verdict = "{glue:text}`../notebooks/x.md::x.claim.verdict:s`"
    assert not typed_verdicts(f"We measure {glued}; the verdict is *{verdict}*.")
    assert not typed_verdicts("A rule that cannot fail is a defect.")  # no glued number here


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_prose_states_no_verdict_it_did_not_glue(page):
    typed = typed_verdicts(page.read_text())
    assert typed == [], f"{page.name}: verdict words typed beside glued numbers: {typed}"
