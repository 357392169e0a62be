"""What a chapter run will cost, counted from its parameters and the model's config alone.

Before a paper-scale run a reader should know its price. `estimate_chapter` enumerates the
stages of a chapter the way its notebook and the library functions it calls do the work,
and counts, per stage, the model variants evaluated and the tokens that pass through the
transformer blocks and through the language-model head; no weights are loaded (the config
is read with `transformers.AutoConfig`, and the architecture is instantiated on PyTorch's
``meta`` device to count its matrix parameters).

FLOPs per token follow from the config: 2 x the matrix parameters of a block, plus
attention's 4 x context x (heads x head dimension) per block, plus 2 x d_model x vocabulary
for the head. A pass that resumes at block l (`cgclib.resume`) is charged for blocks l and
after only; a pass that stops after block l (`hooks.stopped_after`) for blocks up to l and no
head. A backward pass that only asks for activation gradients (the Taylor importance) costs
about one forward pass more. Work done on the weights themselves (Wanda's sorting,
SparseGPT's and GPTQ's solves, SVDs, bootstraps) is not counted: on the models the book
studies it is small next to the forward passes.

The estimate assumes empty caches: SAEs, ablation tables and the chapters' cached sweeps are
all computed. Peak memory is a rough figure: the weights plus the largest working set of the
stage (one evaluation batch's logits and activations, a pruned copy of the linear weights,
the recorded block inputs of a resumed evaluation, the SAEs' optimiser state).

Time is FLOPs divided by a throughput: on this machine, that of a matrix product of the
model's width measured here (`measured_throughput`), an optimistic figure since small
batches and hooks run below it; on a named device (`DEVICE_PEAKS`), its peak dense FLOP/s in
the run's precision times `ASSUMED_EFFICIENCY`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .evaluation import LOGIT_BYTES, EvaluationData, evaluation_rows, length_batches, max_batch_tokens
from .models import hub_reachable, is_testbed, resolve_dtype, testbed_dir

ASSUMED_EFFICIENCY = 0.4  # share of a device's peak dense FLOP/s that forward passes reach
STREAM_BATCH_SEQUENCES = 16  # sequences per forward pass of every calibration stream
EVALUATION_BATCH_ROWS = 256  # rows per evaluation batch (`Subject.evaluate`)
HUB_EVAL_SEQ_LEN = 1024  # tokens per evaluation window of a model that is not a test bed
SAE_BUFFER_CHUNKS = 4  # stream chunks shuffled together by the SAE trainer's data stream
SAE_NORM_BATCHES = 20  # batches sae-lens draws to estimate the activations' norm
ALLOCATION_STRATEGIES = 7  # orthogonality: the six of `allocation.block_scores` and participation
HEAD_RANKINGS = 5  # orthogonality: density, inverted, wanda, taylor, random
ORDERING_REFERENCES = 3  # orthogonality: uniform, density and depth beside the random orderings


class EstimateError(ValueError):
    """A chapter or model whose cost cannot be estimated here, with what to do instead."""


@dataclass(frozen=True)
class DevicePeak:
    """Peak dense throughput of an accelerator (FLOP/s, without sparsity), per precision."""

    description: str
    bf16: float
    fp32: float


DEVICE_PEAKS = {  # vendors' datasheets, dense (no structured sparsity); fp32 without TF32
    "h200": DevicePeak("NVIDIA H200 SXM", 989e12, 67e12),
    "h100": DevicePeak("NVIDIA H100 SXM", 989e12, 67e12),
    "a100": DevicePeak("NVIDIA A100 SXM", 312e12, 19.5e12),
    "l40s": DevicePeak("NVIDIA L40S", 362e12, 91.6e12),
    "l4": DevicePeak("NVIDIA L4", 121e12, 30.3e12),
    "rtx4090": DevicePeak("NVIDIA GeForce RTX 4090", 165e12, 82.6e12),
}


def device_peak(name: str) -> DevicePeak:
    """The table entry of a named device (case and dashes ignored: `H200`, `rtx-4090`)."""
    key = name.lower().replace("-", "").replace(" ", "")
    if key not in DEVICE_PEAKS:
        raise EstimateError(f"unknown device {name!r}; known devices: {', '.join(DEVICE_PEAKS)}")
    return DEVICE_PEAKS[key]


# --- the model -----------------------------------------------------------------------------


def model_config(name: str):
    """The transformers config of a test bed, a local folder or a hub name, without weights.
    A hub name needs a cached config or a reachable hub; offline it fails at once, saying
    what to do instead."""
    from transformers import AutoConfig

    if is_testbed(name):
        folder = testbed_dir(name)
        if not (folder / "config.json").is_file():
            raise EstimateError(
                f"test bed {name!r} has no config in {folder}: train it with `python -m cgclib.testbed train {name}`"
            )
        return AutoConfig.from_pretrained(folder)
    if Path(name).expanduser().is_dir():
        return AutoConfig.from_pretrained(Path(name).expanduser())
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str) and not hub_reachable():
        raise EstimateError(
            f"the config of {name!r} is not available: there is no cached copy and the Hugging Face hub "
            "cannot be reached from this machine. Run where the hub is reachable, or pass a local folder "
            f"holding its config.json (transformers' `AutoConfig.from_pretrained({name!r}).save_pretrained"
            "(FOLDER)` where it is reachable) as the model parameter."
        )
    try:
        return AutoConfig.from_pretrained(name)
    except Exception as exc:  # gated, unknown, malformed: transformers raises many types
        raise EstimateError(f"could not read the config of {name!r}: {exc}") from exc


@dataclass(frozen=True)
class Architecture:
    """What the cost of a forward pass depends on, read from a config."""

    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int
    vocab_size: int
    positions: int
    block_matrix_parameters: int  # weights of one block's linear layers
    parameters: int  # every parameter, embeddings included

    @classmethod
    def from_config(cls, config) -> Architecture:
        """Instantiate the architecture on the meta device (no memory) and count its weights."""
        from transformers import AutoModelForCausalLM

        from . import components

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        lay = components.layout(model)
        block_params = sum(components.weight(m).numel() for m in components.linear_layers(model, 0).values())
        head = model.get_output_embeddings()
        vocab = int(head.weight.shape[0]) if head is not None else int(config.vocab_size)
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        return cls(
            n_layers=lay.n_layers,
            n_heads=lay.n_heads,
            head_dim=lay.head_dim,
            d_model=lay.d_model,
            vocab_size=vocab,
            positions=int(positions or HUB_EVAL_SEQ_LEN),
            block_matrix_parameters=int(block_params),
            parameters=sum(p.numel() for p in model.parameters()),
        )

    def block_flops(self, context: float) -> float:
        """FLOPs of one token through one block whose rows are `context` tokens wide: the
        linear layers and attention's two products (scores and weighted values)."""
        return 2 * self.block_matrix_parameters + 4 * context * self.n_heads * self.head_dim

    @property
    def head_flops(self) -> float:
        """FLOPs of one token through the language-model head."""
        return 2 * self.d_model * self.vocab_size

    @property
    def linear_parameters(self) -> int:
        return self.n_layers * self.block_matrix_parameters


