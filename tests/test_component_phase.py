"""Single-component sweeps: every row equals a plain evaluation of the model with that
component pruned, and critical ratios are read correctly from sweep tables."""

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib import components
from cgclib.component_phase import (
    _metrics,
    block_sweep,
    critical_ratios,
    first_collapse,
    head_sweep,
    outcomes,
    s0_table,
    transition_table,
)
from cgclib.evaluation import EvaluationData, evaluate
from cgclib.pruning import input_square_sums, masked, wanda_block_masks, wanda_head_masks

from .tiny_models import TINY


def _sweep():
    ratios = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    rows = []
    for head, s0 in ((0, 0.55), (1, None)):
        for s in ratios:
            collapse = 0.0 if s0 is None else max(s - s0, 0.0) * 12
            rows.append(
                {
                    "layer": 0,
                    "head": head,
                    "ratio": s,
                    "language": 10 * np.exp(0.5 * s**2 + collapse),
                    "copy": 1.0 + 1e-4 * np.sin(37 * s),
                }
            )  # flat: never collapses
    return pd.DataFrame(rows)


def test_a_collapsing_head_gets_its_s0_and_flat_metrics_get_none():
    critical = critical_ratios(_sweep(), ["layer", "head"], ["language", "copy"])
    row = critical.query("head == 0 and metric == 'language'").iloc[0]
    assert row.outcome == "transition" and row.p < 0.05
    assert row.interval_low <= 0.55 <= row.interval_high
    by_metric = critical.set_index(["head", "metric"])["outcome"]
    assert by_metric[(1, "language")] == "smooth" and by_metric[(0, "copy")] == "flat"
    s0 = s0_table(critical, ["layer", "head"])
    assert list(s0.columns) == ["language", "copy"]
    assert s0.loc[(0, 0), "language"] == pytest.approx(0.55, abs=0.01)
    assert np.isnan(s0.loc[(0, 1), "language"])
    assert s0["copy"].isna().all()
    first = first_collapse(s0, censor_at=0.9)
    assert first.loc[(0, 0)] == pytest.approx(0.55, abs=0.01) and first.loc[(0, 1)] == 0.9
    assert transition_table(s0).loc["language", "components with a transition"] == 1
    found = outcomes(critical, ["layer", "head"])
    assert found.loc[(0, 0)] == "transition" and found.loc[(0, 1)] == "no transition located"
    flat_only = critical[critical.metric == "copy"]
    assert (outcomes(flat_only, ["layer", "head"]) == "flat").all()


def test_a_sweep_without_the_dense_point_is_refused():
    sweep = _sweep()
    with pytest.raises(ValueError, match="ratio 0"):
        critical_ratios(sweep[sweep.ratio > 0], ["layer", "head"], ["language"])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("per_pass", [2, None])
def test_sweeps_equal_pruning_one_component_and_evaluating_the_whole_model(family, per_pass, monkeypatch):
    """The sweeps start each evaluation at the pruned block (cgclib.resume) and evaluate
    several ratios per forward pass (all of them, or 2 at a time for a grid of 3); every row
    must equal a plain evaluation of the model with that one component pruned."""
    from cgclib import component_phase

    if per_pass is not None:
        monkeypatch.setattr(component_phase, "variants_per_pass", lambda *args: per_pass)
    model = TINY[family]()
    ids = torch.randint(3, 64, (6, 12), generator=torch.Generator().manual_seed(0))
    data = EvaluationData(torch.randint(3, 64, (5, 12), generator=torch.Generator().manual_seed(1)))
    ratios = [0.5, 0.7, 0.9]
    heads = head_sweep(model, data, ids, None, ratios, heads=[(1, 2), (2, 0)], progress=False)
    blocks = block_sweep(model, data, ids, None, ratios, progress=False)
    sums = input_square_sums(
        model, ids, None, {f"{l}.{n}": m for l in (1, 2) for n, m in components.linear_layers(model, l).items()}
    )
    for ratio in ratios:
        row = heads.query(f"layer == 2 and head == 0 and ratio == {ratio}").iloc[0]
        with masked(model, wanda_head_masks(model, sums, 2, 0, ratio)):
            assert row["language"] == pytest.approx(_metrics(evaluate(model, data))["language"], rel=1e-6)
        row = blocks.query(f"layer == 1 and ratio == {ratio}").iloc[0]
        with masked(model, wanda_block_masks(model, ids, None, {1: ratio})):
            assert row["language"] == pytest.approx(_metrics(evaluate(model, data))["language"], rel=1e-6)
    assert row["language"] != pytest.approx(blocks.query("layer == 1 and ratio == 0").iloc[0]["language"], rel=1e-6)
