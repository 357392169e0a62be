"""Block fits: streamed R^2 equals R^2 computed from stored activations, replacement
hooks do what they say, and an upstream change reaches the later blocks."""

import numpy as np
import pytest
import torch

from cgclib import linear_blocks as lb
from cgclib.hooks import residual_stream
from cgclib.moments import AffineMap
from cgclib.tokens import token_mask

from .tiny_models import TINY


def _ids(n=8, seq=12, seed=0):
    ids = torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:3, -4:] = 2
    return ids


def _stored(model, ids, pad, layer):
    store = {}
    with residual_stream(model, lambda l, where, h: store.__setitem__(where, h), [layer]), torch.no_grad():
        model(input_ids=ids, attention_mask=(ids != pad).long())
    mask = token_mask(ids, pad)
    return store["in"][mask], store["out"][mask]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_streamed_r2_equals_r2_from_stored_activations(family):
    model = TINY[family]().double()
    fit_ids, test_ids = _ids(seed=0), _ids(seed=1)
    maps = lb.fit_block_maps(lb.block_moments(model, fit_ids, 2, batch_sequences=3), ridge=1e-3)
    stats = lb.heldout_fit(model, test_ids, 2, maps, batch_sequences=3)
    x, y = _stored(model, test_ids, 2, 1)
    pred = x + maps[1](x)
    sse = (y - pred).square().sum()
    u = y - x
    assert stats[1].r2("output") == pytest.approx(float(1 - sse / (y - y.mean(0)).square().sum()), rel=1e-9)
    assert stats[1].r2("update") == pytest.approx(float(1 - sse / (u - u.mean(0)).square().sum()), rel=1e-9)
    assert stats[1].n.sum() == len(x)
    low, high = stats[1].r2_interval("update", n_resamples=200)
    assert low <= stats[1].r2("update") <= high


def test_in_sample_fit_with_no_ridge_is_least_squares():
    model = TINY["gpt2"]().double()
    ids = _ids(n=40, seq=30)
    maps = lb.fit_block_maps(lb.block_moments(model, ids, 2), ridge=1e-12)
    x, y = _stored(model, ids, 2, 2)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(design, y - x).solution
    torch.testing.assert_close(maps[2].weight, solution[:-1], atol=1e-6, rtol=1e-5)


def test_replaced_block_outputs_its_map_and_shifts_later_blocks():
    model = TINY["llama"]().double()
    ids = _ids()
    d = model.config.hidden_size
    identity = AffineMap(torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64))
    with lb.replaced_blocks(model, {0: identity}):
        x, y = _stored(model, ids, 2, 0)
    torch.testing.assert_close(x, y)
    maps = lb.fit_block_maps(lb.block_moments(model, ids, 2))
    clean = lb.heldout_fit(model, ids, 2, {2: maps[2]})
    shifted = lb.heldout_fit(model, ids, 2, {2: maps[2]}, upstream={0: identity})
    assert shifted[2].r2("update") != pytest.approx(clean[2].r2("update"))
    assert lb.block_parameters(model, 0) == sum(p.numel() for p in model.model.layers[0].parameters())


def test_r2_rejects_an_unknown_target():
    stats = lb.FitStats(*(np.ones(2) for _ in range(6)))
    with pytest.raises(ValueError, match="target"):
        stats.r2("input")


def test_identity_r2_is_the_output_r2_of_the_mean_update_and_ties_the_two_r2():
    model = TINY["gpt2"]().double()
    fit_ids, test_ids = _ids(seed=0), _ids(seed=1)
    maps = lb.fit_block_maps(lb.block_moments(model, fit_ids, 2, batch_sequences=3), ridge=1e-3)
    stats = lb.heldout_fit(model, test_ids, 2, maps, batch_sequences=3)[1]
    x, y = _stored(model, test_ids, 2, 1)
    u = y - x
    baseline = x + u.mean(0)
    expected = 1 - (y - baseline).square().sum() / (y - y.mean(0)).square().sum()
    assert lb.identity_r2(stats) == pytest.approx(float(expected), rel=1e-9)
    assert 1 - stats.r2("output") == pytest.approx((1 - stats.r2("update")) * (1 - lb.identity_r2(stats)), rel=1e-9)
    index = np.array([0, 0, 5, 7])
    assert 1 - stats.r2("output", index) == pytest.approx(
        (1 - stats.r2("update", index)) * (1 - lb.identity_r2(stats, index)), rel=1e-9
    )
