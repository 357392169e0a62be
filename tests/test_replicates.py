"""Pooling a chapter's claims over the test-bed family's training seeds, and the content-keyed
cache of the replicate runs."""

import json

import pytest

from cgclib import replicates
from cgclib.ledger import Ledger, LedgerError, Ours, current_records, load_results, validate_record
from cgclib.models import CARD_FILE
from cgclib.replicates import (
    ReplicateError,
    family_id,
    pool_records,
    replicate_parameters,
    replicate_records,
)
from cgclib.replication import SeedResult
from cgclib.shipped import ShippedFileError
from cgclib.testbed import CONFIGS
from cgclib.verdicts import Exceeds, SignificantSign


def test_replicate_parameters_swap_each_seed_zero_test_bed_for_its_replicate():
    params = {"model": "testbed-gpt2", "second_model": "testbed-llama", "seed": 0, "replicates": [1, 2]}
    assert replicate_parameters(params, 2) == {
        "model": "testbed-gpt2-seed2",
        "second_model": "testbed-llama-seed2",
        "seed": 2000,  # its own probes, calibration text and SAE initialisations
        "replicates": [],
    }
    one = replicate_parameters({"model": "testbed-llama", "second_model": "", "replicates": [1]}, 1)
    assert one == {"model": "testbed-llama-seed1", "second_model": "", "replicates": []}
    assert replicate_parameters({"model": "gpt2-medium", "second_model": "testbed-gpt2-v1"}, 1) is None
    deep = {"model": "testbed-gpt2", "deep_models": ["testbed-gpt2-deep"], "replicates": [1]}
    assert replicate_parameters(deep, 1)["deep_models"] == []  # trained once: no replicate to run


def test_family_ids_are_derived_from_seed_zero_records_only():
    assert family_id("orthogonality.testbed_gpt2.density_vs_wanda") == (
        "orthogonality.family_gpt2.density_vs_wanda",
        "gpt2",
    )
    assert family_id("testbed.testbed_llama.capabilities_at_90") == ("testbed.family_llama.capabilities_at_90", "llama")
    assert family_id("testbed.testbed_gpt2_seed1.capabilities_at_90") is None
    assert family_id("density.theorem_breadth_bound") is None
    assert family_id("density.gpt2_medium.range") is None


def _record(ledger, model_slug, value, ci=None, p=None, rule=None, name="effect"):
    return ledger.record(
        id=f"demo.{model_slug}.{name}",
        claim="the effect is positive",
        kind="paper claim",
        ours=Ours(value=value, n=50, setting=model_slug, ci95=ci, p=p),
        rule=rule or Exceeds(0.0),
        source="a test",
    )


def _replicate_runs(tmp_path, values, rule=None, ci_half=0.05):
    """Records of the demo chapter on seeds 1.. with the given values."""
    out = {}
    for seed, value in enumerate(values, start=1):
        other = Ledger("demo", directory=tmp_path / f"seed{seed}", glue=False)
        ci = None if ci_half is None else (value - ci_half, value + ci_half)
        _record(other, f"testbed_gpt2_seed{seed}", value, ci, rule=rule)
        out[seed] = other.records
    return out


