"""Text from anywhere: local files, folders and saved datasets, split into disjoint
calibration and evaluation text, windows that never overlap, and clear errors."""

from __future__ import annotations

import time

import pytest
import torch

from cgclib import corpus
from cgclib.corpus import CorpusUnavailableError, load_corpus, windows


def _lines(n: int, tag: str = "line") -> str:
    return "\n".join(f"{tag} {i} says something about the number {i}." for i in range(n)) + "\n"


def test_a_local_file_is_cut_in_two_at_a_line_break(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(_lines(400))
    text = load_corpus(str(path))
    assert text.calibration + text.evaluation == path.read_text()
    assert text.evaluation.startswith("\n") and text.calibration.endswith(".")
    share = len(text.evaluation) / len(path.read_text())
    assert abs(share - corpus.EVALUATION_SHARE) < 0.01
    assert not set(text.calibration.split("\n")) & set(text.evaluation.strip().split("\n"))


def test_a_folder_of_text_files_is_read_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text(_lines(50, "second"))
    (tmp_path / "a.txt").write_text(_lines(150, "first"))
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01")
    text = load_corpus(str(tmp_path))
    assert text.calibration.startswith("first 0") and "second 49" in text.evaluation


def test_a_saved_dataset_gives_its_train_and_test_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        train=Dataset.from_dict({"text": ["train one", "train two"], "label": [0, 1]}),
        test=Dataset.from_dict({"text": ["test one"], "label": [1]}),
    )
    splits.save_to_disk(str(tmp_path / "saved"))
    text = load_corpus(str(tmp_path / "saved"))
    assert text.calibration == "train one\n\ntrain two" and text.evaluation == "test one"


def test_a_saved_dataset_without_a_test_split_is_refused(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(train=Dataset.from_dict({"text": ["a"]})).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(CorpusUnavailableError, match="needs a `train` split and a `test` or `validation`"):
        load_corpus(str(tmp_path / "saved"))


@pytest.mark.parametrize("spec", ["./missing.txt", "/nowhere/at/all", "notes.txt"])
def test_a_missing_local_text_is_named(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusUnavailableError, match="looks like a local path, but nothing exists there"):
        load_corpus(spec)


def test_an_empty_folder_and_an_empty_file_are_refused(tmp_path):
    with pytest.raises(CorpusUnavailableError, match="holds no text files"):
        load_corpus(str(tmp_path))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusUnavailableError, match="is empty"):
        load_corpus(str(tmp_path / "empty.txt"))


def test_a_hub_dataset_offline_fails_at_once_with_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(CorpusUnavailableError, match="pass a local text file or folder"):
        load_corpus("Salesforce/wikitext:not-a-config-anyone-has")
    assert time.perf_counter() - started < 20


def test_fit_and_held_out_windows_never_share_a_token():
    ids = torch.arange(10_000)
    for seed_fit, seed_held in ((0, 0), (0, 1), (5, 3)):
        fit = windows(ids, 30, 64, seed_fit, "fit")
        held = windows(ids, 30, 64, seed_held, "held_out")
        assert not set(fit.flatten().tolist()) & set(held.flatten().tolist())
    every = windows(ids, 156, 64, 0)
    assert torch.equal(every.flatten(), ids[: 156 * 64])  # the windows tile the text in order


def test_too_short_a_text_says_how_many_windows_it_has():
    with pytest.raises(ValueError, match="1000 tokens: 7 held_out windows of 64 tokens, fewer than the 8 requested"):
        windows(torch.arange(1000), 8, 64, 0, "held_out")


def test_a_subject_on_local_text_calibrates_and_evaluates_on_disjoint_text(standins):
    from cgclib.subjects import load_subject

    subject = load_subject(str(standins["gpt2"]), "cpu", n_paragraphs=4, eval_seq_len=64, text=str(standins["text"]))
    assert subject.slug == "gpt2" and subject.suite is None
    evaluation = {tuple(w) for w in subject.data.windows.tolist()}
    fit = subject.calibration(8, 64, seed=0)
    held = subject.calibration(8, 64, seed=0, held_out=True)
    assert not evaluation & {tuple(w) for w in fit.tolist()}
    assert not {tuple(w) for w in fit.tolist()} & {tuple(w) for w in held.tolist()}
    assert torch.equal(subject.calibration(8, 64, seed=0), fit)  # the same seed, the same windows