# --- counted work --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """Token rows as the forward passes batch them: the tokens computed, the sum over those
    tokens of their batch's width (what attention's cost grows with), and the tokens of
    the largest batch (what memory grows with)."""

    tokens: int
    width_sum: int
    largest_batch: int

    @classmethod
    def sequences(cls, n: int, seq_len: int, batch_sequences: int = STREAM_BATCH_SEQUENCES) -> Rows:
        """`n` full rows of `seq_len` tokens, `batch_sequences` at a time."""
        return cls(n * seq_len, n * seq_len * seq_len, min(n, batch_sequences) * seq_len)

    @classmethod
    def of_evaluation(cls, data: EvaluationData, vocab_size: int) -> Rows:
        """The rows of an evaluation, batched as `evaluation.score_rows` batches them."""
        ids, scored, attention, _ = evaluation_rows(data)
        used = (torch.ones_like(ids) if attention is None else attention).bool() | scored.bool()
        batches = length_batches(used, EVALUATION_BATCH_ROWS, max_batch_tokens(vocab_size))
        sizes = [(len(rows), width) for rows, width in batches]
        return cls(
            sum(r * w for r, w in sizes), sum(r * w * w for r, w in sizes), max((r * w for r, w in sizes), default=0)
        )

    @property
    def context(self) -> float:
        return self.width_sum / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class Work:
    """Tokens through the blocks (one per token and block computed), tokens through the
    language-model head, and the FLOPs they cost."""

    block_tokens: float = 0
    head_tokens: float = 0
    flops: float = 0

    def __add__(self, other: Work) -> Work:
        return Work(
            self.block_tokens + other.block_tokens, self.head_tokens + other.head_tokens, self.flops + other.flops
        )

    def __mul__(self, times: float) -> Work:
        return Work(self.block_tokens * times, self.head_tokens * times, self.flops * times)


def passes(arch: Architecture, rows: Rows, blocks: float, head: float = 0, backward: bool = False) -> Work:
    """The work of running `rows` through `blocks` blocks (summed over the passes) and
    `head` times through the head; `backward` adds the activation-gradient pass."""
    flops = rows.tokens * (blocks * arch.block_flops(rows.context) + head * arch.head_flops)
    return Work(rows.tokens * blocks, rows.tokens * head, flops * (2 if backward else 1))


@dataclass(frozen=True)
class Stage:
    """One stage of a chapter for one model: how many model variants it evaluates, the
    counted work, and the peak memory it needs."""

    model: str
    name: str
    variants: int
    work: Work
    peak_bytes: float

    @property
    def flops(self) -> float:
        return self.work.flops


@dataclass(frozen=True)
class ChapterEstimate:
    """Every stage of a chapter run, what the estimate leaves out, and the dtype it assumes."""

    chapter: str
    stages: list[Stage]
    dtype: torch.dtype
    d_model: int  # the largest width of the chapter's models (the matrix product that times them)
    not_covered: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.stages)

    @property
    def peak_bytes(self) -> float:
        return max((s.peak_bytes for s in self.stages), default=0.0)


# --- the subjects of a chapter ---------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A chapter's model as the estimate sees it: its architecture, the bytes per weight,
    and how to build its evaluation data (token ids only, no weights)."""

    name: str
    arch: Architecture
    dtype_bytes: int
    evaluation: Callable[[int, int, int], EvaluationData]  # (probes, paragraphs, mixture rows) -> data
    is_testbed: bool

    def rows(self, data: EvaluationData) -> Rows:
        return Rows.of_evaluation(data, self.arch.vocab_size)

    def weights_bytes(self) -> float:
        return self.arch.parameters * self.dtype_bytes

    def evaluation_bytes(self, rows: Rows) -> float:
        """Weights plus one evaluation batch: its logits and a few copies of its stream."""
        batch = rows.largest_batch
        return self.weights_bytes() + batch * (self.arch.vocab_size * LOGIT_BYTES + 16 * self.arch.d_model * 4)

    def pruned_bytes(self) -> float:
        """A pruned copy of every linear weight and its mask."""
        return self.arch.linear_parameters * (self.dtype_bytes + 1)


