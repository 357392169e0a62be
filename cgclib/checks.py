"""Self-checks for the exercises with a numeric, formula or code answer.

A student calls `check(label, answer)` from a notebook, with the exercise's label and an
answer: numbers, or a Python function for an exercise whose answer is a formula or a piece of
code. The check says whether the answer is right or what is wrong with it (which part, in which
direction, at which inputs), without printing the answer itself. Functions are compared with a
reference on fixed, seeded inputs, edge cases included; the reference is the library's own
function wherever the book's code has one, so an exercise checks the code the chapters run.
Inputs are named in messages by their shapes, and a known mistake that reproduces a wrong
answer is named with a hint.

`STUBS` lists the code exercises: the signature of each function the answer defines, which
the student edition (`cgclib.book.student`) turns into stubs to fill in.

    from cgclib.checks import check
    check("ex-phase-groups", (2.5, 4.0))
    check("ex-density-breadth-extremes", lambda q, m: q / m)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as sps
import torch

from .absorption import absorption_coefficients
from .allocation import MAX_BLOCK_SPARSITY, absorption_corrected, spread
from .density import split_half_consistency
from .early_exit import settled_share
from .evaluation import PerplexityResult
from .low_rank import kept_rank
from .pruning import layer_mask, row_mask, wanda_scores
from .quantization import quantize_groups, round_to_levels, storage_bits
from .redundancy import breadth_of, features_needed
from .replication import TAU2_ESTIMATORS, SeedResult, seed_mean, stouffer
from .stats import correlation_power, pairs_for_power, wilson_interval
from .subspaces import rank_for_variance
from .verdicts import holm_adjusted


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


def _plain(x: Any) -> Any:
    """An answer as NumPy data: tensors and sequences become arrays, numbers stay numbers."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and all(not callable(v) for v in x):
        return np.asarray(x)
    return x


def _describe(case: tuple) -> str:
    """A case's inputs for a message: arrays by their shape, never their values."""
    parts = []
    for v in case:
        if isinstance(v, np.ndarray):
            parts.append(f"an array of shape {v.shape}")
        elif isinstance(v, (list, tuple)) and any(isinstance(x, np.ndarray) for x in v):
            parts.append(f"a list of {len(v)} arrays")
        elif isinstance(v, (list, tuple)) and len(v) > 4:
            parts.append(f"a sequence of {len(v)} values")
        else:
            parts.append(repr(v))
    return "(" + ", ".join(parts) + ")"


def _difference(got: Any, want: Any, rel: float) -> str | None:
    """How `got` differs from `want` (None: it does not), without saying what `want` is."""
    got, want = _plain(got), _plain(want)
    if want is None or (isinstance(want, float) and math.isnan(want)):
        missing = got is None or (isinstance(got, float) and math.isnan(got))
        return None if missing else "it should give no value (None or nan) there"
    if got is None:
        return "it returns None"
    if isinstance(want, np.ndarray):
        got = np.asarray(got)
        if got.shape != want.shape:
            return f"it returns shape {got.shape}, where the exercise asks for {want.shape}"
        if want.dtype == bool:
            if got.dtype != bool:
                return "it should return booleans"
            wrong = got != want
        else:
            try:
                got = got.astype(float)
            except (TypeError, ValueError):
                return "it should return numbers"
            wrong = ~np.isclose(got, want, rtol=rel, atol=rel * max(1.0, float(np.abs(want).max(initial=0))))
        if not wrong.any():
            return None
        first = tuple(int(i) for i in np.argwhere(wrong)[0])
        where = first[0] if len(first) == 1 else first
        if want.dtype == bool:
            return f"{int(wrong.sum())} of {want.size} entries are wrong, the first at index {where}"
        side = "too high" if got[first] > want[first] else "too low"
        return f"{int(wrong.sum())} of {want.size} entries are wrong; at index {where} yours is {side}"
    try:
        value = float(got)
    except (TypeError, ValueError):
        return f"it returns {type(got).__name__}, not a number"
    if math.isfinite(value) and abs(value - float(want)) <= rel * max(1.0, abs(float(want))):
        return None
    return "yours is " + ("not finite" if not math.isfinite(value) else "too high" if value > want else "too low")


