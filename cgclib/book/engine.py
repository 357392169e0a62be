"""Every job of a sweep run on a Dask cluster: a local one by default, or any running
scheduler (one started on Slurm nodes by dask-jobqueue, on Kubernetes, by hand).

Each job is one `cgc sweep FILE --index i` process, started by a Dask worker: a chapter runs
a Jupyter kernel of its own, and a fresh process per job frees its GPU memory and leaves no
state behind for the next. Each outcome comes back as a `JobReport`: ran, skipped (a finished
run with the job's parameters already exists, so a resubmitted sweep resumes), or failed,
with the end of what the job printed. A failed job does not stop the others.

    cgc sweep sweeps/structure-mistral.yaml --all --workers 4
    cgc sweep sweeps/structure-mistral.yaml --all --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .sweeps import load_sweep

TAIL_CHARS = 2000  # of a failed job's output, kept in its report


@dataclass(frozen=True)
class JobReport:
    index: int
    status: str  # "ran", "skipped" or "failed"
    folder: str | None  # the run folder (None when the job failed before making one)
    message: str  # the job's last line, or the end of its output when it failed


def run_job_process(sweep_path: str, index: int, runs_dir: str, root: str) -> JobReport:
    """Run job `index` in a fresh `cgc` process; what it did (executed on a Dask worker)."""
    command = [sys.executable, "-m", "cgclib.book.cli", "--root", root, "sweep", sweep_path]
    command += ["--index", str(index), "--runs-dir", runs_dir, "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    if done.returncode != 0:
        return JobReport(index, "failed", None, (done.stdout + done.stderr)[-TAIL_CHARS:])
    match = re.match(rf"job {index}: (ran|skipped)\b.*?(/\S+)$", last)
    if match is None:
        return JobReport(index, "failed", None, f"unexpected output: {last!r}")
    return JobReport(index, match.group(1), match.group(2), last)


def run_sweep(
    sweep_path: Path,
    runs_dir: Path,
    root: Path,
    workers: int | None = None,
    scheduler: str | None = None,
) -> list[JobReport]:
    """Run every job of the sweep on Dask: on `scheduler` (an address) if given, else on a
    local cluster of `workers` processes (default: one per job, at most the CPU count),
    one thread each. The reports, in job order."""
    import os

    from distributed import Client, LocalCluster

    sweep = load_sweep(sweep_path, root)  # a bad sweep file fails here, before any cluster
    n_jobs = len(sweep.jobs())
    arguments = (str(Path(sweep_path).resolve()), str(Path(runs_dir).resolve()), str(Path(root).resolve()))
    if scheduler:
        cluster, client = None, Client(scheduler)
    else:
        n_workers = workers or max(1, min(n_jobs, os.cpu_count() or 1))
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [
            client.submit(run_job_process, arguments[0], i, arguments[1], arguments[2], key=f"job-{i}", pure=False)
            for i in range(n_jobs)
        ]
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
