"""A chapter's expensive tables, cached by the content of the run that computes them.

Some tables cost most of a chapter's time and change only when what they are computed from
changes: a sweep that prunes every head alone at every ratio, the evaluations of many random
orderings. A chapter asks for such a table by name (`ChapterTables.frame`), with the code
that computes it. The table is stored under the run's content key, the same key a replicate
run gets (`replicates.content_key`: the chapter's code cells, the library's source, the
papers' reported values, the parameters, the test beds' weights, the library versions), so
any change to any of them computes it afresh by the same code. The tables of the default run
ship in `data/tables` with a sha256 manifest (`cgclib.shipped`); `cgc replicates` rebuilds
them with the replicates, shipping exactly the tables the default run asked for
(`USED_LOG`). A run on a model that is not a test bed caches nothing: its weights are not
identified by a card.

Tables are stored as NumPy archives, one array per column, read back without pickle.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .shipped import ShippedStore

STORE = ShippedStore("tables")
COLUMNS = "__columns__"  # the archive entry that keeps the column order
USED_LOG = "CGC_TABLES_USED"  # a file that every table a run reads or computes is listed in, when set


class TableError(ValueError):
    """A table that cannot be stored or read back as it was."""


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """A table with a default index and named columns of numbers, booleans or text, as an
    archive `read_frame` restores exactly."""
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        raise TableError("store a table with a default index (reset_index it first)")
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise TableError(f"column names must be distinct text, got {list(frame.columns)}")
    arrays: dict[str, np.ndarray] = {COLUMNS: np.array(names, dtype=str)}
    for i, (name, column) in enumerate(zip(names, frame.columns, strict=True)):
        values = frame[column].to_numpy()
        if values.dtype == object:
            if not all(isinstance(v, str) for v in values):
                raise TableError(f"column {name!r} mixes text with other objects")
            values = values.astype(str)
        elif values.dtype.kind not in "biuf":
            raise TableError(f"column {name!r} has dtype {values.dtype}; store numbers, booleans or text")
        arrays[f"c{i}"] = values  # entries by position: a column may be called anything
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # str keys name the arrays
    return buffer.getvalue()


def read_frame(data: bytes) -> pd.DataFrame:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        names = archive[COLUMNS].tolist()
        columns = {}
        for i, name in enumerate(names):
            values = archive[f"c{i}"]
            columns[name] = values.astype(object) if values.dtype.kind == "U" else values
    return pd.DataFrame(columns, columns=names)


DIGEST_DECIMALS = 10  # inputs are digested rounded: the last bits of a float vary with the thread count


def input_digest(*arrays) -> str:
    """A short digest of the arrays a table is computed from, to put in its name where they
    come from something the run's key does not hash (an SAE read from a cache). The values
    are rounded to `DIGEST_DECIMALS` decimals first, so that a sum reduced in another order
    on another machine finds the same table."""
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(np.round(np.asarray(array, dtype=float), DIGEST_DECIMALS) + 0.0)
        digest.update(str(values.shape).encode())
        digest.update(values.tobytes())
    return digest.hexdigest()[:12]


class ChapterTables:
    """The cached tables of one chapter run with `parameters` (the chapter's values of its
    parameters, `replicates.chapter_parameters`)."""

    def __init__(self, chapter: str, parameters: dict[str, Any]):
        from .book.chapters import get_chapter
        from .models import is_testbed
        from .replicates import MODEL_PARAMETERS, SINGLE_RUN_PARAMETERS, content_key

        self.chapter = chapter
        models = [parameters.get(name) for name in MODEL_PARAMETERS]
        models += [m for name in SINGLE_RUN_PARAMETERS for m in parameters.get(name) or []]
        cacheable = all(not m or is_testbed(m) for m in models)
        self.key = content_key(chapter, get_chapter(chapter).path, parameters) if cacheable else None

    def relative(self, name: str) -> str:
        return f"{self.chapter}/{self.key}/{name}.npz"

    def frame(self, name: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The table `name` of this run: stored, or computed by `compute` and stored."""
        if self.key is None:
            return compute()
        log = os.environ.get(USED_LOG)
        if log:
            with open(log, "a") as handle:
                handle.write(self.relative(name) + "\n")
        path = STORE.find(self.relative(name))
        if path is not None:
            print(f"{name}: from {path}")
            return read_frame(path.read_bytes())
        frame = compute()
        data = frame_bytes(frame)
        STORE.put(self.relative(name), data)
        return read_frame(data)  # what a later run reads back, so both runs see the same table
