"""The claims ledger: record format, validation, verdicts computed by rules, atomic files."""

import copy
import json

import pytest

from cgclib.ledger import (
    Ledger,
    LedgerError,
    Ours,
    adjusted_verdicts,
    format_ours,
    load_results,
    validate_record,
    verdict_counts,
)
from cgclib.paper_values import paper_value
from cgclib.verdicts import Describe, Equivalence, Exceeds, InRange, Overlaps, SignificantSign


def _ledger(tmp_path):
    return Ledger("demo", directory=tmp_path, glue=False)


def _record(tmp_path, **overrides):
    ledger = _ledger(tmp_path)
    kwargs = dict(
        id="demo.rho",
        kind="paper claim",
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
        ledger.record(
            kind="paper claim", id="demo.rho", claim="again", ours=Ours(0.0, 1, "s"), rule=Exceeds(-1.0), source="test"
        )


def test_a_claim_without_paper_value_needs_a_source(tmp_path):
    ledger = _ledger(tmp_path)
    with pytest.raises(LedgerError, match="source"):
        ledger.record(kind="paper claim", id="demo.x", claim="c", ours=Ours(1.0, 1, "s"), rule=Exceeds(0.0))
    record = ledger.record(
        kind="paper claim", id="demo.x", claim="c", ours=Ours(1.0, 1, "s"), rule=Exceeds(0.0), source="this book"
    )
    assert record["paper"] is None and record["verdict"] == "holds"


def test_ranges_and_brackets_round_trip(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.record(
        id="demo.s0",
        kind="paper claim",
        claim="c",
        paper="ma.s0_unstructured",
        ours=Ours(0.61, 7, "table", ci95=(0.58, 0.63)),
        rule=Overlaps(0.55, 0.65),
    )
    ledger.record(
        id="demo.range",
        kind="paper claim",
        claim="c",
        paper="cgc.density_range",
        ours=Ours(0.7, 48, "s"),
        rule=InRange(0.63, 0.80),
    )
    records = load_results(ledger.path)
    assert records[0]["paper"]["value"] == [0.55, 0.65]
    assert records[0]["ours"]["ci95"] == [0.58, 0.63]
    assert [r["verdict"] for r in records] == ["holds", "holds"]


def test_a_new_ledger_starts_a_fresh_file(tmp_path):
    ledger, _ = _record(tmp_path)
    assert len(load_results(ledger.path)) == 1
    fresh = _ledger(tmp_path)
    assert load_results(fresh.path) == []


def test_each_record_is_on_disk_before_the_next_is_made(tmp_path):
    ledger, _ = _record(tmp_path)
    ledger.record(
        kind="paper claim", id="demo.second", claim="c", ours=Ours(1.0, 1, "s"), rule=Exceeds(0.0), source="x"
    )
    with pytest.raises(LedgerError):
        ledger.record(
            kind="paper claim",
            id="demo.third",
            claim="c",
            ours=Ours(float("inf"), 1, "s"),
            rule=Exceeds(0.0),
            source="x",
        )
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


def test_every_record_has_a_known_kind(tmp_path):
    _, record = _record(tmp_path)
    assert record["kind"] == "paper claim"
    for kind in (None, "claim", ""):
        forged = copy.deepcopy(record)
        forged["kind"] = kind
        with pytest.raises(LedgerError, match="kind must be one of"):
            validate_record(forged)
    with pytest.raises(LedgerError, match="kind must be one of"):
        _record(tmp_path, kind="opinion")


def test_a_quantity_that_cannot_be_estimated_is_inconclusive_under_any_rule(tmp_path):
    for rule in (Equivalence(0.2), InRange(0.5, 0.6, use_ci=True), Overlaps(0.55, 0.65), Exceeds(0.0)):
        _, record = _record(tmp_path, ours=Ours(value=None, n=4, setting="four points"), rule=rule)
        assert record["verdict"] == "inconclusive"
        assert format_ours(record["ours"]).startswith("not estimable")
    _, record = _record(tmp_path, ours=Ours(value=None, n=4, setting="s"), rule=Equivalence(0.2))
    forged = copy.deepcopy(record)
    forged["ours"]["ci95"] = [0.1, 0.2]
    with pytest.raises(LedgerError, match="not estimable cannot have"):
        validate_record(forged)


def test_a_descriptive_record_carries_no_verdict_and_cannot_be_forged_into_one(tmp_path):
    rule = Describe("the paper measured GPT-2 Medium, we measure a test bed")
    _, record = _record(tmp_path, rule=rule)
    assert record["verdict"] == "descriptive"
    assert record["test"].startswith("descriptive, no verdict")
    forged = copy.deepcopy(record)
    forged["verdict"] = "holds"
    with pytest.raises(LedgerError, match="does not follow from the data"):
        validate_record(forged)


def _p_record(tmp_path, rid, p, value=-0.3):
    ledger = Ledger(rid.split(".")[0], directory=tmp_path, glue=False)
    return ledger.record(
        id=rid,
        kind="paper claim",
        claim="c",
        ours=Ours(value=value, n=48, setting="s", p=p),
        rule=SignificantSign(-1),
        source="x",
    )


def test_holm_correction_turns_marginal_significance_inconclusive(tmp_path):
    records = [
        _p_record(tmp_path, "a.strong", 0.001),
        _p_record(tmp_path, "b.marginal", 0.038),
        _p_record(tmp_path, "c.weak", 0.2),
    ]
    assert [r["verdict"] for r in records] == ["holds", "holds", "inconclusive"]
    adjusted = adjusted_verdicts(records)
    # Holm: 3 x 0.001 < 0.05 holds; max(0.003, 2 x 0.038) = 0.076 is not; 0.2 stays inconclusive
    assert adjusted == {"a.strong": "holds", "b.marginal": "inconclusive", "c.weak": "inconclusive"}
    counts = verdict_counts(records, adjusted)["paper claim"]
    assert (counts["holds"], counts["inconclusive"]) == (1, 2)


def test_rules_that_are_not_significance_tests_keep_their_verdict(tmp_path):
    _, record = _record(tmp_path)
    assert adjusted_verdicts([record]) == {record["id"]: record["verdict"]}


def test_a_stored_rule_that_cannot_fail_or_cannot_be_applied_is_rejected(tmp_path):
    _, record = _record(tmp_path)
    forged = copy.deepcopy(record)
    forged["rule"]["margin"] = float("inf")  # Equivalence within an infinite margin always holds
    with pytest.raises(LedgerError, match="must be finite"):
        validate_record(forged)
    forged = copy.deepcopy(record)
    del forged["rule"]["margin"]
    with pytest.raises(LedgerError, match="Equivalence"):
        validate_record(forged)
    _, record = _record(tmp_path, ours=Ours(value=-0.3, n=48, setting="s", p=0.01), rule=SignificantSign(-1))
    forged = copy.deepcopy(record)
    forged["ours"]["p"] = None
    with pytest.raises(LedgerError, match="p-value"):
        validate_record(forged)


def test_holm_is_step_down_and_monotone():
    from cgclib.verdicts import holm_adjusted

    adjusted = holm_adjusted({"a": 0.02, "b": 0.021, "c": 0.5})
    assert adjusted["a"] == pytest.approx(0.06) and adjusted["b"] == pytest.approx(0.06)
    assert adjusted["c"] == pytest.approx(0.5)


def test_a_pooled_record_carries_each_seed_s_verdict_and_a_forged_one_is_rejected(tmp_path):
    from cgclib.ledger import format_seeds
    from cgclib.replication import SeedResult, random_effects

    seeds = (
        SeedResult("testbed-gpt2", -0.02, (-0.12, 0.08), 48),
        SeedResult("testbed-gpt2-seed1", 0.05, (-0.05, 0.15), 48),
        SeedResult("testbed-gpt2-seed2", 0.4, (0.3, 0.5), 48),
    )
    pooled = random_effects(seeds)
    ours = Ours(value=pooled.value, ci95=pooled.ci95, n=144, setting="testbed-gpt2 family, 3 seeds", seeds=seeds)
    _, record = _record(tmp_path, ours=ours)
    assert [s["verdict"] for s in record["ours"]["seeds"]] == ["holds", "holds", "fails"]
    assert record["verdict"] == "inconclusive"  # the pooled t(2) interval reaches past the margin
    assert format_seeds(record) == "holds on 2 of 3, fails on 1 of 3"
    forged = copy.deepcopy(record)
    forged["ours"]["seeds"][2]["verdict"] = "holds"
    with pytest.raises(LedgerError, match="seed 'testbed-gpt2-seed2': verdict 'holds' does not follow"):
        validate_record(forged)
    truncated = copy.deepcopy(record)
    del truncated["ours"]["seeds"][0]["n"]
    with pytest.raises(LedgerError, match="each seed needs"):
        validate_record(truncated)
    for mutate, message in (
        (lambda r: r["ours"].update(seeds=None), "must be a list"),
        (lambda r: r["ours"]["seeds"][0].update(p=1.5), "p must lie in"),
        (lambda r: r["ours"]["seeds"][0].update(value=None), "not estimable cannot have"),
    ):
        broken = copy.deepcopy(record)
        mutate(broken)
        with pytest.raises(LedgerError, match=message):
            validate_record(broken)
    with pytest.raises(LedgerError, match="needs its rule"):
        ours.as_record()
    _, single = _record(tmp_path)
    assert "seeds" not in single["ours"] and format_seeds(single) == ""


def test_a_claim_not_measured_is_kept_with_its_reason_and_never_doubles_a_record(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.not_applicable("demo.model.capability", "no capability probes")
    kept = json.loads((tmp_path / "demo.not_measured.json").read_text())
    assert kept == [{"id": "demo.model.capability", "notebook": "demo", "reason": "no capability probes"}]
    with pytest.raises(LedgerError, match="already recorded or declared not measured"):
        ledger.not_applicable("demo.model.capability", "again")
    with pytest.raises(LedgerError, match="say why"):
        ledger.not_applicable("demo.model.other", "  ")
    with pytest.raises(LedgerError, match="dotted lower-case"):
        ledger.not_applicable("Demo Claim", "a reason")
    with pytest.raises(LedgerError, match="duplicate claim id"):  # a record cannot follow it either
        ledger.record(
            id="demo.model.capability",
            kind="paper claim",
            claim="c",
            ours=Ours(1.0, 1, "s"),
            rule=Exceeds(0.0),
            source="test",
        )


def test_a_run_time_never_reads_zero_minutes():
    from cgclib.ledger import format_duration

    assert format_duration(0.2) == "1 s"
    assert format_duration(8.4) == "8 s"
    assert format_duration(59.4) == "59 s"
    assert format_duration(59.6) == "1.0 min"
    assert format_duration(200) == "3.3 min"
    assert format_duration(7560) == "2.1 h"
    assert all(not format_duration(s).startswith("0") for s in (0.0, 0.4, 1e-9, 30, 61, 3600))
    with pytest.raises(ValueError, match="finite"):
        format_duration(float("nan"))
