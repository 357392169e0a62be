"""The embedded test bed: small models of two architecture families, trained from scratch
on the capability suite.

Each family has four test beds (`CONFIGS`): three *replicates* of one recipe that differ
only in their training seed, `testbed-<family>` (seed 0, the model the chapters load by
default), `testbed-<family>-seed1` and `-seed2`, which tell a property of the recipe from one
of a training run (`cgclib.replication`); and `testbed-<family>-deep`, twice as deep at the
same width. All share suite seed 0, hence one knowledge base and one held-out split.
`member_status` says whether the checkpoint in `data/` was trained with its config's recipe.

`make testbed` (``python -m cgclib.testbed train --all``) trains them all, one after
another; ``--family gpt2`` (or ``llama``) trains one family's. Training is resumable (a
resume file is written every few hundred steps) and the finished checkpoint is written to a
temporary folder and renamed into place, so an interrupted run never leaves a half-written
model in `data/`.

Each checkpoint folder holds `model.safetensors`, `config.json`, the tokenizer files,
`card.json` (everything measured about the model, including the sha256 of its weights),
`README.md` (the same as a model card to read) and `curves.csv` (the training curves).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .components import Family
from .evaluation import EvaluationData, evaluate
from .models import CARD_FILE, WEIGHTS_FILE, resolve_device, sha256_file, testbed_dir
from .storage import atomic_write_bytes, atomic_write_json
from .suite import CapabilitySuite


@dataclass(frozen=True)
class TestbedConfig:
    """Architecture and training recipe of one test-bed model."""

    name: str
    family: Family
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 8
    d_mlp: int = 512  # GPT-2 MLP width; the Llama SwiGLU uses 2/3 of it (rounded)
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 4000
    lr: float = 2e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0  # initialisation and training stream
    suite_seed: int = 0  # the capability suite (knowledge base included)
    split_version: int = 2  # its held-out split (see "Held-out splits" in `cgclib.suite`)
    fact_paraphrases: bool = True  # facts stated in three forms (see `cgclib.grammar.Grammar`)
    eval_every: int = 250
    curve_probes: int = 96  # probes per capability at each point of the training curves
    final_probes: int = 1000  # probes per capability in the final evaluation
    final_paragraphs: int = 2000  # background-language paragraphs in the final evaluation

    @property
    def llama_mlp(self) -> int:
        return int(round(self.d_mlp * 2 / 3 / 8)) * 8


FAMILIES: tuple[Family, ...] = ("gpt2", "llama")


TRAINING_SEEDS = (0, 1, 2)  # the replicates of each family's recipe


def replicate_name(family: Family, seed: int) -> str:
    """The test bed of `family` trained with `seed` (seed 0 is the shipped one)."""
    return f"testbed-{family}" if seed == 0 else f"testbed-{family}-seed{seed}"


def deep_name(family: Family) -> str:
    return f"testbed-{family}-deep"


def _family_configs(family: Family) -> list[TestbedConfig]:
    """One family's test beds: the shipped recipe with three training seeds, and a deeper model."""
    return [
        *(TestbedConfig(name=replicate_name(family, seed), family=family, seed=seed) for seed in TRAINING_SEEDS),
        # a deeper model at the same width gets 1.5x the steps so that it converges: a
        # starting point, to be checked against its curves
        TestbedConfig(name=deep_name(family), family=family, n_layers=12, steps=6000),
    ]


CONFIGS = {cfg.name: cfg for family in FAMILIES for cfg in _family_configs(family)}

TRAINED, UNTRAINED, OTHER_RECIPE = "trained", "not trained", "trained with another recipe"


def member_status(name: str) -> str:
    """Whether the test bed `name` of `CONFIGS` is in the data folder, trained with its
    config's recipe (architecture, steps, seed, held-out split, fact paraphrases), so that it
    can stand for a replicate of that recipe. A card without split version or paraphrase
    flag was trained before they existed: version 1, one fact form."""
    cfg = CONFIGS[name]
    card_path = testbed_dir(name) / CARD_FILE
    if not card_path.is_file():
        return UNTRAINED
    card = json.loads(card_path.read_text())
    trained_as = (
        card["family"],
        card["n_layers"],
        card["d_model"],
        card["training"]["steps"],
        card["training"]["seed"],
        card["suite_seed"],
        card.get("split_version", 1),
        card.get("fact_paraphrases", False),
    )
    recipe = (
        cfg.family,
        cfg.n_layers,
        cfg.d_model,
        cfg.steps,
        cfg.seed,
        cfg.suite_seed,
        cfg.split_version,
        cfg.fact_paraphrases,
    )
    return TRAINED if trained_as == recipe else OTHER_RECIPE


