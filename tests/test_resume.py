"""Replaying a recorded block input: the same results as full forward passes, and misuse
(another number of passes, other shapes) refused."""

import pytest
import torch

from cgclib import components
from cgclib.evaluation import EvaluationData, evaluate
from cgclib.hooks import ablated_heads
from cgclib.resume import ReplayError, recorded_inputs, resumed_at

from .tiny_models import TINY


def _data(n=10, seq=12, seed=0):
    ids = torch.randint(3, 64, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:3, -4:] = 2
    return EvaluationData(ids, attention_mask=(ids != 2).long())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("layer", [0, 2])
def test_resumed_evaluation_equals_the_full_one(family, layer):
    model, data = TINY[family](), _data()
    dense, recorded = recorded_inputs(model, layer, lambda: evaluate(model, data, batch_size=4))
    assert len(recorded.inputs) == 3  # 10 rows in batches of 4
    assert dense.perplexity == evaluate(model, data, batch_size=4).perplexity
    with ablated_heads(model, [(layer, 1)]):
        full = evaluate(model, data, batch_size=4)
        with resumed_at(model, recorded):
            resumed = evaluate(model, data, batch_size=4)
    assert resumed.perplexity == pytest.approx(full.perplexity, rel=1e-12)
    assert resumed.perplexity != pytest.approx(dense.perplexity, rel=1e-6)  # the ablation did something


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_blocks_are_restored_even_after_an_error(family):
    model, data = TINY[family](), _data()
    before = list(components.blocks(model))
    _, recorded = recorded_inputs(model, 2, lambda: evaluate(model, data, batch_size=4))
    with pytest.raises(ReplayError, match="only 3 were recorded"), resumed_at(model, recorded):
        evaluate(model, data, batch_size=4)
        evaluate(model, data, batch_size=4)
    assert list(components.blocks(model)) == before
    with pytest.raises(ReplayError, match="shape"), resumed_at(model, recorded):
        evaluate(model, _data(seq=9), batch_size=4)
    with (
        pytest.raises(ReplayError, match="1 forward passes inside resumed_at, 3 recorded"),
        resumed_at(model, recorded),
    ):
        evaluate(model, _data(n=3), batch_size=4)  # one pass, shaped like the first recorded one
    assert list(components.blocks(model)) == before
