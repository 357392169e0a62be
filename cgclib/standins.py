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

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grammar import Grammar

ARCHITECTURES = ("gpt2", "mistral", "qwen2")
TEXT_FILE = "text.txt"
TASKS_FOLDER = "tasks"
TASKS = ("standin_next_word", "standin_last_word")  # local lm-eval tasks: a stand-in's capabilities


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


def write_tasks(folder: Path, n_docs: int = 200, seed: int = 0) -> Path:
    """Two multiple-choice lm-eval tasks in `folder` (`TASKS`), in the form of the papers'
    zero-shot tasks, from the background grammar: which of three words comes next in a
    sentence, and which ends it. Stand-ins are random, so they score near chance: the tasks
    are there for the chapters' capability code to run on, not to be solved."""
    import yaml

    grammar, rng = Grammar(), np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs: dict[str, list[dict]] = {task: [] for task in TASKS}
    while min(map(len, docs.values())) < n_docs:
        words = [t for t in grammar.paragraph(rng).tokens if t.isalpha()]
        if len(words) < 8:
            continue
        cut = int(rng.integers(3, len(words) - 1))
        for task, (context, answer) in zip(TASKS, ((words[:cut], words[cut]), (words[:-1], words[-1])), strict=True):
            others = sorted(set(words) - {answer})
            if len(others) < 2:
                continue
            choices = [answer, *(str(w) for w in rng.choice(others, size=2, replace=False))]
            order = rng.permutation(3)
            docs[task].append(
                {"context": " ".join(context), "choices": [choices[i] for i in order], "label": int(np.argmin(order))}
            )
    for task, rows in docs.items():
        data = folder / f"{task}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows[:n_docs]), encoding="utf-8")
        spec = {
            "task": task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "{{context}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{label}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder


def write_standins(folder: Path, n_layers: int = 6, seed: int = 0) -> dict[str, Path]:
    """Write the text, the local tasks and one stand-in per architecture under `folder`;
    return their paths (the architectures' names, `text` and `tasks`)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    text = write_text(folder / TEXT_FILE, seed=seed)
    tokenizer = train_tokenizer(text)
    paths = {"text": text, "tasks": write_tasks(folder / TASKS_FOLDER, seed=seed)}
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
