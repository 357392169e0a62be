"""Capabilities of any model, scored by lm-evaluation-harness (`lm-eval`).

The capability suite's probes exist for the test beds only. A pretrained model's
capabilities are read, as the pruning papers read them, from the zero-shot tasks of
lm-evaluation-harness (`ZERO_SHOT_TASKS`: BoolQ, RTE, HellaSwag, WinoGrande, ARC-e, ARC-c,
OpenBookQA). `evaluate_tasks` scores a model held in memory, compressed or not, so that a
chapter measures the model it has just pruned rather than a checkpoint on disk.

`export_probe_tasks` writes the suite's held-out probes as lm-eval tasks (local JSON lines
and a task YAML per capability): `loglikelihood` requests whose `acc` is lm-eval's
`is_greedy`, the answer being the model's greedy continuation at every token, which is the
suite's exact match. A test checks that lm-eval and `cgclib.evaluation` give a test bed the
same scores. Each exported task also carries training examples as a `train` split, for
few-shot prompts of models that were never trained on the suite's format (`num_fewshot`).

`task_probes` turns lm-eval tasks into the probe sets `cgclib.evaluation` scores: lm-eval
builds every request (prompt, few-shot examples, choices) and tokenizes it as its own
Hugging Face model does; the rows then go through the same forward passes as the language
text, under whatever hooks a chapter has installed (ablations, resumed blocks). A probe of a
multiple-choice task is right when its right choice is the most likely (lm-eval's `acc`).
This is how the chapters give a model without a capability suite its capability records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from .corpus import offline_unless_reachable
from .evaluation import ProbeSet
from .suite import CapabilitySuite, Example

ZERO_SHOT_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
ZERO_SHOT = "zero-shot"  # a chapter's `tasks` entry that stands for ZERO_SHOT_TASKS
TASK_PREFIX = "cgc_"  # exported capability tasks are named cgc_<capability>
HEADLINE = {"loglikelihood": "acc", "multiple_choice": "acc"}  # lm-eval's metric a chapter reads


class HarnessError(RuntimeError):
    """A task lm-eval cannot run here: unknown, or its data unreachable offline."""


def _context(example: Example, bos_token: str) -> str:
    return " ".join([bos_token, example.marker, *example.prompt])


def _rows(examples: list[Example], bos_token: str) -> list[dict[str, str]]:
    # the answer carries its leading space: lm-eval appends a loglikelihood continuation as is
    return [{"context": _context(e, bos_token), "answer": " " + " ".join(e.answer)} for e in examples]


def export_probe_tasks(
    suite: CapabilitySuite, bos_token: str, folder: Path, n_probes: int, seed: int = 0, n_train: int = 16
) -> list[str]:
    """Write each capability's `n_probes` held-out probes (drawn as `cgclib.evaluation` draws
    them with `seed`) and `n_train` training examples as an lm-eval task under `folder`;
    return the task names. `bos_token` starts every context, as the suite's probes start."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for task in suite.tasks:
        probes = suite.probes(task, n_probes, seed=seed)
        train = suite.probes(task, n_train, seed=seed, split="train")
        files = {}
        for split, examples in (("test", probes), ("train", train)):
            path = folder / f"{task}.{split}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in _rows(examples, bos_token)))
            files[split] = str(path.resolve())
        name = f"{TASK_PREFIX}{task}"
        spec = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": files},
            "test_split": "test",
            "fewshot_split": "train",
            "output_type": "loglikelihood",
            "doc_to_text": "{{context}}",
            "doc_to_target": "{{answer}}",
            "target_delimiter": "",  # in few-shot prompts too: the answer starts with its space
            "fewshot_delimiter": " ; ",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            ],
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        names.append(name)
    return names


def harness_model(model: torch.nn.Module, tokenizer, batch_size: int = 16):
    """lm-eval's Hugging Face model around a model held in memory (no reload, no copy)."""
    from lm_eval.models.huggingface import HFLM

    if tokenizer.pad_token_id is None:  # GPT-2 style tokenizers have none; lm-eval pads
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))


