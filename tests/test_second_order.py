"""SparseGPT and GPTQ against closed forms on two columns, against round-to-nearest and
magnitude / Wanda on correlated inputs, and their masks and edge cases."""

import pytest
import torch

from cgclib import second_order
from cgclib.pruning import layer_mask
from cgclib.quantization import group_grid, on_grid, quantize_groups


def _correlated(tokens=512, features=64, seed=0):
    """Inputs whose features are correlated (a random mixing of independent ones), as the
    inputs of a trained layer are, and of unequal scales in no particular order (SparseGPT
    prunes the same share of every block of columns: scales sorted by column would make
    its first blocks all small features)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, features, generator=g, dtype=torch.float64)
    mixing = torch.randn(features, features, generator=g, dtype=torch.float64) / features**0.5
    scales = torch.logspace(-1, 1, features, dtype=torch.float64)[torch.randperm(features, generator=g)]
    return (x @ (torch.eye(features, dtype=torch.float64) + 2 * mixing)) * scales


def _output_error(w, approx, x):
    return float(((w.double() - approx.double()) @ x.T).pow(2).sum())


def test_sparsegpt_matches_the_closed_form_update_on_two_columns():
    """Pruning the first of two weights and refitting the second by least squares gives
    w1' = w1 + w0 H01 / H11: the OBS update SparseGPT applies."""
    h = torch.tensor([[2.0, 0.8], [0.8, 1.5]], dtype=torch.float64)
    w = torch.tensor([[0.05, 1.0], [-0.02, 0.7]], dtype=torch.float64)
    pruned, mask = second_order.sparsegpt(w, h, sparsity=0.5, damping=0.0)
    assert mask.tolist() == [[True, False], [True, False]]
    expected = w[:, 1] + w[:, 0] * h[0, 1] / h[1, 1]
    torch.testing.assert_close(pruned[:, 1], expected)
    assert (pruned[:, 0] == 0).all()


def test_gptq_matches_the_closed_form_update_on_two_columns():
    h = torch.tensor([[2.0, 0.8], [0.8, 1.5]], dtype=torch.float64)
    w = torch.tensor([[0.33, 1.0], [-0.21, 0.7]], dtype=torch.float64)
    q = second_order.gptq(w, h, levels=4, group_size=2, damping=0.0)
    low, step = group_grid(w, 4)
    q0 = on_grid(w[:, :1], low, step, 4)[:, 0].double()
    w1 = w[:, 1] + (w[:, 0] - q0) * h[0, 1] / h[1, 1]
    torch.testing.assert_close(q[:, 0], q0)
    torch.testing.assert_close(q[:, 1], on_grid(w1[:, None], low, step, 4)[:, 0].double())


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_sparsegpt_reconstructs_better_than_magnitude_and_than_its_mask_alone(sparsity):
    x = _correlated()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pruned, mask = second_order.sparsegpt(w, x.T @ x, sparsity, block_size=32)
    assert int(mask.sum()) == 2 * int(32 * 32 * sparsity)  # exactly the share of each block of columns
    assert (pruned[mask] == 0).all()
    magnitude = w.masked_fill(layer_mask(w.abs(), sparsity), 0)
    error = _output_error(w, pruned, x)
    assert error < _output_error(w, magnitude, x)
    assert error < _output_error(w, w.masked_fill(mask, 0), x)  # the updates of the kept weights help


def test_sparsegpt_two_of_four_keeps_two_in_every_group_of_four():
    x = _correlated()
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pruned, mask = second_order.sparsegpt(w, x.T @ x, n_of_m=(2, 4))
    assert (mask.view(16, 16, 4).sum(-1) == 2).all()
    assert (pruned[mask] == 0).all()
    with pytest.raises(ValueError, match="N:M"):
        second_order.sparsegpt(w, x.T @ x, n_of_m=(2, 3))
    with pytest.raises(ValueError, match="row length 62"):
        second_order.sparsegpt(w[:, :62], (x.T @ x)[:62, :62], n_of_m=(2, 4))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_reconstructs_better_than_round_to_nearest(bits):
    x = _correlated()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q = second_order.gptq(w, x.T @ x, 2**bits, group_size=16, block_size=32)
    assert _output_error(w, q, x) < _output_error(w, quantize_groups(w, bits, 16), x)
    for group in range(4):  # every row of every group lies on a grid of 2^bits levels
        assert all(len(set(r)) <= 2**bits for r in q[:, group * 16 : (group + 1) * 16].tolist())


