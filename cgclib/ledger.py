"""The claims ledger: each claim a chapter tests, with the paper's number, ours, the rule
applied and the verdict that rule computed.

A notebook opens one `Ledger` named after itself and calls `record` once per claim. Each
call validates the record, computes the verdict from the measurement with the given
`verdicts.Rule`, rewrites `<results>/<notebook>.json` atomically (so an interrupted run
keeps every claim recorded so far) and glues the numbers so that prose pages can quote
them with ``{glue:text}`../notebooks/<notebook>.md::<id>.value:.3f```.

Record format (one JSON list per notebook)::

    {"id": "orthogonality.density_vs_wanda", "notebook": "orthogonality",
     "claim": "...", "source": "Gupta 2026, arXiv:2603.16440",
     "paper": {"value": -0.054, "n": 384, "setting": "GPT-2 Medium"} | null,
     "ours": {"value": ..., "ci95": [lo, hi] | null, "p": ... | null, "n": ...,
              "setting": "testbed-gpt2, seed 0", "bracket": [lo, hi] (optional)},
     "test": "<the rule in words>", "rule": {"kind": "Equivalence", "margin": 0.2},
     "verdict": "holds" | "fails" | "inconclusive", "section": "<label>" | null}
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import verdicts
from .paper_values import PaperValue, paper_value
from .paths import results_dir
from .storage import atomic_write_json

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
STEM_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
RULES = {
    cls.__name__: cls
    for cls in (
        verdicts.InRange,
        verdicts.Overlaps,
        verdicts.Equivalence,
        verdicts.Exceeds,
        verdicts.SignificantSign,
        verdicts.WithinTolerance,
    )
}


class LedgerError(ValueError):
    """A record that does not satisfy the ledger's contract."""


@dataclass(frozen=True)
class Ours:
    """Our measurement of a claimed quantity and the setting it was measured in."""

    value: float
    n: int
    setting: str
    ci95: tuple[float, float] | None = None
    p: float | None = None
    bracket: tuple[float, float] | None = None

    def measurement(self) -> verdicts.Measurement:
        return verdicts.Measurement(value=self.value, ci95=self.ci95, p=self.p, bracket=self.bracket)

    def as_record(self) -> dict:
        record = {
            "value": float(self.value),
            "ci95": None if self.ci95 is None else [float(self.ci95[0]), float(self.ci95[1])],
            "p": None if self.p is None else float(self.p),
            "n": int(self.n),
            "setting": self.setting,
        }
        if self.bracket is not None:
            record["bracket"] = [float(self.bracket[0]), float(self.bracket[1])]
        return record


def rule_to_dict(rule: verdicts.Rule) -> dict:
    if type(rule).__name__ not in RULES:
        raise LedgerError(f"unknown rule type {type(rule).__name__}; known: {sorted(RULES)}")
    return {"kind": type(rule).__name__, **asdict(rule)}


def rule_from_dict(data: dict) -> verdicts.Rule:
    kind = data.get("kind")
    if kind not in RULES:
        raise LedgerError(f"unknown rule kind {kind!r}; known: {sorted(RULES)}")
    cls = RULES[kind]
    names = {f.name for f in fields(cls)}
    params = {k: v for k, v in data.items() if k != "kind"}
    if set(params) - names:
        raise LedgerError(f"rule {kind}: unknown parameters {sorted(set(params) - names)}")
    return cls(**params)


# --- validation ------------------------------------------------------------------------


