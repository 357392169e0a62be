"""`cgclib.estimate` against counted work: the orthogonality chapter's stages run through the
library functions its notebook calls, on a GPT-2 stand-in with small parameters, with
hooks counting the tokens every block and the language-model head actually process; and
the FLOPs per token of the config against PyTorch's FLOP counter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib import allocation, component_phase, components, estimate
from cgclib.ablation import head_ablation_effects
from cgclib.book.chapters import get_chapter
from cgclib.book.cli import main
from cgclib.density_map import head_density_map
from cgclib.head_statistics import head_output_moments
from cgclib.hooks import registered
from cgclib.importance import head_importance
from cgclib.pruning import input_square_sums
from cgclib.saes import IGNORE_SHIPPED, HeadSAEConfig
from cgclib.subjects import load_subject

from .conftest import ROOT

TOLERANCE = 0.10
SMALL = dict(
    second_model="",
    calibration_sequences=32,
    measure_sequences=24,
    seq_len=32,
    sae_epochs=1,
    sae_batch_tokens=256,
    pruning_sequences=8,
    n_paragraphs=2,
    component_paragraphs=1,
    sparsities=[0.5],
    head_fractions=[0.5],
    component_ratios=[0.5, 0.7, 0.9],
)


class TokenCounter:
    """Tokens entering each block of a model and its language-model head (forward pre-hooks)."""

    def __init__(self):
        self.block_tokens = 0
        self.head_tokens = 0

    def install(self, model):
        def block(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.block_tokens += hidden.shape[:-1].numel()

        def head(module, args):
            self.head_tokens += args[0].shape[:-1].numel()

        return registered(
            lambda: (
                [b.register_forward_pre_hook(block, with_kwargs=True) for b in components.blocks(model)]
                + [components.unembedding(model).register_forward_pre_hook(head)]
            )
        )

    def counted(self, model, run) -> tuple[int, int]:
        """The tokens through the blocks and the head while `run()` runs."""
        before = (self.block_tokens, self.head_tokens)
        with self.install(model):
            run()
        return self.block_tokens - before[0], self.head_tokens - before[1]


@pytest.fixture(scope="module")
def counted_orthogonality(standins, tmp_path_factory):
    """The stages of the orthogonality chapter on the GPT-2 stand-in with `SMALL` parameters:
    {stage index: (block tokens, head tokens)} as counted, and the chapter's parameters."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CGC_CACHE_DIR", str(cache))
        patch.setenv(IGNORE_SHIPPED, "1")
        values = {n: p.default for n, p in get_chapter("orthogonality", ROOT).parameters().items()}
        values.update(SMALL, model=str(standins["gpt2"]), text=str(standins["text"]))
        v = values
        subject = load_subject(
            v["model"], "cpu", "float32", n_probes=v["n_probes"], n_paragraphs=v["n_paragraphs"], text=v["text"]
        )
        model, pad = subject.model, subject.tokenizer.pad_token_id
        cfg = HeadSAEConfig(
            expansion=v["sae_expansion"], k_fraction=v["sae_k_fraction"], epochs=v["sae_epochs"], batch_tokens=256
        )
        calib = subject.calibration(v["pruning_sequences"], v["seq_len"], seed=0)
        small = subject.data.subset(v["component_probes"], v["component_paragraphs"])
        counter = TokenCounter()
        found = {}

        def run(stage, fn):
            found[stage] = counter.counted(model, fn)

        run("dense", lambda: [subject.evaluate() for _ in range(2)])
        dmap = {}
        run(
            "density",
            lambda: dmap.setdefault(
                "map",
                head_density_map(subject, cfg, v["calibration_sequences"], v["measure_sequences"], v["seq_len"], 0),
            ),
        )
        run("importance", lambda: head_importance(model, calib, pad))
        moments = {}
        run("moments", lambda: moments.setdefault("m", head_output_moments(model, calib, pad)))
        run(
            "ablation",
            lambda: head_ablation_effects(
                model, subject.data, progress=False, cache=cache / "ablations", means=moments["m"].means()
            ),
        )
        sums = {}
        run(
            "wanda",
            lambda: sums.setdefault("s", input_square_sums(model, calib, pad, components.all_linear_layers(model))),
        )
        scores = allocation.block_scores(model, sums["s"], dmap["map"].density, v["owl_m"])
        scores["participation"] = np.arange(len(scores["uniform"]), dtype=float)
        run(
            "allocations",
            lambda: allocation.evaluate_block_allocations(
                model, subject.data, calib, pad, scores, v["sparsities"], v["owl_lambda"], progress=False
            ),
        )
        index = dmap["map"].density.index
        rankings = {str(i): pd.Series(np.random.default_rng(i).random(len(index)), index=index) for i in range(5)}
        run(
            "head pruning",
            lambda: allocation.evaluate_head_pruning(
                model, subject.data, rankings, v["head_fractions"], progress=False
            ),
        )
        ratios = v["component_ratios"]
        run("head sweep", lambda: component_phase.head_sweep(model, small, calib, pad, ratios, progress=False))
        run("block sweep", lambda: component_phase.block_sweep(model, small, calib, pad, ratios, progress=False))
    return found, values


