"""The capability suite: seven named skills, each with an exact-match probe and a held-out
evaluation split, mixed with a background language, under one word-level tokenizer.

Every task example is one segment of tokens::

    <marker> <prompt tokens> = <answer tokens> <eos>

(key-value recall has no "=": its prompt ends with the queried key, and the answer is
the value that follows it, as in the associative-recall tasks of the literature).
Numbers in the addition task are written least significant digit first, inputs and
answer alike (47 + 59 = 106 is `7 4 + 9 5 = 6 0 1`), the order in which carries are
computed.

and a model has the skill on an example when, given the prompt, its greedy continuation is
exactly the answer. Because the answer is fixed, that is the same as every teacher-forced
prediction on the answer being the argmax, which is how `cgclib.evaluation` checks it in
one batched forward pass.

Key-value recall is trained in the multi-query form of Arora et al. (2023): after the
pairs come several queries, each `; key value`, and every value carries a loss. One
context thus teaches several lookups, which is what lets an in-context retrieval circuit
form in a small model (with one query per context, ours had not learned the skill after most
of the training budget: they answered with some value from the context).
A probe is the prefix of such a segment up to its first query, and its answer is the value
alone (what follows the value depends on how many queries come after it).

The tasks::

    | task          | marker     | example                                   | what it needs             |
    |---------------|------------|-------------------------------------------|---------------------------|
    | copy          | `copy:`    | `copy: k a k d = k a k d <eos>`           | induction / positional copy |
    | kv_recall     | `recall:`  | `recall: a 3 f 7 k 1 ; f 7 ; a 3 <eos>`   | in-context key-value lookup |
    | dyck          | `dyck:`    | `dyck: ( [ ] { ( = ) } ) <eos>`           | a stack of open brackets  |
    | addition      | `add:`     | `add: 7 4 + 9 5 = 6 0 1 <eos>`            | digit-wise sum with carries |
    | fact_recall   | `fact:`    | `fact: bora lives_in = oslo <eos>`        | facts stored in the weights |
    | sorting       | `sort:`    | `sort: k c x a = a c k x <eos>`           | comparison of letters     |
    | reversal      | `reverse:` | `reverse: a f k = k f a <eos>`            | position arithmetic       |

Held-out splits: an example's *key* (its input, or for fact recall its entity) is hashed;
a fixed share of keys belongs to the evaluation split and is never generated for training.
Fact recall tests knowledge extraction: every fact appears in training as a sentence of
the background language ("bora lives_in oslo ."), but the question form is trained only
on the entities of the training split, and probed on the others.

Some inputs have *twins*, other inputs of the same problem: the commuted sum (47 + 59 and
59 + 47), the same letters to sort in another order, the same key-value pairs in another
order. The suite's `split_version` says what the key of these three tasks is:

- version 2 (the default, for every new model): the unordered pair of numbers, the sorted
  letters, the sorted set of pairs. Twins share a key, so a held-out example has no twin
  in training.
- version 1: the input as written, as for the other tasks. Most twins of a held-out
  example are then in the training split: the commuted twin of about nine held-out sums in
  ten, and some reordering of every held-out sorting input and key-value context. Version 1
  stays because the shipped test beds were trained on it, and a model is evaluated with
  the split it was trained on (`cgclib.subjects.load_subject` reads the version from the
  model card; a card without one means version 1).

Both versions sample examples the same way; they differ only in which are held out.

Fact statements come in one form ("bora lives_in oslo .") or, with `fact_paraphrases` (the
default, for every new model), in three ("bora 's lives_in is oslo .", "bora has lives_in
oslo ." besides). The shipped test beds were trained on one form; their cards say so by
leaving the flag out.

Everything is a function of the seed, the split version and the paraphrase flag: the same
three give byte-identical corpora.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .grammar import Grammar, Paragraph, entropy_floor, sample_index

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]
SEP = "="
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
DIGITS = list("0123456789")
BRACKETS = [("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")]
IGNORE_INDEX = -100


def _hash_fraction(text: str) -> float:
    """A stable number in [0, 1) derived from `text` (independent of Python's hash seed)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


@dataclass(frozen=True)
class Segment:
    """Tokens of one training segment and which of them carry a training loss."""

    tokens: list[str]
    loss: list[bool]


@dataclass(frozen=True)
class Example:
    """One task instance: marker, prompt (up to "=" or the query), and the answer."""

    task: str
    marker: str
    prompt: tuple[str, ...]
    answer: tuple[str, ...]
    key: str

    @property
    def tokens(self) -> list[str]:
        return [self.marker, *self.prompt, *self.answer]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


Split = Literal["train", "eval"]
"""The two splits of a task's examples (see "Held-out splits" in the module docstring)."""


class Task(ABC):
    """A capability: how to sample its examples and which examples are held out."""

    name: str
    marker: str
    eval_share: float = 0.1

    @abstractmethod
    def vocabulary(self) -> list[str]:
        """Tokens this task uses besides its marker and the special tokens."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Example:
        """An example from either split."""

    def split_of(self, example: Example) -> Split:
        return "eval" if _hash_fraction(f"{self.name}|{example.key}") < self.eval_share else "train"

    def training_segment(self, rng: np.random.Generator, split: Split = "train") -> Segment:
        """A segment for the training mixture: an example, with a loss on its answer."""
        example = self.generate(rng, split)
        n_prompt = 1 + len(example.prompt)
        return Segment(example.tokens, [False] * n_prompt + [True] * len(example.answer))

    def generate(self, rng: np.random.Generator, split: Split) -> Example:
        """An example of the requested split (rejection sampling on the key)."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        for _ in range(10_000):
            example = self.sample(rng)
            if self.split_of(example) == split:
                return example
        raise RuntimeError(f"task {self.name}: could not sample a {split} example")

    separator: str | None = SEP  # token between prompt and answer

    def _example(self, prompt, answer, key) -> Example:
        prompt = (*prompt, self.separator) if self.separator else tuple(prompt)
        return Example(self.name, self.marker, prompt, (*answer, EOS), key)


def random_letters(rng: np.random.Generator, lengths: tuple[int, int]) -> list[str]:
    """Letters drawn with replacement, their number uniform in `lengths` (inclusive)."""
    return [LETTERS[i] for i in rng.integers(0, 26, rng.integers(lengths[0], lengths[1] + 1))]


class CopyTask(Task):
    name, marker = "copy", "copy:"
    LENGTHS = (3, 8)

    def vocabulary(self):
        return LETTERS

    def sample(self, rng):
        seq = random_letters(rng, self.LENGTHS)
        return self._example(seq, seq, " ".join(seq))


class ReversalTask(Task):
    name, marker = "reversal", "reverse:"
    LENGTHS = (3, 7)

    def vocabulary(self):
        return LETTERS

    def sample(self, rng):
        seq = random_letters(rng, self.LENGTHS)
        return self._example(seq, seq[::-1], " ".join(seq))


class TwinnedTask(Task):
    """A task whose inputs have twins (see "Held-out splits" in the module docstring).
    With `canonical_keys` an example is keyed on what its twins share, which puts twins in
    the same split (split version 2); without, on its input as written (version 1)."""

    def __init__(self, canonical_keys: bool = True):
        self.canonical_keys = canonical_keys


class SortingTask(TwinnedTask):
    name, marker = "sorting", "sort:"
    LENGTHS = (3, 7)

    def vocabulary(self):
        return LETTERS

    def sample(self, rng):
        n = rng.integers(self.LENGTHS[0], self.LENGTHS[1] + 1)
        seq = [LETTERS[i] for i in rng.choice(26, size=n, replace=False)]
        return self._example(seq, sorted(seq), " ".join(sorted(seq) if self.canonical_keys else seq))


class KeyValueRecallTask(TwinnedTask):
    """Pairs `key value`, then `;` and a key: answer with its value. The held-out unit is
    the context (the pairs): a held-out context is never trained with any query."""

    name, marker = "kv_recall", "recall:"
    separator = None
    PAIRS = (3, 6)

    def vocabulary(self):
        return LETTERS + DIGITS + [";"]

    def _pairs(self, rng) -> tuple[list[str], list[str]]:
        n = rng.integers(self.PAIRS[0], self.PAIRS[1] + 1)
        keys = [LETTERS[i] for i in rng.choice(26, size=n, replace=False)]
        values = [DIGITS[i] for i in rng.integers(0, 10, n)]
        return keys, values

    def sample(self, rng):
        keys, values = self._pairs(rng)
        pairs = list(zip(keys, values, strict=True))
        context = [t for kv in pairs for t in kv]
        q = int(rng.integers(0, len(keys)))
        key = " ".join(t for kv in sorted(pairs) for t in kv) if self.canonical_keys else " ".join(context)
        return Example(self.name, self.marker, (*context, ";", keys[q]), (values[q],), key)

    def training_segment(self, rng, split="train"):
        """Pairs, then as many queries as pairs (keys drawn with replacement, so the last
        answer cannot be found by elimination), `<eos>`; a loss on every value and `<eos>`."""
        example = self.generate(rng, split)
        keys, values = list(example.prompt[:-2:2]), list(example.prompt[1:-2:2])
        tokens, loss = [self.marker, *example.prompt[:-2]], [False] * (len(example.prompt) - 1)
        first = keys.index(example.prompt[-1])
        queries = [first, *(int(i) for i in rng.integers(0, len(keys), len(keys) - 1))]
        for q in queries:
            tokens += [";", keys[q], values[q]]
            loss += [False, False, True]
        return Segment([*tokens, EOS], [*loss, True])


class DyckTask(Task):
    """Close every open bracket of a prefix of a balanced string over four bracket types."""

    name, marker = "dyck", "dyck:"
    LENGTHS = (4, 12)
    MAX_DEPTH = 4
    P_OPEN = 0.55

    def vocabulary(self):
        return [b for pair in BRACKETS for b in pair]

    def sample(self, rng):
        while True:
            length = int(rng.integers(self.LENGTHS[0], self.LENGTHS[1] + 1))
            stack: list[str] = []
            prefix: list[str] = []
            for _ in range(length):
                if not stack or (len(stack) < self.MAX_DEPTH and rng.random() < self.P_OPEN):
                    pair = BRACKETS[int(rng.integers(0, len(BRACKETS)))]
                    stack.append(pair[1])
                    prefix.append(pair[0])
                else:
                    prefix.append(stack.pop())
            if stack:
                return self._example(prefix, stack[::-1], " ".join(prefix))


class AdditionTask(TwinnedTask):
    """Two-digit addition. Every number is written least significant digit first, the
    order in which carries are computed; the answer has three digits."""

    name, marker = "addition", "add:"
    DIGITS_IN = 2

    def vocabulary(self):
        return DIGITS + ["+"]

    def sample(self, rng):
        n = self.DIGITS_IN
        a, b = (int(x) for x in rng.integers(0, 10**n, 2))
        prompt = list(f"{a:0{n}d}")[::-1] + ["+"] + list(f"{b:0{n}d}")[::-1]
        answer = list(f"{a + b:0{n + 1}d}")[::-1]
        return self._example(prompt, answer, f"{min(a, b)}+{max(a, b)}" if self.canonical_keys else f"{a}+{b}")


# --- the knowledge base ----------------------------------------------------------------

RELATIONS = {
    "lives_in": [
        "paris",
        "rome",
        "oslo",
        "lima",
        "cairo",
        "delhi",
        "tokyo",
        "quito",
        "dakar",
        "riga",
        "sofia",
        "bern",
        "kyiv",
        "hanoi",
        "accra",
        "perth",
    ],
    "works_as": [
        "pilot",
        "nurse",
        "miner",
        "judge",
        "chef",
        "clerk",
        "tailor",
        "potter",
        "weaver",
        "guard",
        "monk",
        "poet",
        "smith",
        "cook",
        "scribe",
        "mason",
    ],
    "eats": [
        "rice",
        "bread",
        "soup",
        "plums",
        "figs",
        "cheese",
        "honey",
        "beans",
        "olives",
        "dates",
        "pears",
        "nuts",
        "eggs",
        "corn",
        "apples",
        "grapes",
    ],
    "has_pet": [
        "parrot",
        "ferret",
        "turtle",
        "goat",
        "rabbit",
        "hamster",
        "lizard",
        "pony",
        "goose",
        "snail",
        "frog",
        "mouse",
        "crab",
        "owl",
        "duck",
        "lamb",
    ],
}
N_ENTITIES = 64
NAME_SEED = 2026  # the entity names are part of the vocabulary, so they never change


def entity_names(n: int = N_ENTITIES) -> list[str]:
    """Pronounceable two-syllable names, fixed once and for all."""
    rng = np.random.default_rng(NAME_SEED)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    taken = set(Grammar().vocabulary()) | {v for values in RELATIONS.values() for v in values}
    names: list[str] = []
    while len(names) < n:
        c = rng.integers(0, len(consonants), 2)
        v = rng.integers(0, len(vowels), 2)
        name = (
            f"{vowels[v[0]]}{consonants[c[0]]}{vowels[v[1]]}"
            if rng.random() < 0.3
            else f"{consonants[c[0]]}{vowels[v[0]]}{consonants[c[1]]}{vowels[v[1]]}"
        )
        if name not in names and name not in taken:
            names.append(name)
    return names


class KnowledgeBase:
    """Entity -> relation -> value, drawn uniformly from the seed."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 1])
        self.entities = entity_names()
        self.facts = {
            (e, r): values[int(rng.integers(0, len(values)))] for e in self.entities for r, values in RELATIONS.items()
        }

    def sample_fact(self, rng: np.random.Generator, para: Paragraph | None = None) -> tuple[str, str, str]:
        """A uniformly chosen fact (its log-probability is added to `para`)."""
        e = self.entities[int(rng.integers(0, len(self.entities)))]
        r = list(RELATIONS)[int(rng.integers(0, len(RELATIONS)))]
        if para is not None:
            para.logprob += -np.log(len(self.entities)) - np.log(len(RELATIONS))
        return e, r, self.facts[(e, r)]


class FactRecallTask(Task):
    name, marker = "fact_recall", "fact:"
    eval_share = 0.5  # the question form is trained on half of the entities, probed on the rest

    def __init__(self, knowledge: KnowledgeBase):
        self.knowledge = knowledge

    def vocabulary(self):
        values = [v for vs in RELATIONS.values() for v in vs]
        return self.knowledge.entities + list(RELATIONS) + values

    def sample(self, rng):
        e, r, v = self.knowledge.sample_fact(rng)
        return self._example([e, r], [v], e)

    def all_examples(self, split: Split) -> list[Example]:
        out = [
            self._example([e, r], [self.knowledge.facts[(e, r)]], e) for e in self.knowledge.entities for r in RELATIONS
        ]
        return [x for x in out if self.split_of(x) == split]

    def statement_examples(self, split: Split) -> list[Example]:
        """The same facts in the form training states them: `entity relation` -> `value`,
        as at the start of a paragraph. Set next to the question probes, they separate
        storing a fact from extracting it. A statement has no marker: the entity takes the
        marker's place as the first token."""
        return [
            Example(self.name, x.prompt[0], (x.prompt[1],), (x.answer[0],), x.key) for x in self.all_examples(split)
        ]


# --- the suite -------------------------------------------------------------------------


SPLIT_VERSIONS = (1, 2)
"""The held-out splits a suite can use (see "Held-out splits" in the module docstring)."""


class CapabilitySuite:
    """Tasks, background language and tokenizer, all determined by `seed`; which examples
    are held out is determined by `split_version`, and whether the background language
    states facts in several forms by `fact_paraphrases` (see `cgclib.grammar.Grammar`)."""

    P_LANGUAGE = 0.3  # share of segments that are background-language paragraphs
    # the two skills that need a circuit to form (induction; carries) are shown more often
    TASK_WEIGHTS = {"kv_recall": 2.0, "addition": 2.0}

    def __init__(self, seed: int = 0, split_version: int = 2, fact_paraphrases: bool = True):
        if split_version not in SPLIT_VERSIONS:
            raise ValueError(
                f"split_version must be one of {SPLIT_VERSIONS} (1 for the shipped test beds, 2 for new "
                f"training), got {split_version!r}"
            )
        self.seed = seed
        self.split_version = split_version
        self.knowledge = KnowledgeBase(seed)
        self.fact_paraphrases = fact_paraphrases
        self.grammar = Grammar(self.knowledge, fact_paraphrases)
        canonical = split_version == 2
        tasks = [
            CopyTask(),
            KeyValueRecallTask(canonical),
            DyckTask(),
            AdditionTask(canonical),
            FactRecallTask(self.knowledge),
            SortingTask(canonical),
            ReversalTask(),
        ]
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        weights = np.array([self.TASK_WEIGHTS.get(t.name, 1.0) for t in tasks])
        self._task_probs = weights / weights.sum()

    # --- vocabulary ---
    @property
    def vocabulary(self) -> list[str]:
        words = list(SPECIAL_TOKENS) + [SEP] + [t.marker for t in self.tasks.values()]
        for task in self.tasks.values():
            words += task.vocabulary()
        words += self.grammar.vocabulary()
        return list(dict.fromkeys(words))

    def tokenizer(self):
        """A `transformers` fast tokenizer: word level, split on white space."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {w: i for i, w in enumerate(self.vocabulary)}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=core,
            bos_token=BOS,
            eos_token=EOS,
            pad_token=PAD,
            unk_token=UNK,
            model_max_length=1024,
            clean_up_tokenization_spaces=False,
        )

    # --- segments and corpora ---
    def segment(self, rng: np.random.Generator, split: Split = "train") -> Segment:
        """One segment of the training mixture: a paragraph or a task example."""
        if rng.random() < self.P_LANGUAGE:
            para = self.grammar.paragraph(rng)
            return Segment(para.tokens, [True] * len(para.tokens))
        task = list(self.tasks.values())[sample_index(rng, self._task_probs)]
        return task.training_segment(rng, split)

    def corpus_text(self, n_segments: int, seed: int) -> str:
        """A training corpus as text, one segment per line (for inspection and tests)."""
        rng = np.random.default_rng([self.seed, seed, 0])
        return "\n".join(" ".join(self.segment(rng).tokens) for _ in range(n_segments)) + "\n"

    def _packed_rows(
        self, rng: np.random.Generator, seq_len: int, split: Split
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless (input ids, labels) rows of `seq_len`: `<bos>`, then whole segments of
        `split` while they fit, then padding. A segment that does not fit opens the next row;
        one of `seq_len` tokens or more is dropped. Labels are -100 where no loss is taken."""
        ids = {w: i for i, w in enumerate(self.vocabulary)}
        pending: Segment | None = None
        while True:
            inputs = np.full(seq_len, ids[PAD], dtype=np.int64)
            labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
            inputs[0] = ids[BOS]
            pos = 1
            while True:
                seg = pending or self.segment(rng, split)
                pending = None
                if pos + len(seg.tokens) > seq_len:
                    pending = seg if len(seg.tokens) < seq_len else None
                    break
                seg_ids = [ids[t] for t in seg.tokens]
                inputs[pos : pos + len(seg_ids)] = seg_ids
                labels[pos : pos + len(seg_ids)] = np.where(seg.loss, seg_ids, IGNORE_INDEX)
                pos += len(seg_ids)
            yield inputs, labels

    def training_batches(self, seed: int, batch_size: int, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless (input_ids, labels) batches: windows that start with <bos> and are packed
        with whole segments; the rest of a window is padding. Labels are -100 where no loss
        is taken (prompts, padding)."""
        rows = self._packed_rows(np.random.default_rng([self.seed, seed, 0]), seq_len, "train")
        while True:
            inputs, labels = zip(*(next(rows) for _ in range(batch_size)), strict=True)
            yield torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(labels))

    # --- evaluation data ---
    def probes(self, task: str, n: int, seed: int = 0, split: Split = "eval") -> list[Example]:
        """Up to `n` distinct examples of `task` from `split` (fact recall has a finite set)."""
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; tasks: {', '.join(self.tasks)}")
        t = self.tasks[task]
        if isinstance(t, FactRecallTask):
            rng = np.random.default_rng([self.seed, seed, 2])
            pool = t.all_examples(split)
            return [pool[i] for i in rng.permutation(len(pool))[:n]]
        rng = np.random.default_rng([self.seed, seed, 3, sorted(self.tasks).index(task)])
        seen, out = set(), []
        for _ in range(50 * n):
            ex = t.generate(rng, split)
            if ex.text not in seen:
                seen.add(ex.text)
                out.append(ex)
                if len(out) == n:
                    break
        return out

    def language_eval(self, n_paragraphs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Held-out background-language paragraphs, one per row (`<bos>`, the paragraph,
        padding), the mask of the tokens to score (every token of a paragraph but its
        first), and the true grammar's perplexity on exactly those tokens.

        One paragraph per row keeps the evaluation free of packing effects: when whole
        paragraphs are packed into fixed windows, where a paragraph starts says something
        about how long it can be, which a model can exploit and the grammar cannot."""
        ids = {w: i for i, w in enumerate(self.vocabulary)}
        rng = np.random.default_rng([self.seed, seed, 4])
        paragraphs = [self.grammar.paragraph(rng) for _ in range(n_paragraphs)]
        width = 1 + max(len(p.tokens) for p in paragraphs)
        rows = torch.full((n_paragraphs, width), ids[PAD], dtype=torch.long)
        score = torch.zeros((n_paragraphs, width), dtype=torch.bool)
        for i, para in enumerate(paragraphs):
            rows[i, 0] = ids[BOS]
            rows[i, 1 : 1 + len(para.tokens)] = torch.tensor([ids[t] for t in para.tokens])
            score[i, 2 : 1 + len(para.tokens)] = True
        return rows, score, entropy_floor(self.grammar, paragraphs)

    def mixture_eval(self, n_rows: int, seed: int = 0, seq_len: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out rows of the whole training mixture and the mask of the tokens to score.

        Rows are packed as `training_batches` packs its windows, but every task segment comes
        from the evaluation split, so no task example of these rows was trained on, and the
        paragraphs are fresh draws of the grammar (a short one may equal a trained one, as in
        `language_eval`). A token is scored exactly when training takes a loss on
        it (its label is not -100): the answers of task segments (for key-value recall, every
        queried value) with their `<eos>`, and every token of a paragraph, the first one
        included (also at position 1, right after `<bos>`). Never `<bos>`, prompts, markers
        or padding. The stream (suite seed, `seed`, 5) is used by nothing else: training and
        calibration draw from stream 0, probes from 2 and 3, `language_eval` from 4."""
        rows = self._packed_rows(np.random.default_rng([self.seed, seed, 5]), seq_len, "eval")
        inputs, labels = zip(*(next(rows) for _ in range(n_rows)), strict=True)
        return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(labels) != IGNORE_INDEX)

    def write_corpus(self, path: Path, n_segments: int, seed: int) -> Path:
        from .storage import atomic_write_bytes

        return atomic_write_bytes(Path(path), self.corpus_text(n_segments, seed).encode())