def trained_members(names: list[str]) -> list[str]:
    """The models among `names` that a chapter can study now: any model that is not one of
    the family's test beds, and each test bed whose checkpoint was trained with its recipe.
    Each test bed left out is named, with the command that trains it."""
    ready = []
    for name in names:
        if name in CONFIGS and (status := member_status(name)) != TRAINED:
            print(f"{name}: {status}; `python -m cgclib.testbed train {name}` trains it (`make testbed` the family)")
            continue
        ready.append(name)
    return ready


def build_model(cfg: TestbedConfig, tokenizer) -> torch.nn.Module:
    """A freshly initialised model of the configured family."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if cfg.family == "gpt2":
        gpt2_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=cfg.seq_len,
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.d_mlp,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **ids,
        )
        return GPT2LMHeadModel(gpt2_config)
    if cfg.family == "llama":
        # rope_theta: transformers' typed signature lists only rope_parameters, but the
        # config still accepts (and converts) the legacy keyword at run time
        llama_config = LlamaConfig(  # type: ignore[call-arg]
            vocab_size=len(tokenizer),
            hidden_size=cfg.d_model,
            intermediate_size=cfg.llama_mlp,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_heads,
            max_position_embeddings=cfg.seq_len,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            attention_bias=False,
            **ids,
        )
        return LlamaForCausalLM(llama_config)
    raise ValueError(f"unknown family {cfg.family!r}; use 'gpt2' or 'llama'")


def learning_rate(cfg: TestbedConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: torch.nn.Module, cfg: TestbedConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def _curve_point(model: nn.Module, data: EvaluationData, step: int, cfg: TestbedConfig, train_loss: float) -> dict:
    profile = evaluate(model, data)
    row = {
        "step": step,
        "tokens": step * cfg.batch_size * cfg.seq_len,
        "train_loss": train_loss,
        "perplexity": profile.perplexity,
    }
    row.update({f"acc_{task}": acc for task, acc in profile.accuracy().items()})
    return row


def train(cfg: TestbedConfig, out_dir: Path, device: str = "auto", progress: bool = True) -> dict:
    """Train one test-bed model from scratch (or resume) and write its checkpoint folder."""
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    resume_path = out_dir.parent / f".{out_dir.name}.resume.pt"
    suite = CapabilitySuite(cfg.suite_seed, cfg.split_version, cfg.fact_paraphrases)
    tokenizer = suite.tokenizer()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tokenizer).to(dev)
    optimizer = _optimizer(model, cfg)
    stream = suite.training_batches(cfg.seed, cfg.batch_size, cfg.seq_len)
    curve_data = EvaluationData.for_testbed(suite, tokenizer, cfg.curve_probes, 200, seed=1)
    curves, start, elapsed = [], 0, 0.0

    if resume_path.is_file():
        state = torch.load(resume_path, weights_only=True)
        if state["config"] == asdict(cfg):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, elapsed, curves = state["step"], state["elapsed"], state["curves"]
            for _ in range(start):  # replay the data stream to where training stopped
                next(stream)
            torch.set_rng_state(state["torch_rng"])
            print(f"{cfg.name}: resuming at step {start}")

    model.train()
    losses = []
    t0 = time.time() - elapsed
    bar = tqdm(range(start, cfg.steps), desc=cfg.name, disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        inputs, labels = next(stream)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        loss = model(input_ids=inputs.to(dev), labels=labels.to(dev)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            curves.append(_curve_point(model, curve_data, step + 1, cfg, float(np.mean(losses[-cfg.eval_every :]))))
            bar.set_postfix(loss=f"{curves[-1]['train_loss']:.3f}", ppl=f"{curves[-1]['perplexity']:.2f}")
            model.train()
            atomic_write_bytes(
                resume_path,
                _serialize(
                    {
                        "config": asdict(cfg),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step + 1,
                        "elapsed": time.time() - t0,
                        "curves": curves,
                        "torch_rng": torch.get_rng_state(),
                    }
                ),
            )
    train_seconds = time.time() - t0

    model.eval()
    final = EvaluationData.for_testbed(suite, tokenizer, cfg.final_probes, cfg.final_paragraphs, seed=0)
    profile = evaluate(model.cpu(), final)
    card = _write_checkpoint(cfg, model, tokenizer, profile, final, curves, train_seconds, dev, out_dir)
    resume_path.unlink(missing_ok=True)
    return card


def _serialize(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write_checkpoint(
    cfg: TestbedConfig, model: nn.Module, tokenizer, profile, final, curves, seconds, dev, out_dir: Path
) -> dict:
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained: Any = model.save_pretrained  # a transformers PreTrainedModel method
    save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    pd.DataFrame(curves).to_csv(tmp / "curves.csv", index=False, float_format="%.6g")
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": cfg.name,
        "family": cfg.family,
        "architecture": type(model).__name__,
        "n_parameters": n_params,
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "head_dim": cfg.d_model // cfg.n_heads,
        "d_mlp": cfg.d_mlp if cfg.family == "gpt2" else cfg.llama_mlp,
        "vocab_size": len(tokenizer),
        "suite_seed": cfg.suite_seed,
        "split_version": cfg.split_version,
        "fact_paraphrases": cfg.fact_paraphrases,
        "training": {
            **asdict(cfg),
            "tokens": cfg.steps * cfg.batch_size * cfg.seq_len,
            "seconds": round(seconds, 1),
            "device": str(dev),
            "torch": torch.__version__,
            "date": dt.date.today().isoformat(),
        },
        "evaluation": {
            "probes_per_capability": cfg.final_probes,
            "accuracy": {t: round(r.accuracy, 4) for t, r in profile.capabilities.items()},
            "probes": {t: int(len(r.correct)) for t, r in profile.capabilities.items()},
            "perplexity": round(profile.perplexity, 4),
            "perplexity_floor": round(final.perplexity_floor, 4),
            "perplexity_tokens": profile.language.n_tokens,
        },
        "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
    }
    atomic_write_json(tmp / CARD_FILE, card)
    (tmp / "README.md").write_text(model_card_markdown(card))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return card


def model_card_markdown(card: dict) -> str:
    ev, tr = card["evaluation"], card["training"]
    rows = "\n".join(f"| {t} | {a:.1%} | {ev['probes'][t]} |" for t, a in ev["accuracy"].items())
    architecture = (
        f"{card['n_layers']} layers, {card['n_heads']} heads of dimension {card['head_dim']}, "
        f"d_model {card['d_model']}, MLP {card['d_mlp']}, vocabulary {card['vocab_size']}"
    )
    training = (
        f"{tr['steps']} steps of {tr['batch_size']} x {tr['seq_len']} tokens ({tr['tokens']:,} tokens), "
        f"seed {tr['seed']}, {tr['seconds'] / 60:.1f} minutes on {tr['device']} (torch {tr['torch']}, {tr['date']})"
    )
    perplexity = (
        f"{ev['perplexity']:.3f} on {ev['perplexity_tokens']:,} held-out tokens "
        f"(the grammar's own floor: {ev['perplexity_floor']:.3f})"
    )
    return f"""# {card["name"]}

