"""Evaluation against models whose answers we know: an oracle and a uniform guesser."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cgclib.evaluation import (
    EvaluationData,
    build_probe_set,
    evaluate,
    evaluate_probes,
    length_batches,
    perplexity,
    perplexity_change,
)
from cgclib.suite import CapabilitySuite


class Oracle(torch.nn.Module):
    """Predicts every next token of its input perfectly, except in the batch rows listed
    in `wrong`."""

    def __init__(self, vocab, wrong=()):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.wrong = vocab, set(wrong)

    def forward(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        nxt = torch.roll(input_ids, -1, dims=1)
        logits.scatter_(2, nxt[..., None], 20.0)
        for row in self.wrong:
            if row < b:
                logits[row] = torch.roll(logits[row], 1, dims=-1)
        return SimpleNamespace(logits=logits)


class Uniform(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


@pytest.fixture(scope="module")
def suite():
    return CapabilitySuite(0)


def test_oracle_is_always_right_and_a_wrong_answer_counts(suite):
    tok = suite.tokenizer()
    probes = build_probe_set(tok, "addition", suite.probes("addition", 10))
    assert evaluate_probes(Oracle(len(tok)), probes).accuracy == 1.0
    assert evaluate_probes(Oracle(len(tok)), probes, batch_size=3).accuracy == 1.0
    result = evaluate_probes(Oracle(len(tok), wrong=[3]), probes, batch_size=16)
    assert result.correct.tolist() == [i != 3 for i in range(10)]
    assert result.answer_tokens.tolist() == [4] * 10  # three digits and <eos>


def test_answer_mask_covers_exactly_the_answer(suite):
    tok = suite.tokenizer()
    examples = suite.probes("dyck", 20)
    probes = build_probe_set(tok, "dyck", examples)
    for i, ex in enumerate(examples):
        answer_ids = probes.input_ids[i][probes.answer_mask[i]].tolist()
        assert answer_ids == tok.convert_tokens_to_ids(list(ex.answer))


def test_uniform_guesser_has_perplexity_equal_to_vocabulary(suite):
    tok = suite.tokenizer()
    windows, score, _ = suite.language_eval(7, seed=0)
    result = perplexity(Uniform(len(tok)), windows, score, batch_size=3)
    assert math.isclose(result.perplexity, len(tok), rel_tol=1e-6)
    assert result.n_tokens == int(score.sum())
    assert perplexity(Uniform(len(tok)), windows).n_tokens == windows.numel() - len(windows)
    # with an attention mask and no score, padding is not scored
    attention = (windows != tok.pad_token_id).long()
    padded = perplexity(Uniform(len(tok)), windows, attention_mask=attention)
    assert padded.n_tokens == int(attention.sum()) - len(windows) < windows.numel() - len(windows)


def test_oracle_scores_only_the_marked_tokens(suite):
    tok = suite.tokenizer()
    windows, score, floor = suite.language_eval(5, seed=0)
    result = perplexity(Oracle(len(tok)), windows, score)
    assert result.perplexity < 1.01 < floor
    assert result.window_tokens.tolist() == score.sum(dim=1).tolist()
    with pytest.raises(ValueError, match="score mask shape"):
        perplexity(Oracle(len(tok)), windows, score[:, :-1])


def test_profile_has_every_capability(suite):
    tok = suite.tokenizer()
    data = EvaluationData.for_testbed(suite, tok, n_probes=16, n_paragraphs=4)
    profile = evaluate(Oracle(len(tok)), data)
    assert set(profile.accuracy()) == set(suite.tasks)
    assert all(v == 1.0 for v in profile.accuracy().values())
    assert profile.perplexity < 1.01
    assert list(profile.table().columns) == ["accuracy", "answer logprob", "task perplexity", "n"]
    assert profile.mixture is None and math.isnan(profile.mixture_perplexity)


def test_unknown_tokens_in_a_probe_are_refused(suite):
    tok = suite.tokenizer()
    from cgclib.suite import Example

    bad = Example("copy", "copy:", ("zebra", "="), ("zebra", "<eos>"), "zebra")
    with pytest.raises(ValueError, match="unknown to the tokenizer"):
        build_probe_set(tok, "copy", [bad])


def _profile(window_nll, correct, answer_nll=None):
    from cgclib.evaluation import PerplexityResult, ProbeResult, Profile

    window_nll = np.asarray(window_nll, dtype=float)
    tokens = np.full(len(window_nll), 10)
    correct = np.asarray(correct, dtype=bool)
    answer_nll = np.ones(len(correct)) if answer_nll is None else np.asarray(answer_nll, dtype=float)
    probe = ProbeResult("copy", correct, answer_nll, np.full(len(correct), 2))
    return Profile(
        PerplexityResult(float(np.exp(window_nll.sum() / tokens.sum())), window_nll, tokens), {"copy": probe}
    )


def test_perplexity_change_and_accuracy_gap_are_paired_comparisons():
    from cgclib.evaluation import accuracy_gap, perplexity_change

    base = _profile([20.0, 22.0, 18.0, 21.0], [1, 1, 0, 1])
    worse = _profile([21.0, 23.0, 19.0, 22.0], [1, 0, 0, 0])
    change, (lo, hi) = perplexity_change(worse, base, n_resamples=500)
    assert change == pytest.approx(np.exp(4 / 40) - 1)
    assert lo == pytest.approx(change) and hi == pytest.approx(change)  # the same shift in every window
    gap, (lo, hi) = accuracy_gap([worse, worse], [base, base], n_resamples=500)
    assert gap == pytest.approx(-0.5)
    assert lo <= gap <= hi <= 0
    with pytest.raises(ValueError, match="same windows"):
        perplexity_change(_profile([1.0, 2.0], [1]), base)


def test_subset_keeps_the_first_examples():
    suite = CapabilitySuite(0)
    data = EvaluationData.for_testbed(suite, suite.tokenizer(), 12, 6, seed=0)
    small = data.subset(5, 3)
    assert small.windows.shape[0] == 3 and torch.equal(small.windows, data.windows[:3])
    for task, probes in small.probes.items():
        assert len(probes) == 5 and probes.examples == data.probes[task].examples[:5]


@pytest.mark.parametrize("max_rows, max_tokens", [(256, 2**15), (5, 2**15), (256, 40)])
def test_length_batches_cover_every_row_once_within_the_limits(max_rows, max_tokens):
    lengths = torch.tensor([3, 17, 5, 5, 40, 12, 3, 9, 17, 1, 26, 5] * 3)
    used = (torch.arange(40)[None, :] < lengths[:, None]).long()
    batches = length_batches(used, max_rows, max_tokens)
    rows = torch.cat([r for r, _ in batches])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for r, width in batches:
        assert width == int(lengths[r].max())  # cut to the longest row, which fits whole
        assert len(r) <= max_rows and (len(r) == 1 or len(r) * width <= max_tokens)
    padded = sum(len(r) * w for r, w in batches)
    assert padded < used.numel()


def test_length_batches_of_equal_rows_are_the_fewest_full_batches():
    batches = length_batches(torch.ones(10, 64), max_rows=4)
    assert sorted(len(r) for r, _ in batches) == [2, 4, 4] and {w for _, w in batches} == {64}
    with pytest.raises(ValueError, match="max_rows"):
        length_batches(torch.ones(2, 3), max_rows=0)


def test_trimmed_batches_give_the_same_results_as_one_row_at_a_time(suite):
    from tests.tiny_models import tiny_gpt2

    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok)).double()
    data = EvaluationData.for_testbed(suite, tok, n_probes=12, n_paragraphs=12)
    data.windows, data.score, data.attention_mask = (t[:, :32] for t in (data.windows, data.score, data.attention_mask))
    batched, single = evaluate(model, data), evaluate(model, data, batch_size=1)  # logits are compared in float32
    np.testing.assert_allclose(batched.language.window_nll, single.language.window_nll, rtol=1e-6)
    with torch.no_grad():  # the untrimmed computation: every row padded to the full width
        logits = model(input_ids=data.windows, attention_mask=data.attention_mask).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), data.windows[:, 1:], reduction="none")
    np.testing.assert_allclose(batched.language.window_nll, (nll * data.score[:, 1:]).sum(1).double(), rtol=1e-6)
    for task in data.probes:
        np.testing.assert_allclose(
            batched.capabilities[task].answer_nll, single.capabilities[task].answer_nll, rtol=1e-6
        )
        assert (batched.capabilities[task].correct == single.capabilities[task].correct).all()


def test_language_and_probes_sharing_passes_score_as_each_part_alone(suite):
    from tests.tiny_models import tiny_gpt2

    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok)).double()
    data = EvaluationData.for_testbed(suite, tok, n_probes=12, n_paragraphs=12)
    data.windows, data.score, data.attention_mask = (t[:, :6] for t in (data.windows, data.score, data.attention_mask))
    assert all(p.input_ids.shape[1] > 6 for p in data.probes.values())  # language rows padded to the probes' width
    together = evaluate(model, data, batch_size=16)
    alone = perplexity(model, data.windows, data.score, batch_size=5, attention_mask=data.attention_mask)
    np.testing.assert_allclose(together.language.window_nll, alone.window_nll, rtol=1e-6)
    assert np.array_equal(together.language.window_tokens, alone.window_tokens)
    for task, probes in data.probes.items():
        part = evaluate_probes(model, probes, batch_size=5)
        mine = together.capabilities[task]
        np.testing.assert_allclose(mine.answer_nll, part.answer_nll, rtol=1e-6)
        assert np.array_equal(mine.correct, part.correct) and np.array_equal(mine.answer_tokens, part.answer_tokens)
    wrong = evaluate(Oracle(len(tok)), EvaluationData(data.windows[:3], probes={"copy": data.probes["copy"]}))
    assert wrong.perplexity < 1.01 and wrong.capabilities["copy"].accuracy == 1.0  # no attention mask given
    with pytest.raises(ValueError, match="score mask shape"):
        evaluate(model, EvaluationData(data.windows, data.score[:, :-1], probes=data.probes))


def test_mean_accuracy_weighs_capabilities_equally_and_subsets_recompute_perplexity():
    from cgclib.evaluation import PerplexityResult, ProbeResult, Profile

    language = PerplexityResult.of_windows(np.array([2.0, 6.0]), np.array([2, 2]))
    many = ProbeResult("a", np.ones(30, dtype=bool), np.zeros(30), np.ones(30))
    few = ProbeResult("b", np.zeros(2, dtype=bool), np.zeros(2), np.ones(2))
    assert Profile(language, {"a": many, "b": few}).mean_accuracy() == 0.5
    assert math.isnan(Profile(language, {}).mean_accuracy())
    assert language.subset(np.array([1])).perplexity == pytest.approx(math.exp(3.0))
    assert language.subset(np.array([True, True])).perplexity == pytest.approx(language.perplexity)


def test_logprob_gap_is_zero_for_identical_profiles_and_signed_by_the_answer_nll():
    from cgclib.evaluation import accuracy_gap

    base = _profile([20.0], [1, 1, 0, 1], answer_nll=[0.2, 0.4, 3.0, 0.6])
    worse = _profile([20.0], [1, 1, 0, 1], answer_nll=[1.2, 0.4, 5.0, 0.6])
    assert base.graded() == {"copy": pytest.approx(-(0.1 + 0.2 + 1.5 + 0.3) / 4)}
    assert base.mean_graded() == pytest.approx(base.graded()["copy"])
    assert accuracy_gap([base], [base], n_resamples=300, metric="logprob") == (0.0, (0.0, 0.0))
    gap, (lo, hi) = accuracy_gap([worse, worse], [base, base], n_resamples=300, metric="logprob")
    assert gap == pytest.approx(-(0.5 + 1.0) / 4)  # nats per answer token, two answer tokens per probe
    assert lo <= gap <= hi <= 0
    assert accuracy_gap([worse], [base], n_resamples=300) == (0.0, (0.0, 0.0))  # exact match cannot see it
    with pytest.raises(ValueError, match="metric"):
        accuracy_gap([worse], [base], metric="nll")


def test_answer_logprob_is_the_mean_log_softmax_of_the_answer_tokens(suite):
    from tests.tiny_models import tiny_gpt2

    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok)).double()
    probes = build_probe_set(tok, "sorting", suite.probes("sorting", 6))
    result = evaluate_probes(model, probes, batch_size=4)
    i = 2
    n = int(probes.attention_mask[i].sum())
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=probes.input_ids[i : i + 1, :n]).logits[0], dim=-1)
    answer = probes.answer_mask[i, :n].nonzero().flatten()
    direct = logprobs[answer - 1, probes.input_ids[i, answer]].mean().item()
    assert result.answer_logprob[i] == pytest.approx(direct, rel=1e-6)
    assert result.mean_logprob == pytest.approx(result.answer_logprob.mean())


def _mixture_data(suite, tok, n_mixture=6):
    data = EvaluationData.for_testbed(suite, tok, n_probes=8, n_paragraphs=8, n_mixture=n_mixture, mixture_seq_len=32)
    data.windows, data.score, data.attention_mask = (t[:, :32] for t in (data.windows, data.score, data.attention_mask))
    return data


def test_mixture_rows_score_in_evaluate_as_on_their_own(suite):
    from tests.tiny_models import tiny_gpt2

    tok = suite.tokenizer()
    model = tiny_gpt2(vocab=len(tok)).double()
    data = _mixture_data(suite, tok)
    assert data.mixture_windows.shape == (6, 32)
    assert torch.equal(data.mixture_attention, (data.mixture_windows != tok.pad_token_id).long())
    profile = evaluate(model, data, batch_size=16)
    alone = perplexity(model, data.mixture_windows, data.mixture_score, attention_mask=data.mixture_attention)
    np.testing.assert_allclose(profile.mixture.window_nll, alone.window_nll, rtol=1e-6)
    assert np.array_equal(profile.mixture.window_tokens, data.mixture_score.sum(1).numpy())
    assert profile.mixture_perplexity == pytest.approx(alone.perplexity, rel=1e-6)
    without = evaluate(model, EvaluationData(data.windows, data.score, data.attention_mask, data.probes))
    np.testing.assert_allclose(profile.language.window_nll, without.language.window_nll, rtol=1e-6)
    for task, result in without.capabilities.items():
        np.testing.assert_allclose(profile.capabilities[task].answer_nll, result.answer_nll, rtol=1e-6)
    change, (lo, hi) = perplexity_change(profile, profile, n_resamples=100, part="mixture")
    assert change == lo == hi == 0.0
    with pytest.raises(ValueError, match="mixture rows"):
        perplexity_change(profile, without, part="mixture")


def test_mixture_rows_enter_the_digest_and_the_subset(suite):
    tok = suite.tokenizer()
    data = _mixture_data(suite, tok)
    plain = EvaluationData(data.windows, data.score, data.attention_mask, data.probes)
    assert data.digest() != plain.digest()
    assert data.subset(3, 2).mixture_windows is None  # sweeps leave the costly mixture rows out
    small = data.subset(3, 2, n_mixture=2)
    assert torch.equal(small.mixture_windows, data.mixture_windows[:2])
    assert torch.equal(small.mixture_score, data.mixture_score[:2])
    assert torch.equal(small.mixture_attention, data.mixture_attention[:2])
    assert plain.subset(3, 2).mixture_windows is None
    with pytest.raises(ValueError, match="mixture_score"):
        evaluate(Uniform(len(tok)), EvaluationData(data.windows, mixture_windows=data.mixture_windows))


def test_evaluation_batches_keep_their_logits_within_the_memory_budget(monkeypatch):
    """The batch is sized from the vocabulary: tokens x vocabulary x LOGIT_BYTES stays within
    CGC_EVAL_MEMORY_GB, and the scores do not depend on the batching."""
    from cgclib import evaluation
    from tests.tiny_models import tiny_gpt2

    model = tiny_gpt2(vocab=1000)
    ids = torch.randint(0, 1000, (12, 32), generator=torch.Generator().manual_seed(0))
    scored = torch.ones_like(ids, dtype=torch.bool)
    widths = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    monkeypatch.setenv(evaluation.EVAL_MEMORY_ENV, "0.0005")  # 536,870 bytes: 44 tokens of 1000 entries
    small = evaluation.score_rows(model, ids, scored)
    budget_tokens = evaluation.eval_memory_bytes() // (1000 * evaluation.LOGIT_BYTES)
    assert budget_tokens == 44 and max(widths) <= budget_tokens and len(widths) == 12
    widths.clear()
    monkeypatch.delenv(evaluation.EVAL_MEMORY_ENV)
    large = evaluation.score_rows(model, ids, scored)
    handle.remove()
    assert len(widths) == 1  # the default budget takes every row at once
    np.testing.assert_allclose(small.nll, large.nll, rtol=1e-5)


@pytest.mark.parametrize("raw", ["lots", "0", "-2", "nan", "inf"])
def test_a_bad_memory_budget_is_named(monkeypatch, raw):
    from cgclib import evaluation

    monkeypatch.setenv(evaluation.EVAL_MEMORY_ENV, raw)
    with pytest.raises(ValueError, match="CGC_EVAL_MEMORY_GB must be a"):
        evaluation.eval_memory_bytes()


def test_the_batch_cap_follows_the_vocabulary():
    from cgclib.evaluation import MAX_BATCH_TOKENS, max_batch_tokens

    assert max_batch_tokens(389) == MAX_BATCH_TOKENS  # a test bed: the cap binds
    assert max_batch_tokens(50_257, 4 * 2**30) == 7_121  # GPT-2's vocabulary in 4 GiB
    assert max_batch_tokens(None) == MAX_BATCH_TOKENS
