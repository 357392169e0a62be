"""Sphinx extension: the `claims-ledger` directive renders every ledger record as a table.

The records are written by the chapter notebooks while Jupyter Book executes them (read
phase); the table is filled in a post-transform (write phase), after every notebook has
run, so the page always shows the records of this build. A notebook in the table of
contents without a results file, or with a malformed one, is reported as a warning, which
`jupyter-book build -W` turns into a failed build.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from docutils import nodes
from sphinx.domains.std import StandardDomain
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from ..ledger import (
    KINDS,
    LedgerError,
    adjusted_verdicts,
    current_records,
    format_counts,
    format_ours,
    format_paper,
    format_seeds,
    load_results,
    verdict_counts,
)
from .chapters import list_chapters

logger = logging.getLogger(__name__)
NOTEBOOK_PREFIX = "notebooks/"
# the verdicts first, so that they stay in view on a narrow screen, where the table scrolls
COLUMNS = (("Verdict", 9), ("Holm", 9), ("Claim", 32), ("Paper", 12), ("Ours", 16), ("Test", 22))


class claims_ledger(nodes.General, nodes.Element):
    """Placeholder replaced by the ledger table at write time."""


class ClaimsLedgerDirective(SphinxDirective):
    has_content = False

    def run(self):
        self.env.note_reread()  # the records change with every execution
        node = claims_ledger()
        self.set_source_info(node)
        return [node]


def _results_dir(app) -> Path:
    return Path(app.srcdir) / "_build" / "results"


def _notebook_docs(app) -> list[str]:
    """Chapter notebook pages, in table-of-contents order."""
    return [f"{NOTEBOOK_PREFIX}{name}" for name in list_chapters(Path(app.srcdir))]


def _cell(*children) -> nodes.entry:
    entry = nodes.entry()
    for child in children:
        entry += child
    return entry


def _paragraph(text: str, classes=()) -> nodes.paragraph:
    return nodes.paragraph(text, text, classes=list(classes))


def _slug(text: str) -> str:
    return "-".join(text.lower().replace("_", " ").split())


def row_classes(doc: str, record: dict) -> list[str]:
    """The classes a ledger row carries for the page's filter (book/_static/ledger.js): its
    chapter, kind and verdict."""
    return [
        f"ledger-chapter-{_slug(doc[len(NOTEBOOK_PREFIX) :])}",
        f"ledger-kind-{_slug(record['kind'])}",
        f"ledger-verdict-{_slug(record['verdict'])}",
    ]


class FillClaimsLedger(SphinxPostTransform):
    default_priority = 900

    def run(self, **kwargs) -> None:
        placeholders = list(self.document.findall(claims_ledger))
        if not placeholders:
            return
        records = self._load_records()
        for node in placeholders:
            node.replace_self(self._render(records, node))

    def _load_records(self) -> list[tuple[str, dict]]:
        """Every chapter's current records (a seed-0 record pooled into a family record is
        left out, with a warning if that family record is nowhere to be found)."""
        out: list[tuple[str, dict]] = []
        for doc in _notebook_docs(self.app):
            stem = doc[len(NOTEBOOK_PREFIX) :]
            path = _results_dir(self.app) / f"{stem}.json"
            if not path.is_file():
                logger.warning(
                    f"claims ledger: no records from notebook {doc!r} ({path} missing); did it execute?",
                    location=self.env.docname,
                )
                continue
            try:
                records = load_results(path)
            except LedgerError as exc:
                logger.warning(f"claims ledger: {exc}", location=self.env.docname)
                continue
            if not records:
                logger.warning(f"claims ledger: notebook {doc!r} recorded no claims", location=self.env.docname)
            out.extend((doc, r) for r in records)
        ids = {r["id"] for _, r in out}
        for _, r in out:
            if r.get("superseded_by") and r["superseded_by"] not in ids:
                logger.warning(
                    f"claims ledger: {r['id']!r} is superseded by {r['superseded_by']!r}, which no chapter recorded",
                    location=self.env.docname,
                )
        current = {id(r) for r in current_records([r for _, r in out])}
        return [(doc, r) for doc, r in out if id(r) in current]

    def _link(self, doc: str, record: dict) -> nodes.reference:
        here = self.env.docname
        uri = self.app.builder.get_relative_uri(here, doc)
        label = record.get("section")
        if label:
            std = cast(StandardDomain, self.env.get_domain("std"))  # Sphinx registers "std" as a StandardDomain
            target = std.labels.get(label)
            if target is None:
                logger.warning(
                    f"claims ledger: record {record['id']!r} names unknown section label {label!r}", location=here
                )
            else:
                uri = self.app.builder.get_relative_uri(here, target[0]) + "#" + target[1]
        ref = nodes.reference("", "", internal=True, refuri=uri)
        ref += nodes.literal(record["id"], record["id"])
        return ref

    def _render(self, records: list[tuple[str, dict]], node) -> list[nodes.Node]:
        plain = [r for _, r in records]
        adjusted = adjusted_verdicts(plain)
        raw_counts, adjusted_counts = verdict_counts(plain), verdict_counts(plain, adjusted)
        summary = [_paragraph(f"{len(records)} records from {len({d for d, _ in records})} chapters.")]
        items = nodes.bullet_list()
        for kind in KINDS:
            n = sum(r["kind"] == kind for r in plain)
            if not n:
                continue
            text = f"{kind} ({n}): {format_counts(raw_counts[kind])}"
            if adjusted_counts[kind] != raw_counts[kind]:
                text += f"; after Holm's correction {format_counts(adjusted_counts[kind])}"
            item = nodes.list_item()
            item += _paragraph(text)
            items += item
        summary.append(items)
        table = nodes.table(classes=["claims-ledger"])
        group = nodes.tgroup(cols=len(COLUMNS))
        table += group
        for _, width in COLUMNS:
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        row = nodes.row()
        for title, _ in COLUMNS:
            row += _cell(_paragraph(title))
        head += row
        group += head
        body = nodes.tbody()
        for doc, record in records:
            row = nodes.row(
                ids=[f"claim-{record['id'].replace('.', '-').replace('_', '-')}"], classes=row_classes(doc, record)
            )
            for verdict in (record["verdict"], adjusted[record["id"]]):
                row += _cell(_paragraph(verdict, [f"verdict-{verdict}"]))
            claim = nodes.paragraph()
            claim += self._link(doc, record)
            row += _cell(claim, _paragraph(record["claim"]), _paragraph(record["source"], ["ledger-source"]))
            paper = record["paper"]
            row += _cell(
                _paragraph(format_paper(paper)), *([_paragraph(paper["setting"], ["ledger-setting"])] if paper else [])
            )
            seeds = format_seeds(record)
            row += _cell(
                _paragraph(format_ours(record["ours"])),
                _paragraph(record["ours"]["setting"], ["ledger-setting"]),
                *([_paragraph(f"seeds: {seeds}", ["ledger-setting"])] if seeds else []),
            )
            row += _cell(_paragraph(record["test"]))
            body += row
        group += body
        return [*summary, table]


def setup(app):
    app.add_node(claims_ledger)
    app.add_directive("claims-ledger", ClaimsLedgerDirective)
    app.add_post_transform(FillClaimsLedger)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
