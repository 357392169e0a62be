"""Structural redundancy of a component and what density can say about it.

These are the objects of the density chapter's theorems, as code, so that every statement
can be checked numerically (`tests/test_redundancy.py`, and the chapter's notebook):

- `structural_redundancy(mass, eps)`: the share of a component's features that can be
  removed while losing at most a share `eps` of its activation mass;
- `redundancy_bound(breadth, m, eps)`: the upper bound on that redundancy that feature
  breadth implies (Theorem: breadth bounds redundancy);
- `critical_ratio(mass, tau, order)`: the phase-transition point of a component under
  feature removal, when its function collapses once more than `tau` of its mass is lost,
  for removal in order of least use ("informed") or in random order ("random").
"""

from __future__ import annotations

import math

import numpy as np


def binary_entropy(p: float) -> float:
    """h(p) = -p log p - (1-p) log(1-p), in nats."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must lie in [0, 1], got {p}")
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0)


def _usage(mass) -> np.ndarray:
    mass = np.asarray(mass, dtype=float)
    if mass.ndim != 1 or np.any(mass < 0) or mass.sum() <= 0:
        raise ValueError("feature mass must be a non-negative vector with positive total")
    return mass / mass.sum()


def features_needed(mass, eps: float) -> int:
    """n_eps: the fewest features whose mass is at least a share (1 - eps) of the total."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1), got {eps}")
    top = np.cumsum(np.sort(_usage(mass))[::-1])
    return int(np.searchsorted(top, 1.0 - eps - 1e-12) + 1)


def structural_redundancy(mass, eps: float) -> float:
    """R_eps = 1 - n_eps / m."""
    return 1.0 - features_needed(mass, eps) / len(mass)


def redundancy_bound(breadth: float, m: int, eps: float) -> float:
    """Upper bound on R_eps implied by breadth B = exp(H(u))/m, valid for eps <= 1/2:
    R_eps <= 1 - B * exp(-h(eps)) * m**(-eps)."""
    if not 0.0 <= eps <= 0.5:
        raise ValueError(f"the bound holds for eps in [0, 1/2], got {eps}")
    return 1.0 - breadth * math.exp(-binary_entropy(eps)) * m ** (-eps)


def breadth_of(mass) -> float:
    u = _usage(mass)
    h = -np.sum(u[u > 0] * np.log(u[u > 0]))
    return float(np.exp(h) / len(u))


def critical_ratio(
    mass, tau: float, order: str = "informed", rng: np.random.Generator | None = None, n_draws: int = 200
) -> float:
    """The largest share s of features whose removal loses at most `tau` of the mass.

    "informed": features are removed least-used first (the best any feature-removing
    compression can do); then s equals the structural redundancy R_tau.
    "random": features are removed in uniformly random order; the result is the mean over
    `n_draws` orders (its expectation is about tau, whatever the usage)."""
    u = _usage(mass)
    m = len(u)
    if order == "informed":
        lost = np.concatenate([[0.0], np.cumsum(np.sort(u))])
        return float((np.searchsorted(lost, tau + 1e-12, side="right") - 1) / m)
    if order == "random":
        rng = rng or np.random.default_rng(0)
        shares = []
        for _ in range(n_draws):
            lost = np.concatenate([[0.0], np.cumsum(u[rng.permutation(m)])])
            shares.append((np.searchsorted(lost, tau + 1e-12, side="right") - 1) / m)
        return float(np.mean(shares))
    raise ValueError(f"order must be 'informed' or 'random', got {order!r}")
