"""Benchmarks of the hot paths, each against the straightforward implementation.

`python -m cgclib.book.bench` (or `make bench`) times every hot path of the library on
random-initialised GPT-2-architecture models at three sizes along each of three axes
(calibration tokens, layers, heads), next to a naive baseline that does the same job the
obvious way (stored activations, one head or one sequence at a time).

A shared machine is noisy: one run can be several times slower than the next. So each
measurement is repeated (`--repeats`, 5 by default) with the fast and the naive path
interleaved, so that a slow spell hits both; the table reports medians with the
interquartile range, the speed-up as the median of the paired ratios (and, where a
benchmark trades model evaluations for time, how many each variant made), and the growth
exponent along each axis (the slope of log time against log size, fitted to every repeat)
with its 95% interval. Each path's floating-point operations are counted once with
PyTorch's `FlopCounterMode` (matrix products and attention; the elementwise rest is not
counted), which gives the achieved FLOP/s beside the device's peak, measured here as the
rate of a large float32 matrix product on the same device.

Peak memory: GPU, the allocator's peak; CPU, the peak resident set size above the level
before the run, sampled every few milliseconds. Results go to `_build/bench/results.json`
and a Markdown table `_build/bench/table.md`. Timings are measurements of this machine, not
tests: nothing here asserts a speed.

"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import psutil
import torch
from sae_lens.training import multi_sae_trainer
from torch import nn

from .. import components, devices
from ..ablation import head_ablation_effects
from ..absorption import _block_outputs, noise_at, trajectory_drift
from ..adaptive_sweep import head_crossings, sweep_crossings
from ..batched_topk import BatchedTopKTrainer
from ..component_phase import head_sweep
from ..evaluation import EvaluationData, evaluate
from ..hooks import ablated_heads, linear_inputs, residual_stream
from ..importance import head_importance
from ..linear_blocks import block_moments, fit_block_maps
from ..moments import AffineMap, ridge_scale
from ..paths import project_root
from ..pruning import Masks, input_square_sums, masked, wanda_block_masks, wanda_head_masks
from ..resume import recorded_inputs, resumed_at
from ..saes import HeadSAEConfig, head_feature_statistics, stream_head_activations, train_head_saes

SEQ_LEN = 128
VOCAB = 512


@dataclass(frozen=True)
class Size:
    n_sequences: int = 16
    n_layers: int = 4
    n_heads: int = 8
    head_dim: int = 16


def make_model(size: Size, device: str) -> torch.nn.Module:
    """A random-initialised GPT-2-architecture model of the given size."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    d = size.n_heads * size.head_dim
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=SEQ_LEN,
        n_embd=d,
        n_layer=size.n_layers,
        n_head=size.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model: nn.Module = GPT2LMHeadModel(cfg)
    return model.to(device).eval()


def make_ids(size: Size) -> torch.Tensor:
    return torch.randint(3, VOCAB, (size.n_sequences, SEQ_LEN), generator=torch.Generator().manual_seed(0))


class PeakMemory:
    """Peak memory of the code run inside the context, in MiB."""

    def __init__(self, device: str):
        self.device, self.peak_mib = device, 0.0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._proc = psutil.Process(os.getpid())
            self._base = self._proc.memory_info().rss
            self._top, self._stop = self._base, threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._top = max(self._top, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mib = (max(self._top, self._proc.memory_info().rss) - self._base) / 2**20


# ---- the hot paths and their naive counterparts -------------------------------------------


def input_norms_streamed(model: nn.Module, ids):
    return input_square_sums(model, ids, None, components.all_linear_layers(model))


@torch.no_grad()
def input_norms_stored(model: nn.Module, ids):
    """Store every linear layer's inputs for all tokens, then reduce: memory grows with tokens.
    (Every position counts, as in Wanda's reference statistics.)"""
    stored: dict[str, list[torch.Tensor]] = {}
    modules = components.all_linear_layers(model)
    with linear_inputs(model, modules, lambda name, x: stored.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))):
        for row in ids.to(devices.input_device(model)):
            model(input_ids=row[None])
    return {name: torch.cat(xs).pow(2).sum(0) for name, xs in stored.items()}


