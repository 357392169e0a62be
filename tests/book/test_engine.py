"""A sweep's jobs run on a real Dask cluster (a local one): jobs that finish, a job that
fails and is reported without stopping the others, and a resubmission that skips what
finished."""

from __future__ import annotations

import json

from cgclib.book import cli
from cgclib.book.engine import run_sweep


def _sweep(demo_book):
    path = demo_book / "sweep.yaml"
    path.write_text("chapter: demo\nparameters: {scale: 2.0}\ngrid:\n  seed: [0, 1]\n  verbose: [false, true]\n")
    return path


def test_jobs_run_on_a_local_dask_cluster_and_a_failure_is_reported(demo_book):
    runs = demo_book / "runs"
    reports = run_sweep(_sweep(demo_book), runs, demo_book, workers=2)
    assert [(r.index, r.status) for r in reports] == [(0, "ran"), (1, "failed"), (2, "ran"), (3, "failed")]
    assert "asked to fail" in reports[1].message
    for report in (reports[0], reports[2]):
        record = json.loads((runs.parent / report.folder / "parameters.json").read_text())
        assert record["finished"] and record["parameters"]["verbose"] is False

    again = run_sweep(_sweep(demo_book), runs, demo_book, workers=2)
    assert [r.status for r in again] == ["skipped", "failed", "skipped", "failed"]
    assert [r.folder for r in again if r.status == "skipped"] == [reports[0].folder, reports[2].folder]


def test_cli_runs_a_sweep_and_exits_1_when_a_job_failed(demo_book, capsys):
    code = cli.main(["--root", str(demo_book), "sweep", str(_sweep(demo_book)), "--all", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.count("\tran\t") == 2 and out.count("\tfailed\t") == 2
    assert "job 1 failed" in err and "asked to fail" in err
