"""Every chapter on models that are not test beds: random-initialised stand-ins of GPT-2,
Mistral (grouped-query attention, sliding window) and Qwen2 with a byte-level BPE tokenizer
and no pad token, calibrated and evaluated on a local text file, with two local lm-eval
multiple-choice tasks as their capabilities.

Each chapter runs with its CI parameters, smaller still, on two stand-ins (and a third as its deeper model
where it has one), and must account for every claim it records on the test beds: recorded
for the stand-in, or declared not measured with the reason (`Ledger.not_applicable`); with
lm-eval tasks as capabilities, every one is recorded. What
a stand-in cannot have is left out by construction and said here: the pooled family records
(a stand-in has no training seeds to pool) and the second deeper model."""

from __future__ import annotations

import json
import re

import pytest

from cgclib.book.chapters import get_chapter, run_chapter
from cgclib.book.validation import ParameterError, check_parameters
from cgclib.ledger import NOT_MEASURED_SUFFIX, load_results
from cgclib.standins import TASKS

from ..conftest import ROOT

SMALLER = {  # sizes below the CI parameters (the claims a run records do not depend on them)
    "structure": dict(
        calibration_sequences=16, heldout_sequences=8, n_probes=10, n_paragraphs=8, n_bootstrap=100, seq_len=64
    ),
    "absorption": dict(
        drift_sequences=4, pruning_sequences=4, n_probes=10, n_paragraphs=8, n_shuffles=3, n_bootstrap=100
    ),
    "density": dict(calibration_sequences=32, measure_sequences=24, sae_epochs=1, theory_samples=50, n_bootstrap=100),
    "orthogonality": dict(
        calibration_sequences=32,
        measure_sequences=24,
        sae_epochs=1,
        pruning_sequences=8,
        n_probes=10,
        n_paragraphs=8,
        ablation_probes=10,
        ablation_paragraphs=8,
        sparsities=[0.3, 0.5, 0.7],
        component_ratios=[0.5, 0.8, 0.99],
        component_probes=6,
        component_paragraphs=8,
        n_orderings=5,
        n_bootstrap=100,
        seq_len=64,
    ),
    "phase_transitions": dict(n_probes=10, n_paragraphs=8, calibration_sequences=4, seq_len=64),
}
PAIRS = {  # chapter: (model, second model, deeper model or None)
    "structure": ("gpt2", "mistral", "qwen2"),
    "absorption": ("qwen2", "gpt2", "mistral"),
    "density": ("gpt2", "qwen2", None),
    "orthogonality": ("qwen2", "mistral", None),
    "phase_transitions": ("mistral", "gpt2", None),
}


def expected_claims(ci_claims: list[str], first: str, second: str, deep: str | None) -> set[str]:
    """The test-bed claims of a CI run, renamed for the stand-ins: seed-0 test beds become
    `first` and `second`, the first deeper test bed `deep`; family records and the other
    deeper test bed have no stand-in."""
    renames = {"testbed_gpt2": first, "testbed_llama": second, "testbed_gpt2_deep": deep}
    expected = set()
    for claim in ci_claims:
        scope = claim.split(".")[1]
        if scope.startswith("family_"):
            continue
        if scope in renames:
            if renames[scope] is None:
                continue
            claim = re.sub(rf"^(\w+)\.{scope}\.", rf"\1.{renames[scope]}.", claim)
        elif scope == "testbed_llama_deep":
            continue
        expected.add(claim)
    return expected


@pytest.mark.parametrize("chapter", list(PAIRS))
def test_every_chapter_runs_on_standins_and_accounts_for_every_claim(chapter, standins, ci_chapter_runs, tmp_path):
    spec = ci_chapter_runs.spec[chapter]
    first, second, deep = PAIRS[chapter]
    parameters = {
        **spec["parameters"],
        **SMALLER[chapter],
        "model": str(standins[first]),
        "second_model": str(standins[second]),
        "text": str(standins["text"]),
        "replicates": [],
    }
    has_tasks = "tasks" in get_chapter(chapter, ROOT).parameters()
    if has_tasks:
        parameters |= {"tasks": list(TASKS), "task_path": str(standins["tasks"])}
    if "deep_models" in parameters:
        parameters["deep_models"] = [str(standins[deep])]
    run = run_chapter(chapter, parameters, runs_dir=tmp_path, root=ROOT, progress=False)
    recorded = {r["id"] for r in load_results(run.results)}
    declared = json.loads((run.directory / f"{chapter}{NOT_MEASURED_SUFFIX}").read_text())
    not_measured = {d["id"] for d in declared}
    assert all(d["reason"] for d in declared)
    assert not recorded & not_measured
    assert recorded | not_measured == expected_claims(spec["claims"], first, second, deep)
    if has_tasks:
        assert not not_measured, f"claims without a record although the stand-ins have tasks: {not_measured}"


def test_without_tasks_the_capability_claims_are_declared_not_measured(standins, ci_chapter_runs, tmp_path):
    from cgclib.subjects import NO_PROBES

    parameters = {**ci_chapter_runs.spec["phase_transitions"]["parameters"], **SMALLER["phase_transitions"]}
    parameters |= {"model": str(standins["mistral"]), "second_model": "", "methods": ["wanda"]}
    parameters |= {"text": str(standins["text"]), "tasks": [], "replicates": []}
    run = run_chapter("phase_transitions", parameters, runs_dir=tmp_path, root=ROOT, progress=False)
    declared = json.loads((run.directory / f"phase_transitions{NOT_MEASURED_SUFFIX}").read_text())
    assert declared and all(d["reason"] == NO_PROBES and d["id"].endswith("capabilities_first") for d in declared)


def test_the_testbed_chapter_says_why_it_does_not_run_on_other_models(standins):
    from cgclib.book.chapters import get_chapter

    values = {n: p.default for n, p in get_chapter("testbed", ROOT).parameters().items()}
    with pytest.raises(ParameterError, match="studies the test beds themselves"):
        check_parameters("testbed", {**values, "model": str(standins["gpt2"])}, ROOT)