def random_saes(model: nn.Module):
    from sae_lens import TopKSAE, TopKSAEConfig

    lay = components.layout(model)
    device = str(devices.input_device(model))
    torch.manual_seed(0)
    return {
        (l, h): TopKSAE(TopKSAEConfig(d_in=lay.head_dim, d_sae=8 * lay.head_dim, k=6, device=device))
        for l in range(lay.n_layers)
        for h in range(lay.n_heads)
    }


def density_streamed(model: nn.Module, ids, saes):
    return head_feature_statistics(model, saes, ids, None)


@torch.no_grad()
def density_per_head(model: nn.Module, ids, saes):
    """One head at a time: a forward pass per head, activations stored, then encoded."""
    out = {}
    for head, sae in saes.items():
        zs = [z for chunk in stream_head_activations(model, ids, [head], None) for z in chunk.values()]
        out[head] = (sae.encode(torch.cat(zs)) > 0).float().mean(0)
    return out


def evaluation_data(size: Size) -> EvaluationData:
    """Language rows of random tokens (speed does not depend on what the tokens are)."""
    return EvaluationData(make_ids(size))


def evaluate_batched(model: nn.Module, data):
    return evaluate(model, data, batch_size=64)


def evaluate_one_by_one(model: nn.Module, data):
    return evaluate(model, data, batch_size=1)


def drift_shared(model: nn.Module, ids):
    n = components.layout(model).n_layers
    perturbations = {(l, m): (l, noise_at(model, l, m, 0)) for l in range(n) for m in (1e-3, 1e-1)}
    return trajectory_drift(model, ids, None, perturbations)


@torch.no_grad()
def drift_recomputed(model: nn.Module, ids):
    """Every perturbation recomputes the clean pass, over all sequences at once, and
    stores whole trajectories before reducing them."""
    n = components.layout(model).n_layers
    ids = ids.to(devices.input_device(model))
    results = {}
    for layer in range(n):
        for m in (1e-3, 1e-1):
            clean = _block_outputs(model, ids, None)
            with noise_at(model, layer, m, 0)(clean, 0):
                noisy = _block_outputs(model, ids, None)
            c, p = (
                torch.stack(clean)[:, :, 1:],
                torch.stack(noisy)[:, :, 1:],
            )  # first position left out, as the library does
            results[(layer, m)] = ((p - c).norm(dim=-1) / c.norm(dim=-1)).mean((1, 2))
    return results


def block_fits_streamed(model: nn.Module, ids):
    return fit_block_maps(block_moments(model, ids, None), ridge=1e-4)


@torch.no_grad()
def block_fits_stored(model: nn.Module, ids):
    """Store every block's input and output for all tokens (one sequence per pass), then
    solve each ridge regression from the stored matrices: memory grows with tokens."""
    stored: dict[tuple[int, str], list[torch.Tensor]] = {}
    with residual_stream(model, lambda l, where, h: stored.setdefault((l, where), []).append(h[0, 1:])):
        for row in ids.to(devices.input_device(model)):
            model(input_ids=row[None])
    fits = {}
    for layer in range(components.layout(model).n_layers):
        x = torch.cat(stored[layer, "in"]).double()
        u = torch.cat(stored[layer, "out"]).double() - x
        xc, uc = x - x.mean(0), u - u.mean(0)
        cov = xc.T @ xc / len(x)
        eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
        weight = torch.linalg.solve(cov + ridge_scale(cov, 1e-4) * eye, xc.T @ uc / len(x))
        fits[layer] = AffineMap(weight, u.mean(0) - x.mean(0) @ weight)
    return fits


def head_signals_streamed(model: nn.Module, ids):
    return head_importance(model, ids, None)


