"""Per-head SAEs: trained with sae-lens on streamed activations, cached by content key,
loadable with sae_lens.SAE.load_from_disk, and measured on held-out tokens."""

from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from cgclib import components
from cgclib import saes as saes_module
from cgclib.saes import HeadSAEConfig, head_feature_statistics, stream_head_activations, train_head_saes
from cgclib.tokens import token_mask

from .tiny_models import tiny_gpt2, tiny_llama

CFG = HeadSAEConfig(expansion=4, epochs=6, batch_tokens=128, lr=3e-3)


def _ids(n=24, seq=16, vocab=64, seed=0):
    ids = torch.randint(3, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))
    ids[:, -3:] = 2  # padding at the end of every row
    return ids


def test_streamed_activations_skip_padding_and_the_first_position():
    model = tiny_llama()
    ids = _ids()
    chunks = list(stream_head_activations(model, ids, [(0, 1), (2, 3)], pad_token_id=2, batch_sequences=10))
    assert len(chunks) == 3
    assert sum(len(c[(0, 1)]) for c in chunks) == int(token_mask(ids, 2).sum()) == 24 * 12
    assert chunks[0][(2, 3)].shape[1] == 8


def test_training_caching_and_loading(tmp_path):
    model = tiny_gpt2()
    ids = _ids()
    heads = [(0, 0), (1, 2)]
    saes = train_head_saes(model, ids, pad_token_id=2, cfg=CFG, heads=heads, cache=tmp_path)
    assert set(saes) == set(heads)
    assert saes[(0, 0)].cfg.d_sae == 32 and saes[(0, 0)].cfg.k == 3
    folders = sorted(p for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(folders) == 2
    reloaded = SAE.load_from_disk(folders[0])
    assert reloaded.cfg.d_in == 8

    again = train_head_saes(model, ids, pad_token_id=2, cfg=CFG, heads=heads, cache=tmp_path)
    for head in heads:  # served from the cache: identical weights, no new folders
        torch.testing.assert_close(again[head].W_enc, saes[head].W_enc)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2

    train_head_saes(
        model,
        ids,
        pad_token_id=2,
        cfg=HeadSAEConfig(expansion=4, epochs=2, batch_tokens=128, seed=1),
        heads=[(0, 0)],
        cache=tmp_path,
    )
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3  # a changed seed retrains


def test_statistics_on_held_out_tokens(tmp_path):
    model = tiny_gpt2()
    saes = train_head_saes(model, _ids(n=96, seq=32), pad_token_id=2, cfg=CFG, heads=[(0, 1)], cache=tmp_path)
    feats, recon = head_feature_statistics(model, saes, _ids(seed=1), pad_token_id=2)
    stats, quality = feats[(0, 1)], recon[(0, 1)]
    assert stats.n_tokens == quality.n == 24 * 12
    assert quality.fraction_variance_explained > 0.3
    assert 0.0 <= quality.dead_share < 1.0
    assert quality.mean_l0 <= 3 + 1e-9
    assert all(0.0 <= v <= 1.0 for v in stats.terms().values())


def test_an_edited_model_does_not_reuse_the_saes_of_the_original():
    from cgclib.models import load_model, model_fingerprint

    model = load_model("testbed-llama", device="cpu").model
    before = model_fingerprint(model)
    with torch.no_grad():  # prune the last rows of a large weight, far from its first entries
        model.model.layers[3].mlp.down_proj.weight[-8:, :] = 0
    assert model_fingerprint(model) != before


def test_shipped_saes_are_used_and_checked(tmp_path, monkeypatch):
    model, ids, heads = tiny_gpt2(), _ids(), [(0, 0), (1, 2)]
    trained = train_head_saes(model, ids, pad_token_id=2, cfg=CFG, heads=heads, cache=tmp_path / "first")
    monkeypatch.setenv("CGC_DATA_DIR", str(tmp_path / "data"))
    assert saes_module.ship(tmp_path / "first") == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped SAE was trained again")

    monkeypatch.setattr("sae_lens.training.multi_sae_trainer.MultiSAETrainer", no_training)
    loaded = train_head_saes(model, ids, pad_token_id=2, cfg=CFG, heads=heads, cache=tmp_path / "empty")
    for head in heads:
        torch.testing.assert_close(loaded[head].W_dec, trained[head].W_dec)

    weights = next((tmp_path / "data" / "saes").glob("*/sae_weights.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(saes_module.SAEFileError, match="does not match"):
        train_head_saes(model, ids, pad_token_id=2, cfg=CFG, heads=heads, cache=tmp_path / "empty")


def test_the_book_defaults_need_no_sae_training():
    """Every SAE the density chapter's defaults ask for on the test beds is shipped, intact:
    a change to the defaults, the test beds or sae-lens shows here, not as a slow book."""
    from cgclib.book.chapters import get_chapter
    from cgclib.density_map import stability_variants
    from cgclib.models import model_fingerprint
    from cgclib.saes import _cache_key, _stored
    from cgclib.subjects import load_subject

    p = {name: param.default for name, param in get_chapter("density").parameters().items()}
    cfg = HeadSAEConfig(
        expansion=p["sae_expansion"],
        k_fraction=p["sae_k_fraction"],
        epochs=p["sae_epochs"],
        batch_tokens=p["sae_batch_tokens"],
        lr=p["sae_lr"],
        seed=p["seed"],
    )
    stability = stability_variants(cfg, p["stability_seed_offsets"], p["stability_expansions"])
    variants = [cfg] + [variant for _, _, variant in stability]
    for name in (p["model"], p["second_model"]):
        subject = load_subject(name, "cpu", "float32", n_probes=1, n_paragraphs=1)
        calib = subject.calibration(p["calibration_sequences"], p["seq_len"], seed=p["seed"])
        fingerprint, lay = model_fingerprint(subject.model), components.layout(subject.model)
        for variant in variants:
            for head in [(l, h) for l in range(lay.n_layers) for h in range(lay.n_heads)]:
                key = _cache_key(fingerprint, calib, subject.tokenizer.pad_token_id, head, variant)
                assert _stored(key, Path("/nonexistent")) is not None, (name, variant, head)
