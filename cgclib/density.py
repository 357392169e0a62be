"""Capability density of a component, from its SAE feature activations (our reconstruction).

For a component (an attention head) with a k-sparse SAE of m features, let f(x) in R^m,
f >= 0, be the code of input token x. Over a calibration set, with u the *usage*
distribution of the features (u_i proportional to E[f_i]):

- **feature breadth** B = exp(H(u)) / m: the effective number of features the component
  uses, as a share of its dictionary (1/m when one feature does everything, 1 when all are
  used equally);
- **activation entropy** E = E_x[ H(f(x) / sum_i f_i(x)) ] / log k: how evenly one input's
  activation spreads over the (at most k) features it uses (0 when one feature carries each
  input, 1 when k features share it equally);
- **cross-input consistency** C = 1 - JS(u_A, u_B) / log 2: agreement of the usage
  distributions measured on two disjoint halves of the inputs (1 when the component uses
  its features the same way on any sample of inputs, 0 when the halves use disjoint
  features). It discounts components whose feature use is erratic rather than systematic.

The capability density is their geometric mean D = (B E C)^(1/3), in [0, 1], zero when any
term is zero. The paper's formulas are not published; `DensityOptions` keeps the
alternatives we considered so that the chapter can show how much each choice matters.

Everything is computed from streamed sums (`FeatureStats`), never from stored codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

BreadthMethod = Literal["entropy", "alive", "participation"]
EntropyMethod = Literal["per_input", "marginal"]
ConsistencyMethod = Literal["split_half", "code_overlap"]
CombineMethod = Literal["geometric", "arithmetic", "product"]

BREADTH_METHODS: tuple[BreadthMethod, ...] = get_args(BreadthMethod)
ENTROPY_METHODS: tuple[EntropyMethod, ...] = get_args(EntropyMethod)
CONSISTENCY_METHODS: tuple[ConsistencyMethod, ...] = get_args(ConsistencyMethod)
COMBINE_METHODS: tuple[CombineMethod, ...] = get_args(CombineMethod)


@dataclass(frozen=True)
class DensityOptions:
    """Which definition of each term, and how they combine (defaults: the book's choice).

    - breadth: "entropy" exp(H(u))/m; "alive" share of features that fire at least once per
      `alive_tokens` tokens; "participation" the participation ratio (sum u)^2 / (m sum u^2).
    - entropy: "per_input" as above; "marginal" H(u)/log m, the entropy of usage itself.
    - consistency: "split_half" as above; "code_overlap" the mean cosine similarity of the
      codes of two different inputs, E[cos(f(x), f(x'))].
    - combine: "geometric" (B E C)^(1/3); "arithmetic" (B + E + C)/3; "product" B E C.
    """

    breadth: BreadthMethod = "entropy"
    entropy: EntropyMethod = "per_input"
    consistency: ConsistencyMethod = "split_half"
    combine: CombineMethod = "geometric"
    alive_tokens: int = 10_000

    def __post_init__(self):
        for name, allowed in (
            ("breadth", BREADTH_METHODS),
            ("entropy", ENTROPY_METHODS),
            ("consistency", CONSISTENCY_METHODS),
            ("combine", COMBINE_METHODS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} method {getattr(self, name)!r}; use one of {allowed}")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) along the last axis of distributions p (0 log 0 = 0)."""
    return -(torch.special.xlogy(p, p)).sum(-1)


def _normalise(mass: torch.Tensor) -> torch.Tensor:
    total = mass.sum(-1, keepdim=True)
    if torch.any(total <= 0):
        raise ValueError("a usage distribution needs positive total mass (is the component dead?)")
    return mass / total


def feature_breadth(
    usage_mass: torch.Tensor,
    fire_rate: torch.Tensor | None = None,
    method: BreadthMethod = "entropy",
    alive_rate: float = 1e-4,
) -> float:
    """Breadth in [0, 1] from the mass E[f_i] of each feature (see DensityOptions)."""
    m = usage_mass.shape[-1]
    u = _normalise(usage_mass.double())
    if method == "entropy":
        return float(torch.exp(_entropy(u)) / m)
    if method == "participation":
        return float(1.0 / (m * (u**2).sum()))
    if method == "alive":
        if fire_rate is None:
            raise ValueError("breadth 'alive' needs the firing rate of each feature")
        return float((fire_rate >= alive_rate).double().mean())
    raise ValueError(f"unknown breadth method {method!r}")


def split_half_consistency(mass_a: torch.Tensor, mass_b: torch.Tensor) -> float:
    """1 - JS(u_A, u_B)/log 2 for usage masses measured on two disjoint halves of inputs."""
    ua, ub = _normalise(mass_a.double()), _normalise(mass_b.double())
    mid = (ua + ub) / 2
    js = _entropy(mid) - (_entropy(ua) + _entropy(ub)) / 2
    return float(1.0 - js.clamp_min(0) / math.log(2))


def combine(breadth: float, entropy: float, consistency: float, method: CombineMethod = "geometric") -> float:
    """One density in [0, 1] from three terms in [0, 1]."""
    terms = (breadth, entropy, consistency)
    if any(not 0.0 <= t <= 1.0 + 1e-9 for t in terms):
        raise ValueError(f"density terms must lie in [0, 1], got {terms}")
    if method == "geometric":
        return float(math.prod(terms) ** (1 / 3))
    if method == "arithmetic":
        return float(sum(terms) / 3)
    if method == "product":
        return float(math.prod(terms))
    raise ValueError(f"unknown combination {method!r}")


class FeatureStats:
    """Streaming sums over the codes of one component, enough for every density option.

    `update(codes)` takes the codes (tokens, m) of one batch of whole input sequences;
    batches go to halves A and B alternately, so that the split-half consistency compares
    disjoint sets of sequences. (Alternating single tokens would put neighbouring tokens of
    the same sequence into both halves and make them near-copies of each other.)"""

    def __init__(self, m: int, k: int):
        if k < 2:
            raise ValueError("activation entropy needs k >= 2 active features")
        self.m, self.k = m, k
        self.n_tokens = 0
        self.n_batches = 0
        self.n_active = 0  # tokens with at least one active feature
        self.mass = torch.zeros(2, m, dtype=torch.float64)  # sum of f per half
        self.fire = torch.zeros(m, dtype=torch.float64)  # tokens on which each feature fires
        self.entropy_sum = 0.0  # sum over active tokens of H(f / |f|_1)
        self.unit_sum = torch.zeros(m, dtype=torch.float64)  # sum of f / |f|_2
        self.unit_count = 0

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        codes = codes.detach().double().cpu()
        if codes.ndim != 2 or codes.shape[1] != self.m:
            raise ValueError(f"codes must have shape (tokens, {self.m}), got {tuple(codes.shape)}")
        if torch.any(codes < 0):
            raise ValueError("SAE codes must be non-negative")
        if len(codes) and int((codes > 0).sum(1).max()) > self.k:
            raise ValueError(f"a code has more than k = {self.k} active features: is this a TopK SAE with that k?")
        self.mass[self.n_batches % 2] += codes.sum(0)
        self.fire += (codes > 0).double().sum(0)
        l1 = codes.sum(1)
        active = l1 > 0
        if active.any():
            q = codes[active] / l1[active, None]
            self.entropy_sum += float(_entropy(q).sum())
            unit = codes[active] / codes[active].norm(dim=1, keepdim=True)
            self.unit_sum += unit.sum(0)
            self.unit_count += int(active.sum())
        self.n_active += int(active.sum())
        self.n_tokens += len(codes)
        self.n_batches += 1

    def terms(self, options: DensityOptions = DensityOptions()) -> dict[str, float]:
        """The three terms and their combination, each in [0, 1]."""
        if self.n_active < 2:
            raise ValueError("density needs at least two tokens on which the component is active")
        mass = self.mass.sum(0)
        breadth = feature_breadth(
            mass, self.fire / self.n_tokens, options.breadth, alive_rate=1.0 / options.alive_tokens
        )
        if options.entropy == "per_input":
            entropy = self.entropy_sum / self.n_active / math.log(self.k)
        else:
            entropy = float(_entropy(_normalise(mass)) / math.log(self.m))
        if options.consistency == "split_half":
            if self.n_batches < 2:
                raise ValueError(
                    "split-half consistency needs the codes of at least two batches of "
                    "sequences (one per half); measure on more sequences or smaller batches"
                )
            consistency = split_half_consistency(self.mass[0], self.mass[1])
        else:  # unbiased mean cosine over pairs of distinct inputs
            n = self.unit_count
            consistency = float((self.unit_sum @ self.unit_sum - n) / (n * (n - 1)))
        entropy = min(max(entropy, 0.0), 1.0)
        consistency = min(max(consistency, 0.0), 1.0)
        return {
            "breadth": breadth,
            "entropy": entropy,
            "consistency": consistency,
            "density": combine(breadth, entropy, consistency, options.combine),
        }
