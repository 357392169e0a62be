"""Small random-initialised stand-ins of real architectures, with a local text, for running
the paper-scale code path where no weights can be downloaded.

A stand-in is a folder that `transformers` loads like any checkpoint: a config of the real
architecture (GPT-2's learned positions and `Conv1D` layers; Mistral's grouped-query
attention and sliding window; Qwen2's biased q/k/v projections) at a small width, random
weights in safetensors, and a byte-level BPE tokenizer trained on the local text, without a
pad token, as GPT-2's has none. Its numbers mean nothing about compression; what it tests is
that every chapter runs, end to end, on models and text that are not the test beds.

    python -m cgclib.standins /tmp/standins     # writes gpt2/, mistral/, qwen2/ and text.txt
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grammar import Grammar

ARCHITECTURES = ("gpt2", "mistral", "qwen2")
TEXT_FILE = "text.txt"


def write_text(path: Path, n_paragraphs: int = 3000, seed: int = 0) -> Path:
    """English-like paragraphs of the test beds' background grammar, one per line."""
    grammar, rng = Grammar(), np.random.default_rng(seed)
    lines = []
    for _ in range(n_paragraphs):
        tokens = [t for t in grammar.paragraph(rng).tokens if t != "<eos>"]
        lines.append(" ".join(tokens).replace(" .", ".").replace(" ,", ",").replace(" 's", "'s"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_tokenizer(text_path: Path, vocab_size: int = 512):
    """A GPT-2-style byte-level BPE tokenizer trained on the text: no pad token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    special = ["<|endoftext|>"]
    bpe.train([str(text_path)], vocab_size=vocab_size, min_frequency=2, special_tokens=special, show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def config(architecture: str, vocab_size: int, n_layers: int = 6, width: int = 64, positions: int = 256):
    """The config of a stand-in of `architecture`: 4 heads of 16 dimensions, 2 key-value
    heads where the architecture groups queries."""
    from transformers import GPT2Config, MistralConfig, Qwen2Config

    common: dict[str, Any] = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    if architecture == "gpt2":
        return GPT2Config(n_positions=positions, n_embd=width, n_layer=n_layers, n_head=4, n_inner=4 * width, **common)
    grouped: dict[str, Any] = dict(
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        **common,
    )
    if architecture == "mistral":
        return MistralConfig(sliding_window=positions // 2, **grouped)
    if architecture == "qwen2":
        return Qwen2Config(**grouped)
    raise ValueError(f"unknown architecture {architecture!r}; stand-ins exist for {', '.join(ARCHITECTURES)}")


def write_standins(folder: Path, n_layers: int = 6, seed: int = 0) -> dict[str, Path]:
    """Write the text and one stand-in per architecture under `folder`; return their paths
    (the architectures' names, and `text`)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    text = write_text(folder / TEXT_FILE, seed=seed)
    tokenizer = train_tokenizer(text)
    paths = {"text": text}
    for architecture in ARCHITECTURES:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config(architecture, len(tokenizer), n_layers))
        paths[architecture] = folder / architecture
        model.save_pretrained(paths[architecture])
        tokenizer.save_pretrained(paths[architecture])
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cgclib.standins FOLDER")
    for name, path in write_standins(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
