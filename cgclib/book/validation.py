"""A chapter's parameters checked before any computation.

`check_parameters(chapter, values)` runs in two places: in `cgc run` (and so in every sweep
job) before a run folder is made, and in each chapter's first code cell, for a reader who
executes the notebook with papermill directly. It collects every problem and raises one
`ParameterError` naming them all, so that a paper-scale run never fails an hour in on a
value that was wrong from the start.

Three layers of checks:

- **types**: every value has its default's type; numbers are finite (NaN and inf are
  refused), lists hold numbers or strings as their defaults do;
- **ranges by name**: sparsities and shares in [0, 1), counts positive, choices among their
  options, models that exist (a test bed trained, a local folder present, a hub name well
  formed), a local text present;
- **each chapter's own constraints**: list lengths and memberships the chapter's analysis
  needs, and what the model's config (read without its weights) must allow.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .chapters import ChapterError, Parameter, get_chapter

SHARES = (  # fractions of weights, heads or ranks removed: [0, 1)
    "sparsities",
    "probe_sparsities",
    "sparsity_grid",
    "baseline_sparsities",
    "null_sparsities",
    "target_sparsity",
    "claim_sparsity",
    "head_fractions",
    "structured_shares",
    "rank_shares",
    "component_ratios",
    "alpha_eps",
    "alpha_epsilons",
)
UNIT_INTERVAL = ("sae_k_fraction", "variance_target", "easy_depth", "equivalence_margin", "noise")  # (0, 1]
NON_NEGATIVE = ("ridge", "owl_lambda", "owl_lambdas", "correction_strength", "strength_grid")
POSITIVE = (
    "magnitudes",
    "owl_m",
    "owl_ms",
    "sae_lr",
    "exit_threshold",
    "thresholds",
    "redundancy_eps",
    "paper_dense_ppl",
    "min_rise",
    "collapse_min_rise",
    "target_compression",
)
COUNT = re.compile(r"^(n_.+|.+_sequences|.+_probes|.+_paragraphs|seq_len|.+_epochs|.+_tokens|.+_curves|.+_samples)$")
POSITIVE_INTEGERS = ("sae_expansion", "stability_expansions", "group_size", "k", "bits", "grid_sizes")
CHOICES = {"ablation": ("mean", "zero"), "alpha_xmin": ("peak", "scan")}
MODELS = ("model", "second_model")
MODEL_LISTS = ("deep_models",)
HALF_PRECISION_RESOLUTION = 1e-2  # bfloat16 keeps about 3 significant digits


class ParameterError(ChapterError):
    """A chapter parameter that cannot give a valid run: every problem, named."""


def _values(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _type_problem(param: Parameter, value: Any) -> str | None:
    """What is wrong with the type of `value` given the parameter's default, or None."""
    default, name = param.default, param.name

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
    if isinstance(default, int):
        integer = isinstance(value, int) and not isinstance(value, bool)
        return None if integer else f"{name} must be an integer, got {value!r}"
    if isinstance(default, float):
        if not number(value):
            return f"{name} must be a number, got {value!r}"
        return None if math.isfinite(value) else f"{name} must be finite, got {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"{name} must be a string, got {value!r}"
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"{name} must be a list such as {list(default)!r}, got {value!r}"
        kinds = {type(x) for x in default}
        if kinds <= {int, float} and float in kinds:
            if not all(number(x) and math.isfinite(x) for x in value):
                return f"{name} must be a list of finite numbers, got {value!r}"
        elif len(kinds) == 1 and not all(type(x) is next(iter(kinds)) for x in value):
            return f"{name} must be a list of {next(iter(kinds)).__name__}, got {value!r}"
        return None
    if isinstance(default, dict):
        return None if isinstance(value, dict) else f"{name} must be a mapping, got {value!r}"
    return None


