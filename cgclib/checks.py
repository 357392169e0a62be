"""Self-checks for the exercises with a numeric or formula answer.

A student calls `check(label, answer)` from a notebook, with the exercise's label and an
answer: numbers, or a Python function for an exercise whose answer is a formula. The check
says whether the answer is right or what is wrong with it (which part, in which direction,
at which inputs), without printing the answer itself. Formula answers are compared with the
reference on a fixed set of inputs, edge cases included.

    from cgclib.checks import check
    check("ex-phase-groups", (2.5, 4.0))
    check("ex-density-breadth-extremes", lambda q, m: q / m)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import pairs_for_power


@dataclass(frozen=True)
class Outcome:
    right: bool
    message: str

    def __bool__(self) -> bool:
        return self.right


def _close(value: Any, expected: float, rel: float) -> bool:
    try:
        return math.isfinite(float(value)) and abs(float(value) - expected) <= rel * abs(expected)
    except (TypeError, ValueError):
        return False


def _numbers(answer: Any, expected: list[float], names: list[str], rel: float, hints: list[str]) -> Outcome:
    """Each number of `answer` against `expected`, named; direction and a hint when wrong."""
    values = list(answer) if isinstance(answer, (list, tuple)) else [answer]
    if len(values) != len(expected):
        return Outcome(False, f"give {len(expected)} numbers: {', '.join(names)}")
    wrong = []
    for value, target, name, hint in zip(values, expected, names, hints, strict=True):
        if _close(value, target, rel):
            continue
        try:
            direction = "too high" if float(value) > target else "too low"
        except (TypeError, ValueError):
            direction = "not a number"
        wrong.append(f"{name} is {direction}" + (f" ({hint})" if hint else ""))
    return Outcome(not wrong, "right" if not wrong else "; ".join(wrong))


def _formula(answer: Any, reference: Callable[..., float], cases: list[tuple], rel: float = 1e-6) -> Outcome:
    """A function `answer` against `reference` on `cases`; the first case that differs is named."""
    if not callable(answer):
        return Outcome(False, "give a Python function of the exercise's variables")
    for case in cases:
        try:
            value = float(answer(*case))
        except Exception as exc:  # a student's function may raise anything
            return Outcome(False, f"your function raised {type(exc).__name__} at {case}: {exc}")
        target = reference(*case)
        if not (math.isfinite(value) and abs(value - target) <= rel * max(1.0, abs(target))):
            return Outcome(False, f"wrong at {case}: yours gives {value:.6g}")
    return Outcome(True, f"right on all {len(cases)} cases")


def _phase_groups(answer: Any) -> Outcome:
    hint = "each group of g weights also stores a 16-bit scale and a 16-bit offset"
    return _numbers(answer, [2 + 32 / 64, 2 + 32 / 16], ["bits per weight at g = 64", "at g = 16"], 1e-9, [hint, hint])


def _breadth_extremes(answer: Any) -> Outcome:
    cases = [(q, m) for m in (1, 4, 16, 100) for q in sorted({1, max(1, m // 2), m})]
    return _formula(answer, lambda q, m: q / m, cases)


def _orth_power(answer: Any) -> Outcome:
    expected = [float(pairs_for_power(0.1)), float(pairs_for_power(0.054))]
    hint = "the Spearman variance factor 1.06 and the n - 3 of Fisher's z both matter"
    return _numbers(answer, expected, ["heads for rho = 0.1", "heads for rho = 0.054"], 0.01, [hint, hint])


def _budget_beta(s, q, s_max) -> float:
    s, q = np.asarray(s, float), np.asarray(q, float)
    d = q - q.mean()
    limits = [(s_max - s[i]) / d[i] if d[i] > 0 else s[i] / -d[i] for i in range(len(s)) if d[i] != 0]
    return float(min(limits)) if limits else math.inf


def _abs_budget(answer: Any) -> Outcome:
    rng = np.random.default_rng(0)
    cases = [
        (tuple(rng.uniform(0.3, 0.7, 6)), tuple(rng.uniform(0, 1, 6)), 0.95),
        ((0.5, 0.5, 0.5), (0.0, 1.0, 2.0), 0.9),
        ((0.1, 0.8, 0.5, 0.5), (3.0, 0.5, 1.0, 1.5), 0.95),
    ]
    return _formula(answer, _budget_beta, cases)


def _structure_cross(answer: Any) -> Outcome:
    if not (isinstance(answer, (list, tuple)) and len(answer) == 2):
        return Outcome(False, "give two functions: factored(m, n, s, sigma) and direct(m, n, sigma)")
    factored, direct = answer
    cases = [(8, 8, 1.0, 0.1), (64, 16, 4.0, 0.05), (100, 300, 0.5, 0.3), (1, 1, 2.0, 1.0)]
    first = _formula(factored, lambda m, n, s, sigma: sigma**2 * s * (m + n) + m * n * sigma**4, cases)
    if not first:
        return Outcome(False, f"the factored error: {first.message}")
    second = _formula(direct, lambda m, n, s, sigma: m * n * sigma**2, cases)
    if not second:
        return Outcome(False, f"the direct error (it takes m, n, s, sigma and ignores s): {second.message}")
    return Outcome(True, "right: both expected errors")


CHECKERS: dict[str, Callable[[Any], Outcome]] = {
    "ex-phase-groups": _phase_groups,
    "ex-density-breadth-extremes": _breadth_extremes,
    "ex-orth-power": _orth_power,
    "ex-abs-budget": _abs_budget,
    "ex-structure-cross": _structure_cross,
}


def check(label: str, answer: Any) -> Outcome:
    """Check `answer` to exercise `label`; print and return the outcome."""
    if label not in CHECKERS:
        raise KeyError(f"no checker for {label!r}; exercises with one: {', '.join(CHECKERS)}")
    outcome = CHECKERS[label](answer)
    print(f"{label}: {outcome.message}")
    return outcome
