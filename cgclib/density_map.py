"""The capability density of every attention head of a model, end to end: calibration
text -> one SAE per head (trained or loaded from the cache) -> feature statistics on
held-out text -> density and its three terms. Chapters that need the density map call
`head_density_map`; with the same arguments they share the cached SAEs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from .density import DensityOptions, FeatureStats
from .saes import HeadSAEConfig, head_feature_statistics, train_head_saes


@dataclass(frozen=True)
class DensityMap:
    """Per head (index: layer, head): the density terms, the SAE's fit on held-out tokens
    (fraction of variance explained, dead-feature share, mean L0), and the raw statistics
    from which other definitions of density can be computed."""

    terms: pd.DataFrame
    fit: pd.DataFrame
    stats: dict[tuple[int, int], FeatureStats]

    @property
    def density(self) -> pd.Series:
        return self.terms["density"]


def head_density_map(
    subject,
    sae_cfg: HeadSAEConfig,
    calibration_sequences: int,
    measure_sequences: int,
    seq_len: int,
    seed: int,
    options: DensityOptions = DensityOptions(),
) -> DensityMap:
    """Train (or load) one SAE per head on `calibration_sequences` sequences and measure
    density on `measure_sequences` other sequences (drawn with seed + 1)."""
    calib = subject.calibration(calibration_sequences, seq_len, seed=seed)
    held_out = subject.calibration(measure_sequences, seq_len, seed=seed + 1, held_out=True)
    pad = subject.tokenizer.pad_token_id
    saes = train_head_saes(subject.model, calib, pad, sae_cfg)
    stats, recon = head_feature_statistics(subject.model, saes, held_out, pad)
    terms = pd.DataFrame({head: s.terms(options) for head, s in stats.items()}).T
    terms.index.names = ["layer", "head"]
    fit = pd.DataFrame(
        {
            head: {"fve": r.fraction_variance_explained, "dead": r.dead_share, "l0": r.mean_l0}
            for head, r in recon.items()
        }
    ).T
    fit.index.names = ["layer", "head"]
    return DensityMap(terms, fit, stats)


def stability_seeds(seed: int, offsets: Sequence[int]) -> list[int]:
    """The SAE seeds of the seed-stability check: `seed + offset` for each offset.

    Offsets, not seeds, so that the check compares the map with other trainings whatever
    `seed` is: an offset of 0 (or a repeated one) would compare a training with itself."""
    offsets = list(offsets)
    if any(isinstance(o, bool) or not isinstance(o, int) for o in offsets):
        raise ValueError(f"stability seed offsets must be integers, got {offsets}")
    if 0 in offsets:
        raise ValueError(f"a stability seed offset of 0 retrains with seed {seed} itself; got {offsets}")
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"stability seed offsets must differ from each other, got {offsets}")
    seeds = [seed + o for o in offsets]
    if any(s < 0 for s in seeds):
        raise ValueError(f"seed {seed} with offsets {offsets} gives negative seeds {seeds}")
    return seeds


def stability_variants(
    cfg: HeadSAEConfig, seed_offsets: Sequence[int], expansions: Sequence[int]
) -> list[tuple[str, str, HeadSAEConfig]]:
    """(kind, label, SAE config) of every variant of the stability check: kind "seed" for
    SAEs retrained with seed `cfg.seed + offset`, "size" for other dictionary sizes. Each
    variant differs from `cfg`, so that no map is compared with itself."""
    variants = [("seed", f"seed {s}", replace(cfg, seed=s)) for s in stability_seeds(cfg.seed, seed_offsets)]
    expansions = list(expansions)
    if cfg.expansion in expansions or len(set(expansions)) != len(expansions):
        raise ValueError(
            f"stability dictionary sizes {expansions} must differ from each other and from {cfg.expansion}"
        )
    variants += [("size", f"dictionary {e} x head_dim", replace(cfg, expansion=e)) for e in expansions]
    return variants