def _range_problems(values: Mapping[str, Any]) -> list[str]:
    """The checks that follow from a parameter's name, whatever the chapter."""
    problems = []

    def each(names: tuple[str, ...], ok: Callable[[float], bool], what: str) -> None:
        for name in names:
            if name in values and not all(ok(x) for x in _values(values[name])):
                problems.append(f"{name} must be {what}, got {values[name]!r}")

    each(SHARES, lambda x: 0 <= x < 1, "in [0, 1)")
    each(UNIT_INTERVAL, lambda x: 0 < x <= 1, "in (0, 1]")
    each(NON_NEGATIVE, lambda x: x >= 0, "non-negative")
    each(POSITIVE, lambda x: x > 0, "positive")
    each(POSITIVE_INTEGERS, lambda x: x >= 1, "at least 1")
    counts = tuple(n for n in values if COUNT.match(n) and isinstance(values[n], int))
    each(counts, lambda x: x >= 1, "at least 1")
    for name, options in CHOICES.items():
        if name in values and values[name] not in options:
            problems.append(f"{name} must be one of {', '.join(options)}, got {values[name]!r}")
    if "seq_len" in values and values["seq_len"] < 2:
        problems.append(f"seq_len must be at least 2 (a token is predicted from those before), got {values['seq_len']}")
    if "seed" in values and values["seed"] < 0:
        problems.append(f"seed must be non-negative, got {values['seed']}")
    if "replicates" in values and not all(s >= 1 for s in values["replicates"]):
        problems.append(f"replicates lists training seeds other than 0 (1, 2, ...), got {values['replicates']!r}")
    return problems


def _device_problems(values: Mapping[str, Any]) -> list[str]:
    from .. import devices
    from ..models import resolve_device, resolve_dtype

    problems = []
    if "device" in values and not devices.is_device_map_strategy(values["device"]):
        try:
            resolve_device(values["device"])
        except ValueError as exc:
            problems.append(str(exc))
    if "dtype" in values:
        try:
            resolve_dtype(values["dtype"])
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def model_problem(name: str) -> str | None:
    """Why `name` cannot name a model here, or None: an untrained test bed, a missing local
    folder, a malformed hub name. Whether a hub model can be downloaded is left to the
    loader, which says so at once."""
    from ..models import TESTBEDS, is_testbed, testbed_dir

    if is_testbed(name):
        if name not in TESTBEDS and not testbed_dir(name).exists():
            return f"test bed {name!r} is not trained yet: `python -m cgclib.testbed train {name}`"
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    if name.startswith(("/", ".", "~")) or path.exists():
        return f"{name!r} is not a folder with a model (nothing there, or a file)"
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return f"{name!r} is neither a test bed, a local folder, nor a valid Hugging Face model name"
    return None


def _model_problems(values: Mapping[str, Any]) -> list[str]:
    from ..corpus import looks_like_path

    problems = []
    names = [(p, values[p]) for p in MODELS if values.get(p)]
    names += [(p, m) for p in MODEL_LISTS for m in values.get(p, [])]
    for parameter, name in names:
        problem = model_problem(name)
        if problem:
            problems.append(f"{parameter}: {problem}")
    text = values.get("text")
    if text and looks_like_path(text) and not Path(text).expanduser().exists():
        problems.append(f"text: {text!r} looks like a local path, but nothing exists there")
    task_path = values.get("task_path")
    if task_path and not Path(task_path).expanduser().is_dir():
        problems.append(f"task_path: {task_path!r} is not a folder of lm-eval task files")
    if values.get("num_fewshot", 0) < 0:
        problems.append(f"num_fewshot: in-context examples cannot be negative, got {values['num_fewshot']}")
    return problems


def model_blocks(name: str) -> int | None:
    """The number of transformer blocks of model `name`, from its config alone (no
    weights); None when the config cannot be read here (a hub model offline)."""
    from transformers import AutoConfig

    from ..models import is_testbed, testbed_dir

    source = str(testbed_dir(name)) if is_testbed(name) else str(Path(name).expanduser())
    try:
        config = AutoConfig.from_pretrained(source if Path(source).is_dir() else name)
    except Exception:  # offline, gated, unknown: the loader gives the actionable message
        return None
    return getattr(config, "num_hidden_layers", None)


def _measure_batch() -> int:
    from ..saes import head_feature_statistics

    return inspect.signature(head_feature_statistics).parameters["batch_sequences"].default


def _subset(values: Mapping[str, Any], part: str, whole: str) -> list[str]:
    missing = [x for x in _values(values[part]) if x not in values[whole]]
    return [f"{part} {values[part]!r} must be among the {whole} {values[whole]!r}"] if missing else []


def _density_problems(values: Mapping[str, Any]) -> list[str]:
    batch = _measure_batch()
    if values["measure_sequences"] <= batch:
        return [
            f"measure_sequences must exceed {batch}: density's split-half consistency needs two "
            f"batches of {batch} sequences, got {values['measure_sequences']}"
        ]
    return []


