"""The numbers the papers report, read from `data/paper_values.yaml`.

That file is the single place where a number quoted from a paper is written down, each
with its source; chapters ask for a value by key and the ledger stores it next to ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from .paths import data_dir

Number = int | float
ValueOrRange = Number | tuple[Number, Number]


class PaperValueError(KeyError):
    """An unknown key, or a malformed entry in the paper-values file."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class PaperValue:
    """One reported number (or [low, high] range) with the setting it was measured in."""

    key: str
    value: ValueOrRange
    source: str
    bibkey: str
    setting: str
    n: int | None = None
    p: float | None = None

    @property
    def is_range(self) -> bool:
        return isinstance(self.value, tuple)

    def as_record(self) -> dict:
        """The `paper` field of a ledger record."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        out = {"value": value, "n": self.n, "setting": self.setting}
        if self.p is not None:
            out["p"] = self.p
        return out


def _check_number(key: str, value) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PaperValueError(f"paper value {key!r}: expected a finite number, got {value!r}")
    return value


@lru_cache(maxsize=4)
def _load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"paper values file not found: {path}")
    with path.open() as handle:
        data = yaml.safe_load(handle)
    for section in ("sources", "values", "tables"):
        if section not in data:
            raise PaperValueError(f"{path}: missing section {section!r}")
    return data


def _default_path() -> Path:
    return data_dir() / "paper_values.yaml"


def _source(data: dict, key: str, name: str) -> dict:
    try:
        return data["sources"][name]
    except KeyError:
        raise PaperValueError(
            f"paper value {key!r} names unknown source {name!r}; known sources: {sorted(data['sources'])}"
        ) from None


def paper_value(key: str, path: Path | None = None) -> PaperValue:
    """The reported value stored under `key`, e.g. ``"cgc.density_vs_wanda_rho"``."""
    data = _load(path or _default_path())
    try:
        entry = data["values"][key]
    except KeyError:
        raise PaperValueError(f"no paper value {key!r}; known keys: {', '.join(sorted(data['values']))}") from None
    raw = entry.get("value")
    if isinstance(raw, list):
        if len(raw) != 2:
            raise PaperValueError(f"paper value {key!r}: a range must be [low, high], got {raw!r}")
        low, high = (_check_number(key, v) for v in raw)
        if low > high:
            raise PaperValueError(f"paper value {key!r}: range low {low} exceeds high {high}")
        value: ValueOrRange = (low, high)
    else:
        value = _check_number(key, raw)
    source = _source(data, key, entry["source"])
    return PaperValue(
        key=key,
        value=value,
        source=source["citation"],
        bibkey=source["bibkey"],
        setting=entry["setting"],
        n=entry.get("n"),
        p=entry.get("p"),
    )


@dataclass(frozen=True)
class PaperTable:
    """A reported table (missing cells as NaN) with its source and setting."""

    key: str
    frame: pd.DataFrame
    source: str
    bibkey: str
    setting: str


def paper_table(key: str, path: Path | None = None) -> PaperTable:
    """The reported table stored under `key`, e.g. ``"ma.llama2_7b_unstructured_ppl"``."""
    data = _load(path or _default_path())
    try:
        entry = data["tables"][key]
    except KeyError:
        raise PaperValueError(f"no paper table {key!r}; known tables: {', '.join(sorted(data['tables']))}") from None
    index = pd.Index(entry["index"], name=entry["index_name"])
    columns = {}
    for name, cells in entry["columns"].items():
        if len(cells) != len(index):
            raise PaperValueError(f"table {key!r}, column {name!r}: {len(cells)} cells for {len(index)} rows")
        columns[name] = [float("nan") if c is None else float(_check_number(key, c)) for c in cells]
    source = _source(data, key, entry["source"])
    return PaperTable(
        key=key,
        frame=pd.DataFrame(columns, index=index),
        source=source["citation"],
        bibkey=source["bibkey"],
        setting=entry["setting"],
    )
