"""Cached chapter tables: stored exactly, keyed by the run's content, computed once, checked
against the manifest once shipped."""

import numpy as np
import pandas as pd
import pytest

from cgclib import tables
from cgclib.shipped import ShippedFileError
from cgclib.tables import ChapterTables, TableError, frame_bytes, input_digest, read_frame


def _sweep():
    return pd.DataFrame(
        {
            "layer": np.array([0, 0, 1], dtype=np.int64),
            "ratio": [0.0, 0.5, 0.1 + 0.2],  # a float that text would round
            "collapsed": [False, True, True],
            "metric": ["language", "copy", "dyck"],
            "file": [3, 2, 1],  # a name np.savez would take for its own argument
        }
    )


def test_a_table_round_trips_exactly():
    frame = _sweep()
    back = read_frame(frame_bytes(frame))
    pd.testing.assert_frame_equal(back, frame)
    assert back["ratio"].iloc[2] == 0.1 + 0.2


@pytest.mark.parametrize(
    "bad, message",
    [
        (_sweep().set_index("layer"), "default index"),
        (pd.DataFrame({"x": ["a", 1]}), "mixes text"),
        (pd.DataFrame({"when": pd.to_datetime(["2026-01-01"])}), "dtype"),
    ],
)
def test_a_table_that_cannot_be_stored_exactly_is_refused(bad, message):
    with pytest.raises(TableError, match=message):
        frame_bytes(bad)


def test_a_table_is_computed_once_per_content_and_read_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CGC_CACHE_DIR", str(tmp_path))
    params = {"model": "testbed-gpt2", "second_model": "", "seed": 12345}
    calls = []

    def compute():
        calls.append(1)
        return _sweep()

    first = ChapterTables("orthogonality", params).frame("sweep", compute)
    again = ChapterTables("orthogonality", params).frame("sweep", compute)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again)
    ChapterTables("orthogonality", {**params, "seed": 12346}).frame("sweep", compute)
    assert len(calls) == 2  # other parameters, another key
    assert ChapterTables("orthogonality", {**params, "model": "gpt2-medium"}).key is None  # a hub model: no cache


def test_a_shipped_table_is_checked_against_its_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("CGC_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    run = ChapterTables("orthogonality", {"model": "testbed-gpt2", "second_model": "", "seed": 7})
    log = tmp_path / "used.txt"
    monkeypatch.setenv(tables.USED_LOG, str(log))
    run.frame("sweep", _sweep)
    files = log.read_text().split()
    assert files == [run.relative("sweep")]  # the run lists what it used, for shipping
    monkeypatch.setenv("CGC_DATA_DIR", str(data))  # ship into a scratch data folder
    assert tables.STORE.ship({"orthogonality": files}) == 1
    shipped = data / "tables" / files[0]
    assert shipped.is_file()
    for cached in (tmp_path / "cache").rglob("*.npz"):
        cached.unlink()
    pd.testing.assert_frame_equal(read_frame(tables.STORE.find(files[0]).read_bytes()), _sweep())
    shipped.write_bytes(shipped.read_bytes()[:-8])
    with pytest.raises(ShippedFileError, match="does not match its sha256"):
        tables.STORE.find(files[0])


def test_the_input_digest_follows_the_values_and_their_shape():
    a = np.arange(6.0)
    assert input_digest(a) == input_digest(a.copy())
    assert input_digest(a) != input_digest(a.reshape(2, 3))
    b = a.copy()
    b[0] = 1e-6
    assert input_digest(a) != input_digest(b)
    assert input_digest(a) == input_digest(a + 1e-15)  # a float's last bits: the same inputs
