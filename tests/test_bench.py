"""The benchmark's naive baselines compute the same results as the library's hot paths
(timings themselves are measured by `make bench`, never asserted)."""

import re
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib import ablation
from cgclib.book import bench


@pytest.fixture(scope="module")
def small():
    size = bench.Size(n_sequences=3, n_layers=2, n_heads=2, head_dim=8)
    model = bench.make_model(size, "cpu").double()
    return size, model, bench.make_ids(size)


def test_stored_and_streamed_input_norms_agree(small):
    _, model, ids = small
    streamed, stored = bench.input_norms_streamed(model, ids), bench.input_norms_stored(model, ids)
    assert set(streamed) == set(stored)
    for name in streamed:
        torch.testing.assert_close(streamed[name], stored[name].double(), rtol=1e-5, atol=1e-8)


def test_batched_and_one_by_one_evaluation_agree(small):
    size, model, _ = small
    data = bench.evaluation_data(size)
    assert bench.evaluate_batched(model, data).perplexity == pytest.approx(
        bench.evaluate_one_by_one(model, data).perplexity, rel=1e-9
    )


def test_shared_and_recomputed_drift_agree(small):
    _, model, ids = small
    shared = bench.drift_shared(model, ids).set_index("key")
    recomputed = bench.drift_recomputed(model, ids)
    for key, per_block in recomputed.items():
        rows = shared.loc[[key]].set_index("layer")["drift"]
        np.testing.assert_allclose(rows.to_numpy(), per_block[key[0] :].numpy(), rtol=1e-9)


def test_streamed_and_stored_block_fits_agree(small):
    _, model, ids = small
    streamed, stored = bench.block_fits_streamed(model, ids), bench.block_fits_stored(model, ids)
    assert set(streamed) == set(stored)
    for layer in streamed:
        torch.testing.assert_close(streamed[layer].weight, stored[layer].weight, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(streamed[layer].bias, stored[layer].bias, rtol=1e-6, atol=1e-9)


def test_summary_reports_medians_spreads_and_growth_intervals(small):
    axes = {"tokens": [bench.Size(n_sequences=n, n_layers=1, n_heads=2) for n in (8, 16, 32)]}
    results = bench.run("cpu", benchmarks=bench.BENCHMARKS[:1], axes=axes, repeats=3)
    assert len(results) == 3 * 2 * 3  # sizes x variants x repeats
    first = results[results.repeat == 0].variant.tolist()[:2]
    second = results[results.repeat == 1].variant.tolist()[:2]
    assert first == ["optimized", "naive"] and second == ["naive", "optimized"]  # interleaved, alternating
    assert (results.flops > 0).all()
    table = bench.summary(results, peak=1e12)
    row = table.iloc[0]
    assert re.fullmatch(r"[\d.e+-]+ \[[\d.e+-]+, [\d.e+-]+\]", row["ms"]), row["ms"]
    assert 0 < row["% of peak"] < 100
    slope, low, high = map(float, re.findall(r"-?[\d.]+", row["growth with tokens"]))
    assert low <= slope <= high


def test_growth_intervals_cover_a_known_exponent_95_times_in_100():
    sizes, rng, covered = np.repeat([8, 16, 32, 64], 4), np.random.default_rng(0), 0
    for _ in range(400):
        seconds = sizes**1.5 * np.exp(rng.normal(0, 0.05, len(sizes)))
        frame = pd.DataFrame({"benchmark": "b", "axis": "t", "variant": "v", "size": sizes, "seconds": seconds})
        fit = bench.growth(frame).iloc[0]
        covered += fit["low"] < 1.5 < fit["high"]
    assert 0.92 < covered / 400 < 0.98


def test_flops_of_a_matrix_product_are_counted():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert bench.count_flops(torch.mm, (a, b)) == 2 * 8 * 16 * 4
    assert bench.peak_flops("cpu", n=128, repeats=2) > 0


def test_streamed_and_stored_allocation_masks_agree(small):
    _, model, ids = small
    allocation = bench.block_allocation(model)
    streamed = bench.allocation_masks_streamed(model, ids, allocation)
    stored = bench.allocation_masks_stored(model, ids, allocation)
    assert set(streamed) == set(stored)
    for name in streamed:
        assert torch.equal(streamed[name], stored[name]), name
    assert 0.25 < float(torch.cat([m.flatten() for m in streamed.values()]).float().mean()) < 0.75


def test_streamed_and_one_by_one_head_wanda_scores_agree(small):
    _, model, ids = small
    streamed = bench.head_signals_streamed(model, ids)["wanda"]
    one_by_one = bench.head_wanda_one_by_one(model, ids)
    assert set(one_by_one) == set(streamed.index)
    for head, score in one_by_one.items():
        assert streamed[head] == pytest.approx(score, rel=1e-9), head


def test_batched_and_one_by_one_head_ablation_agree(small):
    size, model, _ = small
    data = bench.evaluation_data(size)
    effects, _ = bench.ablation_batched(model, data)
    one_by_one = bench.ablation_one_by_one(model, data)
    np.testing.assert_allclose(effects["perplexity"], [p.perplexity for p in one_by_one], rtol=1e-9)


def test_batched_and_one_by_one_head_sweeps_agree(small):
    size, model, ids = small
    data = bench.evaluation_data(size)
    sweep = bench.head_sweep_batched(model, data, ids)
    pruned = sweep[sweep.ratio > 0].sort_values(["layer", "head", "ratio"])
    one_by_one = bench.head_sweep_one_by_one(model, data, ids)
    np.testing.assert_allclose(pruned["language"], [p.perplexity for p in one_by_one], rtol=1e-9)


def test_the_batched_ablation_is_measured_with_several_heads_per_pass(small):
    """The benchmark's fast path stacks every head of a block into one pass; with one per
    pass its speed-up would compare a path with itself."""
    size, model, _ = small
    with mock.patch.object(ablation, "evaluate_variants", wraps=ablation.evaluate_variants) as spy:
        bench.ablation_batched(model, bench.evaluation_data(size))
    assert max(call.args[2] for call in spy.call_args_list) == size.n_heads


def test_batched_and_per_sae_training_agree(small):
    """Both benchmark paths train the same SAEs, and the batched one really runs the batched trainer."""
    _, model, ids = small
    per_sae = bench.saes_per_sae(model, ids)
    with mock.patch.object(bench, "BatchedTopKTrainer", wraps=bench.BatchedTopKTrainer) as spy:
        batched = bench.saes_batched(model, ids)
    assert spy.called
    assert batched.keys() == per_sae.keys()
    for head in batched:
        torch.testing.assert_close(batched[head].W_dec, per_sae[head].W_dec, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batched[head].W_enc, per_sae[head].W_enc, rtol=1e-4, atol=1e-6)