@torch.no_grad()
def head_wanda_one_by_one(model: nn.Module, ids):
    """The Wanda score of every head the obvious way: per head, a calibration pass that
    stores that head's inputs to the attention output projection for all tokens, then its
    score. (It computes one signal; the streamed version computes all five, Taylor's
    backward pass included, so the ratio understates the gain.)"""
    lay = components.layout(model)
    scores = {}
    for layer in range(lay.n_layers):
        out_proj = components.attention_output(model, layer)
        for head in range(lay.n_heads):
            cols = slice(head * lay.head_dim, (head + 1) * lay.head_dim)
            stored: list[torch.Tensor] = []

            def grab(name: str, x: torch.Tensor, stored: list[torch.Tensor] = stored, cols: slice = cols) -> None:
                stored.append(x[0, 1:, cols])

            with linear_inputs(model, {"o": out_proj}, grab):
                for row in ids.to(devices.input_device(model)):
                    model(input_ids=row[None])
            norms = torch.cat(stored).double().pow(2).sum(0).sqrt()
            weight = components.weight(out_proj).detach().double()[:, cols]
            scores[layer, head] = float((weight.abs() * norms).mean(0).sum())
    return scores


def block_allocation(model: nn.Module) -> dict[int, float]:
    """A non-uniform allocation: sparsity rising from 0.3 in the first block to 0.7 in the last."""
    n = components.layout(model).n_layers
    return {l: float(s) for l, s in enumerate(np.linspace(0.3, 0.7, n))}


def allocation_masks_streamed(model: nn.Module, ids, allocation):
    return wanda_block_masks(model, ids, None, allocation)


@torch.no_grad()
def allocation_masks_stored(model: nn.Module, ids, allocation):
    """Wanda under an allocation the obvious way: for each block in order (earlier blocks
    pruned), store its layers' inputs for all tokens one sequence at a time, then rank
    each weight row separately."""
    masks: Masks = {}
    for block in sorted(allocation):
        layers = {f"{block}.{name}": m for name, m in components.linear_layers(model, block).items()}
        stored: dict[str, list[torch.Tensor]] = {}

        def grab(name: str, x: torch.Tensor, stored: dict[str, list[torch.Tensor]] = stored) -> None:
            stored.setdefault(name, []).append(x[0])

        with masked(model, masks), linear_inputs(model, layers, grab):
            for row in ids.to(devices.input_device(model)):
                model(input_ids=row[None])
        for name, module in layers.items():
            scores = components.weight(module).abs().double() * torch.cat(stored[name]).double().pow(2).sum(0).sqrt()
            k = int(scores.shape[1] * allocation[block])
            mask = torch.zeros_like(scores, dtype=torch.bool)
            for i in range(len(scores)):
                mask[i, torch.sort(scores[i], stable=True).indices[:k]] = True
            masks[name] = mask
    return masks


def ablation_batched(model: nn.Module, data):
    with tempfile.TemporaryDirectory(prefix="cgc-bench-") as cache:  # computed every time, not read back
        return head_ablation_effects(model, data, progress=False, cache=Path(cache))


def ablation_one_by_one(model: nn.Module, data):
    """Every head ablated in its own evaluations (resumed at its block): the path before
    several variants shared a forward pass."""
    lay = components.layout(model)
    profiles = []
    for layer in range(lay.n_layers):
        _, recorded = recorded_inputs(model, layer, lambda: evaluate(model, data))
        for head in range(lay.n_heads):
            with ablated_heads(model, [(layer, head)]), resumed_at(model, recorded):
                profiles.append(evaluate(model, data))
    return profiles


SWEEP_RATIOS = [0.5, 0.7, 0.9]


def head_sweep_batched(model: nn.Module, data, ids):
    return head_sweep(model, data, ids, None, SWEEP_RATIOS, progress=False)


SAE_CONFIG = HeadSAEConfig(batch_tokens=256, epochs=2)


def saes_per_sae(model: nn.Module, ids):
    """Every head's TopK SAE as the chapters train them: sae-lens's MultiSAETrainer, one
    optimiser and one step per SAE."""
    with tempfile.TemporaryDirectory(prefix="cgc-bench-") as cache:  # trained every time, not read back
        return train_head_saes(model, ids, None, SAE_CONFIG, cache=Path(cache))


