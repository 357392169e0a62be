"""Executing the book's chapters before Sphinx renders them, several at a time.

`make book` runs `cgc execute` first: every chapter notebook of `_toc.yml` is executed with
its default parameters, in its own folder, and stored in the jupyter-cache database that
myst-nb reads (`execute_notebooks: cache` in `_config.yml`; the database is
`_build/.jupyter_cache`, myst-nb's default). The Sphinx build that follows finds every
chapter there and renders it without executing anything.

Why not let Sphinx execute them: it runs one notebook at a time, and the test-bed models
are too small for PyTorch to keep two CPU threads busy (one chapter runs only about 1.5
times faster on two threads than on one). The chapters are independent, so they start in
book order, one per core at a time. Every kernel may use every core, with waiting OpenMP
threads asleep rather than spinning (`OMP_WAIT_POLICY=PASSIVE`), so that the chapter that
finishes last has the machine to itself. Chapters that need the same cached table
(`storage.computed_once`) compute it once.
"""

from __future__ import annotations

import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ..ledger import AT_ONCE
from .chapters import list_chapters

CACHE_FOLDER = Path("_build") / ".jupyter_cache"


@dataclass(frozen=True)
class Execution:
    path: Path
    notebook: object | None  # the executed nbformat notebook; None if it failed
    seconds: float
    error: str | None  # the traceback of a failed cell


def _execute(path: Path, timeout: int, myst_extensions: list[str]) -> Execution:
    """Execute one MyST notebook in its own folder, read as the book's Sphinx build reads it
    (so that myst-nb finds it in the cache); any failure is returned, not raised, so that the
    other chapters still run and are reported."""
    from jupyter_cache.executors.utils import single_nb_execution
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    started = time.perf_counter()
    try:
        notebook = read_myst_markdown_notebook(
            path.read_text("utf8"),
            MdParserConfig(enable_extensions=set(myst_extensions)),
            add_source_map=True,
            path=str(path),
        )
        result = single_nb_execution(notebook, cwd=str(path.parent), timeout=timeout, allow_errors=False)
    except Exception:  # a notebook that cannot be read, a kernel that died or did not start
        return Execution(path, None, time.perf_counter() - started, traceback.format_exc())
    if result.err is not None:
        return Execution(path, None, result.time, result.exc_string or repr(result.err))
    return Execution(path, notebook, result.time, None)


def _share_the_machine(jobs: int) -> None:
    """Worker start-up: the kernels it starts inherit these settings."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ[AT_ONCE] = str(jobs)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def execute_chapters(root: Path, jobs: int | None = None) -> list[Execution]:
    """Execute every chapter into the book's execution cache, `jobs` at a time (default: one
    per CPU core, at most one per chapter), with the cell timeout of `_config.yml`; return
    the executions in book order. Failed chapters are not cached, so the Sphinx build would
    run them again and stop at the error."""
    import yaml
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    timeout = (config.get("execute") or {}).get("timeout", 30)  # Jupyter Book's default
    myst_extensions = (config.get("parse") or {}).get("myst_enable_extensions", [])
    paths = [chapter.path for chapter in list_chapters(root).values()]
    if not paths:
        raise ValueError(f"{root / '_toc.yml'} lists no chapter notebooks")
    jobs = min(jobs or available_cpus(), len(paths))
    print(f"executing {len(paths)} chapters, {jobs} at a time", flush=True)
    cache = get_cache(str(root / CACHE_FOLDER))
    started = time.perf_counter()
    done: dict[Path, Execution] = {}
    with ProcessPoolExecutor(max_workers=jobs, initializer=_share_the_machine, initargs=(jobs,)) as pool:
        for future in as_completed([pool.submit(_execute, path, timeout, myst_extensions) for path in paths]):
            execution = future.result()
            done[execution.path] = execution
            if execution.notebook is not None:
                cache.cache_notebook_bundle(
                    CacheBundleIn(
                        execution.notebook, str(execution.path), data={"execution_seconds": execution.seconds}
                    ),
                    check_validity=False,
                    overwrite=True,
                )
            outcome = "executed" if execution.error is None else "FAILED"
            print(
                f"[{time.perf_counter() - started:4.0f} s] {outcome} {execution.path.relative_to(root)} "
                f"in {execution.seconds:.0f} s",
                flush=True,
            )
    return [done[path] for path in paths]
