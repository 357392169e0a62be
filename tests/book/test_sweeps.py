"""Sweep files: checked against the chapters, expanded in a stated order, and run as
independent jobs that a resubmission skips once finished."""

import json
import subprocess
import sys

import pytest

from cgclib.book.chapters import ChapterError
from cgclib.book.sweeps import finished_run, job_command, load_sweep, run_job
from cgclib.paths import project_root

ROOT = project_root()


def _write(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_valid(path):
    assert load_sweep(path, ROOT).jobs()


def test_grid_expands_with_the_first_key_slowest(tmp_path):
    sweep = load_sweep(
        _write(
            tmp_path,
            """
chapter: structure
parameters: {device: cuda}
grid:
  model: [gpt2, gpt2-medium]
  seed: [0, 1, 2]
""",
        ),
        ROOT,
    )
    jobs = sweep.jobs()
    assert len(jobs) == 6
    assert jobs[0] == {"device": "cuda", "model": "gpt2", "seed": 0}
    assert jobs[4] == {"device": "cuda", "model": "gpt2-medium", "seed": 1}
    assert job_command(sweep, 4) == "cgc run structure -p device cuda -p model gpt2-medium -p seed 1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("chapter: nowhere\n", "unknown chapter"),
        ("chapter: structure\ngrid: {learning_rate: [1, 2]}\n", "no parameter 'learning_rate'"),
        ("chapter: structure\ngrid: {seed: [0, one]}\n", "expects an integer"),
        ("chapter: structure\ngrid: {seed: []}\n", "non-empty list"),
        ("chapter: structure\nparameters: {seed: 0}\ngrid: {seed: [1]}\n", "both as fixed"),
        ("chapter: structure\nsweep: {}\n", "keys chapter, parameters and grid"),
        ("chapter: structure\ngrid: {seed: [0, 1]\n", "not valid YAML"),
        ("- chapter: structure\n", "a sweep is a mapping"),
        ("chapter: structure\nparameters: [seed, 0]\n", "parameters must be a mapping"),
        ("chapter: structure\ngrid: [seed]\n", "grid must be a mapping"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ChapterError, match=message):
        load_sweep(_write(tmp_path, text), ROOT)


def test_a_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(ChapterError, match="no sweep file at"):
        load_sweep(tmp_path / "absent.yaml", ROOT)


def test_job_index_outside_the_sweep_is_refused():
    sweep = load_sweep(ROOT / "sweeps" / "phase-transitions-methods.yaml", ROOT)
    with pytest.raises(ChapterError, match="outside the sweep's 3 jobs"):
        job_command(sweep, 3)


def test_a_job_runs_once_and_a_resubmission_finds_it(demo_book):
    path = demo_book / "sweep.yaml"
    path.write_text("chapter: demo\nparameters: {scale: 2.0}\ngrid:\n  seed: [0, 1]\n")
    sweep = load_sweep(path, demo_book)
    runs = demo_book / "runs"
    first = run_job(sweep, 1, runs, demo_book, progress=False)
    folder = first.folder
    record = json.loads((folder / "parameters.json").read_text())
    assert record["parameters"] == {**sweep.parameters, "seed": 1} and record["finished"]
    assert (folder / "demo.ipynb").is_file()
    assert not first.skipped
    again = run_job(sweep, 1, runs, demo_book, progress=False)
    assert again.folder == folder and again.skipped
    assert finished_run(runs, "demo", {**sweep.parameters, "seed": 0}) is None


def test_an_unfinished_run_is_not_taken_for_a_finished_one(tmp_path):
    folder = tmp_path / "runs" / "phase_transitions" / "20260101-000000-abcdef"
    folder.mkdir(parents=True)
    (folder / "parameters.json").write_text(json.dumps({"parameters": {"methods": ["wanda"]}}))
    (folder / "phase_transitions.ipynb").write_text("{}")
    assert finished_run(tmp_path / "runs", "phase_transitions", {"methods": ["wanda"]}) is None


def test_cli_lists_one_command_per_job():
    out = subprocess.run(
        [sys.executable, "-m", "cgclib.book.cli", "sweep", "sweeps/orthogonality-gpt2-sizes.yaml", "--commands"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(out) == 6
    assert out[-1] == ("cgc run orthogonality -p second_model '' -p device cuda -p model gpt2-large -p seed 2")
