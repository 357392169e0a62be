"""Allocation of a global sparsity: OWL's map on hand-built scores, the outlier ratio of a
hand-built block, and the choice of heads for head pruning."""

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib import allocation, components
from cgclib.pruning import SparsityError, input_square_sums

from .tiny_models import TINY


def test_spread_is_owls_map():
    # scores 0, 1, 2 -> r = 0, lam, 2 lam; mean lam -> s = S + lam, S, S - lam
    s = allocation.spread([0.0, 1.0, 2.0], 0.7, 0.08)
    np.testing.assert_allclose(s, [0.78, 0.70, 0.62])
    np.testing.assert_allclose(allocation.spread([3.0, 3.0], 0.5, 0.08), [0.5, 0.5])
    # mean preserved for arbitrary scores; higher score, lower sparsity
    x = np.random.default_rng(0).normal(size=12)
    s = allocation.spread(x, 0.6, 0.1)
    assert s.mean() == pytest.approx(0.6)
    assert np.all(np.diff(s[np.argsort(x)]) <= 1e-12)
    assert s.max() - s.min() == pytest.approx(0.2)


def test_spread_narrows_near_the_edges_and_keeps_the_mean():
    np.testing.assert_allclose(allocation.spread([0.0, 1.0], 0.95, 0.08), [0.99, 0.91])
    low = allocation.spread([0.0, 0.0, 0.0, 3.0], 0.05, 0.08)
    assert low.min() == pytest.approx(0.0) and low.mean() == pytest.approx(0.05)
    with pytest.raises(SparsityError):
        allocation.spread([0.0, 1.0], 1.2, 0.08)
    with pytest.raises(SparsityError, match="largest block sparsity"):
        allocation.spread([0.0, 1.0], 0.995, 0.08)


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    model = TINY["gpt2"]()
    modules = components.all_linear_layers(model)
    ones = {name: torch.ones(components.in_features(m), dtype=torch.float64) for name, m in modules.items()}
    with torch.no_grad():
        for m in modules.values():
            components.weight(m).fill_(1.0)
        components.weight(components.linear_layers(model, 1)["mlp.c_fc"])[0, :4] = 1000.0
    ratios = allocation.outlier_ratios(model, ones, m=5)
    n_block = sum(components.weight(m).numel() for m in components.linear_layers(model, 1).values())
    assert ratios[0] == 0 and ratios[2] == 0
    assert ratios[1] == pytest.approx(4 / n_block)


def test_block_scores_cover_every_strategy():
    model = TINY["llama"]()
    ids = torch.randint(3, 64, (4, 10), generator=torch.Generator().manual_seed(0))
    sums = input_square_sums(model, ids, 2, components.all_linear_layers(model))
    density = pd.Series(
        [0.5, 0.6, 0.7, 0.8] * 3, index=pd.MultiIndex.from_product([range(3), range(4)], names=["layer", "head"])
    )
    scores = allocation.block_scores(model, sums, density)
    assert set(scores) == {"uniform", "density", "inverted", "wanda", "owl", "depth"}
    frame = allocation.block_sparsities(scores, 0.5)
    np.testing.assert_allclose(frame.mean(), 0.5)
    np.testing.assert_allclose(frame["uniform"], 0.5)
    with pytest.raises(ValueError, match="every layer"):
        allocation.block_scores(model, sums, density.drop(2, level="layer"))


def test_heads_to_prune_takes_the_lowest_scores():
    index = pd.MultiIndex.from_tuples([(0, 0), (0, 1), (1, 0), (1, 1)], names=["layer", "head"])
    scores = pd.Series([0.3, 0.1, 0.4, 0.2], index=index)
    assert allocation.heads_to_prune(scores, 0.5) == [(0, 1), (1, 1)]
    assert allocation.heads_to_prune(scores, 0.0) == []


@pytest.mark.parametrize("xmin", ["peak", "scan"])
def test_hill_alpha_recovers_a_power_law_exponent(xmin):
    rng = np.random.default_rng(0)
    sample = rng.pareto(2.0, size=4000) + 1.0  # density proportional to x^-3
    assert allocation.hill_alpha(sample, xmin) == pytest.approx(3.0, rel=0.08)
    with pytest.raises(ValueError, match="at least 3"):
        allocation.hill_alpha([0.0, 1.0], xmin)