def _finite(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise LedgerError(f"{where} must be a finite number, got {x!r}")
    return float(x)


def _interval(x: Any, where: str) -> tuple[float, float]:
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        raise LedgerError(f"{where} must be [low, high], got {x!r}")
    lo, hi = _finite(x[0], f"{where}[0]"), _finite(x[1], f"{where}[1]")
    if lo > hi:
        raise LedgerError(f"{where} has low {lo} above high {hi}")
    return lo, hi


def _text(x: Any, where: str) -> str:
    if not isinstance(x, str) or not x.strip():
        raise LedgerError(f"{where} must be a non-empty string, got {x!r}")
    return x


def _count(x: Any, where: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise LedgerError(f"{where} must be a positive integer, got {x!r}")
    return x


def validate_record(record: dict, notebook: str | None = None) -> dict:
    """Check one record against the contract; return it unchanged or raise LedgerError.

    The verdict is recomputed from `ours` with the stored rule: a record whose verdict
    does not follow from its own data is rejected.
    """
    if not isinstance(record, dict):
        raise LedgerError(f"a record must be a JSON object, got {type(record).__name__}")
    required = ("id", "notebook", "claim", "source", "paper", "ours", "test", "rule", "verdict")
    missing = [k for k in required if k not in record]
    if missing:
        raise LedgerError(f"record {record.get('id', '?')!r} lacks fields {missing}")
    rid = _text(record["id"], "id")
    if not ID_PATTERN.match(rid):
        raise LedgerError(f"id {rid!r} must be dotted lower-case words, e.g. 'density.range'")
    stem = _text(record["notebook"], f"{rid}: notebook")
    if notebook is not None and stem != notebook:
        raise LedgerError(f"{rid}: record names notebook {stem!r} but sits in {notebook!r}'s results")
    if rid.split(".", 1)[0] != stem:
        raise LedgerError(f"id {rid!r} must start with its notebook's name {stem!r}")
    _text(record["claim"], f"{rid}: claim")
    _text(record["source"], f"{rid}: source")
    _text(record["test"], f"{rid}: test")

    paper = record["paper"]
    if paper is not None:
        if not isinstance(paper, dict) or "value" not in paper or "setting" not in paper:
            raise LedgerError(f"{rid}: paper must be null or have 'value' and 'setting'")
        if isinstance(paper["value"], (list, tuple)):
            _interval(paper["value"], f"{rid}: paper.value")
        else:
            _finite(paper["value"], f"{rid}: paper.value")
        if paper.get("n") is not None:
            _count(paper["n"], f"{rid}: paper.n")

    ours = record["ours"]
    if not isinstance(ours, dict):
        raise LedgerError(f"{rid}: ours must be an object")
    for key in ("value", "ci95", "p", "n", "setting"):
        if key not in ours:
            raise LedgerError(f"{rid}: ours lacks {key!r}")
    value = _finite(ours["value"], f"{rid}: ours.value")
    ci = None if ours["ci95"] is None else _interval(ours["ci95"], f"{rid}: ours.ci95")
    p = None
    if ours["p"] is not None:
        p = _finite(ours["p"], f"{rid}: ours.p")
        if not 0.0 <= p <= 1.0:
            raise LedgerError(f"{rid}: ours.p must lie in [0, 1], got {p}")
    bracket = None if ours.get("bracket") is None else _interval(ours["bracket"], f"{rid}: ours.bracket")
    _count(ours["n"], f"{rid}: ours.n")
    _text(ours["setting"], f"{rid}: ours.setting")

    if record["verdict"] not in verdicts.VERDICTS:
        raise LedgerError(f"{rid}: verdict must be one of {verdicts.VERDICTS}, got {record['verdict']!r}")
    rule = rule_from_dict(record["rule"])
    if rule.describe() != record["test"]:
        raise LedgerError(f"{rid}: test text does not match its rule ({rule.describe()!r})")
    recomputed = rule.judge(verdicts.Measurement(value=value, ci95=ci, p=p, bracket=bracket))
    if recomputed != record["verdict"]:
        raise LedgerError(
            f"{rid}: verdict {record['verdict']!r} does not follow from the data; the rule gives {recomputed!r}"
        )
    section = record.get("section")
    if section is not None:
        _text(section, f"{rid}: section")
    return record


def load_results(path: Path) -> list[dict]:
    """Read and validate one notebook's results file."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LedgerError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise LedgerError(f"{path}: must hold a JSON list of records")
    ids = set()
    for record in records:
        validate_record(record, notebook=path.stem)
        if record["id"] in ids:
            raise LedgerError(f"{path}: duplicate id {record['id']!r}")
        ids.add(record["id"])
    return records


# --- display ---------------------------------------------------------------------------


def format_number(x: float) -> str:
    """A compact rendering for tables: 3 significant digits, no scientific notation for
    ordinary magnitudes."""
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def format_paper(paper: dict | None) -> str:
    if paper is None:
        return "—"
    value = paper["value"]
    text = (
        f"[{format_number(value[0])}, {format_number(value[1])}]"
        if isinstance(value, (list, tuple))
        else format_number(value)
    )
    if paper.get("n"):
        text += f" (n={paper['n']})"
    return text


def format_ours(ours: dict) -> str:
    text = format_number(ours["value"])
    if ours.get("ci95"):
        lo, hi = ours["ci95"]
        text += f" [{format_number(lo)}, {format_number(hi)}]"
    elif ours.get("bracket"):
        lo, hi = ours["bracket"]
        text += f" (between {format_number(lo)} and {format_number(hi)})"
    if ours.get("p") is not None:
        text += f", p={format_number(ours['p'])}"
    return text + f" (n={ours['n']})"


# --- writing ---------------------------------------------------------------------------


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where glued values reach the executed notebook)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def glue_values(values: dict[str, Any], prefix: str = "") -> None:
    """Glue each value as `<prefix><key>` so prose pages can quote it; outside a kernel
    (unit tests, scripts) this does nothing."""
    if not in_kernel():
        return
    from myst_nb import glue

    for key, value in values.items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        glue(f"{prefix}{key}", value, display=False)


AT_ONCE = "CGC_CHAPTERS_AT_ONCE"  # set by `cgc execute` when it runs several chapters at once


def machine() -> str:
    """The machine a chapter ran on, in words: the GPU if there is one, else the CPU threads;
    and how many chapters shared it (`cgc execute` runs several at once)."""
    import torch

    if torch.cuda.is_available():
        where = f"one {torch.cuda.get_device_name()} GPU"
    else:
        threads = torch.get_num_threads()
        where = f"a CPU with {threads} thread{'s' if threads != 1 else ''}"
    at_once = int(os.environ.get(AT_ONCE, "1"))
    return where + (f", {at_once} chapters executing at a time" if at_once > 1 else "")


class Ledger:
    """The claims one notebook records; see the module docstring for the format."""

    def __init__(self, notebook: str, directory: Path | None = None, glue: bool | None = None):
        if not STEM_PATTERN.match(notebook):
            raise LedgerError(f"notebook name {notebook!r} must be a lower-case identifier")
        self.notebook = notebook
        self.path = Path(directory or results_dir()) / f"{notebook}.json"
        self.glue = in_kernel() if glue is None else glue
        self.records: list[dict] = []
        self.opened = time.perf_counter()
        atomic_write_json(self.path, self.records)  # a fresh run starts a fresh file

    def record(
        self,
        *,
        id: str,
        claim: str,
        ours: Ours,
        rule: verdicts.Rule,
        paper: str | PaperValue | None = None,
        source: str | None = None,
        section: str | None = None,
    ) -> dict:
        """Judge `ours` with `rule`, store the record, write the file, glue the numbers.

        `paper` is a key of `data/paper_values.yaml` (or a PaperValue), or None when the
        paper reports no number for this claim; then `source` must name the claim's origin.
        """
        if isinstance(paper, str):
            paper = paper_value(paper)
        if paper is None and not source:
            raise LedgerError(f"{id}: without a paper value, give the claim's source")
        verdict = rule.judge(ours.measurement())
        record = {
            "id": id,
            "notebook": self.notebook,
            "claim": claim,
            "source": source or paper.source,
            "paper": None if paper is None else paper.as_record(),
            "ours": ours.as_record(),
            "test": rule.describe(),
            "rule": rule_to_dict(rule),
            "verdict": verdict,
            "section": section,
        }
        validate_record(record, notebook=self.notebook)
        if any(r["id"] == id for r in self.records):
            raise LedgerError(f"duplicate claim id {id!r} in notebook {self.notebook!r}")
        self.records.append(record)
        atomic_write_json(self.path, self.records)
        if self.glue:
            self._glue(record)
        return record

    @staticmethod
    def _glue(record: dict) -> None:
        from myst_nb import glue

        rid, ours = record["id"], record["ours"]
        glue(f"{rid}.value", ours["value"], display=False)
        glue(f"{rid}.n", ours["n"], display=False)
        glue(f"{rid}.verdict", record["verdict"], display=False)
        if ours["ci95"] is not None:
            glue(f"{rid}.ci_low", ours["ci95"][0], display=False)
            glue(f"{rid}.ci_high", ours["ci95"][1], display=False)
        if ours["p"] is not None:
            glue(f"{rid}.p", ours["p"], display=False)
        if ours.get("bracket") is not None:
            glue(f"{rid}.bracket_low", ours["bracket"][0], display=False)
            glue(f"{rid}.bracket_high", ours["bracket"][1], display=False)
        paper = record["paper"]
        if paper is not None:
            if isinstance(paper["value"], list):
                glue(f"{rid}.paper_low", paper["value"][0], display=False)
                glue(f"{rid}.paper_high", paper["value"][1], display=False)
            else:
                glue(f"{rid}.paper", paper["value"], display=False)

    def summary(self):
        """The records so far as a table, for display at the end of a notebook. Also glues
        how long the chapter has run since the ledger was opened, on what machine and when
        (`<notebook>.run_minutes`, `.run_machine`, `.run_date`), for its rerun box."""
        import pandas as pd

        if self.glue:
            glue_values(
                {
                    "run_minutes": (time.perf_counter() - self.opened) / 60,
                    "run_machine": machine(),
                    "run_date": dt.date.today().isoformat(),
                },
                prefix=f"{self.notebook}.",
            )

        return pd.DataFrame(
            [
                {
                    "claim": r["id"],
                    "paper": format_paper(r["paper"]),
                    "ours": format_ours(r["ours"]),
                    "verdict": r["verdict"],
                }
                for r in self.records
            ]
        )
