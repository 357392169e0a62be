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
              "setting": "testbed-gpt2, seed 0",
              "units": {"x": [...], "y": [...]}  (only for a rank correlation over units),
              "bounds": [lo, hi]  (only for a quantity with a range, e.g. a share: [0, 1]),
              "seeds": [{"model": ..., "value": ..., "ci95": ..., "p": ..., "n": ...,
                         "verdict": ...}, ...]  (only for a claim pooled over seeds)},
     "test": "<the rule in words>", "rule": {"kind": "Equivalence", "margin": 0.2},
     "verdict": "holds" | "fails" | "inconclusive", "section": "<label>" | null,
     "superseded_by": "<id>"  (only on a seed-0 record pooled into a family record)}

A record about seed 0 of a test-bed family is superseded once the chapter pools it with the
other seeds (`cgclib.replicates`): it stays in the results, where its numbers are glued for
the chapter's prose, and the ledger counts and shows the family record instead
(`current_records`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import verdicts
from .paper_values import PaperValue, paper_value
from .paths import results_dir
from .replication import SeedResult
from .storage import atomic_write_json

IMPORTED = time.perf_counter()  # a chapter imports the ledger in its first cells: its run counts from here

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
        verdicts.Describe,
    )
}
# What a record is: a claim of one of the papers; a check of the book's own mathematics (a
# theorem, lemma or invariant the book states); a specification of the test bed (a property
# the book requires of its own models). The ledger counts verdicts per kind.
KINDS = ("paper claim", "theorem", "specification")
NOT_MEASURED_SUFFIX = ".not_measured.json"  # beside a notebook's results: claims it could not measure, and why


class LedgerError(ValueError):
    """A record that does not satisfy the ledger's contract."""


@dataclass(frozen=True)
class Ours:
    """Our measurement of a claimed quantity and the setting it was measured in."""

    value: float | None  # None: not estimable from these data (the verdict is inconclusive)
    n: int
    setting: str
    ci95: tuple[float, float] | None = None
    p: float | None = None
    seeds: tuple[SeedResult, ...] = ()  # for a pooled estimate: each seed's own measurement
    # for a rank correlation over units (heads, blocks): the paired values it was computed
    # from, so that the seeds' units can be pooled (`replication.stratified_spearman`)
    units: tuple[Sequence[float], Sequence[float]] | None = None
    # the range the quantity can take (a share: (0, 1); a correlation: (-1, 1)): the value must
    # lie in it, and an interval pooled over seeds is cut to it
    bounds: tuple[float, float] | None = None

    def measurement(self) -> verdicts.Measurement:
        return verdicts.Measurement(value=self.value, ci95=self.ci95, p=self.p)

    def as_record(self, rule: verdicts.Rule | None = None) -> dict:
        """The record's `ours`; with seeds, each seed's verdict under `rule` beside its numbers."""
        record = _measured(self.value, self.ci95, self.p, self.n)
        record["setting"] = self.setting
        if self.units is not None:
            x, y = (np.asarray(v, dtype=float) for v in self.units)
            record["units"] = {"x": x.tolist(), "y": y.tolist()}
        if self.bounds is not None:
            record["bounds"] = [float(self.bounds[0]), float(self.bounds[1])]
        if self.seeds:
            if rule is None:
                raise LedgerError("a pooled measurement needs its rule to judge each seed")
            record["seeds"] = [
                {"model": s.model, **_measured(s.value, s.ci95, s.p, s.n), "verdict": rule.verdict(s.measurement())}
                for s in self.seeds
            ]
        return record


def _measured(value, ci95, p, n) -> dict:
    return {
        "value": None if value is None else float(value),
        "ci95": None if ci95 is None else [float(ci95[0]), float(ci95[1])],
        "p": None if p is None else float(p),
        "n": int(n),
    }


def rule_to_dict(rule: verdicts.Rule) -> dict:
    if type(rule).__name__ not in RULES:
        raise LedgerError(f"unknown rule type {type(rule).__name__}; known: {sorted(RULES)}")
    return {"kind": type(rule).__name__, **asdict(rule)}  # type: ignore[call-overload]  # every rule is a dataclass


