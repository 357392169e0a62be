"""Streamed moments equal the moments of the stored data, and the closed-form fits recover
the maps that generated the data."""

import numpy as np
import pytest
import torch

from cgclib.moments import (
    CrossMoments,
    DegenerateMomentsError,
    low_rank_parameters,
    reduced_rank,
    ridge_regression,
    varying,
)


def _pairs(n=4000, dx=6, dy=4, rank=None, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dx, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, dx, dtype=torch.float64) + 1.5
    w = torch.randn(dx, dy, generator=g, dtype=torch.float64)
    if rank is not None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        w = u[:, :rank] * s[:rank] @ vh[:rank]
    b = torch.randn(dy, generator=g, dtype=torch.float64)
    y = x @ w + b + noise * torch.randn(n, dy, generator=g, dtype=torch.float64)
    return x, y, w, b


def _streamed(x, y, batch=333, with_yy=True):
    m = CrossMoments.zeros(x.shape[1], y.shape[1], with_yy=with_yy)
    for start in range(0, len(x), batch):
        m.update(x[start : start + batch], y[start : start + batch])
    return m


def test_streamed_moments_equal_the_covariances_of_the_stored_data():
    x, y, _, _ = _pairs(noise=0.5)
    m = _streamed(x, y)
    joint = np.cov(torch.cat([x, y], 1).numpy().T, bias=True)
    assert m.n == len(x)
    np.testing.assert_allclose(m.cov_xx().numpy(), joint[:6, :6], atol=1e-10)
    np.testing.assert_allclose(m.cov_xy().numpy(), joint[:6, 6:], atol=1e-10)
    np.testing.assert_allclose(m.cov_yy().numpy(), joint[6:, 6:], atol=1e-10)


def test_ridge_regression_recovers_a_noiseless_affine_map():
    x, y, w, b = _pairs()
    fit = ridge_regression(_streamed(x, y, with_yy=False), ridge=1e-12)
    torch.testing.assert_close(fit.weight, w, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fit.bias, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fit(x.float()), y.float(), atol=1e-4, rtol=1e-4)


def test_ridge_penalty_shrinks_the_weight():
    x, y, _, _ = _pairs(noise=0.1)
    m = _streamed(x, y)
    assert ridge_regression(m, 10.0).weight.norm() < ridge_regression(m, 1e-6).weight.norm()


def test_reduced_rank_fit_is_exact_for_a_low_rank_map_and_counts_its_storage():
    x, y, w, _ = _pairs(rank=2)
    m = _streamed(x, y)
    fit = ridge_regression(m, 1e-12)
    low = reduced_rank(fit, m, 2)
    torch.testing.assert_close(low(x), y, atol=1e-6, rtol=1e-6)
    assert torch.linalg.matrix_rank(low.weight) == 2
    one = reduced_rank(fit, m, 1)
    assert (one(x) - y).square().sum() > 1e-3
    assert low_rank_parameters(fit, 2) == 2 * (6 + 4) + 4
    with pytest.raises(ValueError, match="rank"):
        reduced_rank(fit, m, 5)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
def test_constant_variables_are_told_apart_from_small_ones_at_any_scale(scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    x[:, 0] = 0.0
    x[:, 1] = 0.3  # not exact in binary: E[x^2] - E[x]^2 leaves a rounding residue
    x[:, 2] = 123.456
    x[:, 3] = 123.456 + 1e-2 * x[:, 3]  # a standard deviation of 1e-4 of its mean
    m = _streamed(scale * x, x[:, :1])
    assert varying(m.cov_xx(), m.mean_x).tolist() == [False, False, False, True]


def test_bad_input_is_named():
    m = CrossMoments.zeros(3, 2)
    with pytest.raises(DegenerateMomentsError, match="at least 2"):
        m.cov_xx()
    with pytest.raises(ValueError, match="row-aligned"):
        m.update(torch.zeros(4, 3), torch.zeros(5, 2))
    m.update(torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="with_yy"):
        m.cov_yy()
