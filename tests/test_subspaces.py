"""Canonical and principal directions on data whose answer is known, and the stream
reconstruction on a real model."""

import numpy as np
import pytest
import scipy.linalg
import torch

from cgclib import subspaces
from cgclib.moments import CrossMoments, DegenerateMomentsError

from .tiny_models import TINY


def _toy(n=20000, seed=0):
    """h = (z + e1, 10 e2, e3), t = (z, e4): the big direction carries nothing about t."""
    g = torch.Generator().manual_seed(seed)
    z, e1, e2, e3, e4 = torch.randn(5, n, generator=g, dtype=torch.float64)
    h = torch.stack([z + e1, 10 * e2, e3], 1)
    t = torch.stack([z, e4], 1)
    m = CrossMoments.zeros(3, 2, with_yy=True)
    m.update(h, t)
    return m


def test_canonical_and_principal_directions_of_a_known_case():
    m = _toy()
    cov = m.cov_xx()
    top = subspaces.variance_basis(cov, 1)[:, 0]
    assert abs(top[1]) == pytest.approx(1, abs=1e-3)
    correlations, directions = subspaces.canonical_correlations(m, ridge=1e-9)
    assert correlations[0] == pytest.approx(2**-0.5, abs=0.02)
    a = directions[:, 0] / directions[:, 0].norm()
    assert abs(a[0]) == pytest.approx(1, abs=1e-2)
    # the high-variance direction explains none of the predictive variate
    assert subspaces.shared_with_principal(cov, directions[:, :1]) < 0.01
    assert subspaces.rank_for_variance(cov, 0.9) == 1


PLANTED = np.array([0.9, 0.6, 0.3])  # population canonical correlations of `_planted`


def _planted(n=20000, seed=0):
    """x (6 variables) and y (4) sharing three latent signals with canonical correlations
    PLANTED, mixed by rotations and rescaled, so that both correlation matrices are
    well conditioned (smallest eigenvalue about 0.2) but not diagonal. Like a residual
    stream, x has an outlier dimension: its first variable has 30 times the spread."""
    g = np.random.default_rng(seed)
    z = g.standard_normal((n, 3))
    shared = np.sqrt(PLANTED) * z
    x = np.hstack([shared + np.sqrt(1 - PLANTED) * g.standard_normal((n, 3)), g.standard_normal((n, 3))])
    y = np.hstack([shared + np.sqrt(1 - PLANTED) * g.standard_normal((n, 3)), g.standard_normal((n, 1))])
    x = x * [1, 2, 0.5, 1.5, 1, 0.7] @ np.linalg.qr(g.standard_normal((6, 6)))[0] + 1.5
    x[:, 0] *= 30
    y = y * [1, 0.5, 2, 1] @ np.linalg.qr(g.standard_normal((4, 4)))[0] - 3
    return x, y


def _moments(x, y, batch=5000):
    m = CrossMoments.zeros(x.shape[1], y.shape[1], with_yy=True)
    for start in range(0, len(x), batch):
        m.update(torch.from_numpy(x[start : start + batch]), torch.from_numpy(y[start : start + batch]))
    return m


