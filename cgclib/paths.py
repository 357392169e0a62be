"""Where the project's files live: the book root, the shipped data, the results of a run.

Notebooks execute with their own folder as working directory (Jupyter Book and papermill
both do this), so every path is resolved from the book root rather than from the cwd.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("_toc.yml", "_config.yml")


def project_root(start: Path | None = None) -> Path:
    """The book root: the nearest folder at or above `start` (default: cwd) holding
    `_toc.yml` and `_config.yml`; failing that, the folder that contains this package."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / m).is_file() for m in _MARKERS):
            return folder
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Shipped artifacts: test-bed checkpoints, their cards, the papers' reported values."""
    override = os.environ.get("CGC_DATA_DIR")
    return Path(override) if override else project_root() / "data"


def results_dir() -> Path:
    """Where ledger records are written: `$CGC_RESULTS_DIR` (set by `cgc run`) or
    `_build/results` under the book root."""
    override = os.environ.get("CGC_RESULTS_DIR")
    return Path(override) if override else project_root() / "_build" / "results"


def cache_dir() -> Path:
    """Derived artifacts that are expensive and safe to reuse (trained SAEs, ...)."""
    override = os.environ.get("CGC_CACHE_DIR")
    return Path(override) if override else project_root() / ".cache"