def saes_batched(model: nn.Module, ids):
    """The same SAEs with `batched_topk.BatchedTopKTrainer` in place of sae-lens's trainer:
    every head's SAE stepped at once as batched tensors."""

    def batched_trainer(cfg, saes, hook_names, stream):
        return BatchedTopKTrainer(cfg, saes, stream)

    with mock.patch.object(multi_sae_trainer, "MultiSAETrainer", batched_trainer):
        return saes_per_sae(model, ids)


def head_sweep_one_by_one(model: nn.Module, data, ids):
    """Every head pruned alone at every ratio, one evaluation each (resumed at its block)."""
    lay = components.layout(model)
    modules = {f"{l}.{n}": m for l in range(lay.n_layers) for n, m in components.linear_layers(model, l).items()}
    sums = input_square_sums(model, ids, None, modules)
    profiles = []
    for layer in range(lay.n_layers):
        _, recorded = recorded_inputs(model, layer, lambda: evaluate(model, data))
        for head in range(lay.n_heads):
            for ratio in SWEEP_RATIOS:
                with masked(model, wanda_head_masks(model, sums, layer, head, ratio)), resumed_at(model, recorded):
                    profiles.append(evaluate(model, data))
    return profiles


CROSSING_GRID = [round(0.05 + 0.1 * i, 2) for i in range(10)]  # the fine grid of a first-collapse search
CROSSING_STRIDE = 3


def head_crossings_adaptive(model: nn.Module, data, ids):
    """Every head's first collapse (`adaptive_sweep`): the coarse grid, then a bisection.
    The random models here never rise by `MIN_RISE`, so each search evaluates the coarse
    grid alone (4 of the 10 ratios); a head that collapses costs up to 2 evaluations more."""
    return head_crossings(model, data, ids, None, CROSSING_GRID, CROSSING_STRIDE, progress=False)


def head_crossings_fine_grid(model: nn.Module, data, ids):
    """Every head's first collapse read from a sweep of every ratio of the fine grid."""
    return sweep_crossings(head_sweep(model, data, ids, None, CROSSING_GRID, progress=False), ["layer", "head"])


def evaluations_made(crossings: pd.DataFrame) -> int:
    return int(crossings["evaluations"].sum())


@dataclass(frozen=True)
class Benchmark:
    name: str
    optimized: Callable
    naive: Callable
    setup: Callable[[nn.Module, torch.Tensor, Size], tuple[Any, ...]]  # extra positional arguments after the model
    evaluations: Callable[[Any], int] | None = None  # the model evaluations behind a variant's result, where counted


BENCHMARKS = [
    Benchmark(
        "input norms for Wanda / OWL (all linear layers)",
        input_norms_streamed,
        input_norms_stored,
        lambda model, ids, size: (ids,),
    ),
    Benchmark(
        "SAE encoding + density statistics (every head)",
        density_streamed,
        density_per_head,
        lambda model, ids, size: (ids, random_saes(model)),
    ),
    Benchmark(
        "perplexity evaluation",
        evaluate_batched,
        evaluate_one_by_one,
        lambda model, ids, size: (evaluation_data(size),),
    ),
    Benchmark(
        "perturbation sweep (noise at every block, two magnitudes)",
        drift_shared,
        drift_recomputed,
        lambda model, ids, size: (ids,),
    ),
    Benchmark(
        "Gram accumulation + ridge fit of every block",
        block_fits_streamed,
        block_fits_stored,
        lambda model, ids, size: (ids,),
    ),
    Benchmark(
        "per-head importance signals (Wanda and four others, every head)",
        head_signals_streamed,
        head_wanda_one_by_one,
        lambda model, ids, size: (ids,),
    ),
    Benchmark(
        "head ablation (every head; several per forward pass)",
        ablation_batched,
        ablation_one_by_one,
        lambda model, ids, size: (evaluation_data(size),),
    ),
    Benchmark(
        "per-head phase sweep (every head at three ratios; ratios share a pass)",
        head_sweep_batched,
        head_sweep_one_by_one,
        lambda model, ids, size: (evaluation_data(size), ids),
    ),
    Benchmark(
        "SAE training (every head; batched tensors, one step for all)",
        saes_batched,
        saes_per_sae,
        lambda model, ids, size: (ids,),
    ),
    Benchmark(
        f"per-head first collapse (coarse grid then bisection, against all {len(CROSSING_GRID)} ratios)",
        head_crossings_adaptive,
        head_crossings_fine_grid,
        lambda model, ids, size: (evaluation_data(size), ids),
        evaluations_made,
    ),
    Benchmark(
        "Wanda masks under a block allocation (blocks in order)",
        allocation_masks_streamed,
        allocation_masks_stored,
        lambda model, ids, size: (ids, block_allocation(model)),
    ),
]