def _subject(name: str, values: Mapping[str, Any], dtype: torch.dtype) -> Subject:
    arch = Architecture.from_config(model_config(name))
    seed = values.get("seed", 0)
    if is_testbed(name):
        build = _testbed_data(name)

        def data(probes: int, paragraphs: int, mixture: int) -> EvaluationData:
            return build(probes, paragraphs, seed, mixture)

    else:
        width = min(HUB_EVAL_SEQ_LEN, arch.positions)

        def data(probes: int, paragraphs: int, mixture: int) -> EvaluationData:
            return EvaluationData(torch.zeros(paragraphs, width, dtype=torch.long))  # windows: only shapes count

    return Subject(name, arch, torch.finfo(dtype).bits // 8, data, is_testbed(name))


def _testbed_data(name: str) -> Callable[[int, int, int, int], EvaluationData]:
    """The test bed's evaluation data as `subjects.load_subject` builds it, from its card and
    tokenizer (never its weights)."""
    from transformers import AutoTokenizer

    from .suite import CapabilitySuite

    folder = testbed_dir(name)
    card = json.loads((folder / "card.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    suite = CapabilitySuite(
        card["suite_seed"],
        split_version=card.get("split_version", 1),
        fact_paraphrases=card.get("fact_paraphrases", False),
    )

    def build(probes: int, paragraphs: int, seed: int, mixture: int) -> EvaluationData:
        return EvaluationData.for_testbed(
            suite, tokenizer, probes, paragraphs, seed=seed, n_mixture=mixture, mixture_seq_len=128
        )

    return build


def subject_data(subject: Subject, probes: int, paragraphs: int) -> EvaluationData:
    """The data of `load_subject(..., n_probes=probes, n_paragraphs=paragraphs)`: with
    mixture rows (a quarter of the paragraphs) on a test bed, windows elsewhere."""
    return subject.evaluation(probes, paragraphs, max(1, paragraphs // 4) if subject.is_testbed else 0)


# --- shared stages -------------------------------------------------------------------------


def sae_stream_rows(n_sequences: int, seq_len: int, epochs: int, batch_tokens: int) -> tuple[Rows, int]:
    """The rows the SAE trainer's stream runs through the model (`saes._ShuffledHeadBatches`)
    and the number of training steps: chunks of 16 sequences, shuffled four at a time into
    batches of `batch_tokens` activations (every position but the first), epoch after
    epoch until the steps and sae-lens's norm-estimate batches are served."""
    per_sequence = seq_len - 1
    steps = max(1, epochs * n_sequences * per_sequence // batch_tokens)
    needed = steps + min(SAE_NORM_BATCHES, steps)
    chunks = [min(STREAM_BATCH_SEQUENCES, n_sequences - s) for s in range(0, n_sequences, STREAM_BATCH_SEQUENCES)]
    buffers = [chunks[i : i + SAE_BUFFER_CHUNKS] for i in range(0, len(chunks), SAE_BUFFER_CHUNKS)]
    served_per_epoch = sum(sum(b) * per_sequence // batch_tokens for b in buffers)
    if served_per_epoch == 0:
        raise EstimateError(f"{n_sequences} sequences of {seq_len} tokens never fill an SAE batch of {batch_tokens}")
    sequences, served = 0, 0
    while served < needed:
        for buffer in buffers:
            sequences += sum(buffer)
            served += sum(buffer) * per_sequence // batch_tokens
            if served >= needed:
                break
    return Rows.sequences(sequences, seq_len), steps


def density_map_stages(subject: Subject, v: Mapping[str, Any], expansion: int | None = None) -> list[Stage]:
    """`density_map.head_density_map` with the chapter's SAE parameters `v` (the dictionary
    `expansion` times the head width, `sae_expansion` by default): one SAE per head trained
    on the calibration stream, then every SAE run over the held-out sequences."""
    calibration, measure, seq_len = v["calibration_sequences"], v["measure_sequences"], v["seq_len"]
    epochs, batch_tokens = v["sae_epochs"], v["sae_batch_tokens"]
    expansion = v["sae_expansion"] if expansion is None else expansion
    arch = subject.arch
    d_sae = expansion * arch.head_dim
    stream, steps = sae_stream_rows(calibration, seq_len, epochs, batch_tokens)
    heads = arch.n_layers * arch.n_heads
    training = passes(arch, stream, arch.n_layers, 1) + Work(
        flops=steps * heads * 12 * arch.head_dim * d_sae * batch_tokens
    )
    sae_state = heads * (2 * arch.head_dim * d_sae + d_sae + arch.head_dim) * 4 * 4  # weights, grads, Adam's two
    buffer = SAE_BUFFER_CHUNKS * stream.largest_batch * heads * arch.head_dim * 4
    measured_rows = Rows.sequences(measure, seq_len)
    measuring = passes(arch, measured_rows, arch.n_layers, 1) + Work(
        flops=measure * (seq_len - 1) * heads * 4 * arch.head_dim * d_sae
    )
    return [
        Stage(
            subject.name,
            f"SAE training ({steps} steps, {heads} heads)",
            1,
            training,
            subject.evaluation_bytes(stream) + sae_state + buffer,
        ),
        Stage(
            subject.name,
            "SAE features on held-out text",
            1,
            measuring,
            subject.evaluation_bytes(measured_rows) + sae_state / 4,
        ),
    ]


def wanda_block_masks_work(arch: Architecture, calibration: Rows) -> Work:
    """`pruning.wanda_block_masks`: block b's inputs come from a pass that resumes at block
    b - 1 and stops after block b (block 0: one block)."""
    return passes(arch, calibration, 2 * arch.n_layers - 1)


def evaluation_work(arch: Architecture, rows: Rows, first_block: int = 0) -> Work:
    """One evaluation, resumed at `first_block`."""
    return passes(arch, rows, arch.n_layers - first_block, 1)


def resumed_sweep_work(arch: Architecture, rows: Rows, variants_per_layer: int) -> Work:
    """Per layer: a full evaluation that records block l's input, then `variants_per_layer`
    evaluations resumed at block l (`cgclib.resume`)."""
    total = Work()
    for layer in range(arch.n_layers):
        total += evaluation_work(arch, rows) + evaluation_work(arch, rows, layer) * variants_per_layer
    return total


def recorded_bytes(subject: Subject, rows: Rows) -> float:
    """The recorded block input of every evaluated token (`resume.recorded_inputs`)."""
    return rows.tokens * subject.arch.d_model * subject.dtype_bytes


# --- the chapters ----------------------------------------------------------------------------


def _orthogonality(subject: Subject, v: Mapping[str, Any]) -> list[Stage]:
    arch, name = subject.arch, subject.name
    L, H = arch.n_layers, arch.n_heads
    data = subject_data(subject, v["n_probes"], v["n_paragraphs"])
    full = subject.rows(data)
    small = subject.rows(data.subset(v["component_probes"], v["component_paragraphs"]))
    calibration = Rows.sequences(v["pruning_sequences"], v["seq_len"])
    if subject.is_testbed:
        ablation_rows = subject.rows(
            subject.evaluation(v["ablation_probes"], v["ablation_paragraphs"], v["ablation_paragraphs"] // 4)
        )
    else:
        ablation_rows = full
    ratios = len(v["component_ratios"])
    allocations = ALLOCATION_STRATEGIES * len(v["sparsities"])
    pruned = subject.pruned_bytes()
    stages = [
        Stage(name, "dense evaluation (twice)", 2, evaluation_work(arch, full) * 2, subject.evaluation_bytes(full)),
        *density_map_stages(subject, v),
        Stage(
            name,
            "importance signals (forward and backward)",
            1,
            passes(arch, calibration, L, 1, backward=True),
            subject.evaluation_bytes(calibration) + calibration.largest_batch * L * 16 * arch.d_model * 4,
        ),
        Stage(
            name,
            "head output moments",
            1,
            passes(arch, calibration, L),
            subject.weights_bytes() + L * H * arch.head_dim**2 * 8,
        ),
        Stage(
            name,
            f"head ablation ({L} layers x {H} heads)",
            L * H,
            resumed_sweep_work(arch, ablation_rows, H),
            subject.evaluation_bytes(ablation_rows) + recorded_bytes(subject, ablation_rows),
        ),
        Stage(name, "Wanda input norms (block scores)", 1, passes(arch, calibration, L), subject.weights_bytes()),
        Stage(
            name,
            f"allocations ({ALLOCATION_STRATEGIES} strategies x {len(v['sparsities'])} sparsities)",
            allocations,
            (wanda_block_masks_work(arch, calibration) + evaluation_work(arch, full)) * allocations,
            subject.evaluation_bytes(full) + pruned,
        ),
    ]
    if subject.is_testbed:  # the null of random orderings needs capability probes
        orderings = (ORDERING_REFERENCES + v["n_orderings"]) * len(v["null_sparsities"])
        stages.append(
            Stage(
                name,
                f"random orderings ({v['n_orderings']} and {ORDERING_REFERENCES} references"
                f" x {len(v['null_sparsities'])} sparsities)",
                orderings,
                (wanda_block_masks_work(arch, calibration) + evaluation_work(arch, small)) * orderings,
                subject.evaluation_bytes(small) + pruned,
            )
        )
    head_pruning = HEAD_RANKINGS * len(v["head_fractions"])
    block_sweep = Work()
    for layer in range(L):
        block_sweep += evaluation_work(arch, small) + passes(arch, calibration, layer + 1)
        block_sweep += evaluation_work(arch, small, layer) * ratios
    stages += [
        Stage(
            name,
            f"head pruning ({HEAD_RANKINGS} rankings x {len(v['head_fractions'])} shares)",
            head_pruning,
            evaluation_work(arch, full) * head_pruning,
            subject.evaluation_bytes(full),
        ),
        Stage(
            name,
            f"per-head sweep ({L * H} heads x {ratios} ratios)",
            L * H * ratios,
            passes(arch, calibration, L) + resumed_sweep_work(arch, small, H * ratios),
            subject.evaluation_bytes(small) + recorded_bytes(subject, small) + pruned / L,
        ),
        Stage(
            name,
            f"per-block sweep ({L} blocks x {ratios} ratios)",
            L * ratios,
            block_sweep,
            subject.evaluation_bytes(small) + recorded_bytes(subject, small) + pruned / L,
        ),
    ]
    return stages


def _density(subject: Subject, v: Mapping[str, Any]) -> list[Stage]:
    full = subject.rows(subject_data(subject, 50, 50))  # the chapter's own evaluation sizes
    stages = [
        Stage(subject.name, "dense evaluation", 1, evaluation_work(subject.arch, full), subject.evaluation_bytes(full))
    ]
    expansions = [v["sae_expansion"]] * (1 + len(v["stability_seed_offsets"])) + list(v["stability_expansions"])
    for index, expansion in enumerate(expansions):
        for stage in density_map_stages(subject, v, expansion):
            label = "" if index == 0 else f", stability variant {index} (dictionary {expansion} x head_dim)"
            stages.append(Stage(stage.model, stage.name + label, stage.variants, stage.work, stage.peak_bytes))
    return stages


def phase_transition_grids(v: Mapping[str, Any]) -> dict[str, list[float]]:
    """The operators and levels of the phase-transitions chapter, as its notebook sets them."""
    bits = [math.log2(n) for n in v["grid_sizes"]]
    return {
        "magnitude": v["sparsities"],
        "wanda": v["sparsities"],
        "sparsegpt": v["sparsities"],
        "wanda_2:4": [0.5],
        "sparsegpt_2:4": [0.5],
        "structured": v["structured_shares"],
        "rtn": bits,
        "gptq": bits,
        "svd": v["rank_shares"],
        "asvd": v["rank_shares"],
    }


def _phase_transitions(subject: Subject, v: Mapping[str, Any]) -> list[Stage]:
    from .compression import operator

    arch = subject.arch
    full = subject.rows(subject_data(subject, v["n_probes"], v["n_paragraphs"]))
    calibration = Rows.sequences(v["calibration_sequences"], v["seq_len"])
    stages = [
        Stage(
            subject.name, "dense evaluation (twice)", 2, evaluation_work(arch, full) * 2, subject.evaluation_bytes(full)
        )
    ]
    in_order = passes(arch, calibration, arch.n_layers * (arch.n_layers + 1) / 2)  # block l's pass stops after it
    for name, levels in phase_transition_grids(v).items():
        calibrating = bool(operator(name).statistics)
        work = (evaluation_work(arch, full) + (in_order if calibrating else Work())) * len(levels)
        memory = subject.evaluation_bytes(full) + arch.linear_parameters * 4  # the original weights, kept on the CPU
        label = f"{name} ({len(levels)} levels{', calibrated block by block' if calibrating else ''})"
        stages.append(Stage(subject.name, label, len(levels), work, memory))
    return stages


def _absorption(subject: Subject, v: Mapping[str, Any]) -> list[Stage]:
    arch = subject.arch
    data = subject_data(subject, v["n_probes"], v["n_paragraphs"])
    full = subject.rows(data)
    language = subject.rows(EvaluationData(data.windows, data.score, data.attention_mask))
    calibration = Rows.sequences(v["pruning_sequences"], v["seq_len"])
    drift = Rows.sequences(v["drift_sequences"], v["seq_len"])
    L = arch.n_layers
    settings = len(v["owl_lambdas"]) + len([m for m in v["owl_ms"] if m != v["owl_m"]]) + 2 * len(v["alpha_epsilons"])
    pruning = wanda_block_masks_work(arch, calibration)
    memory = subject.evaluation_bytes(full) + subject.pruned_bytes()
    full_allocations = 5 * len(v["sparsity_grid"]) + 2 * len(v["strength_grid"])
    language_allocations = len(v["baseline_sparsities"]) * (settings + 1) + 2 * (v["n_shuffles"] + 1)
    injections = L * len(v["magnitudes"])
    return [
        Stage(subject.name, "dense evaluation", 1, evaluation_work(arch, full), subject.evaluation_bytes(full)),
        Stage(
            subject.name,
            f"noise injections ({L} blocks x {len(v['magnitudes'])} magnitudes, blocks only)",
            injections,
            passes(arch, drift, L) + passes(arch, drift, len(v["magnitudes"]) * L * (L + 1) / 2),
            subject.weights_bytes() + drift.tokens * arch.d_model * 4,
        ),
        Stage(
            subject.name,
            f"allocations on every metric ({full_allocations}: grid and strengths)",
            full_allocations,
            (pruning + evaluation_work(arch, full)) * full_allocations,
            memory,
        ),
        Stage(
            subject.name,
            f"allocations on the language text ({language_allocations}: baselines and shuffles)",
            language_allocations,
            (pruning + evaluation_work(arch, language)) * language_allocations,
            memory,
        ),
    ]


def _structure(subject: Subject, v: Mapping[str, Any]) -> list[Stage]:
    from .quantization import KINDS

    arch, L = subject.arch, subject.arch.n_layers
    full = subject.rows(subject_data(subject, v["n_probes"], v["n_paragraphs"]))
    streams = Rows.sequences(v["calibration_sequences"] + v["heldout_sequences"], v["seq_len"])
    rebuilt = L * 2 * 2  # per block, ranks k and k90 (one when they coincide), variance and predictive bases
    schemes = len(v["bits"]) * len(KINDS)
    replaced = 2 + 2 * L  # the last block (full map, reduced rank); the last m blocks, and block L - m alone
    memory = subject.evaluation_bytes(full)
    return [
        Stage(subject.name, "dense evaluation", 1, evaluation_work(arch, full), memory),
        Stage(
            subject.name,
            f"calibration and held-out passes ({v['calibration_sequences'] + v['heldout_sequences']} sequences)",
            1,
            passes(arch, streams, L, 1),
            memory + streams.largest_batch * (L + 1) * arch.d_model * 4,
        ),
        Stage(
            subject.name,
            f"streams rebuilt from k variates (at most {rebuilt})",
            rebuilt,
            evaluation_work(arch, full) * rebuilt,
            memory,
        ),
        Stage(
            subject.name,
            f"quantized models ({len(v['bits'])} bit widths x {len(KINDS)} schemes)",
            schemes,
            evaluation_work(arch, full) * schemes,
            memory + subject.pruned_bytes(),
        ),
        Stage(
            subject.name,
            f"blocks replaced by linear maps ({replaced})",
            replaced,
            evaluation_work(arch, full) * replaced,
            memory,
        ),
    ]


@dataclass(frozen=True)
class ChapterModel:
    """How one chapter's stages are counted, and what of the chapter is not."""

    stages: Callable[[Subject, Mapping[str, Any]], list[Stage]]
    not_covered: tuple[str, ...]
    auto_dtype: torch.dtype | None = None  # what `dtype = "auto"` means, where the chapter fixes it


REPLICATES_NOTE = "the reruns on the test beds' other training seeds (`replicates`), cached in data/replicates"
CHAPTERS = {
    "orthogonality": ChapterModel(_orthogonality, (REPLICATES_NOTE,)),
    "density": ChapterModel(
        _density,
        (REPLICATES_NOTE, "the numerical checks of the theory (no model)", "the redundancy measures on real heads"),
    ),
    "phase_transitions": ChapterModel(
        _phase_transitions,
        (
            REPLICATES_NOTE,
            "the calibration curves of the detector (no model)",
            "the weight-side work of SparseGPT, GPTQ, SVD and ASVD (solves and decompositions)",
        ),
    ),
    "absorption": ChapterModel(
        _absorption,
        (
            REPLICATES_NOTE,
            "the deeper models (`deep_models`)",
            "the linearised drift (Jacobian products) and each block pruned alone at the probe sparsities",
            "allocations evaluated twice are counted twice (the chapter reuses them)",
        ),
        auto_dtype=torch.float32,
    ),
    "structure": ChapterModel(
        _structure,
        (
            REPLICATES_NOTE,
            "the deeper models (`deep_models`)",
            "the passes that fit the linear maps, CCA and exit heads beyond one over each stream",
            "the rebuilt streams are counted at two ranks per block (one when k and k90 coincide)",
        ),
    ),
}


def cost_model(chapter: str) -> ChapterModel:
    """How `chapter` is counted; an `EstimateError` naming the covered chapters otherwise."""
    if chapter not in CHAPTERS:
        raise EstimateError(f"no cost model for chapter {chapter!r}; chapters covered: {', '.join(CHAPTERS)}")
    return CHAPTERS[chapter]


def run_dtype(chapter: str, requested: str, device: torch.device | None) -> torch.dtype:
    """The dtype the chapter's models run in: `requested`, or for "auto" the chapter's own
    choice, else bfloat16 on a GPU (`device` None: a named one) and float32 on the CPU."""
    fixed = cost_model(chapter).auto_dtype
    if requested == "auto" and fixed is not None:
        return fixed
    if requested == "auto" and device is None:
        return torch.bfloat16
    return resolve_dtype(requested, device)


def estimate_chapter(chapter: str, values: Mapping[str, Any], dtype: torch.dtype) -> ChapterEstimate:
    """The stages of `chapter` run with parameter `values` (every parameter of the chapter,
    already checked) in `dtype` (`run_dtype`), for each of its models."""
    spec = cost_model(chapter)
    names = [m for m in (values["model"], values.get("second_model", "")) if m]
    subjects = [_subject(name, values, dtype) for name in names]
    stages = [stage for subject in subjects for stage in spec.stages(subject, values)]
    not_covered = list(spec.not_covered)
    if values.get("tasks") and any(not s.is_testbed for s in subjects):
        not_covered.append(
            "the capability rows of the lm-eval tasks in `tasks` on the models that are not test beds "
            "(their number and length are known only once the tasks' data are loaded)"
        )
    return ChapterEstimate(chapter, stages, dtype, max(s.arch.d_model for s in subjects), not_covered)


# --- time -----------------------------------------------------------------------------------


def measured_throughput(d_model: int, dtype: torch.dtype, device: torch.device, tokens: int = 1024) -> float:
    """FLOP/s of a (tokens x d_model) by (d_model x 4 d_model) product on `device`, the
    best of three after a warm-up: the rate a block's largest matrix product reaches."""
    width = min(d_model, 2048)
    a = torch.randn(tokens, width, dtype=dtype, device=device)
    b = torch.randn(width, 4 * width, dtype=dtype, device=device)
    best = math.inf
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * tokens * width * 4 * width / best


def named_throughput(name: str, dtype: torch.dtype) -> float:
    """`ASSUMED_EFFICIENCY` of the named device's peak in `dtype` (bf16 and fp16 share a peak)."""
    peak = device_peak(name)
    return ASSUMED_EFFICIENCY * (peak.fp32 if dtype == torch.float32 else peak.bf16)
