"""Training a test bed: deterministic for a seed, resumable without changing the result,
and written as a complete checkpoint that `load_model` accepts."""

import json
from dataclasses import replace

import pytest

from cgclib import testbed
from cgclib.models import load_model, sha256_file

TINY = testbed.TestbedConfig(
    name="testbed-gpt2",
    family="gpt2",
    d_model=32,
    n_layers=2,
    n_heads=4,
    d_mlp=64,
    seq_len=128,
    batch_size=4,
    steps=6,
    warmup_steps=2,
    eval_every=3,
    curve_probes=4,
    final_probes=8,
    final_paragraphs=8,
)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_same_seed_gives_identical_weights_and_a_loadable_checkpoint(tmp_path, monkeypatch, family):
    cfg = replace(TINY, family=family, name=f"testbed-{family}")
    a = testbed.train(cfg, tmp_path / "a" / cfg.name, progress=False)
    b = testbed.train(cfg, tmp_path / "b" / cfg.name, progress=False)
    assert a["weights_sha256"] == b["weights_sha256"]
    folder = tmp_path / "a" / cfg.name
    assert sha256_file(folder / "model.safetensors") == a["weights_sha256"]
    assert json.loads((folder / "card.json").read_text()) == a
    assert set(a["evaluation"]["accuracy"]) == {
        "copy",
        "kv_recall",
        "dyck",
        "addition",
        "fact_recall",
        "sorting",
        "reversal",
    }
    assert not list((tmp_path / "a").glob(".*"))  # no resume file or temporary folder is left
    monkeypatch.setenv("CGC_DATA_DIR", str(tmp_path / "a"))
    loaded = load_model(cfg.name, device="cpu")
    assert loaded.card["weights_sha256"] == a["weights_sha256"]


def test_an_interrupted_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    straight = testbed.train(TINY, tmp_path / "straight" / TINY.name, progress=False)

    real_curve_point = testbed._curve_point
    calls = {"n": 0}

    def interrupt_on_second_point(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_curve_point(*args, **kwargs)

    out = tmp_path / "resumed" / TINY.name
    monkeypatch.setattr(testbed, "_curve_point", interrupt_on_second_point)
    with pytest.raises(KeyboardInterrupt):
        testbed.train(TINY, out, progress=False)
    assert (out.parent / f".{TINY.name}.resume.pt").is_file() and not out.exists()
    monkeypatch.setattr(testbed, "_curve_point", real_curve_point)
    resumed = testbed.train(TINY, out, progress=False)
    assert resumed["weights_sha256"] == straight["weights_sha256"]
