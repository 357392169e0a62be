"""The text a model that is not a test bed is calibrated and evaluated on.

A chapter's `text` parameter names it: a hub dataset (`name` or `name:config`, by default
WikiText-2 as `Salesforce/wikitext:wikitext-2-raw-v1`), a local text file, a folder of
`.txt` files, or a folder written by `datasets.Dataset.save_to_disk`. A hub dataset or a
saved dataset with splits gives calibration text from its `train` split and evaluation
text from its `test` split (else `validation`). A single text (a file, a folder of files,
a saved dataset without splits) is cut in two at a line boundary: the first
`1 - EVALUATION_SHARE` of its characters calibrate, the rest evaluate.

Windows never overlap: calibration windows are consecutive non-overlapping pieces of the
calibration tokens, and the pieces a fit uses (even positions) are disjoint from those
held out to score it (odd positions), whatever the seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_TEXT = "Salesforce/wikitext:wikitext-2-raw-v1"
EVALUATION_SHARE = 0.25  # of a single local text, the tail kept for evaluation
TEXT_SUFFIXES = (".txt", ".md", ".text")


class CorpusUnavailableError(RuntimeError):
    """The named text cannot be read here: a missing file, or a hub dataset offline."""


@dataclass(frozen=True)
class Corpus:
    """Calibration and evaluation text of one source, already disjoint."""

    source: str
    calibration: str
    evaluation: str


def looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.endswith(TEXT_SUFFIXES) or "\\" in spec


def _split_text(text: str, source: str) -> Corpus:
    """Cut one text in two at the line break nearest `1 - EVALUATION_SHARE` of its length."""
    if not text.strip():
        raise CorpusUnavailableError(f"the text {source} is empty")
    cut = int(len(text) * (1 - EVALUATION_SHARE))
    newline = text.rfind("\n", 0, cut)
    cut = newline if newline > 0 else cut
    return Corpus(source, text[:cut], text[cut:])


def _column_text(dataset, source: str) -> str:
    columns = [c for c, f in dataset.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    column = "text" if "text" in columns else (columns[0] if len(columns) == 1 else None)
    if column is None:
        raise CorpusUnavailableError(f"{source} has no `text` column (string columns: {columns or 'none'})")
    return "\n\n".join(dataset[column])


def _from_splits(splits, source: str) -> Corpus:
    """Calibration from `train`, evaluation from `test` (else `validation`)."""
    evaluation = next((s for s in ("test", "validation") if s in splits), None)
    if "train" not in splits or evaluation is None:
        raise CorpusUnavailableError(
            f"{source} needs a `train` split and a `test` or `validation` split, has {list(splits)}"
        )
    return Corpus(source, _column_text(splits["train"], source), _column_text(splits[evaluation], source))


def _local(path: Path) -> Corpus:
    if path.is_file():
        return _split_text(path.read_text(encoding="utf-8"), str(path))
    if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            return _from_splits(loaded, str(path))
        return _split_text(_column_text(loaded, str(path)), str(path))
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise CorpusUnavailableError(f"the folder {path} holds no text files ({', '.join(TEXT_SUFFIXES)})")
    return _split_text("\n\n".join(p.read_text(encoding="utf-8") for p in files), str(path))


@contextmanager
def offline_unless_reachable() -> Iterator[None]:
    """Where the hub cannot be reached, `datasets` in offline mode for the duration: a cached
    dataset still loads, and a missing one fails at once instead of after a minute of
    retries."""
    import datasets
    from huggingface_hub import constants

    from .models import hub_reachable

    if hub_reachable():
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_corpus(spec: str) -> Corpus:
    """Read the text `spec` names (see the module's docstring)."""
    if not spec:
        raise ValueError("no text named: give a hub dataset, a local text file or a folder")
    path = Path(spec).expanduser()
    if path.exists():
        return _local(path)
    if looks_like_path(spec):
        raise CorpusUnavailableError(f"the text {spec!r} looks like a local path, but nothing exists there")
    name, _, config = spec.partition(":")
    try:
        with offline_unless_reachable():
            from datasets import load_dataset

            splits = load_dataset(name, config or None)
    except Exception as exc:  # no network, no cache, unknown name: datasets raises many types
        raise CorpusUnavailableError(
            f"the hub dataset {spec!r} is not reachable or cached here ({type(exc).__name__}); run where the "
            "Hugging Face hub is reachable, or pass a local text file or folder as the chapter's `text` parameter"
        ) from exc
    return _from_splits(splits, spec)


def token_ids(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one row of token ids, tokenized line by line (a long text in one
    call trips tokenizers' length warnings and is no faster)."""
    lines = [line + "\n" for line in text.split("\n")]
    encoded = tokenizer(lines, add_special_tokens=False)["input_ids"]
    return torch.tensor([t for ids in encoded for t in ids], dtype=torch.long)


def windows(ids: torch.Tensor, n_windows: int, seq_len: int, seed: int, part: str = "all") -> torch.Tensor:
    """`n_windows` non-overlapping windows of `seq_len` tokens of `ids`, in text order,
    drawn with `seed` from the pieces of `part`: `all`, `fit` (even pieces) or `held_out`
    (odd pieces), so that fit and held-out windows never share a token."""
    n_pieces = len(ids) // seq_len
    start = {"all": 0, "fit": 0, "held_out": 1}[part]
    step = 1 if part == "all" else 2
    pieces = np.arange(start, n_pieces, step)
    if len(pieces) < n_windows:
        raise ValueError(
            f"the text has {len(ids)} tokens: {len(pieces)} {part} windows of {seq_len} tokens, "
            f"fewer than the {n_windows} requested; give a longer text or ask for fewer windows"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(pieces)[:n_windows])
    return torch.stack([ids[p * seq_len : (p + 1) * seq_len] for p in chosen])
