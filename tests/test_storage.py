"""Atomic writes: a failure mid-write leaves the previous file intact and no debris."""

import json
import os

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
