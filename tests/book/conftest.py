"""Fixtures of the book tests: every chapter executed once per session with its CI parameters."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ..conftest import ROOT


@pytest.fixture(scope="session")
def ci_chapter_runs(tmp_path_factory):
    """Execute chapters with their CI parameters once per session, on demand:
    `ci_chapter_runs(name)` returns the RunResult."""
    import yaml

    from cgclib.book.chapters import run_chapter

    spec = yaml.safe_load((Path(__file__).parent / "ci_parameters.yaml").read_text())
    runs_dir = tmp_path_factory.mktemp("runs")
    done = {}

    def run(name: str):
        if name not in spec:
            pytest.fail(f"chapter {name!r} has no entry in tests/book/ci_parameters.yaml")
        if name not in done:
            done[name] = run_chapter(name, spec[name]["parameters"], runs_dir=runs_dir, root=ROOT, progress=False)
        return done[name]

    run.spec = spec
    return run


DEMO_NOTEBOOK = textwrap.dedent("""\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # Demo

    ```{code-cell} ipython3
    :tags: [parameters]
    seed = 0  # random seed
    scale = 1.5  # a float
    label = "testbed-gpt2"  # a string
    grid = [0.1, 0.5]  # a list of floats
    verbose = False  # a flag
    ```

    ```{code-cell} ipython3
    from cgclib.ledger import Ledger, Ours
    from cgclib.verdicts import Exceeds
    ledger = Ledger("demo")
    ledger.record(id="demo.scale", kind="paper claim", claim="scale is positive",
                  ours=Ours(scale * (seed + 1), 1, label), rule=Exceeds(0.0), source="test")
    ```

    ```{code-cell} ipython3
    if verbose:
        raise RuntimeError("asked to fail")
    ```
""")


@pytest.fixture
def demo_book(tmp_path) -> Path:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "demo.md").write_text(DEMO_NOTEBOOK)
    (tmp_path / "_config.yml").write_text("title: demo\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: book/demo\n    sections:\n      - file: notebooks/demo\n"
    )
    return tmp_path
