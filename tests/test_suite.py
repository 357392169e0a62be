"""The capability suite: determinism, correct answers, disjoint splits, the tokenizer and
the background language's probability bookkeeping."""

import hashlib
from collections import Counter
from itertools import permutations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgclib.grammar import Grammar
from cgclib.suite import BRACKETS, EOS, IGNORE_INDEX, SEP, CapabilitySuite, Example, FactRecallTask


@pytest.fixture(scope="module")
def suite():
    return CapabilitySuite(seed=0)


def test_same_seed_gives_byte_identical_corpora():
    a = CapabilitySuite(seed=3).corpus_text(400, seed=7)
    b = CapabilitySuite(seed=3).corpus_text(400, seed=7)
    assert a.encode() == b.encode()
    assert CapabilitySuite(seed=3).corpus_text(400, seed=8) != a
    assert CapabilitySuite(seed=4).knowledge.facts != CapabilitySuite(seed=3).knowledge.facts


def test_at_least_six_named_capabilities(suite):
    assert len(suite.tasks) >= 6
    markers = [t.marker for t in suite.tasks.values()]
    assert len(set(markers)) == len(markers)


def _answer_is_right(suite, ex):
    has_sep = ex.task != "kv_recall"
    body = list(ex.prompt[:-1] if has_sep else ex.prompt)
    answer = list(ex.answer[:-1] if has_sep else ex.answer)
    assert (ex.prompt[-1] == SEP) == has_sep and (ex.answer[-1] == EOS) == has_sep
    if ex.task == "copy":
        return answer == body
    if ex.task == "reversal":
        return answer == body[::-1]
    if ex.task == "sorting":
        return answer == sorted(body) and len(set(body)) == len(body)
    if ex.task == "kv_recall":
        pairs = dict(zip(body[0:-2:2], body[1:-2:2], strict=False))
        return body[-2] == ";" and answer == [pairs[body[-1]]]
    if ex.task == "addition":
        n = body.index("+")
        a, b = int("".join(body[:n][::-1])), int("".join(body[n + 1 :][::-1]))
        return int("".join(answer[::-1])) == a + b and len(answer) == n + 1
    if ex.task == "dyck":
        closers = dict(BRACKETS)
        stack = []
        for tok in body:
            if tok in closers:
                stack.append(closers[tok])
            else:
                assert stack.pop() == tok
        return answer == stack[::-1] and len(answer) >= 1
    if ex.task == "fact_recall":
        return answer == [suite.knowledge.facts[(body[0], body[1])]]
    raise AssertionError(f"no check for task {ex.task}")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_every_answer_is_right(suite, seed):
    rng = np.random.default_rng(seed)
    for task in suite.tasks.values():
        for split in ("train", "eval"):
            ex = task.generate(rng, split)
            assert _answer_is_right(suite, ex), ex.text
            assert task.split_of(ex) == split


def _context(tokens) -> str:
    """What a held-out key-value probe must never share with training: marker and pairs."""
    return " ".join(tokens[: list(tokens).index(";")])


def test_training_never_sees_a_held_out_example(suite):
    rng = np.random.default_rng([0, 0, 0])
    seen = {name: set() for name in suite.tasks}
    for _ in range(20_000):
        seg = suite.segment(rng)
        if seg.tokens[0].endswith(":"):
            task = next(t for t in suite.tasks.values() if t.marker == seg.tokens[0])
            seen[task.name].add(_context(seg.tokens) if task.name == "kv_recall" else " ".join(seg.tokens))
    for name in suite.tasks:
        probes = suite.probes(name, 300)
        held_out = {_context(ex.tokens) if name == "kv_recall" else ex.text for ex in probes}
        assert held_out and not (held_out & seen[name]), name
        assert len(seen[name]) > 1000 or name == "fact_recall"