def test_estimate_matches_the_work_counted_in_every_stage_of_orthogonality(counted_orthogonality):
    found, values = counted_orthogonality
    stages = estimate.estimate_chapter("orthogonality", values, torch.float32).stages
    names = [s.name for s in stages]
    assert not any(n.startswith("random orderings") for n in names)  # the stand-in has no probes
    groups = {  # counted stage: the estimate's stages that make it up, by their names' beginnings
        "dense": ["dense evaluation"],
        "density": ["SAE training", "SAE features"],
        "importance": ["importance signals"],
        "moments": ["head output moments"],
        "ablation": ["head ablation"],
        "wanda": ["Wanda input norms"],
        "allocations": ["allocations"],
        "head pruning": ["head pruning"],
        "head sweep": ["per-head sweep"],
        "block sweep": ["per-block sweep"],
    }
    assert sum(len(g) for g in groups.values()) == len(stages)
    for counted_stage, prefixes in groups.items():
        chosen = [s for s in stages if any(s.name.startswith(p) for p in prefixes)]
        assert len(chosen) == len(prefixes), (counted_stage, names)
        block_tokens, head_tokens = found[counted_stage]
        estimated_blocks = sum(s.work.block_tokens for s in chosen)
        estimated_head = sum(s.work.head_tokens for s in chosen)
        assert estimated_blocks == pytest.approx(block_tokens, rel=TOLERANCE), counted_stage
        assert estimated_head == pytest.approx(head_tokens, rel=TOLERANCE, abs=0), counted_stage


@pytest.mark.parametrize("architecture", ["gpt2", "qwen2"])
def test_flops_per_token_match_pytorchs_flop_counter(architecture):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    from cgclib.standins import config

    cfg = config(architecture, vocab_size=512)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()  # attention as bmm
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=torch.randint(0, 512, (4, 64)))
    arch = estimate.Architecture.from_config(cfg)
    flops = estimate.passes(arch, estimate.Rows.sequences(4, 64), arch.n_layers, 1).flops
    assert flops == pytest.approx(counter.get_total_flops(), rel=TOLERANCE)


def test_named_device_table():
    assert estimate.device_peak("H200") is estimate.DEVICE_PEAKS["h200"]
    assert estimate.device_peak("rtx-4090") is estimate.DEVICE_PEAKS["rtx4090"]
    peak = estimate.DEVICE_PEAKS["a100"]
    assert estimate.named_throughput("a100", torch.bfloat16) == estimate.ASSUMED_EFFICIENCY * peak.bf16
    assert estimate.named_throughput("a100", torch.float32) == estimate.ASSUMED_EFFICIENCY * peak.fp32
    with pytest.raises(estimate.EstimateError, match="known devices: h200"):
        estimate.device_peak("tpu-v5")


def test_cli_prints_every_stage_and_a_total(standins, capsys):
    argv = ["estimate", "orthogonality", "-p", "model", str(standins["gpt2"]), "-p", "second_model", ""]
    assert main([*argv, "--device-name", "h200"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "per-head sweep" in out and "not counted:" in out
    assert out.splitlines()[-3].startswith("total")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["estimate", "no_such_chapter"], "unknown chapter 'no_such_chapter'"),
        (["estimate", "orthogonality", "-p", "no_such_parameter", "1"], "has no parameter 'no_such_parameter'"),
        (["estimate", "orthogonality", "-p", "seq_len", "long"], "expects an integer"),
        (["estimate", "orthogonality", "-p", "seq_len", "0"], "seq_len"),
        (["estimate", "orthogonality", "--device-name", "abacus"], "unknown device 'abacus'"),
        (["estimate", "testbed"], "no cost model for chapter 'testbed'"),
    ],
)
def test_cli_refuses_what_it_cannot_estimate(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_hub_name_offline_without_a_cached_config_says_what_to_do(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "cgc-no-such-org/never-cached-model"
    with pytest.raises(estimate.EstimateError, match="local folder holding its config.json"):
        estimate.model_config(name)
    assert main(["estimate", "orthogonality", "-p", "model", name, "-p", "second_model", ""]) == 2
    assert "cannot be reached" in capsys.readouterr().err
