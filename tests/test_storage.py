"""Atomic writes: a failure mid-write leaves the previous file intact and no debris; runs at
once compute a cached result once."""

import json
import os
from pathlib import Path

import pytest

from cgclib.storage import atomic_write_json


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "r.json"
    atomic_write_json(path, [1, 2])
    atomic_write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}
    assert os.listdir(path.parent) == ["r.json"]


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"kept": True})

    def boom(src, dst):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"kept": False})
    assert json.loads(path.read_text()) == {"kept": True}
    assert os.listdir(tmp_path) == ["r.json"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1.0, float("-inf")], {"x": {"y": float("nan")}}])
def test_non_finite_numbers_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="non-finite"):
        atomic_write_json(tmp_path / "r.json", bad)
    assert not (tmp_path / "r.json").exists()


def _compute_once_slowly(result: str, log: str) -> None:
    """What a cached computation does: check for the result, else compute it (slowly) and
    write it. The log gets a line per computation."""
    import time

    from cgclib.storage import computed_once

    with computed_once(Path(result)):
        if not Path(result).exists():
            with open(log, "a") as handle:
                handle.write("computed\n")
            time.sleep(0.5)
            atomic_write_json(Path(result), {"value": 1})


def test_runs_at_once_compute_a_cached_result_once(tmp_path):
    import multiprocessing

    result, log = tmp_path / "cache" / "table.json", tmp_path / "log"
    runs = [
        multiprocessing.get_context("spawn").Process(target=_compute_once_slowly, args=(str(result), str(log)))
        for _ in range(3)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)
    assert [run.exitcode for run in runs] == [0, 0, 0]
    assert log.read_text() == "computed\n" and json.loads(result.read_text()) == {"value": 1}
