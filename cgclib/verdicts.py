"""Verdict rules: how a claim is judged from our measurement.

A rule is stated before the data are seen, in words (`describe`) and as code (`judge`).
The ledger stores both, so a reader can check that the verdict follows from the numbers.
Every rule returns one of three verdicts:

- ``holds``: the data support the claim under the rule;
- ``fails``: the data contradict it;
- ``inconclusive``: the data are compatible with both (typically a confidence interval
  that straddles the boundary the rule draws), or the quantity cannot be estimated from
  the data at all (a measurement whose value is None, e.g. a critical ratio that a curve of
  too few points cannot identify).

One more outcome is not a verdict: ``descriptive``, for a record that reports a number
beside a paper's without testing it, because the two do not measure the same object
(`Describe`).

Every rule class has a test in which it fails on planted data (tests/test_verdicts.py).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
DESCRIPTIVE = "descriptive"
OUTCOMES = (*VERDICTS, DESCRIPTIVE)  # what a ledger record may carry


class RuleError(ValueError):
    """A rule that cannot be applied to the measurement it was given."""


@dataclass(frozen=True)
class Measurement:
    """What a rule looks at: our value (None: not estimable from the data), its 95% interval
    and p-value where they exist."""

    value: float | None
    ci95: tuple[float, float] | None = None
    p: float | None = None

    def number(self, rule: str) -> float:
        """The value, which rule `rule` needs (a value that could not be estimated has no
        judgement: `Rule.verdict` makes it inconclusive before any rule sees it)."""
        if self.value is None:
            raise RuleError(f"rule {rule} needs a value, and the quantity was not estimable")
        return self.value

    def interval(self, rule: str) -> tuple[float, float]:
        """The 95% CI, which rule `rule` needs."""
        if self.ci95 is None:
            raise RuleError(f"rule {rule} needs a 95% confidence interval, and none was given")
        return self.ci95


class Rule(ABC):
    """A test that turns a measurement into a verdict."""

    @abstractmethod
    def describe(self) -> str:
        """The rule in words, as printed in the ledger."""

    @abstractmethod
    def judge(self, m: Measurement) -> str:
        """The verdict for measurement `m` (whose value is a number)."""

    def verdict(self, m: Measurement) -> str:
        """The verdict for `m`: inconclusive when the quantity could not be estimated,
        else the rule's judgement."""
        return INCONCLUSIVE if m.value is None else self.judge(m)

    @property
    def is_significance_test(self) -> bool:
        """Whether the verdict rests on a p-value (and so needs a multiplicity correction)."""
        return False


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class InRange(Rule):
    """The claim is a range [low, high] for the quantity.

    On the point value: holds inside, fails outside. With ``use_ci=True``: holds when
    the whole CI lies inside the range, fails when it lies wholly outside, and is
    inconclusive when it straddles an end.
    """

    low: float
    high: float
    use_ci: bool = False

    def __post_init__(self):
        if not self.low <= self.high:
            raise RuleError(f"InRange needs low <= high, got [{self.low}, {self.high}]")

    def describe(self) -> str:
        what = "the 95% CI lies" if self.use_ci else "our value lies"
        return f"{what} within [{_fmt(self.low)}, {_fmt(self.high)}]"

    def judge(self, m: Measurement) -> str:
        if not self.use_ci:
            return HOLDS if self.low <= m.number("InRange") <= self.high else FAILS
        lo, hi = m.interval("InRange(use_ci=True)")
        if self.low <= lo and hi <= self.high:
            return HOLDS
        if hi < self.low or lo > self.high:
            return FAILS
        return INCONCLUSIVE


@dataclass(frozen=True)
class Overlaps(Rule):
    """Our 95% CI shares at least one point with the claimed range [low, high]; fails when
    the two are disjoint. Weaker than `InRange(use_ci=True)`: use it only where a wide
    interval is no evidence against the claim."""

    low: float
    high: float

    def __post_init__(self):
        if not self.low <= self.high:
            raise RuleError(f"Overlaps needs low <= high, got [{self.low}, {self.high}]")

    def describe(self) -> str:
        return f"our 95% CI overlaps the claimed range [{_fmt(self.low)}, {_fmt(self.high)}]"

    def judge(self, m: Measurement) -> str:
        lo, hi = m.interval("Overlaps")
        return HOLDS if lo <= self.high and hi >= self.low else FAILS


