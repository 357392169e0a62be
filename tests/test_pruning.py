"""Wanda masks against a direct computation on stored inputs and against the reference's
recipe, the input statistics with and without position 0, the masking context, and
pruning of a single head."""

import pytest
import torch

from cgclib import components
from cgclib.hooks import linear_inputs
from cgclib.pruning import (
    SparsityError,
    check_sparsity,
    head_weight_slices,
    input_square_sums,
    layer_mask,
    masked,
    n_of_m_mask,
    row_mask,
    wanda_block_masks,
    wanda_head_masks,
)
from cgclib.tokens import token_mask

from .tiny_models import TINY


def _ids(n=8, seq=12, seed=0):
    ids = torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:2, -3:] = 2
    return ids


def test_row_mask_removes_the_lowest_share_of_every_row():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 0.1, 0.9, 0.2]])
    assert row_mask(scores, 0.5).tolist() == [[False, True, False, True], [False, True, False, True]]
    assert not row_mask(scores, 0.0).any()
    assert row_mask(scores, 0.99).sum(1).tolist() == [3, 3]


def test_layer_mask_removes_the_lowest_share_of_the_whole_matrix():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 0.1, 0.9, 0.2]])
    assert layer_mask(scores, 0.5).tolist() == [[False, False, False, False], [True, True, True, True]]
    assert layer_mask(scores, 0.25).sum() == 2 and not layer_mask(scores, 0.0).any()


def test_n_of_m_mask_removes_n_in_every_group_of_m():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    assert n_of_m_mask(scores, 2, 4).tolist() == [[False, True, False, True, True, False, False, True]]
    scores = torch.rand(16, 32, generator=torch.Generator().manual_seed(0))
    assert (n_of_m_mask(scores, 2, 4).view(16, 8, 4).sum(-1) == 2).all()
    with pytest.raises(SparsityError, match="groups of 4"):
        n_of_m_mask(torch.rand(2, 6), 2, 4)
    with pytest.raises(SparsityError, match="0 < n < m"):
        n_of_m_mask(scores, 4, 4)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5"])
def test_sparsity_outside_the_unit_interval_is_refused(bad):
    with pytest.raises(SparsityError, match="must lie in"):
        check_sparsity(bad)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_block_masks_match_wanda_on_stored_inputs_and_restore_the_weights(family):
    model = TINY[family]().double()
    ids = _ids()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = wanda_block_masks(model, ids, 2, {0: 0.5, 2: 0.25}, batch_sequences=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(masks) == {f"{b}.{n}" for b in (0, 2) for n in components.linear_layers(model, b)}

    # block 0 sees dense inputs: recompute its Wanda scores from stored activations (every token but padding)
    keep = ids != 2
    name, module = next(iter(components.linear_layers(model, 0).items()))
    stored = []
    hook = module.register_forward_pre_hook(lambda m, a: stored.append(a[0][keep]))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=(ids != 2).long())
    hook.remove()
    x = torch.cat(stored)
    w = components.weight(module)
    scores = w.abs() * x.norm(dim=0)[None, :]
    k = int(w.shape[1] * 0.5)
    expected = torch.zeros_like(w, dtype=torch.bool).scatter_(1, scores.argsort(dim=1, stable=True)[:, :k], True)
    assert torch.equal(masks[f"0.{name}"], expected)
    assert masks[f"2.{name}"].sum(1).eq(int(w.shape[1] * 0.25)).all()


