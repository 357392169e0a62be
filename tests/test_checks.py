"""The exercise checkers accept right answers and name what is wrong in wrong ones, without
printing the answer. The right answers of the code exercises are the reference
implementations shown in the book's solutions, so these tests also check the solutions."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from cgclib import checks
from cgclib.book.exercises import chapters
from cgclib.checks import CHECKERS, STUBS, check
from cgclib.stats import pairs_for_power

from .conftest import ROOT

NUMERIC = {  # the exercises whose answer is numbers
    "ex-phase-groups": (2.5, 4.0),
    "ex-orth-power": (pairs_for_power(0.1), pairs_for_power(0.054)),
    "ex-family-seeds": 15,
}

SOLUTION = re.compile(r"^````\{solution\} (?P<label>\S+)\n.*?^```python\n(?P<code>.*?)^```$", re.M | re.S)


def solution_code() -> dict[str, str]:
    """The code block of every solution on the book's pages, by exercise label."""
    found = {}
    for chapter in chapters(ROOT):
        for match in SOLUTION.finditer(chapter.page.read_text()):
            found[match.group("label")] = match.group("code")
    return found


def solution_answer(label: str):
    """A code exercise's answer as its solution in the book defines it."""
    namespace: dict = {}
    exec(solution_code()[label], namespace)  # the book's own solution
    functions = [namespace[signature.split("(")[0]] for signature in STUBS[label]]
    return functions[0] if len(functions) == 1 else tuple(functions)


def _rows_lowest(scores, sparsity):
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, np.argsort(scores, axis=1)[:, : int(scores.shape[1] * sparsity)], True, axis=1)
    return mask


def _rtn_per_row(weight, bits, group_size):
    low, high = weight.min(1, keepdims=True), weight.max(1, keepdims=True)
    step = np.maximum((high - low) / (2**bits - 1), 1e-30)
    return low + np.round((weight - low) / step) * step


def _kl_consistency(a, b):
    return 1 - stats.entropy(a, b) / math.log(2)


def _owl_wrong_sign(scores, sparsity, lam):
    x = np.asarray(scores, float)
    if np.ptp(x) == 0:
        return np.full(len(x), sparsity)
    q = 2 * (x - x.min()) / np.ptp(x)
    return sparsity + lam * (q - q.mean())


def _correction_unscaled(base, a, strength):
    a = np.where(np.isnan(a), np.nanmean(a), a)
    return base + strength * (a - a.mean())


