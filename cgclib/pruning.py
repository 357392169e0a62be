"""Wanda pruning (Sun et al. 2023) of whole blocks or of single heads, as boolean masks.

A mask marks the weights to remove, one (out, in) boolean tensor per linear layer, keyed by
the layer's name in `components.all_linear_layers` (`"<block>.<name>"`). Masks are computed
from calibration statistics and applied only inside `masked(model, masks)`, which zeroes
the masked weights and restores them on exit, so one loaded model serves every strategy and
sparsity of a sweep.

Wanda scores weight W_ij by abs(W_ij) * ||X_j||_2, X_j being input feature j over the
calibration tokens, and removes the lowest-scoring share of every output row. As in the
reference implementation, blocks are pruned in order and each block's calibration inputs
are those produced by the blocks already pruned before it.

Also as in the reference (`prune_wanda` in locuslab/wanda, lib/prune.py, whose
`WrappedGPT.add_batch` in lib/layerwrapper.py sums x^2 over every token of every sample),
the input norms are taken over every token, position 0 included, by default
(`first_token=True`). OWL reuses these statistics for its outlier ratios, and AlphaPruning
prunes with the same `prune_wanda`, so their defaults match their references too. In
LLaMA-family models position 0 carries the massive activations that dominate some input
norms, so leaving it out changes the scores: `first_token=False` (the rule of our other
statistics, `tokens.token_mask`) is kept as an option to measure that effect. Padding,
which the reference never has, is always left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import components, devices
from .hooks import linear_inputs, registered, stopped_after
from .resume import BlockInputs, recorded_inputs, resumed_at
from .tokens import token_mask

Masks = dict[str, torch.Tensor]


class SparsityError(ValueError):
    """A sparsity outside [0, 1), or an allocation the model cannot take."""


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    if not isinstance(sparsity, (int, float)) or not math.isfinite(sparsity) or not 0 <= sparsity < 1:
        raise SparsityError(f"{what} must lie in [0, 1), got {sparsity!r}")
    return float(sparsity)


@torch.no_grad()
def input_square_sums(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    modules: Mapping[str, torch.nn.Module],
    batch_sequences: int = 16,
    first_token: bool = True,
) -> dict[str, torch.Tensor]:
    """sum over calibration tokens of x_j^2 for every input feature j of each module
    (padding left out): ||X_j||_2 squared, accumulated batch by batch on the model's device.
    By default every real token counts, position 0 included, as in the reference Wanda
    (module docstring); `first_token=False` leaves position 0 out.
    The forward passes stop after the last block that holds one of the modules."""
    device = devices.input_device(model)
    acc = {
        name: torch.zeros(components.in_features(m), dtype=torch.float64, device=device) for name, m in modules.items()
    }
    was_training = model.training
    model.eval()
    with stopped_after(model, components.last_block_holding(model, modules.values())) as forward:
        for start in range(0, len(ids), batch_sequences):
            chunk = ids[start : start + batch_sequences].to(device)
            mask = token_mask(chunk, pad_token_id, first_token=first_token)

            def grab(name, x, mask=mask):
                acc[name] += x[mask].double().pow(2).sum(0)

            attention = None if pad_token_id is None else (chunk != pad_token_id).long()
            with linear_inputs(model, modules, grab):
                forward(input_ids=chunk, attention_mask=attention)
    model.train(was_training)
    return acc


def wanda_scores(weight: torch.Tensor, square_sums: torch.Tensor) -> torch.Tensor:
    """abs(W_ij) * ||X_j||_2 for an (out, in) weight."""
    return weight.detach().abs().double() * square_sums.to(weight.device).sqrt()[None, :]


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask of the floor(sparsity * in) lowest scores of every row (ties broken by position)."""
    check_sparsity(sparsity)
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        lowest = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, lowest, True)
    return mask


def layer_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask of the floor(sparsity * numel) lowest scores of the whole matrix (ties broken by
    position): magnitude pruning as the Wanda reference runs it, one threshold per layer."""
    check_sparsity(sparsity)
    k = int(scores.numel() * sparsity)
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.sort(scores.flatten(), stable=True).indices[:k]] = True
    return mask.view_as(scores)


def n_of_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Semi-structured N:M mask: in every group of m consecutive weights of a row, the n
    lowest scores (2:4 is what sparse tensor cores run). The row length must divide by m."""
    if not 0 < n < m:
        raise SparsityError(f"an N:M pattern needs 0 < n < m, got {n}:{m}")
    rows, columns = scores.shape
    if columns % m:
        raise SparsityError(f"rows of {columns} weights do not split into groups of {m}")
    groups = scores.reshape(rows, columns // m, m)
    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., :n]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True).view(rows, columns)


@contextmanager
def masked(model: nn.Module, masks: Masks) -> Iterator[None]:
    """Zero the masked weights for the duration of the context, then restore them."""
    modules = components.all_linear_layers(model)
    pruned: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        if name not in modules:
            raise components.ComponentError(f"masks name linear layers the model does not have: {name}")
        w = components.weight(modules[name]).detach()
        if mask.shape != w.shape:
            raise SparsityError(f"mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(w.shape)}")
        pruned[name] = w.masked_fill(mask.to(w.device), 0)
    with components.replaced_weights(model, pruned):
        yield


