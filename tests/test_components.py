"""Component addressing and hooks on both families: heads, linear layers, residual stream."""

import pytest
import torch

from cgclib import components, hooks
from cgclib.components import ComponentError

from .tiny_models import TINY

FAMILIES = list(TINY)


def _ids(vocab=64, batch=2, seq=10):
    return torch.randint(3, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fam", FAMILIES)
def test_layout_and_linear_layers(fam):
    model = TINY[fam]()
    lay = components.layout(model)
    assert (lay.family, lay.n_layers, lay.n_heads, lay.head_dim, lay.d_model) == (fam, 3, 4, 8, 32)
    linears = components.linear_layers(model, 1)
    assert len(linears) == (4 if fam == "gpt2" else 7)
    for module in linears.values():
        w = components.weight(module)
        assert w.ndim == 2
    assert components.in_features(components.attention_output(model, 0)) == 32
    assert len(components.all_linear_layers(model)) == 3 * len(linears)
    hidden = 64 if fam == "gpt2" else 48
    assert components.in_features(components.mlp_output(model, 2)) == hidden
    assert [components.weight(m).shape[0] for m in components.mlp_inputs(model, 2)] == [hidden] * (
        1 if fam == "gpt2" else 2
    )


@pytest.mark.parametrize("fam", FAMILIES)
def test_weight_view_is_out_by_in_and_writes_through(fam):
    model = TINY[fam]()
    module = components.linear_layers(model, 0)["mlp.c_fc" if fam == "gpt2" else "mlp.up_proj"]
    w = components.weight(module)
    x = torch.randn(5, w.shape[1])
    bias = module.bias if module.bias is not None else 0
    torch.testing.assert_close(module(x), x @ w.T + bias)
    with torch.no_grad():
        w[0, :] = 0
    assert torch.all(module(x)[:, 0] == (bias[0] if module.bias is not None else 0))


@pytest.mark.parametrize("fam", FAMILIES)
def test_missing_components_are_named(fam):
    model = TINY[fam]()
    with pytest.raises(ComponentError, match="layer 3 does not exist: the model has 3 layers"):
        components.block(model, 3)
    with pytest.raises(ComponentError, match="head 4 does not exist"), hooks.ablated_heads(model, [(0, 4)]):
        pass
    with pytest.raises(ComponentError, match="layer -1"), hooks.head_outputs(model, lambda l, z: None, layers=[-1]):
        pass


def test_unsupported_architecture_is_named():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ComponentError, match="unsupported architecture 'bert'"):
        components.layout(model)


@pytest.mark.parametrize("fam", FAMILIES)
def test_head_outputs_have_head_shape(fam):
    model = TINY[fam]()
    seen = {}
    with torch.no_grad(), hooks.head_outputs(model, lambda l, z: seen.__setitem__(l, z.shape)):
        model(input_ids=_ids())
    assert seen == {l: torch.Size([2, 10, 4, 8]) for l in range(3)}
    # hooks are gone afterwards
    assert not components.attention_output(model, 0)._forward_pre_hooks


@pytest.mark.parametrize("fam", FAMILIES)
def test_ablating_a_head_equals_removing_its_output_projection_slice(fam):
    model = TINY[fam]()
    ids = _ids()
    with torch.no_grad(), hooks.ablated_heads(model, [(1, 2)]):
        ablated = model(input_ids=ids).logits
    out_proj = components.attention_output(model, 1)
    w = components.weight(out_proj)
    with torch.no_grad():
        saved = w[:, 16:24].clone()
        w[:, 16:24] = 0
        removed = model(input_ids=ids).logits
        w[:, 16:24] = saved
        dense = model(input_ids=ids).logits
    torch.testing.assert_close(ablated, removed)
    assert not torch.allclose(ablated, dense)


@pytest.mark.parametrize("fam", FAMILIES)
def test_residual_stream_chains_blocks(fam):
    model = TINY[fam]()
    stream = {}
    with torch.no_grad(), hooks.residual_stream(model, lambda l, where, h: stream.__setitem__((l, where), h.clone())):
        model(input_ids=_ids())
    for l in range(2):
        torch.testing.assert_close(stream[(l, "out")], stream[(l + 1, "in")])


@pytest.mark.parametrize("fam", FAMILIES)
def test_replacing_a_block_output(fam):
    model = TINY[fam]()
    ids = _ids()
    with torch.no_grad():
        dense = model(input_ids=ids).logits
        with hooks.replace_block_output(model, 2, lambda x, y: x):  # skip the last block
            skipped = model(input_ids=ids).logits
        with hooks.replace_block_output(model, 2, lambda x, y: y):  # identity replacement
            same = model(input_ids=ids).logits
    torch.testing.assert_close(same, dense)
    assert not torch.allclose(skipped, dense)


@pytest.mark.parametrize("fam", FAMILIES)
def test_hooks_are_removed_after_an_error(fam):
    model = TINY[fam]()
    with (
        pytest.raises(RuntimeError, match="boom"),
        hooks.linear_inputs(model, components.linear_layers(model, 0), lambda n, x: None),
    ):
        raise RuntimeError("boom")
    for module in components.linear_layers(model, 0).values():
        assert not module._forward_pre_hooks
