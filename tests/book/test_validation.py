"""Fail fast: each chapter's parameters are checked before any computation, by `cgc run` and
by the notebook's own first cell, and every problem is named."""

from __future__ import annotations

import math

import pytest

from cgclib.book.chapters import list_chapters
from cgclib.book.validation import ParameterError, check_parameters, model_blocks

from ..conftest import ROOT

CHAPTERS = list_chapters(ROOT)


def _defaults(chapter: str) -> dict:
    return {n: p.default for n, p in CHAPTERS[chapter].parameters().items()}


def _problems(chapter: str, **changes) -> str:
    with pytest.raises(ParameterError) as caught:
        check_parameters(chapter, {**_defaults(chapter), **changes}, ROOT)
    return str(caught.value)


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_every_chapter_accepts_its_defaults(chapter):
    check_parameters(chapter, _defaults(chapter), ROOT)


@pytest.mark.parametrize(
    "chapter, changes, message",
    [
        ("absorption", {"target_sparsity": math.nan}, "target_sparsity must be finite, got nan"),
        ("absorption", {"magnitudes": [1e-3, math.inf]}, "magnitudes must be a list of finite numbers"),
        ("absorption", {"target_sparsity": 1.0, "sparsity_grid": [0.6, 1.0]}, "target_sparsity must be in [0, 1)"),
        ("absorption", {"target_sparsity": 0.75}, "target_sparsity 0.75 must be among the sparsity_grid"),
        ("absorption", {"dtype": "bfloat16"}, "perturbations below 0.01 drown in rounding"),
        ("absorption", {"n_shuffles": 0}, "n_shuffles must be at least 1"),
        ("density", {"measure_sequences": 16}, "measure_sequences must exceed 16"),
        ("density", {"seq_len": 1}, "seq_len must be at least 2"),
        ("density", {"sae_lr": -1e-3}, "sae_lr must be positive"),
        ("orthogonality", {"sparsities": [0.5, 0.7], "null_sparsities": [0.7]}, "needs at least 3 distinct"),
        ("orthogonality", {"component_ratios": [0.0, 0.5, 0.9]}, "component_ratios needs at least 3 distinct"),
        ("orthogonality", {"null_sparsities": [0.65]}, "null_sparsities [0.65] must be among the sparsities"),
        ("orthogonality", {"ablation": "resample"}, "ablation must be one of mean, zero"),
        ("phase_transitions", {"rank_shares": [0.2, 0.4, 0.6]}, "rank_shares needs at least"),
        ("phase_transitions", {"grid_sizes": [512, 16, 8, 4, 2]}, "levels per group, from 2 to 256"),
        ("structure", {"bits": [4, 16]}, "bit widths from 2 to 8"),
        ("structure", {"seed": -1}, "seed must be non-negative"),
        ("structure", {"replicates": [0, 1]}, "training seeds other than 0"),
        ("testbed", {"model": "gpt2-medium"}, "studies the test beds themselves"),
        ("family", {"families": ["gpt2", "mamba"]}, "families must be some of"),
        ("structure", {"model": "testbed-gpt2-seed9"}, "is not trained yet"),
        ("structure", {"model": "./models/absent"}, "is not a folder with a model"),
        ("structure", {"model": "not a valid/name!"}, "nor a valid Hugging Face model name"),
        ("structure", {"text": "./corpus/absent.txt"}, "text: './corpus/absent.txt' looks like a local path"),
        ("structure", {"device": "tpu"}, "unknown device"),
        ("structure", {"dtype": "float8"}, "unknown dtype"),
        ("structure", {"n_probes": 1.5}, "n_probes must be an integer"),
        ("structure", {"deep_models": ["testbed-gpt2-deep", 3]}, "deep_models must be a list of str"),
    ],
)
def test_bad_values_are_named(chapter, changes, message):
    assert message in _problems(chapter, **changes)


def test_every_problem_is_named_at_once():
    text = _problems("absorption", n_probes=0, target_sparsity=math.nan, model="./absent")
    assert "n_probes must be at least 1" in text and "target_sparsity must be finite" in text
    assert "'./absent' is not a folder" in text


def test_absorption_refuses_a_model_too_shallow_for_its_depth_trend(tmp_path):
    from transformers import AutoModelForCausalLM

    from cgclib.standins import config, train_tokenizer, write_text

    text = write_text(tmp_path / "text.txt", n_paragraphs=200)
    tokenizer = train_tokenizer(text, vocab_size=300)
    folder = tmp_path / "shallow"
    AutoModelForCausalLM.from_config(config("gpt2", len(tokenizer), n_layers=4)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert model_blocks(str(folder)) == 4
    message = _problems("absorption", model=str(folder), second_model="", text=str(text))
    assert "has 4 blocks" in message and "needs at least 4 of them (5 blocks)" in message


def test_a_missing_value_is_named():
    values = _defaults("structure")
    del values["seed"]
    with pytest.raises(ParameterError, match="no value for seed"):
        check_parameters("structure", values, ROOT)


def test_the_notebook_checks_its_parameters_under_plain_papermill(tmp_path):
    """A reader who runs papermill directly gets the same refusal, from the first cell after
    the parameters, before any model is loaded."""
    import jupytext
    import papermill

    chapter = CHAPTERS["structure"]
    source = tmp_path / "structure.ipynb"
    jupytext.write(jupytext.read(chapter.path), source)
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        papermill.execute_notebook(
            str(source),
            str(tmp_path / "out.ipynb"),
            parameters={"n_probes": 0, "heldout_sequences": -1},
            cwd=str(chapter.path.parent),
            progress_bar=False,
        )
    assert caught.value.ename == "ParameterError"
    assert "n_probes must be at least 1" in caught.value.evalue
    assert "heldout_sequences must be at least 1" in caught.value.evalue