def _function(
    answer: Any,
    reference: Callable[..., Any],
    cases: list[tuple],
    mistakes: tuple[tuple[Callable[..., Any], str], ...] = (),
    rel: float = 1e-6,
) -> Outcome:
    """A function `answer` against `reference` on `cases`, each given as fresh copies (an
    answer that changes its inputs does not change the next). The first case that differs is
    named by its inputs' shapes and values; a known mistake that gives the same result is named
    with a hint."""
    if not callable(answer):
        return Outcome(False, "give a Python function (see the signature in the exercise)")
    for case in cases:
        try:
            got = answer(*copy.deepcopy(case))
        except Exception as exc:  # a student's function may raise anything
            return Outcome(False, f"your function raised {type(exc).__name__} at {_describe(case)}: {exc}")
        want = reference(*copy.deepcopy(case))
        if got is None and want is not None:
            return Outcome(False, "your function returns None: write its body, and return the result")
        problem = _difference(got, want, rel)
        if problem is None:
            continue
        for mistake, hint in mistakes:
            try:
                if _difference(got, mistake(*copy.deepcopy(case)), rel) is None:
                    return Outcome(False, f"wrong at {_describe(case)}: {problem}; {hint}")
            except Exception:  # a mistake that does not apply to this case
                continue
        return Outcome(False, f"wrong at {_describe(case)}: {problem}")
    return Outcome(True, f"right on all {len(cases)} cases")


def _phase_groups(answer: Any) -> Outcome:
    hint = "each group of g weights also stores a 16-bit scale and a 16-bit offset"
    return _numbers(answer, [2 + 32 / 64, 2 + 32 / 16], ["bits per weight at g = 64", "at g = 16"], 1e-9, [hint, hint])