def test_key_value_segments_answer_every_query(suite):
    task = suite.tasks["kv_recall"]
    rng = np.random.default_rng(5)
    for _ in range(200):
        seg = task.training_segment(rng)
        tokens = seg.tokens
        first = tokens.index(";")
        pairs = dict(zip(tokens[1:first:2], tokens[2:first:2], strict=False))
        queries = tokens[first:-1]
        assert len(queries) % 3 == 0 and len(queries) // 3 == len(pairs)
        for i in range(0, len(queries), 3):
            assert queries[i] == ";" and pairs[queries[i + 1]] == queries[i + 2]
        assert tokens[-1] == EOS
        # a loss on every value and on <eos>, nowhere else
        assert [t for t, l in zip(tokens, seg.loss, strict=True) if l] == queries[2::3] + [EOS]


def test_fact_questions_on_held_out_entities_are_never_trained(suite):
    task: FactRecallTask = suite.tasks["fact_recall"]
    train_entities = {ex.prompt[0] for ex in task.all_examples("train")}
    eval_entities = {ex.prompt[0] for ex in task.all_examples("eval")}
    assert train_entities and eval_entities and not (train_entities & eval_entities)
    assert train_entities | eval_entities == set(suite.knowledge.entities)


def test_fact_statements_state_the_probed_facts(suite):
    task: FactRecallTask = suite.tasks["fact_recall"]
    for split in ("train", "eval"):
        statements, questions = task.statement_examples(split), task.all_examples(split)
        assert [(x.marker, *x.prompt, *x.answer) for x in statements] == [
            (q.prompt[0], q.prompt[1], q.answer[0]) for q in questions
        ]
        for x in statements:
            assert suite.knowledge.facts[(x.marker, x.prompt[0])] == x.answer[0]


def test_probes_are_distinct_and_reproducible(suite):
    for name in suite.tasks:
        probes = suite.probes(name, 200)
        assert len({p.text for p in probes}) == len(probes)
        assert [p.text for p in probes] == [p.text for p in CapabilitySuite(0).probes(name, 200)]


