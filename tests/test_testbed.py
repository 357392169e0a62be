"""Training a test bed: deterministic for a seed, resumable without changing the result,
and written as a complete checkpoint that `load_model` accepts; the family of test beds
and how they are selected for training."""

import json
from dataclasses import asdict, replace

import pytest

from cgclib import testbed
from cgclib.models import TESTBEDS, ModelUnavailableError, load_model, sha256_file
from cgclib.subjects import load_subject
from cgclib.suite import CapabilitySuite

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
    assert a["split_version"] == 2 and "held-out split version 2" in (folder / "README.md").read_text()
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
    subject = load_subject(cfg.name, device="cpu", n_probes=4, n_paragraphs=4)
    assert subject.suite.split_version == 2 and subject.suite.fact_paraphrases
    assert a["fact_paraphrases"] and "fact paraphrases\non" in (folder / "README.md").read_text()


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


def test_shipped_test_beds_are_evaluated_on_the_split_they_were_trained_on():
    """Cards written before split versions existed have none: those models used version 1."""
    for name in TESTBEDS:
        subject = load_subject(name, device="cpu", n_probes=4, n_paragraphs=4)
        assert subject.suite.split_version == subject.loaded.card.get("split_version", 1)


def test_each_family_has_three_seeds_of_the_shipped_recipe_and_a_deeper_model():
    assert list(testbed.CONFIGS) == [
        f"testbed-{family}{suffix}" for family in ("gpt2", "llama") for suffix in ("", "-seed1", "-seed2", "-deep")
    ]
    assert all(name == cfg.name for name, cfg in testbed.CONFIGS.items())
    assert set(TESTBEDS) <= set(testbed.CONFIGS)
    for family in ("gpt2", "llama"):
        shipped = asdict(testbed.CONFIGS[f"testbed-{family}"])
        assert shipped["seed"] == 0 and shipped["family"] == family
        for suffix, changed in [("-seed1", {"seed": 1}), ("-seed2", {"seed": 2}), ("-deep", {"n_layers": 12})]:
            cfg = asdict(testbed.CONFIGS[f"testbed-{family}{suffix}"])
            expected = {**shipped, "name": f"testbed-{family}{suffix}", **changed}
            if suffix == "-deep":
                expected["steps"] = 6000  # 1.5x the shipped recipe's 4000
            assert cfg == expected
    assert {cfg.suite_seed for cfg in testbed.CONFIGS.values()} == {0}
    assert {cfg.split_version for cfg in testbed.CONFIGS.values()} == {2}


def test_every_test_bed_is_under_25_mb():
    tokenizer = CapabilitySuite(0).tokenizer()
    for cfg in testbed.CONFIGS.values():
        model = testbed.build_model(cfg, tokenizer)
        assert model.config.num_hidden_layers == cfg.n_layers
        assert sum(p.numel() for p in model.parameters()) * 4 < 25e6, cfg.name


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--all"], list(testbed.CONFIGS)),
        (["--family", "gpt2"], ["testbed-gpt2", "testbed-gpt2-seed1", "testbed-gpt2-seed2", "testbed-gpt2-deep"]),
        (["--family", "llama"], ["testbed-llama", "testbed-llama-seed1", "testbed-llama-seed2", "testbed-llama-deep"]),
        (["testbed-llama-deep", "testbed-gpt2"], ["testbed-llama-deep", "testbed-gpt2"]),
    ],
)
def test_train_selects_test_beds_by_name_family_or_all(monkeypatch, tmp_path, argv, expected):
    trained = []

    def fake_train(cfg, out, device):
        trained.append(cfg.name)
        assert out == tmp_path / cfg.name
        return {"evaluation": {}}

    monkeypatch.setattr(testbed, "train", fake_train)
    assert testbed.main(["train", *argv, "--out", str(tmp_path)]) == 0
    assert trained == expected


@pytest.mark.parametrize(
    "argv", [[], ["--family", "opt"], ["--all", "--family", "gpt2"], ["--family", "gpt2", "testbed-gpt2"], ["nope"]]
)
def test_train_refuses_an_unclear_selection(monkeypatch, argv):
    monkeypatch.setattr(testbed, "train", lambda *args, **kwargs: pytest.fail("nothing should be trained"))
    with pytest.raises(SystemExit):
        testbed.main(["train", *argv])


def test_an_untrained_family_member_says_how_to_train_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CGC_DATA_DIR", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="testbed-gpt2-seed1' has not been trained yet.*make testbed"):
        load_model("testbed-gpt2-seed1", device="cpu")


def test_a_member_counts_as_a_replicate_only_when_trained_with_its_recipe(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CGC_DATA_DIR", str(tmp_path))
    name = "testbed-llama-seed2"
    assert testbed.member_status(name) == testbed.UNTRAINED
    cfg = replace(testbed.CONFIGS[name], steps=TINY.steps, final_probes=4, final_paragraphs=4, curve_probes=4)
    card = testbed.train(cfg, tmp_path / name, progress=False)
    assert testbed.member_status(name) == testbed.OTHER_RECIPE  # trained for fewer steps
    card["training"]["steps"] = testbed.CONFIGS[name].steps
    (tmp_path / name / "card.json").write_text(json.dumps(card))
    assert testbed.member_status(name) == testbed.TRAINED
    assert testbed.trained_members([name, "testbed-gpt2-deep", "gpt2-medium"]) == [name, "gpt2-medium"]
    assert "python -m cgclib.testbed train testbed-gpt2-deep" in capsys.readouterr().out
    for key in ("split_version", "fact_paraphrases"):  # a card from before the flag existed
        stale = {k: v for k, v in card.items() if k != key}
        (tmp_path / name / "card.json").write_text(json.dumps(stale))
        assert testbed.member_status(name) == testbed.OTHER_RECIPE, key
    assert [testbed.replicate_name("gpt2", s) for s in testbed.TRAINING_SEEDS] == [
        "testbed-gpt2",
        "testbed-gpt2-seed1",
        "testbed-gpt2-seed2",
    ]