def _time(fn, args, device) -> tuple[float, float, Any]:
    """Seconds and peak MiB of one call, and its result."""
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = fn(*args)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.peak_mib, result


def count_flops(fn, args) -> int:
    """Floating-point operations of one call, as PyTorch's flop counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def peak_flops(device: str, n: int = 2048, repeats: int = 5) -> float:
    """The device's practical peak: FLOP/s of an n x n float32 matrix product, the best of
    `repeats` after a warm-up."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for i in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


AXES = {
    "tokens": [Size(n_sequences=n) for n in (8, 16, 32)],
    "layers": [Size(n_layers=n) for n in (2, 4, 8)],
    "heads": [Size(n_heads=n) for n in (4, 8, 16)],
}


def _axis_size(size: Size, axis: str) -> int:
    return {"tokens": size.n_sequences * SEQ_LEN, "layers": size.n_layers, "heads": size.n_heads}[axis]


def run(device: str = "cpu", benchmarks=None, axes=None, repeats: int = 5) -> pd.DataFrame:
    """One row per benchmark, axis, size, variant and repeat; the two variants alternate
    within each repeat (which goes first alternates too)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rows = []
    for bench in benchmarks or BENCHMARKS:
        for axis, sizes in (axes or AXES).items():
            for size in sizes:
                model, ids = make_model(size, device), make_ids(size)
                extra = bench.setup(model, ids, size)
                bench.optimized(model, *extra)  # warm-up
                variants = {"optimized": bench.optimized, "naive": bench.naive}
                flops = {v: count_flops(fn, (model, *extra)) for v, fn in variants.items()}
                for repeat in range(repeats):
                    order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
                    for variant in order:
                        seconds, peak, result = _time(variants[variant], (model, *extra), device)
                        rows.append(
                            {
                                "benchmark": bench.name,
                                "axis": axis,
                                "size": _axis_size(size, axis),
                                "variant": variant,
                                "repeat": repeat,
                                "seconds": seconds,
                                "tokens_per_s": size.n_sequences * SEQ_LEN / seconds,
                                "flops": flops[variant],
                                "peak_mib": peak,
                                "evaluations": bench.evaluations(result) if bench.evaluations else None,
                            }
                        )
                print(f"{bench.name} | {axis}={size} | done", flush=True)
    return pd.DataFrame(rows)


def growth(results: pd.DataFrame) -> pd.DataFrame:
    """Slope of log(seconds) against log(size) per benchmark, axis and variant, fitted to
    every repeat, with its 95% interval (t distribution; None with a single point per
    size and no spread to estimate)."""
    from scipy import stats

    out = []
    for (bench, axis, variant), g in results.groupby(["benchmark", "axis", "variant"]):
        fit = stats.linregress(np.log(g["size"]), np.log(g["seconds"]))
        dof = len(g) - 2
        half = stats.t.ppf(0.975, dof) * fit.stderr if dof > 0 else float("nan")
        out.append(
            {
                "benchmark": bench,
                "axis": axis,
                "variant": variant,
                "growth exponent": fit.slope,
                "low": fit.slope - half,
                "high": fit.slope + half,
            }
        )
    return pd.DataFrame(out)


def _spread(values: pd.Series) -> str:
    """Median [first quartile, third quartile], three significant digits."""
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return f"{median:.3g} [{q1:.3g}, {q3:.3g}]"


def summary(results: pd.DataFrame, peak: float | None = None) -> pd.DataFrame:
    """At the middle size of the tokens axis: both variants' median time with the
    interquartile range, the median paired speed-up, the achieved FLOP/s (and its share of
    `peak`), peak memory, the growth exponents with their intervals and, for the benchmarks
    that count them, the model evaluations of each variant (blank for the others)."""
    sizes = sorted(results[results.axis == "tokens"]["size"].unique())
    mid = results[(results.axis == "tokens") & (results["size"] == sizes[len(sizes) // 2])]
    rows = {}
    for bench, g in mid.groupby("benchmark", sort=False):
        fast = g[g.variant == "optimized"].sort_values("repeat")
        slow = g[g.variant == "naive"].sort_values("repeat")
        ratios = slow["seconds"].to_numpy() / fast["seconds"].to_numpy()
        achieved = fast["flops"].iloc[0] / fast["seconds"].median()
        row = {
            "ms": _spread(1000 * fast["seconds"]),
            "ms, naive": _spread(1000 * slow["seconds"]),
            "speed-up": _spread(pd.Series(ratios)),
            "GFLOP/s": achieved / 1e9,
            "peak MiB": fast["peak_mib"].median(),
            "peak MiB, naive": slow["peak_mib"].median(),
        }
        if peak:
            row["% of peak"] = 100 * achieved / peak
        if fast["evaluations"].notna().any():
            row["evaluations"] = f"{fast['evaluations'].median():.0f}"
            row["evaluations, naive"] = f"{slow['evaluations'].median():.0f}"
        rows[bench] = row
    table = pd.DataFrame(rows).T
    for counted in {"evaluations", "evaluations, naive"} & set(table.columns):
        table[counted] = table[counted].fillna("")
    fits = growth(results)
    for axis in results["axis"].unique():
        for variant, suffix in (("optimized", ""), ("naive", ", naive")):
            chosen = fits[(fits.axis == axis) & (fits.variant == variant)].set_index("benchmark")
            table[f"growth with {axis}{suffix}"] = [
                f"{chosen.loc[b, 'growth exponent']:.2f} [{chosen.loc[b, 'low']:.2f}, {chosen.loc[b, 'high']:.2f}]"
                for b in table.index
            ]
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per variant and size (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default _build/bench)")
    parser.add_argument("--only", default="", help="run the benchmarks whose name contains this text")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if args.only in b.name]
    if not chosen:
        parser.error(f"no benchmark name contains {args.only!r}")
    out = args.out or project_root() / "_build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    peak = peak_flops(args.device)
    results = run(args.device, chosen, repeats=args.repeats)
    table = summary(results, peak)
    meta = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "seq_len": SEQ_LEN,
        "repeats": args.repeats,
        "peak_flops": peak,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "runs": results.to_dict("records")}, indent=1))
    tmp.replace(out / "results.json")
    text = (
        f"Benchmarks on {args.device} ({meta['gpu'] or str(meta['threads']) + ' CPU threads'}), "
        f"{meta['date']}, sequences of {SEQ_LEN} tokens, {args.repeats} repeats, fast and naive "
        "interleaved; sizes at the middle of the tokens axis. Times and speed-ups: median "
        "[interquartile range]; growth exponents: slope [95% interval]. Peak of this device: "
        f"{peak / 1e9:.1f} GFLOP/s (a 2048 x 2048 float32 matrix product).\n\n"
        + table.to_markdown(floatfmt=".3g")
        + "\n"
    )
    if not args.device.startswith("cuda"):
        text += (
            "\nOn the CPU, peak memory is the resident set size above its level before each run; the\n"
            "allocator keeps memory freed by earlier runs, so small differences read as 0 and these\n"
            "columns only show growth beyond what the process already held.\n"
        )
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