WRONG = {  # a plausible mistake for each checker, and what the message must say
    "ex-phase-groups": ((2.0, 2.0), "too low"),
    "ex-phase-wanda": (lambda w, x, s: _rows_lowest(np.abs(w), s), "Wanda weighs |W| by its input's norm"),
    "ex-phase-rtn": (_rtn_per_row, "each group of group_size weights has its own grid"),
    "ex-phase-crossing": (
        lambda s, m, r: next((s[i] for i in range(1, len(s)) if m[i] >= m[0] * (1 + r)), None),
        "interpolate linearly",
    ),
    "ex-phase-rank": (lambda m, n, s: max(1, round((1 - s) * m * n / (m + n))), "may not store more than allowed"),
    "ex-phase-storage": (lambda o, i, b, g: o * i * b + o * math.ceil(i / g) * 16, "a scale and an offset"),
    "ex-phase-obs-code": (lambda w, h, q: np.where(np.arange(len(w)) == q, 0.0, w), "move to compensate"),
    "ex-testbed-exact": (lambda lg, tg, mk: (lg.argmax(-1) == tg).all(1), "only the answer positions"),
    "ex-testbed-wilson": (
        lambda k, n: (
            k / n - 1.96 * math.sqrt(k / n * (1 - k / n) / n),
            k / n + 1.96 * math.sqrt(k / n * (1 - k / n) / n),
        ),
        "Wald's interval",
    ),
    "ex-testbed-perplexity": (lambda nll: math.exp(np.concatenate(nll).mean()), "first token"),
    "ex-family-seed-mean": (
        lambda v: (
            np.mean(v),
            np.mean(v) - 1.96 * np.std(v, ddof=1) / len(v) ** 0.5,
            np.mean(v) + 1.96 * np.std(v, ddof=1) / len(v) ** 0.5,
        ),
        "Student's t",
    ),
    "ex-family-stouffer": (
        lambda v, p: 2 * stats.norm.sf(sum(stats.norm.isf(np.asarray(p) / 2)) / len(p) ** 0.5),
        "sign of its value",
    ),
    "ex-family-holm": (lambda p: np.minimum(1, len(p) * np.asarray(p)), "not all by m"),
    "ex-family-tau2": (
        lambda y, se: float(
            (np.sum((w := 1 / np.asarray(se) ** 2) * (np.asarray(y) - np.sum(w * y) / w.sum()) ** 2) - (len(y) - 1))
            / (w.sum() - np.sum(w**2) / w.sum())
        ),
        "never negative",
    ),
    "ex-family-seeds": (14, "too low"),
    "ex-density-breadth-extremes": (lambda q, m: 1 / m, "wrong at (2, 4)"),
    "ex-density-breadth": (lambda u: math.exp(-np.sum(u[u > 0] * np.log(u[u > 0]))) / len(u), "normalise"),
    "ex-density-consistency-code": (_kl_consistency, "Jensen-Shannon"),
    "ex-density-needed": (
        lambda u, e: int(np.searchsorted(np.cumsum(np.sort(u / u.sum())), 1 - e - 1e-12) + 1),
        "most used features first",
    ),
    "ex-orth-owl-mean": (_owl_wrong_sign, "lower sparsity"),
    "ex-orth-power": ((785, 2690), "too low"),  # without Spearman's factor 1.06
    "ex-orth-outliers": (lambda w, x, m: np.mean(np.abs(w) > m * np.abs(w).mean()), "Wanda scores"),
    "ex-orth-spearman": (
        lambda x, y: np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1],
        "mean of their ranks",
    ),
    "ex-orth-power-function": (
        lambda r, n: (
            stats.norm.sf(stats.norm.ppf(0.975) - math.atanh(abs(r)) * math.sqrt(n - 3))
            + stats.norm.cdf(-stats.norm.ppf(0.975) - math.atanh(abs(r)) * math.sqrt(n - 3))
        ),
        "1.06",
    ),
    "ex-abs-budget": (lambda s, q, s_max: min(s_max - x for x in s), "wrong at"),
    "ex-abs-coefficient": (lambda d: math.log(d[0] / d[-1]) if len(d) > 1 else math.nan, "number of later blocks"),
    "ex-abs-correction": (_correction_unscaled, "scale the coefficients"),
    "ex-abs-hill-code": (lambda x, m: len(x[x >= m]) / np.log(x[x >= m] / m).sum(), "1 + n / sum"),
    "ex-structure-cross": (
        (lambda m, n, s, sigma: sigma**2 * s * (m + n), lambda m, n, s, sigma: m * n * sigma**2),
        "the factored error",
    ),
    "ex-structure-rank": (
        lambda c, s: int(np.argmax(np.cumsum(np.sort(np.linalg.eigvalsh(c))[::-1]) / np.trace(c) > s)) + 1,
        "a share reached exactly is enough",
    ),
    "ex-structure-settled": (lambda d, t, k: np.mean(d[:, k] <= t), "first layer within tau"),
}


def right_answer(label: str):
    return NUMERIC[label] if label in NUMERIC else solution_answer(label)


def test_every_checker_belongs_to_an_exercise_of_the_book():
    labels = {e.label for chapter in chapters(ROOT) for e in chapter.exercises}
    assert set(CHECKERS) <= labels
    assert set(STUBS) <= set(CHECKERS)
    assert set(CHECKERS) == set(NUMERIC) | set(STUBS) == set(WRONG)


def test_every_code_exercise_has_one_solution_with_code():
    code = solution_code()
    assert set(STUBS) <= set(code)
    for label in STUBS:
        for signature in STUBS[label]:
            assert f"def {signature}:" in code[label], f"{label}: the solution defines {signature}"


