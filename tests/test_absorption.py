"""Perturbation drift: the injected magnitude is exact, the Jacobian prediction matches
small perturbations, and the derived gains and coefficients follow their definitions."""

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib.absorption import (
    absorption_coefficients,
    block_pruning_drift,
    coefficient_intervals,
    depth_profile,
    layer_gains,
    linear_drift,
    noise_at,
    pooled,
    pruned,
    trajectory_drift,
)
from cgclib.pruning import wanda_block_masks

from .tiny_models import TINY


def _ids(n=6, seq=10, seed=0):
    ids = torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:2, -3:] = 2
    return ids


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_injected_noise_has_the_requested_relative_magnitude(family):
    model = TINY[family]().double()
    drift = trajectory_drift(model, _ids(), 2, {"m": (1, noise_at(model, 1, 0.3, seed=0))}, batch_sequences=4)
    assert drift.query("layer == 1")["drift"].item() == pytest.approx(0.3, rel=1e-9)
    assert list(drift["layer"]) == [1, 2]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_jacobian_prediction_matches_a_small_perturbation(family):
    model = TINY[family]().double()
    ids = _ids()
    m = 1e-4  # Llama's RMSNorm computes in float32, so smaller magnitudes drown in rounding
    measured = trajectory_drift(model, ids, 2, {0: (0, noise_at(model, 0, m, seed=3))}, batch_sequences=4)
    linear = linear_drift(model, ids, 2, [0], seed=3, batch_sequences=4)
    np.testing.assert_allclose(measured["drift"].to_numpy() / m, linear["linear_drift"].to_numpy(), rtol=2e-3)


def test_pruning_nothing_causes_no_drift_and_pruning_something_does():
    model = TINY["gpt2"]().double()
    ids = _ids()
    perturbations = {
        "none": (1, pruned(model, wanda_block_masks(model, ids, 2, {1: 0.0}))),
        "half": (1, pruned(model, wanda_block_masks(model, ids, 2, {1: 0.5}))),
    }
    drift = trajectory_drift(model, ids, 2, perturbations).set_index(["key", "layer"])
    assert drift.loc["none", "drift"].abs().max() < 1e-12
    assert (drift.loc["none", "cosine"] - 1).abs().max() < 1e-12
    assert (drift.loc["half", "drift"] > 0).all()


def test_gains_and_absorption_coefficients_follow_their_definitions():
    drift = pd.DataFrame(
        {
            "key": [0, 0, 0, 1, 1],
            "source": [0, 0, 0, 1, 1],
            "layer": [0, 1, 2, 1, 2],
            "drift": [0.1, 0.2, 0.05, 0.4, 0.1],
            "cosine": [1.0] * 5,
        }
    )
    gains = layer_gains(drift)
    assert gains["gain"].tolist() == pytest.approx([2.0, 0.25, 0.25])
    coefficients = absorption_coefficients(drift, n_layers=3)
    assert np.isnan(absorption_coefficients(drift, n_layers=2)[1])
    assert coefficients[0] == pytest.approx(np.log(0.1 / 0.05) / 2) and coefficients[1] == pytest.approx(np.log(4.0))
    # block 1's gain comes from source 0 alone, block 2's from both: geometric mean of 0.25 and 0.25
    assert depth_profile(drift).to_dict() == pytest.approx({1: 2.0, 2: 0.25})


def test_block_pruning_drift_prunes_each_block_alone_at_each_sparsity():
    model = TINY["llama"]().double()
    ids = _ids()
    by_sequence = block_pruning_drift(model, ids, ids, 2, [0.0, 0.5])
    n_layers = 3
    assert sorted(set(zip(by_sequence.pruned, by_sequence.sparsity, strict=True))) == [
        (l, s) for l in range(n_layers) for s in (0.0, 0.5)
    ]
    assert (by_sequence.source == by_sequence.pruned).all()
    unpruned = by_sequence[by_sequence.sparsity == 0.0]
    assert unpruned["drift"].abs().max() < 1e-12
    direct = trajectory_drift(
        model, ids, 2, {"b1": (1, pruned(model, wanda_block_masks(model, ids, 2, {1: 0.5})))}, by_sequence=True
    )
    ours = by_sequence[(by_sequence.pruned == 1) & (by_sequence.sparsity == 0.5)]
    np.testing.assert_allclose(ours["drift"].to_numpy(), direct["drift"].to_numpy(), rtol=1e-12)


def test_per_sequence_drift_pools_to_the_token_mean_and_gives_coefficient_intervals():
    model = TINY["gpt2"]().double()
    ids = _ids(n=8)
    perturbations = {l: (l, noise_at(model, l, 0.3, seed=1)) for l in range(3)}
    overall = trajectory_drift(model, ids, 2, perturbations, batch_sequences=3)
    by_sequence = trajectory_drift(model, ids, 2, perturbations, batch_sequences=3, by_sequence=True)
    assert len(by_sequence) == len(overall) * len(ids)
    assert by_sequence.groupby("sequence")["tokens"].first().tolist() == [6, 6] + [9] * 6  # padding and position 0 out
    pooled_back = pooled(by_sequence)
    np.testing.assert_allclose(pooled_back["drift"], overall["drift"], rtol=1e-12)
    np.testing.assert_allclose(pooled_back["cosine"], overall["cosine"], rtol=1e-12)
    intervals = coefficient_intervals(by_sequence, n_layers=3, n_resamples=200, seed=0)
    np.testing.assert_allclose(intervals["coefficient"], absorption_coefficients(overall, 3), rtol=1e-12)
    finite = intervals.dropna()
    assert list(finite.index) == [0, 1]
    assert (finite["ci low"] <= finite["coefficient"]).all() and (finite["coefficient"] <= finite["ci high"]).all()
    assert (finite["ci high"] > finite["ci low"]).all()
    again = coefficient_intervals(by_sequence, n_layers=3, n_resamples=200, seed=0)
    pd.testing.assert_frame_equal(intervals, again)