def _orthogonality_problems(values: Mapping[str, Any]) -> list[str]:
    problems = _density_problems(values)
    problems += _subset(values, "null_sparsities", "sparsities") + _subset(values, "claim_sparsity", "sparsities")
    if len(set(values["sparsities"])) < 3:
        problems.append(f"sparsities needs at least 3 distinct values for the curves: {values['sparsities']!r}")
    if len({r for r in values["component_ratios"] if r > 0}) < 3:
        problems.append(
            f"component_ratios needs at least 3 distinct positive ratios (the dense model is ratio 0), "
            f"got {values['component_ratios']!r}"
        )
    return problems


def _absorption_problems(values: Mapping[str, Any]) -> list[str]:
    problems = _subset(values, "target_sparsity", "sparsity_grid")
    half = values["dtype"] in ("bfloat16", "bf16", "float16", "fp16")
    if half and min(values["magnitudes"]) < HALF_PRECISION_RESOLUTION:
        problems.append(
            f"dtype {values['dtype']} resolves about 3 significant digits, so perturbations below "
            f"{HALF_PRECISION_RESOLUTION} drown in rounding: use dtype float32 (or 'auto', which is float32 "
            f"in this chapter), or magnitudes of at least {HALF_PRECISION_RESOLUTION}"
        )
    for parameter in ("model", "second_model"):
        name = values.get(parameter)
        blocks = model_blocks(name) if name and model_problem(name) is None else None
        if blocks is not None and blocks < 5:
            problems.append(
                f"{parameter} {name!r} has {blocks} blocks: the depth trend is a rank correlation over "
                "the blocks after the first, which needs at least 4 of them (5 blocks)"
            )
    return problems


def _phase_problems(values: Mapping[str, Any]) -> list[str]:
    from .. import phase

    grids = ("sparsities", "structured_shares", "grid_sizes", "rank_shares")
    short = [g for g in grids if len(set(values[g])) + 1 < phase.MIN_POINTS]
    problems = [
        f"{g} needs at least {phase.MIN_POINTS - 1} distinct levels for a transition to be located, got {values[g]!r}"
        for g in short
    ]
    if not all(2 <= n <= 256 for n in values["grid_sizes"]):
        problems.append(f"grid_sizes are quantization levels per group, from 2 to 256, got {values['grid_sizes']!r}")
    return problems


def _structure_problems(values: Mapping[str, Any]) -> list[str]:
    if not all(2 <= b <= 8 for b in values["bits"]):
        return [f"bits must be bit widths from 2 to 8, got {values['bits']!r}"]
    return []


def _testbed_problems(values: Mapping[str, Any]) -> list[str]:
    from ..models import is_testbed

    others = [values[p] for p in MODELS if values.get(p) and not is_testbed(values[p])]
    return [f"this chapter studies the test beds themselves (testbed-*): {m!r} is not one" for m in others]


def _family_problems(values: Mapping[str, Any]) -> list[str]:
    from ..testbed import FAMILIES

    unknown = [f for f in values["families"] if f not in FAMILIES]
    return [f"families must be some of {list(FAMILIES)}, got {unknown!r}"] if unknown else []


CHAPTER_RULES: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "testbed": _testbed_problems,
    "family": _family_problems,
    "density": _density_problems,
    "orthogonality": _orthogonality_problems,
    "absorption": _absorption_problems,
    "phase_transitions": _phase_problems,
    "structure": _structure_problems,
}


def check_parameters(chapter: str, values: Mapping[str, Any], root: Path | None = None) -> None:
    """Raise `ParameterError` naming every problem of the chapter's parameter `values`
    (a mapping holding at least every parameter, such as a notebook's `globals()`)."""
    params = get_chapter(chapter, root).parameters()
    missing = [n for n in params if n not in values]
    if missing:
        raise ParameterError(f"chapter {chapter!r}: no value for {', '.join(missing)}")
    current = {n: values[n] for n in params}
    typed, problems = {}, []
    for name, value in current.items():
        problem = _type_problem(params[name], value)
        if problem:
            problems.append(problem)
        else:
            typed[name] = value
    problems += _range_problems(typed) + _device_problems(typed) + _model_problems(typed)
    if not problems and chapter in CHAPTER_RULES:
        problems += CHAPTER_RULES[chapter](current)
    if problems:
        raise ParameterError(f"chapter {chapter!r} cannot run with these parameters:\n  - " + "\n  - ".join(problems))