@contextmanager
def masked_by_variant(model: nn.Module, masks: list[Masks]) -> Iterator[None]:
    """For a batch that stacks `len(masks)` copies of the same rows (variant-major, as
    `evaluation.score_row_variants` builds it), copy v runs with the weights `masks[v]`
    zeroes, as `masked` would for a whole batch: each masked linear layer's output for that
    copy is recomputed with its pruned weight (a copy whose masks leave a layer alone keeps
    the layer's own output)."""
    modules = components.all_linear_layers(model)
    unknown = sorted({name for m in masks for name in m} - set(modules))
    if unknown:
        raise components.ComponentError(f"masks name linear layers the model does not have: {unknown[:5]}")
    copies = len(masks)

    def make(name: str):
        w = components.weight(modules[name]).detach()
        pruned = [None if name not in m else w.masked_fill(m[name].to(w.device), 0) for m in masks]

        def hook(module, args, output):
            x = args[0]
            if x.shape[0] % copies:
                raise ValueError(f"a batch of {x.shape[0]} rows does not hold {copies} equal copies")
            xs = x.view(copies, -1, *x.shape[1:])
            out = output.view(copies, -1, *output.shape[1:]).clone()
            for v, weight in enumerate(pruned):
                if weight is not None:
                    out[v] = F.linear(xs[v], weight.to(x.dtype), module.bias)
            return out.view_as(output)

        return hook

    names = sorted({name for m in masks for name in m})
    with registered(lambda: [modules[n].register_forward_hook(make(n)) for n in names]):
        yield


def wanda_block_masks(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    block_sparsity: Mapping[int, float],
    batch_sequences: int = 16,
    progress: bool = False,
    first_token: bool = True,
) -> Masks:
    """Unstructured Wanda masks for every linear layer of the given blocks, block b pruned
    at `block_sparsity[b]`, blocks in order with inputs from the already pruned blocks.
    `first_token` as in `input_square_sums` (default: every token, as the reference)."""
    for block, s in block_sparsity.items():
        components.check_layer(model, block)
        check_sparsity(s, f"sparsity of block {block}")
    masks: Masks = {}
    recorded: BlockInputs | None = None  # the previous block's input in every calibration pass, earlier blocks pruned
    for block in tqdm(sorted(block_sparsity), desc="wanda", disable=not progress, leave=False):
        layers = block_linear_layers(model, block)
        # each pass starts at the previous block (now pruned) and stops after this one
        with masked(model, masks), resumed_at(model, recorded) if recorded else nullcontext():
            sums, recorded = recorded_inputs(
                model,
                block,
                partial(input_square_sums, model, ids, pad_token_id, layers, batch_sequences, first_token=first_token),
            )
        masks.update(wanda_masks(layers, sums, block_sparsity[block]))
    return masks


def block_linear_layers(model: nn.Module, block: int) -> dict[str, torch.nn.Module]:
    """The linear layers of one block, named as in `components.all_linear_layers`."""
    return {f"{block}.{name}": m for name, m in components.linear_layers(model, block).items()}


def wanda_masks(
    modules: Mapping[str, torch.nn.Module], square_sums: Mapping[str, torch.Tensor], sparsity: float
) -> Masks:
    """Wanda masks of the given layers at one sparsity, from their input statistics."""
    return {
        name: row_mask(wanda_scores(components.weight(m), square_sums[name]), sparsity) for name, m in modules.items()
    }


def head_weight_slices(model: nn.Module, layer: int, head: int) -> list[tuple[str, torch.nn.Module, slice, slice]]:
    """The weights that belong to one head alone: its rows of the query, key and value
    projections (key and value only without grouped-query sharing) and its columns of the
    attention output projection, as (name, module, rows, columns) of `weight`."""
    lay = components.layout(model)
    names = {id(m): f"{layer}.{n}" for n, m in components.linear_layers(model, layer).items()}
    everything = slice(None)
    own = components.head_qkv_rows(model, layer, head)
    if components.kv_heads(model) != lay.n_heads:
        own = own[:1]
    out = [(names[id(m)], m, rows, everything) for m, rows in own]
    o = components.attention_output(model, layer)
    cols = slice(head * lay.head_dim, (head + 1) * lay.head_dim)
    out.append((names[id(o)], o, everything, cols))
    return out


def wanda_head_masks(
    model: nn.Module, square_sums: Mapping[str, torch.Tensor], layer: int, head: int, sparsity: float
) -> Masks:
    """Wanda masks that prune only head (layer, head): within each of its weight slices
    (`head_weight_slices`), the lowest `sparsity` share of every row of the slice.
    `square_sums` are `input_square_sums` of the block's linear layers on dense inputs."""
    masks: Masks = {}
    for name, module, rows, cols in head_weight_slices(model, layer, head):
        if name not in square_sums:
            raise KeyError(f"no input statistics for {name}")
        w = components.weight(module)
        scores = wanda_scores(w, square_sums[name])
        mask = masks.get(name, torch.zeros_like(w, dtype=torch.bool))
        mask[rows, cols] = row_mask(scores[rows, cols], sparsity)
        masks[name] = mask
    return masks