A {card["architecture"]} trained from scratch by `cgclib.testbed` on the capability suite
(suite seed {card["suite_seed"]}, held-out split version {card["split_version"]}, fact paraphrases
{"on" if card["fact_paraphrases"] else "off"}) of the CGC research companion. Retrain with `make testbed`.

- architecture: {architecture}
- parameters: {card["n_parameters"]:,}
- training: {training}
- background-language perplexity: {perplexity}
- weights sha256: `{card["weights_sha256"]}`

| capability | exact match (held out) | probes |
|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgclib.testbed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train test-bed models from scratch")
    p.add_argument("names", nargs="*", help=f"which test beds ({', '.join(CONFIGS)})")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="train every test bed")
    which.add_argument("--family", choices=FAMILIES, help="train every test bed of one family")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps (for trials)")
    p.add_argument("--out", type=Path, default=None, help="folder for the checkpoints (default: data/)")
    args = parser.parse_args(argv)
    if (args.all or args.family) and args.names:
        parser.error("name test beds or pass --all or --family, not both")
    if args.all or args.family:
        names = [n for n, cfg in CONFIGS.items() if args.all or cfg.family == args.family]
    else:
        names = args.names
    unknown = [n for n in names if n not in CONFIGS]
    if not names or unknown:
        parser.error(f"name test beds to train ({', '.join(CONFIGS)}) or pass --all or --family")
    for name in names:
        cfg = CONFIGS[name]
        if args.steps:
            from dataclasses import replace

            cfg = replace(cfg, steps=args.steps)
        out = (args.out / name) if args.out else testbed_dir(name)
        card = train(cfg, out, device=args.device)
        print(json.dumps(card["evaluation"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