def rule_from_dict(data: dict) -> verdicts.Rule:
    kind = data.get("kind")
    if kind not in RULES:
        raise LedgerError(f"unknown rule kind {kind!r}; known: {sorted(RULES)}")
    cls = RULES[kind]
    names = {f.name for f in fields(cls)}
    params = {k: v for k, v in data.items() if k != "kind"}
    if set(params) - names:
        raise LedgerError(f"rule {kind}: unknown parameters {sorted(set(params) - names)}")
    for name, value in params.items():  # json reads Infinity and NaN: a rule bound so cannot fail
        if isinstance(value, float) and not math.isfinite(value):
            raise LedgerError(f"rule {kind}: parameter {name} must be finite, got {value}")
    try:
        return cls(**params)
    except (TypeError, verdicts.RuleError) as exc:
        raise LedgerError(f"rule {kind}: {exc}") from None


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
    required = ("id", "notebook", "kind", "claim", "source", "paper", "ours", "test", "rule", "verdict")
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
    if record["kind"] not in KINDS:
        raise LedgerError(f"{rid}: kind must be one of {KINDS}, got {record['kind']!r}")
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
    value = None if ours["value"] is None else _finite(ours["value"], f"{rid}: ours.value")
    ci = None if ours["ci95"] is None else _interval(ours["ci95"], f"{rid}: ours.ci95")
    if value is None and ci is not None:
        raise LedgerError(f"{rid}: a value that is not estimable cannot have a confidence interval")
    p = None
    if ours["p"] is not None:
        p = _finite(ours["p"], f"{rid}: ours.p")
        if not 0.0 <= p <= 1.0:
            raise LedgerError(f"{rid}: ours.p must lie in [0, 1], got {p}")
    _count(ours["n"], f"{rid}: ours.n")
    _text(ours["setting"], f"{rid}: ours.setting")
    if ours.get("units") is not None:
        _validate_units(ours["units"], rid)
    if ours.get("bounds") is not None:
        low, high = _interval(ours["bounds"], f"{rid}: ours.bounds")
        if not low < high:
            raise LedgerError(f"{rid}: ours.bounds must be an increasing pair, got {ours['bounds']}")
        tolerance = 1e-9 * max(1.0, abs(low), abs(high))  # a mean of values on the bound
        if value is not None and not low - tolerance <= value <= high + tolerance:
            raise LedgerError(f"{rid}: ours.value {value} lies outside its bounds [{low}, {high}]")

    if record["verdict"] not in verdicts.OUTCOMES:
        raise LedgerError(f"{rid}: verdict must be one of {verdicts.OUTCOMES}, got {record['verdict']!r}")
    rule = rule_from_dict(record["rule"])
    seeds = ours.get("seeds", [])
    if not isinstance(seeds, list):
        raise LedgerError(f"{rid}: ours.seeds must be a list of per-seed measurements")
    for seed in seeds:
        _validate_seed(seed, rule, rid)
    if rule.describe() != record["test"]:
        raise LedgerError(f"{rid}: test text does not match its rule ({rule.describe()!r})")
    try:
        recomputed = rule.verdict(verdicts.Measurement(value=value, ci95=ci, p=p))
    except verdicts.RuleError as exc:
        raise LedgerError(f"{rid}: {exc}") from None
    if recomputed != record["verdict"]:
        raise LedgerError(
            f"{rid}: verdict {record['verdict']!r} does not follow from the data; the rule gives {recomputed!r}"
        )
    section = record.get("section")
    if section is not None:
        _text(section, f"{rid}: section")
    superseded_by = record.get("superseded_by")
    if superseded_by is not None and not ID_PATTERN.match(_text(superseded_by, f"{rid}: superseded_by")):
        raise LedgerError(f"{rid}: superseded_by must name a record id, got {superseded_by!r}")
    return record


def _validate_units(units: Any, rid: str) -> None:
    if not isinstance(units, dict) or set(units) != {"x", "y"}:
        raise LedgerError(f"{rid}: ours.units must be {{'x': [...], 'y': [...]}}")
    x, y = units["x"], units["y"]
    if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y):
        raise LedgerError(f"{rid}: ours.units needs lists x and y of equal length")
    for i, v in enumerate(x + y):
        _finite(v, f"{rid}: ours.units value {i}")


def _validate_seed(seed: Any, rule: verdicts.Rule, rid: str) -> None:
    """One seed's entry of a pooled record: its numbers, and a verdict that follows from them."""
    if not isinstance(seed, dict) or any(k not in seed for k in ("model", "value", "ci95", "p", "n", "verdict")):
        raise LedgerError(f"{rid}: each seed needs model, value, ci95, p, n and verdict")
    where = f"{rid}: seed {seed['model']!r}"
    value = None if seed["value"] is None else _finite(seed["value"], f"{where} value")
    ci = None if seed["ci95"] is None else _interval(seed["ci95"], f"{where} ci95")
    if value is None and ci is not None:
        raise LedgerError(f"{where}: a value that is not estimable cannot have a confidence interval")
    p = None if seed["p"] is None else _finite(seed["p"], f"{where} p")
    if p is not None and not 0.0 <= p <= 1.0:
        raise LedgerError(f"{where}: p must lie in [0, 1], got {p}")
    _count(seed["n"], f"{where} n")
    try:
        recomputed = rule.verdict(verdicts.Measurement(value=value, ci95=ci, p=p))
    except verdicts.RuleError as exc:
        raise LedgerError(f"{where}: {exc}") from None
    if recomputed != seed["verdict"]:
        raise LedgerError(f"{where}: verdict {seed['verdict']!r} does not follow from its data ({recomputed!r})")


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
    dangling = [  # a record of another chapter is checked where the whole ledger is read
        r["id"]
        for r in records
        if (r.get("superseded_by") or "").startswith(f"{path.stem}.") and r["superseded_by"] not in ids
    ]
    if dangling:
        raise LedgerError(f"{path}: {dangling} are superseded by records the file does not hold")
    return records


