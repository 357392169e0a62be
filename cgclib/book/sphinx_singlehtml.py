"""Let the single-page HTML builder render every node the HTML builder renders.

Extensions such as sphinx-proof register their node visitors for the `html` builder only,
so `jupyter-book build --builder singlehtml` (which the whole-book PDF is printed from, see
`cgclib.book.pdf`) fails on a definition or a theorem; and Sphinx adds MathJax only to pages
it finds equations on, which it does not on the one page that gathers all the others. When
that builder starts, the HTML builder's visitors are registered for it too and its pages
always load MathJax; every other build is left as it is.
"""

from __future__ import annotations

from typing import Any


def _share_html_visitors(app) -> None:
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)
    app.registry.html_assets_policy = "always"


def setup(app) -> dict[str, Any]:
    app.connect("builder-inited", _share_html_visitors)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