def _breadth_extremes(answer: Any) -> Outcome:
    cases = [(q, m) for m in (1, 4, 16, 100) for q in sorted({1, max(1, m // 2), m})]
    return _function(answer, lambda q, m: q / m, cases)


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
    return _function(answer, _budget_beta, cases)


def _structure_cross(answer: Any) -> Outcome:
    if not (isinstance(answer, (list, tuple)) and len(answer) == 2):
        return Outcome(False, "give two functions: factored(m, n, s, sigma) and direct(m, n, sigma)")
    factored, direct = answer
    cases = [(8, 8, 1.0, 0.1), (64, 16, 4.0, 0.05), (100, 300, 0.5, 0.3), (1, 1, 2.0, 1.0)]
    first = _function(factored, lambda m, n, s, sigma: sigma**2 * s * (m + n) + m * n * sigma**4, cases)
    if not first:
        return Outcome(False, f"the factored error: {first.message}")
    second = _function(direct, lambda m, n, s, sigma: m * n * sigma**2, cases)
    if not second:
        return Outcome(False, f"the direct error (it takes m, n, s, sigma and ignores s): {second.message}")
    return Outcome(True, "right: both expected errors")


# Phase transitions


def _wanda_mask(weight, x, sparsity):
    scores = wanda_scores(torch.as_tensor(weight), torch.as_tensor(x).square().sum(0))
    return row_mask(scores, sparsity).numpy()


def _phase_wanda(answer: Any) -> Outcome:
    rng = np.random.default_rng(1)
    cases = [
        (rng.normal(size=(5, 8)), rng.normal(size=(20, 8)) * rng.uniform(0.1, 5, 8), s) for s in (0.5, 0.25, 0.0, 0.875)
    ]
    cases.append((rng.normal(size=(3, 4)), rng.normal(size=(2, 4)) * [0.1, 1, 10, 3], 0.5))
    mistakes = (
        (lambda w, x, s: row_mask(torch.as_tensor(np.abs(w)), s).numpy(), "Wanda weighs |W| by its input's norm"),
        (
            lambda w, x, s: layer_mask(wanda_scores(torch.as_tensor(w), torch.as_tensor(x).square().sum(0)), s).numpy(),
            "Wanda compares the weights of each output row among themselves, not across the layer",
        ),
    )
    return _function(answer, _wanda_mask, cases, mistakes)


def _rtn(weight, bits, group_size):
    return quantize_groups(torch.as_tensor(weight), bits, group_size).double().numpy()


def _phase_rtn(answer: Any) -> Outcome:
    rng = np.random.default_rng(2)
    constant = rng.normal(size=(3, 8))
    constant[1] = 0.5
    cases = [(rng.normal(size=(4, 16)), 2, 8), (rng.normal(size=(3, 10)), 3, 4), (rng.normal(size=(2, 8)), 1, 8)]
    cases.append((constant, 2, 4))
    mistakes = (
        (lambda w, b, g: _rtn(w, b, w.shape[1]), "each group of group_size weights has its own grid, not each row"),
        (
            lambda w, b, g: round_to_levels(torch.as_tensor(w), 2**b + 1, g).double().numpy(),
            "b bits give 2^b levels, so 2^b - 1 steps between the minimum and the maximum",
        ),
    )
    return _function(answer, _rtn, cases, mistakes, rel=1e-5)


def _crossing(ratios, metric, r):
    s, m = np.asarray(ratios, float), np.asarray(metric, float)
    target = m[0] * (1 + r)
    above = np.flatnonzero(m[1:] >= target)
    if not len(above):
        return None
    i = int(above[0]) + 1
    return float(s[i - 1] + (target - m[i - 1]) / (m[i] - m[i - 1]) * (s[i] - s[i - 1]))


def _grid_crossing(ratios, metric, r):
    above = np.flatnonzero(np.asarray(metric[1:]) >= metric[0] * (1 + r))
    return float(ratios[int(above[0]) + 1]) if len(above) else None


def _phase_crossing(answer: Any) -> Outcome:
    grid = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    cases = [
        (grid, [10.0, 10.1, 10.3, 10.6, 11.5, 14.0, 30.0, 90.0], 0.1),
        (grid, [10.0, 10.1, 10.3, 10.6, 11.5, 14.0, 30.0, 90.0], 1.0),
        (grid, [5.0, 5.2, 5.9, 5.4, 6.0, 7.0, 9.0, 20.0], 0.15),  # crosses, falls back, crosses again
        (grid, [5.0, 5.0, 5.1, 5.1, 5.2, 5.2, 5.3, 5.4], 0.1),  # never
        ([0.0, 0.5, 0.6, 0.7], [2.0, 2.0, 2.4, 3.0], 0.2),  # exactly on a grid point
    ]
    mistakes = (
        (_grid_crossing, "interpolate linearly between the two grid points around the crossing"),
        (
            lambda s, m, r: _crossing(s, np.asarray(m) - m[0] * r + r, r),
            "the threshold is relative: (1 + r) times the dense model's value",
        ),
    )
    return _function(answer, _crossing, cases, mistakes)


def _phase_rank(answer: Any) -> Outcome:
    cases = [(128, 128, 0.5), (128, 512, 0.3), (64, 64, 0.0), (10, 1000, 0.0), (100, 100, 0.99), (3, 400, 0.2)]
    mistakes = (
        (lambda m, n, s: max(1, round((1 - s) * m * n / (m + n))), "the factors may not store more than allowed"),
        (lambda m, n, s: int((1 - s) * m * n / (m + n) + 1e-9), "a factorisation keeps at least rank 1"),
        (lambda m, n, s: max(1, int((1 - s) * min(m, n))), "count the parameters of both factors, k (m + n)"),
    )
    return _function(answer, lambda m, n, s: kept_rank((m, n), s), cases, mistakes)


def _phase_storage(answer: Any) -> Outcome:
    cases = [(768, 768, 4, 64), (10, 100, 2, 64), (1, 1, 1, 128), (4, 130, 3, 64), (3, 7, 8, 7)]
    mistakes = (
        (
            lambda o, i, b, g: o * i * b + o * (i // g) * 32,
            "a row whose length does not divide by g ends in a shorter group, which has its scale and offset too",
        ),
        (lambda o, i, b, g: o * i * b + o * -(-i // g) * 16, "each group stores a scale and an offset"),
        (lambda o, i, b, g: o * i * b, "each group also stores its 16-bit scale and offset"),
    )
    return _function(answer, storage_bits, cases, mistakes)


def _obs_remove(w, h, q):
    hinv = np.linalg.inv(np.asarray(h, float))
    new = np.asarray(w, float) - w[q] / hinv[q, q] * hinv[q]
    new[q] = 0.0
    return new


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(3 * n, n)) @ rng.normal(size=(n, n))
    return x.T @ x


def _phase_obs_code(answer: Any) -> Outcome:
    rng = np.random.default_rng(3)
    cases = [
        (np.array([1.0, 2.0]), np.array([[2.0, 1.0], [1.0, 3.0]]), 0),
        (rng.normal(size=4), _spd(rng, 4), 1),
        (rng.normal(size=5), _spd(rng, 5), 4),
        (rng.normal(size=3), np.diag([1.0, 2.0, 3.0]), 2),
    ]
    mistakes = (
        (lambda w, h, q: np.where(np.arange(len(w)) == q, 0.0, w), "the other weights must move to compensate"),
        (
            lambda w, h, q: _obs_remove(w, np.linalg.inv(h), q),
            "the update uses the inverse Hessian's row q, not the Hessian's",
        ),
    )
    return _function(answer, _obs_remove, cases, mistakes)


# The test bed


def _exact_match(logits, targets, mask):
    """As `cgclib.evaluation.score_rows` scores a batch: greedy token right at every answer position."""
    return ((np.asarray(logits).argmax(-1) == targets) | ~np.asarray(mask)).all(1)


def _testbed_exact(answer: Any) -> Outcome:
    rng = np.random.default_rng(4)
    cases = []
    for n, t, v in ((6, 5, 7), (8, 4, 3), (1, 3, 5)):
        logits = rng.normal(size=(n, t, v))
        targets = logits.argmax(-1)
        flip = rng.random((n, t)) < 0.15
        targets = np.where(flip, (targets + 1) % v, targets)
        mask = np.zeros((n, t), dtype=bool)
        mask[:, t // 2 :] = True
        cases.append((logits, targets, mask))
    mistakes = (
        (lambda lg, tg, mk: (lg.argmax(-1) == tg).all(1), "only the answer positions (mask True) count"),
        (lambda lg, tg, mk: ((lg.argmax(-1) == tg) & mk).any(1), "every answer token must be right, not one"),
    )
    return _function(answer, _exact_match, cases, mistakes)


def _testbed_wilson(answer: Any) -> Outcome:
    cases = [(45, 50), (0, 20), (20, 20), (1, 1), (500, 1000), (3, 7)]

    def wald(k, n):
        p = k / n
        half = 1.959964 * math.sqrt(p * (1 - p) / n)
        return (p - half, p + half)

    hint = "Wald's interval p +- z sqrt(p (1 - p) / n) is not Wilson's"
    return _function(answer, wilson_interval, cases, ((wald, hint),), rel=1e-4)  # z = 1.96 is fine


def _floor_perplexity(nll):
    kept = [np.asarray(p, float)[1:] for p in nll]
    return PerplexityResult.of_windows(np.array([k.sum() for k in kept]), np.array([len(k) for k in kept])).perplexity


def _testbed_perplexity(answer: Any) -> Outcome:
    rng = np.random.default_rng(5)
    cases = [
        ([rng.exponential(2.0, n) for n in (12, 3, 30, 7)],),
        ([np.array([9.0, 1.0, 1.0]), np.array([7.0, 2.0])],),
        ([np.array([5.0]), np.array([4.0, 0.5, 0.5, 0.5])],),  # a one-token paragraph counts nothing
    ]
    mistakes = (
        (lambda nll: math.exp(np.concatenate(nll).mean()), "leave out each paragraph's first token"),
        (
            lambda nll: math.exp(np.mean([np.mean(p[1:]) for p in nll if len(p) > 1])),
            "average over tokens, not over paragraphs",
        ),
    )
    return _function(answer, _floor_perplexity, cases, mistakes)


# The family


def _seed_mean(values):
    pooled = seed_mean([SeedResult(f"seed {i}", float(v), None, 1) for i, v in enumerate(values)])
    assert pooled.value is not None and pooled.ci95 is not None
    return (pooled.value, *pooled.ci95)


def _family_seed_mean(answer: Any) -> Outcome:
    cases = [([0.91, 0.88, 0.95],), ([0.3, 0.5],), ([1.2, 0.8, 1.1, 0.9, 1.0],)]

    def normal(values):
        v = np.asarray(values)
        half = 1.959964 * v.std(ddof=1) / math.sqrt(len(v))
        return (v.mean(), v.mean() - half, v.mean() + half)

    def biased(values):
        v = np.asarray(values)
        half = sps.t.ppf(0.975, len(v) - 1) * v.std() / math.sqrt(len(v))
        return (v.mean(), v.mean() - half, v.mean() + half)

    mistakes = (
        (normal, "with k seeds the quantile is Student's t on k - 1 degrees of freedom"),
        (biased, "the seeds' spread is their sample standard deviation, on k - 1"),
    )
    return _function(answer, _seed_mean, cases, mistakes)


def _stouffer(values, p_values):
    return stouffer(
        [SeedResult(f"seed {i}", v, None, 1, p) for i, (v, p) in enumerate(zip(values, p_values, strict=True))]
    )


def _family_stouffer(answer: Any) -> Outcome:
    cases = [([0.2, 0.1, 0.3], [0.04, 0.2, 0.01]), ([0.2, -0.1, 0.3], [0.04, 0.2, 0.01]), ([-1.0, -2.0], [1e-6, 0.5])]

    def unsigned(values, p_values):
        z = sum(sps.norm.isf(p / 2) for p in p_values) / math.sqrt(len(p_values))
        return float(min(1.0, 2 * sps.norm.sf(abs(z))))

    return _function(answer, _stouffer, cases, ((unsigned, "each seed's z takes the sign of its value"),))


def _holm(p_values):
    adjusted = holm_adjusted({str(i): p for i, p in enumerate(p_values)})
    return np.array([adjusted[str(i)] for i in range(len(p_values))])


def _family_holm(answer: Any) -> Outcome:
    cases = [([0.01, 0.011],), ([0.01, 0.04, 0.03, 0.005],), ([0.2, 0.01, 0.9],), ([0.5],), ([0.03, 0.03, 0.2],)]

    def bonferroni(p):
        return np.minimum(1.0, len(p) * np.asarray(p))

    def no_running_max(p):
        order = np.argsort(p)
        out = np.empty(len(p))
        for i, j in enumerate(order):
            out[j] = min(1.0, (len(p) - i) * p[j])
        return out

    mistakes = (
        (bonferroni, "Holm multiplies the i-th smallest p-value by m - i + 1, not all by m"),
        (no_running_max, "an adjusted p-value may not be smaller than that of a smaller p-value"),
    )
    return _function(answer, _holm, cases, mistakes)


def _dl_tau2(values, standard_errors):
    return TAU2_ESTIMATORS["dersimonian-laird"](np.asarray(values, float), np.asarray(standard_errors, float) ** 2)


def _family_tau2(answer: Any) -> Outcome:
    cases = [
        ([0.80, 0.92, 0.86], [0.02, 0.02, 0.03]),
        ([0.5, 0.51, 0.49], [0.05, 0.05, 0.05]),
        ([1.0, 2.0], [0.1, 0.5]),
    ]

    def unclipped(y, se):
        y, w = np.asarray(y), 1 / np.asarray(se) ** 2
        q = np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2)
        return (q - (len(y) - 1)) / (w.sum() - np.sum(w**2) / w.sum())

    return _function(answer, _dl_tau2, cases, ((unclipped, "a variance is never negative"),))


def _family_seeds(answer: Any) -> Outcome:
    k = next(k for k in range(3, 100) if sps.t.ppf(0.975, k - 1) <= 1.1 * sps.norm.ppf(0.975))
    return _numbers(answer, [k], ["the number of seeds"], 1e-9, ["the t quantile has k - 1 degrees of freedom"])


# Capability density


def _density_breadth(answer: Any) -> Outcome:
    rng = np.random.default_rng(6)
    cases = [(rng.exponential(1.0, 16),), (np.eye(8)[2] * 3.0,), (np.ones(5),), (np.array([0.0, 2.0, 0.0, 1.0, 1.0]),)]
    mistakes = (
        (lambda u: float(np.exp(sps.entropy(u, base=2)) / len(u)), "the entropy is in nats, the exponential's base"),
        (
            lambda u: float(np.exp(-np.sum(u[u > 0] * np.log(u[u > 0]))) / len(u)),
            "normalise the mass first",
        ),
    )
    return _function(answer, breadth_of, cases, mistakes)


def _consistency(mass_a, mass_b):
    return split_half_consistency(torch.as_tensor(mass_a), torch.as_tensor(mass_b))


def _density_consistency(answer: Any) -> Outcome:
    rng = np.random.default_rng(7)
    a = rng.exponential(1.0, 12)
    cases = [
        (a, a * rng.uniform(0.7, 1.3, 12)),
        (a, 3 * a),
        (np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 2.0, 1.0])),
        (np.array([0.0, 1.0, 3.0]), np.array([1.0, 1.0, 1.0])),
    ]
    mistakes = (
        (
            lambda p, q: 1 - float(sps.entropy(p, q)) / math.log(2),
            "use the Jensen-Shannon divergence",
        ),
        (
            lambda p, q: 1 - float(sps.distance.jensenshannon(p, q)) ** 2,
            "divide the divergence by log 2",
        ),
    )
    return _function(answer, _consistency, cases, mistakes)


def _density_needed(answer: Any) -> Outcome:
    rng = np.random.default_rng(8)
    lemma = np.array([0.4, 0.3, 0.15, 0.1, 0.04, 0.01])
    cases = [(lemma, 0.2), (lemma, 0.0), (lemma[::-1].copy(), 0.1), (rng.exponential(1.0, 20), 0.05), (np.ones(4), 0.5)]
    mistakes = (
        (
            lambda u, e: int(np.argmax(np.cumsum(np.sort(u / u.sum())[::-1]) > 1 - e + 1e-12) + 1),
            "features that carry exactly 1 - eps of the mass are enough",
        ),
        (
            lambda u, e: int(np.searchsorted(np.cumsum(np.sort(u / u.sum())), 1 - e - 1e-12) + 1),
            "keep the most used features first",
        ),
    )
    return _function(answer, features_needed, cases, mistakes)


# Is density a new signal?


def _orth_owl(answer: Any) -> Outcome:
    rng = np.random.default_rng(9)
    cases = [
        (rng.uniform(0, 1, 6), 0.5, 0.08),
        (rng.uniform(0, 1, 6), 0.95, 0.2),  # the half-width has to be narrowed
        (rng.uniform(0, 1, 4), 0.02, 0.1),
        (np.full(5, 0.3), 0.6, 0.08),
        (np.array([1.0, 3.0]), 0.5, 0.08),
    ]

    def clipped(x, s, lam):
        q = 2 * (x - x.min()) / np.ptp(x) if np.ptp(x) else np.zeros_like(x)
        return np.clip(s - lam * (q - q.mean()), 0.0, MAX_BLOCK_SPARSITY)

    def wrong_sign(x, s, lam):
        return spread(-np.asarray(x), s, lam)

    mistakes = (
        (wrong_sign, "a higher score means a more important block, which gets a lower sparsity"),
        (clipped, "clipping changes the mean; narrow lambda instead, so that every block fits"),
    )
    return _function(answer, spread, cases, mistakes)


def _outlier_ratio(weight, x, m):
    scores = wanda_scores(torch.as_tensor(weight), torch.as_tensor(x).square().sum(0))
    return float((scores > m * scores.mean()).double().mean())


def _orth_outliers(answer: Any) -> Outcome:
    rng = np.random.default_rng(10)
    cases = [
        (rng.standard_t(2, size=(16, 32)), rng.normal(size=(40, 32)) * rng.uniform(0.1, 3, 32), 5.0),
        (rng.standard_t(2, size=(16, 32)), rng.normal(size=(40, 32)), 3.0),
        (np.ones((4, 4)), np.ones((2, 4)), 5.0),
    ]
    mistakes = (
        (lambda w, x, m: float(np.mean(np.abs(w) > m * np.abs(w).mean())), "OWL counts outliers of the Wanda scores"),
        (
            lambda w, x, m: float(np.mean((s := np.abs(w) * np.sqrt((x**2).sum(0))) > m * np.median(s))),
            "the threshold is m times the mean score",
        ),
    )
    return _function(answer, _outlier_ratio, cases, mistakes)


def _spearman(x, y):
    return float(sps.spearmanr(x, y).statistic)


def _orth_spearman(answer: Any) -> Outcome:
    rng = np.random.default_rng(11)
    x = rng.normal(size=30)
    censored = np.minimum(-x + rng.normal(size=30), 0.5)  # ties at the top, as censored heads have
    cases = [
        (x, -x + rng.normal(size=30)),
        (x, censored),
        (np.array([1.0, 2.0, 2.0, 3.0]), np.array([4.0, 3.0, 3.0, 1.0])),
    ]

    def ordinal(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1])

    return _function(answer, _spearman, cases, ((ordinal, "tied values share the mean of their ranks"),))


def _orth_power_function(answer: Any) -> Outcome:
    cases = [(0.1, 384), (0.3, 50), (-0.2, 100), (0.054, 2850), (0.5, 10)]

    def no_spearman_factor(rho, n):
        z = math.atanh(abs(rho)) * math.sqrt(n - 3)
        return float(sps.norm.sf(1.959964 - z) + sps.norm.cdf(-1.959964 - z))

    mistakes = ((no_spearman_factor, "Spearman's rho has a variance about 1.06 times Pearson's on Fisher's z"),)
    return _function(answer, correlation_power, cases, mistakes, rel=1e-4)  # z = 1.96 is fine


# Perturbation absorption


def _absorption_coefficient(drift):
    frame = pd.DataFrame({"source": 0, "layer": range(len(drift)), "drift": drift})
    return float(absorption_coefficients(frame, len(drift)).loc[0])


def _abs_coefficient(answer: Any) -> Outcome:
    cases = [
        (np.array([0.2, 0.15, 0.12, 0.1]),),
        (np.array([0.05, 0.08, 0.2]),),  # amplified: negative
        (np.array([0.3, 0.1]),),
        (np.array([0.4]),),  # the last block: no later block
    ]
    mistakes = (
        (lambda d: float(np.log(d[0] / d[-1])) if len(d) > 1 else math.nan, "divide by the number of later blocks"),
        (lambda d: float(np.log(d[-1] / d[0]) / (len(d) - 1)) if len(d) > 1 else math.nan, "absorbing is positive"),
    )
    return _function(answer, _absorption_coefficient, cases, mistakes)


def _abs_correction(answer: Any) -> Outcome:
    rng = np.random.default_rng(12)
    cases = [
        (np.full(6, 0.5), rng.normal(size=6), 0.1),
        (rng.uniform(0.4, 0.6, 6), np.append(rng.normal(size=5), np.nan), 0.05),  # the last block has no coefficient
        (np.full(4, 0.9), np.array([0.1, 0.3, 0.2, 0.0]), 0.5),  # narrowed near the top
        (np.full(3, 0.5), np.ones(3), 0.1),
        (np.array([0.3, 0.6]), np.array([1.0, 2.0]), 0.0),
    ]

    def raw(base, a, strength):
        a = np.where(np.isnan(a), np.nanmean(a), a)
        return base + strength * (a - a.mean())

    mistakes = ((raw, "scale the coefficients to [0, 2] first, as OWL scales its scores"),)
    return _function(answer, absorption_corrected, cases, mistakes)


def _hill(x, xmin):
    tail = np.asarray(x, float)
    tail = tail[tail >= xmin]
    return float(1 + len(tail) / np.log(tail / xmin).sum())


def _abs_hill_code(answer: Any) -> Outcome:
    rng = np.random.default_rng(13)
    pareto = rng.pareto(2.0, 500) + 1
    mixed = np.concatenate([pareto, rng.uniform(0.5, 1.0, 200)])
    cases = [(pareto, 1.0), (mixed, 1.0), (pareto, 2.0), (np.array([1.0, 2.0, 4.0, 8.0]), 1.0)]
    mistakes = (
        (lambda x, m: float(len(x[x >= m]) / np.log(x[x >= m] / m).sum()), "the density's exponent is 1 + n / sum"),
        (lambda x, m: float(1 + len(x) / np.log(x[x >= m] / m).sum()), "n counts only the values at or above xmin"),
    )
    return _function(answer, _hill, cases, mistakes)


# Five structural properties


def _rank_for_variance(cov, share):
    return rank_for_variance(torch.as_tensor(cov), share)


def _structure_rank(answer: Any) -> Outcome:
    rng = np.random.default_rng(14)
    a = rng.normal(size=(50, 6)) * [5, 1, 3, 0.5, 2, 0.1]
    cov = np.cov(a, rowvar=False)
    cases = [(np.diag([3.0, 1.0]), 0.75), (np.diag([1.0, 4.0, 2.0]), 0.5), (cov, 0.9), (cov, 0.5), (cov, 1.0)]

    def diagonal_order(c, s):
        cumulative = np.cumsum(np.diag(c)) / np.trace(c)
        return int(np.searchsorted(cumulative, s - 1e-12) + 1)

    mistakes = (
        (lambda c, s: _rank_for_variance(c, s) + 1, "a share reached exactly is enough"),
        (diagonal_order, "the principal directions are the covariance's eigenvectors, largest eigenvalue first"),
    )
    return _function(answer, _rank_for_variance, cases, mistakes)


def _structure_settled(answer: Any) -> Outcome:
    rng = np.random.default_rng(15)
    kl = np.sort(rng.exponential(1.0, (40, 6)), axis=1)[:, ::-1].copy()
    kl[:5, 2] = 0.01  # settles early, then drifts out again
    cases = [(kl, 0.3, 2), (kl, 0.1, 4), (kl, 0.05, 5), (kl, 1.0, 0)]
    mistakes = (
        (
            lambda d, t, k: float(np.mean(d[:, k] <= t)),
            "a token settles at its first layer within tau",
        ),
    )
    return _function(answer, settled_share, cases, mistakes)


CHECKERS: dict[str, Callable[[Any], Outcome]] = {
    "ex-phase-groups": _phase_groups,
    "ex-phase-wanda": _phase_wanda,
    "ex-phase-rtn": _phase_rtn,
    "ex-phase-crossing": _phase_crossing,
    "ex-phase-rank": _phase_rank,
    "ex-phase-storage": _phase_storage,
    "ex-phase-obs-code": _phase_obs_code,
    "ex-testbed-exact": _testbed_exact,
    "ex-testbed-wilson": _testbed_wilson,
    "ex-testbed-perplexity": _testbed_perplexity,
    "ex-family-seed-mean": _family_seed_mean,
    "ex-family-stouffer": _family_stouffer,
    "ex-family-holm": _family_holm,
    "ex-family-tau2": _family_tau2,
    "ex-family-seeds": _family_seeds,
    "ex-density-breadth-extremes": _breadth_extremes,
    "ex-density-breadth": _density_breadth,
    "ex-density-consistency-code": _density_consistency,
    "ex-density-needed": _density_needed,
    "ex-orth-owl-mean": _orth_owl,
    "ex-orth-power": _orth_power,
    "ex-orth-outliers": _orth_outliers,
    "ex-orth-spearman": _orth_spearman,
    "ex-orth-power-function": _orth_power_function,
    "ex-abs-budget": _abs_budget,
    "ex-abs-coefficient": _abs_coefficient,
    "ex-abs-correction": _abs_correction,
    "ex-abs-hill-code": _abs_hill_code,
    "ex-structure-cross": _structure_cross,
    "ex-structure-rank": _structure_rank,
    "ex-structure-settled": _structure_settled,
}

STUBS: dict[str, tuple[str, ...]] = {
    # the code exercises: the signature of each function the answer defines, in order
    "ex-phase-wanda": ("wanda_mask(weight, x, sparsity)",),
    "ex-phase-rtn": ("rtn(weight, bits, group_size)",),
    "ex-phase-crossing": ("crossing(ratios, metric, r)",),
    "ex-phase-rank": ("kept_rank(m, n, removed)",),
    "ex-phase-storage": ("storage_bits(out_features, in_features, bits, group_size)",),
    "ex-phase-obs-code": ("obs_remove(w, hessian, q)",),
    "ex-testbed-exact": ("exact_match(logits, targets, mask)",),
    "ex-testbed-wilson": ("wilson(successes, n)",),
    "ex-testbed-perplexity": ("floor_perplexity(nll)",),
    "ex-family-seed-mean": ("seed_mean(values)",),
    "ex-family-stouffer": ("stouffer(values, p_values)",),
    "ex-family-holm": ("holm(p_values)",),
    "ex-family-tau2": ("tau2(values, standard_errors)",),
    "ex-density-breadth-extremes": ("breadth_equal(q, m)",),
    "ex-density-breadth": ("breadth(mass)",),
    "ex-density-consistency-code": ("consistency(mass_a, mass_b)",),
    "ex-density-needed": ("features_needed(mass, eps)",),
    "ex-orth-owl-mean": ("owl(scores, sparsity, lam)",),
    "ex-orth-outliers": ("outlier_ratio(weight, x, m)",),
    "ex-orth-spearman": ("spearman(x, y)",),
    "ex-orth-power-function": ("power(rho, n)",),
    "ex-abs-budget": ("largest_beta(s, q, s_max)",),
    "ex-abs-coefficient": ("absorption(drift)",),
    "ex-abs-correction": ("corrected(base, absorption, strength)",),
    "ex-abs-hill-code": ("hill(x, xmin)",),
    "ex-structure-cross": ("factored(m, n, s, sigma)", "direct(m, n, s, sigma)"),
    "ex-structure-rank": ("rank_for_variance(cov, share)",),
    "ex-structure-settled": ("settled_share(kl, tau, by_layer)",),
}


def check(label: str, answer: Any) -> Outcome:
    """Check `answer` to exercise `label`; print and return the outcome."""
    if label not in CHECKERS:
        raise KeyError(f"no checker for {label!r}; exercises with one: {', '.join(CHECKERS)}")
    outcome = CHECKERS[label](answer)
    print(f"{label}: {outcome.message}")
    return outcome
