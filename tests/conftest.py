"""Shared fixtures: the book root, and isolation of result files from the real build.

The tests are in two tiers: unit tests of the library here (`make test-unit`), and tests of
the book as a whole in `book/` (chapters executed, the CLI, the rendered book in a browser).
"""

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
def standins(tmp_path_factory) -> dict[str, Path]:
    """Random-initialised GPT-2, Mistral and Qwen2 stand-ins and their local text, written
    once per session (`cgclib.standins`): the paths by architecture, and `text`."""
    from cgclib.standins import write_standins

    return write_standins(tmp_path_factory.mktemp("standins"))