def current_records(records: list[dict]) -> list[dict]:
    """The records the ledger counts: all but seed-0 records pooled into a family record."""
    return [r for r in records if not r.get("superseded_by")]


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


def verdict_counts(records: list[dict], verdict_of: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Per kind, how many records carry each outcome (`verdict_of`: e.g. the adjusted
    verdicts by id; default the records' own)."""
    counts = {kind: dict.fromkeys(verdicts.OUTCOMES, 0) for kind in KINDS}
    for r in records:
        counts[r["kind"]][(verdict_of or {}).get(r["id"], r["verdict"])] += 1
    return counts


def format_counts(counts: dict[str, int]) -> str:
    """'12 hold, 3 fail, 4 inconclusive' (and descriptive records where there are any)."""
    words = {"holds": "hold", "fails": "fail", "inconclusive": "inconclusive", "descriptive": "descriptive"}
    return ", ".join(f"{counts[v]} {words[v]}" for v in verdicts.OUTCOMES if counts[v] or v in verdicts.VERDICTS)


def format_ours(ours: dict) -> str:
    text = "not estimable" if ours["value"] is None else format_number(ours["value"])
    if ours.get("ci95"):
        lo, hi = ours["ci95"]
        text += f" [{format_number(lo)}, {format_number(hi)}]"
    if ours.get("p") is not None:
        text += f", p={format_number(ours['p'])}"
    return text + f" (n={ours['n']})"


def format_seeds(record: dict) -> str:
    """Each seed's verdict counted ('holds on 2 of 3, fails on 1 of 3'), or '' for a record
    about one model."""
    seeds = record["ours"].get("seeds")
    if not seeds:
        return ""
    counts = {v: sum(s["verdict"] == v for s in seeds) for v in verdicts.OUTCOMES}
    return ", ".join(f"{v} on {c} of {len(seeds)}" for v, c in counts.items() if c)


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
        self.not_measured: list[dict] = []
        self.not_measured_path = self.path.with_name(f"{notebook}{NOT_MEASURED_SUFFIX}")
        atomic_write_json(self.path, self.records)  # a fresh run starts a fresh file
        atomic_write_json(self.not_measured_path, self.not_measured)

    def record(
        self,
        *,
        id: str,
        claim: str,
        kind: str,
        ours: Ours,
        rule: verdicts.Rule,
        paper: str | PaperValue | None = None,
        source: str | None = None,
        section: str | None = None,
    ) -> dict:
        """Judge `ours` with `rule`, store the record, write the file, glue the numbers.

        `kind` is one of `KINDS`. `paper` is a key of `data/paper_values.yaml` (or a
        PaperValue), or None when the paper reports no number for this claim; then `source`
        must name the claim's origin.
        """
        if isinstance(paper, str):
            paper = paper_value(paper)
        if paper is None and not source:
            raise LedgerError(f"{id}: without a paper value, give the claim's source")
        origin = source or (paper.source if paper is not None else None)
        verdict = rule.verdict(ours.measurement())
        record = {
            "id": id,
            "notebook": self.notebook,
            "kind": kind,
            "claim": claim,
            "source": origin,
            "paper": None if paper is None else paper.as_record(),
            "ours": ours.as_record(rule),
            "test": rule.describe(),
            "rule": rule_to_dict(rule),
            "verdict": verdict,
            "section": section,
        }
        return self._append(record)

    def not_applicable(self, id: str, reason: str) -> None:
        """Say that claim `id`, which this chapter records for other models, is not measured
        in this run, and why (a model without capability probes, too few blocks). Kept in
        `<results>/<notebook>.not_measured.json`, so that no claim disappears in silence."""
        if not ID_PATTERN.match(id):
            raise LedgerError(f"claim id {id!r} must be dotted lower-case identifiers")
        if not reason.strip():
            raise LedgerError(f"{id}: say why the claim is not measured")
        if any(r["id"] == id for r in self.records) or any(r["id"] == id for r in self.not_measured):
            raise LedgerError(f"claim {id!r} is already recorded or declared not measured")
        self.not_measured.append({"id": id, "notebook": self.notebook, "reason": reason})
        atomic_write_json(self.not_measured_path, self.not_measured)
        print(f"not measured: {id} ({reason})")

    def _append(self, record: dict) -> dict:
        validate_record(record, notebook=self.notebook)
        if any(r["id"] == record["id"] for r in self.records + self.not_measured):
            raise LedgerError(f"duplicate claim id {record['id']!r} in notebook {self.notebook!r}")
        self.records.append(record)
        atomic_write_json(self.path, self.records)
        if self.glue:
            self._glue(record)
        return record

    def pool_over_seeds(
        self, parameters: dict, seeds: list[int], pooled_elsewhere: dict[str, str] | None = None
    ) -> list[dict]:
        """Pool every seed-0 test-bed record so far with the same chapter's records on the
        training seeds `seeds` (`cgclib.replicates`: cached by content, run on a miss); add
        the family records, mark the seed-0 ones superseded, return the family records.

        `pooled_elsewhere` maps a claim (the id's last part) to the id of the family record
        that another chapter pools by a rule of its own (`{family}` in it is filled in): that
        seed-0 record is marked superseded by it and not pooled here."""
        from .replicates import family_id, pool_records, replicate_records

        if not seeds:
            return []
        replicates = replicate_records(self.notebook, parameters, seeds)
        if not replicates:
            return []
        elsewhere = pooled_elsewhere or {}
        for record in self.records:
            found = family_id(record["id"])
            claim = record["id"].rsplit(".", 1)[1]
            if found is not None and claim in elsewhere:
                record["superseded_by"] = elsewhere[claim].format(family=found[1])
        own = [r for r in self.records if r["id"].rsplit(".", 1)[1] not in elsewhere]
        added = []
        for seed_zero, family in pool_records(own, replicates):
            added.append(self._append(family))
            seed_zero["superseded_by"] = family["id"]
        atomic_write_json(self.path, self.records)
        return added

    @staticmethod
    def _glue(record: dict) -> None:
        from myst_nb import glue

        rid, ours = record["id"], record["ours"]
        if ours["value"] is not None:
            glue(f"{rid}.value", ours["value"], display=False)
        glue(f"{rid}.n", ours["n"], display=False)
        glue(f"{rid}.verdict", record["verdict"], display=False)
        if ours["ci95"] is not None:
            glue(f"{rid}.ci_low", ours["ci95"][0], display=False)
            glue(f"{rid}.ci_high", ours["ci95"][1], display=False)
        if ours["p"] is not None:
            glue(f"{rid}.p", ours["p"], display=False)
        if ours.get("seeds"):
            glue(f"{rid}.seeds", format_seeds(record), display=False)
        paper = record["paper"]
        if paper is not None:
            if isinstance(paper["value"], list):
                glue(f"{rid}.paper_low", paper["value"][0], display=False)
                glue(f"{rid}.paper_high", paper["value"][1], display=False)
            else:
                glue(f"{rid}.paper", paper["value"], display=False)

    def summary(self):
        """The records so far as a table, for display at the end of a notebook. Also glues
        how long the chapter has run since it imported this module, on what machine and when
        (`<notebook>.run_time`, `.run_machine`, `.run_date`), for its rerun box."""
        import pandas as pd

        if self.glue:
            glue_values(
                {
                    "run_time": format_duration(time.perf_counter() - IMPORTED),
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
                    "seeds": format_seeds(r),
                    "pooled in": r.get("superseded_by") or "",
                }
                for r in self.records
            ]
        )


def adjusted_verdicts(records: list[dict]) -> dict[str, str]:
    """The verdict of every record after Holm's correction over the family of all records
    whose rule is a significance test (`Rule.is_significance_test`): each such rule is
    judged again with its Holm-adjusted p-value against its own alpha. Records of other
    rules keep their verdict.

    Holm rather than Benjamini-Hochberg: each verdict is read on its own, as a statement
    about one claim, so the book controls the chance of any false verdict among them (the
    family-wise error), and Holm does so whatever the dependence between tests that share
    models and data."""
    tested = {
        r["id"]: r["ours"]["p"]
        for r in records
        if rule_from_dict(r["rule"]).is_significance_test and r["ours"]["value"] is not None
    }
    adjusted_p = verdicts.holm_adjusted(tested)
    out = {}
    for r in records:
        if r["id"] in adjusted_p:
            rule = rule_from_dict(r["rule"])
            m = verdicts.Measurement(value=r["ours"]["value"], p=adjusted_p[r["id"]])
            out[r["id"]] = rule.verdict(m)
        else:
            out[r["id"]] = r["verdict"]
    return out


def format_duration(seconds: float) -> str:
    """A run time as a reader reads it: '8 s' under a minute, '3.4 min' under an hour,
    '2.1 h' beyond (so that a short run never reads '0.0 minutes')."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds, got {seconds}")
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    if seconds < 3570:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