def test_hill_alpha_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 3 positive eigenvalues, got 2"):
        allocation.hill_alpha([0.0, -1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 3 positive eigenvalues, got 2"):
        allocation.hill_alpha([1e-6, 2.0, 3.0], "scan")  # the full scan leaves out values below 1e-5
    with pytest.raises(ValueError, match='xmin must be "peak" or "scan", got \'mid\''):
        allocation.hill_alpha([1.0, 2.0, 3.0, 4.0], "mid")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(3))
def test_peak_alpha_recovers_the_tail_of_a_spectrum_with_a_bulk(seed):
    """A bulk of eigenvalues below 1 (the histogram's peak) and a Pareto tail from 1 with
    density proportional to x^-2.5: the fit around the peak finds the tail's exponent."""
    rng = np.random.default_rng(seed)
    bulk = rng.uniform(0.1, 1.0, size=3000)
    tail = rng.pareto(1.5, size=1000) + 1.0
    assert allocation.hill_alpha(np.concatenate([bulk, tail])) == pytest.approx(2.5, abs=0.2)


def _reference_alpha_peak(eigenvalues: np.ndarray) -> float:
    """A second reading of the reference: net_esd_estimator in haiquanlu/AlphaPruning,
    lib/esd_utils.py, with fix_fingers='xmin_peak' and its other defaults (bins=100,
    filter_zeros=False), step by step in its own torch calls, in float64 instead of float32."""
    bins = 100
    eigs, _ = torch.sort(torch.as_tensor(eigenvalues, dtype=torch.float64), descending=False)
    nz_eigs = eigs
    N = len(nz_eigs)
    log_nz_eigs = torch.log(nz_eigs)
    alphas = torch.zeros(N - 1, dtype=torch.float64)
    Ds = torch.ones(N - 1, dtype=torch.float64)
    hist_nz_eigs = torch.log10(nz_eigs)
    min_e, max_e = hist_nz_eigs.min(), hist_nz_eigs.max()
    counts = torch.histc(hist_nz_eigs, bins, min=min_e, max=max_e)
    boundaries = torch.linspace(min_e, max_e, bins + 1, dtype=torch.float64)
    h = counts, boundaries
    ih = torch.argmax(h[0])
    xmin2 = 10 ** h[1][ih]
    xmin_min = torch.log10(0.95 * xmin2)
    xmin_max = 1.5 * xmin2
    for i, xmin in enumerate(nz_eigs[:-1]):
        if xmin < xmin_min:
            continue
        if xmin > xmin_max:
            break
        n = float(N - i)
        seq = torch.arange(n, dtype=torch.float64)
        alpha = 1 + n / (torch.sum(log_nz_eigs[i:]) - n * log_nz_eigs[i])
        alphas[i] = alpha
        if alpha > 1:
            Ds[i] = torch.max(torch.abs(1 - (nz_eigs[i:] / xmin) ** (-alpha + 1) - seq / n))
    min_D_index = torch.argmin(Ds)
    return alphas[min_D_index].item()


@pytest.mark.parametrize("scale", [0.05, 1.0])
def test_peak_alpha_is_the_references_alpha_peak(scale):
    # heavy-tailed entries; at scale 1 the reference's lower bound skips the smallest eigenvalues
    w = np.random.default_rng(0).standard_t(4, size=(256, 256)) * scale
    eig = np.linalg.svd(w, compute_uv=False) ** 2
    expected = _reference_alpha_peak(eig)
    assert allocation.hill_alpha(eig) == pytest.approx(expected, abs=1e-9)
    assert allocation.hill_alpha(eig, "scan") != pytest.approx(expected, abs=0.1)


def test_alphapruning_map_and_budget():
    np.testing.assert_allclose(allocation.alphapruning_sparsities([1.0, 2.0, 3.0], 0.5, eps=0.3), [0.35, 0.5, 0.65])
    s = allocation.alphapruning_sparsities([1.0, 3.0], 0.6, eps=0.2, block_params=[1, 3])
    assert np.dot(s, [1, 3]) / 4 == pytest.approx(0.6) and s[1] > s[0]
    high = allocation.alphapruning_sparsities([1.0, 2.0], 0.9, eps=0.3)
    assert high.max() == pytest.approx(allocation.MAX_BLOCK_SPARSITY) and high.mean() == pytest.approx(0.9)


@pytest.mark.parametrize("xmin", ["peak", "scan"])
def test_block_alphas_are_finite_for_both_families(xmin):
    for family in ("gpt2", "llama"):
        alphas = allocation.block_alphas(TINY[family](), xmin)
        assert alphas.shape == (3,) and np.all(np.isfinite(alphas)) and np.all(alphas > 1)


def test_absorption_correction_moves_sparsity_to_absorbing_blocks_and_keeps_the_budget():
    base = np.array([0.6, 0.7, 0.8])
    corrected = allocation.absorption_corrected(base, [0.0, 1.0, 2.0], 0.05)
    assert corrected.mean() == pytest.approx(base.mean())
    np.testing.assert_allclose(corrected - base, [-0.05, 0.0, 0.05])
    np.testing.assert_allclose(allocation.absorption_corrected(base, [0.0, 1.0, 2.0], 0.0), base)
    np.testing.assert_allclose(allocation.absorption_corrected(base, [0.0, 2.0, np.nan], 0.05), [0.55, 0.75, 0.8])
    edge = allocation.absorption_corrected(np.array([0.98, 0.5]), [1.0, 0.0], 0.2)
    assert edge.max() <= allocation.MAX_BLOCK_SPARSITY and edge.mean() == pytest.approx(0.74)
