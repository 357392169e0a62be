"""Truncated SVD against Eckart-Young, and activation-aware SVD against the plain one."""

import pytest
import torch

from cgclib import low_rank


def test_the_kept_rank_stores_no_more_than_the_share_of_parameters_left():
    assert low_rank.kept_rank((12, 20), 0.25) == 5  # 5 x (12 + 20) = 160 <= 0.75 x 240 = 180 < 6 x 32
    assert low_rank.kept_rank((128, 128), 0.0) == 64  # half the rank of a square matrix saves nothing
    assert low_rank.kept_rank((128, 128), 0.5) == 32 and low_rank.kept_rank((4, 4), 0.99) == 1
    with pytest.raises(ValueError, match="parameters removed"):
        low_rank.kept_rank((4, 4), 1.0)


def test_truncation_keeps_the_rank_and_loses_the_dropped_singular_values():
    w = torch.randn(12, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    approx = low_rank.truncated(w, 0.25)
    assert torch.linalg.matrix_rank(approx) == 5
    s = torch.linalg.svdvals(w)
    torch.testing.assert_close(torch.linalg.norm(w - approx), s[5:].pow(2).sum().sqrt())


def test_equal_scales_give_the_plain_truncation():
    w = torch.randn(10, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scales = torch.full((16,), 3.0, dtype=torch.float64)
    torch.testing.assert_close(low_rank.activation_aware(w, scales, 0.5), low_rank.truncated(w, 0.5))


def test_activation_aware_truncation_keeps_the_output_better_on_unequal_inputs():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 32, generator=g, dtype=torch.float64)
    x = torch.randn(400, 32, generator=g, dtype=torch.float64) * torch.logspace(-2, 1, 32, dtype=torch.float64)
    scales = low_rank.activation_scales(x.abs().mean(0))
    for share in (0.1, 0.4, 0.7):
        plain = ((w - low_rank.truncated(w, share)) @ x.T).norm()
        aware = ((w - low_rank.activation_aware(w, scales, share)) @ x.T).norm()
        assert aware < plain


def test_silent_features_keep_an_invertible_scaling():
    scales = low_rank.activation_scales(torch.tensor([4.0, 0.0, 1.0]))
    torch.testing.assert_close(scales, torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="scales"):
        low_rank.activation_aware(torch.ones(2, 3), torch.ones(2), 0.5)