def _captured_inputs(model, module, ids):
    """The inputs of `module` in one plain forward pass, (batch, seq, in), by a forward pre-hook."""
    stored = []
    hook = module.register_forward_pre_hook(lambda m, a: stored.append(a[0].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        hook.remove()
    (x,) = stored
    return x.double()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_input_square_sums_count_position_0_by_default(family):
    """Like the reference Wanda (WrappedGPT.add_batch sums x^2 over every token), unless
    first_token=False."""
    model = TINY[family]()
    ids = torch.randint(3, 64, (5, 10), generator=torch.Generator().manual_seed(1))  # no padding
    name, module = next(iter(components.linear_layers(model, 1).items()))
    x = _captured_inputs(model, module, ids)
    every = input_square_sums(model, ids, None, {name: module}, batch_sequences=2)[name]
    later = input_square_sums(model, ids, None, {name: module}, batch_sequences=2, first_token=False)[name]
    torch.testing.assert_close(every, x.pow(2).sum((0, 1)))
    torch.testing.assert_close(later, x[:, 1:].pow(2).sum((0, 1)))
    assert not torch.allclose(every, later)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_block_mask_follows_the_reference_recipe(family):
    """score = abs(W) * sqrt(sum of x^2 over every token), and in every output row the
    floor(s * in) lowest scores removed (stable sort), as prune_wanda does."""
    model = TINY[family]().double()
    ids = torch.randint(3, 64, (6, 12), generator=torch.Generator().manual_seed(2))  # no padding
    sparsity = 0.6
    masks = wanda_block_masks(model, ids, None, {0: sparsity})
    for name, module in components.linear_layers(model, 0).items():
        x = _captured_inputs(model, module, ids)
        w = components.weight(module).detach()
        score = w.abs() * torch.sqrt(x.pow(2).sum((0, 1)))[None, :]
        removed = torch.sort(score, dim=-1, stable=True)[1][:, : int(w.shape[1] * sparsity)]
        expected = torch.zeros_like(w, dtype=torch.bool).scatter_(1, removed, True)
        assert torch.equal(masks[f"0.{name}"], expected), name


def test_later_blocks_are_scored_on_inputs_from_the_pruned_blocks():
    model = TINY["gpt2"]().double()
    ids = _ids()
    sequential = wanda_block_masks(model, ids, 2, {0: 0.7, 1: 0.7})
    alone = wanda_block_masks(model, ids, 2, {1: 0.7})
    assert any(not torch.equal(sequential[n], alone[n]) for n in alone)


def test_masked_zeroes_and_restores_and_refuses_unknown_layers():
    model = TINY["llama"]()
    ids = _ids()
    masks = wanda_block_masks(model, ids, 2, {1: 0.5})
    w = components.weight(components.linear_layers(model, 1)["mlp.up_proj"])
    original = w.detach().clone()
    with masked(model, masks):
        assert torch.all(w[masks["1.mlp.up_proj"]] == 0)
    assert torch.equal(w, original)
    with (
        pytest.raises(components.ComponentError, match="does not have"),
        masked(model, {"9.mlp.up_proj": masks["1.mlp.up_proj"]}),
    ):
        pass


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_head_masks_touch_only_that_heads_weights(family):
    model = TINY[family]()
    ids = _ids()
    modules = components.linear_layers(model, 1)
    sums = input_square_sums(model, ids, 2, {f"1.{n}": m for n, m in modules.items()})
    masks = wanda_head_masks(model, sums, 1, 2, 0.5)
    lay = components.layout(model)
    allowed = {}
    for name, module, rows, cols in head_weight_slices(model, 1, 2):
        region = allowed.setdefault(name, torch.zeros_like(components.weight(module), dtype=torch.bool))
        region[rows, cols] = True
    for name, mask in masks.items():
        assert not (mask & ~allowed[name]).any()
        assert mask.sum() == allowed[name].sum() // 2
    o_name = "1.attn.c_proj" if family == "gpt2" else "1.self_attn.o_proj"
    assert masks[o_name][:, 2 * lay.head_dim : 3 * lay.head_dim].sum() == lay.d_model * lay.head_dim // 2
    # pruning a head at a ratio near 1 approaches ablating it
    with torch.no_grad():
        dense = model(input_ids=ids).logits
        with masked(model, wanda_head_masks(model, sums, 1, 2, 0.0)):
            assert torch.equal(model(input_ids=ids).logits, dense)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_statistics_of_early_blocks_stop_the_forward_pass_there(family):
    model = TINY[family]()
    ids = _ids()
    layers = {f"1.{n}": m for n, m in components.linear_layers(model, 1).items()}
    assert components.last_block_holding(model, layers.values()) == 1
    assert components.last_block_holding(model, [components.unembedding(model)]) is None
    later_calls = []
    handle = components.block(model, 2).register_forward_hook(lambda *a: later_calls.append(1))
    try:
        early = input_square_sums(model, ids, 2, layers, batch_sequences=3)
    finally:
        handle.remove()
    assert later_calls == []  # block 2 never ran
    full = {}
    with linear_inputs(model, layers, lambda n, x: full.setdefault(n, []).append(x)), torch.no_grad():
        model(input_ids=ids, attention_mask=(ids != 2).long())
    mask = token_mask(ids, 2, first_token=True)
    for name, xs in full.items():
        torch.testing.assert_close(early[name], xs[0][mask].double().pow(2).sum(0))
