"""Evaluation: perplexity on a token stream and exact-match accuracy per capability.

Both run in batches without gradients on the model's device, and return per-example
numbers as well as the totals, so that chapters can bootstrap confidence intervals over
evaluation examples. Both are one computation (`score_rows`): per row, the NLL of the
tokens that count and whether each was the top prediction. `evaluate` returns the whole
profile of a (possibly compressed) model in one call, language rows, held-out rows of
the training mixture and probes sharing forward passes.

A test bed's language rows are background-language paragraphs, which hold no task segment:
perplexity on them cannot see a capability's loss by construction. Perplexity on the
mixture rows is taken on every token training takes a loss on, task answers included.
Besides exact match, each probe has a graded score, the mean log-probability of its answer
tokens, which still moves when exact match sits at 100%.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import devices
from .suite import CapabilitySuite, Example


def model_device(model: torch.nn.Module) -> torch.device:
    return devices.input_device(model)


@dataclass(frozen=True)
class ProbeSet:
    """Probes of one capability as a right-padded batch. `answer_mask[i, t]` marks the
    tokens that must be predicted (from position t - 1) for row i to count as correct.

    A test bed's probe is one row, right when every answer token is the top prediction.
    A multiple-choice task (`cgclib.harness.task_probes`) has one row per choice:
    `doc_of_row[i]` is the probe row i belongs to and `gold_row[j]` the row of probe j's
    right choice; probe j is right when its right choice has the highest log-likelihood of
    its rows (lm-eval's `acc`). `examples` holds what each probe was made from: the suite's
    examples, or lm-eval's documents."""

    task: str
    input_ids: torch.Tensor
    answer_mask: torch.Tensor
    attention_mask: torch.Tensor
    examples: tuple[Any, ...]
    doc_of_row: torch.Tensor | None = None
    gold_row: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def is_choice(self) -> bool:
        return self.doc_of_row is not None

    def head(self, n: int) -> ProbeSet:
        """The first `n` probes (all their rows)."""
        if self.doc_of_row is None or self.gold_row is None:
            rows = slice(0, n)
            return ProbeSet(
                self.task, self.input_ids[rows], self.answer_mask[rows], self.attention_mask[rows], self.examples[:n]
            )
        keep = self.doc_of_row < n
        return ProbeSet(
            self.task,
            self.input_ids[keep],
            self.answer_mask[keep],
            self.attention_mask[keep],
            self.examples[:n],
            self.doc_of_row[keep],
            self.gold_row[:n],  # rows of the first probes come first, so indices hold
        )

    @property
    def gold(self) -> ProbeSet:
        """The probes' right answers alone, one row each (self for a test bed's probes)."""
        if self.doc_of_row is None or self.gold_row is None:
            return self
        g = self.gold_row
        return ProbeSet(self.task, self.input_ids[g], self.answer_mask[g], self.attention_mask[g], self.examples)


def build_probe_set(tokenizer, task: str, examples: list[Example], bos: bool = True) -> ProbeSet:
    if not examples:
        raise ValueError(f"no probes for task {task!r}")
    rows, masks = [], []
    for ex in examples:
        prefix = [tokenizer.bos_token] if bos else []
        tokens = prefix + [ex.marker, *ex.prompt, *ex.answer]
        ids = tokenizer.convert_tokens_to_ids(tokens)
        if tokenizer.unk_token_id in ids:
            raise ValueError(f"probe {ex.text!r} has tokens unknown to the tokenizer")
        n_answer = len(ex.answer)
        rows.append(ids)
        masks.append([False] * (len(ids) - n_answer) + [True] * n_answer)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, m) in enumerate(zip(rows, masks, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        answer_mask[i, : len(m)] = torch.tensor(m)
        attention_mask[i, : len(ids)] = 1
    return ProbeSet(task, input_ids, answer_mask, attention_mask, tuple(examples))


@dataclass(frozen=True)
class ProbeResult:
    task: str
    correct: np.ndarray  # (n,) bool: exact match of the whole answer
    answer_nll: np.ndarray  # (n,) summed negative log-likelihood of the answer tokens
    answer_tokens: np.ndarray  # (n,) number of answer tokens

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def task_perplexity(self) -> float:
        """exp of the mean per-token answer NLL: a smooth companion to exact match."""
        return float(math.exp(self.answer_nll.sum() / self.answer_tokens.sum()))

    @property
    def answer_logprob(self) -> np.ndarray:
        """(n,) mean log-probability per answer token of each probe, in nats: a graded
        score that moves before an answer stops being exact."""
        return -self.answer_nll / self.answer_tokens

    @property
    def mean_logprob(self) -> float:
        """`answer_logprob` averaged over the probes (each counts once, whatever its length)."""
        return float(self.answer_logprob.mean())


MAX_BATCH_TOKENS = 2**15  # tokens of one batch, whatever the vocabulary
LOGIT_BYTES = 12  # per token and vocabulary entry: the logits (<= 4 bytes), a float32 copy, log-softmax's
EVAL_MEMORY_ENV = "CGC_EVAL_MEMORY_GB"  # the memory an evaluation batch's logits may take
DEFAULT_EVAL_MEMORY_GB = 4.0


def eval_memory_bytes() -> int:
    """The memory budget of one evaluation batch's logits: `CGC_EVAL_MEMORY_GB` (GiB),
    4 by default (`cgc run --eval-memory-gb` sets it for a run)."""
    raw = os.environ.get(EVAL_MEMORY_ENV, "")
    try:
        gib = float(raw) if raw else DEFAULT_EVAL_MEMORY_GB
    except ValueError:
        raise ValueError(f"{EVAL_MEMORY_ENV} must be a number of GiB, got {raw!r}") from None
    if not math.isfinite(gib) or gib <= 0:
        raise ValueError(f"{EVAL_MEMORY_ENV} must be a positive number of GiB, got {raw!r}")
    return int(gib * 2**30)


def max_batch_tokens(vocab_size: int | None, memory_bytes: int | None = None) -> int:
    """Tokens per evaluation batch whose logits stay within `memory_bytes` (default
    `eval_memory_bytes()`), at most MAX_BATCH_TOKENS. The logits dominate an evaluation's
    peak: with GPT-2's 50,257 entries, 32,768 tokens would take 6.6 GB per copy and about
    20 GB in all; the default budget of 4 GiB allows 7,121 tokens. A test bed's vocabulary
    is small enough for the cap to bind; a model of unknown vocabulary gets the cap."""
    if vocab_size is None:
        return MAX_BATCH_TOKENS
    budget = eval_memory_bytes() if memory_bytes is None else memory_bytes
    return max(1, min(MAX_BATCH_TOKENS, budget // (vocab_size * LOGIT_BYTES)))


def vocabulary_size(model: nn.Module) -> int | None:
    """Entries of the model's output layer (the config's count can differ from it); None
    for a model that declares neither (a stand-in written for a test)."""
    get_head = getattr(model, "get_output_embeddings", None)  # Hugging Face models have it
    head = cast(nn.Module | None, get_head()) if callable(get_head) else None
    if head is not None:
        return int(cast(torch.Tensor, head.weight).shape[0])
    config = getattr(model, "config", None)
    return int(config.vocab_size) if config is not None else None


PASS_COST_TOKENS = 128  # a forward pass costs about as much as this many more tokens (test beds, CPU)


def length_batches(
    used: torch.Tensor, max_rows: int, max_tokens: int = MAX_BATCH_TOKENS
) -> list[tuple[torch.Tensor, int]]:
    """Batches of right-padded rows, as (row indices, width): rows of similar length go
    together and each batch is cut to its longest row. `used` (rows, width) marks the
    positions a row needs (nonzero); trailing columns no row of a batch needs are dropped.

    Dropping them changes nothing for the rows (attention is causal and padding is masked),
    and the padding no longer computed is most of it on the test beds (their language
    paragraphs fill about a third of their rows). Rows are sorted by length and grouped by
    equal length; a dynamic programme over the group boundaries picks the batches whose
    cost, padded tokens plus PASS_COST_TOKENS per forward pass, is least. A batch holds at
    most `max_rows` rows and `max_tokens` padded tokens."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if used.shape[0] == 0:
        return []
    lengths = (used.ne(0) * torch.arange(1, used.shape[1] + 1, device=used.device)).amax(dim=1).clamp(min=1).cpu()
    order = torch.sort(lengths, stable=True).indices
    widths, counts = torch.unique_consecutive(lengths[order], return_counts=True)
    widths, edges = widths.tolist(), [0, *torch.cumsum(counts, 0).tolist()]

    def rows_per_batch(width: int) -> int:
        return max(1, min(max_rows, max_tokens // width))

    def cost(a: int, b: int) -> float:  # groups a..b-1 together, padded to the width of group b-1
        rows, width = edges[b] - edges[a], widths[b - 1]
        return math.ceil(rows / rows_per_batch(width)) * PASS_COST_TOKENS + rows * width

    best, cut = [0.0] + [math.inf] * len(widths), [0] * (len(widths) + 1)
    for b in range(1, len(widths) + 1):
        for a in range(b):
            c = best[a] + cost(a, b)
            if c < best[b]:
                best[b], cut[b] = c, a
    batches: list[tuple[torch.Tensor, int]] = []
    b = len(widths)
    while b > 0:
        a = cut[b]
        rows = order[edges[a] : edges[b]]
        step = rows_per_batch(widths[b - 1])
        chunks = [rows[i : i + step] for i in range(0, len(rows), step)]
        batches = [(chunk, int(lengths[chunk].max())) for chunk in chunks] + batches
        b = a
    return batches


@dataclass(frozen=True)
class RowScores:
    """Per row of a batch of right-padded sequences: the summed NLL of its scored tokens,
    their number, and whether the model's top prediction was right at every one of them."""

    nll: np.ndarray  # (rows,) float64
    tokens: np.ndarray  # (rows,) int
    exact: np.ndarray  # (rows,) bool


@torch.no_grad()
def score_rows(
    model: nn.Module,
    input_ids: torch.Tensor,
    scored: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> RowScores:
    """Score every row of `input_ids` (rows, width): `scored[i, t]` marks token t as one
    that counts, predicted from positions < t (column 0 never counts). `attention_mask`
    marks real tokens against padding (None: every token is real). Rows run in
    `length_batches`, so rows of any origin and length can share forward passes."""
    return score_row_variants(model, input_ids, scored, attention_mask, 1, batch_size, progress)[0]


@torch.no_grad()
def score_row_variants(
    model: nn.Module,
    input_ids: torch.Tensor,
    scored: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    variants: int = 1,
    batch_size: int = 256,
    progress: bool = False,
    batch_group: int | None = None,
) -> list[RowScores]:
    """`score_rows` for `variants` versions of the model in one forward pass per batch:
    each batch goes through the model `variants` times over, stacked (variant-major: rows
    [v * B, (v + 1) * B) are variant v), and hooks the caller installed make the copies
    differ (`hooks.ablated_heads_by_variant`). Batches are sized for `batch_group` variants
    (default `variants`), each getting that share of the rows and tokens of one pass, so
    that a pass holds no more than one unbatched pass, and so that evaluations with the
    same `batch_group` cut the rows into the same batches (which `cgclib.resume` needs to
    replay recorded passes)."""
    group = variants if batch_group is None else batch_group
    if variants < 1 or group < variants:
        raise ValueError(f"need 1 <= variants <= batch_group, got {variants} and {group}")
    if scored.shape != input_ids.shape:
        raise ValueError(f"score mask shape {tuple(scored.shape)} differs from the rows {tuple(input_ids.shape)}")
    device = model_device(model)
    n = len(input_ids)
    nll = torch.zeros(variants, n, dtype=torch.float64)
    tokens = torch.zeros(variants, n, dtype=torch.long)
    exact = torch.zeros(variants, n, dtype=torch.bool)
    real = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    max_tokens = max(1, max_batch_tokens(vocabulary_size(model)) // group)
    for rows, width in tqdm(
        length_batches(real.bool() | scored.bool(), max(1, batch_size // group), max_tokens),
        desc="evaluation",
        disable=not progress,
        leave=False,
    ):
        ids = input_ids[rows, :width].to(device).repeat(variants, 1)
        attention = None if attention_mask is None else attention_mask[rows, :width].to(device).repeat(variants, 1)
        keep = scored[rows, 1:width].to(device).bool().repeat(variants, 1)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        targets = ids[:, 1:]
        right = ((logits.argmax(-1) == targets) | ~keep).all(dim=1)
        token_nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        exact[:, rows] = right.view(variants, -1).cpu()
        nll[:, rows] = (token_nll * keep).sum(dim=1).double().view(variants, -1).cpu()
        tokens[:, rows] = keep.sum(dim=1).view(variants, -1).cpu()
    return [RowScores(nll[v].numpy(), tokens[v].numpy(), exact[v].numpy()) for v in range(variants)]


def probe_result(probes: ProbeSet, rows: RowScores) -> ProbeResult:
    """The result of `probes` from the scores of their rows, in order. For a test bed's
    probes, exact match; for a multiple-choice task, whether the right choice has the
    highest log-likelihood (the first of equals wins, as `numpy.argmax` in lm-eval), and
    the NLL and length of the right choice."""
    if probes.doc_of_row is None or probes.gold_row is None:
        return ProbeResult(probes.task, rows.exact, rows.nll, rows.tokens)
    doc = probes.doc_of_row.numpy()
    gold = probes.gold_row.numpy()
    first = np.searchsorted(doc, np.arange(len(gold)))  # each probe's first row
    best = np.array([first[j] + np.argmax(-rows.nll[doc == j]) for j in range(len(gold))], dtype=np.int64)
    return ProbeResult(probes.task, best == gold, rows.nll[gold], rows.tokens[gold])


def evaluate_probes(model: nn.Module, probes: ProbeSet, batch_size: int = 512) -> ProbeResult:
    rows = score_rows(model, probes.input_ids, probes.answer_mask, probes.attention_mask, batch_size)
    return probe_result(probes, rows)


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    window_nll: np.ndarray  # (n_windows,) summed NLL per window
    window_tokens: np.ndarray  # (n_windows,) predicted tokens per window

    @property
    def n_tokens(self) -> int:
        return int(self.window_tokens.sum())

    @classmethod
    def of_windows(cls, window_nll: np.ndarray, window_tokens: np.ndarray) -> PerplexityResult:
        """The perplexity of windows with these summed NLLs and token counts."""
        return cls(float(math.exp(window_nll.sum() / window_tokens.sum())), window_nll, window_tokens)

    def subset(self, index: np.ndarray) -> PerplexityResult:
        """The perplexity of the windows selected by `index` (an index array or boolean mask):
        a resample for a bootstrap, or a slice of the evaluation text."""
        return PerplexityResult.of_windows(self.window_nll[index], self.window_tokens[index])


def _language_score(
    windows: torch.Tensor, score: torch.Tensor | None, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """The tokens of language rows that count: `score` if given, else every real token but
    the first of each row."""
    if score is not None:
        return score
    score = torch.ones_like(windows, dtype=torch.bool) if attention_mask is None else attention_mask.bool().clone()
    score[:, 0] = False
    return score


def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    score: torch.Tensor | None = None,
    batch_size: int = 64,
    attention_mask: torch.Tensor | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity over the tokens of `windows` (batch, seq), each predicted from its prefix.
    `score` (same shape, bool) marks the tokens that count; by default every real token
    (per `attention_mask`, else every token) but the first of each row. `attention_mask`
    marks real tokens (1) against padding (0)."""
    rows = score_rows(
        model, windows, _language_score(windows, score, attention_mask), attention_mask, batch_size, progress
    )
    return PerplexityResult.of_windows(rows.nll, rows.tokens)


@dataclass
class EvaluationData:
    """What a model is evaluated on: language text (rows of token ids and the mask of the
    tokens that count), capability probes and, optionally, held-out rows of the training
    mixture (`mixture_score` is then required: it marks the tokens that count)."""

    windows: torch.Tensor
    score: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    probes: dict[str, ProbeSet] = field(default_factory=dict)
    perplexity_floor: float | None = None
    mixture_windows: torch.Tensor | None = None
    mixture_score: torch.Tensor | None = None
    mixture_attention: torch.Tensor | None = None

    @classmethod
    def for_testbed(
        cls,
        suite: CapabilitySuite,
        tokenizer,
        n_probes: int,
        n_paragraphs: int,
        seed: int = 0,
        n_mixture: int = 0,
        mixture_seq_len: int = 128,
    ) -> EvaluationData:
        """Held-out probes of every capability, held-out background-language paragraphs
        and, if `n_mixture` > 0, that many held-out rows of `mixture_seq_len` tokens of the
        training mixture (`CapabilitySuite.mixture_eval`)."""
        windows, score, floor = suite.language_eval(n_paragraphs, seed=seed)
        probes = {t: build_probe_set(tokenizer, t, suite.probes(t, n_probes, seed=seed)) for t in suite.tasks}
        attention = (windows != tokenizer.pad_token_id).long()
        data = cls(windows, score, attention, probes, floor)
        if n_mixture > 0:
            data.mixture_windows, data.mixture_score = suite.mixture_eval(n_mixture, seed=seed, seq_len=mixture_seq_len)
            data.mixture_attention = (data.mixture_windows != tokenizer.pad_token_id).long()
        return data

    def digest(self) -> str:
        """sha256 of every tensor that determines an evaluation's result (a cache key).
        Without mixture rows it is what it was before they existed, so caches stay valid."""
        h = hashlib.sha256()
        tensors = [self.windows, self.score, self.attention_mask]
        for task in sorted(self.probes):
            p = self.probes[task]
            h.update(task.encode())
            tensors += [p.input_ids, p.answer_mask, p.attention_mask]
            if p.doc_of_row is not None:
                tensors += [p.doc_of_row, p.gold_row]
        for t in tensors:
            h.update(b"-" if t is None else str(tuple(t.shape)).encode() + t.cpu().contiguous().numpy().tobytes())
        if self.mixture_windows is not None:
            h.update(b"mixture")
            for t in (self.mixture_windows, self.mixture_score, self.mixture_attention):
                h.update(b"-" if t is None else str(tuple(t.shape)).encode() + t.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def subset(self, n_probes: int, n_windows: int, n_mixture: int = 0) -> EvaluationData:
        """The first `n_probes` probes of every capability, the first `n_windows` language
        rows and the first `n_mixture` mixture rows (none by default: a mixture row is about
        as costly as four paragraphs): a cheaper evaluation for sweeps with many points."""
        if n_probes < 1 or n_windows < 1 or n_mixture < 0:
            raise ValueError(
                f"a subset needs at least one probe and one window, got {n_probes}, {n_windows} "
                f"(and {n_mixture} mixture rows)"
            )

        def head(t, n=n_windows):
            return None if t is None else t[:n]

        def mixture(t):
            return head(t, n_mixture) if n_mixture > 0 else None

        probes = {task: p.head(n_probes) for task, p in self.probes.items()}
        return EvaluationData(
            self.windows[:n_windows],
            head(self.score),
            head(self.attention_mask),
            probes,
            mixture_windows=mixture(self.mixture_windows),
            mixture_score=mixture(self.mixture_score),
            mixture_attention=mixture(self.mixture_attention),
        )


@dataclass(frozen=True)
class Profile:
    """The evaluation of one model: perplexity, per-capability results and, if the data had
    mixture rows, perplexity on held-out text of the training mixture."""

    language: PerplexityResult
    capabilities: dict[str, ProbeResult]
    mixture: PerplexityResult | None = None

    @property
    def perplexity(self) -> float:
        return self.language.perplexity

    @property
    def mixture_perplexity(self) -> float:
        """Perplexity on the mixture rows; NaN for data without them."""
        return self.mixture.perplexity if self.mixture is not None else float("nan")

    def accuracy(self) -> dict[str, float]:
        return {t: r.accuracy for t, r in self.capabilities.items()}

    def mean_accuracy(self) -> float:
        """Exact-match accuracy averaged over capabilities (each counts once, whatever its
        number of probes); NaN for a model evaluated on language alone."""
        accuracy = self.accuracy()
        return float(np.mean(list(accuracy.values()))) if accuracy else float("nan")

    def graded(self) -> dict[str, float]:
        """Mean answer log-probability per token (nats) of every capability."""
        return {t: r.mean_logprob for t, r in self.capabilities.items()}

    def mean_graded(self) -> float:
        """`graded` averaged over capabilities (each counts once); NaN without probes."""
        graded = self.graded()
        return float(np.mean(list(graded.values()))) if graded else float("nan")

    def table(self) -> pd.DataFrame:
        rows = [
            {
                "capability": t,
                "accuracy": r.accuracy,
                "answer logprob": r.mean_logprob,
                "task perplexity": r.task_perplexity,
                "n": len(r.correct),
            }
            for t, r in self.capabilities.items()
        ]
        return pd.DataFrame(rows).set_index("capability")


def evaluation_rows(data: EvaluationData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[int]]:
    """Every row of `data`, language first, then the mixture rows if any, then each
    capability's probes, padded to one width: (input ids, scored tokens, attention mask or
    None, row counts per part)."""
    for name, mask in (("score", data.score), ("attention", data.attention_mask)):
        if mask is not None and mask.shape != data.windows.shape:
            raise ValueError(f"{name} mask shape {tuple(mask.shape)} differs from windows {tuple(data.windows.shape)}")
    language_score = _language_score(data.windows, data.score, data.attention_mask)
    if not data.probes and data.mixture_windows is None:
        return data.windows, language_score, data.attention_mask, [len(data.windows)]

    language_attention = torch.ones_like(data.windows) if data.attention_mask is None else data.attention_mask
    parts = [(data.windows, language_score, language_attention)]
    if data.mixture_windows is not None:
        mixture = data.mixture_windows
        if data.mixture_score is None:
            raise ValueError("mixture rows need mixture_score, the mask of the tokens that count")
        mixture_attention = torch.ones_like(mixture) if data.mixture_attention is None else data.mixture_attention
        for name, mask in (("mixture score", data.mixture_score), ("mixture attention", mixture_attention)):
            if mask.shape != mixture.shape:
                raise ValueError(f"{name} mask shape {tuple(mask.shape)} differs from rows {tuple(mixture.shape)}")
        parts.append((mixture, data.mixture_score, mixture_attention))
    parts += [(p.input_ids, p.answer_mask, p.attention_mask) for p in data.probes.values()]
    width = max(part[0].shape[1] for part in parts)

    def padded(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[1]))

    ids, scored, attention = (torch.cat([padded(part[i]) for part in parts]) for i in range(3))
    return ids, scored, attention, [len(part[0]) for part in parts]


def evaluate(model: nn.Module, data: EvaluationData, batch_size: int = 256, progress: bool = False) -> Profile:
    """Perplexity, mixture perplexity and every capability of `model` on `data`. The
    language rows, the mixture rows and every capability's probes share forward passes: all
    rows go through `score_rows` together, in batches of rows of similar length
    (`length_batches`) of at most `batch_size` rows and `max_batch_tokens` tokens, which takes
    fewer passes than scoring each part on its own."""
    return evaluate_variants(model, data, 1, batch_size, progress)[0]


def evaluate_variants(
    model: nn.Module,
    data: EvaluationData,
    variants: int,
    batch_size: int = 256,
    progress: bool = False,
    batch_group: int | None = None,
) -> list[Profile]:
    """`evaluate` for `variants` versions of the model that the caller's hooks tell apart
    by their rows of a stacked batch (see `score_row_variants`, and `batch_group`)."""
    ids, scored, attention, counts = evaluation_rows(data)
    was_training = model.training
    model.eval()
    try:
        scores = score_row_variants(model, ids, scored, attention, variants, batch_size, progress, batch_group)
    finally:
        model.train(was_training)
    return [_profile(data, rows, counts) for rows in scores]


def variants_per_pass(model: nn.Module, data: EvaluationData, most: int) -> int:
    """How many variants of the model one forward pass evaluates (at most `most`): as many
    as fit a pass of `max_batch_tokens` with each still holding a whole row of the widest
    length, so batching costs no extra memory (every head of a block at once on the test
    beds; a few at a time for a large vocabulary and 1,024-token windows)."""
    parts = [data.windows, data.mixture_windows, *(p.input_ids for p in data.probes.values())]
    widest = max(t.shape[1] for t in parts if t is not None)
    return max(1, min(most, max_batch_tokens(vocabulary_size(model)) // widest))


def _profile(data: EvaluationData, rows: RowScores, counts: list[int]) -> Profile:
    """The profile of `data` from the scores of its rows, laid out as `evaluation_rows` lays them."""
    ends = np.cumsum(counts)
    language = PerplexityResult.of_windows(rows.nll[: ends[0]], rows.tokens[: ends[0]])
    mixture = None
    if data.mixture_windows is not None:
        mixture = PerplexityResult.of_windows(rows.nll[ends[0] : ends[1]], rows.tokens[ends[0] : ends[1]])
        ends = ends[1:]
    caps = {
        task: probe_result(probes, RowScores(rows.nll[a:b], rows.tokens[a:b], rows.exact[a:b]))
        for (task, probes), a, b in zip(data.probes.items(), ends[:-1], ends[1:], strict=True)
    }
    return Profile(language, caps, mixture)


def perplexity_change(
    a: Profile, b: Profile, n_resamples: int = 2000, seed: int = 0, part: Literal["language", "mixture"] = "language"
) -> tuple[float, tuple[float, float]]:
    """Relative change of perplexity from `b` to `a` (a / b - 1) on the same evaluation
    text, the language rows or the mixture rows (`part`), with a 95% bootstrap interval
    over windows resampled jointly for both."""
    if part not in ("language", "mixture"):
        raise ValueError(f"part must be 'language' or 'mixture', got {part!r}")
    text_a, text_b = (a.language, b.language) if part == "language" else (a.mixture, b.mixture)
    if text_a is None or text_b is None:
        raise ValueError("perplexity_change on the mixture needs two profiles evaluated with mixture rows")
    nll_a, nll_b = text_a.window_nll, text_b.window_nll
    tokens = text_a.window_tokens
    if nll_b.shape != nll_a.shape or not np.array_equal(tokens, text_b.window_tokens):
        raise ValueError("perplexity_change needs two evaluations of the same windows")
    value = math.exp((nll_a.sum() - nll_b.sum()) / tokens.sum()) - 1
    idx = np.random.default_rng(seed).integers(len(tokens), size=(n_resamples, len(tokens)))
    boot = np.exp((nll_a[idx].sum(1) - nll_b[idx].sum(1)) / tokens[idx].sum(1)) - 1
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(value), (float(lo), float(hi))


def accuracy_gap(
    a: list[Profile],
    b: list[Profile],
    n_resamples: int = 2000,
    seed: int = 0,
    metric: Literal["exact", "logprob"] = "exact",
) -> tuple[float, tuple[float, float]]:
    """Mean capability score of profiles `a` minus that of `b`, averaged over the pairs
    (a[i], b[i]) (e.g. two strategies at each sparsity of a grid) and over capabilities,
    with a 95% bootstrap interval: probes resampled within each capability, the same
    resample for every pair, since every profile answered the same probes. The score of a
    probe is exact match (1 or 0; `metric="exact"`, a gap in accuracy) or its
    `answer_logprob` (`metric="logprob"`, a gap in nats per answer token)."""
    if len(a) != len(b) or not a:
        raise ValueError("accuracy_gap needs two equally long, non-empty lists of profiles")
    if metric not in ("exact", "logprob"):
        raise ValueError(f"metric must be 'exact' or 'logprob', got {metric!r}")

    def score(result: ProbeResult) -> np.ndarray:
        return result.correct.astype(float) if metric == "exact" else result.answer_logprob

    tasks = list(a[0].capabilities)
    if not tasks:
        raise ValueError("the profiles have no capability probes")
    rng = np.random.default_rng(seed)
    value, boot = 0.0, np.zeros(n_resamples)
    for task in tasks:
        diff = np.stack(
            [score(pa.capabilities[task]) - score(pb.capabilities[task]) for pa, pb in zip(a, b, strict=True)]
        )  # (pairs, probes)
        per_probe = diff.mean(0)
        value += per_probe.mean() / len(tasks)
        idx = rng.integers(len(per_probe), size=(n_resamples, len(per_probe)))
        boot += per_probe[idx].mean(1) / len(tasks)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(value), (float(lo), float(hi))
