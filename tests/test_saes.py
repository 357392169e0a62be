"""Per-head SAEs: trained with sae-lens on streamed activations, cached by content key,
loadable with sae_lens.SAE.load_from_disk, and measured on held-out tokens."""

import torch
from sae_lens import SAE

from cgclib.saes import HeadSAEConfig, head_feature_statistics, stream_head_activations, token_mask, train_head_saes

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

    train_head_saes(model, ids, pad_token_id=2, cfg=HeadSAEConfig(expansion=4, epochs=2, batch_tokens=128, seed=1),
                    heads=[(0, 0)], cache=tmp_path)
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
    from cgclib.models import load_model
    from cgclib.saes import model_fingerprint

    model = load_model("testbed-llama", device="cpu").model
    before = model_fingerprint(model)
    with torch.no_grad():  # prune the last rows of a large weight, far from its first entries
        model.model.layers[3].mlp.down_proj.weight[-8:, :] = 0
    assert model_fingerprint(model) != before