@dataclass(frozen=True)
class Equivalence(Rule):
    """Equivalence to zero within a margin (the confidence-interval form of TOST).

    Holds when the 95% CI lies inside (-margin, margin): the effect is shown to be
    smaller than the margin. Fails when the CI lies wholly outside it: the effect is shown
    to be at least the margin. Inconclusive otherwise: too little data to tell.
    """

    margin: float

    def __post_init__(self):
        if not self.margin > 0:
            raise RuleError(f"Equivalence needs a positive margin, got {self.margin}")

    def describe(self) -> str:
        return f"the 95% CI lies within (-{_fmt(self.margin)}, {_fmt(self.margin)}) (equivalence test)"

    def judge(self, m: Measurement) -> str:
        lo, hi = m.interval("Equivalence")
        if -self.margin < lo and hi < self.margin:
            return HOLDS
        if lo >= self.margin or hi <= -self.margin:
            return FAILS
        return INCONCLUSIVE


@dataclass(frozen=True)
class Exceeds(Rule):
    """The claim is that the quantity is above (``direction="greater"``) or below
    (``"less"``) a threshold. With a CI: holds when the whole CI is on the claimed side,
    fails when the whole CI is on the other side, inconclusive otherwise. Without a CI
    the point value decides."""

    threshold: float
    direction: str = "greater"

    def __post_init__(self):
        if self.direction not in ("greater", "less"):
            raise RuleError(f"Exceeds direction must be 'greater' or 'less', got {self.direction!r}")

    def describe(self) -> str:
        side = ">" if self.direction == "greater" else "<"
        return f"our value is {side} {_fmt(self.threshold)} (judged on the 95% CI when there is one)"

    def judge(self, m: Measurement) -> str:
        lo, hi = m.ci95 if m.ci95 is not None else (m.number("Exceeds"), m.number("Exceeds"))
        if self.direction == "less":
            lo, hi = -hi, -lo
            t = -self.threshold
        else:
            t = self.threshold
        if lo > t:
            return HOLDS
        if hi <= t:
            return FAILS
        return INCONCLUSIVE


@dataclass(frozen=True)
class SignificantSign(Rule):
    """The claim is an effect of a given sign. Holds when p < alpha and the value has the
    claimed sign; fails when p < alpha with the opposite sign; inconclusive when p >= alpha
    (no significant effect either way)."""

    sign: int
    alpha: float = 0.05

    def __post_init__(self):
        if self.sign not in (-1, 1):
            raise RuleError(f"SignificantSign sign must be +1 or -1, got {self.sign}")
        if not 0 < self.alpha < 1:
            raise RuleError(f"alpha must lie in (0, 1), got {self.alpha}")

    def describe(self) -> str:
        word = "positive" if self.sign > 0 else "negative"
        return f"p < {_fmt(self.alpha)} and the effect is {word}"

    def judge(self, m: Measurement) -> str:
        if m.p is None:
            raise RuleError("SignificantSign needs a p-value, and none was given")
        if m.p >= self.alpha:
            return INCONCLUSIVE
        return HOLDS if math.copysign(1, m.number("SignificantSign")) == self.sign else FAILS

    @property
    def is_significance_test(self) -> bool:
        return True


@dataclass(frozen=True)
class WithinTolerance(Rule):
    """Our value reproduces a target within a relative tolerance:
    holds when abs(ours - target) <= rel_tol * abs(target), fails otherwise."""

    target: float
    rel_tol: float

    def __post_init__(self):
        if not self.rel_tol > 0:
            raise RuleError(f"WithinTolerance needs a positive rel_tol, got {self.rel_tol}")

    def describe(self) -> str:
        return f"|ours - {_fmt(self.target)}| <= {self.rel_tol:.0%} of {_fmt(abs(self.target))}"

    def judge(self, m: Measurement) -> str:
        value = m.number("WithinTolerance")
        return HOLDS if abs(value - self.target) <= self.rel_tol * abs(self.target) else FAILS


@dataclass(frozen=True)
class Describe(Rule):
    """No test: our number is shown beside the paper's, which measures a different object
    (another model, another definition); `reason` says why they cannot be compared."""

    reason: str

    def __post_init__(self):
        if not self.reason.strip():
            raise RuleError("Describe needs the reason why the numbers are not compared")

    def describe(self) -> str:
        return f"descriptive, no verdict: {self.reason}"

    def judge(self, m: Measurement) -> str:
        return DESCRIPTIVE

    def verdict(self, m: Measurement) -> str:
        return DESCRIPTIVE


def holm_adjusted(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (keys: claim ids): the adjusted
    p-values, each compared with the same alpha, control the chance of any false rejection
    in the family at alpha under any dependence between the tests."""
    bad = {k: p for k, p in p_values.items() if not 0.0 <= p <= 1.0}  # NaN included
    if bad:
        raise ValueError(f"p-values must lie in [0, 1], got {bad}")
    order = sorted(p_values, key=p_values.__getitem__)
    m = len(order)
    adjusted, running = {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        adjusted[key] = running
    return adjusted
