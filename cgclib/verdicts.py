"""Verdict rules: how a claim is judged from our measurement.

A rule is stated before the data are seen, in words (`describe`) and as code (`judge`).
The ledger stores both, so a reader can check that the verdict follows from the numbers.
Every rule returns one of three verdicts:

- ``holds``: the data support the claim under the rule;
- ``fails``: the data contradict it;
- ``inconclusive``: the data are compatible with both (typically a confidence interval
  that straddles the boundary the rule draws).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)


class RuleError(ValueError):
    """A rule that cannot be applied to the measurement it was given."""


@dataclass(frozen=True)
class Measurement:
    """What a rule looks at: our value, its 95% interval and p-value where they exist."""

    value: float
    ci95: tuple[float, float] | None = None
    p: float | None = None
    bracket: tuple[float, float] | None = None

    def interval(self, rule: str, kind: str = "ci95") -> tuple[float, float]:
        """The 95% CI, or with kind="bracket" the interval between the two measured grid
        points that enclose an estimate (for quantities located on a grid)."""
        interval = self.bracket if kind == "bracket" else self.ci95
        if interval is None:
            what = "bracketing interval" if kind == "bracket" else "95% confidence interval"
            raise RuleError(f"rule {rule} needs a {what}, and none was given")
        return interval


class Rule(ABC):
    """A test that turns a measurement into a verdict."""

    @abstractmethod
    def describe(self) -> str:
        """The rule in words, as printed in the ledger."""

    @abstractmethod
    def judge(self, m: Measurement) -> str:
        """The verdict for measurement `m`."""


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
            return HOLDS if self.low <= m.value <= self.high else FAILS
        lo, hi = m.interval("InRange(use_ci=True)")
        if self.low <= lo and hi <= self.high:
            return HOLDS
        if hi < self.low or lo > self.high:
            return FAILS
        return INCONCLUSIVE


@dataclass(frozen=True)
class Overlaps(Rule):
    """Our interval shares at least one point with the claimed range [low, high]; fails
    when the two are disjoint. ``on="ci95"`` uses the 95% CI; ``on="bracket"`` the grid
    interval that encloses an estimate located on a grid of measured points (the data
    cannot place it more finely than that)."""

    low: float
    high: float
    on: str = "ci95"

    def __post_init__(self):
        if self.on not in ("ci95", "bracket"):
            raise RuleError(f"Overlaps works on 'ci95' or 'bracket', got {self.on!r}")

    def describe(self) -> str:
        what = "95% CI" if self.on == "ci95" else "bracketing grid interval"
        return f"our {what} overlaps the claimed range [{_fmt(self.low)}, {_fmt(self.high)}]"

    def judge(self, m: Measurement) -> str:
        lo, hi = m.interval("Overlaps", self.on)
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
        lo, hi = m.ci95 if m.ci95 is not None else (m.value, m.value)
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
        return HOLDS if math.copysign(1, m.value) == self.sign else FAILS


@dataclass(frozen=True)
class WithinTolerance(Rule):
    """Our value reproduces a target within a relative tolerance:
    holds when |ours - target| <= rel_tol * |target|, fails otherwise."""

    target: float
    rel_tol: float

    def __post_init__(self):
        if not self.rel_tol > 0:
            raise RuleError(f"WithinTolerance needs a positive rel_tol, got {self.rel_tol}")

    def describe(self) -> str:
        return f"|ours - {_fmt(self.target)}| <= {self.rel_tol:.0%} of {_fmt(abs(self.target))}"

    def judge(self, m: Measurement) -> str:
        return HOLDS if abs(m.value - self.target) <= self.rel_tol * abs(self.target) else FAILS
