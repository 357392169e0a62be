"""The claims ledger: record format, validation, verdicts computed by rules, atomic files."""

import copy
import json

import pytest

from cgclib.ledger import Ledger, LedgerError, Ours, load_results, validate_record
from cgclib.paper_values import paper_value
from cgclib.verdicts import Equivalence, Exceeds, InRange, Overlaps


def _ledger(tmp_path):
    return Ledger("demo", directory=tmp_path, glue=False)


def _record(tmp_path, **overrides):
    ledger = _ledger(tmp_path)
    kwargs = dict(
        id="demo.rho",
        claim="Density is orthogonal to Wanda importance.",
        ours=Ours(value=-0.05, ci95=(-0.15, 0.06), p=0.4, n=48, setting="testbed-gpt2, seed 0"),
        rule=Equivalence(0.2),
        paper="cgc.density_vs_wanda_rho",
    )
    kwargs.update(overrides)
    return ledger, ledger.record(**kwargs)


def test_record_has_the_contract_fields_and_a_computed_verdict(tmp_path):
    ledger, record = _record(tmp_path)
    assert record["verdict"] == "holds"
    assert record["paper"] == {"value": -0.054, "n": 384, "setting": paper_value("cgc.density_vs_wanda_rho").setting}
    assert record["source"] == "Gupta 2026, arXiv:2603.16440"
    assert record["test"] == Equivalence(0.2).describe()
    on_disk = json.loads(ledger.path.read_text())
    assert on_disk == [record]
    assert load_results(ledger.path) == [record]


def test_verdict_follows_the_data(tmp_path):
    _, record = _record(tmp_path, ours=Ours(value=0.5, ci95=(0.35, 0.62), n=48, setting="s"))
    assert record["verdict"] == "fails"
    _, record = _record(tmp_path, ours=Ours(value=0.1, ci95=(-0.1, 0.3), n=48, setting="s"))
    assert record["verdict"] == "inconclusive"


def test_a_typed_in_verdict_is_rejected(tmp_path):
    _, record = _record(tmp_path)
    forged = copy.deepcopy(record)
    forged["verdict"] = "fails"
    with pytest.raises(LedgerError, match="does not follow from the data"):
        validate_record(forged)
    forged = copy.deepcopy(record)
    forged["test"] = "trust me"
    with pytest.raises(LedgerError, match="does not match its rule"):
        validate_record(forged)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("claim"), "lacks fields"),
        (lambda r: r.update(id="Demo rho"), "dotted lower-case"),
        (lambda r: r.update(id="other.rho"), "must start with its notebook"),
        (lambda r: r["ours"].update(value=float("nan")), "finite number"),
        (lambda r: r["ours"].update(ci95=[0.3, 0.1]), "low 0.3 above high"),
        (lambda r: r["ours"].update(p=1.5), r"p must lie in \[0, 1\]"),
        (lambda r: r["ours"].update(n=0), "positive integer"),
        (lambda r: r["ours"].update(setting=""), "non-empty string"),
        (lambda r: r.update(verdict="probably"), "verdict must be one of"),
        (lambda r: r["rule"].update(kind="Vibes"), "unknown rule kind"),
        (lambda r: r.update(paper={"value": "big"}), "paper must be null or have"),
    ],
)
def test_schema_errors_name_the_problem(tmp_path, mutate, message):
    _, record = _record(tmp_path)
    broken = copy.deepcopy(record)
    mutate(broken)
    with pytest.raises(LedgerError, match=message):
        validate_record(broken)


def test_duplicate_ids_are_refused(tmp_path):
    ledger, _ = _record(tmp_path)
    with pytest.raises(LedgerError, match="duplicate"):
        ledger.record(id="demo.rho", claim="again", ours=Ours(0.0, 1, "s"), rule=Exceeds(-1.0), source="test")


def test_a_claim_without_paper_value_needs_a_source(tmp_path):
    ledger = _ledger(tmp_path)
    with pytest.raises(LedgerError, match="source"):
        ledger.record(id="demo.x", claim="c", ours=Ours(1.0, 1, "s"), rule=Exceeds(0.0))
    record = ledger.record(id="demo.x", claim="c", ours=Ours(1.0, 1, "s"), rule=Exceeds(0.0), source="this book")
    assert record["paper"] is None and record["verdict"] == "holds"


def test_ranges_and_brackets_round_trip(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.record(
        id="demo.s0",
        claim="c",
        paper="ma.s0_unstructured",
        ours=Ours(0.663, 4, "table", bracket=(0.6, 0.7)),
        rule=Overlaps(0.55, 0.65, on="bracket"),
    )
    ledger.record(
        id="demo.range", claim="c", paper="cgc.density_range", ours=Ours(0.7, 48, "s"), rule=InRange(0.63, 0.80)
    )
    records = load_results(ledger.path)
    assert records[0]["paper"]["value"] == [0.55, 0.65]
    assert records[0]["ours"]["bracket"] == [0.6, 0.7]
    assert [r["verdict"] for r in records] == ["holds", "holds"]


def test_a_new_ledger_starts_a_fresh_file(tmp_path):
    ledger, _ = _record(tmp_path)
    assert len(load_results(ledger.path)) == 1
    fresh = _ledger(tmp_path)
    assert load_results(fresh.path) == []


def test_each_record_is_on_disk_before_the_next_is_made(tmp_path):
    ledger, _ = _record(tmp_path)
    ledger.record(id="demo.second", claim="c", ours=Ours(1.0, 1, "s"), rule=Exceeds(0.0), source="x")
    with pytest.raises(LedgerError):
        ledger.record(id="demo.third", claim="c", ours=Ours(float("inf"), 1, "s"), rule=Exceeds(0.0), source="x")
    assert [r["id"] for r in load_results(ledger.path)] == ["demo.rho", "demo.second"]


def test_load_results_rejects_malformed_files(tmp_path):
    path = tmp_path / "demo.json"
    path.write_text("{not json")
    with pytest.raises(LedgerError, match="not valid JSON"):
        load_results(path)
    path.write_text('{"id": "demo.x"}')
    with pytest.raises(LedgerError, match="JSON list"):
        load_results(path)


def test_results_land_in_the_configured_folder(results_dir):
    ledger = Ledger("demo", glue=False)
    assert ledger.path == results_dir / "demo.json"
    assert ledger.path.is_file()


def test_bad_notebook_names_are_refused(tmp_path):
    with pytest.raises(LedgerError, match="lower-case identifier"):
        Ledger("My Notebook", directory=tmp_path)
