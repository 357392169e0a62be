"""Sweeps: one chapter over a grid of parameters, as independent jobs.

A sweep file names a chapter, the parameters every job shares, and a grid whose Cartesian
product gives the jobs::

    chapter: orthogonality
    parameters: {device: cuda, second_model: ""}
    grid:
      model: [gpt2-medium, gpt2-large]
      seed: [0, 1, 2]

Job i is `cgc run` of the chapter with the i-th combination (grid keys vary slowest first,
as written). Nothing here schedules anything: each job is one process, so any engine that
runs numbered tasks runs a sweep (a Slurm array, Ray tasks, GNU parallel, xargs); see the
book's chapter on running at scale. A job whose run folder already holds a finished run is
skipped, so a sweep that was interrupted is resumed by submitting it again.
"""

from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .chapters import ChapterError, get_chapter, resolve_parameters, run_chapter


@dataclass(frozen=True)
class Sweep:
    chapter: str
    parameters: dict[str, Any]
    grid: dict[str, list[Any]]

    def jobs(self) -> list[dict[str, Any]]:
        """The parameters of every job, in job-index order."""
        names = list(self.grid)
        return [
            {**self.parameters, **dict(zip(names, values, strict=True))}
            for values in itertools.product(*(self.grid[n] for n in names))
        ]


def _as_text(value: Any) -> str:
    """A YAML value as the command-line text `cgc run -p` would receive."""
    return value if isinstance(value, str) else json.dumps(value)


def load_sweep(path: Path, root: Path | None = None) -> Sweep:
    """Read and check a sweep file: the chapter exists, every parameter is one of its
    parameters with a value of the right type, and the grid is non-empty lists."""
    if not Path(path).is_file():
        raise ChapterError(f"no sweep file at {path}")
    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ChapterError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ChapterError(f"{path}: a sweep is a mapping with keys chapter, parameters and grid")
    unknown = set(spec) - {"chapter", "parameters", "grid"}
    if unknown or "chapter" not in spec:
        raise ChapterError(f"{path}: a sweep has keys chapter, parameters and grid (got {sorted(spec)})")
    chapter = get_chapter(spec["chapter"], root)
    fixed = spec.get("parameters") or {}
    grid = spec.get("grid") or {}
    for key, value in (("parameters", fixed), ("grid", grid)):
        if not isinstance(value, dict):
            raise ChapterError(f"{path}: {key} must be a mapping of parameter names, got {value!r}")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ChapterError(f"{path}: grid entry {name!r} must be a non-empty list, got {values!r}")
    both = set(fixed) & set(grid)
    if both:
        raise ChapterError(f"{path}: {sorted(both)} set both as fixed parameters and in the grid")
    pairs = [(n, _as_text(v)) for n, v in fixed.items()]
    pairs += [(n, _as_text(v)) for n, values in grid.items() for v in values]
    resolve_parameters(chapter, pairs)  # raises on an unknown name or a value of the wrong type
    return Sweep(chapter.name, dict(fixed), {n: list(v) for n, v in grid.items()})


def job_command(sweep: Sweep, index: int, runs_dir: Path | None = None) -> str:
    """The `cgc run` command line of job `index`."""
    parts = ["cgc", "run", sweep.chapter]
    for name, value in _job(sweep, index).items():
        parts += ["-p", name, _as_text(value)]
    if runs_dir is not None:
        parts += ["--runs-dir", str(runs_dir)]
    return shlex.join(parts)


def _job(sweep: Sweep, index: int) -> dict[str, Any]:
    jobs = sweep.jobs()
    if not 0 <= index < len(jobs):
        raise ChapterError(f"job index {index} outside the sweep's {len(jobs)} jobs (0..{len(jobs) - 1})")
    return jobs[index]


def finished_run(runs_dir: Path, chapter: str, parameters: dict[str, Any]) -> Path | None:
    """A run folder under `runs_dir` of a run with these parameters that finished, if any."""
    for record in sorted((Path(runs_dir) / chapter).glob("*/parameters.json")):
        run = json.loads(record.read_text())
        if run.get("parameters") == parameters and run.get("finished"):
            return record.parent
    return None


@dataclass(frozen=True)
class JobOutcome:
    folder: Path  # the job's run folder
    skipped: bool  # True: a finished run with the job's parameters was found, nothing ran


def run_job(sweep: Sweep, index: int, runs_dir: Path, root: Path | None = None, progress: bool = True) -> JobOutcome:
    """Run job `index` unless a finished run with its parameters exists."""
    parameters = _job(sweep, index)
    done = finished_run(runs_dir, sweep.chapter, parameters)
    if done is not None:
        return JobOutcome(done, skipped=True)
    run = run_chapter(sweep.chapter, parameters, runs_dir=runs_dir, root=root, progress=progress)
    return JobOutcome(run.directory, skipped=False)
