"""Sphinx extension: no two elements of a page share an id.

sphinx-exercise and sphinx-proof give every exercise, solution and proof body the same
fixed id (`exercise-content`, `solution-content`, `proof-content`, `proof`), so a chapter
with several exercises has duplicate ids: invalid HTML, and a trap for assistive technology
and for any script that looks an element up by id. Nothing links to these ids; this
post-transform numbers every repeat of an id on a page (`exercise-content-2`, ...).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform


class NumberRepeatedIds(SphinxPostTransform):
    default_priority = 950  # after the ledger is filled in

    def run(self, **kwargs) -> None:
        seen: dict[str, int] = {}
        for node in self.document.findall(nodes.Element):
            ids = node.get("ids", [])
            for i, identifier in enumerate(ids):
                seen[identifier] = seen.get(identifier, 0) + 1
                if seen[identifier] > 1:
                    ids[i] = f"{identifier}-{seen[identifier]}"


def setup(app):
    app.add_post_transform(NumberRepeatedIds)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
