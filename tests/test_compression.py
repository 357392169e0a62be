"""Compression operators on whole models: restored weights, the sequential calibration
(checked against the Wanda masks of `pruning`), structured removal, levels and curves."""

import math

import numpy as np
import pytest
import torch

from cgclib import components, compression, phase
from cgclib.evaluation import EvaluationData
from cgclib.pruning import wanda_block_masks

from .tiny_models import TINY


def _ids(n=8, seq=12, seed=0):
    ids = torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:2, -3:] = 2  # padding, which no statistic may count
    return ids


def _weights(model):
    return {n: components.weight(m).detach().clone() for n, m in components.all_linear_layers(model).items()}


LEVELS = {"magnitude": 0.5, "wanda": 0.5, "sparsegpt": 0.5, "wanda_2:4": 0.5, "sparsegpt_2:4": 0.5}
LEVELS |= {"structured": 0.5, "rtn": 3, "gptq": 3, "svd": 0.5, "asvd": 0.5}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("name", sorted(compression.OPERATORS))
def test_every_operator_changes_every_block_and_restores_the_weights(family, name):
    model = TINY[family]()
    before = _weights(model)
    with compression.compressed(model, name, compression.Setting(LEVELS[name], group_size=8), _ids(), 2):
        inside = _weights(model)
        for layer in range(3):
            assert any(not torch.equal(inside[n], before[n]) for n in before if n.startswith(f"{layer}."))
    after = _weights(model)
    assert all(torch.equal(after[n], before[n]) for n in before)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_wanda_operator_equals_the_sequential_wanda_masks(family):
    """Blocks compressed in order, each on the outputs of the already pruned ones: the same
    masks as `pruning.wanda_block_masks`, built by recording and replaying block inputs."""
    model = TINY[family]().double()
    ids = _ids()
    masks = wanda_block_masks(model, ids, 2, {layer: 0.6 for layer in range(3)})
    with compression.compressed(model, "wanda", compression.Setting(0.6), ids, 2):
        for name, module in components.all_linear_layers(model).items():
            w = components.weight(module)
            assert torch.equal(w == 0, masks[name])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_structured_pruning_removes_whole_heads_and_channels(family):
    model = TINY[family]()
    lay = components.layout(model)
    with compression.compressed(model, "structured", compression.Setting(0.5), _ids(), 2):
        for layer in range(lay.n_layers):
            o = components.weight(components.attention_output(model, layer)).view(-1, lay.n_heads, lay.head_dim)
            removed = (o == 0).all(-1).all(0)
            assert int(removed.sum()) == 2
            down = components.weight(components.mlp_output(model, layer))
            silent = (down == 0).all(0)
            assert int(silent.sum()) == round(0.5 * down.shape[1])
            for module in components.mlp_inputs(model, layer):
                assert (components.weight(module)[silent] == 0).all()
            for head in torch.nonzero(removed).flatten().tolist():
                for module, rows in components.head_qkv_rows(model, layer, head):
                    assert (components.weight(module)[rows] == 0).all()


def test_levels_are_checked_and_quantization_maps_to_a_ratio():
    assert compression.operator("gptq").ratio(8) == 0.5 and compression.operator("rtn").ratio(2) == 0.875
    assert compression.operator("svd").ratio(0.3) == 0.3
    assert compression.grid_levels(math.log2(3)) == 3 and compression.grid_levels(8) == 256
    model = TINY["llama"]()
    for name, level in (
        ("rtn", 9),
        ("gptq", 2.5),
        ("rtn", 0),
        ("wanda", 1.0),
        ("wanda_2:4", 0.6),
        ("structured", -0.1),
    ):
        with pytest.raises(ValueError), compression.compressed(model, name, compression.Setting(level), _ids(), 2):
            pass
    with pytest.raises(KeyError, match="known"):
        compression.operator("obs")
    with pytest.raises(ValueError, match="calibration"), compression.compressed(model, "gptq", compression.Setting(4)):
        pass


def test_curves_start_dense_and_evaluate_every_level():
    model = TINY["gpt2"]()
    data = EvaluationData(torch.randint(3, 64, (4, 12), generator=torch.Generator().manual_seed(1)))
    table = compression.curves(model, data, _ids(), 2, {"magnitude": [0.5, 0.9], "rtn": [4, 1]}, group_size=8)
    assert table["operator"].tolist() == ["magnitude"] * 3 + ["rtn"] * 3
    assert table["ratio"].tolist() == [0.0, 0.5, 0.9, 0.0, 0.75, 0.9375]
    assert table["level"].tolist()[3] == 16
    dense = table.loc[0, "language"]
    assert (table.loc[table.ratio == 0, "language"] == dense).all()
    assert (table.loc[table.ratio > 0, "language"] != dense).all()  # a random model may even improve


def test_critical_ratio_matches_the_detector_and_widens_with_the_level():
    ratios = np.round(np.arange(0.0, 0.91, 0.05), 3)
    curve = np.exp(phase.kinked(ratios, 0.6, 12.0) + 0.01 * np.random.default_rng(0).standard_normal(len(ratios)))
    fit = phase.fit_phase_transition(ratios, curve)
    found = compression.critical_ratio(ratios, curve)
    assert fit.outcome == found.outcome == "transition"
    assert (found.s0, found.interval) == (fit.s0, fit.interval)
    wider = compression.critical_ratio(ratios, curve, level=0.975)
    assert wider.interval[0] <= found.interval[0] and wider.interval[1] >= found.interval[1]


def test_a_flat_curve_is_censored_beyond_the_grid_and_differences_follow():
    ratios = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9]
    flat = compression.critical_ratio(ratios, [10.0, 10.1, 10.0, 10.2, 10.3, 10.1])
    assert flat == compression.CriticalRatio("flat", 0.9, (0.9, 1.0))
    located = compression.CriticalRatio("transition", 0.5, (0.45, 0.6))
    value, interval = compression.difference(flat, located)
    assert value == pytest.approx(0.4) and interval == pytest.approx((0.3, 0.55))
    assert compression.difference(compression.CriticalRatio("smooth", None, None), located) == (None, None)
    with pytest.raises(ValueError, match="dense model"):
        compression.critical_ratio([0.1, 0.2], [1.0, 2.0])


def test_structured_pruning_under_grouped_query_attention_keeps_shared_key_value_rows():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    with compression.compressed(model, "structured", compression.Setting(0.5), _ids(), 2):
        for layer in range(2):
            attention = components.block(model, layer).self_attn
            q = components.weight(attention.q_proj).view(4, 8, 32)
            assert int((q == 0).all(-1).all(-1).sum()) == 2  # two of four query heads
            for shared in (attention.k_proj, attention.v_proj):
                assert not (components.weight(shared) == 0).all(-1).any()  # shared rows stay
