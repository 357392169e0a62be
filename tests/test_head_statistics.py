"""Head-output moments against a direct computation, and the dimensionality measures."""

import math

import pytest
import torch

from cgclib import components
from cgclib.head_statistics import HeadMoments, head_output_moments
from cgclib.hooks import ablated_heads, head_outputs
from cgclib.tokens import token_mask

from .tiny_models import TINY


def _ids(vocab: int, pad: int) -> torch.Tensor:
    ids = torch.randint(3, vocab, (5, 12), generator=torch.Generator().manual_seed(0))
    ids[1, 8:] = pad  # a padded tail, left out
    ids[3, 5:] = pad
    return ids


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_moments_match_a_direct_computation(family):
    model = TINY[family]()
    ids, pad = _ids(64, 2), 2
    outputs = [components.attention_output(model, l) for l in range(3)]  # c_proj of GPT-2, o_proj of Llama
    seen: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda _, a, l=l: seen.__setitem__(l, a[0])) for l, m in enumerate(outputs)]
    with torch.no_grad():
        model(input_ids=ids, attention_mask=(ids != pad).long())
    for h in handles:
        h.remove()
    mask = token_mask(ids, pad)

    m = head_output_moments(model, ids, pad, batch_sequences=2)
    assert m.n == int(mask.sum())
    assert m.mean.shape == (3, 4, 8) and m.cov.shape == (3, 4, 8, 8) and m.mean.dtype == torch.float64
    for layer in range(3):
        z = seen[layer][mask].double().view(-1, 4, 8)
        for head in range(4):
            torch.testing.assert_close(m.mean[layer, head], z[:, head].mean(0))
            torch.testing.assert_close(m.cov[layer, head], torch.cov(z[:, head].T, correction=0))
    assert set(m.means()) == {(l, h) for l in range(3) for h in range(4)}
    pr, er = m.participation_ratio(), m.effective_rank()
    assert list(pr.index.names) == ["layer", "head"] and len(pr) == 12
    assert pr.name == "participation_ratio" and er.name == "effective_rank"
    assert ((pr >= 1 - 1e-9) & (pr <= 8 + 1e-9)).all() and ((er >= 1 - 1e-9) & (er <= 8 + 1e-9)).all()


def _single_head(cov: torch.Tensor) -> HeadMoments:
    d = len(cov)
    return HeadMoments(100, torch.zeros(1, 1, d, dtype=torch.float64), cov.double()[None, None])


def test_participation_ratio_and_effective_rank_of_known_spectra():
    d = 8
    isotropic = _single_head(3.0 * torch.eye(d))
    assert isotropic.participation_ratio().iloc[0] == pytest.approx(d)
    assert isotropic.effective_rank().iloc[0] == pytest.approx(d)
    v = torch.randn(d, generator=torch.Generator().manual_seed(1)).double()
    rank_one = _single_head(torch.outer(v, v))
    assert rank_one.participation_ratio().iloc[0] == pytest.approx(1.0)
    assert rank_one.effective_rank().iloc[0] == pytest.approx(1.0, abs=1e-6)
    two = _single_head(torch.diag(torch.tensor([1.0, 1.0] + [0.0] * (d - 2))))
    assert two.participation_ratio().iloc[0] == pytest.approx(2.0)
    assert two.effective_rank().iloc[0] == pytest.approx(2.0)
    uneven = _single_head(torch.diag(torch.tensor([3.0, 1.0] + [0.0] * (d - 2))))
    assert uneven.participation_ratio().iloc[0] == pytest.approx(16 / 10)
    assert uneven.effective_rank().iloc[0] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert math.isnan(_single_head(torch.zeros(d, d)).participation_ratio().iloc[0])


def test_too_few_tokens_are_refused():
    model = TINY["gpt2"]()
    with pytest.raises(ValueError, match="at least 2"):
        head_output_moments(model, torch.tensor([[5, 6]]), pad_token_id=None)


def test_mean_ablation_feeds_the_mean_to_the_output_projection():
    model = TINY["llama"]()
    ids, pad = _ids(64, 2), 2
    means = head_output_moments(model, ids, pad).means()
    seen: dict[int, torch.Tensor] = {}

    def run():
        with head_outputs(model, lambda layer, z: seen.__setitem__(layer, z.clone()), layers=[1]):
            model(input_ids=ids, attention_mask=(ids != pad).long())
        return seen[1]

    with torch.no_grad():
        dense = run()
        with ablated_heads(model, [(1, 2)], means):  # registered first, so head_outputs sees its result
            ablated = run()
    torch.testing.assert_close(ablated[:, :, 2], means[(1, 2)].float().expand(5, 12, 8))
    torch.testing.assert_close(ablated[:, :, [0, 1, 3]], dense[:, :, [0, 1, 3]])
