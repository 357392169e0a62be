"""Sphinx extension: every chapter notebook page offers its executed notebook as `.ipynb`.

MyST-NB writes each notebook it executes (outputs included) to `<build>/jupyter_execute/`.
This extension puts a download link at the top of every chapter notebook page and, once
the HTML is written, copies those executed notebooks to `_downloads/notebooks/` beside it,
so a reader gets the notebook exactly as the book ran it. A notebook page whose executed
notebook is missing is reported as a warning, which `-W` turns into a failed build.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

from .chapters import list_chapters

logger = logging.getLogger(__name__)
DOWNLOADS = "_downloads/notebooks"


def _chapter_docs(app) -> list[str]:
    return [f"notebooks/{name}" for name in list_chapters(Path(app.srcdir))]


def _add_link(app, doctree: nodes.document, docname: str) -> None:
    if docname not in _chapter_docs(app):
        return
    name = posixpath.basename(docname)
    href = posixpath.relpath(f"{DOWNLOADS}/{name}.ipynb", posixpath.dirname(docname))
    link = nodes.raw(
        "",
        f'<p class="cgc-download"><a href="{href}" download>'
        f"Download this notebook as executed for the book ({name}.ipynb)</a></p>",
        format="html",
    )
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        doctree.insert(0, link)
    else:
        title = next(iter(section.findall(nodes.title)), None)
        section.insert(section.index(title) + 1 if title is not None else 0, link)


def _copy_notebooks(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    executed = Path(app.outdir).parent / "jupyter_execute"
    target = Path(app.outdir) / DOWNLOADS
    target.mkdir(parents=True, exist_ok=True)
    for docname in _chapter_docs(app):
        source = executed / f"{docname}.ipynb"
        if not source.is_file():
            logger.warning(f"executed notebook {source} not found: its page's download link is dead")
            continue
        shutil.copy(source, target / source.name)


def setup(app):
    app.connect("doctree-resolved", _add_link)
    app.connect("build-finished", _copy_notebooks)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