def test_gptq_without_correlations_is_round_to_nearest():
    """With a diagonal Hessian no column's error can be compensated by another column."""
    w = torch.randn(8, 48, generator=torch.Generator().manual_seed(4))
    h = torch.diag(torch.rand(48, generator=torch.Generator().manual_seed(5)) + 0.5)
    torch.testing.assert_close(second_order.gptq(w, h, 8, group_size=16), quantize_groups(w, 3, 16))


def _sequential_obs(w, h, compressed_column, block_size):
    """The definition, without the Cholesky shortcut or lazy updates: column q is compressed,
    and the columns after it move by the OBS update of the inverse Hessian of the columns not
    yet compressed, inverted afresh. `compressed_column(q, w, block_start)` sees the weights as
    updated so far (decisions at a block's start are taken on them)."""
    w = w.clone()
    for q in range(w.shape[1]):
        inverse = torch.linalg.inv(h[q:, q:])
        new = compressed_column(q, w, q - q % block_size)
        error = (w[:, q] - new) / inverse[0, 0]
        w[:, q:] -= error[:, None] * inverse[0][None, :]
        w[:, q] = new
    return w


def _three_blocks(seed):
    """A Hessian of correlated inputs and a weight of 48 columns: three blocks of 16."""
    x = _correlated(features=48)
    return x.T @ x, torch.randn(6, 48, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sparsegpt_equals_sequential_obs_over_several_blocks():
    """Masks chosen per block of columns from the weights as updated so far, by the saliency
    w^2 / [H_F^-1]_qq (F: the columns from q on); every error spread over every later column."""
    h, w = _three_blocks(6)
    masks = {}

    def pruned(q, current, start):
        if start not in masks:
            saliency = torch.stack(
                [current[:, j] ** 2 / torch.linalg.inv(h[j:, j:])[0, 0] for j in range(start, start + 16)], dim=1
            )
            lowest = torch.sort(saliency.flatten(), stable=True).indices[: int(saliency.numel() * 0.5)]
            mask = torch.zeros(6 * 16, dtype=torch.bool)
            mask[lowest] = True
            masks[start] = mask.view(6, 16)
        return current[:, q].masked_fill(masks[start][:, q - start], 0.0)

    expected = _sequential_obs(w, h, pruned, 16)
    actual, _ = second_order.sparsegpt(w, h, 0.5, block_size=16, damping=0.0)
    torch.testing.assert_close(actual, expected)


def test_gptq_equals_sequential_obs_over_several_blocks():
    """Each group's grid fixed at its first column from the weights as updated so far (groups
    aligned with blocks, where the reference's lazy update changes nothing)."""
    h, w = _three_blocks(7)
    grids = {}

    def rounded(q, current, start):
        if start not in grids:
            grids[start] = group_grid(current[:, start : start + 16], 8)
        return on_grid(current[:, q : q + 1], *grids[start], 8)[:, 0].double()

    expected = _sequential_obs(w, h, rounded, 16)
    torch.testing.assert_close(second_order.gptq(w, h, 8, group_size=16, block_size=16, damping=0.0), expected)


def test_dead_columns_are_zeroed_and_bad_hessians_refused():
    x = _correlated(features=8)
    x[:, 3] = 0
    w = torch.ones(4, 8, dtype=torch.float64)
    pruned, _ = second_order.sparsegpt(w, x.T @ x, 0.25)
    assert (pruned[:, 3] == 0).all()
    with pytest.raises(second_order.HessianError, match="shape"):
        second_order.gptq(w, torch.eye(7), 16, 8)
    with pytest.raises(second_order.HessianError, match="positive definite"):
        second_order.gptq(w, -torch.eye(8), 16, 8, damping=0.0)
    with pytest.raises(ValueError, match="sparsity"):
        second_order.sparsegpt(w, x.T @ x, 1.0)
