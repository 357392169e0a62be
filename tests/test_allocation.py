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
    density = pd.Series([0.5, 0.6, 0.7, 0.8] * 3, index=pd.MultiIndex.from_product([range(3), range(4)],
                                                                                names=["layer", "head"]))
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
