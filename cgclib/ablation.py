"""Measured importance: what removing one component does to perplexity and capabilities.

Ablating a head replaces its output (`hooks.ablated_heads`). The chapters use mean
ablation by default: the output is replaced by its mean over calibration tokens
(`head_statistics.head_output_moments`), which keeps the next layers on their input
distribution, as is usual in interpretability. Zero ablation sets it to 0, which is exactly
what pruning the head's slice of the attention output projection does, and so measures
what structured pruning would cost. The effect of each head on
each capability is the drop in exact-match accuracy; on the language, the change in
log-perplexity. This is the ground truth the other importance signals are compared with.
The blocks before the ablated head are computed once per layer (`cgclib.resume`), and
the heads of a block are ablated several at a time, each in its own copy of a stacked batch
(`evaluation.evaluate_variants`, `hooks.ablated_heads_by_variant`): one forward pass of
the later blocks serves several variants, with the results of one pass per variant.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import components
from .evaluation import EvaluationData, Profile, evaluate, evaluate_variants, variants_per_pass
from .hooks import ablated_heads_by_variant
from .models import model_fingerprint
from .paths import cache_dir
from .resume import recorded_inputs, resumed_at
from .storage import atomic_write_json, computed_once


def _effects(dense: Profile, ablated: Profile) -> dict:
    """The change of every metric from `dense` to `ablated`: log-perplexity on the language
    rows (and on the mixture rows, when the data has them), and per capability the drop in
    exact-match accuracy and in mean answer log-probability (the graded drop, in nats)."""
    row = {"perplexity": ablated.perplexity, "delta_log_ppl": math.log(ablated.perplexity) - math.log(dense.perplexity)}
    if ablated.mixture is not None and dense.mixture is not None:
        row["delta_log_ppl_mixture"] = math.log(ablated.mixture_perplexity) - math.log(dense.mixture_perplexity)
    for task, acc in ablated.accuracy().items():
        row[f"drop_{task}"] = dense.accuracy()[task] - acc
    for task, logprob in ablated.graded().items():
        row[f"graded_drop_{task}"] = dense.graded()[task] - logprob
    return row


def head_ablation_effects(
    model: nn.Module,
    data: EvaluationData,
    progress: bool = True,
    cache: Path | None = None,
    means: Mapping[tuple[int, int], torch.Tensor] | None = None,
) -> tuple[pd.DataFrame, Profile]:
    """One row per head (layer, head): perplexity, change in log-perplexity, and the drop
    in accuracy of every capability when that head alone is ablated. Also returns the
    dense profile the drops are measured from. Zero ablation when `means` is None, else
    mean ablation with the mean output of every head (`HeadMoments.means()`).

    The table is cached (under `.cache/ablations` unless `cache` says where), keyed by the
    model's weights, the evaluation data, the kind of ablation and the means, and the
    source of the code that computes it, so that two chapters that ablate the same heads on
    the same data compute it once, also when they run at the same time."""
    if means is not None:
        lay = components.layout(model)
        missing = [(l, h) for l in range(lay.n_layers) for h in range(lay.n_heads) if (l, h) not in means]
        if missing:
            raise KeyError(f"no mean for head(s) {missing}: mean ablation needs the mean output of every head")
    path = Path(cache or cache_dir() / "ablations") / f"{_cache_key(model, data, means)}.json"
    with computed_once(path):
        if not path.is_file():
            effects, dense = _ablate_each_head(model, data, progress, means)
            if np.isfinite(effects.to_numpy()).all():
                atomic_write_json(
                    path,
                    {
                        "index": [list(i) for i in effects.index],
                        "columns": list(effects.columns),
                        "rows": effects.to_numpy().tolist(),
                    },
                )
            return effects, dense
        stored = json.loads(path.read_text())
    index = pd.MultiIndex.from_tuples([tuple(i) for i in stored["index"]], names=["layer", "head"])
    return pd.DataFrame(stored["rows"], index=index, columns=stored["columns"]), evaluate(model, data)


def _cache_key(model: nn.Module, data: EvaluationData, means: Mapping[tuple[int, int], torch.Tensor] | None) -> str:
    code = b"".join(
        (Path(__file__).parent / f"{m}.py").read_bytes()
        for m in ("ablation", "evaluation", "hooks", "resume", "components")
    )
    spec = [model_fingerprint(model), data.digest(), hashlib.sha256(code).hexdigest(), torch.__version__]
    spec += ["zero"] if means is None else ["mean", _means_digest(model, means)]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:24]


def _means_digest(model: nn.Module, means: Mapping[tuple[int, int], torch.Tensor]) -> str:
    """Hash of the dtype, shape and bytes of the mean of every head of the model, in order."""
    lay = components.layout(model)
    digest = hashlib.sha256()
    for key in ((l, h) for l in range(lay.n_layers) for h in range(lay.n_heads)):
        value = means[key].detach().cpu().contiguous()
        digest.update(f"{key}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _ablate_each_head(
    model: nn.Module, data: EvaluationData, progress: bool, means: Mapping[tuple[int, int], torch.Tensor] | None
) -> tuple[pd.DataFrame, Profile]:
    lay = components.layout(model)
    rows, dense = [], None
    group = variants_per_pass(model, data, lay.n_heads)
    progress_bar = tqdm(total=lay.n_layers * lay.n_heads, desc="ablating heads", disable=not progress)
    for layer in range(lay.n_layers):
        profile, recorded = recorded_inputs(
            model, layer, lambda: evaluate_variants(model, data, 1, batch_group=group)[0]
        )
        dense = dense or profile  # the first recording run is the dense evaluation
        for start in range(0, lay.n_heads, group):
            heads = list(range(start, min(start + group, lay.n_heads)))
            with ablated_heads_by_variant(model, layer, heads, means), resumed_at(model, recorded, len(heads)):
                profiles = evaluate_variants(model, data, len(heads), batch_group=group)
            for head, ablated in zip(heads, profiles, strict=True):
                rows.append({"layer": layer, "head": head, **_effects(dense, ablated)})
            progress_bar.update(len(heads))
    progress_bar.close()
    if dense is None:
        raise components.ComponentError("the model has no blocks whose heads could be ablated")
    return pd.DataFrame(rows).set_index(["layer", "head"]), dense


def capability_drops(effects: pd.DataFrame, graded: bool = False) -> pd.DataFrame:
    """The accuracy-drop columns of `head_ablation_effects` (with `graded`, the drops in
    mean answer log-probability), named by capability."""
    prefix = "graded_drop_" if graded else "drop_"
    cols = [c for c in effects.columns if c.startswith(prefix)]
    return effects[cols].rename(columns=lambda c: c[len(prefix) :])
