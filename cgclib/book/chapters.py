"""The book's chapters, their parameters, and rerunning one with other parameters.

A chapter is a MyST-markdown notebook under `notebooks/` listed in `_toc.yml`. Its cell
tagged `parameters` declares every parameter with a literal default; papermill injects
new values after that cell. `run_chapter` converts the notebook with jupytext, executes it
with papermill in the notebook's own folder (as the book build does), and keeps the
executed notebook and its ledger records in a fresh folder under `runs/`, whose
`parameters.json` says when the run started and, once it has, when it finished.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..paths import project_root
from ..storage import atomic_write_json

NOTEBOOK_DIR = "notebooks"


class ChapterError(ValueError):
    """An unknown chapter or parameter, or a parameter value of the wrong type."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    help: str

    @property
    def type_name(self) -> str:
        return type(self.default).__name__ if self.default is not None else "any"


@dataclass(frozen=True)
class Chapter:
    name: str
    path: Path

    def parameters(self) -> dict[str, Parameter]:
        """The chapter's parameters in declaration order, read from its `parameters` cell."""
        return parse_parameters_cell(_parameters_source(self.path), self.name)


def _toc_files(node: Any) -> list[str]:
    """Every `file:` entry of a `_toc.yml` tree, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            found.append(node["file"])
        if "root" in node:
            found.append(node["root"])
        for value in node.values():
            if isinstance(value, (dict, list)):
                found.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_toc_files(item))
    return found


def list_chapters(root: Path | None = None) -> dict[str, Chapter]:
    """Chapters in table-of-contents order: the notebooks `_toc.yml` lists."""
    root = root or project_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    chapters = {}
    for entry in _toc_files(toc):
        path = Path(entry)
        if path.parts[0] != NOTEBOOK_DIR:
            continue
        name = path.with_suffix("").name
        chapters[name] = Chapter(name=name, path=root / path.with_suffix(".md"))
    return chapters


def get_chapter(name: str, root: Path | None = None) -> Chapter:
    chapters = list_chapters(root)
    if name not in chapters:
        raise ChapterError(f"unknown chapter {name!r}; chapters: {', '.join(chapters) or '(none)'}")
    return chapters[name]


def _parameters_source(path: Path) -> str:
    import jupytext

    notebook = jupytext.read(path)
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ChapterError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def parse_parameters_cell(source: str, chapter: str = "?") -> dict[str, Parameter]:
    """Parse `name = literal  # help` lines, the help also read from comment lines just
    above the assignment when it has none on its line (a long help does not fit beside it
    in the book's width); any other statement is an error, so that a parameters cell stays
    something papermill can override line by line."""
    tree = ast.parse(source)
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise ChapterError(f"chapter {chapter!r}: parameters cell line {stmt.lineno} is not `name = literal`")
        try:
            default = ast.literal_eval(stmt.value)
        except ValueError:
            raise ChapterError(f"chapter {chapter!r}: default of {stmt.targets[0].id!r} is not a literal") from None
        if stmt.end_lineno is None or stmt.end_col_offset is None:
            raise ChapterError(f"chapter {chapter!r}: parameters cell line {stmt.lineno} has no end position")
        line = lines[stmt.end_lineno - 1]
        help_text = line.split("#", 1)[1].strip() if "#" in line[stmt.end_col_offset :] else ""
        if not help_text:
            help_text = " ".join(_comments_above(lines, stmt.lineno - 1))
        params[stmt.targets[0].id] = Parameter(stmt.targets[0].id, default, help_text)
    return params


def _comments_above(lines: list[str], index: int) -> list[str]:
    """The text of the comment lines right above line `index` (0-based), in order; the
    formatter's `fmt:` markers are not help."""
    found: list[str] = []
    i = index - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        text = lines[i].lstrip()[1:].strip()
        if text.startswith("fmt:"):
            break
        found.insert(0, text)
        i -= 1
    return found


# --- parameter values from the command line --------------------------------------------


def _coerce(param: Parameter, raw: str, chapter: str) -> Any:
    """Turn the command-line text `raw` into a value of the parameter's type."""
    default = param.default
    where = f"parameter {param.name!r} of chapter {chapter!r}"
    if isinstance(default, str):
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ChapterError(f"{where} expects {param.type_name}, got unparsable {raw!r}") from None
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool) and raw.lower() in ("true", "false"):
            return value
        raise ChapterError(f"{where} expects true or false, got {raw!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ChapterError(f"{where} expects an integer, got {raw!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ChapterError(f"{where} expects a number, got {raw!r}")
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise ChapterError(f"{where} expects a list such as {list(default)!r}, got {raw!r}")
        kinds = {type(x) for x in default}
        if kinds == {float} or kinds == {int, float}:
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
                raise ChapterError(f"{where} expects a list of numbers, got {raw!r}")
            return [float(x) for x in value]
        if len(kinds) == 1 and not all(isinstance(x, next(iter(kinds))) for x in value):
            raise ChapterError(f"{where} expects a list of {next(iter(kinds)).__name__}, got {raw!r}")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ChapterError(f"{where} expects a mapping, got {raw!r}")
        return value
    raise ChapterError(f"{where} has a default of unsupported type {param.type_name}")


def resolve_parameters(chapter: Chapter, overrides: list[tuple[str, str]]) -> dict[str, Any]:
    """Check names against the chapter's parameters and coerce each value to its type."""
    params = chapter.parameters()
    resolved: dict[str, Any] = {}
    for name, raw in overrides:
        if name not in params:
            raise ChapterError(
                f"chapter {chapter.name!r} has no parameter {name!r}; its parameters: {', '.join(params)}"
            )
        resolved[name] = _coerce(params[name], raw, chapter.name)
    return resolved


# --- running --------------------------------------------------------------------------


def _new_run_dir(base: Path, parameters: dict) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:6]
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        name = f"{stamp}-{digest}" + (f"-{attempt}" if attempt else "")
        try:
            (base / name).mkdir()
            return base / name
        except FileExistsError:
            continue
    raise ChapterError(f"could not create a fresh run folder under {base}")


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


INCOMPLETE_SUFFIX = ".incomplete.json"  # a failed run's ledger: the claims recorded before the failure


def _mark_failed(run_dir: Path, name: str, record: dict, exc: BaseException) -> None:
    """Say in `parameters.json` that the run failed, and why, and rename its ledger to
    `<chapter>.incomplete.json`, so that no reader takes the claims recorded before the
    failure for a finished run's."""
    partial = run_dir / f"{name}.json"
    if partial.exists():
        partial.replace(run_dir / f"{name}{INCOMPLETE_SUFFIX}")
    failure = {
        "failed": dt.datetime.now().isoformat(timespec="seconds"),
        "error": f"{type(exc).__name__}: {exc}"[:2000],
    }
    atomic_write_json(run_dir / "parameters.json", {**record, **failure})


@dataclass(frozen=True)
class RunResult:
    chapter: str
    directory: Path
    notebook: Path
    results: Path
    parameters: dict


def run_chapter(
    name: str,
    overrides: Sequence[tuple[str, str]] | dict[str, Any] = (),
    runs_dir: Path | None = None,
    root: Path | None = None,
    progress: bool = True,
    kernel_name: str = "python3",
) -> RunResult:
    """Execute chapter `name` with the given parameters into a new run folder.

    `overrides` is either command-line pairs (name, text), which are type-checked against
    the defaults, or a mapping of already-typed values (names are still checked).
    """
    import jupytext
    import papermill

    root = root or project_root()
    chapter = get_chapter(name, root)
    if isinstance(overrides, dict):
        known = chapter.parameters()
        unknown = [k for k in overrides if k not in known]
        if unknown:
            raise ChapterError(f"chapter {name!r} has no parameter {unknown[0]!r}; its parameters: {', '.join(known)}")
        parameters = dict(overrides)
    else:
        parameters = resolve_parameters(chapter, list(overrides))
    from .validation import check_parameters

    defaults = {n: p.default for n, p in chapter.parameters().items()}
    check_parameters(name, {**defaults, **parameters}, root)  # before a run folder exists

    run_dir = _new_run_dir(Path(runs_dir or root / "runs") / name, parameters)
    executed = run_dir / f"{name}.ipynb"
    record = {
        "chapter": name,
        "parameters": parameters,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": _git_commit(root),
    }
    atomic_write_json(run_dir / "parameters.json", record)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{name}.ipynb"
        jupytext.write(jupytext.read(chapter.path), source)
        env_before = os.environ.get("CGC_RESULTS_DIR")
        os.environ["CGC_RESULTS_DIR"] = str(run_dir)  # the kernel inherits it
        try:
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters=parameters,
                cwd=str(chapter.path.parent),
                kernel_name=kernel_name,
                progress_bar=progress,
            )
        except BaseException as exc:
            _mark_failed(run_dir, name, record, exc)
            raise
        finally:
            if env_before is None:
                os.environ.pop("CGC_RESULTS_DIR", None)
            else:
                os.environ["CGC_RESULTS_DIR"] = env_before
    atomic_write_json(
        run_dir / "parameters.json", {**record, "finished": dt.datetime.now().isoformat(timespec="seconds")}
    )
    return RunResult(name, run_dir, executed, run_dir / f"{name}.json", parameters)
