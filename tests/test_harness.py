"""Capabilities through lm-evaluation-harness: the suite's probes exported as lm-eval tasks
score a test bed exactly as cgclib does; a local multiple-choice task (the form of the
papers' zero-shot tasks) is scored offline as its definition says; the hub's tasks offline
fail at once with the reason."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import yaml

from cgclib.harness import (
    ZERO_SHOT,
    ZERO_SHOT_TASKS,
    HarnessError,
    evaluate_tasks,
    expand_tasks,
    export_probe_tasks,
    task_probes,
)


def test_lm_eval_and_cgclib_score_a_testbed_the_same(tmp_path):
    from cgclib.evaluation import evaluate_probes
    from cgclib.subjects import load_subject

    subject = load_subject("testbed-gpt2", "cpu", n_probes=20, n_paragraphs=2, seed=3)
    names = export_probe_tasks(subject.suite, subject.tokenizer.bos_token, tmp_path, 20, seed=3)
    scored = evaluate_tasks(subject.model, subject.tokenizer, names, include_path=tmp_path, batch_size=32)
    accuracies = []
    for task, probes in subject.data.probes.items():
        ours = evaluate_probes(subject.model, probes)
        theirs = scored[f"cgc_{task}"]
        assert theirs["acc"] == pytest.approx(ours.accuracy, abs=1e-12), task
        assert theirs["perplexity"] == pytest.approx(np.exp(ours.answer_nll.mean()), rel=1e-4), task
        accuracies.append(ours.accuracy)
    assert min(accuracies) < 1.0  # some probes fail: the agreement covers wrong answers too


def _multiple_choice_task(folder, docs):
    data = folder / "mini.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    spec = {
        "task": "mini_mc",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / "mini_mc.yaml").write_text(yaml.safe_dump(spec))


CHOICES = ["the red one", "a small dog", "every tree"]


def test_a_local_multiple_choice_task_is_scored_offline_as_defined(tmp_path, standins):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(standins["gpt2"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(standins["gpt2"])
    docs = [
        {"question": f"the {w} cat sees which bird", "choices": CHOICES, "label": i % 3}
        for i, w in enumerate(["old", "red", "small", "gentle", "bright", "young"])
    ]
    _multiple_choice_task(tmp_path, docs)
    scored = evaluate_tasks(model, tokenizer, ["mini_mc"], include_path=tmp_path, batch_size=4)["mini_mc"]

    def loglikelihood(context: str, continuation: str) -> float:
        context_ids = tokenizer(context)["input_ids"]
        ids = tokenizer(context + continuation)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
        return float(sum(logp[t - 1, ids[t]] for t in range(len(context_ids), len(ids))))

    right = []
    for d in docs:
        scores = [loglikelihood(f"Question: {d['question']}\nAnswer:", " " + c) for c in d["choices"]]
        right.append(int(np.argmax(scores) == d["label"]))
    assert scored["acc"] == pytest.approx(np.mean(right))

    # the same task as cgclib probes: the same answer, document by document
    from cgclib.evaluation import EvaluationData, evaluate, evaluate_probes

    probes = task_probes(model, tokenizer, ["mini_mc"], include_path=tmp_path)["mini_mc"]
    assert len(probes) == len(docs) and len(probes.input_ids) == 3 * len(docs)
    ours = evaluate_probes(model, probes)
    assert ours.correct.astype(int).tolist() == right
    gold_nll = [-loglikelihood(f"Question: {d['question']}\nAnswer:", " " + d["choices"][d["label"]]) for d in docs]
    np.testing.assert_allclose(ours.answer_nll, gold_nll, rtol=1e-4)
    # inside a whole evaluation, next to language rows, and on a subset of the probes
    language = torch.tensor([tokenizer("the red cat sees a small dog every day")["input_ids"]])
    data = EvaluationData(language, probes={"mini_mc": probes})
    assert evaluate(model, data).capabilities["mini_mc"].correct.astype(int).tolist() == right
    assert evaluate(model, data.subset(4, 1)).capabilities["mini_mc"].correct.astype(int).tolist() == right[:4]
    assert len(probes.gold.input_ids) == len(docs)


def test_exported_probes_through_task_probes_score_as_the_suite(tmp_path):
    from cgclib.evaluation import evaluate_probes
    from cgclib.subjects import load_subject

    subject = load_subject("testbed-gpt2", "cpu", n_probes=20, n_paragraphs=2, seed=3)
    names = export_probe_tasks(subject.suite, subject.tokenizer.bos_token, tmp_path, 20, seed=3)
    probes = task_probes(subject.model, subject.tokenizer, names, include_path=tmp_path)
    for task, suite_probes in subject.data.probes.items():
        ours = evaluate_probes(subject.model, suite_probes)
        theirs = evaluate_probes(subject.model, probes[f"cgc_{task}"])
        assert theirs.correct.tolist() == ours.correct.tolist(), task
        np.testing.assert_allclose(theirs.answer_nll, ours.answer_nll, rtol=1e-5)
    # in context: two solved training examples before each probe lengthen every prompt
    shots = task_probes(subject.model, subject.tokenizer, names[:1], include_path=tmp_path, num_fewshot=2)
    zero = probes[names[0]]
    assert (shots[names[0]].attention_mask.sum(1) > zero.attention_mask.sum(1)).all()


def test_zero_shot_expands_to_the_papers_tasks():
    assert expand_tasks([ZERO_SHOT, "boolq", "mini"]) == [*ZERO_SHOT_TASKS, "mini"]


def test_the_papers_tasks_offline_fail_at_once_with_the_reason(monkeypatch, standins):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(standins["gpt2"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(standins["gpt2"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HarnessError, match="boolq"):
        evaluate_tasks(model, tokenizer, ["boolq"])
    with pytest.raises(HarnessError, match="tasks \\[\\]"):
        task_probes(model, tokenizer, ["boolq"])
    assert time.perf_counter() - started < 60
    papers = {"boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"}
    assert set(ZERO_SHOT_TASKS) == papers


def test_an_unknown_task_is_named():
    from tests.tiny_models import tiny_gpt2

    with pytest.raises(HarnessError, match="knows no task no_such_task"):
        evaluate_tasks(tiny_gpt2(), None, ["no_such_task"])