def _exact_cca(x, y):
    """Textbook CCA on the stored data: the singular values of Cxx^-1/2 Cxy Cyy^-1/2, and
    the directions Cxx^-1/2 u of x."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    whiten_x = scipy.linalg.inv(scipy.linalg.sqrtm(xc.T @ xc / len(x)).real)
    whiten_y = scipy.linalg.inv(scipy.linalg.sqrtm(yc.T @ yc / len(y)).real)
    u, s, _ = np.linalg.svd(whiten_x @ (xc.T @ yc / len(x)) @ whiten_y)
    return s, whiten_x @ u


def _shrinkage_bound(x, y, ridge):
    """The most a ridge can shrink a correlation, as a share of it: 1 - sqrt(mu_x mu_y /
    ((mu_x + ridge) (mu_y + ridge))), mu the smallest eigenvalues of the correlation
    matrices."""
    mu_x, mu_y = np.linalg.eigvalsh(np.corrcoef(x.T))[0], np.linalg.eigvalsh(np.corrcoef(y.T))[0]
    return 1 - np.sqrt(mu_x * mu_y / ((mu_x + ridge) * (mu_y + ridge)))


def test_canonical_correlations_are_exact_without_ridge_and_shrunk_within_a_bound_with_it():
    x, y = _planted()
    exact, exact_directions = _exact_cca(x, y)
    np.testing.assert_allclose(exact[:3], PLANTED, atol=0.02)
    correlations, directions = subspaces.canonical_correlations(_moments(x, y), ridge=0)
    np.testing.assert_allclose(correlations.numpy(), exact, atol=1e-6)
    # the same variates up to sign: x . a_j of both have unit variance and correlation +-1
    cov = np.cov(x.T, bias=True)
    np.testing.assert_allclose(np.abs(np.diagonal(exact_directions.T @ cov @ directions.numpy())), 1, atol=1e-6)
    # the default ridge only shrinks them, and by less than its bound (here under 0.1%)
    bound = _shrinkage_bound(x, y, 1e-4)
    assert bound < 1e-3
    shrinkage = exact - subspaces.canonical_correlations(_moments(x, y))[0].numpy()
    assert (shrinkage >= -1e-12).all()
    assert (shrinkage <= bound * exact + 1e-12).all()


@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("factor", [1e2, 1e3, 1e4])
def test_canonical_correlations_do_not_depend_on_the_scale_of_one_variable(side, factor):
    x, y = _planted()
    before, directions = subspaces.canonical_correlations(_moments(x, y))
    x, y = x.copy(), y.copy()
    (x if side == "x" else y)[:, 1] *= factor
    after, scaled = subspaces.canonical_correlations(_moments(x, y))
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    # the variates x . a are unchanged (up to sign): a scaled x variable's weight shrinks by the factor
    if side == "x":
        scaled[1] *= factor
    torch.testing.assert_close(scaled.abs(), directions.abs(), atol=1e-6, rtol=1e-6)


def test_a_constant_variable_is_left_out_and_gets_no_weight():
    x, y = _planted()
    with_constant = np.hstack([np.full((len(x), 1), 0.3), x])
    for ridge in (1e-4, 0):
        reference, directions = subspaces.canonical_correlations(_moments(x, y), ridge)
        correlations, padded = subspaces.canonical_correlations(_moments(with_constant, y), ridge)
        torch.testing.assert_close(correlations, reference, atol=1e-10, rtol=0)
        assert (padded[0] == 0).all()
        torch.testing.assert_close(padded[1:], directions, atol=1e-10, rtol=1e-8)


def test_a_duplicated_variable_is_regularised_by_the_ridge_and_refused_without_it():
    x, y = _planted()
    duplicated = np.hstack([x, x[:, :1]])
    exact, _ = _exact_cca(x, y)
    correlations, directions = subspaces.canonical_correlations(_moments(duplicated, y))
    # the ridge splits the weight evenly between the copies, and shrinks no more than for x alone
    torch.testing.assert_close(directions[0], directions[-1])
    shrinkage = exact - correlations.numpy()
    assert (shrinkage >= -1e-12).all()
    assert (shrinkage <= _shrinkage_bound(x, y, 1e-4) * exact + 1e-12).all()
    with pytest.raises(DegenerateMomentsError, match="correlation matrix of x is singular"):
        subspaces.canonical_correlations(_moments(duplicated, y), ridge=0)
    with pytest.raises(DegenerateMomentsError, match="correlation matrix of y is singular"):
        subspaces.canonical_correlations(_moments(x, np.hstack([y, 2 * y[:, :1] - y[:, 1:2]])), ridge=1e-12)


def test_canonical_correlations_need_more_pairs_than_variables():
    x, y = _planted(n=11)  # 6 + 4 variables
    correlations, _ = subspaces.canonical_correlations(_moments(x, y))
    assert len(correlations) == 4
    with pytest.raises(DegenerateMomentsError, match="needs more than 10 pairs, got 10"):
        subspaces.canonical_correlations(_moments(x[:10], y[:10]))
    with pytest.raises(ValueError, match="ridge"):
        subspaces.canonical_correlations(_moments(x, y), ridge=-1e-4)


def test_keep_variates_is_the_orthogonal_projection_for_principal_directions():
    cov = _toy().cov_xx()
    basis = subspaces.variance_basis(cov, 2)
    keep = subspaces.keep_variates(cov, basis)
    torch.testing.assert_close(keep, basis @ basis.T)
    full = subspaces.keep_variates(cov, subspaces.variance_basis(cov, 3))
    assert subspaces.variance_share(cov, full) == pytest.approx(1)
    with pytest.raises(ValueError, match="rank"):
        subspaces.variance_basis(cov, 4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_next_token_moments_and_a_full_rank_reconstruction_leave_the_model_unchanged(family):
    model = TINY[family]().double()
    ids = torch.randint(3, 64, (6, 12), generator=torch.Generator().manual_seed(1))
    moments = subspaces.next_token_moments(model, ids, None, layers=[1], batch_sequences=4)
    assert moments[1].n == 6 * 10  # positions 1..10 predict tokens 2..11 (position 0 is left out)
    cov = moments[1].cov_xx()
    keep = subspaces.keep_variates(cov, subspaces.variance_basis(cov, 32))
    with torch.no_grad():
        clean = model(ids).logits
        with subspaces.reconstructed_stream(model, 1, keep, moments[1].mean_x):
            rebuilt = model(ids).logits
        with subspaces.reconstructed_stream(model, 1, keep[:, :0] @ keep[:0], moments[1].mean_x):
            collapsed = model(ids).logits
    torch.testing.assert_close(rebuilt, clean)
    assert (collapsed - clean).abs().max() > 1e-3


def test_random_directions_give_k_over_d_only_when_the_stream_is_isotropic():
    from cgclib.subspaces import random_direction_share, shared_with_principal

    d, k = 64, 4
    isotropic = torch.eye(d, dtype=torch.float64)
    assert random_direction_share(isotropic, k, draws=200) == pytest.approx(k / d, rel=0.15)
    spectrum = 1.0 / torch.arange(1, d + 1, dtype=torch.float64)
    uneven = torch.diag(spectrum)
    raw = random_direction_share(uneven, k, draws=200)
    assert raw > 3 * k / d  # generic raw directions lean towards the high-variance ones
    # directions random in whitened coordinates are explained k / d on average, whatever the spectrum
    g = torch.Generator().manual_seed(1)
    whitened = [
        shared_with_principal(
            uneven, torch.diag(spectrum.rsqrt()) @ torch.randn(d, k, generator=g, dtype=torch.float64)
        )
        for _ in range(200)
    ]
    assert sum(whitened) / len(whitened) == pytest.approx(k / d, rel=0.15)
