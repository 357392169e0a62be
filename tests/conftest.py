"""Shared fixtures: the book root, and isolation of result files from the real build."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    """Ledger writes go to a temporary folder instead of _build/results."""
    folder = tmp_path / "results"
    monkeypatch.setenv("CGC_RESULTS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def ci_chapter_runs(tmp_path_factory):
    """Execute chapters with their CI parameters once per session, on demand:
    `ci_chapter_runs(name)` returns the RunResult."""
    import yaml

    from cgclib.chapters import run_chapter

    spec = yaml.safe_load((ROOT / "tests" / "ci_parameters.yaml").read_text())
    runs_dir = tmp_path_factory.mktemp("runs")
    done = {}

    def run(name: str):
        if name not in spec:
            pytest.fail(f"chapter {name!r} has no entry in tests/ci_parameters.yaml")
        if name not in done:
            done[name] = run_chapter(name, spec[name]["parameters"], runs_dir=runs_dir, root=ROOT, progress=False)
        return done[name]

    run.spec = spec
    return run
