"""The model a chapter studies, with everything it is evaluated and calibrated on.

A *subject* bundles the loaded model and tokenizer with its evaluation data: for a test
bed, held-out capability probes, background-language paragraphs and rows of the training
mixture from its capability suite; for any other model, the text its chapter's `text`
parameter names (`cgclib.corpus`: WikiText-2 from the hub by default, or a local file or
folder) and, as its capabilities, the lm-eval tasks the `tasks` parameter names
(`cgclib.harness.task_probes`). Chapters call `load_subject(model, device, dtype, ...)` once
and pass the subject around.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import corpus as corpora
from .evaluation import EvaluationData, Profile, evaluate
from .harness import task_probes
from .models import CheckpointError, LoadedModel, is_testbed, load_model
from .suite import CapabilitySuite

CALIBRATION_SEED_OFFSET = 1000  # calibration text never shares a stream with training
NO_PROBES = (
    "the model has no capability probes: it is not a test bed, and the chapter's `tasks` parameter names "
    "no lm-eval task to read its capabilities from"
)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch, and say so (every chapter prints its seed)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    print(f"seed: {seed}")


def slug(name: str) -> str:
    """A model name as an identifier, for ledger ids: 'gpt2-medium' -> 'gpt2_medium'. A
    local folder is named by its last component ('/data/models/gpt2-medium' -> 'gpt2_medium'),
    so that ids do not depend on where the weights lie."""
    if "/" in name and Path(name).expanduser().is_dir():
        name = Path(name).expanduser().resolve().name
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass
class Subject:
    name: str
    loaded: LoadedModel
    suite: CapabilitySuite | None
    data: EvaluationData
    corpus: corpora.Corpus | None = None
    _calibration_ids: torch.Tensor | None = field(default=None, repr=False)

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def slug(self) -> str:
        return slug(self.name)

    @property
    def is_testbed(self) -> bool:
        return self.suite is not None

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def setting(self, seed: int, extra: str = "") -> str:
        """The measurement setting recorded in the ledger."""
        return f"{self.name}, seed {seed}" + (f", {extra}" if extra else "")

    def evaluate(self, model: torch.nn.Module | None = None, batch_size: int = 256) -> Profile:
        return evaluate(model if model is not None else self.model, self.data, batch_size=batch_size)

    def calibration(self, n_sequences: int, seq_len: int, seed: int = 0, held_out: bool = False) -> torch.Tensor:
        """(n_sequences, seq_len) token ids from the training distribution (test beds) or
        the calibration part of the subject's text (other models), never the evaluation
        data. `held_out` draws windows that share no token with any drawn without it, to
        score what was fitted on those (on a test bed every draw is fresh text already)."""
        if self.suite is not None:
            stream = self.suite.training_batches(seed + CALIBRATION_SEED_OFFSET, n_sequences, seq_len)
            return next(stream)[0]
        if self.corpus is None:
            raise ValueError(f"{self.name!r} has neither a capability suite nor a text to calibrate on")
        if self._calibration_ids is None:
            self._calibration_ids = corpora.token_ids(self.tokenizer, self.corpus.calibration)
        part = "held_out" if held_out else "fit"
        return corpora.windows(self._calibration_ids, n_sequences, seq_len, seed, part)


def load_subject(
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    n_probes: int = 200,
    n_paragraphs: int = 500,
    seed: int = 0,
    eval_seq_len: int = 1024,
    n_mixture: int | None = None,
    text: str = corpora.DEFAULT_TEXT,
    tasks: list[str] | tuple[str, ...] = (),
    task_path: str = "",
    num_fewshot: int = 0,
) -> Subject:
    """Load a model and its evaluation data. For a test bed, `n_probes` held-out probes per
    capability, `n_paragraphs` background-language paragraphs and `n_mixture` (default
    a quarter of `n_paragraphs`, which scores about as many tokens as the paragraphs; 0 for
    none) held-out rows of the training mixture, as long as its training windows; for
    another model, `n_paragraphs` windows of `eval_seq_len` tokens of the evaluation part
    of `text` (see `cgclib.corpus`; test beds ignore it) and no mixture rows: that text is
    already the general text such a model was trained on, so `n_mixture` must be None or 0.
    Its capabilities are the first `n_probes` documents of each lm-eval task in `tasks`
    (with the task files in `task_path`, and `num_fewshot` in-context examples); none if
    `tasks` is empty. Test beds ignore these three: they have their suite.

    A test bed is evaluated with the suite and the held-out split it was trained on: the
    card's `suite_seed`, `split_version` and `fact_paraphrases`; a card without them (the
    shipped test beds') means version 1 without paraphrases."""
    loaded = load_model(name, device=device, dtype=dtype)
    if is_testbed(name):
        if loaded.card is None:
            raise CheckpointError(f"test bed {name!r} was loaded without its model card")
        suite = CapabilitySuite(
            loaded.card["suite_seed"],
            split_version=loaded.card.get("split_version", 1),
            fact_paraphrases=loaded.card.get("fact_paraphrases", False),
        )
        data = EvaluationData.for_testbed(
            suite,
            loaded.tokenizer,
            n_probes,
            n_paragraphs,
            seed=seed,
            n_mixture=max(1, n_paragraphs // 4) if n_mixture is None else n_mixture,
            mixture_seq_len=loaded.card["training"]["seq_len"],
        )
        return Subject(name, loaded, suite, data)
    if n_mixture:
        raise ValueError(f"{name!r} is not a test bed: it has no training mixture to take rows from")
    seq_len = min(eval_seq_len, getattr(loaded.model.config, "max_position_embeddings", eval_seq_len))
    corpus = corpora.load_corpus(text)
    ids = corpora.token_ids(loaded.tokenizer, corpus.evaluation)
    windows = corpora.windows(ids, n_paragraphs, seq_len, seed)
    probes = (
        task_probes(loaded.model, loaded.tokenizer, tasks, task_path or None, n_probes, num_fewshot, seed)
        if tasks
        else {}
    )
    return Subject(name, loaded, None, EvaluationData(windows, probes=probes), corpus)


def describe(profile: Profile) -> str:
    """One line: perplexity and every capability's accuracy."""
    accuracies = ", ".join(f"{t} {a:.0%}" for t, a in profile.accuracy().items())
    return f"perplexity {profile.perplexity:.3f}" + (f"; {accuracies}" if accuracies else "")
