"""Fixtures of the book tests: every chapter executed once per session with its CI parameters."""

from __future__ import annotations

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
