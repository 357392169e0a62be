"""Sphinx extension: a notebook's figure shown, numbered and captioned, on a chapter page.

A notebook glues the key figure of a section (`cgclib.plots.glue_figure`); the chapter page
shows it beside the argument it supports::

    ```{notebook-figure} ../notebooks/density.md::fig-density-map
    :alt: What the figure shows, for a reader who cannot see it.

    **Title.** The caption.
    ```

myst-nb's own `{glue:figure}` pastes figures from the page's own notebook only. This
directive makes a figure node (so that `numfig` numbers it and `{numref}` finds it by its
key, which is also its name) whose image is filled in after every document has been read,
from the glue data myst-nb keeps for the notebook (`<notebook>.glue.json`); the PNG is
written to the builder's image folder under its sha256, as myst-nb names the images it
writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)


class pending_notebook_image(nodes.Element):  # noqa: N801 (docutils names nodes in lower case)
    """Where a notebook's glued figure goes once every document has been read."""


class NotebookFigure(SphinxDirective):
    required_arguments = 1  # <notebook path>::<glue key>
    has_content = True
    option_spec = {"alt": directives.unchanged_required, "figwidth": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        path, sep, key = self.arguments[0].partition("::")
        if not sep or not key:
            raise self.error(f"name the figure as <notebook path>::<glue key>, got {self.arguments[0]!r}")
        if "alt" not in self.options:
            raise self.error(f"figure {key!r} needs :alt: text saying what it shows")
        if not self.content:
            raise self.error(f"figure {key!r} needs a caption")
        relative, absolute = self.env.relfn2path(path, self.env.docname)
        notebook = self.env.path2doc(absolute)
        if notebook is None:
            raise self.error(f"figure {key!r}: no document {path!r} in the book")
        self.env.note_dependency(relative)
        figure = nodes.figure("", pending_notebook_image(notebook=notebook, key=key, alt=self.options["alt"]))
        if "figwidth" in self.options:
            figure["width"] = self.options["figwidth"]
        figure["names"].append(key)
        self.state.document.note_explicit_target(figure, figure)
        body = nodes.Element()
        self.state.nested_parse(self.content, self.content_offset, body)
        first, *rest = body.children
        if not isinstance(first, nodes.paragraph):
            raise self.error(f"figure {key!r}: the caption must start with a paragraph")
        caption = nodes.caption(first.rawsource, "", *first.children)
        caption.source, caption.line = first.source, first.line
        figure += caption
        if rest:
            figure += nodes.legend("", *rest)
        return [figure]


class FillNotebookImages(SphinxPostTransform):
    """Each pending image becomes the PNG its notebook glued under that key."""

    default_priority = 4  # before myst-nb's own glue references

    def run(self, **kwargs) -> None:
        builder = self.app.builder
        for pending in list(self.document.findall(pending_notebook_image)):
            glue_folder = Path(self.env.mystnb_config.output_folder)  # type: ignore[attr-defined]  # set by myst-nb
            png = _glued_png(glue_folder, pending["notebook"], pending["key"])
            if png is None or not hasattr(builder, "imagedir"):
                if png is None:
                    LOGGER.warning(f"no figure glued as {pending['key']!r} in {pending['notebook']}", location=pending)
                pending.parent.remove(pending)
                continue
            folder = Path(builder.outdir) / builder.imagedir
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{hashlib.sha256(png).hexdigest()}.png"
            if not target.exists():
                target.write_bytes(png)
            uri = os.path.relpath(target, (Path(builder.outdir) / self.env.docname).parent)
            image = nodes.image(uri=uri, alt=pending["alt"])
            image["candidates"] = {"*": uri}
            pending.replace_self(image)


def _glued_png(folder: Path, notebook: str, key: str) -> bytes | None:
    """The PNG glued as `key` in `notebook`, from myst-nb's glue data; None without one."""
    path = folder.joinpath(*notebook.split("/")).with_suffix(".glue.json")
    if not path.is_file():
        return None
    output = json.loads(path.read_text()).get(key)
    data = (output or {}).get("data", {})
    return base64.b64decode(data["image/png"]) if "image/png" in data else None


def setup(app):
    app.add_node(pending_notebook_image)
    app.add_directive("notebook-figure", NotebookFigure)
    app.add_post_transform(FillNotebookImages)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