def test_pooled_record_is_judged_by_the_claim_s_rule_on_the_pooled_interval(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    _record(ledger, "testbed_gpt2", 0.30, (0.25, 0.35))  # seed 0: clearly positive
    _record(ledger, "gpt2_medium", 0.30, (0.25, 0.35))  # another model: not pooled
    pairs = pool_records(ledger.records, _replicate_runs(tmp_path, [-0.2, 0.05]))
    assert len(pairs) == 1
    seed_zero, family = pairs[0]
    assert seed_zero["id"] == "demo.testbed_gpt2.effect" and family["id"] == "demo.family_gpt2.effect"
    validate_record(family, notebook="demo")  # the verdict follows from the pooled numbers
    seeds = family["ours"]["seeds"]
    assert [s["model"] for s in seeds] == ["testbed-gpt2", "testbed-gpt2-seed1", "testbed-gpt2-seed2"]
    assert [s["verdict"] for s in seeds] == ["holds", "fails", "inconclusive"]
    # seeds that disagree: the recipe-level interval straddles 0 although seed 0's does not
    assert family["ours"]["ci95"][0] < 0 < family["ours"]["ci95"][1]
    assert family["verdict"] == "inconclusive"
    assert family["ours"]["n"] == 150


def test_seeds_that_agree_give_the_seed_zero_verdict_to_the_family(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    _record(ledger, "testbed_gpt2", 0.30, (0.25, 0.35))
    _, family = pool_records(ledger.records, _replicate_runs(tmp_path, [0.31, 0.28]))[0]
    assert family["verdict"] == "holds" and family["ours"]["ci95"][0] > 0


def test_point_values_without_intervals_pool_as_a_mean_over_seeds(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    _record(ledger, "testbed_gpt2", 0.30)
    _, family = pool_records(ledger.records, _replicate_runs(tmp_path, [0.2, 0.4], ci_half=None))[0]
    assert family["ours"]["value"] == pytest.approx(0.3)
    assert "mean over the seeds" in family["ours"]["setting"]
    assert family["ours"]["p"] is None  # the seeds carry no p-value, so neither does the pool


def test_a_share_pooled_near_its_edge_keeps_its_interval_inside_its_range(tmp_path):
    def share(ledger, model_slug, value):
        ledger.record(
            id=f"demo.{model_slug}.share",
            claim="most blocks do it",
            kind="paper claim",
            ours=Ours(value=value, n=5, setting=model_slug, bounds=(0.0, 1.0)),
            rule=Exceeds(0.5),
            source="a test",
        )

    ledger = Ledger("demo", directory=tmp_path, glue=False)
    share(ledger, "testbed_gpt2", 1.0)
    replicates = {}
    for seed, value in ((1, 0.6), (2, 1.0)):
        other = Ledger("demo", directory=tmp_path / f"seed{seed}", glue=False)
        share(other, f"testbed_gpt2_seed{seed}", value)
        replicates[seed] = other.records
    _, family = pool_records(ledger.records, replicates)[0]
    low, high = family["ours"]["ci95"]
    assert high == 1.0 and 0.0 <= low < 0.6  # the t(2) interval reaches past 1 before the cut
    assert family["ours"]["bounds"] == [0.0, 1.0] and "cut to the quantity's range" in family["ours"]["setting"]
    validate_record(family, notebook="demo")
    with pytest.raises(LedgerError, match="outside its bounds"):
        share(ledger, "testbed_llama", 1.2)


def test_a_replicate_judged_by_another_rule_is_an_error(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    _record(ledger, "testbed_gpt2", 0.30, (0.25, 0.35))
    with pytest.raises(ReplicateError, match="not the same claim"):
        pool_records(ledger.records, _replicate_runs(tmp_path, [0.3], rule=Exceeds(0.1)))


def test_significance_claims_pool_their_p_value_over_seeds(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    rule = SignificantSign(1)
    _record(ledger, "testbed_gpt2", 0.30, (0.25, 0.35), p=0.001, rule=rule)
    runs = {}
    for seed, value in ((1, -0.1), (2, 0.5)):
        other = Ledger("demo", directory=tmp_path / f"s{seed}", glue=False)
        _record(other, f"testbed_gpt2_seed{seed}", value, (value - 0.05, value + 0.05), p=0.001, rule=rule)
        runs[seed] = other.records
    _, family = pool_records(ledger.records, runs)[0]
    assert family["ours"]["p"] > 0.05 and family["verdict"] == "inconclusive"  # t(2) over scattered seeds


def test_superseded_records_leave_the_count_and_must_point_at_a_record(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    _record(ledger, "testbed_gpt2", 0.30, (0.25, 0.35))
    for seed_zero, family in pool_records(ledger.records, _replicate_runs(tmp_path / "r", [0.3, 0.3])):
        ledger._append(family)
        seed_zero["superseded_by"] = family["id"]
    (tmp_path / "demo.json").write_text(json.dumps(ledger.records))
    records = load_results(tmp_path / "demo.json")
    assert [r["id"] for r in current_records(records)] == ["demo.family_gpt2.effect"]
    records[1]["id"] = "demo.family_gpt2.other"
    (tmp_path / "demo.json").write_text(json.dumps(records))
    with pytest.raises(LedgerError, match="superseded by records the file does not hold"):
        load_results(tmp_path / "demo.json")


# --- the cache ---------------------------------------------------------------------------


@pytest.fixture
def family_data(tmp_path, monkeypatch):
    """A data folder whose cards say the replicates are trained with the recipe, and an empty
    local cache."""
    data = tmp_path / "data"
    for name, cfg in CONFIGS.items():
        folder = data / name
        folder.mkdir(parents=True)
        card = {
            "family": cfg.family,
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "suite_seed": cfg.suite_seed,
            "split_version": cfg.split_version,
            "fact_paraphrases": cfg.fact_paraphrases,
            "training": {"steps": cfg.steps, "seed": cfg.seed},
            "weights_sha256": f"weights-of-{name}",
        }
        (folder / CARD_FILE).write_text(json.dumps(card))
    monkeypatch.setenv("CGC_DATA_DIR", str(data))
    monkeypatch.setenv("CGC_CACHE_DIR", str(tmp_path / "cache"))
    return data


def _fake_run(calls):
    def run(chapter, parameters):
        calls.append(parameters)
        model = parameters["model"]
        ledger = Ledger(chapter, directory=replicates.local_dir().parent / "scratch" / model, glue=False)
        ledger.record(
            id=f"{chapter}.{model.replace('-', '_')}.capabilities_at_90",
            claim="c",
            kind="specification",
            ours=Ours(value=0.95, n=10, setting=model, ci95=(0.9, 0.99)),
            rule=Exceeds(0.9),
            source="s",
        )
        return ledger.records

    return run


def test_a_replicate_runs_once_then_comes_from_the_cache(family_data):
    calls: list = []
    params = {"model": "testbed-gpt2", "second_model": "", "seed": 0, "replicates": [1, 2]}
    first = replicate_records("testbed", params, [1, 2], run=_fake_run(calls))
    assert [c["model"] for c in calls] == ["testbed-gpt2-seed1", "testbed-gpt2-seed2"]
    assert all(c["replicates"] == [] for c in calls)
    again = replicate_records("testbed", params, [1, 2], run=_fake_run(calls))
    assert len(calls) == 2 and again == first
    replicate_records("testbed", {**params, "seed": 1}, [1], run=_fake_run(calls))  # other parameters: a miss
    assert len(calls) == 3


def test_an_untrained_replicate_is_left_out(family_data, capsys):
    (family_data / "testbed-gpt2-seed2" / CARD_FILE).unlink()
    calls: list = []
    params = {"model": "testbed-gpt2", "second_model": "", "replicates": [1, 2]}
    assert list(replicate_records("testbed", params, [1, 2], run=_fake_run(calls))) == [1]
    assert "testbed-gpt2-seed2 not trained" in capsys.readouterr().out


def test_the_key_follows_the_weights_and_the_parameters_but_not_the_seed_list(family_data):
    from cgclib.book.chapters import get_chapter

    path = get_chapter("testbed").path
    params = {"model": "testbed-gpt2-seed1", "second_model": "", "seed": 1000, "replicates": []}
    key = replicates.content_key("testbed", path, params)
    assert replicates.content_key("testbed", path, {**params, "replicates": [1]}) == key
    assert replicates.content_key("testbed", path, {**params, "seed": 3}) != key
    card = family_data / "testbed-gpt2-seed1" / CARD_FILE
    card.write_text(card.read_text().replace("weights-of-", "retrained-"))
    assert replicates.content_key("testbed", path, params) != key


def test_shipped_replicates_are_checked_against_their_manifest(family_data):
    calls: list = []
    params = {"model": "testbed-gpt2", "second_model": "", "replicates": [1]}
    replicate_records("testbed", params, [1], run=_fake_run(calls))
    key = next(p.stem for p in (replicates.local_dir() / "testbed").glob("*.json"))
    assert replicates.ship({"testbed": [key]}) == 1
    for path in replicates.local_dir().rglob("*.json"):
        path.unlink()
    replicate_records("testbed", params, [1], run=_fake_run(calls))
    assert len(calls) == 1  # found in the shipped folder
    shipped = replicates.shipped_dir() / "testbed" / f"{key}.json"
    shipped.write_text(shipped.read_text().replace("0.95", "0.99"))
    with pytest.raises(ShippedFileError, match="does not match its sha256"):
        replicate_records("testbed", params, [1], run=_fake_run(calls))


def _seed_zero_capability_ledger(tmp_path) -> Ledger:
    ledger = Ledger("testbed", directory=tmp_path / "results", glue=False)
    ledger.record(
        id="testbed.testbed_gpt2.capabilities_at_90",
        claim="c",
        kind="specification",
        ours=Ours(value=0.97, n=10, setting="testbed-gpt2", ci95=(0.93, 0.99)),
        rule=Exceeds(0.9),
        source="s",
    )
    return ledger


def test_the_ledger_pools_its_seed_zero_records_and_marks_them_superseded(family_data, tmp_path, monkeypatch):
    ledger = _seed_zero_capability_ledger(tmp_path)
    monkeypatch.setattr(replicates, "run_replicate", _fake_run([]))
    added = ledger.pool_over_seeds({"model": "testbed-gpt2", "second_model": "", "replicates": [1, 2]}, [1, 2])
    assert [r["id"] for r in added] == ["testbed.family_gpt2.capabilities_at_90"]
    stored = load_results(ledger.path)
    assert stored[0]["superseded_by"] == "testbed.family_gpt2.capabilities_at_90"
    assert [r["id"] for r in current_records(stored)] == ["testbed.family_gpt2.capabilities_at_90"]
    assert ledger.pool_over_seeds({"model": "testbed-gpt2"}, []) == []


def test_a_claim_pooled_by_another_chapter_is_marked_and_not_pooled_here(family_data, tmp_path, monkeypatch):
    ledger = _seed_zero_capability_ledger(tmp_path)
    monkeypatch.setattr(replicates, "run_replicate", _fake_run([]))
    added = ledger.pool_over_seeds(
        {"model": "testbed-gpt2", "second_model": "", "replicates": [1]},
        [1],
        pooled_elsewhere={"capabilities_at_90": "family.{family}.capabilities_at_90"},
    )
    assert added == []
    stored = load_results(ledger.path)  # a record of another chapter is not checked here
    assert stored[0]["superseded_by"] == "family.gpt2.capabilities_at_90"


def _correlation_runs(tmp_path, slopes, rule, shift=0.0):
    """The demo chapter's rank-correlation records on seeds 0.. with the given slopes (seed s's
    y shifted by `shift` s): seed 0's records, the others' by seed, and the (x, y) of each."""
    import numpy as np

    from cgclib.stats import spearman

    rng = np.random.default_rng(11)
    runs, data = {}, []
    for seed, slope in enumerate(slopes):
        x = rng.standard_normal(48)
        y = slope * x + rng.standard_normal(48) + shift * seed
        data.append((x, y))
        r = spearman(x, y, n_resamples=500, seed=seed)
        ledger = Ledger("demo", directory=tmp_path / f"c{seed}", glue=False)
        ledger.record(
            id=f"demo.{'testbed_gpt2' if seed == 0 else f'testbed_gpt2_seed{seed}'}.rho",
            claim="c",
            kind="paper claim",
            ours=Ours(value=r.rho, n=r.n, setting="s", ci95=r.ci95, p=r.p, units=(x, y)),
            rule=rule,
            source="s",
        )
        runs[seed] = ledger.records
    return runs.pop(0), runs, data


def test_rank_correlations_pool_the_units_of_every_seed_ranked_within_seed(tmp_path):
    """Three seeds of 48 heads with the same moderate correlation and a shift of each seed's
    values (which ranks within seed ignore): the pooled record is the stratified correlation
    of the 144 heads."""
    from cgclib.replication import stratified_spearman

    seed_zero, runs, data = _correlation_runs(tmp_path, [0.5, 0.5, 0.5], SignificantSign(1), shift=10)
    _, family = pool_records(seed_zero, runs)[0]
    validate_record(family, notebook="demo")
    expected = stratified_spearman([x for x, _ in data], [y for _, y in data], n_permutations=9999)
    assert family["ours"]["value"] == pytest.approx(expected.rho) and family["ours"]["n"] == 144
    # significant only if both the heads' permutation test and the recipe's test say so
    assert family["ours"]["p"] == pytest.approx(max(expected.p, expected.p_recipe))
    assert expected.p_recipe > expected.p
    assert "ranked within seed" in family["ours"]["setting"]


def test_a_correlation_in_one_seed_only_does_not_make_the_recipe_s_verdict(tmp_path):
    """Seed 0 strongly correlated, seeds 1 and 2 not: the 144 heads' permutation test alone
    would reject, the recipe-level test does not, and the record stays inconclusive."""
    seed_zero, runs, _ = _correlation_runs(tmp_path, [1.5, 0.0, 0.0], SignificantSign(1))
    _, family = pool_records(seed_zero, runs)[0]
    assert [s["verdict"] for s in family["ours"]["seeds"]][0] == "holds"
    assert family["ours"]["p"] >= 0.05 and family["verdict"] == "inconclusive"


def test_units_must_be_paired_finite_numbers(tmp_path):
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    with pytest.raises(LedgerError, match="equal length"):
        ledger.record(
            id="demo.testbed_gpt2.rho",
            claim="c",
            kind="paper claim",
            ours=Ours(value=0.1, n=3, setting="s", units=([1.0, 2.0], [1.0])),
            rule=Exceeds(0.0),
            source="s",
        )


def test_family_differences_are_tested_against_the_seed_variation(tmp_path):
    from cgclib.replicates import family_differences
    from cgclib.replication import family_difference, random_effects

    pooled, seeds = [], {}
    for family, values in (("gpt2", [0.30, 0.32, 0.29]), ("llama", [0.10, 0.35, -0.05])):
        ledger = Ledger("demo", directory=tmp_path / family, glue=False)
        _record(ledger, f"testbed_{family}", values[0], (values[0] - 0.05, values[0] + 0.05))
        runs = {}
        for seed, value in enumerate(values[1:], start=1):
            other = Ledger("demo", directory=tmp_path / f"{family}{seed}", glue=False)
            _record(other, f"testbed_{family}_seed{seed}", value, (value - 0.05, value + 0.05))
            runs[seed] = other.records
        pooled.append(pool_records(ledger.records, runs)[0][1])
        seeds[family] = [SeedResult(f"m{i}", v, (v - 0.05, v + 0.05), 50) for i, v in enumerate(values)]
    table = family_differences(pooled)
    expected = family_difference(random_effects(seeds["gpt2"]), random_effects(seeds["llama"]))
    row = table.iloc[0]
    assert row["claim"] == "demo.effect" and row["difference"] == "gpt2 - llama"
    assert row["value"] == pytest.approx(expected.value, abs=1e-3)
    assert row["p"] == pytest.approx(expected.p, abs=1e-3) and row["p"] > 0.05  # llama's seeds scatter
    assert family_differences(pooled[:1]).empty


def test_correlations_of_two_families_are_compared_on_fisher_s_z(tmp_path):
    import math

    from cgclib.replicates import family_differences
    from cgclib.replication import SeedResult, family_difference, pool

    family = {}
    for name, slopes in (("gpt2", [2.0, 2.0, 2.0]), ("llama", [0.3, 0.3, 0.3])):
        seed_zero, runs, _ = _correlation_runs(tmp_path / name, slopes, SignificantSign(1))
        record = pool_records(seed_zero, runs)[0][1]
        record["id"] = record["id"].replace("family_gpt2", f"family_{name}")
        family[name] = record
    assert family["gpt2"]["ours"]["bounds"] == [-1.0, 1.0]  # a rank correlation's range
    row = family_differences(list(family.values())).iloc[0]
    assert row["difference"] == "gpt2 - llama (Fisher z)"

    def z_seeds(record):
        return [
            SeedResult(s["model"], math.atanh(s["value"]), tuple(math.atanh(c) for c in s["ci95"]), s["n"])
            for s in record["ours"]["seeds"]
        ]

    expected = family_difference(pool(z_seeds(family["gpt2"])), pool(z_seeds(family["llama"])))
    assert row["value"] == pytest.approx(expected.value, abs=1e-3) and row["p"] < 0.05


def test_permutation_records_without_intervals_combine_their_p_values(tmp_path):
    from cgclib.replication import stouffer

    rule = SignificantSign(1)
    runs = {}
    ledger = Ledger("demo", directory=tmp_path, glue=False)
    _record(ledger, "testbed_gpt2", 0.0117, p=0.8, rule=rule)
    for seed, value in ((1, 0.0114), (2, 0.0120)):  # seeds that agree closely, none significant
        other = Ledger("demo", directory=tmp_path / f"p{seed}", glue=False)
        _record(other, f"testbed_gpt2_seed{seed}", value, p=0.8, rule=rule)
        runs[seed] = other.records
    _, family = pool_records(ledger.records, runs)[0]
    assert family["ours"]["ci95"] is None and "Stouffer" in family["ours"]["setting"]
    assert family["ours"]["p"] == pytest.approx(stouffer([SeedResult("a", 0.01, None, 1, 0.8)] * 3))
    assert family["ours"]["p"] > 0.5 and family["verdict"] == "inconclusive"


def test_a_model_that_is_not_a_test_bed_is_left_out_of_the_replicates():
    params = {"model": "gpt2-medium", "second_model": "testbed-llama", "seed": 0, "replicates": [1]}
    assert replicate_parameters(params, 1) == {
        "model": "",
        "second_model": "testbed-llama-seed1",
        "seed": 1000,
        "replicates": [],
    }


def test_shipping_one_chapter_keeps_the_others(family_data):
    calls: list = []
    for chapter in ("testbed", "density"):
        replicate_records(chapter, {"model": "testbed-gpt2", "second_model": ""}, [1], run=_fake_run(calls))
    keys = {c: [p.stem for p in (replicates.local_dir() / c).glob("*.json")] for c in ("testbed", "density")}
    assert replicates.ship(keys) == 2
    replicates.ship({"density": []})
    manifest = json.loads((replicates.shipped_dir() / "manifest.json").read_text())
    assert list(manifest) == [f"testbed/{keys['testbed'][0]}.json"]


def test_nothing_is_marked_pooled_when_no_replicate_is_trained(family_data, tmp_path, monkeypatch):
    for seed in (1, 2):
        for family in ("gpt2", "llama"):
            (family_data / f"testbed-{family}-seed{seed}" / CARD_FILE).unlink()
    ledger = _seed_zero_capability_ledger(tmp_path)
    added = ledger.pool_over_seeds(
        {"model": "testbed-gpt2", "second_model": "", "replicates": [1, 2]},
        [1, 2],
        pooled_elsewhere={"capabilities_at_90": "family.{family}.capabilities_at_90"},
    )
    assert added == [] and "superseded_by" not in ledger.records[0]


def test_a_replicate_s_key_hashes_the_modules_its_chapter_runs(tmp_path):
    """A replicate run pools nothing, so editing the pooling modules keeps the cache; so does
    editing a module no code of the chapter imports. Editing a module the chapter imports
    only through another module does not."""
    import shutil

    from cgclib.paths import project_root

    root = tmp_path / "root"
    shutil.copytree(project_root() / "cgclib", root / "cgclib", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    shutil.copy(project_root() / "data" / "paper_values.yaml", root / "data")
    chapter = tmp_path / "chapter.md"
    header = (project_root() / "notebooks" / "phase_transitions.md").read_text().split("\n---\n")[0]
    chapter.write_text(
        header + "\n---\n\n```{code-cell} ipython3\nfrom cgclib.stats import spearman\nimport cgclib.pruning\n```\n"
    )
    modules = replicates.chapter_modules(chapter, root)
    assert {"stats.py", "pruning.py", "tokens.py"} <= set(modules)  # tokens: through pruning
    assert "saes.py" not in modules and "replication.py" not in modules

    def edited(module: str) -> bool:
        before = replicates.library_digest(chapter, root)
        with (root / "cgclib" / module).open("a") as handle:
            handle.write("\n# an edit\n")
        return replicates.library_digest(chapter, root) != before

    assert not edited("replication.py") and not edited("tables.py") and not edited("saes.py")
    assert edited("stats.py") and edited("tokens.py")
