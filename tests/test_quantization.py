"""Group quantization, the bit accounting of each scheme, output error from second moments,
and weights restored after a replacement."""

import pytest
import torch

from cgclib import components
from cgclib import quantization as quant

from .tiny_models import TINY


def test_round_to_nearest_is_exact_on_the_grid_and_within_half_a_step_elsewhere():
    on_grid = torch.tensor([[0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0]])
    torch.testing.assert_close(quant.quantize_groups(on_grid, 2, 4), on_grid)
    w = torch.randn(16, 50, generator=torch.Generator().manual_seed(0))
    q = quant.quantize_groups(w, 4, 16)  # the last group of each row has 2 weights
    groups = torch.nn.functional.pad(w, (0, 14)).view(16, 4, 16)
    spans = torch.tensor(
        [
            [(g[: (2 if i == 3 else 16)].max() - g[: (2 if i == 3 else 16)].min()).item() for i, g in enumerate(row)]
            for row in groups
        ]
    )
    step = (spans / 15).repeat_interleave(16, dim=1)[:, :50]
    assert ((q - w).abs() <= step / 2 + 1e-6).all()
    for bits in (0, 9):
        with pytest.raises(ValueError, match="bits"):
            quant.quantize_groups(w, bits, 16)


def test_one_bit_keeps_each_group_s_extremes():
    """At one bit a group has two levels, its minimum and its maximum; each weight goes to
    the nearer one."""
    w = torch.tensor([[0.0, 0.2, 0.6, 1.0, -3.0, -2.0, 2.0, 5.0]])
    q = quant.quantize_groups(w, 1, 4)
    torch.testing.assert_close(q, torch.tensor([[0.0, 0.0, 1.0, 1.0, -3.0, -3.0, 5.0, 5.0]]))
    ternary = quant.round_to_levels(w, 3, 4)  # levels at min, midpoint and max of each group
    torch.testing.assert_close(ternary, torch.tensor([[0.0, 0.0, 0.5, 1.0, -3.0, -3.0, 1.0, 5.0]]))
    with pytest.raises(ValueError, match="levels"):
        quant.round_to_levels(w, 1, 4)


@pytest.mark.parametrize("kind", quant.KINDS)
@pytest.mark.parametrize("bits", [3, 4])
def test_every_scheme_stays_within_the_direct_budget(kind, bits):
    w = torch.randn(48, 96, generator=torch.Generator().manual_seed(1))
    packed = quant.compress(w, quant.Scheme(kind, bits, 32))
    assert packed.bits <= quant.storage_bits(48, 96, bits, 32)
    assert packed.weight.shape == w.shape
    assert (packed.rank > 0) == (kind != "direct")
    assert quant.storage_bits(48, 96, bits, 32) == 48 * 96 * bits + 48 * 3 * 2 * quant.SCALE_BITS


def test_factored_quantization_of_a_low_rank_weight_is_nearly_exact():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 2, generator=g) @ torch.randn(2, 64, generator=g)
    packed = quant.compress(w, quant.Scheme("svd", 8, 64))
    assert (packed.weight - w).norm() / w.norm() < 0.02
    with pytest.raises(ValueError, match="scheme"):
        quant.Scheme("pca", 4)


def test_output_error_from_second_moments_matches_the_stored_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 24, generator=g, dtype=torch.float64)
    w = torch.randn(10, 24, generator=g, dtype=torch.float64)
    approx = w + 0.1 * torch.randn(10, 24, generator=g, dtype=torch.float64)
    direct = ((x @ (approx - w).T).square().sum() / (x @ w.T).square().sum()).sqrt()
    assert quant.relative_output_error(w, approx, x.T @ x / len(x)) == pytest.approx(float(direct), rel=1e-9)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_input_moments_and_replaced_weights_restore_the_model(family):
    model = TINY[family]()
    ids = torch.randint(3, 64, (4, 10), generator=torch.Generator().manual_seed(4))
    modules = components.linear_layers(model, 0)
    name = next(iter(modules))
    second = quant.input_second_moments(model, ids, None, {name: modules[name]})
    assert second[name].shape == (components.in_features(modules[name]),) * 2
    assert torch.allclose(second[name], second[name].T)
    with torch.no_grad():
        before = model(ids).logits
        zero = {f"0.{name}": torch.zeros_like(components.weight(modules[name]))}
        with components.replaced_weights(model, zero):
            assert components.weight(modules[name]).abs().sum() == 0
        after = model(ids).logits
    torch.testing.assert_close(before, after)
    with pytest.raises(components.ComponentError), components.replaced_weights(model, {"9.mlp": torch.zeros(1)}):
        pass
