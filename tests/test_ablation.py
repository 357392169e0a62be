"""Head ablation effects, on a tiny model whose heads we can reason about."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib.ablation import capability_drops, head_ablation_effects
from cgclib.evaluation import EvaluationData
from cgclib.head_statistics import head_output_moments
from cgclib.suite import CapabilitySuite

from .tiny_models import tiny_gpt2


def test_one_row_per_head_and_drops_relative_to_dense():
    suite = CapabilitySuite(0)
    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok))
    data = EvaluationData.for_testbed(suite, tok, n_probes=8, n_paragraphs=6)
    effects, dense = head_ablation_effects(model, data, progress=False)
    assert len(effects) == 3 * 4
    assert list(effects.index.names) == ["layer", "head"]
    drops = capability_drops(effects)
    assert set(drops.columns) == set(suite.tasks)
    # an untrained model gets nothing right, so no ablation can cost accuracy
    assert np.allclose(drops.to_numpy(), 0.0)
    np.testing.assert_allclose(effects["delta_log_ppl"], np.log(effects["perplexity"]) - math.log(dense.perplexity))


def test_ablation_changes_perplexity_only_through_the_ablated_head():
    suite = CapabilitySuite(0)
    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok))
    with torch.no_grad():  # silence head 1 of layer 0 by zeroing its value weights
        model.transformer.h[0].attn.c_attn.weight[:, 2 * 32 + 8 : 2 * 32 + 16] = 0
        model.transformer.h[0].attn.c_attn.bias[2 * 32 + 8 : 2 * 32 + 16] = 0
    data = EvaluationData.for_testbed(suite, tok, n_probes=4, n_paragraphs=6)
    effects, _ = head_ablation_effects(model, data, progress=False)
    assert abs(effects.loc[(0, 1), "delta_log_ppl"]) < 1e-6
    assert (effects["delta_log_ppl"].drop((0, 1)).abs() > 1e-6).all()


def test_effects_are_cached_by_weights_and_data(tmp_path, monkeypatch):
    suite = CapabilitySuite(0)
    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok))
    data = EvaluationData.for_testbed(suite, tok, n_probes=4, n_paragraphs=6)
    effects, dense = head_ablation_effects(model, data, progress=False, cache=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_ablation(*args, **kwargs):
        raise AssertionError("ablated again although the effects were cached")

    monkeypatch.setattr("cgclib.ablation._ablate_each_head", no_ablation)
    again, dense_again = head_ablation_effects(model, data, progress=False, cache=tmp_path)
    pd.testing.assert_frame_equal(again, effects)
    assert dense_again.perplexity == dense.perplexity
    with pytest.raises(AssertionError, match="ablated again"):  # other data: computed, not read
        head_ablation_effects(
            model, EvaluationData.for_testbed(suite, tok, n_probes=4, n_paragraphs=5), progress=False, cache=tmp_path
        )
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.bias[0] += 1.0
    with pytest.raises(AssertionError, match="ablated again"):  # other weights: computed, not read
        head_ablation_effects(model, data, progress=False, cache=tmp_path)


def test_mean_ablation_with_zero_means_is_zero_ablation(tmp_path):
    suite = CapabilitySuite(0)
    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok))
    data = EvaluationData.for_testbed(suite, tok, n_probes=4, n_paragraphs=6)
    zeros = {(l, h): torch.zeros(8) for l in range(3) for h in range(4)}
    zero, _ = head_ablation_effects(model, data, progress=False, cache=tmp_path)
    mean, _ = head_ablation_effects(model, data, progress=False, cache=tmp_path, means=zeros)
    assert len(list(tmp_path.glob("*.json"))) == 2  # cached apart: the key names the kind and the means
    pd.testing.assert_frame_equal(mean, zero)
    shifted = {**zeros, (0, 0): torch.full((8,), 0.5)}
    head_ablation_effects(model, data, progress=False, cache=tmp_path, means=shifted)
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_mean_ablation_of_a_constant_head_changes_nothing(tmp_path):
    """Head 1 of layer 0 with zero value weights outputs its value bias at every position
    (attention weights sum to 1): that constant is its mean, so mean ablation is a no-op."""
    suite = CapabilitySuite(0)
    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok))
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight[:, 2 * 32 + 8 : 2 * 32 + 16] = 0
    data = EvaluationData.for_testbed(suite, tok, n_probes=4, n_paragraphs=6)
    calibration = next(suite.training_batches(1, 8, 32))[0]
    means = head_output_moments(model, calibration, tok.pad_token_id).means()
    torch.testing.assert_close(
        means[(0, 1)], model.transformer.h[0].attn.c_attn.bias[2 * 32 + 8 : 2 * 32 + 16].double()
    )
    effects, _ = head_ablation_effects(model, data, progress=False, cache=tmp_path, means=means)
    assert abs(effects.loc[(0, 1), "delta_log_ppl"]) < 1e-6
    assert (effects["delta_log_ppl"].drop((0, 1)).abs() > 1e-6).all()


def test_mean_ablation_needs_every_mean(tmp_path):
    suite = CapabilitySuite(0)
    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok))
    data = EvaluationData.for_testbed(suite, tok, n_probes=4, n_paragraphs=6)
    means = {(l, h): torch.zeros(8) for l in range(3) for h in range(4) if (l, h) != (2, 3)}
    with pytest.raises(KeyError, match=r"no mean for head\(s\) \[\(2, 3\)\]"):
        head_ablation_effects(model, data, progress=False, cache=tmp_path, means=means)


def test_heads_ablated_in_one_pass_equal_heads_ablated_one_at_a_time(tmp_path, monkeypatch):
    """Several heads per forward pass, each in its own copy of the batch (3 at a time for
    blocks of 4, which covers a partial group), give every head the effects of its own
    full forward passes (checked on the first and the last block)."""
    from cgclib import ablation
    from cgclib.evaluation import evaluate
    from cgclib.hooks import ablated_heads
    from cgclib.subjects import load_subject

    subject = load_subject("testbed-gpt2", "cpu", n_probes=8, n_paragraphs=4, seed=1)
    model, data = subject.model, subject.data
    assert ablation.variants_per_pass(model, data, 99) > 1  # by default a pass holds many
    means = head_output_moments(model, subject.calibration(8, 64), subject.tokenizer.pad_token_id).means()
    monkeypatch.setattr(ablation, "variants_per_pass", lambda *args: 3)
    effects, dense = head_ablation_effects(model, data, progress=False, cache=tmp_path, means=means)
    reference = evaluate(model, data)
    assert dense.perplexity == pytest.approx(reference.perplexity, rel=1e-6)
    layers = effects.index.get_level_values("layer")
    for layer, head in effects.index[(layers == layers.min()) | (layers == layers.max())]:
        with ablated_heads(model, [(layer, head)], means):
            alone = evaluate(model, data)
        row = effects.loc[(layer, head)]
        assert row["perplexity"] == pytest.approx(alone.perplexity, rel=1e-5)
        for task, accuracy in alone.accuracy().items():
            assert row[f"drop_{task}"] == pytest.approx(reference.accuracy()[task] - accuracy, abs=1e-12)
        for task, logprob in alone.graded().items():
            assert row[f"graded_drop_{task}"] == pytest.approx(reference.graded()[task] - logprob, abs=1e-5)
    assert (effects.filter(like="drop_").abs().to_numpy() > 0).any()  # ablations that cost something
