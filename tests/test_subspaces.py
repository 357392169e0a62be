"""Canonical and principal directions on data whose answer is known, and the stream
reconstruction on a real model."""

import pytest
import torch

from cgclib import subspaces
from cgclib.moments import CrossMoments

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
