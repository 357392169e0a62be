"""Structural redundancy of a component and what density can say about it.

These are the objects of the density chapter's theorems, as code, so that every statement
can be checked numerically (`tests/test_redundancy.py`, and the chapter's notebook):

- `structural_redundancy(mass, eps)`: the share of a component's features that can be
  removed while losing at most a share `eps` of its activation mass;
- `redundancy_bound(breadth, m, eps)`: the upper bound on that redundancy that feature
  breadth implies (Theorem: breadth bounds redundancy);
- `critical_ratio(mass, tau, order)`: the phase-transition point of a component under
  feature removal, when its function collapses once more than `tau` of its mass is lost,
  for removal in order of least use ("informed") or in random order ("random");
- `pointwise_counterexamples(density, redundancy, ...)`: the pairs of measured components
  in which the denser one is also the more redundant, beyond given margins, in every
  measurement (the chapter's test of the pointwise claim on real heads).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

RemovalOrder = Literal["informed", "random"]
"""The order in which `critical_ratio` removes features: least-used first, or at random."""


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
    mass, tau: float, order: RemovalOrder = "informed", rng: np.random.Generator | None = None, n_draws: int = 200
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


def pointwise_counterexamples(
    density, redundancy, density_margin: float = 0.0, redundancy_margin: float = 0.0
) -> np.ndarray:
    """Pairs of components that contradict "higher density implies lower redundancy".

    `density` and `redundancy` hold one value per component, shape (components,), or one row
    per measurement of the same components, shape (measurements, components) (e.g. one row
    per SAE training seed). Pair (i, j) is a counterexample when in every row
    D_i - D_j > density_margin and R_i - R_j > redundancy_margin: component i is the denser
    and the more redundant of the two, by more than the margins, in every measurement.
    Returns the counterexamples as an int array of shape (pairs, 2), denser component first.
    """
    d, r = np.atleast_2d(np.asarray(density, dtype=float)), np.atleast_2d(np.asarray(redundancy, dtype=float))
    if d.ndim != 2 or d.shape != r.shape:
        raise ValueError(
            f"density and redundancy need the same shape (measurements, components), got {d.shape} and {r.shape}"
        )
    if not np.all(np.isfinite(d)) or not np.all(np.isfinite(r)):
        raise ValueError("density and redundancy must be finite")
    if density_margin < 0 or redundancy_margin < 0:
        raise ValueError(f"margins must be non-negative, got {density_margin} and {redundancy_margin}")
    denser = d[:, :, None] - d[:, None, :] > density_margin
    more_redundant = r[:, :, None] - r[:, None, :] > redundancy_margin
    return np.argwhere(np.all(denser & more_redundant, axis=0))


def typical_change(base, variants) -> float:
    """The median over components and variants of abs(variant - base): how much a component's
    value typically moves when it is measured again another way (e.g. an SAE retrained with
    another seed). `base` has shape (components,), `variants` (variants, components)."""
    base = np.asarray(base, dtype=float)
    variants = np.atleast_2d(np.asarray(variants, dtype=float))
    if base.ndim != 1 or variants.shape[1:] != base.shape or len(variants) == 0:
        raise ValueError(
            f"need base (components,) and variants (variants, components), got {base.shape} and {variants.shape}"
        )
    return float(np.median(np.abs(variants - base)))
