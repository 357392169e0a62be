"""The variants of the density chapter's stability check: retrained SAEs use seeds that are
offsets from the chapter's seed, so that no variant is the base map itself."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgclib.book.chapters import get_chapter
from cgclib.density_map import stability_seeds, stability_variants
from cgclib.saes import HeadSAEConfig


@given(
    seed=st.integers(0, 10_000),
    offsets=st.lists(st.integers(-5, 5).filter(bool), min_size=1, max_size=4, unique=True),
)
def test_stability_seeds_never_equal_the_seed(seed, offsets):
    if any(seed + o < 0 for o in offsets):
        with pytest.raises(ValueError, match="negative"):
            stability_seeds(seed, offsets)
        return
    seeds = stability_seeds(seed, offsets)
    assert seeds == [seed + o for o in offsets]
    assert seed not in seeds
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("offsets", [[0], [1, 0], [2, 2], [1.0], [True]])
def test_stability_seeds_reject_an_offset_that_repeats_a_training(offsets):
    with pytest.raises(ValueError):
        stability_seeds(1, offsets)


def test_seed_one_is_not_compared_with_itself():
    """The bug this guards against: run with seed 1, the old `stability_seeds = [1]`
    retrained with seed 1 and compared the map with itself."""
    assert stability_seeds(1, [1]) == [2]
    assert stability_seeds(0, [1]) == [1]  # the default run trains the same SAEs as before


def test_stability_variants_differ_from_the_base_config():
    cfg = HeadSAEConfig(expansion=8, seed=3)
    variants = stability_variants(cfg, [1, 2], [4, 16])
    assert [(kind, label) for kind, label, _ in variants] == [
        ("seed", "seed 4"),
        ("seed", "seed 5"),
        ("size", "dictionary 4 x head_dim"),
        ("size", "dictionary 16 x head_dim"),
    ]
    assert all(variant != cfg for _, _, variant in variants)
    assert [v.seed for _, _, v in variants] == [4, 5, 3, 3]
    with pytest.raises(ValueError, match="differ"):
        stability_variants(cfg, [1], [8])
    with pytest.raises(ValueError, match="offset of 0"):
        stability_variants(cfg, [0], [4])


def test_the_chapter_defaults_give_valid_stability_variants():
    """The density chapter's parameters: offsets, not seeds, and the default run retrains
    with seed 1 as it always has (so the shipped SAEs still cover it)."""
    p = {name: param.default for name, param in get_chapter("density").parameters().items()}
    assert "stability_seeds" not in p
    seeds = stability_seeds(p["seed"], p["stability_seed_offsets"])
    assert p["seed"] not in seeds
    assert seeds == [1]
    cfg = HeadSAEConfig(expansion=p["sae_expansion"], seed=p["seed"])
    assert stability_variants(cfg, p["stability_seed_offsets"], p["stability_expansions"])