def test_tokenizer_covers_the_suite_and_round_trips(suite, tmp_path):
    tok = suite.tokenizer()
    vocab = suite.vocabulary
    assert len(vocab) == len(set(vocab)) == len(tok)
    text = suite.corpus_text(300, seed=1)
    ids = tok(text.replace("\n", " "))["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.convert_tokens_to_ids(vocab) == list(range(len(vocab)))
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("copy: a b = a b <eos>")["input_ids"] == tok("copy: a b = a b <eos>")["input_ids"]


def test_training_batches_take_loss_only_on_answers_and_language(suite):
    tok = suite.tokenizer()
    inputs, labels = next(suite.training_batches(seed=0, batch_size=8, seq_len=64))
    assert inputs.shape == labels.shape == (8, 64)
    assert (inputs[:, 0] == tok.bos_token_id).all()
    assert ((labels == IGNORE_INDEX) | (labels == inputs)).all()
    # a task's marker and prompt carry no loss; its answer does
    marker = tok.convert_tokens_to_ids("copy:")
    sep = tok.convert_tokens_to_ids(SEP)
    assert (labels[inputs == marker] == IGNORE_INDEX).all()
    assert (labels[inputs == sep] == IGNORE_INDEX).all()
    assert (labels[inputs == tok.pad_token_id] == IGNORE_INDEX).all()


def test_paragraph_probabilities_match_their_frequencies():
    """The log-probability carried by each paragraph is the probability of the whole
    generative path; for the most common paragraphs it must match their frequency."""
    grammar = Grammar(knowledge=None)
    rng = np.random.default_rng(0)
    n = 60_000
    counts, logprob = Counter(), {}
    for _ in range(n):
        para = grammar.paragraph(rng)
        key = " ".join(para.tokens)
        counts[key] += 1
        logprob[key] = para.logprob
    for key, count in counts.most_common(5):
        expected = n * np.exp(logprob[key])
        assert abs(count - expected) < 5 * np.sqrt(expected) + 2, (key, count, expected)


def test_language_eval_scores_every_paragraph_token_but_the_first(suite):
    tok = suite.tokenizer()
    windows, score, floor = suite.language_eval(8, seed=0)
    assert (windows[:, 0] == tok.bos_token_id).all()
    lengths = (windows != tok.pad_token_id).sum(dim=1) - 1
    assert score.sum(dim=1).tolist() == (lengths - 1).tolist()
    assert 1.0 < floor < len(suite.vocabulary)


def test_first_token_probabilities_sum_to_one():
    from cgclib.grammar import DETERMINERS
    from cgclib.suite import KnowledgeBase

    grammar = Grammar(KnowledgeBase(0))
    starts = set(DETERMINERS["sg"] + DETERMINERS["pl"]) | set(grammar.knowledge.entities)
    total = sum(np.exp(grammar.first_token_logprob(t)) for t in starts)
    assert abs(total - 1.0) < 1e-9
    with pytest.raises(ValueError, match="no paragraph starts"):
        grammar.first_token_logprob("cat")


def test_fact_paraphrases_state_each_fact_in_three_forms_with_exact_probabilities():
    """Every template appears about equally often, a fact sentence is still scored exactly
    (a one-sentence paragraph stating a given fact has the probability the grammar says),
    and the template words extend the vocabulary without moving any existing token."""
    from cgclib.grammar import FACT_TEMPLATES
    from cgclib.suite import RELATIONS, KnowledgeBase

    knowledge = KnowledgeBase(0)
    plain, paraphrased = Grammar(knowledge), Grammar(knowledge, fact_paraphrases=True)
    assert paraphrased.vocabulary()[: len(plain.vocabulary())] == plain.vocabulary()
    assert set(paraphrased.vocabulary()) - set(plain.vocabulary()) == {"'s", "is", "has"}
    rng = np.random.default_rng(0)
    n, second_tokens, single = 40_000, Counter(), Counter()
    logprob = {}
    for _ in range(n):
        para = paraphrased.paragraph(rng)
        if para.tokens[0] in knowledge.entities:
            second_tokens[para.tokens[1] if para.tokens[1] in ("'s", "has") else "relation"] += 1
            if para.tokens.count(".") == 1:
                key = " ".join(para.tokens)
                single[key] += 1
                logprob[key] = para.logprob
    shares = np.array(list(second_tokens.values())) / sum(second_tokens.values())
    assert len(FACT_TEMPLATES) == len(shares) == 3 and np.allclose(shares, 1 / 3, atol=0.03), second_tokens
    # a one-fact paragraph: P(fact) P(entity) P(relation) P(template) P(no second sentence)
    g, n_facts = Grammar, len(knowledge.entities) * len(RELATIONS)
    p_single = g.P_FACT * (1 - g.P_MORE_SENTENCES)
    assert np.allclose(list(logprob.values()), np.log(p_single / n_facts / 3))
    expected = n * p_single
    assert abs(sum(single.values()) - expected) < 5 * np.sqrt(expected), (sum(single.values()), expected)


def _mixture_segments(suite, row, score):
    """The segments of one mixture row (split after each <eos>), each as (tokens, scored)."""
    vocab = suite.vocabulary
    tokens = [vocab[i] for i in row.tolist()]
    segments, start = [], 1
    for end, token in enumerate(tokens):
        if token == EOS:
            segments.append((tokens[start : end + 1], score[start : end + 1].tolist()))
            start = end + 1
    assert all(t == "<pad>" for t in tokens[start:]) and not score[start:].any()
    return segments


def _key(suite, task, tokens):
    """The held-out key of a task segment under the suite's split version (see each task's
    `sample` and "Held-out splits" in `cgclib.suite`)."""
    return _body_key(suite, task, tokens[1 : tokens.index(";" if task.name == "kv_recall" else SEP)])


def _body_key(suite, task, body):
    """The held-out key of an input (a prompt without marker, separator or query)."""
    canonical = suite.split_version == 2
    if task.name == "addition":
        n = body.index("+")
        a, b = int("".join(body[:n][::-1])), int("".join(body[n + 1 :][::-1]))
        return f"{min(a, b)}+{max(a, b)}" if canonical else f"{a}+{b}"
    if task.name == "sorting" and canonical:
        return " ".join(sorted(body))
    if task.name == "kv_recall" and canonical:
        return " ".join(t for kv in sorted(zip(body[::2], body[1::2], strict=True)) for t in kv)
    return body[0] if task.name == "fact_recall" else " ".join(body)


def test_mixture_eval_holds_only_held_out_examples_and_scores_what_training_does(suite):
    rows, score = suite.mixture_eval(40, seed=0, seq_len=96)
    assert rows.shape == score.shape == (40, 96) and score.dtype == torch.bool
    assert (rows[:, 0] == suite.vocabulary.index("<bos>")).all() and not score[:, 0].any()
    markers = {t.marker: t for t in suite.tasks.values()}
    kinds = Counter()
    for row, mask in zip(rows, score, strict=True):
        for tokens, scored in _mixture_segments(suite, row, mask):
            task = markers.get(tokens[0])
            if task is None:  # a paragraph: every token carries a loss, as in training
                assert all(scored)
                kinds["paragraph"] += 1
                continue
            example = Example(task.name, task.marker, (), (), _key(suite, task, tokens))
            assert task.split_of(example) == "eval", " ".join(tokens)
            if task.name == "kv_recall":  # every queried value and <eos>
                first = tokens.index(";")
                expected = [False] * first + [False, False, True] * ((len(tokens) - 1 - first) // 3) + [True]
            else:  # the answer after "=" and <eos>
                expected = [False] * (tokens.index(SEP) + 1) + [True] * (len(tokens) - tokens.index(SEP) - 1)
            assert scored == expected
            kinds[task.name] += 1
    assert set(kinds) == {"paragraph", *suite.tasks}


def test_mixture_eval_is_deterministic_and_never_calibration_text(suite):
    from cgclib.subjects import CALIBRATION_SEED_OFFSET

    rows, score = suite.mixture_eval(16, seed=0)
    again, again_score = CapabilitySuite(seed=0).mixture_eval(16, seed=0)
    assert torch.equal(rows, again) and torch.equal(score, again_score)
    assert not torch.equal(suite.mixture_eval(16, seed=1)[0], rows)
    training = {tuple(r.tolist()) for r in next(suite.training_batches(0, 64, 128))[0]}
    calibration = {tuple(r.tolist()) for r in next(suite.training_batches(CALIBRATION_SEED_OFFSET, 64, 128))[0]}
    assert not {tuple(r.tolist()) for r in rows} & (training | calibration)


# --- held-out splits without twins (split version 2) and the version-1 leak ------------------

TWINNED = ("addition", "sorting", "kv_recall")


def _input(ex):
    """A probe's input: its prompt without separator (or, for key-value recall, the query)."""
    return list(ex.prompt[:-2] if ex.task == "kv_recall" else ex.prompt[:-1])


def _twins(task_name, body):
    """Every other input of the same problem: the commuted sum, every other order of the
    letters to sort, every other order of the key-value pairs."""
    if task_name == "addition":
        n = body.index("+")
        return [[*body[n + 1 :], "+", *body[:n]]]
    units = [body[i : i + 2] for i in range(0, len(body), 2)] if task_name == "kv_recall" else [[t] for t in body]
    return [[t for unit in order for t in unit] for order in permutations(units) if list(order) != units]


def _problem(task_name, body):
    """What an input and its twins share, independently of how the suite keys examples."""
    if task_name == "addition":
        n = body.index("+")
        return frozenset({"".join(body[:n]), "".join(body[n + 1 :])})
    if task_name == "kv_recall":
        return frozenset(zip(body[::2], body[1::2], strict=True))
    return frozenset(body)


def _twins_in_training(suite, task_name, probes):
    """How many of `probes` have a twin that the split puts in training."""
    task = suite.tasks[task_name]
    leaky = 0
    for ex in probes:
        keys = {_body_key(suite, task, twin) for twin in _twins(task_name, _input(ex))}
        leaky += any(task.split_of(Example(task_name, task.marker, (), (), k)) == "train" for k in keys)
    return leaky


def _training_segments(suite, n_batches=30):
    """The task segments of the first training batches, as lists of tokens."""
    batches = suite.training_batches(seed=0, batch_size=64, seq_len=128)
    for _ in range(n_batches):
        inputs, labels = next(batches)
        for row, mask in zip(inputs, labels != IGNORE_INDEX, strict=True):
            yield from (tokens for tokens, _ in _mixture_segments(suite, row, mask))


def test_split_version_is_validated():
    assert CapabilitySuite(0).split_version == 2
    for bad in (0, 3, "2"):
        with pytest.raises(ValueError, match="split_version must be one of"):
            CapabilitySuite(0, split_version=bad)


def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_split_version_1_is_the_split_the_shipped_test_beds_were_trained_on():
    """Hashes computed with the suite as it was before split versions existed."""
    suite = CapabilitySuite(0, split_version=1, fact_paraphrases=False)
    assert _sha(suite.corpus_text(200, seed=7)) == "819c7e8e82e54ef9"
    expected = {
        "addition": "e630d2846aa502b7",
        "copy": "3eae8a5e02575ce2",
        "dyck": "cf1f35e9cdd3591c",
        "fact_recall": "a7933691090ea69d",
        "kv_recall": "e8577dca7072aea8",
        "reversal": "4eacc89a983a5c35",
        "sorting": "4ef0766e6bd199b0",
    }
    assert {task: _sha("\n".join(p.text for p in suite.probes(task, 50))) for task in suite.tasks} == expected
    rows, score = suite.mixture_eval(8, seed=0)
    mixture = hashlib.sha256(rows.numpy().tobytes() + score.numpy().tobytes()).hexdigest()[:16]
    assert mixture == "2da971d71f6f8de4"


def test_with_split_version_2_no_held_out_probe_has_a_twin_in_training():
    suite = CapabilitySuite(0, split_version=2)
    probes = {name: suite.probes(name, 300) for name in TWINNED}
    for name in TWINNED:
        assert len(probes[name]) == 300 and _twins_in_training(suite, name, probes[name]) == 0, name
    held_out = {name: {_problem(name, _input(ex)) for ex in probes[name]} for name in TWINNED}
    markers = {suite.tasks[name].marker: suite.tasks[name] for name in TWINNED}
    trained = Counter()
    for tokens in _training_segments(suite):
        task = markers.get(tokens[0])
        if task is None:
            continue
        body = tokens[1 : tokens.index(";" if task.name == "kv_recall" else SEP)]
        assert task.split_of(Example(task.name, task.marker, (), (), _key(suite, task, tokens))) == "train"
        assert _problem(task.name, body) not in held_out[task.name], " ".join(tokens)
        trained[task.name] += 1
    assert min(trained.values()) > 1000, trained


def test_split_version_1_trains_on_twins_of_held_out_probes():
    """Why version 2 exists: with version 1, held-out sums are trained in commuted form."""
    suite = CapabilitySuite(0, split_version=1, fact_paraphrases=False)
    probes = {name: suite.probes(name, 300) for name in TWINNED}
    assert all(_twins_in_training(suite, name, probes[name]) > 200 for name in TWINNED)
    held_out = {_problem("addition", _input(ex)) for ex in probes["addition"]}
    marker = suite.tasks["addition"].marker
    trained = {_problem("addition", t[1 : t.index(SEP)]) for t in _training_segments(suite, 10) if t[0] == marker}
    assert held_out & trained
