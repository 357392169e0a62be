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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from .suite import CapabilitySuite, Example

ZERO_SHOT_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
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

    from .corpus import _offline_unless_reachable

    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"lm-eval knows no task {', '.join(unknown)}")
    was_training = model.training
    model.eval()
    try:
        with _offline_unless_reachable():
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
