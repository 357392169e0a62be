"""Per-head importance signals, streamed, against straightforward computations on stored
activations and against finite differences."""

import pytest
import torch

from cgclib import components
from cgclib.hooks import head_outputs, linear_inputs, scaled_heads
from cgclib.importance import SIGNALS, head_importance
from cgclib.tokens import token_mask

from .tiny_models import TINY


def _ids(n=10, seq=12, seed=0):
    ids = torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:3, -4:] = 2  # some padding
    return ids


def _mean_loss(model, ids, pad=2):
    """Next-token cross-entropy over the used positions, in float64 throughout."""
    mask = token_mask(ids, pad)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != pad).long()).logits.double()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return float((nll * mask[:, 1:]).sum() / mask[:, 1:].sum())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_signals_match_stored_activation_computations(family):
    model = TINY[family]().double()
    ids = _ids()
    table = head_importance(model, ids, pad_token_id=2, batch_sequences=4)
    lay = components.layout(model)
    assert list(table.columns) == list(SIGNALS) and len(table) == lay.n_components

    stored, qkv_in = {}, {}
    q_module = components.linear_layers(model, 1)["attn.c_attn" if family == "gpt2" else "self_attn.q_proj"]
    with (
        torch.no_grad(),
        head_outputs(model, lambda l, z: stored.__setitem__(l, z[token_mask(ids, 2)])),
        linear_inputs(model, {"q": q_module}, lambda n, x: qkv_in.__setitem__(n, x[token_mask(ids, 2)])),
    ):
        model(input_ids=ids, attention_mask=(ids != 2).long())
    layer, head, d = 1, 2, lay.head_dim
    z = stored[layer]  # (tokens, heads, d)
    x = z.reshape(len(z), -1)  # W_O inputs
    w = components.weight(components.attention_output(model, layer)).detach()
    scores = w.abs() * x.norm(dim=0)  # Wanda: |W_ij| ||X_j||
    expected_wanda = scores[:, head * d : (head + 1) * d].mean(0).sum()
    assert table.loc[(layer, head), "wanda"] == pytest.approx(float(expected_wanda), rel=1e-9)
    expected_norm = z[:, head].norm(dim=1).pow(2).mean().sqrt()
    assert table.loc[(layer, head), "activation_norm"] == pytest.approx(float(expected_norm), rel=1e-9)
    expected_magnitude = w[:, head * d : (head + 1) * d].norm()
    assert table.loc[(layer, head), "magnitude"] == pytest.approx(float(expected_magnitude), rel=1e-9)
    # q, k and v rows of the head, with the normalised block input as X
    if family == "gpt2":
        w_qkv = components.weight(q_module).detach()
        rows = [k * lay.d_model + head * d + i for k in range(3) for i in range(d)]
        qkv = w_qkv[rows]
    else:
        attn = components.block(model, layer).self_attn
        qkv = torch.cat(
            [components.weight(m).detach()[head * d : (head + 1) * d] for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
        )
    expected_qkv = (qkv.abs() * qkv_in["q"].norm(dim=0)).mean(0).sum()
    assert table.loc[(layer, head), "wanda_qkv"] == pytest.approx(float(expected_qkv), rel=1e-9)
    assert (table.to_numpy() > 0).all()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_taylor_is_the_derivative_of_the_loss_in_the_head_gate(family):
    model = TINY[family]().double()
    ids = _ids()
    table = head_importance(model, ids, pad_token_id=2, batch_sequences=20)
    step = 1e-3
    for layer, head in [(0, 1), (2, 3)]:
        with scaled_heads(model, {(layer, head): 1 + step}):
            up = _mean_loss(model, ids)
        with scaled_heads(model, {(layer, head): 1 - step}):
            down = _mean_loss(model, ids)
        assert abs(up - down) > 1e-9  # the head matters, so the check is not 0 == 0
        # the model's own loss is taken in float32, hence the tolerance
        assert table.loc[(layer, head), "taylor"] == pytest.approx(abs(up - down) / (2 * step), rel=1e-3)
