"""`cgc execute`: chapters run side by side into the cache the Sphinx build reads, and myst-nb
finds them there; a failing chapter is reported and not cached."""

import textwrap
from pathlib import Path

import pytest
from jupyter_cache import get_cache
from myst_nb.core.read import myst_nb_reader_plugin

from cgclib.book import cli
from cgclib.book.execution import CACHE_FOLDER, execute_chapters

HEADER = textwrap.dedent("""\
    ---
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # {title}

    ```{{code-cell}} ipython3
    :tags: [parameters]
    value = 3  # a parameter
    ```

    ```{{code-cell}} ipython3
    {code}
    ```
    """)


def _book(root: Path, chapters: dict[str, str]) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: demo\n")
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n" + "".join(f"- file: notebooks/{name}\n" for name in chapters)
    )
    for name, code in chapters.items():
        (root / "notebooks" / f"{name}.md").write_text(HEADER.format(title=name, code=code))
    return root


def _cached_output(root: Path, name: str) -> str:
    """The text the cached execution of a chapter printed, found as myst-nb finds it."""
    cache = get_cache(str(root / CACHE_FOLDER))
    record = cache.match_cache_notebook(myst_nb_reader_plugin(str(root / "notebooks" / f"{name}.md")))
    notebook = cache.get_cache_bundle(record.pk).nb
    return "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))


def test_chapters_run_side_by_side_into_the_cache_myst_nb_reads(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    root = _book(
        tmp_path,
        {
            "first": "import os\nprint(value * 2, os.environ['CGC_CHAPTERS_AT_ONCE'], os.environ['OMP_WAIT_POLICY'])",
            "broken": "raise RuntimeError('chapter broke')",
            "third": "from pathlib import Path\nprint(Path.cwd().name)",
            "unreadable": "print('never runs')",
        },
    )
    unreadable = root / "notebooks" / "unreadable.md"
    unreadable.write_text(unreadable.read_text().replace(":tags: [parameters]", ":tags: [parameters"))
    executions = execute_chapters(root, jobs=2)
    assert [e.path.stem for e in executions] == ["first", "broken", "third", "unreadable"]  # book order
    assert _cached_output(root, "first").split() == ["6", "2", "PASSIVE"]
    assert _cached_output(root, "third").strip() == "notebooks"  # run in the notebook's folder
    assert executions[1].notebook is None and "chapter broke" in executions[1].error
    assert executions[3].notebook is None and "MystMetadataParsingError" in executions[3].error
    with pytest.raises(KeyError):
        _cached_output(root, "broken")


def test_cgc_execute_fails_when_a_chapter_fails(tmp_path, capsys):
    root = _book(tmp_path, {"broken": "1 / 0"})
    assert cli.main(["--root", str(root), "execute", "--jobs", "1"]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs"):
        execute_chapters(root, jobs=0)
