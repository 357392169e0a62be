"""The background language: English-like text from a small probabilistic grammar.

Perplexity in this book is measured on this language, alongside the capabilities. It has
number agreement, optional modifiers, transitive and intransitive verbs, embedded clauses
and a Zipfian vocabulary inside every word class, so a model has to learn real structure
to predict it. Statements of the knowledge base ("alba lives_in paris .") are sentences of
the language too: that is how facts get into the weights.

The grammar is unambiguous as a generative process: every random choice emits a distinct
token sequence, so the probability of a paragraph is the product of the probabilities of
the choices that produced it. `Paragraph.logprob` carries that number, which gives the
entropy floor a perfect model would reach (see `entropy_floor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Word classes, most frequent first (the Zipf rank is the position in the list).
NOUNS = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("child", "children"),
    ("farmer", "farmers"),
    ("river", "rivers"),
    ("house", "houses"),
    ("tree", "trees"),
    ("teacher", "teachers"),
    ("horse", "horses"),
    ("city", "cities"),
    ("boat", "boats"),
    ("garden", "gardens"),
    ("stone", "stones"),
    ("friend", "friends"),
    ("king", "kings"),
    ("queen", "queens"),
    ("doctor", "doctors"),
    ("window", "windows"),
    ("road", "roads"),
    ("mountain", "mountains"),
    ("student", "students"),
    ("baker", "bakers"),
    ("letter", "letters"),
    ("forest", "forests"),
    ("painter", "painters"),
    ("wolf", "wolves"),
    ("lamp", "lamps"),
    ("bridge", "bridges"),
    ("sailor", "sailors"),
    ("village", "villages"),
    ("song", "songs"),
    ("soldier", "soldiers"),
    ("table", "tables"),
    ("cloud", "clouds"),
    ("musician", "musicians"),
    ("island", "islands"),
    ("mirror", "mirrors"),
    ("hunter", "hunters"),
    ("candle", "candles"),
]
ADJECTIVES = [
    "old",
    "small",
    "big",
    "quiet",
    "happy",
    "red",
    "young",
    "dark",
    "bright",
    "tired",
    "green",
    "strange",
    "gentle",
    "brave",
    "cold",
    "warm",
    "tall",
    "clever",
    "lazy",
    "proud",
    "silent",
    "golden",
    "wild",
    "busy",
]
INTRANSITIVE = [
    ("sleeps", "sleep"),
    ("runs", "run"),
    ("waits", "wait"),
    ("sings", "sing"),
    ("falls", "fall"),
    ("laughs", "laugh"),
    ("shines", "shine"),
    ("moves", "move"),
    ("rests", "rest"),
    ("smiles", "smile"),
    ("swims", "swim"),
    ("dances", "dance"),
    ("grows", "grow"),
    ("listens", "listen"),
]
TRANSITIVE = [
    ("sees", "see"),
    ("likes", "like"),
    ("finds", "find"),
    ("follows", "follow"),
    ("helps", "help"),
    ("watches", "watch"),
    ("paints", "paint"),
    ("carries", "carry"),
    ("visits", "visit"),
    ("builds", "build"),
    ("remembers", "remember"),
    ("chases", "chase"),
    ("feeds", "feed"),
    ("greets", "greet"),
    ("describes", "describe"),
    ("forgets", "forget"),
]
CLAUSAL = [("says", "say"), ("thinks", "think"), ("knows", "know"), ("hopes", "hope")]
ADVERBS = ["slowly", "quickly", "often", "again", "quietly", "today", "softly", "rarely"]
PREPOSITIONS = ["near", "behind", "under", "with", "beside", "above", "across"]
DETERMINERS = {"sg": ["the", "a", "every", "this"], "pl": ["the", "some", "these", "many"]}
FUNCTION_WORDS = [".", "and", "that"]

ZIPF_EXPONENT = 1.1


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    """Probabilities proportional to 1 / (rank + 1)^exponent, rank 0 the most frequent."""
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


def sample_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """One draw from a categorical distribution (faster than `rng.choice(p=...)`)."""
    i = int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right"))
    return min(i, len(weights) - 1)


@dataclass
class Paragraph:
    """Tokens of one paragraph (ending with "<eos>") and their log-probability."""

    tokens: list[str] = field(default_factory=list)
    logprob: float = 0.0


FACT_TEMPLATES = (
    ("{e}", "{r}", "{v}", "."),
    ("{e}", "'s", "{r}", "is", "{v}", "."),
    ("{e}", "has", "{r}", "{v}", "."),
)
"""The ways a fact sentence can state a fact. Without paraphrases only the first is used.
Every template starts with the entity (so the first token of a paragraph has the same
probability either way) and the templates part at the second token, so each choice still
emits a distinct token sequence."""


class Grammar:
    """Samples paragraphs; `knowledge` supplies fact sentences (entity relation value).

    With `fact_paraphrases`, a fact sentence uses one of `FACT_TEMPLATES`, chosen uniformly:
    stating a fact in several forms is what makes a small transformer store it under the
    entity, where a question about the entity can extract it (Allen-Zhu and Li 2023, "Physics
    of Language Models: Part 3.1", knowledge augmentation)."""

    # choice probabilities of the productions
    P_PLURAL = 0.4
    P_ADJECTIVE = 0.35
    P_PP = 0.2
    P_FACT = 0.3
    P_COORD = 0.12
    P_CLAUSAL = 0.1
    P_ADVERB = 0.3
    P_MORE_SENTENCES = 0.45
    MAX_SENTENCES = 4
    VERB_KIND = {"intransitive": 0.4, "transitive": 0.6}

    def __init__(self, knowledge=None, fact_paraphrases: bool = False):
        self.knowledge = knowledge
        self.fact_templates = FACT_TEMPLATES if fact_paraphrases else FACT_TEMPLATES[:1]
        self._zipf = {
            "noun": zipf_weights(len(NOUNS)),
            "adj": zipf_weights(len(ADJECTIVES)),
            "intr": zipf_weights(len(INTRANSITIVE)),
            "tr": zipf_weights(len(TRANSITIVE)),
            "cl": zipf_weights(len(CLAUSAL)),
            "adv": zipf_weights(len(ADVERBS)),
            "prep": zipf_weights(len(PREPOSITIONS)),
            "det": zipf_weights(4, 0.8),
        }

    def vocabulary(self) -> list[str]:
        words = [w for pair in NOUNS for w in pair] + ADJECTIVES
        words += [w for pair in INTRANSITIVE + TRANSITIVE + CLAUSAL for w in pair]
        words += ADVERBS + PREPOSITIONS + DETERMINERS["sg"] + DETERMINERS["pl"] + FUNCTION_WORDS
        words += [w for template in self.fact_templates for w in template if not w.startswith("{")]
        return list(dict.fromkeys(words))

    # --- sampling with log-probability bookkeeping ---
    @staticmethod
    def _bernoulli(rng, p: float, para: Paragraph) -> bool:
        yes = bool(rng.random() < p)
        para.logprob += math.log(p if yes else 1 - p)
        return yes

    @staticmethod
    def _pick(rng, items, weights, para: Paragraph):
        i = sample_index(rng, weights)
        para.logprob += math.log(weights[i])
        return items[i]

    def _noun_phrase(self, rng, para: Paragraph, allow_pp: bool) -> str:
        number = "pl" if self._bernoulli(rng, self.P_PLURAL, para) else "sg"
        para.tokens.append(self._pick(rng, DETERMINERS[number], self._zipf["det"], para))
        if self._bernoulli(rng, self.P_ADJECTIVE, para):
            para.tokens.append(self._pick(rng, ADJECTIVES, self._zipf["adj"], para))
        noun = self._pick(rng, NOUNS, self._zipf["noun"], para)
        para.tokens.append(noun[0] if number == "sg" else noun[1])
        if allow_pp and self._bernoulli(rng, self.P_PP, para):
            para.tokens.append(self._pick(rng, PREPOSITIONS, self._zipf["prep"], para))
            self._noun_phrase(rng, para, allow_pp=False)
        return number

    def _verb_phrase(self, rng, para: Paragraph, number: str, depth: int) -> None:
        form = 0 if number == "sg" else 1
        if depth == 0 and self._bernoulli(rng, self.P_CLAUSAL, para):
            para.tokens.append(self._pick(rng, CLAUSAL, self._zipf["cl"], para)[form])
            para.tokens.append("that")
            self._clause(rng, para, depth + 1)
            return
        kinds = list(self.VERB_KIND)
        kind = self._pick(rng, kinds, np.array([self.VERB_KIND[k] for k in kinds]), para)
        if kind == "intransitive":
            para.tokens.append(self._pick(rng, INTRANSITIVE, self._zipf["intr"], para)[form])
        else:
            para.tokens.append(self._pick(rng, TRANSITIVE, self._zipf["tr"], para)[form])
            self._noun_phrase(rng, para, allow_pp=True)
        if self._bernoulli(rng, self.P_ADVERB, para):
            para.tokens.append(self._pick(rng, ADVERBS, self._zipf["adv"], para))

    def _clause(self, rng, para: Paragraph, depth: int) -> None:
        number = self._noun_phrase(rng, para, allow_pp=True)
        self._verb_phrase(rng, para, number, depth)

    def _sentence(self, rng, para: Paragraph) -> None:
        if self.knowledge is not None and self._bernoulli(rng, self.P_FACT, para):
            entity, relation, value = self.knowledge.sample_fact(rng, para)
            template = self.fact_templates[0]
            if len(self.fact_templates) > 1:
                uniform = np.full(len(self.fact_templates), 1 / len(self.fact_templates))
                template = self._pick(rng, self.fact_templates, uniform, para)
            para.tokens += [w.format(e=entity, r=relation, v=value) for w in template]
            return
        self._clause(rng, para, depth=0)
        if self._bernoulli(rng, self.P_COORD, para):
            para.tokens.append("and")
            self._clause(rng, para, depth=1)
        para.tokens.append(".")

    def paragraph(self, rng: np.random.Generator) -> Paragraph:
        """One to MAX_SENTENCES sentences followed by "<eos>"."""
        para = Paragraph()
        self._sentence(rng, para)
        for _ in range(self.MAX_SENTENCES - 1):
            if not self._bernoulli(rng, self.P_MORE_SENTENCES, para):
                break
            self._sentence(rng, para)
        para.tokens.append("<eos>")
        return para

    def first_token_logprob(self, token: str) -> float:
        """Log-probability that a paragraph starts with `token` (summed over the
        derivations that can start with it: "the" is both singular and plural)."""
        p_fact = self.P_FACT if self.knowledge is not None else 0.0
        if self.knowledge is not None and token in self.knowledge.entities:
            return math.log(p_fact / len(self.knowledge.entities))
        p = 0.0
        for number, p_number in (("sg", 1 - self.P_PLURAL), ("pl", self.P_PLURAL)):
            dets = DETERMINERS[number]
            if token in dets:
                p += p_number * self._zipf["det"][dets.index(token)]
        if p == 0.0:
            raise ValueError(f"no paragraph starts with {token!r}")
        return math.log((1 - p_fact) * p)


def entropy_floor(grammar: Grammar, paragraphs: list[Paragraph]) -> float:
    """Perplexity of the true grammar on these paragraphs, every token after the first
    predicted from the paragraph so far: by Gibbs' inequality no model can do better in
    expectation on the same tokens. (The first token is left out because a model that was
    trained on a mixture of segment types cannot know that a paragraph follows.)"""
    n_tokens = sum(len(p.tokens) - 1 for p in paragraphs)
    nll = -sum(p.logprob - grammar.first_token_logprob(p.tokens[0]) for p in paragraphs)
    return math.exp(nll / n_tokens)
