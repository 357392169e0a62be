"""Evaluating many variants of a model that differ only from one block on.

Ablating or pruning a head of block l leaves blocks 0..l-1 untouched: every variant
computes the same residual stream up to block l. So the input of block l is recorded once
for every forward pass of an evaluation, and each variant's evaluation replays it: the
earlier blocks are skipped and block l receives the recorded stream. The operations that
do run are the same, on the same inputs, so the results equal those of full forward
passes; the saving is the share of blocks before l (about half of them, averaged over l).

Memory: one block input per evaluated token (tokens x d_model), for one layer at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from . import components
from .hooks import registered

T = TypeVar("T")


class ReplayError(RuntimeError):
    """The forward passes inside `resumed_at` are not the ones that were recorded."""


@dataclass
class BlockInputs:
    layer: int
    inputs: list[torch.Tensor]  # block `layer`'s input of each forward pass, in call order
    returns_tuple: bool  # whether the model's blocks return a tuple or a tensor


def _hidden_states(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def recorded_inputs(model: nn.Module, layer: int, run: Callable[[], T]) -> tuple[T, BlockInputs]:
    """Call `run()` (an evaluation of the model as it is) and record the input of block
    `layer` in every forward pass it makes; return run's result and the recording."""
    components.check_layer(model, layer)
    inputs: list[torch.Tensor] = []
    kinds: list[bool] = []

    def pre(module, args, kwargs):
        inputs.append(_hidden_states(args, kwargs).detach())

    def post(module, args, output):
        kinds.append(isinstance(output, tuple))

    first = components.block(model, 0)
    with registered(
        lambda: [
            components.block(model, layer).register_forward_pre_hook(pre, with_kwargs=True),
            first.register_forward_hook(post),
        ]
    ):
        result = run()
    return result, BlockInputs(layer, inputs, bool(kinds and kinds[0]))


@contextmanager
def started_at(model: nn.Module, layer: int, stream: torch.Tensor | None) -> Iterator[None]:
    """One forward pass (inside the context) that starts at block `layer` with the residual
    stream `stream` (the input that block would receive): blocks before it are skipped. For
    layer 0 nothing is skipped and the pass runs as usual (`stream` may then be None)."""
    if layer == 0:
        yield
        return
    if stream is None:
        raise ValueError(f"a forward pass that starts at block {layer} needs the stream entering it, got None")
    with resumed_at(model, BlockInputs(layer, [stream], _blocks_return_tuple(model))):
        yield


def _blocks_return_tuple(model: nn.Module) -> bool:
    """Whether the model's blocks return a tuple (older transformers) or a tensor: one
    forward pass of a single token tells."""
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    with torch.no_grad():
        _, recorded = recorded_inputs(
            model, 0, lambda: model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
        )
    return recorded.returns_tuple


class _Skipped(nn.Module):
    """Stands in for a block before the resumed one: passes the stream through unchanged."""

    def __init__(self, returns_tuple: bool):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.returns_tuple else hidden_states


@contextmanager
def resumed_at(model: nn.Module, recorded: BlockInputs, copies: int = 1) -> Iterator[None]:
    """Within the context, the i-th forward pass skips the blocks before `recorded.layer`
    and feeds that block the i-th recorded input, stacked `copies` times over for a pass
    that evaluates that many variants at once (`evaluation.score_row_variants`). Exactly as
    many passes as were recorded must run, with inputs of the recorded shapes (times
    `copies` rows)."""
    blocks = components.blocks(model)
    originals = [blocks[i] for i in range(recorded.layer)]
    calls = [0]

    def pre(module, args, kwargs):
        i = calls[0]
        if i >= len(recorded.inputs):
            raise ReplayError(f"forward pass {i + 1} inside resumed_at, but only {len(recorded.inputs)} were recorded")
        stream = recorded.inputs[i]
        if copies > 1:
            stream = stream.repeat(copies, *([1] * (stream.dim() - 1)))
        current = _hidden_states(args, kwargs)
        if current.shape != stream.shape:
            raise ReplayError(
                f"forward pass {i + 1} has a stream of shape {tuple(current.shape)}, "
                f"the recorded one {tuple(stream.shape)}"
            )
        calls[0] += 1
        if args:
            return (stream.to(current.device), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": stream.to(current.device)}

    try:
        for i in range(recorded.layer):
            blocks[i] = _Skipped(recorded.returns_tuple)
        with registered(
            lambda: [components.block(model, recorded.layer).register_forward_pre_hook(pre, with_kwargs=True)]
        ):
            yield
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
    if calls[0] != len(recorded.inputs):
        raise ReplayError(f"{calls[0]} forward passes inside resumed_at, {len(recorded.inputs)} recorded")