def evaluate_tasks(
    model: torch.nn.Module,
    tokenizer,
    tasks: list[str] | tuple[str, ...],
    include_path: Path | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Score `model` on lm-eval `tasks` (registered ones, or those in `include_path`): per
    task, lm-eval's metrics (`acc`, and `acc_norm` where the task has it) with their
    standard errors. Offline, a task whose data are not cached fails at once, naming it."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"lm-eval knows no task {', '.join(unknown)}")
    was_training = model.training
    model.eval()
    try:
        with offline_unless_reachable():
            results = simple_evaluate(
                model=harness_model(model, tokenizer, batch_size),
                tasks=list(tasks),
                task_manager=manager,
                num_fewshot=num_fewshot,
                limit=limit,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                log_samples=False,
                bootstrap_iters=0,
            )
    except (ConnectionError, OSError) as exc:
        raise HarnessError(
            f"lm-eval could not load the data of {', '.join(tasks)} ({type(exc).__name__}): run where the "
            "Hugging Face hub is reachable, or with the datasets in its cache"
        ) from exc
    finally:
        model.train(was_training)
    return {task: _metrics(values) for task, values in results["results"].items()}


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's 'acc,none' keys as 'acc'; its alias entry dropped."""
    return {key.split(",")[0]: value for key, value in values.items() if key != "alias"}


def expand_tasks(tasks: list[str] | tuple[str, ...]) -> list[str]:
    """Task names with `ZERO_SHOT` replaced by the seven zero-shot tasks, duplicates dropped."""
    names: list[str] = []
    for task in tasks:
        for name in ZERO_SHOT_TASKS if task == ZERO_SHOT else (task,):
            if name not in names:
                names.append(name)
    return names


def _encoded_requests(model: torch.nn.Module, tokenizer, instances: list) -> list[tuple[list[int], int]]:
    """Each request's context and continuation tokens, as lm-eval's Hugging Face model
    encodes them (trailing spaces of the context moved to the continuation, a prefix token
    for an empty context, left truncation to the model's length); returned as one row each,
    with the number of its last tokens that are scored (the continuation's)."""
    from lm_eval.models.huggingface import HFLM

    class Encoder(HFLM):
        """lm-eval's model, stopped after tokenizing: what it would score, not the scores."""

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            self.encoded = [(context, continuation) for _, context, continuation in requests]
            return [(0.0, False)] * len(requests)

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoder = Encoder(pretrained=model, tokenizer=tokenizer, batch_size=1, device=str(next(model.parameters()).device))
    encoder.loglikelihood(instances, disable_tqdm=True)
    rows = []
    for context, continuation in encoder.encoded:
        row = (context + continuation)[-(encoder.max_length + 1) :]
        rows.append((row, min(len(continuation), len(row) - 1)))
    return rows


def task_probes(
    model: torch.nn.Module,
    tokenizer,
    tasks: list[str] | tuple[str, ...],
    include_path: Path | str | None = None,
    limit: int | None = None,
    num_fewshot: int = 0,
    seed: int = 0,
) -> dict[str, ProbeSet]:
    """The first `limit` documents of each lm-eval task (`ZERO_SHOT` expands to
    `ZERO_SHOT_TASKS`; `include_path` adds a folder of task YAMLs) as probe sets, with
    `num_fewshot` in-context examples drawn with `seed`. Multiple-choice tasks give one row
    per choice; loglikelihood tasks (the suite's exported probes) one row per document,
    right on exact match. Offline, a task whose data are not cached fails at once."""
    from lm_eval.tasks import TaskManager

    names = expand_tasks(tasks)
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        where = f" (nor does {include_path})" if include_path else ""
        raise HarnessError(f"lm-eval knows no task {', '.join(unknown)}{where}")
    try:
        with offline_unless_reachable():
            loaded = manager.load(names)["tasks"]
    except (ConnectionError, OSError) as exc:
        raise HarnessError(
            f"lm-eval could not load the data of {', '.join(names)} ({type(exc).__name__}): run where the "
            "Hugging Face hub is reachable, with the datasets in its cache, or with tasks [] (no capability records)"
        ) from exc
    probes = {}
    for name, task in loaded.items():
        kind = task.get_config("output_type")
        if kind not in HEADLINE:
            raise HarnessError(f"task {name} is {kind}: only loglikelihood and multiple-choice tasks can be probes")
        task.set_config(key="num_fewshot", value=num_fewshot)
        task.set_fewshot_seed(seed=seed)
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        instances = sorted(task.instances, key=lambda i: (i.doc_id, i.idx))
        probes[name] = _probe_set(name, task, instances, _encoded_requests(model, tokenizer, instances), tokenizer)
    return probes


def _probe_set(name: str, task, instances: list, rows: list, tokenizer) -> ProbeSet:
    """The rows of a task's requests right-padded into a probe set (see `task_probes`)."""
    docs: dict[int, Any] = {}
    doc_of_row = []
    for instance in instances:
        docs.setdefault(instance.doc_id, instance.doc)
        doc_of_row.append(len(docs) - 1)
    width = max(len(row) for row, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n_answer) in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        answer_mask[i, len(row) - n_answer : len(row)] = True
        attention_mask[i, : len(row)] = 1
    examples = tuple(docs.values())
    if task.get_config("output_type") == "loglikelihood":
        return ProbeSet(name, input_ids, answer_mask, attention_mask, examples)
    gold = [_gold_choice(task, doc) for doc in examples]
    first: dict[int, int] = {}
    for i, d in enumerate(doc_of_row):
        first.setdefault(d, i)
    return ProbeSet(
        name,
        input_ids,
        answer_mask,
        attention_mask,
        examples,
        torch.tensor(doc_of_row),
        torch.tensor([first[d] + g for d, g in enumerate(gold)]),
    )


def _gold_choice(task, doc) -> int:
    """The index of a document's right choice, read as lm-eval reads it."""
    choices = task.doc_to_choice(doc)
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else -1
    if not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise HarnessError(f"task {task.config.task}: no single right choice among {len(choices)} in {doc}")
    return gold