@pytest.mark.parametrize("label", sorted(CHECKERS))
def test_a_right_answer_is_accepted(label, capsys):
    assert check(label, right_answer(label))
    assert capsys.readouterr().out.startswith(f"{label}: right")


@pytest.mark.parametrize("label", sorted(CHECKERS))
def test_a_wrong_answer_is_named_without_the_answer(label, capsys, monkeypatch):
    references = []  # every value the checker's reference gave, to look for in the message
    original = checks._function

    def recording(answer, reference, cases, *args, **kwargs):
        for case in cases:
            references.append(checks._plain(reference(*case)))
        return original(answer, reference, cases, *args, **kwargs)

    monkeypatch.setattr(checks, "_function", recording)
    answer, says = WRONG[label]
    outcome = check(label, answer)
    printed = capsys.readouterr().out
    assert not outcome and says in printed
    expected = list(np.ravel(NUMERIC[label])) if label in NUMERIC else references
    for value in expected:
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and abs(value - round(value)) > 1e-3:
            assert f"{value:.3g}" not in printed, f"{label} printed its expected value"
        elif isinstance(value, (int, np.integer)) and abs(value) >= 10:
            assert str(value) not in printed, f"{label} printed its expected value"


@pytest.mark.parametrize("label", sorted(STUBS))
def test_an_unwritten_stub_is_named(label):
    stubs = tuple(lambda *args: None for _ in STUBS[label])
    outcome = checks.CHECKERS[label](stubs[0] if len(stubs) == 1 else stubs)
    assert not outcome and "returns None" in outcome.message


def test_answers_of_the_wrong_shape_are_named():
    assert "give 2 numbers" in check("ex-phase-groups", 2.5).message
    assert "give a Python function" in check("ex-density-breadth-extremes", 0.5).message
    assert "give a Python function" in check("ex-phase-wanda", np.zeros((5, 8), dtype=bool)).message
    assert "raised ZeroDivisionError" in check("ex-density-breadth-extremes", lambda q, m: q / 0).message
    transposed = check("ex-phase-wanda", lambda w, x, s: solution_answer("ex-phase-wanda")(w, x, s).T).message
    assert "it returns shape (8, 5), where the exercise asks for (5, 8)" in transposed
    flat = check("ex-testbed-exact", lambda lg, tg, mk: solution_answer("ex-testbed-exact")(lg, tg, mk)[:, None])
    assert "it returns shape (6, 1)" in flat.message
    assert (
        "it returns shape (1,), where the exercise asks for (2,)"
        in check("ex-testbed-wilson", lambda k, n: (0.5,)).message
    )
    assert "should return booleans" in check("ex-testbed-exact", lambda lg, tg, mk: np.ones(len(lg))).message
    crossing = solution_answer("ex-phase-crossing")
    never = check("ex-phase-crossing", lambda s, m, r: 0.5 if crossing(s, m, r) is None else crossing(s, m, r))
    assert "should give no value" in never.message
    with pytest.raises(KeyError, match="no checker for 'ex-nothing'"):
        check("ex-nothing", 1)


def test_an_answer_that_changes_its_inputs_does_not_change_the_reference():
    def in_place(w, hessian, q):
        w -= w[q] / np.linalg.inv(hessian)[q, q] * np.linalg.inv(hessian)[q]
        w[q] = 0.0
        return w

    assert check("ex-phase-obs-code", in_place)


def test_inputs_are_named_by_shape_not_by_value():
    message = check("ex-phase-wanda", lambda w, x, s: np.zeros(w.shape, dtype=bool)).message
    assert message.startswith("wrong at (an array of shape (5, 8), an array of shape (20, 8), 0.5)")


@pytest.mark.parametrize("label", sorted(label for label in STUBS if len(STUBS[label]) == 1))
def test_an_answer_of_the_wrong_shape_is_named_for_every_code_exercise(label):
    right = solution_answer(label)
    outcome = check(label, lambda *args: np.append(np.ravel(right(*args)), 0.0))  # one value too many
    assert not outcome
    assert "it returns shape" in outcome.message or "not a number" in outcome.message, outcome.message
